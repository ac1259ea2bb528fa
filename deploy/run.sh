#!/usr/bin/env bash
# Run the flame-private apps on the federation of deploy/start-local.sh.
#
#   deploy/run.sh [flwr run options...]
#   deploy/run.sh --run-config "run-id='study-2' expected-sites=4" --stream
#
# `flwr run` builds the app bundle (FAB) from this repository's pyproject.toml
# ([tool.flwr.app]: components and run-config defaults), or from the app folder
# FLAME_APP names, submits it over TLS and prints the run id.  Follow it with
#   FLWR_HOME=runs/deploy/local/cli .venv/bin/flwr log RUN_ID flame-local
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ ! -f "$CLI_HOME/config.toml" ]]; then
    echo "no $CLI_HOME/config.toml: start the federation with deploy/start-local.sh first" >&2
    exit 1
fi
cd "$repo"
FLWR_HOME="$CLI_HOME" exec flwr run "${FLAME_APP:-.}" "$FLAME_CONNECTION" "$@"

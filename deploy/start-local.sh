#!/usr/bin/env bash
# Start a whole federation on this machine: one SuperLink (TLS + SuperNode
# authentication) and one SuperNode per site, all on 127.0.0.1.
#
#   deploy/start-local.sh [SITE_YAML...]      (default: configs/sites/site-{a,b,c,d}.yaml)
#
# For each site: an ECDSA P-384 key pair (the SuperNode's identity), registered
# with the SuperLink before the SuperNode starts; its own FLWR_HOME and Runtime
# API port; the site YAML passed as node config `site-config`.  Pids go to
# $FLAME_DEPLOY_DIR/pids; stop everything with deploy/stop-local.sh.
#
# Environment: FLAME_DEPLOY_DIR (runs/deploy/local), FLAME_LINK_PORT (9092),
# FLAME_NODE_PORT_BASE (9094), VENV (.venv), FLAME_TRUSTED_ENTITIES (a YAML for
# SuperNode --trusted-entities; see docs/deployment.md: in flwr 1.42 it makes the
# SuperNodes refuse every locally built app, so it is off by default),
# FLAME_APP_PINNING (0; 1: each SuperNode runs with --isolation process and its
# site's own flower-superexec, whose flwr-clientapp is the site's launcher: it runs
# only app bundles the site's DPO approved with `flame site approve-app`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

pinning=${FLAME_APP_PINNING:-0}
if [[ $pinning != 0 && $pinning != 1 ]]; then
    echo "FLAME_APP_PINNING must be 0 or 1, not '$pinning'" >&2
    exit 1
fi
if [[ -e "$PIDS" ]]; then
    echo "$PIDS exists: a federation may be running; run deploy/stop-local.sh first" >&2
    exit 1
fi
if [[ $# -eq 0 ]]; then
    set -- "$repo"/configs/sites/site-{a,b,c,d}.yaml
fi
sites=()
names=()
for yaml in "$@"; do
    [[ -f "$yaml" ]] || { echo "no such site config: $yaml" >&2; exit 1; }
    sites+=("$(cd "$(dirname "$yaml")" && pwd)/$(basename "$yaml")")
    # Validates the site YAML (SiteConfig) and names the SuperNode after its site_id.
    names+=("$("$VENV/bin/python" -c 'import sys
from flame_private.config import SiteConfig, load_config
print(load_config(sys.argv[1], SiteConfig).site_id)' "${sites[-1]}")")
done
if [[ $(printf '%s\n' "${names[@]}" | sort -u | wc -l) -ne ${#names[@]} ]]; then
    echo "two site configs have the same site_id: ${names[*]}" >&2
    exit 1
fi

# --- TLS: a CA and the SuperLink's certificate ---------------------------------
if [[ ! -f "$CERTS/ca.crt" ]]; then
    "$repo/deploy/make-certs.sh" "$CERTS" >/dev/null
fi

# --- the operator's flwr CLI: one connection to the SuperLink, over TLS ---------
mkdir -p "$CLI_HOME"
cat > "$CLI_HOME/config.toml" <<TOML
[superlink]
default = "$FLAME_CONNECTION"

[superlink.$FLAME_CONNECTION]
address = "127.0.0.1:$FLAME_LINK_PORT"
root-certificates = "$CERTS/ca.crt"
TOML

# Record a pid as soon as the process exists, so stop-local.sh can always find it.
touch "$PIDS"
started_ok=0
cleanup_on_error() {
    if [[ $started_ok -eq 0 ]]; then
        echo "start-local.sh failed: stopping what was started" >&2
        "$repo/deploy/stop-local.sh" >&2 || true
    fi
}
trap cleanup_on_error EXIT

# --- SuperLink: TLS, SuperNode authentication, no runtime dependency install ----
# A fresh state database each start: with an old one, SuperNodes restarted within
# 2 heartbeat intervals are still "online" there and their activation is refused
# (ApiError 2004).  Runs' results live in each run's run-dir, not in this database.
mkdir -p "$FLAME_DEPLOY_DIR/superlink"
rm -f "$FLAME_DEPLOY_DIR/superlink/state.db" "$FLAME_DEPLOY_DIR/superlink/state.db-wal" \
      "$FLAME_DEPLOY_DIR/superlink/state.db-shm"
(
    cd "$repo"
    export FLWR_HOME="$FLAME_DEPLOY_DIR/superlink"
    exec flower-superlink \
        --ssl-certfile "$CERTS/server.crt" --ssl-keyfile "$CERTS/server.key" --ssl-ca-certfile "$CERTS/ca.crt" \
        --enable-supernode-auth \
        --disable-runtime-dependency-installation \
        --host 127.0.0.1 --port "$FLAME_LINK_PORT" \
        --database "$FLAME_DEPLOY_DIR/superlink/state.db"
) >"$FLAME_DEPLOY_DIR/superlink/superlink.log" 2>&1 &
echo "superlink superlink $!" >>"$PIDS"
if ! wait_for_port "$FLAME_LINK_PORT" 60; then
    echo "the SuperLink did not listen on 127.0.0.1:$FLAME_LINK_PORT within 60 s; see $FLAME_DEPLOY_DIR/superlink/superlink.log" >&2
    exit 1
fi

# --- one key pair per site, registered (authorised) on the SuperLink -----------
for i in "${!sites[@]}"; do
    name=${names[$i]}
    node_dir="$FLAME_DEPLOY_DIR/nodes/$name"
    mkdir -p "$node_dir/flwr-home"
    chmod 700 "$node_dir"
    if [[ ! -f "$node_dir/auth.key" ]]; then
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "$name" -f "$node_dir/auth.key"
    fi
    FLWR_HOME="$CLI_HOME" flwr supernode register "$node_dir/auth.key.pub" "$FLAME_CONNECTION" \
        --name "$name" >"$node_dir/register.log" 2>&1 \
        || { cat "$node_dir/register.log" >&2; exit 1; }
done

# --- one SuperNode per site ------------------------------------------------------
trusted=()
if [[ -n "${FLAME_TRUSTED_ENTITIES:-}" ]]; then
    trusted=(--trusted-entities "$FLAME_TRUSTED_ENTITIES")
fi
isolation=()
if [[ $pinning == 1 ]]; then
    # The SuperNode runs no app code; the site's own superexec (below) starts each ClientApp.
    isolation=(--isolation process)
fi
for i in "${!sites[@]}"; do
    name=${names[$i]}
    node_dir="$FLAME_DEPLOY_DIR/nodes/$name"
    port=$((FLAME_NODE_PORT_BASE + i))
    (
        cd "$repo"
        export FLWR_HOME="$node_dir/flwr-home"
        exec flower-supernode \
            --superlink "127.0.0.1:$FLAME_LINK_PORT" \
            --root-certificates "$CERTS/ca.crt" \
            --auth-supernode-private-key "$node_dir/auth.key" \
            --host 127.0.0.1 --port "$port" \
            --max-retries 30 --max-wait-time 120 \
            ${isolation[@]+"${isolation[@]}"} \
            ${trusted[@]+"${trusted[@]}"} \
            --node-config "site-config='${sites[$i]}' torch-threads=1 transport='supernode-tls'"
    ) >"$node_dir/supernode.log" 2>&1 &
    supernode_pid=$!
    echo "supernode $name $supernode_pid" >>"$PIDS"
    if [[ $pinning == 1 ]]; then
        # The site's launcher folder first on the superexec's PATH: its flwr-clientapp runs
        # only FABs approved in the site's state_dir; the other task commands refuse.
        "$VENV/bin/python" -c 'import sys
from flame_private.federation.site.app_launcher import write_launcher_bin
write_launcher_bin(sys.argv[1], sys.argv[2], sys.argv[3])' "$node_dir/launcher" "${sites[$i]}" "$VENV/bin/python"
        if ! wait_for_port "$port" 60; then
            echo "SuperNode $name did not listen on 127.0.0.1:$port within 60 s; see $node_dir/supernode.log" >&2
            exit 1
        fi
        (
            cd "$repo"
            export FLWR_HOME="$node_dir/flwr-home"
            export PATH="$node_dir/launcher:$PATH"
            exec flower-superexec --runtime-api-address "127.0.0.1:$port" --insecure \
                --parent-pid "$supernode_pid"
        ) >"$node_dir/superexec.log" 2>&1 &
        echo "superexec $name $!" >>"$PIDS"
    fi
done

# --- wait until every SuperNode is online (bounded) ------------------------------
want=${#sites[@]}
online=0
deadline=$((SECONDS + 120))
while ((SECONDS < deadline)); do
    online=$(FLWR_HOME="$CLI_HOME" flwr supernode list "$FLAME_CONNECTION" --format json 2>/dev/null \
             | grep -o '"status": *"online"' | wc -l || true)
    if [[ $online -ge $want ]]; then
        break
    fi
    sleep 1
done
if [[ $online -lt $want ]]; then
    echo "only $online of $want SuperNodes came online; see $FLAME_DEPLOY_DIR/nodes/*/supernode.log" >&2
    exit 1
fi
started_ok=1
pinned=""
[[ $pinning == 1 ]] && pinned=", each running only the apps its DPO approved (process isolation, site launcher)"
echo "federation up: SuperLink 127.0.0.1:$FLAME_LINK_PORT (TLS, node auth), $want SuperNode(s) online$pinned"
echo "pids: $PIDS; run the apps with deploy/run.sh; stop with deploy/stop-local.sh"

# Shared settings of the deploy/*.sh scripts (sourced, not run).
# Everything below can be overridden from the environment.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$repo/.venv}
FLAME_DEPLOY_DIR=${FLAME_DEPLOY_DIR:-$repo/runs/deploy/local}
FLAME_LINK_PORT=${FLAME_LINK_PORT:-9092}          # the SuperLink's one HTTPS port (Fleet, Control, Runtime APIs)
FLAME_NODE_PORT_BASE=${FLAME_NODE_PORT_BASE:-9094} # SuperNode i's local Runtime API port: base + i
FLAME_CONNECTION=${FLAME_CONNECTION:-flame-local}  # connection name in $FLAME_DEPLOY_DIR/cli/config.toml

for exe in flower-superlink flower-supernode flower-superexec flwr; do
    if [[ ! -x "$VENV/bin/$exe" ]]; then
        echo "missing $VENV/bin/$exe: install flame-private into $VENV first" >&2
        exit 1
    fi
done
# The venv's executables only: the SuperLink/SuperNode start flower-superexec,
# flwr-serverapp and flwr-clientapp from PATH.
export PATH="$VENV/bin:$PATH"
# Never let Flower `uv sync` the app's dependencies (it would pull another torch), nor call home.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_DISABLE_UPDATE_CHECK=1
FLAME_DEPLOY_DIR=$(mkdir -p "$FLAME_DEPLOY_DIR" && cd "$FLAME_DEPLOY_DIR" && pwd)
CERTS="$FLAME_DEPLOY_DIR/certs"
CLI_HOME="$FLAME_DEPLOY_DIR/cli"
PIDS="$FLAME_DEPLOY_DIR/pids"

# wait_for_port PORT SECONDS: until something listens on 127.0.0.1:PORT (bounded).
wait_for_port() {
    local port=$1 limit=$2 i
    for ((i = 0; i < limit * 2; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

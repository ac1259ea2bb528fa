#!/usr/bin/env bash
# Stop what deploy/start-local.sh started (and everything those processes spawned:
# flower-superexec, flwr-serverapp, flwr-clientapp), plus any SuperLink that
# `flwr run` itself launched for a `:local:` connection under this deployment's
# FLWR_HOMEs.  Only these processes, found by pid: never by a broad name.
#
#   deploy/stop-local.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# descendants PID: every live descendant of PID (children first found, then theirs).
descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

targets=()
if [[ -f "$PIDS" ]]; then
    while read -r _role _name pid; do
        [[ -n "${pid:-}" ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
            targets+=("$pid")
            while read -r d; do [[ -n "$d" ]] && targets+=("$d"); done < <(descendants "$pid")
        fi
    done <"$PIDS"
fi

# A SuperLink started by `flwr run` on `:local:` logs to $FLWR_HOME/local-superlink/;
# match exactly that argument, for this deployment's FLWR_HOMEs only.
for cmdline in /proc/[0-9]*/cmdline; do
    pid=${cmdline#/proc/}
    pid=${pid%/cmdline}
    args=$({ tr '\0' ' ' <"$cmdline"; } 2>/dev/null || true)
    case "$args" in
        *flower-superlink*"--log-file $FLAME_DEPLOY_DIR/"*"/local-superlink/superlink.log"*)
            targets+=("$pid")
            while read -r d; do [[ -n "$d" ]] && targets+=("$d"); done < <(descendants "$pid")
            ;;
    esac
done

if [[ ${#targets[@]} -eq 0 ]]; then
    echo "nothing running"
    rm -f "$PIDS"
    exit 0
fi
kill -TERM "${targets[@]}" 2>/dev/null || true
for ((i = 0; i < 40; i++)); do
    alive=()
    for pid in "${targets[@]}"; do
        if kill -0 "$pid" 2>/dev/null && [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
            alive+=("$pid")
        fi
    done
    [[ ${#alive[@]} -eq 0 ]] && break
    sleep 0.5
done
if [[ ${#alive[@]} -gt 0 ]]; then
    echo "still running after 20 s, killing: ${alive[*]}" >&2
    kill -KILL "${alive[@]}" 2>/dev/null || true
fi
rm -f "$PIDS"
echo "stopped ${#targets[@]} process(es)"

#!/usr/bin/env bash
# A real Flower deployment on loopback: starts a SuperLink and N SuperNodes on 127.0.0.1
# with Flower's own commands, runs examples/flower-digits through them (`flwr run`),
# waits for the run's summary.json and prints its accuracy matrix. Every process it
# starts is stopped by its id when it ends, also on failure, timeout or Ctrl-C.
#
#   bash scripts/flower-local.sh [OUTPUT_DIR] [key=value ...]   (lorm --set overrides)
#
# Knobs (environment): LORM_FLOWER_NODES (3), LORM_FLOWER_PORT (first of 2 + N loopback
# ports, 19090), LORM_FLOWER_TIMEOUT (seconds for the whole run, 900),
# LORM_FLOWER_LOGS (folder for the processes' logs; default: a temporary one),
# LORM_FLOWER_MIN_REPLIES (0: every node) and LORM_FLOWER_ROUND_TIMEOUT (600 s): when a
# round may go on without a node's reply (docs/flower.md, Faults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LORM_ROOT"

nodes=${LORM_FLOWER_NODES:-3}
port=${LORM_FLOWER_PORT:-19090}
limit=${LORM_FLOWER_TIMEOUT:-900}
out=$(python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${1:-runs/flower-local}")
shift || true
overrides="num_clients=$nodes;num_threads=1"
for kv in "$@"; do overrides="$overrides;$kv"; done

logs=${LORM_FLOWER_LOGS:-$(mktemp -d -t lorm-flower-XXXXXX)}
mkdir -p "$logs"
link=$port health=$((port + 1))  # Flower 1.42: Fleet, Control and Runtime APIs share one HTTP port
# Flower's config and state stay in here; only the processes started below get it, so
# it also marks every process they spawn, detached or not.
flwr_home="$logs/flwr-home"
export FLWR_DISABLE_UPDATE_CHECK=1
export PATH="$(dirname "$(command -v python)"):$PATH"  # the SuperLink spawns flower-superexec from PATH
mkdir -p "$flwr_home"
cat > "$flwr_home/config.toml" <<EOF
[superlink]
default = "loopback"

[superlink.loopback]
address = "127.0.0.1:$link"
insecure = true
EOF

pids=()
tree() {  # pid: it and every process below it (by parent id), parents first
  local child
  echo "$1"
  for child in $(pgrep -P "$1" 2>/dev/null); do tree "$child"; done
}
marked() {  # processes carrying this run's FLWR_HOME: spawned by the ones started here
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qxF "FLWR_HOME=$flwr_home" && echo "${p#/proc/}"
  done
  return 0
}
stop_all() {  # every process started here and everything they spawned, by id
  local all=() pid
  for pid in "${pids[@]}"; do all+=($(tree "$pid")); done
  all+=($(marked))
  [ ${#all[@]} = 0 ] && return 0
  kill -TERM "${all[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=()
    for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} = 0 ] && return 0
    sleep 0.2
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
  sleep 0.5
  local late=($(marked))  # anything spawned while the others were stopping
  [ ${#late[@]} = 0 ] || kill -KILL "${late[@]}" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() {  # log-name command...
  local name=$1; shift
  FLWR_HOME="$flwr_home" "$@" > "$logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_for_port() {  # port what
  for _ in $(seq 300); do
    python - "$1" <<'PY' && return 0
import socket, sys
with socket.socket() as s:
    s.settimeout(0.2)
    sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))
PY
    sleep 0.2
  done
  lorm_log "$2 did not open 127.0.0.1:$1 (logs: $logs)"; return 1
}

start superlink flower-superlink --insecure --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$link" \
  --health-server-address "127.0.0.1:$health"
wait_for_port "$link" "the SuperLink"
for i in $(seq 0 $((nodes - 1))); do
  start "supernode-$i" flower-supernode --insecure --superlink "127.0.0.1:$link" \
    --host 127.0.0.1 --port $((port + 2 + i)) \
    --node-config "partition-id=$i num-partitions=$nodes"
done
lorm_log "SuperLink and $nodes SuperNodes on 127.0.0.1 (logs: $logs); running examples/flower-digits"

rm -f "$out/summary.json"
start flwr-run timeout "$limit" flwr run examples/flower-digits loopback --stream \
  --run-config "output='$out' set='$overrides' overwrite=true min-replies=${LORM_FLOWER_MIN_REPLIES:-0} round-timeout=${LORM_FLOWER_ROUND_TIMEOUT:-600.0}"
run_pid=$!
deadline=$((SECONDS + limit))
while [ ! -f "$out/summary.json" ]; do
  if [ $SECONDS -ge $deadline ]; then
    lorm_log "no summary after ${limit}s (logs: $logs)"; exit 1
  fi
  if ! kill -0 "$run_pid" 2>/dev/null && [ ! -f "$out/summary.json" ]; then
    sleep 1; [ -f "$out/summary.json" ] && break
    lorm_log "flwr run ended without a summary (logs: $logs)"; tail -n 30 "$logs/flwr-run.log" >&2; exit 1
  fi
  sleep 1
done
serverapp_running() {  # a flwr-serverapp process below the SuperLink
  local pid
  for pid in $(tree "${pids[0]}"); do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q flwr-serverapp && return 0
  done
  return 1
}
for _ in $(seq 120); do  # let the ServerApp finish (it writes the summary, then returns)
  serverapp_running || break
  sleep 0.5
done
python - "$out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for t, row in enumerate(summary["accuracy_matrix"]):
    print(f"after task {t}: " + " ".join(f"{100 * a:5.1f}" for a in row))
print(f"final average accuracy {100 * summary['final_average_accuracy']:.1f}%")
PY

#!/usr/bin/env bash
# A real Flower deployment on loopback: starts a SuperLink and N SuperNodes on 127.0.0.1
# with Flower's own commands, runs examples/flower-digits through them (`flwr run`),
# waits for the run's summary.json and prints its accuracy matrix. Every process it
# starts is stopped by its id when it ends, also on failure, timeout or Ctrl-C.
#
#   bash scripts/flower-local.sh [OUTPUT_DIR] [key=value ...]   (lorm --set overrides)
#
# Knobs (environment): LORM_FLOWER_NODES (3), LORM_FLOWER_PORT (first of 2 + N (+ unlisted,
# below) loopback ports, 19090), LORM_FLOWER_TIMEOUT (seconds for the whole run, 900),
# LORM_FLOWER_LOGS (folder for the processes' logs; default: a temporary one),
# LORM_FLOWER_MIN_REPLIES (0: every node) and LORM_FLOWER_ROUND_TIMEOUT (600 s): when a
# round may go on without a node's reply (docs/flower.md, Faults).
#
# Transport security (docs/flower.md, Transport security). Default: `--insecure` on every
# process, plain HTTP, for loopback only. LORM_FLOWER_SECURE=1: TLS on the SuperLink and
# SuperNode authentication with throw-away credentials (scripts/flower_certs.py: a CA,
# a server certificate for 127.0.0.1/localhost, an EC key pair per SuperNode) written to
# LOGS/credentials; the SuperLink runs with `--enable-supernode-auth` and only the N node
# keys are registered (`flwr supernode register`). LORM_FLOWER_CERTS=DIR: the same with a
# federation's own files instead: DIR/ca.crt, DIR/server.pem, DIR/server.key (the server
# certificate must name 127.0.0.1, the address used here) and DIR/supernode-<i>,
# DIR/supernode-<i>.pub for i < N (EC keys in OpenSSH format). LORM_FLOWER_UNLISTED (0):
# in either secure mode, start this many more SuperNodes that are not registered (even
# ones without a key, registering themselves as Flower's nodes do by default; odd ones
# with a key pair of their own) and fail unless the SuperLink refuses every one, before
# the run starts.
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
logs=$(cd "$logs" && pwd)  # Flower wants absolute certificate paths in config.toml
secure=${LORM_FLOWER_SECURE:-0}
own_certs=${LORM_FLOWER_CERTS:-}
unlisted=${LORM_FLOWER_UNLISTED:-0}
creds= generated=
[ -n "$own_certs" ] && secure=1
if [ "$unlisted" != 0 ] && [ "$secure" != 1 ]; then
  lorm_log "LORM_FLOWER_UNLISTED needs LORM_FLOWER_SECURE=1 or LORM_FLOWER_CERTS (without"
  lorm_log "SuperNode authentication every node is let in)"; exit 2
fi
if [ "$secure" = 1 ]; then
  generated="$logs/credentials"  # throw-away: the temporary logs folder, never the checkout
  node_keys=() unlisted_keys=()
  for i in $(seq 0 $((nodes - 1))); do node_keys+=("supernode-$i"); done
  for k in $(seq 1 2 $((unlisted - 1))); do unlisted_keys+=("unlisted-$k"); done
  if [ -n "$own_certs" ]; then
    creds=$(cd "$own_certs" && pwd)
    for f in ca.crt server.pem server.key "${node_keys[@]}" "${node_keys[@]/%/.pub}"; do
      [ -f "$creds/$f" ] || { lorm_log "LORM_FLOWER_CERTS: $creds/$f is missing"; exit 2; }
    done
    [ ${#unlisted_keys[@]} = 0 ] || python scripts/flower_certs.py "$generated" --no-tls --nodes "${unlisted_keys[@]}"
  else
    creds=$generated
    python scripts/flower_certs.py "$generated" --nodes "${node_keys[@]}" "${unlisted_keys[@]}"
  fi
  link_security=(--ssl-ca-certfile "$creds/ca.crt" --ssl-certfile "$creds/server.pem"
                 --ssl-keyfile "$creds/server.key" --enable-supernode-auth)
  connection="root-certificates = \"$creds/ca.crt\""
else
  link_security=(--insecure)
  connection="insecure = true"
fi
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
$connection
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

start superlink flower-superlink "${link_security[@]}" --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$link" \
  --health-server-address "127.0.0.1:$health"
wait_for_port "$link" "the SuperLink"
node_opts() {  # key-file: sets opts to a SuperNode's security options
  if [ "$secure" = 1 ]; then
    opts=(--root-certificates "$creds/ca.crt" --auth-supernode-private-key "$1")
  else
    opts=(--insecure)
  fi
}
if [ "$secure" = 1 ]; then  # only these keys may join (Control API; the SuperLink's state)
  for key in "${node_keys[@]}"; do
    FLWR_HOME="$flwr_home" flwr supernode register "$creds/$key.pub" loopback \
      >> "$logs/register.log" 2>&1 \
      || { lorm_log "could not register $key.pub (logs: $logs)"; tail -n 20 "$logs/register.log" >&2; exit 1; }
  done
fi
for i in $(seq 0 $((nodes - 1))); do
  node_opts "$creds/supernode-$i"
  start "supernode-$i" flower-supernode "${opts[@]}" \
    --superlink "127.0.0.1:$link" --host 127.0.0.1 --port $((port + 2 + i)) \
    --node-config "partition-id=$i num-partitions=$nodes"
done
unlisted_pids=()
for k in $(seq 0 $((unlisted - 1))); do  # real partitions: let in, they would get work
  if [ $((k % 2)) = 0 ]; then
    opts=(--root-certificates "$creds/ca.crt")  # no key: Flower's self-registration
  else
    node_opts "$generated/unlisted-$k"  # a key pair that nobody registered
  fi
  start "unlisted-$k" flower-supernode "${opts[@]}" \
    --superlink "127.0.0.1:$link" --host 127.0.0.1 --port $((port + 2 + nodes + k)) \
    --node-config "partition-id=$((k % nodes)) num-partitions=$nodes"
  unlisted_pids+=($!)
done
for k in $(seq 0 $((unlisted - 1))); do  # each must be turned away, and soon
  pid=${unlisted_pids[$k]} log="$logs/unlisted-$k.log"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    lorm_log "unlisted SuperNode $k is still running after 120 s: not refused (logs: $logs)"; exit 1
  fi
  rc=0; wait "$pid" || rc=$?
  # the SuperLink's answers under --enable-supernode-auth: to a node registering itself,
  # and to a key it has no node for (a TLS failure reads otherwise)
  if [ "$rc" = 0 ] || ! grep -q -e "must be registered via the CLI" \
      -e "Failed to activate SuperNode" "$log"; then
    lorm_log "unlisted SuperNode $k exited ($rc) without Flower's refusal (logs: $logs)"
    tail -n 20 "$log" >&2; exit 1
  fi
  lorm_log "unlisted SuperNode $k refused by the SuperLink: $(grep -m 1 '\[code: ' "$log" || true)"
done
if [ "$secure" = 1 ]; then
  mode="TLS, SuperNode authentication (${#node_keys[@]} keys registered; credentials: $creds)"
else
  mode="--insecure: plain HTTP, any SuperNode may join"
fi
lorm_log "SuperLink and $nodes SuperNodes on 127.0.0.1, $mode (logs: $logs); running examples/flower-digits"

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

# Shared by the scripts/bench-* runners (sourced, not run): start a fresh
# release engine on loopback pinned to its CPUs, and stop it, bounded.
#
# Expects: $port (HTTP; media on port+1), $work (a scratch directory).
# Sets: $url, $engine_pid, $engine_pin / $load_pin (taskset prefixes from
# ENGINE_CPUS, default 0, and LOAD_CPUS, default the other CPUs).

url="http://127.0.0.1:$port"
engine_pid=""
# Loopback only, throwaway data: a fixed key is fine and keeps runs comparable.
export LIVE_ADMIN_KEY=bench-loopback-admin-key

cpus=$(nproc)
engine_cpus=${ENGINE_CPUS-0}
load_cpus=${LOAD_CPUS-$([ "$cpus" -gt 1 ] && echo "1-$((cpus - 1))")}
engine_pin=() load_pin=()
[ -n "$engine_cpus" ] && engine_pin=(taskset -c "$engine_cpus")
[ -n "$load_cpus" ] && load_pin=(taskset -c "$load_cpus")

# start_engine NAME: a fresh data directory per run, so one run's memory
# and data stay out of the next one's numbers.
start_engine() {
  local name=$1
  mkdir -p "$work/data-$name"
  LIVE_HTTP_ADDR="127.0.0.1:$port" \
  LIVE_MEDIA_UDP_ADDR="127.0.0.1:$((port + 1))" \
  LIVE_DATA_DIR="$work/data-$name" \
  LIVE_LOG="${LIVE_LOG:-warn}" \
    "${engine_pin[@]}" target/release/live-engine serve >"$work/engine-$name.log" 2>&1 &
  engine_pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS "$url/healthz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$engine_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "error: the engine did not become healthy on $url; its log:" >&2
  tail -n 20 "$work/engine-$name.log" >&2
  exit 1
}

stop_engine() {
  if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
    kill -TERM "$engine_pid" 2>/dev/null || true
    # Bounded: the engine's own shutdown timeout is 10 s.
    for _ in $(seq 1 150); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$engine_pid" 2>/dev/null || true
    wait "$engine_pid" 2>/dev/null || true
  fi
  engine_pid=""
}

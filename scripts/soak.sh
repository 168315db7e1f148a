#!/usr/bin/env bash
# Soak benchmark: a local 4-validator devnet under steady load for a long run, printing
# every validator's resident memory, data-folder size and open file descriptors at the
# start and once per interval, then the bench's summary line.
#
#   scripts/soak.sh [--rate TX_PER_S] [--minutes M] [--interval-s S] [--weft PATH]
#
# Defaults: 5,000 tx/s for 30 minutes, a sample every 60 s. CI runs a short version
# (`make soak-short`: 1 minute at 200 tx/s, samples every 20 s). Everything it starts is
# stopped on exit, Ctrl-C included. Output lines:
#   soak: t=SECONDS validator=I rss_kb=N data_bytes=N fds=N
#   bench: submitted=N finalized=N tps=X p50_ms=X p95_ms=X p99_ms=X max_ms=X
set -euo pipefail

rate=5000
minutes=30
interval=60
weft=target/debug/weft
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --interval-s) interval=$2; shift 2 ;;
    --weft) weft=$2; shift 2 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
done

dir=$(mktemp -d /tmp/weft-soak.XXXXXX)
devnet_pid=""
bench_pid=""
cleanup() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  [ -n "$devnet_pid" ] && kill -INT "$devnet_pid" 2>/dev/null || true
  # The devnet stops its validators on SIGINT; make sure, within 10 s.
  for _ in $(seq 1 20); do
    pgrep -f "weft run --home $dir/" >/dev/null || break
    sleep 0.5
  done
  pkill -KILL -f "weft run --home $dir/" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"$weft" devnet --validators 4 --dir "$dir/net" >"$dir/devnet.log" 2>&1 &
devnet_pid=$!

# Wait (at most 60 s) until every validator's gRPC port answers.
targets=127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053,127.0.0.1:50054
for _ in $(seq 1 120); do
  up=0
  for port in 50051 50052 50053 50054; do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && up=$((up + 1))
  done
  [ "$up" -eq 4 ] && break
  sleep 0.5
done
if [ "$up" -ne 4 ]; then
  echo "soak: the devnet did not come up; its log:" >&2
  cat "$dir/devnet.log" >&2
  exit 1
fi

sample() {
  local t=$1
  for i in 0 1 2 3; do
    local pid
    pid=$(pgrep -f "weft run --home $dir/net/node$i\$" | head -n 1 || true)
    if [ -z "$pid" ]; then
      echo "soak: t=$t validator=$i stopped" >&2
      exit 1
    fi
    local rss fds data
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    data=$(du -sb "$dir/net/node$i/data" | cut -f1)
    echo "soak: t=$t validator=$i rss_kb=$rss data_bytes=$data fds=$fds"
  done
}

sample 0
"$weft" bench --targets "$targets" --rate "$rate" --duration "${minutes}m" >"$dir/bench.log" 2>&1 &
bench_pid=$!
start=$(date +%s)
end=$((start + minutes * 60))
while kill -0 "$bench_pid" 2>/dev/null; do
  sleep "$interval"
  now=$(date +%s)
  kill -0 "$bench_pid" 2>/dev/null || break
  sample $((now - start))
  # Bounded: the bench ends after its duration and drain (30 s); never wait past that.
  if [ "$now" -gt $((end + 120)) ]; then
    echo "soak: the bench did not end in time" >&2
    exit 1
  fi
done
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=""
sample $(($(date +%s) - start))
tail -n 1 "$dir/bench.log"
exit "$bench_rc"

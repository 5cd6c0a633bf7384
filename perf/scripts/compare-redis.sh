#!/bin/bash
# Side-by-side measurements, recorded in docs/benchmarks.md: idle sessions x3 (skip with
# SKIP_IDLE=1), hark vs Redis Streams at 50k deliveries/s x3 alternating, saturation sweeps of
# both x3 alternating. Server on CPU 0, generator on CPU 1. Needs a release build
# (cargo build --release -p hark-relay -p hark-perf) and redis-server/redis-cli on PATH.
set -u
B="$(cd "$(dirname "$0")/../.." && pwd)/target/release"
P=$B/hark-perf
work="${TMPDIR:-/tmp}/hark-compare"
out=$work/$(date +%Y%m%d-%H%M)
mkdir -p "$out"
echo "load before: $(cat /proc/loadavg)" | tee $out/load.txt
start_relay() {
  pkill -f "hark-relay --listen 127.0.0.1:7490" ; sleep 0.3; rm -rf $work/relay-data
  taskset -c 0 $B/hark-relay --listen 127.0.0.1:7490 --admin 127.0.0.1:7491 --data-dir $work/relay-data \
    --cores 0 --dev-mode --connections-per-shard-max 20000 >/dev/null 2>&1 &
  sleep 0.8; RPID=$(pgrep -f "hark-relay --listen 127.0.0.1:7490")
}
start_redis() {
  pkill -f "redis-server.*6390"; sleep 0.5
  rm -rf $work/redis-dir; mkdir -p $work/redis-dir
  taskset -c 0 redis-server --port 6390 --appendonly yes --appendfsync everysec --save "" --dir $work/redis-dir >/dev/null 2>&1 &
  for _ in $(seq 1 50); do [ "$(redis-cli -p 6390 ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
  SPID=$(pgrep -f "redis-server.*6390")
}
for i in $( [ -n "${SKIP_IDLE:-}" ] || echo 1 2 3 ); do
  start_relay
  $P idle --relay 127.0.0.1:7490 --connections 10000 --relay-pid $RPID --cores 1 > $out/idle-$i.txt 2>&1
  echo "idle $i: $(grep -i "per connection" $out/idle-$i.txt | head -1)"
done
for i in 1 2 3; do
  start_relay
  $P run --relay 127.0.0.1:7490 --cores 1 --conversations 250 --listeners 4 --frame-bytes 100 --interval-ms 20 --duration 10 --relay-pid $RPID --json $out/hark50k-$i.json > $out/hark50k-$i.txt 2>&1
  echo "hark 50k $i: $(grep -o '[0-9.]* µs per delivery' $out/hark50k-$i.txt) $(grep 'latency (sent)' $out/hark50k-$i.txt)"
  start_redis
  $P run --target redis://127.0.0.1:6390 --cores 1 --conversations 250 --listeners 4 --frame-bytes 100 --interval-ms 20 --duration 10 --relay-pid $SPID --json $out/redis50k-$i.json > $out/redis50k-$i.txt 2>&1
  echo "redis 50k $i: $(grep -o '[0-9.]* µs per delivery' $out/redis50k-$i.txt) $(grep 'latency (sent)' $out/redis50k-$i.txt)"
done
for i in 1 2 3; do
  start_relay
  $P sweep --relay 127.0.0.1:7490 --cores 1 --conversations 125 --listeners 4 --duration 8 --factor 2 --steps-max 4 --p99-ms 10 --relay-pid $RPID > $out/hark-sweep-$i.txt 2>&1
  echo "hark sweep $i: $(grep -i knee $out/hark-sweep-$i.txt | head -2)"
  start_redis
  $P sweep --target redis://127.0.0.1:6390 --cores 1 --conversations 125 --listeners 4 --duration 8 --factor 2 --steps-max 4 --p99-ms 10 --relay-pid $SPID > $out/redis-sweep-$i.txt 2>&1
  echo "redis sweep $i: $(grep -i knee $out/redis-sweep-$i.txt | head -2)"
done
pkill -f "hark-relay --listen 127.0.0.1:7490"; pkill -f "redis-server.*6390"
echo "load after: $(cat /proc/loadavg)" | tee -a $out/load.txt
echo "results in $out"

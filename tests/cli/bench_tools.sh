#!/usr/bin/env bash
# Smoke test of the benchmark tool chain with tiny traffic: sf-tracegen writes
# a trace, sf-pipegen a pipeline, and sf-bench runs them (and its generated
# pipelines, miss rates, memload and a service configuration).  Checks what
# the tools report, not how fast: speed is for BENCHMARKS.md.
#   bash tests/cli/bench_tools.sh BUILD_DIR
set -uo pipefail
build=${1:?usage: bench_tools.sh BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
n=0
check() {  # check NAME COMMAND...: COMMAND must succeed
  local name=$1
  shift
  n=$((n + 1))
  if "$@"; then
    echo "ok $n - $name"
  else
    echo "not ok $n - $name"
    failed=1
  fi
}
# jq_true FILTER < json: FILTER gives at least one result over the inputs and
# every result is true.
jq_true() { jq -e -s "[.[] | $1] | length > 0 and all" >/dev/null; }

# sf-tracegen: a small T3 (32 connections, one round of bursts) and its summary.
"$build/sf-tracegen" --trace T3 --scale 0.001 --seed 3 --out "$tmp/t3.pcap" --stats >"$tmp/t3.txt" 2>&1
check "sf-tracegen writes T3" test -s "$tmp/t3.pcap"
check "sf-tracegen summary counts 32 TCP conversations" grep -Eq "tcp 32( |$)" "$tmp/t3.txt"

# sf-pipegen: Pipeline A, byte-identical for the same seed.
"$build/sf-pipegen" --pipeline A --seed 5 --out "$tmp/a.flows"
"$build/sf-pipegen" --pipeline A --seed 5 >"$tmp/a2.flows"
check "sf-pipegen is deterministic" cmp -s "$tmp/a.flows" "$tmp/a2.flows"

# sf-bench over the pcap with the flow file: the strict firewall passes every
# packet; one lookup per packet with coalescing, two without.
"$build/sf-bench" --flows "$tmp/a.flows" --trace "$tmp/t3.pcap" --coalesce both --runs 1 --json \
  >"$tmp/a.json" 2>"$tmp/a.err"
check "sf-bench flow file x pcap: two configurations" test "$(wc -l <"$tmp/a.json")" -eq 2
check "sf-bench: every packet forwarded, nothing dropped" \
  jq_true '.tx_per_packet == 1 and (.drops | length) == 0' <"$tmp/a.json"
check "sf-bench: lookups per packet 1 with coalescing, 2 without" \
  jq_true 'if .coalesce then .lookups_per_packet == 1 else .lookups_per_packet == 2 end' <"$tmp/a.json"
check "sf-bench: conntrack saw the connections" \
  jq_true '.services.conntrack.created >= 32 and .services.conntrack.dropped == 0' <"$tmp/a.json"

# Pipeline D stages, as a table.
"$build/sf-bench" --pipeline D --stages 0,2 --packets 2000 --flows-count 50 --runs 1 >"$tmp/d.txt" 2>&1
check "sf-bench table: a row per D stage count" test "$(grep -Ec '^D[02] +udp' "$tmp/d.txt")" -eq 2

# Synthetic misses: 0 % and 100 % of lookups go to the slow path.
"$build/sf-bench" --pipeline A --trace T2 --scale 0.0005 --miss-rate 0,100% --runs 1 --json >"$tmp/m.json" 2>&1
check "sf-bench --miss-rate 0: no upcalls" jq_true 'select(.miss_rate == 0) | .upcalls_per_packet == 0' <"$tmp/m.json"
check "sf-bench --miss-rate 100%: one upcall per lookup" \
  jq_true 'select(.miss_rate == 1) | .upcalls_per_packet == .lookups_per_packet and .tx_per_packet == 1' <"$tmp/m.json"

# memload with a small block from the service configuration: N reads per
# packet in the warm-up and the measured run.
echo '{"memload": {"size": "1M"}}' >"$tmp/svc.json"
"$build/sf-bench" --pipeline M --memload 3 --packets 1000 --flows-count 10 --runs 1 --json \
  --service-config "$tmp/svc.json" >"$tmp/ml.json" 2>&1
check "sf-bench memload: 3 reads per packet over 2 replays of a 1 MiB block" \
  jq_true '.services.memload.reads == 6000 and .services.memload.size == 1048576' <"$tmp/ml.json"

# Bad input: a clear error, exit 1.
bad() {  # bad PATTERN ARGS...: sf-bench ARGS fails and says PATTERN
  local pattern=$1
  shift
  ! "$build/sf-bench" "$@" >"$tmp/bad.txt" 2>&1 && grep -q -- "$pattern" "$tmp/bad.txt"
}
check "sf-bench rejects an unknown pipeline" bad "'Z'" --pipeline Z
check "sf-bench rejects a miss rate above 1" bad "not in 0..1" --pipeline D --miss-rate 1.5
check "sf-bench rejects a missing pcap" bad "$tmp/none.pcap" --flows "$tmp/a.flows" --trace "$tmp/none.pcap"
echo '{"conntrack": {"max_connection": 1}}' >"$tmp/badsvc.json"
check "sf-bench rejects an unknown service configuration key" \
  bad "max_connection" --pipeline A --trace T3 --scale 0.001 --service-config "$tmp/badsvc.json"

# Two threads, each with its own datapath and share of the connections (both
# directions of a connection on one thread, so the strict firewall passes all).
"$build/sf-bench" --pipeline A --trace T3 --scale 0.001 --threads 2 --runs 1 --json >"$tmp/thr.json" 2>&1
check "sf-bench --threads 2: two threads forward every packet" \
  jq_true '.threads == 2 and (.mpps_per_thread | length == 2 and all(. > 0)) and .tx_per_packet == 1
           and (.drops | length) == 0' <"$tmp/thr.json"

echo "1..$n"
exit $failed

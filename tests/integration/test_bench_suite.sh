#!/usr/bin/env bash
# Smoke test of the measurement suite (scripts/bench-suite.sh: sf-bench
# figures, scripts/bench-e2e.py end to end with sf-pktgen, sf-echo,
# softflowd, the black-box chain, OVS and Linux peers, and
# scripts/plot-figures.py) with tiny traffic: every experiment produces its
# rows, every device sends traffic back, every figure is drawn, and nothing is
# left behind.  The suite's end-to-end part runs with --napi threaded (the
# veth NAPI threads of every device and of the generator found and pinned); a
# short ceiling run checks the default, --napi softirq.  Checks what the
# tools produce, not how fast: speed is for BENCHMARKS.md.  TAP output; root;
# exit 4 (skip) only without OVS or nft.
#   bash tests/integration/test_bench_suite.sh BUILD_DIR
set -uo pipefail
build=$(cd "${1:?usage: test_bench_suite.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "1..0 # SKIP needs root"; exit 4; }
for cmd in ovs-vswitchd nft; do
  command -v "$cmd" >/dev/null || { echo "1..0 # SKIP $cmd not installed (scripts/install-deps.sh)"; exit 4; }
done
[[ -x $build/sf-bench ]] || { echo "1..0 # SKIP $build/sf-bench not built (SF_BENCH=OFF)"; exit 4; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
failed=0
check() {  # check NAME COMMAND...
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
# csv_true PYTHON-EXPR [CSV]: EXPR over `rows` (list of dicts of CSV, by
# default the suite's runs.csv) is true.
csv_true() {
  python3 - "${2:-$out/suite/e2e/runs.csv}" "$1" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ok = eval(sys.argv[2], {"rows": rows, "float": float, "set": set, "len": len, "all": all})
if not ok:
    for r in rows:
        print("#", dict(r))
sys.exit(0 if ok else 1)
EOF
}

echo "TAP version 13"
namespaces_before=$(ip netns list | sort)
start=$(date +%s)
bash "$root/scripts/bench-suite.sh" --scale smoke --build "$build" --out "$out/suite" -- \
  --traces T2 --seconds 0.5 --warmup 0.2 --napi threaded >"$out/suite.log" 2>&1
rc=$?
echo "# suite took $(($(date +%s) - start)) s"
check "bench-suite.sh --scale smoke succeeds" test "$rc" -eq 0
[[ $rc -eq 0 ]] || tail -40 "$out/suite.log" | sed 's/^/# /'

for f in fig6 fig7 fig8 fig10 fig11 fig12; do
  check "in process: $f.jsonl has results" test -s "$out/suite/inprocess/$f.jsonl"
done
check "fig6 in process: A-C x T1-T3 x on/off = 18 configurations" \
  test "$(grep -c '"mpps"' "$out/suite/inprocess/fig6.jsonl")" -eq 18
check "fig8 in process: 1 and 2 threads" \
  test "$(jq -s '[.[].threads] | sort | join(",")' -r "$out/suite/inprocess/fig8.jsonl")" = "1,2"
check "fig12 in process: every configuration has a cycle profile" \
  jq -e -s 'length == 12 and all(.profile.cycles.services > 0 and .profile.cycles.lookup > 0)' \
  "$out/suite/inprocess/fig12.jsonl"

check "every experiment has rows" csv_true \
  'set(r["experiment"] for r in rows) == {"ceiling","e2e","ablation","blackbox","peers","scaling","breakdown","sweep"}'
check "e2e: pipelines A-C x coalescing on/off" csv_true \
  'set((r["pipeline"], r["coalesce"]) for r in rows if r["experiment"] == "e2e") == {(p, c) for p in "ABC" for c in ("on", "off")}'
check "peers: OVS, Linux with nftables, Linux router" csv_true \
  'set(r["system"] for r in rows if r["experiment"] == "peers") == {"ovs-afxdp-ct", "linux-nft", "linux-router"}'
check "black box and run to completion for A-C" csv_true \
  'len([r for r in rows if r["experiment"] == "blackbox"]) == 6'
check "every device sent traffic back" csv_true \
  'all(float(r["received_pps"]) > 0 and float(r["sent_pps"]) > 0 for r in rows)'
# (received counts from the end of the warmup, so frames sent just before it
# may land in the window: a small excess, never more)
check "nothing comes back that was not sent" csv_true \
  'all(int(r["received"]) <= 1.02 * int(r["sent"]) + 2000 for r in rows)'
check "every row records threaded NAPI" csv_true 'all(r["napi"] == "threaded" for r in rows)'
check "summary.md names the NAPI mode" grep -q "; NAPI threaded" "$out/suite/e2e/summary.md"
check "breakdown.csv: cycles in services and I/O for both coalescing settings" python3 - "$out/suite/e2e/breakdown.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
sys.exit(0 if {r["coalesce"] for r in rows} == {"on", "off"} and
         all(float(r["services"]) > 0 and float(r["io_tx"]) > 0 for r in rows) else 1)
EOF
check "summary.md has the coalescing and black-box tables" \
  grep -q "run-to-completion | black box" "$out/suite/e2e/summary.md"
for png in fig5_blackbox fig6_coalescing fig7_noop_stages fig8_scaling fig10_memload \
           fig11_hit_rate fig12_breakdown e2e_overview ablation_xdp_lookup sweep_offered_rate; do
  check "plot $png.png" bash -c "head -c 8 '$out/suite/figures/$png.png' | grep -q PNG"
done
# The default: receive work in softirq (nothing pinned).
python3 "$root/scripts/bench-e2e.py" --smoke --build "$build" --out "$out/softirq" \
  --experiments ceiling --pipelines A --traces T2 --seconds 0.3 --warmup 0.2 >"$out/softirq.log" 2>&1
rc=$?
check "bench-e2e.py --napi softirq (the default) succeeds" test "$rc" -eq 0
[[ $rc -eq 0 ]] || tail -20 "$out/softirq.log" | sed 's/^/# /'
check "softirq: both echoes send back, rows record softirq" csv_true \
  'len(rows) == 2 and all(r["napi"] == "softirq" and float(r["received_pps"]) > 0 for r in rows)' \
  "$out/softirq/runs.csv"
check "MACHINE.txt names the commit" grep -q "^commit: " "$out/suite/MACHINE.txt"
check "no namespace left behind" test "$(ip netns list | sort)" = "$namespaces_before"
# (the brackets keep the patterns from matching a command line that quotes them)
no_leftovers() { ! pgrep -f "sfe-[a-z]+[0-9]*-[0-9]|$out/suit[e]" >/dev/null; }
check "no softflowd, sf-echo, sf-pktgen or ovs-vswitchd of the suite left" no_leftovers

# Bad input: a clear message and exit status 2, before anything is created.
python3 "$root/scripts/bench-e2e.py" --out "$out/bad" --experiments ceiling,bogus >"$out/bad.txt" 2>&1
rc=$?
check "bench-e2e.py rejects an unknown experiment, naming it" \
  bash -c "[[ $rc -eq 2 ]] && grep -q \"unknown experiment 'bogus'\" '$out/bad.txt'"
python3 "$root/scripts/bench-e2e.py" --out "$out/bad" --napi threaded --xdp-mode generic >"$out/bad.txt" 2>&1
rc=$?
check "bench-e2e.py rejects --napi threaded with generic XDP" \
  bash -c "[[ $rc -eq 2 ]] && grep -q 'napi threaded needs --xdp-mode native' '$out/bad.txt'"
bash "$root/scripts/bench-suite.sh" --scale huge --out "$out/bad" >"$out/bad.txt" 2>&1
rc=$?
check "bench-suite.sh rejects an unknown scale" \
  bash -c "[[ $rc -eq 2 ]] && grep -q 'smoke, quick or full' '$out/bad.txt'"

echo "1..$n"
exit $failed

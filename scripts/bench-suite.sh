#!/usr/bin/env bash
# The whole measurement suite (EVALUATION.md), one command per scale:
#
#   sudo scripts/bench-suite.sh --scale quick --out results/quick   (< 15 min here)
#   sudo scripts/bench-suite.sh --scale full  --out results/full    (hours)
#   sudo scripts/bench-suite.sh --scale smoke --out /tmp/s           (a minute: checks the chain)
#
# 1. In-process figures with sf-bench (one thread, in-memory ports: the
#    datapath's own cost): Figure 6 (coalescing gain, A-C x T1-T3), Figure 7
#    (noop stages), Figure 8 in process (1 vs 2 threads), Figure 10 (memload),
#    Figure 11 (megaflow miss rate), Figure 12 in process (cycle profile).
#    Each writes DIR/inprocess/figN.jsonl (sf-bench --json).
# 2. End to end over veth with sf-pktgen (scripts/bench-e2e.py): ceilings,
#    pipelines x traces x coalescing, XDP-lookup ablation, black box (Figure
#    5), OVS and Linux peers, scaling (Figure 8), CPU breakdown (Figure 12).
#    DIR/e2e/runs.csv, breakdown.csv, summary.md.
# 3. Plots: scripts/plot-figures.py DIR writes DIR/figures/*.png.
#
# Options: --build DIR (default build/), --only inprocess|e2e|plots (repeatable),
# and anything after `--` goes to bench-e2e.py (e.g. -- --experiments ceiling,e2e).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scale=quick
out=""
build="$root/build"
only=()
e2e_args=()
while (($#)); do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    --) shift; e2e_args=("$@"); break ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-suite: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $out ]] || { echo "bench-suite: --out DIR is required" >&2; exit 2; }
case "$scale" in
  smoke) tscale=0.002 runs=1 packets=20000 stages=0,4,8 memload=0,8 miss=0,10%,100% ;;
  quick) tscale=0.02 runs=3 packets=200000 stages=0-8 memload=0,1,2,4,8,16,32,64
         miss=0,1%,5%,10%,25%,50%,75%,100% ;;
  full) tscale=0.2 runs=5 packets=1000000 stages=0-8 memload=0,1,2,4,8,16,32,64
        miss=0,1%,5%,10%,25%,50%,75%,100% ;;
  *) echo "bench-suite: --scale must be smoke, quick or full" >&2; exit 2 ;;
esac
want() { ((${#only[@]} == 0)) || [[ " ${only[*]} " == *" $1 "* ]]; }
for tool in sf-bench sf-pktgen sf-echo softflowd sf-tracegen sf-pipegen; do
  [[ -x $build/$tool ]] || { echo "bench-suite: $build/$tool missing (build with -DSF_BENCH=ON)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
step() { printf '\n== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

{
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "scale: $scale"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "command: $0 --scale $scale --out $out"
} >"$out/MACHINE.txt"

if want inprocess; then
  ip="$out/inprocess"
  mkdir -p "$ip"
  bench() {  # bench NAME ARGS...: one figure's sf-bench run, JSON lines
    local name=$1
    shift
    step "sf-bench $name: $*"
    "$build/sf-bench" "$@" --runs "$runs" --json >"$ip/$name.jsonl"
  }
  bench fig6 --pipeline A,B,C --trace T1,T2,T3 --scale "$tscale" --coalesce both
  bench fig7 --pipeline D --stages "$stages" --coalesce both --packets "$packets"
  bench fig8 --pipeline A --trace T2 --scale "$tscale" --threads 1,2 --pin
  bench fig10 --pipeline M --memload "$memload" --packets "$packets"
  bench fig11 --pipeline A --trace T2 --scale "$tscale" --miss-rate "$miss"
  bench fig12 --pipeline A,B,C --trace T1,T2 --scale "$tscale" --coalesce both --profile=on
fi

if want e2e; then
  step "end to end: scripts/bench-e2e.py --scale $scale ${e2e_args[*]}"
  python3 "$root/scripts/bench-e2e.py" --scale "$scale" --build "$build" --out "$out/e2e" "${e2e_args[@]}"
fi

if want plots; then
  step "plots: scripts/plot-figures.py $out"
  # Debian's python3-matplotlib belongs to /usr/bin/python3 (not a pyenv python3 on PATH).
  /usr/bin/python3 "$root/scripts/plot-figures.py" "$out"
fi
step "done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s; results in $out"

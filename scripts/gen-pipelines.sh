#!/usr/bin/env bash
# Writes the evaluation's pipelines as flow files (EVALUATION.md "Pipelines"):
#   OUTDIR/pipeline-A.flows, -B, -C, -D0 .. -D8 (noop stages) and -M (memload)
# with build/sf-pipegen (or $SF_BUILD_DIR/sf-pipegen).
#
#   scripts/gen-pipelines.sh [OUTDIR] [SEED] [sf-pipegen options...]
#
# OUTDIR defaults to $SF_BUILD_DIR/pipelines, SEED to 1.  Further arguments go
# to every sf-pipegen call, e.g. --acl ../shared/data/classbench-acl1.rules or
# --output-port 2 (options a pipeline does not use are ignored by it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SF_BUILD_DIR:-$root/build}
pipegen=$build/sf-pipegen
outdir=${1:-$build/pipelines}
seed=${2:-1}
shift $(( $# < 2 ? $# : 2 ))

if [[ ! -x $pipegen ]]; then
  echo "gen-pipelines: $pipegen not found; build first (scripts/build.sh) or set SF_BUILD_DIR" >&2
  exit 1
fi
if [[ ! $seed =~ ^[0-9]+$ ]]; then
  echo "gen-pipelines: SEED must be a non-negative integer, not '$seed'" >&2
  exit 1
fi
mkdir -p "$outdir"

gen() {  # gen NAME sf-pipegen-args...
  local name=$1
  shift
  "$pipegen" --seed "$seed" --out "$outdir/pipeline-$name.flows" "$@"
  echo "$outdir/pipeline-$name.flows"
}

for p in A B C; do gen "$p" --pipeline "$p" "$@"; done
for k in 0 1 2 3 4 5 6 7 8; do gen "D$k" --pipeline D --stages "$k" "$@"; done
gen M --pipeline M "$@"

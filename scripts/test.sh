#!/usr/bin/env bash
# Quick start 2: install dependencies, build, and run the whole test suite:
#  1. g++ build: unit tests, BPF_PROG_RUN tests of the XDP program, CLI tests
#     and the integration tests (network namespaces, veth, real TCP) under
#     ctest; the BPF and integration tests need root;
#  2. clang build with AddressSanitizer + UBSan: the same tests but the
#     integration ones;
#  3. clang libFuzzer targets (packet parser, flow syntax), run briefly.
# Set SF_FUZZ_SECONDS (default 30) to change the fuzzing time per target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
fuzz_seconds=${SF_FUZZ_SECONDS:-30}

"$root/scripts/install-deps.sh"

step() { printf '\n==== %s ====\n' "$*"; }

# bpffs for the XDP maps' pins (softflowd mounts it itself when missing).
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || echo "test.sh: could not mount bpffs on /sys/fs/bpf"
fi

step "g++ build + tests"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$root/build"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"

step "clang build with ASan/UBSan + tests"
CC=clang CXX=clang++ cmake -S "$root" -B "$root/build-asan" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSF_SANITIZE=ON -DSF_BENCH=OFF >/dev/null
ninja -C "$root/build-asan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir "$root/build-asan" --output-on-failure -j "$jobs" -LE integration

step "libFuzzer targets (${fuzz_seconds}s each)"
CC=clang CXX=clang++ cmake -S "$root" -B "$root/build-fuzz" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSF_FUZZ=ON -DSF_BENCH=OFF >/dev/null
ninja -C "$root/build-fuzz" packet_parser_fuzz flow_syntax_fuzz
for fuzzer in packet_parser_fuzz flow_syntax_fuzz; do
  corpus_seed="$root/tests/fuzz/corpus/${fuzzer%_fuzz}"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$corpus_seed"/. "$work"/ 2>/dev/null || true
  dict=()
  [[ -f "$root/tests/fuzz/${fuzzer%_fuzz}.dict" ]] && dict=(-dict="$root/tests/fuzz/${fuzzer%_fuzz}.dict")
  echo "fuzzing $fuzzer"
  "$root/build-fuzz/$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$root/build-fuzz/" "$work" 2>&1 | tail -n 12
  rm -rf "$work"
  trap - EXIT
done

step "all tests passed"

#!/usr/bin/env bash
# Command-line checks of sf-nic (the emulated NIC TCAM): help and bad input,
# each refused with a clear message and a non-zero exit before anything is
# attached.  No network interfaces are created here; tests/integration/
# test_offload.sh runs sf-nic on real veths.  The checks that need a bpf
# filesystem mount a private one (root) and are skipped without it.
#   bash tests/cli/sf_nic.sh BUILD_DIR
set -uo pipefail
build=${1:?usage: sf_nic.sh BUILD_DIR}
nic=$build/sf-nic
tmp=$(mktemp -d)
bpffs=$tmp/bpffs
mounted=0
cleanup() {
  ((mounted)) && umount "$bpffs"
  rm -rf "$tmp"
}
trap cleanup EXIT
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
    sed 's/^/# /' "$tmp/out.txt" 2>/dev/null
    failed=1
  fi
}
skip() {  # skip NAME REASON
  n=$((n + 1))
  echo "ok $n - $1 # SKIP $2"
}
# bad PATTERN ARGS...: sf-nic ARGS exits non-zero and says PATTERN
bad() {
  local pattern=$1
  shift
  ! timeout 20 "$nic" "$@" >"$tmp/out.txt" 2>&1 && grep -q -- "$pattern" "$tmp/out.txt"
}

[[ -x $nic ]] || { echo "Bail out! $nic is missing (build sf-nic)"; exit 1; }

timeout 20 "$nic" --help >"$tmp/help.txt" 2>&1
check "--help exits 0" test $? -eq 0
check "--help lists every option" bash -c 'for o in --wire --host --ofport --pin-dir --netns \
    --mark-percent --xdp-mode --stats-interval --json; do grep -q -- "$o" "$0" || exit 1; done' \
  "$tmp/help.txt"
check "--help shows the default pin directory" grep -q /sys/fs/bpf/softflow "$tmp/help.txt"

check "a missing --wire is refused" bad "--wire" --host nosuchif1 --ofport 1
check "a missing --ofport is refused" bad "--ofport" --wire nosuchif0 --host nosuchif1
check "--mark-percent 150 is refused, naming the value" \
  bad "mark-percent 150" --wire nosuchif0 --host nosuchif1 --ofport 1 --mark-percent 150
check "--mark-percent -1 is refused, naming the value" \
  bad "mark-percent -1" --wire nosuchif0 --host nosuchif1 --ofport 1 --mark-percent=-1
check "--mark-percent abc is refused, naming the value" \
  bad "mark-percent abc" --wire nosuchif0 --host nosuchif1 --ofport 1 --mark-percent abc
check "--wire X --host X is refused" bad "both nosuchif0" --wire nosuchif0 --host nosuchif0 --ofport 1
check "--ofport 0 is refused" bad "ofport 0" --wire nosuchif0 --host nosuchif1 --ofport 0
check "--xdp-mode bogus is refused, naming the value" \
  bad "bogus" --wire nosuchif0 --host nosuchif1 --ofport 1 --xdp-mode bogus
check "--stats-interval -1 is refused" \
  bad "stats-interval -1" --wire nosuchif0 --host nosuchif1 --ofport 1 --stats-interval=-1
check "an unknown --netns is refused, naming it" \
  bad "nosuchns-$$" --wire nosuchif0 --host nosuchif1 --ofport 1 --netns "nosuchns-$$"

mkdir -p "$bpffs"
if [[ $(id -u) == 0 ]] && mount -t bpf bpf "$bpffs" 2>/dev/null; then
  mounted=1
  check "an unknown interface is refused with exit 1, naming it" \
    bad "nosuchif0" --pin-dir "$bpffs" --wire nosuchif0 --host nosuchif1 --ofport 1
  check "... and nothing of the NIC is pinned" \
    bash -c '! ls "$0" | grep -q "^sf_"' "$bpffs"
  check "an unknown --host is refused, naming it" \
    bad "nosuchif1" --pin-dir "$bpffs" --wire lo --host nosuchif1 --ofport 1
  # Two interfaces that exist, so that the pin directory is what fails (it
  # is checked before anything is loaded or attached).
  mapfile -t ifs < <(ls /sys/class/net)
  if ((${#ifs[@]} >= 2)); then
    check "a --pin-dir not on bpffs is refused, naming it" \
      bad "$tmp/plain" --pin-dir "$tmp/plain" --wire "${ifs[0]}" --host "${ifs[1]}" --ofport 1
  else
    skip "a --pin-dir not on bpffs is refused" "fewer than two interfaces"
  fi
else
  for name in "an unknown interface is refused" "nothing is pinned" "an unknown --host is refused" \
    "a --pin-dir not on bpffs is refused"; do
    skip "$name" "cannot mount a private bpffs (not root?)"
  done
fi

echo "1..$n"
exit $failed

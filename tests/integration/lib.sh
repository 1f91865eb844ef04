# shellcheck shell=bash
# Helpers for SoftFlow's integration tests (kernel-selftest style).
#
# A test script is run as `bash tests/integration/test_X.sh BUILD_DIR` (ctest
# does this, as root).  It sources this file, defines one scenario function
# that takes the XDP mode, and hands it to sf_run_modes, which runs it once per
# mode (native, generic) with a fresh topology each time:
#
#   source "$(dirname "$0")/lib.sh"
#   sf_init "$@"
#   scenario() {            # $1 = native | generic
#     sf_topology 2 || return 1
#     sf_start --flows "$SF_TMP/flows" || return 1
#     sf_check "ping h1 -> h2" sf_ping 1 2
#   }
#   sf_run_modes scenario 1   # 1 = number of checks scenario makes per mode
#   sf_finish
#
# Output is TAP 13 (`ok N - name`, `not ok N - name`, `# diagnostics`).  Exit
# status: 0 all passed, 1 something failed, 4 (KSFT_SKIP) everything was
# skipped because a kernel feature (veth, XDP in a mode) is missing.
#
# Topology made by sf_topology N, for a run id ID unique to the run and mode:
#   namespaces sf-h1-ID .. sf-hN-ID (hosts) and sf-sw-ID (the switch);
#   host i has veth h<i>-ID (MAC 02:00:00:00:00:0i, 10.200.0.i/24) whose peer
#   s<i>-ID sits in the switch namespace and is softflowd's OpenFlow port i.
# softflowd runs in the switch namespace with a socket and a pin directory of
# its own ($SF_SOCK, $SF_PIN_DIR on a bpffs mounted for this test, so pins
# survive softflowd's mount namespace and can be inspected from here).
#
# Everything a test creates -- the processes it started (only those PIDs), the
# namespaces, the bpffs mount, the temp directory -- is removed on every exit
# path (EXIT, INT, TERM) and between modes.

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

SF_NET=10.200.0
SF_MAC_PREFIX=02:00:00:00:00

# ---- TAP ---------------------------------------------------------------------------

TAP_N=0
TAP_PASSED=0
TAP_FAILED=0
TAP_SKIPPED=0
TAP_PLANNED=-1

tap_diag() {  # tap_diag TEXT... (or stdin): every line prefixed with '# '
  if (($#)); then
    printf '%s\n' "$*" | sed 's/^/# /'
  else
    sed 's/^/# /'
  fi
}

tap_plan() {
  TAP_PLANNED=$1
  echo "1..$1"
}

tap_ok() {
  TAP_N=$((TAP_N + 1))
  TAP_PASSED=$((TAP_PASSED + 1))
  echo "ok $TAP_N - $SF_TAP_PREFIX$1"
}

tap_not_ok() {
  TAP_N=$((TAP_N + 1))
  TAP_FAILED=$((TAP_FAILED + 1))
  echo "not ok $TAP_N - $SF_TAP_PREFIX$1"
  [[ ${2:-} == nolog ]] || sf_dump_log
}

tap_skip() {  # tap_skip NAME REASON
  TAP_N=$((TAP_N + 1))
  TAP_SKIPPED=$((TAP_SKIPPED + 1))
  echo "ok $TAP_N - $SF_TAP_PREFIX$1 # SKIP $2"
}

# sf_check NAME CMD...: one TAP result from a command's exit status.  The
# command's output is shown as diagnostics when it fails.  CMD runs in a
# subshell: use sf_expect for anything that must change this shell's state
# (sf_stop, which reaps softflowd).
sf_check() {
  local name=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if ((rc == 0)); then
    tap_ok "$name"
    [[ -n $out && ${SF_VERBOSE:-0} == 1 ]] && tap_diag "$out"
  else
    [[ -n $out ]] && tap_diag "$out"
    tap_not_ok "$name"
  fi
  return $rc
}

# sf_expect NAME CONDITION-TEXT: pass/fail from a test expression already
# evaluated by the caller, e.g.  sf_expect "coalesced > 0" $((n > 0)) "coalesced=$n"
sf_expect() {
  local name=$1 ok=$2
  shift 2
  (($#)) && tap_diag "$*"
  if ((ok)); then tap_ok "$name"; else tap_not_ok "$name"; fi
  ((ok))
}

# sf_true CMD...: prints 1 when CMD succeeds, else 0 (for sf_expect).
sf_true() { if "$@" >/dev/null 2>&1; then echo 1; else echo 0; fi; }

# ---- set-up ------------------------------------------------------------------------

sf_skip_all() {
  echo "# SKIP: $*"
  ((TAP_PLANNED < 0)) && echo "1..0 # SKIP $*"
  exit $KSFT_SKIP
}

sf_bail() {
  echo "Bail out! $*"
  exit $KSFT_FAIL
}

sf_require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || sf_skip_all "needs $c"
  done
}

# sf_init BUILD_DIR
sf_init() {
  echo "TAP version 13"
  SF_TEST=$(basename "$0" .sh)
  SF_BUILD=${1:-}
  [[ -n $SF_BUILD ]] || sf_bail "usage: $0 BUILD_DIR"
  SF_BUILD=$(cd "$SF_BUILD" 2>/dev/null && pwd) || sf_bail "no build directory ${1}"
  SF_SOFTFLOWD=$SF_BUILD/softflowd
  SF_SFCTL=$SF_BUILD/sfctl
  SF_XDP_OBJ=$SF_BUILD/sf_xdp.bpf.o
  local f
  for f in "$SF_SOFTFLOWD" "$SF_SFCTL" "$SF_XDP_OBJ"; do
    [[ -e $f ]] || sf_bail "$f is missing (build softflowd, sfctl and sf_xdp_bpf)"
  done
  ((EUID == 0)) || sf_skip_all "needs root"
  sf_require_cmd ip jq ethtool ping python3 timeout
  SF_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  SF_TMP_ROOT=$(mktemp -d "/tmp/sf-int-$SF_TEST.XXXXXX") || sf_bail "mktemp failed"
  SF_PIDS=()
  SF_NAMESPACES=()
  SF_MOUNTS=()
  SF_TAP_PREFIX=""
  SF_LOG=""
  trap sf_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Kernel features every test needs.
  local probe=sf-pr-$SF_ID
  ip netns add "$probe" 2>/dev/null || sf_skip_all "cannot create network namespaces"
  SF_NAMESPACES+=("$probe")
  ip link add pa netns "$probe" type veth peer name pb netns "$probe" 2>/dev/null ||
    sf_skip_all "veth is not available (ip link add type veth failed)"
  ip netns del "$probe"
  SF_NAMESPACES=()
}

# sf_xdp_mode_supported MODE: 0 yes; 1 the kernel lacks it; 2 something else
# went wrong (not a reason to skip).  The reason is left in SF_REASON.
sf_xdp_mode_supported() {
  local mode=$1 probe=sf-pr-$SF_ID flag out rc
  SF_REASON=""
  [[ $mode == native ]] && flag=xdpdrv || flag=xdpgeneric
  ip netns add "$probe" || return 2
  ip link add pa netns "$probe" type veth peer name pb netns "$probe"
  ip -n "$probe" link set pa up
  ip -n "$probe" link set pb up
  out=$(ip netns exec "$probe" sh -c \
    "mount -t bpf bpf /sys/fs/bpf && ip link set dev pa $flag obj '$SF_XDP_OBJ' sec xdp" 2>&1)
  rc=$?
  ip netns del "$probe"
  ((rc == 0)) && return 0
  SF_REASON="XDP $mode attach on veth failed: $(echo "$out" | tail -3 | tr '\n' ' ')"
  grep -qiE 'not supported' <<<"$out" && return 1
  return 2
}

# sf_topology N_HOSTS: namespaces, veths, addresses (see the top of the file).
sf_topology() {
  local n=$1 i
  SF_NS_SW=sf-sw-$SF_RUN
  SF_NS_H=("")
  SF_HOST_IF=("")
  SF_SW_IF=("")
  ip netns add "$SF_NS_SW" || return 1
  SF_NAMESPACES+=("$SF_NS_SW")
  sf_quiet_ns "$SF_NS_SW"
  for ((i = 1; i <= n; i++)); do
    local ns=sf-h$i-$SF_RUN hif=h$i-$SF_RUN sif=s$i-$SF_RUN
    ip netns add "$ns" || return 1
    SF_NAMESPACES+=("$ns")
    sf_quiet_ns "$ns"
    SF_NS_H+=("$ns")
    SF_HOST_IF+=("$hif")
    SF_SW_IF+=("$sif")
    ip link add "$hif" netns "$ns" address "$SF_MAC_PREFIX:0$i" type veth \
      peer name "$sif" netns "$SF_NS_SW" || return 1
    # TX checksum offload would leave partial checksums in frames that cross
    # AF_XDP, and the receiving host would drop them.
    ip netns exec "$ns" ethtool -K "$hif" tx off >/dev/null || return 1
    ip -n "$ns" addr add "$SF_NET.$i/24" dev "$hif" || return 1
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$hif" up || return 1
    ip -n "$SF_NS_SW" link set "$sif" up || return 1
  done
  SF_N_HOSTS=$n
}

# No IPv6 (router/neighbour solicitations, MLD) in the test's namespaces: the
# only traffic is what the test sends.
sf_quiet_ns() {
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
}

# Permanent ARP entries for every other host, so hosts send no ARP.
sf_static_arp() {
  local i j
  for ((i = 1; i <= SF_N_HOSTS; i++)); do
    for ((j = 1; j <= SF_N_HOSTS; j++)); do
      ((i == j)) && continue
      ip -n "${SF_NS_H[i]}" neigh replace "$SF_NET.$j" lladdr "$SF_MAC_PREFIX:0$j" \
        dev "${SF_HOST_IF[i]}" nud permanent || return 1
    done
  done
}

# A bpffs of this test's own, outside /sys (which `ip netns exec` replaces):
# softflowd pins there and the test can see the pins.
sf_bpffs() {
  local dir=$SF_TMP/bpffs
  mkdir -p "$dir" && mount -t bpf bpf "$dir" || return 1
  SF_MOUNTS+=("$dir")
  SF_PIN_DIR=$dir/softflow
}

# ---- softflowd ---------------------------------------------------------------------

SF_START_COUNT=0

# sf_start [SOFTFLOWD ARGS...]: softflowd on every switch port (port i =
# s<i>-ID:i unless SF_PORT_ARGS is set), in $SF_MODE, waiting until the
# control socket answers.  Sets SF_PID and SF_LOG.
sf_start() {
  sf_launch "$@" || return 1
  sf_wait_ready
}

# sf_launch [ARGS...]: starts softflowd in the background; does not wait.
# The two-port patch panel most tests switch with: port 1 <-> port 2.
sf_port_flows() {
  printf '%s\n' "table=0,priority=10,in_port=1,actions=output:2" \
    "table=0,priority=10,in_port=2,actions=output:1" >"$1"
}

sf_launch() {
  local i ports=()
  if [[ -n ${SF_PORT_ARGS+x} ]]; then
    ports=("${SF_PORT_ARGS[@]}")
  else
    for ((i = 1; i <= SF_N_HOSTS; i++)); do ports+=(--port "${SF_SW_IF[i]}:$i"); done
  fi
  SF_START_COUNT=$((SF_START_COUNT + 1))
  SF_LOG=$SF_TMP/softflowd.$SF_START_COUNT.log
  ip netns exec "$SF_NS_SW" "$SF_SOFTFLOWD" "${ports[@]}" --socket "$SF_SOCK" \
    --pin-dir "$SF_PIN_DIR" --xdp-mode "$SF_MODE" "$@" >"$SF_LOG" 2>&1 &
  SF_PID=$!
  SF_PIDS+=("$SF_PID")
}

sf_pid_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# Waits (up to SF_READY_TIMEOUT s, default 10) until `sfctl show` answers.
sf_wait_ready() {
  local deadline=$((SECONDS + ${SF_READY_TIMEOUT:-10}))
  while ((SECONDS < deadline)); do
    if ! sf_pid_alive "$SF_PID"; then
      tap_diag "softflowd (pid $SF_PID) exited during start-up"
      sf_dump_log
      return 1
    fi
    if "$SF_SFCTL" --socket "$SF_SOCK" --timeout 2 show >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  tap_diag "softflowd's control socket $SF_SOCK did not answer within ${SF_READY_TIMEOUT:-10} s"
  sf_dump_log
  return 1
}

# sf_wait_exit PID TIMEOUT: waits for a child we started; its exit status is
# returned (and 124 if it did not exit in time; it is then SIGKILLed).
sf_wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2)) rc
  while sf_pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
  if sf_pid_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
    sf_forget_pid "$pid"
    return 124
  fi
  { wait "$pid"; } 2>/dev/null
  rc=$?
  sf_forget_pid "$pid"
  return $rc
}

sf_forget_pid() {
  local p keep=()
  for p in "${SF_PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done
  SF_PIDS=("${keep[@]}")
}

# sf_stop: SIGTERM to the softflowd we started; returns its exit status.
sf_stop() {
  [[ -n ${SF_PID:-} ]] || return 0
  kill -TERM "$SF_PID" 2>/dev/null
  sf_wait_exit "$SF_PID" 10
  local rc=$?
  SF_PID=""
  return $rc
}

# sf_kill9: SIGKILL to the softflowd we started (a crash); returns its
# status.  (The braces keep bash's "Killed" job notice off stderr.)
sf_kill9() {
  local rc
  {
    kill -KILL "$SF_PID"
    sf_wait_exit "$SF_PID" 10
    rc=$?
  } 2>/dev/null
  SF_PID=""
  return $rc
}

sf_dump_log() {
  [[ -n ${SF_LOG:-} && -s $SF_LOG ]] || return 0
  tap_diag "---- softflowd log ($SF_LOG), last 25 lines ----"
  tail -n 25 "$SF_LOG" | tap_diag
  tap_diag "----"
}

sfctl() { "$SF_SFCTL" --socket "$SF_SOCK" --timeout 10 "$@"; }

sf_show_json() { sfctl --json show; }

# sf_json EXPR: one value from `sfctl --json show` (jq expression).
sf_json() { sf_show_json | jq -r "$1"; }

# ---- hosts and interfaces ----------------------------------------------------------

sf_h() {  # sf_h I CMD...: runs CMD in host I's namespace
  local i=$1
  shift
  ip netns exec "${SF_NS_H[i]}" "$@"
}

sf_ip() { echo "$SF_NET.$1"; }
sf_mac() { echo "$SF_MAC_PREFIX:0$1"; }

# sf_ping FROM TO [COUNT]: succeeds when every echo is answered (ping itself
# is content with one answer).
sf_ping() {
  local count=${3:-3} out
  out=$(sf_h "$1" ping -n -q -c "$count" -i 0.2 -W 1 "$(sf_ip "$2")" 2>&1)
  grep -q " $count received" <<<"$out" && return 0
  echo "ping $(sf_ip "$2") from h$1: $(grep -E 'transmitted' <<<"$out")"
  return 1
}

# sf_ping_fails FROM TO: succeeds when no echo is answered.
sf_ping_fails() {
  local out
  out=$(sf_h "$1" ping -n -q -c 3 -i 0.2 -W 1 "$(sf_ip "$2")" 2>&1)
  if grep -q ' 0 received' <<<"$out"; then return 0; fi
  echo "$out"
  return 1
}

# RX packet counter of host I's veth.
sf_host_rx() {
  ip -n "${SF_NS_H[$1]}" -s -j link show dev "${SF_HOST_IF[$1]}" | jq -r '.[0].stats64.rx.packets'
}

# XDP program id on switch port I (0: none).
sf_port_prog_id() {
  ip -n "$SF_NS_SW" -j -d link show dev "${SF_SW_IF[$1]}" | jq -r '.[0].xdp.prog.id // 0'
}

# sf_bg CMD...: starts CMD in the background and remembers its PID, so that
# cleanup ends it (and nothing else).
sf_bg() {
  "$@" &
  SF_BG_PID=$!
  SF_PIDS+=("$SF_BG_PID")
}

# ---- modes and cleanup -------------------------------------------------------------

sf_modes() { echo "${SF_XDP_MODES:-native generic}"; }

# sf_run_modes SCENARIO CHECKS_PER_MODE: plans CHECKS_PER_MODE x modes
# results and runs SCENARIO once per XDP mode.  A mode the kernel lacks is
# skipped; a scenario that stops early (set-up failed) has its missing
# results reported as failures, so the plan always adds up.
sf_run_modes() {
  local scenario=$1 per_mode=$2 mode modes rc i
  read -r -a modes <<<"$(sf_modes)"
  tap_plan $((per_mode * ${#modes[@]}))
  for mode in "${modes[@]}"; do
    SF_MODE=$mode
    SF_TAP_PREFIX="$mode: "
    local start_n=$TAP_N
    sf_xdp_mode_supported "$mode"
    rc=$?
    if ((rc == 1)); then
      for ((i = 0; i < per_mode; i++)); do tap_skip "check $((i + 1))" "$SF_REASON"; done
      continue
    fi
    [[ -n $SF_REASON ]] && tap_diag "$SF_REASON"
    local mode_t0=$SECONDS
    if sf_mode_setup "$mode"; then
      "$scenario" "$mode"
      rc=$?
    else
      tap_diag "cannot set up $SF_TMP (bpffs mount)"
      rc=1
    fi
    local done_n=$((TAP_N - start_n))
    if ((done_n < per_mode)); then
      tap_diag "scenario stopped early (status $rc) after $done_n of $per_mode checks"
      for ((i = done_n; i < per_mode; i++)); do tap_not_ok "check $((i + 1)) not run" nolog; done
    elif ((done_n > per_mode)); then
      tap_diag "scenario made $done_n checks, $per_mode planned (fix the test)"
      TAP_FAILED=$((TAP_FAILED + 1))
    fi
    tap_diag "$mode: $((SECONDS - mode_t0)) s"
    sf_teardown
  done
  SF_TAP_PREFIX=""
}

sf_mode_setup() {
  SF_RUN=$SF_ID${1:0:1}
  SF_TMP=$SF_TMP_ROOT/$1
  mkdir -p "$SF_TMP" || return 1
  SF_SOCK=$SF_TMP/softflowd.sock
  SF_PID=""
  SF_LOG=""
  sf_bpffs
}

# Ends what this test started (only the PIDs it recorded, and whatever is
# still running inside the namespaces it created), deletes its namespaces and
# unmounts its bpffs.  Safe to call more than once.
sf_teardown() {
  local p ns m
  # The feature probe's namespace, if an interrupt came in the middle of it.
  ip netns del "sf-pr-$SF_ID" 2>/dev/null
  for p in "${SF_PIDS[@]}"; do
    if sf_pid_alive "$p"; then kill -KILL "$p" 2>/dev/null; fi
    { wait "$p"; } 2>/dev/null
  done
  SF_PIDS=()
  SF_PID=""
  for ns in "${SF_NAMESPACES[@]}"; do
    [[ -n $ns ]] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for ns in "${SF_NAMESPACES[@]}"; do
    [[ -n $ns ]] && ip netns del "$ns" 2>/dev/null
  done
  SF_NAMESPACES=()
  for m in "${SF_MOUNTS[@]}"; do umount -l "$m" 2>/dev/null; done
  SF_MOUNTS=()
}

sf_on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  sf_teardown
  [[ -n ${SF_TMP_ROOT:-} && -d $SF_TMP_ROOT ]] && rm -rf "$SF_TMP_ROOT"
  exit $rc
}

# sf_finish: the exit status from the results.
sf_finish() {
  if ((TAP_PLANNED >= 0 && TAP_N != TAP_PLANNED)); then
    tap_diag "planned $TAP_PLANNED results, reported $TAP_N"
    exit $KSFT_FAIL
  fi
  tap_diag "$SF_TEST: pass $TAP_PASSED, fail $TAP_FAILED, skip $TAP_SKIPPED"
  ((TAP_FAILED > 0)) && exit $KSFT_FAIL
  ((TAP_PASSED == 0 && TAP_SKIPPED > 0)) && exit $KSFT_SKIP
  exit $KSFT_PASS
}

# ---- helpers for the service tests (firewall, balancer, aes) -----------------------

# sf_wait_listen I tcp|udp PORT: waits (up to 5 s) until a socket in host I
# listens on (is bound to) PORT.
sf_wait_listen() {
  local i flag
  [[ $2 == udp ]] && flag=-Hlun || flag=-Hltn
  for ((i = 0; i < 50; i++)); do
    sf_h "$1" ss "$flag" "sport = :$3" | grep -q . && return 0
    sleep 0.1
  done
  echo "nothing listens on $2 port $3 in h$1"
  return 1
}

# A small UDP tool (python3), run in a host with  sf_udp I MODE ARGS...
#   recv ADDR PORT COUNT TIMEOUT [echo]: binds ADDR:PORT, prints each datagram
#     received as one line of hex until COUNT arrived or TIMEOUT s passed; with
#     "echo" answers each with "reply:" + the datagram.  Exit 0.
#   send ADDR PORT WAIT HEX...: sends each payload (hex) from one socket; with
#     WAIT > 0 waits up to WAIT s for a reply after each and prints it as hex
#     ("-" when none came); exit 0 iff every reply came (or WAIT is 0).
SF_UDP_PY='
import socket, sys, time
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "recv":
    count, timeout = int(sys.argv[4]), float(sys.argv[5])
    echo = sys.argv[6:7] == ["echo"]
    s.bind((addr, port))
    deadline, n = time.time() + timeout, 0
    while n < count and time.time() < deadline:
        s.settimeout(max(deadline - time.time(), 0.001))
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            break
        print(data.hex(), flush=True)
        n += 1
        if echo:
            s.sendto(b"reply:" + data, peer)
    sys.exit(0)
wait, ok = float(sys.argv[4]), True
for h in sys.argv[5:]:
    s.sendto(bytes.fromhex(h), (addr, port))
    if wait > 0:
        s.settimeout(wait)
        try:
            print(s.recv(65535).hex(), flush=True)
        except socket.timeout:
            print("-", flush=True)
            ok = False
sys.exit(0 if ok else 1)
'
sf_udp() {
  local i=$1
  shift
  sf_h "$i" python3 -c "$SF_UDP_PY" "$@"
}

# sf_hex TEXT: TEXT as hex (for sf_udp).
sf_hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

# sf_service_stats NAME: the counters of service NAME (`sfctl --json
# list-services`), as one JSON object.
sf_service_stats() {
  sfctl --json list-services | jq -c --arg n "$1" '.[] | select(.name == $n) | .stats'
}

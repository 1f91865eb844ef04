#!/usr/bin/env bash
# Open vSwitch's userspace datapath (Debian's openvswitch-switch) as the peer
# system for the end-to-end benchmark: the same SoftFlow pipeline, translated
# to OpenFlow with ct() by sf2ovs.py, on one port of the device namespace.
#
#   scripts/peers/ovs.sh start DUT_NS DUT_IF FLOWS_FILE RUNDIR [CPU]
#   scripts/peers/ovs.sh stop  DUT_NS DUT_IF FLOWS_FILE RUNDIR [CPU]
#   (stop only uses RUNDIR; it takes start's arguments so callers can swap
#    the verb)
#
# start: a private ovsdb-server and ovs-vswitchd inside DUT_NS, with their
# own database, sockets, pidfiles and logs under RUNDIR (nothing under
# /var/run/openvswitch or /etc/openvswitch; a system OVS is left alone);
# pinned to CPU with taskset when CPU is given, with pmd-cpu-mask set to that
# CPU.  A bridge (datapath_type=netdev, fail-mode=secure) gets DUT_IF as
# OpenFlow port 1: type afxdp when this OVS build has it, else the default
# (netdev-linux, an AF_PACKET socket).  The port type used is written to
# RUNDIR/port_type.  FLOWS_FILE is translated (RUNDIR/ovs.flows) and loaded
# with `ovs-ofctl -O OpenFlow15 add-flows`; start fails unless OVS then holds
# exactly as many rules as the translation has.
#
# stop: `ovs-appctl exit --cleanup` to our ovs-vswitchd (removes the bridge's
# datapath and the XDP program on DUT_IF), then our ovsdb-server; each is
# killed by the PID in its pidfile if it does not go.  RUNDIR's state
# (database, sockets, pidfiles, translated flows) is removed; the logs and
# port_type stay for the caller.
#
# Environment (optional):
#   OVS_PORT_TYPE  auto (default) | afxdp | system
#   OVS_XDP_MODE   afxdp's options:xdp-mode (default native: copy mode on veth;
#                  best-effort lets OVS fall back to generic XDP)
#   OVS_BRIDGE     bridge name (default br-sfpeer)
#   OVS_TCP_MIDSTREAM  loose (default) | strict: sf2ovs.py --tcp-midstream;
#                  loose commits allowed packets in one ct() (OVS picks up
#                  mid-stream TCP), strict opens TCP connections only on a
#                  SYN as SoftFlow does, with a second ct() (see sf2ovs.py)
#
# Talking to the instance afterwards (the files exist while it runs):
#   ovs-appctl -t RUNDIR/ovs-vswitchd.ctl dpctl/dump-conntrack
#   ovs-ofctl -O OpenFlow15 dump-flows unix:RUNDIR/BRIDGE.mgmt
#   ovs-vsctl --db=unix:RUNDIR/db.sock show
# RUNDIR/env holds these paths as shell variables (OVS_CTL, OVS_MGMT, OVS_DB).
set -euo pipefail

usage() {
  sed -n '/^#   scripts/p' "$0" | sed 's/^#   //' >&2
  exit 2
}

die() {
  echo "ovs.sh: $*" >&2
  exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
(($# >= 5)) || usage
verb=$1 ns=$2 dut_if=$3 flows=$4 rundir=$5 cpu=${6:-}
bridge=${OVS_BRIDGE:-br-sfpeer}
want_type=${OVS_PORT_TYPE:-auto}
xdp_mode=${OVS_XDP_MODE:-native}
midstream=${OVS_TCP_MIDSTREAM:-loose}

[[ $verb == start || $verb == stop ]] || usage
((EUID == 0)) || die "needs root"

# Absolute paths: the daemons run with --no-chdir, and ip netns exec keeps
# the working directory, but a caller's relative RUNDIR should not matter.
if [[ $verb == stop && ! -d $rundir ]]; then
  exit 0  # never started (or already stopped and removed)
fi
mkdir -p "$rundir" || die "cannot create RUNDIR $rundir"
rundir=$(cd "$rundir" && pwd)

db=$rundir/conf.db
db_sock=$rundir/db.sock
db_pid=$rundir/ovsdb-server.pid
db_ctl=$rundir/ovsdb-server.ctl
vs_pid=$rundir/ovs-vswitchd.pid
vs_ctl=$rundir/ovs-vswitchd.ctl
mgmt=$rundir/$bridge.mgmt

# Every OVS tool looks for its files under these; pointing them at RUNDIR
# keeps them away from the system instance's.
export OVS_RUNDIR=$rundir OVS_LOGDIR=$rundir OVS_DBDIR=$rundir OVS_SYSCONFDIR=$rundir

vsctl() { ovs-vsctl --db="unix:$db_sock" --timeout=10 "$@"; }
ofctl() { ovs-ofctl -O OpenFlow15 "$@"; }

# alive PIDFILE NAME: the PID in PIDFILE if it is a live NAME process.
alive() {
  local pid comm
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == "$2" ]] || return 1
  echo "$pid"
}

# stop_daemon PIDFILE NAME CTL: asks through the control socket, then
# SIGTERM, then SIGKILL, each only to the PID in PIDFILE.
stop_daemon() {
  local pidfile=$1 name=$2 ctl=$3 pid i
  pid=$(alive "$pidfile" "$name") || return 0
  if [[ $name == ovs-vswitchd ]]; then
    timeout 10 ovs-appctl -t "$ctl" exit --cleanup >/dev/null 2>&1 || true
  else
    timeout 5 ovs-appctl -t "$ctl" exit >/dev/null 2>&1 || true
  fi
  for i in $(seq 50); do
    alive "$pidfile" "$name" >/dev/null || return 0
    ((i == 20)) && kill -TERM "$pid" 2>/dev/null
    sleep 0.1
  done
  echo "ovs.sh: $name (pid $pid) did not exit; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
  stop_daemon "$vs_pid" ovs-vswitchd "$vs_ctl"
  stop_daemon "$db_pid" ovsdb-server "$db_ctl"
  # exit --cleanup detaches the XDP program; after a SIGKILL it would stay.
  if [[ $(cat "$rundir/port_type" 2>/dev/null) == afxdp ]] && ip netns pids "$ns" >/dev/null 2>&1 &&
    ip -n "$ns" -d link show dev "$dut_if" 2>/dev/null | grep -q ' prog/xdp'; then
    ip -n "$ns" link set dev "$dut_if" xdp off 2>/dev/null || true
  fi
  rm -f "$db" "$rundir/.conf.db.~lock~" "$db_sock" "$db_pid" "$db_ctl" "$vs_pid" "$vs_ctl" \
    "$mgmt" "$rundir/$bridge.snoop" "$rundir/ovs.flows" "$rundir/env" "$rundir/start.err"
}

cpu_mask() {  # hex mask of one CPU
  printf '0x%x' $((1 << $1))
}

# add_port TYPE: DUT_IF as OpenFlow port 1 of the bridge; fails if OVS
# reports an error on the interface.
add_port() {
  local type=$1 err ofport i
  vsctl --if-exists del-port "$bridge" "$dut_if"
  if [[ $type == afxdp ]]; then
    vsctl add-port "$bridge" "$dut_if" -- set interface "$dut_if" type=afxdp \
      "options:xdp-mode=$xdp_mode" options:n_rxq=1 ofport_request=1
  else
    vsctl add-port "$bridge" "$dut_if" -- set interface "$dut_if" ofport_request=1
  fi
  for i in $(seq 50); do
    ofport=$(vsctl get interface "$dut_if" ofport 2>/dev/null || echo -1)
    err=$(vsctl get interface "$dut_if" error 2>/dev/null || true)
    [[ -n $err && $err != '[]' ]] && break
    [[ $ofport == 1 ]] && return 0
    sleep 0.1
  done
  echo "ovs.sh: $type port $dut_if: ofport=$ofport error=${err:-none}" >&2
  return 1
}

do_start() {
  local c
  for c in ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl ovs-appctl python3; do
    command -v "$c" >/dev/null || die "$c is not installed (apt-get install openvswitch-switch)"
  done
  [[ -r $flows ]] || die "cannot read FLOWS_FILE $flows"
  ip netns pids "$ns" >/dev/null 2>&1 || die "no network namespace $ns"
  ip -n "$ns" link show dev "$dut_if" >/dev/null 2>&1 || die "no interface $dut_if in namespace $ns"
  if [[ -n $cpu ]]; then
    [[ $cpu =~ ^[0-9]+$ ]] || die "CPU must be a CPU number, not '$cpu'"
    taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu"
  fi
  case $want_type in auto | afxdp | system) ;; *) die "OVS_PORT_TYPE must be auto, afxdp or system" ;; esac
  case $midstream in loose | strict) ;; *) die "OVS_TCP_MIDSTREAM must be loose or strict" ;; esac
  if alive "$vs_pid" ovs-vswitchd >/dev/null || alive "$db_pid" ovsdb-server >/dev/null; then
    die "an OVS instance already runs from $rundir (stop it first)"
  fi
  local schema=/usr/share/openvswitch/vswitch.ovsschema
  [[ -r $schema ]] || die "no OVS schema at $schema"

  python3 "$here/sf2ovs.py" --tcp-midstream "$midstream" "$flows" >"$rundir/ovs.flows" ||
    die "cannot translate $flows"
  local n_rules
  n_rules=$(grep -c . "$rundir/ovs.flows")

  rm -f "$db" "$rundir/.conf.db.~lock~"
  ovsdb-tool create "$db" "$schema" || die "ovsdb-tool create $db failed"

  local pin=()
  [[ -n $cpu ]] && pin=(taskset -c "$cpu")
  # The daemons' start-up chatter ("opened log file") goes to a file, shown
  # only when they fail; after --detach they log to their log files.
  ip netns exec "$ns" "${pin[@]}" ovsdb-server "$db" --remote="punix:$db_sock" \
    --pidfile="$db_pid" --unixctl="$db_ctl" --log-file="$rundir/ovsdb-server.log" \
    --detach --no-chdir 2>"$rundir/start.err" ||
    die "ovsdb-server did not start: $(tail -3 "$rundir/start.err")"
  vsctl --no-wait init
  [[ -n $cpu ]] && vsctl --no-wait set Open_vSwitch . "other_config:pmd-cpu-mask=$(cpu_mask "$cpu")"
  ip netns exec "$ns" "${pin[@]}" ovs-vswitchd "unix:$db_sock" --pidfile="$vs_pid" \
    --unixctl="$vs_ctl" --log-file="$rundir/ovs-vswitchd.log" --detach --no-chdir \
    2>>"$rundir/start.err" ||
    die "ovs-vswitchd did not start: $(tail -3 "$rundir/start.err") (see $rundir/ovs-vswitchd.log)"

  vsctl add-br "$bridge" -- set bridge "$bridge" datapath_type=netdev fail-mode=secure \
    protocols=OpenFlow10,OpenFlow13,OpenFlow15 other_config:disable-in-band=true ||
    die "cannot create bridge $bridge"

  local types type
  types=$(vsctl get Open_vSwitch . iface_types)
  case $want_type in
    afxdp)
      [[ $types == *afxdp* ]] || die "this OVS has no afxdp ports (iface_types: $types)"
      add_port afxdp || die "cannot add $dut_if as an afxdp port (see $rundir/ovs-vswitchd.log)"
      type=afxdp
      ;;
    system)
      add_port system || die "cannot add $dut_if (see $rundir/ovs-vswitchd.log)"
      type=system
      ;;
    auto)
      if [[ $types == *afxdp* ]] && add_port afxdp; then
        type=afxdp
      else
        [[ $types == *afxdp* ]] && echo "ovs.sh: afxdp failed; falling back to the default port type" >&2
        add_port system || die "cannot add $dut_if (see $rundir/ovs-vswitchd.log)"
        type=system
      fi
      ;;
  esac
  echo "$type" >"$rundir/port_type"

  ofctl del-flows "unix:$mgmt" || die "ovs-ofctl cannot reach $mgmt"
  ofctl add-flows "unix:$mgmt" "$rundir/ovs.flows" || die "OVS refused the translated rules $rundir/ovs.flows"
  local loaded
  loaded=$(ofctl --no-stats dump-flows "unix:$mgmt" | grep -c 'actions=' || true)
  ((loaded == n_rules)) || die "OVS holds $loaded rules, the translation has $n_rules"

  cat >"$rundir/env" <<EOF
OVS_CTL=$vs_ctl
OVS_MGMT=unix:$mgmt
OVS_DB=unix:$db_sock
OVS_BRIDGE=$bridge
OVS_PORT_TYPE=$type
OVS_TCP_MIDSTREAM=$midstream
EOF
  echo "ovs.sh: bridge $bridge in $ns: $dut_if (type $type${cpu:+, CPU $cpu}), $loaded rules" \
    "from $flows, TCP mid-stream $midstream"
}

if [[ $verb == start ]]; then
  # A half-started instance is stopped again, so a failed start leaves nothing behind.
  trap 'rc=$?; if ((rc != 0)); then do_stop; fi' EXIT
  do_start
else
  do_stop
fi

#!/usr/bin/env bash
# The Linux kernel as the peer system for the end-to-end benchmark: an IPv4
# router with an nftables conntrack firewall carrying the ACL of the same
# SoftFlow pipeline (translated by sf2nft.py), on one port of the device
# namespace, forwarding every packet back out the port it came in on.
#
#   scripts/peers/linux.sh start [--no-nft] [--cpu N] DUT_NS DUT_IF FLOWS_FILE RUNDIR GEN_MAC
#   scripts/peers/linux.sh stop  DUT_NS DUT_IF FLOWS_FILE RUNDIR [GEN_MAC]
#   (stop only uses DUT_NS and RUNDIR; it takes start's arguments so callers
#    can swap the verb)
#
#   GEN_MAC  the generator's MAC (e.g. from `ip -n GEN_NS -j link show GEN_IF`):
#            every forwarded packet goes to it
#   --no-nft the plain router, no firewall and no conntrack (reference)
#   --cpu N  the router's packet processing on CPU N (RPS on DUT_IF's receive
#            queues).  Without it a veth hands each frame to the kernel in
#            the sender's context: the router would run on the generator's
#            CPU and pace it (AF_XDP copy mode resends what the veth
#            refused), so it would never drop and share the generator's core.
#
# start, in DUT_NS:
#   DUT_IF: MAC 02:53:46:00:00:01 (the traces' gateway), address
#     192.0.2.1/24, up;
#   sysctls: ip_forward=1; rp_filter=0 and send_redirects=0 on all, default
#     and DUT_IF; with nftables also nf_conntrack_tcp_loose=0 (SoftFlow's
#     conntrack refuses mid-stream TCP it did not see open; the kernel's
#     default would pick it up);
#   the next hop 192.0.2.2 on DUT_IF, a permanent neighbour at GEN_MAC;
#   routes via it (proto 245) for 10.0.0.0/8 and 172.16.0.0/12 (the traces'
#     clients and servers) and for every prefix of the pipeline's L3 table
#     (rules setting dl_dst), so the kernel's FIB is as large as SoftFlow's
#     L3 table; all lead back out DUT_IF;
#   unless --no-nft: the table `ip softflow_peer` from sf2nft.py
#     (RUNDIR/rules.nft): forward chain, policy drop; established/related
#     accepted, invalid dropped, the ACL's allow rules accept new
#     connections, the rest is dropped.
# Whatever start changes is recorded in RUNDIR; stop undoes all of it (the
# nft table, routes, neighbour, address, MAC, sysctls, RPS) and removes
# RUNDIR's state, so the namespace may be the caller's and outlive the peer.
# With nftables, the namespace's IPv4 connection table is flushed at start
# and at stop (ctnetlink), so no run sees another's connections.
#
# Environment (optional): LINUX_PEER_ADDR (192.0.2.1/24), LINUX_PEER_NEXTHOP
# (192.0.2.2), LINUX_PEER_MAC (02:53:46:00:00:01).
set -euo pipefail

usage() {
  sed -n '/^#   scripts/p' "$0" | sed 's/^#   //' >&2
  exit 2
}

die() {
  echo "linux.sh: $*" >&2
  exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
nft_on=1
cpu=""
args=()
while (($#)); do
  case $1 in
    --no-nft) nft_on=0 ;;
    --cpu)
      (($# >= 2)) || die "--cpu needs a CPU number"
      cpu=$2
      shift
      ;;
    -h | --help) usage ;;
    --*) die "unknown option $1" ;;
    *) args+=("$1") ;;
  esac
  shift
done
((${#args[@]} >= 5)) || usage
verb=${args[0]} ns=${args[1]} dut_if=${args[2]} flows=${args[3]} rundir=${args[4]}
gen_mac=${args[5]:-}
[[ $verb == start || $verb == stop ]] || usage
((EUID == 0)) || die "needs root"

addr=${LINUX_PEER_ADDR:-192.0.2.1/24}
next_hop=${LINUX_PEER_NEXTHOP:-192.0.2.2}
gw_mac=${LINUX_PEER_MAC:-02:53:46:00:00:01}
route_proto=245
nft_table=softflow_peer

if [[ $verb == stop && ! -d $rundir ]]; then
  exit 0  # never started (or already stopped and removed)
fi
mkdir -p "$rundir" || die "cannot create RUNDIR $rundir"
rundir=$(cd "$rundir" && pwd)
state=$rundir/linux-peer.state   # what start changed, one item a line

in_ns() { ip netns exec "$ns" "$@"; }

record() { echo "$*" >>"$state"; }

# ns_write VALUE FILE: writes a sysfs file as the namespace sees it.
# shellcheck disable=SC2016  # $1/$2 are the inner shell's
ns_write() { in_ns sh -c 'echo "$1" >"$2"' sh "$1" "$2"; }

# Undoes the items of the state file, latest first.  Each undo tolerates
# what is already gone (a namespace deleted under us, a half-done start).
do_stop() {
  [[ -f $state ]] || return 0
  local kind a b
  if ! ip netns pids "$ns" >/dev/null 2>&1; then
    echo "linux.sh: namespace $ns is gone; nothing to undo" >&2
    rm -f "$state" "$rundir/rules.nft" "$rundir/routes.batch"
    return 0
  fi
  while read -r kind a b; do
    case $kind in
      nft)
        in_ns nft delete table ip "$a" 2>/dev/null || true
        ct_flush || true
        ;;
      routes) ip -n "$ns" route flush proto "$a" 2>/dev/null || true ;;
      neigh) ip -n "$ns" neigh del "$a" dev "$b" 2>/dev/null || true ;;
      addr) ip -n "$ns" addr del "$a" dev "$b" 2>/dev/null || true ;;
      mac) ip -n "$ns" link set dev "$b" address "$a" 2>/dev/null || true ;;
      sysctl) in_ns sysctl -qw "$a=$b" >/dev/null 2>&1 || true ;;
      rps) ns_write "$b" "$a" 2>/dev/null || true ;;
    esac
  done < <(tac "$state")
  rm -f "$state" "$rundir/rules.nft" "$rundir/routes.batch"
}

# Empties DUT_NS's IPv4 conntrack table: one ctnetlink IPCTNL_MSG_CT_DELETE
# without attributes (what `conntrack -F` sends; that tool may be absent).
ct_flush() {
  in_ns python3 -c '
import os, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
body = struct.pack("=BBH", socket.AF_INET, 0, 0)           # nfgenmsg
msg_type = (1 << 8) | 2                 # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
s.send(struct.pack("=IHHII", 16 + len(body), msg_type, 0x1 | 0x4, 1, 0) + body)  # REQUEST|ACK
reply = s.recv(65536)
if struct.unpack("=H", reply[4:6])[0] == 2:  # NLMSG_ERROR: 0 is the ACK
    err = struct.unpack("=i", reply[16:20])[0]
    if err:
        sys.exit("conntrack flush: " + os.strerror(-err))
'
}

set_sysctl() {  # KEY VALUE: records the old value first
  local old
  old=$(in_ns sysctl -n "$1") || die "no sysctl $1 in $ns"
  record sysctl "$1" "$old"
  in_ns sysctl -qw "$1=$2" >/dev/null || die "cannot set $1=$2 in $ns"
}

do_start() {
  local c
  for c in ip python3; do command -v "$c" >/dev/null || die "$c is not installed"; done
  ((nft_on)) && { command -v nft >/dev/null || die "nft is not installed (apt-get install nftables)"; }
  [[ $gen_mac =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || die "GEN_MAC must be a MAC address, not '$gen_mac'"
  [[ -r $flows ]] || die "cannot read FLOWS_FILE $flows"
  ip netns pids "$ns" >/dev/null 2>&1 || die "no network namespace $ns"
  ip -n "$ns" link show dev "$dut_if" >/dev/null 2>&1 || die "no interface $dut_if in namespace $ns"
  [[ -e $state ]] && die "a Linux peer was started with RUNDIR $rundir (stop it first)"
  if [[ -n $cpu ]]; then
    if ! [[ $cpu =~ ^[0-9]+$ ]] || ((cpu >= $(nproc --all))); then
      die "--cpu must be a CPU number below $(nproc --all), not '$cpu'"
    fi
  fi
  if ((nft_on)); then
    python3 "$here/sf2nft.py" --table "$nft_table" "$flows" >"$rundir/rules.nft" ||
      die "cannot translate $flows"
    in_ns nft list table ip "$nft_table" >/dev/null 2>&1 &&
      die "table ip $nft_table already exists in $ns"
  fi
  : >"$state"

  local old_mac
  old_mac=$(ip -n "$ns" -j link show dev "$dut_if" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  record mac "$old_mac" "$dut_if"
  ip -n "$ns" link set dev "$dut_if" address "$gw_mac" || die "cannot set $dut_if's MAC"
  ip -n "$ns" link set dev "$dut_if" up

  set_sysctl net.ipv4.ip_forward 1
  local scope
  for scope in all default "$dut_if"; do
    set_sysctl "net.ipv4.conf.$scope.rp_filter" 0
    set_sysctl "net.ipv4.conf.$scope.send_redirects" 0
  done
  ((nft_on)) && set_sysctl net.netfilter.nf_conntrack_tcp_loose 0
  if [[ -n $cpu ]]; then
    local q old
    for q in $(in_ns sh -c "ls -d /sys/class/net/$dut_if/queues/rx-*"); do
      old=$(in_ns cat "$q/rps_cpus")
      record rps "$q/rps_cpus" "$old"
      ns_write "$(printf '%x' $((1 << cpu)))" "$q/rps_cpus" ||
        die "cannot steer $dut_if's receive processing to CPU $cpu"
    done
  fi

  record addr "$addr" "$dut_if"
  ip -n "$ns" addr add "$addr" dev "$dut_if" || die "cannot add $addr to $dut_if"
  record neigh "$next_hop" "$dut_if"
  ip -n "$ns" neigh replace "$next_hop" lladdr "$gen_mac" dev "$dut_if" nud permanent ||
    die "cannot add the neighbour $next_hop at $gen_mac"

  # The traces' networks, then the L3 table's prefixes (nw_dst of the rules
  # that set dl_dst); duplicates and the link's own prefix are left out.
  local link_net
  link_net=$(python3 -c 'import ipaddress,sys; print(ipaddress.ip_interface(sys.argv[1]).network)' "$addr")
  {
    printf '%s\n' 10.0.0.0/8 172.16.0.0/12
    sed -n 's/.*[,]nw_dst=\([0-9./]*\),.*actions=mod_dl_dst:.*/\1/p' "$flows"
  } | awk -v skip="$link_net" '$0 != skip && !seen[$0]++' |
    sed "s|.*|route add & via $next_hop dev $dut_if proto $route_proto|" >"$rundir/routes.batch"
  record routes "$route_proto"
  ip -n "$ns" -batch "$rundir/routes.batch" || die "cannot add the routes in $rundir/routes.batch"

  if ((nft_on)); then
    record nft "$nft_table"
    in_ns nft -f "$rundir/rules.nft" || die "nft refused $rundir/rules.nft"
    ct_flush || die "cannot flush the conntrack table of $ns"
  fi
  local n_routes n_rules=0
  n_routes=$(grep -c . "$rundir/routes.batch")
  ((nft_on)) && n_rules=$(grep -c 'ct state new' "$rundir/rules.nft")
  echo "linux.sh: router in $ns on $dut_if${cpu:+ (CPU $cpu)}: $n_routes routes via $next_hop ($gen_mac)," \
    "$( ((nft_on)) && echo "nftables table $nft_table with $n_rules allow rules" || echo "no nftables")"
}

if [[ $verb == start ]]; then
  # A failed start undoes what it did.
  trap 'rc=$?; if ((rc != 0)); then do_stop; fi' EXIT
  do_start
else
  do_stop
fi

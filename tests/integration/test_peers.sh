#!/bin/bash
# The benchmark's peer systems (scripts/peers/): Open vSwitch's userspace
# datapath with ct() and the Linux kernel router with nftables conntrack, on
# a small Pipeline A, with real TCP stacks.
#
#   bash tests/integration/test_peers.sh BUILD_DIR      (root; needs sf-pipegen)
#
# Topology (ID unique to the run): the device under test has ONE port and
# sends every packet back out of it, as in the benchmark; a helper namespace
# stands where the generator would, and steers what comes back to the client
# or the server by destination address (tc u32 + mirred):
#
#   sfp-c-ID  client 10.1.0.2    c0-ID --- lc-ID \
#                                                  sfp-l-ID  ld-ID --- d0-ID  sfp-d-ID (DUT)
#   sfp-s-ID  server 172.16.1.2  s0-ID --- ls-ID /
#
# The hosts send to the gateway MAC 02:53:46:00:00:01.  What the DUT sends
# back carries the destination MAC it chose: OVS runs Pipeline A's L3 table
# (mod_dl_dst to a random next hop), so each host's MAC is set to the next
# hop its address routes to; the Linux router sends to GEN_MAC, so both
# hosts take that MAC.
#
# Checks, per peer: TCP client -> server (8080) arrives intact (sha256);
# ping client -> server; an unsolicited TCP SYN server -> client:7000 is
# dropped (only the clients may open connections: Pipeline A's default rule
# is conntrack:0) although the client listens; the peer's own view (OVS:
# dpctl/dump-conntrack lists the connection, the est-only table's drop rule
# counted the SYN; Linux: /proc/net/nf_conntrack lists it, nft counters);
# TCP segments of no connection are dropped where only existing connections
# may pass (both peers) and, where the ACL allows, by Linux and by OVS with
# OVS_TCP_MIDSTREAM=strict (OVS's default picks them up); stop leaves
# nothing behind.  The plain router (--no-nft) passes the same unsolicited
# SYN, which shows the firewall is what stopped it.  Full-size Pipeline A
# (500/500/500): OVS holds every translated rule, nft -c accepts the ruleset.
#
# Exit: 0 all passed, 1 a failure, 4 (skip) ovs-vswitchd or nft is not installed.
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd ovs-vswitchd ovsdb-server ovs-vsctl ovs-ofctl ovs-appctl nft
for c in nc tc sha256sum ss taskset; do
  command -v "$c" >/dev/null || sf_bail "needs $c"
done

PEERS=$(cd "$(dirname "$0")/../../scripts/peers" && pwd)
PIPEGEN=$SF_BUILD/sf-pipegen
[[ -x $PIPEGEN ]] || sf_bail "$PIPEGEN is missing (build sf-pipegen)"
SF_TMP=$SF_TMP_ROOT

CLIENT=10.1.0.2
SERVER=172.16.1.2
GW_MAC=02:53:46:00:00:01
GEN_MAC=02:47:45:4e:00:01 # the Linux router's next hop: both hosts take it
TCP_PORT=8080             # client -> server: allowed (the clients' rule)
BACK_PORT=7000            # server -> client: not allowed
BYTES=4000000

NS_C=sfp-c-$SF_ID NS_S=sfp-s-$SF_ID NS_L=sfp-l-$SF_ID NS_D=sfp-d-$SF_ID
IF_C=c0-$SF_ID IF_LC=lc-$SF_ID IF_S=s0-$SF_ID IF_LS=ls-$SF_ID IF_D=d0-$SF_ID IF_LD=ld-$SF_ID
OVS_RUN=$SF_TMP/ovs
LINUX_RUN=$SF_TMP/linux
OVS_STARTED=0
LINUX_STARTED=0

# Stops the peers before lib.sh's teardown deletes the namespaces (which
# would also end OVS, but not as cleanly).
peers_on_exit() {
  local rc=$?
  ((OVS_STARTED)) && bash "$PEERS/ovs.sh" stop "$NS_D" "$IF_D" - "$OVS_RUN" >/dev/null 2>&1
  ((LINUX_STARTED)) && bash "$PEERS/linux.sh" stop "$NS_D" "$IF_D" - "$LINUX_RUN" >/dev/null 2>&1
  (exit $rc)
  sf_on_exit
}
trap peers_on_exit EXIT

DATA=$SF_TMP/data
head -c "$BYTES" /dev/urandom >"$DATA" || sf_bail "cannot write $DATA"
DATA_SUM=$(sha256sum <"$DATA" | cut -d' ' -f1)

SMALL=$SF_TMP/small.flows
FULL=$SF_TMP/full.flows
"$PIPEGEN" --pipeline A --l2-rules 20 --l3-rules 20 --acl-rules 20 --client 10.0.0.0/8 \
  --out "$SMALL" >/dev/null || sf_bail "sf-pipegen failed"
"$PIPEGEN" --pipeline A --out "$FULL" >/dev/null || sf_bail "sf-pipegen failed"

# Reads a SoftFlow flow file the way the pipeline treats our two hosts:
#   l3-mac FLOWS IP           the MAC table 1 sets for a packet to IP
#   acl FLOWS SRC DST PROTO DPORT
#                             the actions of the ACL (table 2) rule that wins
#                             for that packet, any source port (a rule with
#                             tp_src counts as matching: conservative)
PIPELINE_PY='
import ipaddress, re, sys
mode, path = sys.argv[1], sys.argv[2]
rules = []
for line in open(path):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    match, _, actions = line.partition(",actions=")
    f = {}
    for item in match.split(","):
        k, _, v = item.partition("=")
        f[k] = v
    rules.append((int(f.get("table", 0)), int(f.get("priority", 32768)), f, actions))
def in_net(ip, v):
    return v is None or ipaddress.ip_address(ip) in ipaddress.ip_network(v, strict=False)
def best(cands):
    cands = sorted(cands, key=lambda r: -r[1])
    return cands[0] if cands else None
if mode == "l3-mac":
    ip = sys.argv[3]
    r = best([r for r in rules if r[0] == 1 and "ip" in r[2] and in_net(ip, r[2].get("nw_dst"))])
    m = re.search(r"mod_dl_dst:([0-9a-f:]{17})", r[3] if r else "")
    print(m.group(1) if m else "none")
else:
    src, dst, proto, dport = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
    def ok(f):
        if "arp" in f:
            return False
        for p in ("tcp", "udp", "icmp"):
            if p in f and p != proto:
                return False
        if "nw_proto" in f and int(f["nw_proto"]) != {"tcp": 6, "udp": 17, "icmp": 1}[proto]:
            return False
        if not (in_net(src, f.get("nw_src")) and in_net(dst, f.get("nw_dst"))):
            return False
        if "tp_dst" in f:
            v, _, m = f["tp_dst"].partition("/")
            m = int(m, 0) if m else 0xFFFF
            if dport & m != int(v, 0) & m:
                return False
        return True
    r = best([r for r in rules if r[0] == 2 and ok(r[2])])
    print(r[3] if r else "none")
'
pipeline() { python3 -c "$PIPELINE_PY" "$@"; }

# The checks below rely on the small pipeline treating our hosts as Pipeline
# A means to: the client may open connections, the server may not.
verdict=$(pipeline acl "$SMALL" "$CLIENT" "$SERVER" tcp $TCP_PORT)
[[ $verdict == softflow:conntrack:1 ]] || sf_bail "the ACL does not let $CLIENT open $SERVER:$TCP_PORT ($verdict)"
verdict=$(pipeline acl "$SMALL" "$SERVER" "$CLIENT" tcp $BACK_PORT)
[[ $verdict == softflow:conntrack:0 ]] || sf_bail "the ACL lets $SERVER open $CLIENT:$BACK_PORT ($verdict)"

# ---- topology ------------------------------------------------------------------------

in_c() { ip netns exec "$NS_C" "$@"; }
in_s() { ip netns exec "$NS_S" "$@"; }
in_d() { ip netns exec "$NS_D" "$@"; }

topology() {
  local ns
  for ns in "$NS_C" "$NS_S" "$NS_L" "$NS_D"; do
    ip netns add "$ns" || return 1
    SF_NAMESPACES+=("$ns")
    sf_quiet_ns "$ns"
  done
  ip link add "$IF_C" netns "$NS_C" type veth peer name "$IF_LC" netns "$NS_L" || return 1
  ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_LS" netns "$NS_L" || return 1
  ip link add "$IF_D" netns "$NS_D" type veth peer name "$IF_LD" netns "$NS_L" || return 1
  # Full checksums from the hosts: partial ones would not survive AF_XDP.
  in_c ethtool -K "$IF_C" tx off >/dev/null || return 1
  in_s ethtool -K "$IF_S" tx off >/dev/null || return 1
  ip -n "$NS_C" addr add "$CLIENT/32" dev "$IF_C"
  ip -n "$NS_S" addr add "$SERVER/32" dev "$IF_S"
  local i
  for i in "$NS_C:$IF_C" "$NS_S:$IF_S" "$NS_L:$IF_LC" "$NS_L:$IF_LS" "$NS_L:$IF_LD" "$NS_D:$IF_D"; do
    ip -n "${i%%:*}" link set "${i#*:}" up || return 1
  done
  ip -n "$NS_C" link set lo up
  ip -n "$NS_S" link set lo up
  # Each host reaches the other through the gateway.
  ip -n "$NS_C" route add 172.16.0.0/12 dev "$IF_C" src "$CLIENT" || return 1
  ip -n "$NS_S" route add 10.0.0.0/8 dev "$IF_S" src "$SERVER" || return 1
  # (the gateway's neighbour entries: host_macs, per peer)
  # The helper: hosts -> DUT as they are; DUT -> the host its destination is.
  local t="tc -n $NS_L"
  for i in "$IF_LC" "$IF_LS" "$IF_LD"; do $t qdisc add dev "$i" ingress || return 1; done
  $t filter add dev "$IF_LC" parent ffff: protocol all prio 1 u32 match u32 0 0 \
    action mirred egress redirect dev "$IF_LD" || return 1
  $t filter add dev "$IF_LS" parent ffff: protocol all prio 1 u32 match u32 0 0 \
    action mirred egress redirect dev "$IF_LD" || return 1
  $t filter add dev "$IF_LD" parent ffff: protocol ip prio 1 u32 match ip dst 10.0.0.0/8 \
    action mirred egress redirect dev "$IF_LC" || return 1
  $t filter add dev "$IF_LD" parent ffff: protocol ip prio 2 u32 match ip dst 172.16.0.0/12 \
    action mirred egress redirect dev "$IF_LS" || return 1
  # (Anything else goes up the helper's stack, which has no address, and is
  # dropped there: this kernel may have no gact for "action drop".)
}

# host_macs CLIENT_MAC SERVER_MAC: a new MAC flushes the interface's
# neighbours (permanent ones too), so the gateway's entries are made again.
host_macs() {
  ip -n "$NS_C" link set dev "$IF_C" address "$1" &&
    ip -n "$NS_S" link set dev "$IF_S" address "$2" &&
    ip -n "$NS_C" neigh replace "$SERVER" lladdr "$GW_MAC" dev "$IF_C" nud permanent &&
    ip -n "$NS_S" neigh replace "$CLIENT" lladdr "$GW_MAC" dev "$IF_S" nud permanent
}

# ---- traffic -------------------------------------------------------------------------

wait_listen() {  # NS PORT
  local i
  for ((i = 0; i < 50; i++)); do
    ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  echo "nothing listens on TCP port $2 in $1"
  return 1
}

# BYTES from the client to the server's TCP_PORT, sha256 compared.
tcp_transfer() {
  local out=$SF_TMP/received rc sum size server
  rm -f "$out"
  in_s timeout 20 nc -l "$SERVER" $TCP_PORT >"$out" &
  server=$!
  wait_listen "$NS_S" $TCP_PORT || return 1
  in_c timeout 20 nc -N "$SERVER" $TCP_PORT <"$DATA"
  rc=$?
  wait "$server"
  sum=$(sha256sum <"$out" | cut -d' ' -f1)
  size=$(stat -c %s "$out")
  echo "client status $rc; sent $BYTES bytes; received $size bytes, sha256 $([[ $sum == "$DATA_SUM" ]] && echo matches || echo differs)"
  [[ $rc == 0 && $size == "$BYTES" && $sum == "$DATA_SUM" ]]
}

# send_midstream_ack c|s: three TCP ACKs that belong to no connection
# (crafted, sent on the host's interface), from the client to the server's
# port MIDSTREAM_PORT (c) or back (s).  SoftFlow's conntrack refuses
# mid-stream TCP it did not see open; the Linux peer and OVS with
# OVS_TCP_MIDSTREAM=strict must too.  (OVS by default picks up what an allow
# rule lets through, but never what only existing connections may send.)
MIDSTREAM_PORT=8081
MIDSTREAM_PY='
import socket, struct, sys
ifname, src_mac, dst_mac, src, dst, dport = sys.argv[1:7]
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
tcp = struct.pack("!HHIIBBHHH", 40000, int(dport), 1000, 2000, 5 << 4, 0x10, 65535, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, saddr, daddr)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for _ in range(3):
    s.send(eth + ip + tcp)
'
send_midstream_ack() {
  local ns=$NS_C dev=$IF_C src=$CLIENT dst=$SERVER mac
  [[ $1 == s ]] && { ns=$NS_S dev=$IF_S src=$SERVER dst=$CLIENT; }
  mac=$(ip -n "$ns" -j link show dev "$dev" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  ip netns exec "$ns" python3 -c "$MIDSTREAM_PY" "$dev" "$mac" "$GW_MAC" "$src" "$dst" $MIDSTREAM_PORT
}

ping_server() {
  local out
  out=$(in_c ping -n -q -c 3 -i 0.2 -W 1 "$SERVER" 2>&1)
  grep -q " 3 received" <<<"$out" && return 0
  echo "$out"
  return 1
}

# The server tries to open a connection to the client's listening
# BACK_PORT.  Prints "connected" or "refused".
server_opens_back() {
  local server rc
  in_c timeout 10 nc -l "$CLIENT" $BACK_PORT >/dev/null &
  server=$!
  wait_listen "$NS_C" $BACK_PORT >/dev/null || { echo "no listener"; return; }
  in_s timeout 5 nc -z -w 2 "$CLIENT" $BACK_PORT >/dev/null 2>&1
  rc=$?
  kill "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  ((rc == 0)) && echo connected || echo refused
}

# ---- Open vSwitch --------------------------------------------------------------------

# ovs_start FLOWS: ovs.sh's output is left in $SF_TMP/start.out.
ovs_start() {
  OVS_STARTED=1
  bash "$PEERS/ovs.sh" start "$NS_D" "$IF_D" "$1" "$OVS_RUN" >"$SF_TMP/start.out" 2>&1
}

ovs_stop() {
  bash "$PEERS/ovs.sh" stop "$NS_D" "$IF_D" - "$OVS_RUN"
  OVS_STARTED=0
}

ovs_ofctl() { ovs-ofctl -O OpenFlow15 "$@"; }
ovs_mgmt() { echo "unix:$OVS_RUN/br-sfpeer.mgmt"; }

# "translated N, OVS holds M" for the running instance.
ovs_rule_counts() {
  local want have
  want=$(grep -c . "$OVS_RUN/ovs.flows")
  have=$(ovs_ofctl --no-stats dump-flows "$(ovs_mgmt)" | grep -c 'actions=')
  echo "translated $want rules, OVS holds $have"
  ((want == have && want > 0))
}

ovs_conntrack_lists_transfer() {
  local dump
  dump=$(ovs-appctl -t "$OVS_RUN/ovs-vswitchd.ctl" dpctl/dump-conntrack 2>&1)
  echo "$dump" | head -10
  grep -qE "^tcp,orig=\(src=$CLIENT,dst=$SERVER,sport=[0-9]+,dport=$TCP_PORT\),reply=\(src=$SERVER,dst=$CLIENT" <<<"$dump"
}

# n_packets of the est-only table's final drop rule (sf2ovs: table 4, priority 0).
ovs_est_drops() {
  ovs_ofctl dump-flows "$(ovs_mgmt)" table=4 | sed -n 's/.*n_packets=\([0-9]*\),.*priority=0 .*/\1/p'
}

# Packets of the allow table's "new TCP without a SYN" drop rules (sf2ovs
# --tcp-midstream strict: table 3, priority 140).
ovs_midstream_drops() {
  ovs_ofctl dump-flows "$(ovs_mgmt)" table=3 |
    sed -n 's/.*n_packets=\([0-9]*\),.*priority=140,.*/\1/p' | awk '{n += $1} END {print n + 0}'
}

# No process of ours left, nothing on the port.
ovs_gone() {
  local left
  left=$(pgrep -a -f "$OVS_RUN/" || true)
  [[ -z $left ]] || { echo "still running: $left"; return 1; }
  if ip -n "$NS_D" -d link show dev "$IF_D" | grep -q 'prog/xdp'; then
    echo "an XDP program is still attached to $IF_D"
    return 1
  fi
  [[ ! -e $OVS_RUN/db.sock && ! -e $OVS_RUN/conf.db ]] || { echo "state left in $OVS_RUN"; return 1; }
}

# wait_counter CMD BEFORE N: waits (up to 3 s) until CMD prints >= BEFORE+N
# and prints the last value: OpenFlow counters follow the datapath's with
# the revalidators' delay.
wait_counter() {
  local i v
  for ((i = 0; i < 30; i++)); do
    v=$($1)
    ((${v:-0} >= $2 + $3)) && break
    sleep 0.1
  done
  echo "${v:-0}"
}

ovs_checks() {  # 10 checks
  local out rc type drops0 drops1 verdict
  host_macs "$(pipeline l3-mac "$SMALL" "$CLIENT")" "$(pipeline l3-mac "$SMALL" "$SERVER")" || return 1
  ovs_start "$SMALL"
  rc=$?
  tap_diag <"$SF_TMP/start.out"
  type=$(cat "$OVS_RUN/port_type" 2>/dev/null)
  sf_expect "ovs: starts on one port (type ${type:-?}) and holds every translated rule" \
    "$( ((rc == 0)) && sf_true ovs_rule_counts || echo 0)" "$(ovs_rule_counts 2>&1)" || return 1
  sf_check "ovs: ping client -> server" ping_server
  sf_check "ovs: TCP client -> server:$TCP_PORT, $BYTES bytes intact" tcp_transfer
  sf_check "ovs: dpctl/dump-conntrack lists the client's TCP connection" ovs_conntrack_lists_transfer
  drops0=$(ovs_est_drops)
  verdict=$(server_opens_back)
  drops1=$(ovs_est_drops)
  sf_expect "ovs: unsolicited TCP SYN server -> client:$BACK_PORT is dropped, counted by the est-only table" \
    "$([[ $verdict == refused ]] && ((${drops1:-0} > ${drops0:-0})) && echo 1 || echo 0)" \
    "server -> client: $verdict; table 4 drops $drops0 -> $drops1"
  drops0=$(ovs_est_drops)
  send_midstream_ack s
  drops1=$(wait_counter ovs_est_drops "$drops0" 3)
  sf_expect "ovs: mid-stream TCP ACK server -> client (no connection) is dropped" \
    $((drops1 >= drops0 + 3)) "table 4 drops $drops0 -> $drops1"
  ovs_stop >/dev/null 2>&1
  sf_check "ovs: stop ends our daemons, detaches XDP, removes the state" ovs_gone

  # Strict TCP: only a SYN opens a connection, even where the ACL allows.
  OVS_TCP_MIDSTREAM=strict ovs_start "$SMALL"
  rc=$?
  if ((rc == 0)); then
    sf_check "ovs strict: TCP client -> server:$TCP_PORT, $BYTES bytes intact" tcp_transfer
  else
    tap_diag <"$SF_TMP/start.out"
    tap_not_ok "ovs strict: starts" nolog
  fi
  drops0=$(ovs_midstream_drops)
  send_midstream_ack c
  drops1=$(wait_counter ovs_midstream_drops "$drops0" 3)
  sf_expect "ovs strict: mid-stream TCP ACK client -> server:$MIDSTREAM_PORT (allowed, no connection) is dropped, not picked up" \
    $((drops1 >= drops0 + 3)) "table 3 priority 140 drops $drops0 -> $drops1"
  ovs_stop >/dev/null 2>&1

  # Full size: the translation of 500/500/500 loads completely.
  ovs_start "$FULL"
  rc=$?
  sf_expect "ovs: full-size Pipeline A (500/500/500): every translated rule loaded" \
    "$( ((rc == 0)) && sf_true ovs_rule_counts || echo 0)" "$(cat "$SF_TMP/start.out")" \
    "$(ovs_rule_counts 2>&1)"
  ovs_stop >/dev/null 2>&1
  true
}

# ---- Linux ---------------------------------------------------------------------------

# linux_start [--no-nft] FLOWS: linux.sh's output is left in $SF_TMP/start.out.
linux_start() {
  local flows=${!#}
  LINUX_STARTED=1
  bash "$PEERS/linux.sh" start "${@:1:$#-1}" "$NS_D" "$IF_D" "$flows" "$LINUX_RUN" "$GEN_MAC" \
    >"$SF_TMP/start.out" 2>&1
}

linux_stop() {
  bash "$PEERS/linux.sh" stop "$NS_D" "$IF_D" - "$LINUX_RUN"
  LINUX_STARTED=0
}

# nft counters: the established rule, the clients' allow rule and the final
# drop all counted packets.
nft_counts() {
  local rules
  rules=$(in_d nft list table ip softflow_peer 2>&1)
  grep -E 'established|nw_src|10\.0\.0\.0/8|counter packets [0-9]+ bytes [0-9]+ drop' <<<"$rules" | head -8
  grep -qE 'ct state established,related counter packets [1-9]' <<<"$rules" &&
    grep -qE 'ip saddr 10\.0\.0\.0/8 ct state new counter packets [1-9]' <<<"$rules" &&
    grep -qE '^\s*counter packets [1-9][0-9]* bytes [0-9]+ drop' <<<"$rules"
}

linux_conntrack_lists_transfer() {
  local table
  table=$(in_d cat /proc/net/nf_conntrack 2>&1)
  grep -E "tcp .*src=$CLIENT dst=$SERVER sport=[0-9]+ dport=$TCP_PORT " <<<"$table" | head -3
  grep -qE "tcp .*src=$CLIENT dst=$SERVER sport=[0-9]+ dport=$TCP_PORT src=$SERVER dst=$CLIENT" <<<"$table" ||
    { echo "$table" | head -10; return 1; }
}

linux_gone() {
  local left=""
  in_d nft list table ip softflow_peer >/dev/null 2>&1 && left+=" nft-table"
  [[ -n $(ip -n "$NS_D" route show proto 245) ]] && left+=" routes"
  [[ $(in_d sysctl -n net.ipv4.ip_forward) == 0 ]] || left+=" ip_forward"
  ip -n "$NS_D" addr show dev "$IF_D" | grep -q 'inet ' && left+=" address"
  ip -n "$NS_D" link show dev "$IF_D" | grep -q "$GW_MAC" && left+=" gateway-MAC"
  [[ -n $(in_d cat /proc/net/nf_conntrack 2>/dev/null) ]] && left+=" connections"
  [[ -z $left ]] || { echo "left behind:$left"; return 1; }
}

nft_invalid() {
  in_d nft list chain ip softflow_peer forward |
    sed -n 's/.*ct state invalid counter packets \([0-9]*\) .*/\1/p'
}

linux_checks() {  # 9 checks
  local out rc verdict
  host_macs "$GEN_MAC" "$GEN_MAC" || return 1
  linux_start "$SMALL"
  rc=$?
  sf_expect "linux: router + nftables conntrack starts on one port" $((rc == 0)) \
    "$(cat "$SF_TMP/start.out")" || return 1
  sf_check "linux: ping client -> server" ping_server
  sf_check "linux: TCP client -> server:$TCP_PORT, $BYTES bytes intact" tcp_transfer
  verdict=$(server_opens_back)
  sf_expect "linux: unsolicited TCP SYN server -> client:$BACK_PORT is dropped" \
    "$([[ $verdict == refused ]] && echo 1 || echo 0)" "server -> client: $verdict"
  sf_check "linux: /proc/net/nf_conntrack lists the client's TCP connection" linux_conntrack_lists_transfer
  sf_check "linux: nft list ruleset counts established, the clients' rule and the final drop" nft_counts
  local inv0 inv1
  inv0=$(nft_invalid)
  send_midstream_ack c
  inv1=$(wait_counter nft_invalid "$inv0" 3)
  sf_expect "linux: mid-stream TCP ACK client -> server:$MIDSTREAM_PORT (no connection) is invalid and dropped" \
    $((${inv1:-0} >= ${inv0:-0} + 3)) "ct state invalid drops $inv0 -> $inv1"
  linux_stop >/dev/null 2>&1
  sf_check "linux: stop undoes the table, routes, sysctls, address and MAC; flushes conntrack" linux_gone

  linux_start --no-nft "$SMALL"
  rc=$?
  out=$(cat "$SF_TMP/start.out")
  verdict=refused
  if ((rc == 0)) && tcp_transfer >/dev/null 2>&1; then
    verdict=$(server_opens_back)
  fi
  sf_expect "linux --no-nft: the plain router forwards TCP and the same unsolicited SYN" \
    "$( ((rc == 0)) && [[ $verdict == connected ]] && echo 1 || echo 0)" \
    "$out" "server -> client: $verdict"
  linux_stop >/dev/null 2>&1
  true
}

nft_full_check() {
  local allow want
  python3 "$PEERS/sf2nft.py" "$FULL" >"$SF_TMP/full.nft" || return 1
  in_d nft -c -f "$SF_TMP/full.nft" || return 1
  allow=$(grep -c 'ct state new counter accept' "$SF_TMP/full.nft")
  want=$(grep -c '^table=2,.*actions=softflow:conntrack:1$' "$FULL")
  echo "nft -c accepts $allow allow rules; the ACL has $want"
  ((allow == want))
}

tap_plan 20
topology || sf_bail "cannot build the topology"
t0=$SECONDS
ovs_checks || tap_diag "ovs checks stopped early"
tap_diag "ovs: $((SECONDS - t0)) s"
t0=$SECONDS
linux_checks || tap_diag "linux checks stopped early"
tap_diag "linux: $((SECONDS - t0)) s"
sf_check "nft: full-size Pipeline A (500/500/500) ruleset passes nft -c with every allow rule" nft_full_check
while ((TAP_N < TAP_PLANNED)); do tap_not_ok "check $((TAP_N + 1)) not run" nolog; done
sf_finish

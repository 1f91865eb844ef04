#!/bin/bash
# Deleting flows takes effect before `sfctl del-flows` returns (DESIGN.md,
# "Megaflow correctness"): with a continuous stream h1 -> h2 (ping every 2
# ms), once del-flows has returned and the packets already in flight have
# landed (a short settle), h2 receives nothing more -- counted on h2's veth,
# with static ARP and no IPv6 so that nothing else travels.  Re-adding the
# flows restores the traffic.  Done twice: deleting the IP rules by match
# (`del-flows ip`, the ARP rules stay) and deleting everything.
source "$(dirname "$0")/lib.sh"
sf_init "$@"

SETTLE=0.2    # s after del-flows returns: packets already in flight land
WINDOW=1      # s in which h2 must receive nothing

write_flows() {
  cat >"$SF_TMP/arp.flows" <<EOF
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
EOF
  cat >"$SF_TMP/ip.flows" <<EOF
table=0,priority=10,ip,in_port=1,actions=output:2
table=0,priority=10,ip,in_port=2,actions=output:1
EOF
  cat "$SF_TMP/arp.flows" "$SF_TMP/ip.flows" >"$SF_TMP/all.flows"
}

# rx_grows SECONDS MIN: h2 received at least MIN packets in SECONDS.
rx_grows() {
  local a b
  a=$(sf_host_rx 2)
  sleep "$1"
  b=$(sf_host_rx 2)
  echo "h2 received $((b - a)) packets in $1 s"
  ((b - a >= $2))
}

# deletion LABEL EXPECTED DEL-FLOWS-ARGS...: 2 checks.
deletion() {
  local label=$1 expected=$2 out n c0 c1 c2
  shift 2
  out=$(sfctl --json del-flows "$@" 2>&1 | jq -c . 2>&1)
  c0=$(sf_host_rx 2)
  n=$(jq -r '.deleted // 0' <<<"$out" 2>/dev/null)
  local left
  left=$(sfctl --json dump-flows | jq 'length')
  sf_expect "$label: sfctl del-flows${*:+ $*} deletes $expected rules" $((n == expected)) \
    "answer: $out; rules left: $left"
  sleep "$SETTLE"
  c1=$(sf_host_rx 2)
  sleep "$WINDOW"
  c2=$(sf_host_rx 2)
  sf_expect "$label: no packet reaches h2 after del-flows returned" $((c2 == c1)) \
    "in flight (first ${SETTLE} s): $((c1 - c0)); then $((c2 - c1)) in ${WINDOW} s" \
    "(table_miss=$(sf_json '.drops.table_miss'))"
}

scenario() {
  sf_topology 2 || return 1
  sf_static_arp || return 1
  write_flows
  sf_start --flows "$SF_TMP/all.flows" || return 1
  sf_bg ip netns exec "${SF_NS_H[1]}" ping -n -q -i 0.002 "$(sf_ip 2)" >/dev/null
  sf_check "stream h1 -> h2 flows" rx_grows 0.5 100

  deletion "by match" 2 ip
  sf_check "sfctl add-flows (the IP flows again)" sfctl add-flows "$SF_TMP/ip.flows"
  sf_check "re-added IP flows: h2 receives the stream" rx_grows 0.5 100

  deletion "all" 4
  sf_check "sfctl add-flows (all flows again)" sfctl add-flows "$SF_TMP/all.flows"
  sf_check "re-added all flows: h2 receives the stream" rx_grows 0.5 100
  kill "$SF_BG_PID" 2>/dev/null
  sf_check "ping h1 -> h2 after re-adding" sf_ping 1 2
  sf_stop
}

sf_run_modes scenario 10
sf_finish

#!/bin/bash
# Two hosts through softflowd.  With no flows nothing passes (table-miss
# drop); with port-based ARP and IP flows added by sfctl, ping works both
# ways and every rule counts packets.  Started with the same flows from a
# file, the switch forwards the very first packet sent once sfctl answers.
source "$(dirname "$0")/lib.sh"
sf_init "$@"

write_flows() {
  cat >"$SF_TMP/flows" <<EOT
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=output:2
table=0,priority=10,ip,in_port=2,actions=output:1
EOT
}

scenario() {
  local rc
  sf_topology 2 || return 1
  write_flows

  # No flows: table-miss drops.
  sf_start || return 1
  sf_check "no flows: ping h1 -> h2 fails" sf_ping_fails 1 2
  local misses
  misses=$(sf_json '.drops.table_miss')
  sf_expect "no flows: the switch counted table-miss drops" $((misses > 0)) "table_miss=$misses"

  sf_check "sfctl add-flows" sfctl add-flows "$SF_TMP/flows"
  sf_check "ping h1 -> h2" sf_ping 1 2 5
  sf_check "ping h2 -> h1" sf_ping 2 1 5
  # Every rule forwarded something: both directions, ARP and IP.
  local dump zero
  dump=$(sfctl --json dump-flows)
  zero=$(jq '[.[] | select(.n_packets == 0)] | length' <<<"$dump")
  sf_expect "every rule counted packets" $((zero == 0)) \
    "n_packets per rule: $(jq -r '[.[].n_packets | tostring] | join(" ")' <<<"$dump")"
  sf_stop
  rc=$?
  sf_expect "softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"

  # The same flows from --flows: forwarding as soon as the socket answers.
  ip -n "${SF_NS_H[1]}" neigh flush dev "${SF_HOST_IF[1]}"
  ip -n "${SF_NS_H[2]}" neigh flush dev "${SF_HOST_IF[2]}"
  sf_start --flows "$SF_TMP/flows" || return 1
  sf_check "--flows: the first ping once sfctl answers gets through" sf_ping 1 2 1
  sf_stop
}

sf_run_modes scenario 8
sf_finish

#!/bin/bash
# The stateful firewall (softflow:conntrack) with real kernel TCP/UDP/ICMP
# stacks, through flows in the shape of Pipeline A / the paper's Figure 4.
# h1 (10.200.0.1) is the client, h2 (10.200.0.2) the server:
#   table 0, stage 0: ARP -> the output table (bypasses the firewall);
#                     IP  -> the ACL table
#   table 0, stage 1 after conntrack: sf_metadata=1 -> the output table,
#                     sf_metadata=0 -> drop
#   table 1 (ACL): from h1 to h2 TCP port 5201, UDP port 5353 and ICMP ->
#                     softflow:conntrack:1 (may create a connection);
#                     any other IP -> softflow:conntrack:0 (existing only)
#   table 2 (output): by dl_dst, broadcasts by in_port.
# Checks: ping h1 -> h2 works, h2 -> h1 does not; 8 MB TCP h1 -> h2:5201
# arrive intact; TCP h1 -> h2:5202 and h2 -> h1 fail although both have
# listeners; a UDP datagram h1 -> h2 is answered, an unsolicited one h2 -> h1
# is dropped; `sfctl ct-dump` lists an open TCP connection as ESTABLISHED
# with its 5-tuple and packets both ways; `sfctl ct-flush` forgets it, after
# which (strict policy for mid-stream TCP) its data no longer passes;
# `sfctl show --json` counts the conntrack drops.
#
# Native XDP only: how packets reach softflowd (native or generic XDP) is
# covered by test_ping/test_tcp/...; this test is about the service, and one
# mode keeps it well under a minute.
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd nc ss sha256sum
SF_XDP_MODES=${SF_XDP_MODES:-native}

BYTES=8000000
TCP_OK=5201    # allowed: h1 -> h2
TCP_NO=5202    # not allowed: h1 -> h2
TCP_BACK=7000  # h2 -> h1: not allowed
UDP_OK=5353    # allowed: h1 -> h2
UDP_BACK=6000  # h2 -> h1: not allowed
DATA=$SF_TMP_ROOT/data
head -c "$BYTES" /dev/urandom >"$DATA" || sf_bail "cannot write $DATA"
DATA_SUM=$(sha256sum <"$DATA" | cut -d' ' -f1)

write_flows() {
  local h1 h2
  h1=$(sf_ip 1) h2=$(sf_ip 2)
  cat >"$SF_TMP/flows" <<EOF
# stage 0: ARP bypasses the firewall; IP goes through the ACL
table=0,priority=100,sf_stage=0,arp,actions=goto_table:2
table=0,priority=10,sf_stage=0,ip,actions=goto_table:1
# post-conntrack (Figure 4)
table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:2
table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=0,actions=drop
# ACL: what h1 may open to h2
table=1,priority=100,tcp,in_port=1,nw_src=$h1,nw_dst=$h2,tp_dst=$TCP_OK,actions=softflow:conntrack:1
table=1,priority=100,udp,in_port=1,nw_src=$h1,nw_dst=$h2,tp_dst=$UDP_OK,actions=softflow:conntrack:1
table=1,priority=100,icmp,in_port=1,nw_src=$h1,nw_dst=$h2,actions=softflow:conntrack:1
table=1,priority=1,ip,actions=softflow:conntrack:0
# output
table=2,priority=10,dl_dst=$(sf_mac 1),actions=output:1
table=2,priority=10,dl_dst=$(sf_mac 2),actions=output:2
table=2,priority=5,in_port=1,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:2
table=2,priority=5,in_port=2,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:1
EOF
}

ct_diag() {
  echo "ct-dump:"
  sfctl ct-dump 2>&1 | head -20
  echo "conntrack counters: $(sf_service_stats conntrack 2>&1)"
}

# tcp_transfer: BYTES from h1 to h2's allowed port, sha256 compared.
tcp_transfer() {
  local out=$SF_TMP/received rc sum size
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 30 nc -l "$(sf_ip 2)" $TCP_OK >"$out"
  local server=$SF_BG_PID
  sf_wait_listen 2 tcp $TCP_OK || return 1
  sf_h 1 timeout 30 nc -N "$(sf_ip 2)" $TCP_OK <"$DATA"
  rc=$?
  sf_wait_exit "$server" 10
  sum=$(sha256sum <"$out" | cut -d' ' -f1)
  size=$(stat -c %s "$out")
  echo "client status $rc; sent $BYTES bytes sha256 $DATA_SUM; received $size bytes sha256 $sum"
  [[ $rc == 0 && $size == "$BYTES" && $sum == "$DATA_SUM" ]] || { ct_diag; return 1; }
}

# tcp_refused FROM TO PORT: a listener on host TO's PORT, and host FROM
# cannot connect to it (the SYN is dropped: nc -z times out).
tcp_refused() {
  local from=$1 to=$2 port=$3 rc
  sf_bg ip netns exec "${SF_NS_H[to]}" timeout 10 nc -l "$(sf_ip "$to")" "$port"
  local server=$SF_BG_PID
  sf_wait_listen "$to" tcp "$port" || return 1
  sf_h "$from" timeout 5 nc -z -w 2 "$(sf_ip "$to")" "$port"
  rc=$?
  kill "$server" 2>/dev/null
  sf_wait_exit "$server" 5
  if ((rc == 0)); then
    echo "h$from connected to h$to port $port"
    ct_diag
    return 1
  fi
}

# udp_request_reply: h1 -> h2:UDP_OK, h2 echoes, h1 gets the echo.
udp_request_reply() {
  local got msg replies
  got=$SF_TMP/udp.got
  msg=$(sf_hex "firewall-udp-request")
  sf_bg sf_udp 2 recv "$(sf_ip 2)" $UDP_OK 1 5 echo >"$got"
  local server=$SF_BG_PID
  sf_wait_listen 2 udp $UDP_OK || return 1
  replies=$(sf_udp 1 send "$(sf_ip 2)" $UDP_OK 2 "$msg")
  sf_wait_exit "$server" 6
  echo "h2 received: $(cat "$got"); h1 received: $replies"
  [[ $(cat "$got") == "$msg" && $replies == "$(sf_hex "reply:firewall-udp-request")" ]] ||
    { ct_diag; return 1; }
}

# udp_unsolicited: h2 -> h1:UDP_BACK never arrives.
udp_unsolicited() {
  local got=$SF_TMP/udp.back
  sf_bg sf_udp 1 recv "$(sf_ip 1)" $UDP_BACK 1 2 >"$got"
  local server=$SF_BG_PID
  sf_wait_listen 1 udp $UDP_BACK || return 1
  sf_udp 2 send "$(sf_ip 1)" $UDP_BACK 0 "$(sf_hex unsolicited)" "$(sf_hex again)"
  sf_wait_exit "$server" 4
  if [[ -s $got ]]; then
    echo "h1 received from h2: $(cat "$got")"
    return 1
  fi
}

# ct_entry SPORT: the entries of ct-dump (stdin) for TCP h1:SPORT -> h2:TCP_OK.
ct_entry() {
  jq -c --arg s "$(sf_ip 1)" --arg d "$(sf_ip 2)" --argjson p $TCP_OK --argjson sp "${1:-0}" \
    '[.conntrack[]? | select(.proto == "tcp" and .src == $s and .dst == $d and .dport == $p
                             and .sport == $sp)]'
}

# 6 checks: an open TCP connection in ct-dump, ct-flush, and the connection
# after the flush.
ct_dump_flush() {
  local fifo=$SF_TMP/client.in got=$SF_TMP/ct.got dump conn n
  mkfifo "$fifo" || return 1
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 30 nc -l "$(sf_ip 2)" $TCP_OK >"$got"
  local server=$SF_BG_PID
  sf_wait_listen 2 tcp $TCP_OK || return 1
  sf_bg ip netns exec "${SF_NS_H[1]}" sh -c 'exec timeout 30 nc "$1" "$2" <"$3" >/dev/null' \
    sh "$(sf_ip 2)" $TCP_OK "$fifo"
  local client=$SF_BG_PID
  exec 7>"$fifo"
  echo "before-flush" >&7
  local i
  for ((i = 0; i < 30; i++)); do
    grep -q before-flush "$got" && break
    sleep 0.1
  done
  sf_check "an open TCP connection carries data h1 -> h2" grep -q before-flush "$got"

  local sport
  sport=$(sf_h 1 ss -Htn state established "dst $(sf_ip 2):$TCP_OK" | awk '{print $3}' | sed 's/.*://')
  dump=$(sfctl --json ct-dump)
  conn=$(ct_entry "$sport" <<<"$dump")
  sf_expect "ct-dump lists the open connection: tcp h1:$sport -> h2:$TCP_OK ESTABLISHED, packets both ways" \
    "$(jq 'length == 1 and (.[0].state | ascii_upcase | test("ESTABLISHED"))
        and .[0].orig.packets > 0 and .[0].reply.packets > 0' <<<"$conn" | grep -c true)" \
    "client port ${sport:-?}; matching entries: $conn" "$(sfctl ct-dump 2>&1 | head -10)"

  local flush
  flush=$(sfctl --json ct-flush)
  n=$(jq -r '.flushed // 0' <<<"$flush")
  dump=$(sfctl --json ct-dump)
  sf_expect "ct-flush flushes >= 1 connection and ct-dump is empty afterwards" \
    $((n >= 1 && $(jq '[.conntrack[]?] | length' <<<"$dump") == 0)) \
    "ct-flush: $flush; ct-dump after: $(jq -c . <<<"$dump")"

  # Strict policy: a TCP segment of a connection the tracker does not know is
  # refused, so after the flush the client's data stalls.
  local d0 d1
  d0=$(sf_service_stats conntrack | jq -r .dropped)
  echo "after-flush" >&7
  sleep 2
  d1=$(sf_service_stats conntrack | jq -r .dropped)
  local leaked=0
  grep -q after-flush "$got" && leaked=1
  sf_expect "after ct-flush the old connection's data is dropped (strict mid-stream policy)" \
    $((!leaked)) \
    "h2 received: $(tr '\n' ' ' <"$got"); conntrack dropped $d0 -> $d1"
  sf_expect "the stalled segments count as conntrack drops" $((d1 > d0)) "dropped $d0 -> $d1"
  exec 7>&-
  kill "$client" "$server" 2>/dev/null
  sf_wait_exit "$client" 5
  sf_wait_exit "$server" 5
  true
}

scenario() {
  local rc
  sf_topology 2 || return 1
  write_flows
  sf_start --flows "$SF_TMP/flows" || return 1

  sf_check "ping h1 -> h2 (ICMP echo allowed, replies pass)" sf_ping 1 2
  sf_check "ping h2 -> h1 fails (not allowed)" sf_ping_fails 2 1
  sf_check "TCP h1 -> h2:$TCP_OK: $BYTES bytes arrive intact (sha256)" tcp_transfer
  sf_check "TCP h1 -> h2:$TCP_NO (not allowed) fails" tcp_refused 1 2 $TCP_NO
  sf_check "TCP h2 -> h1:$TCP_BACK (server opens back) fails" tcp_refused 2 1 $TCP_BACK
  sf_check "UDP h1 -> h2:$UDP_OK arrives and h2's reply reaches h1" udp_request_reply
  sf_check "unsolicited UDP h2 -> h1:$UDP_BACK is dropped" udp_unsolicited
  ct_dump_flush || return 1

  # The service's counters (sfctl list-services; `sfctl show` has no
  # per-service counters), and the switch's drops: every packet conntrack
  # refused was dropped by the post-conntrack rule (action_drop).
  local ct drops
  ct=$(sf_service_stats conntrack)
  drops=$(sf_show_json | jq -c .drops)
  sf_expect "conntrack counters (list-services) count passed, created, dropped, refused packets; sfctl show --json counts them as action drops" \
    "$(jq --argjson d "$drops" '.passed > 0 and .created >= 4 and .dropped > 0
         and .refused_no_connection > 0 and .flushed >= 1
         and $d.action_drop >= .dropped' <<<"$ct" | grep -c true)" \
    "conntrack: $ct" "sfctl show drops: $drops"
  sf_stop
  rc=$?
  sf_expect "softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
}

sf_run_modes scenario 14
sf_finish

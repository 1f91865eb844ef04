#!/bin/bash
# A real TCP transfer (20 MB, h1 -> h2, sha256 compared) through a two-table
# pipeline with a SoftFlow noop stage, once with stage coalescing and once
# without:
#   table 0, stage 0: ARP straight to the other port; IP by in_port -> softflow:noop:0
#   table 0, stage 1 after noop: goto_table:1
#   table 1: forward by dl_dst and nw_dst
# With coalescing the switch reports coalesced > 0, without it 0.  Also the
# share of packets XDP resolved (EMC or megaflow mirror) during the transfer,
# which must be high for one bulk flow (scenario "XDP share").  Prints
#   # tcp: N pps, X MB/s, coalesce=on|off
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd nc ss sha256sum

SF_TCP_BYTES=${SF_TCP_BYTES:-20000000}
SF_XDP_SHARE_MIN=${SF_XDP_SHARE_MIN:-90}
DATA=$SF_TMP_ROOT/data
head -c "$SF_TCP_BYTES" /dev/urandom >"$DATA" || sf_bail "cannot write $DATA"
DATA_SUM=$(sha256sum <"$DATA" | cut -d' ' -f1)

write_flows() {
  cat >"$SF_TMP/flows" <<EOF
# stage 0: ARP straight through, IP into the noop service
table=0,priority=20,sf_stage=0,arp,in_port=1,actions=output:2
table=0,priority=20,sf_stage=0,arp,in_port=2,actions=output:1
table=0,priority=10,sf_stage=0,ip,in_port=1,actions=softflow:noop:0
table=0,priority=10,sf_stage=0,ip,in_port=2,actions=softflow:noop:0
# stage 1: after noop, on to the L2/L3 table
table=0,priority=10,sf_stage=1,sf_action=noop,actions=goto_table:1
table=1,priority=10,ip,dl_dst=$(sf_mac 2),nw_dst=$(sf_ip 2),actions=output:2
table=1,priority=10,ip,dl_dst=$(sf_mac 1),nw_dst=$(sf_ip 1),actions=output:1
EOF
}

# Waits until something listens on host $1's TCP port $2.
wait_listen() {
  local i
  for ((i = 0; i < 50; i++)); do
    sf_h "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

# transfer COALESCE(on|off): one softflowd life, one transfer, 4 checks.
transfer() {
  local coalesce=$1 threads=${2:-1} args=() out=$SF_TMP/received.$1 port=5001
  [[ $coalesce == off ]] && args+=(--no-coalesce)
  args+=(--pmd-threads "$threads")
  sf_start --flows "$SF_TMP/flows" "${args[@]}" || return 1
  # Warm up ARP (and the ARP megaflows) so the transfer measures TCP.
  sf_ping 1 2 2 >/dev/null || tap_diag "warm-up ping failed"

  local before after
  before=$(sf_show_json) || return 1
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 60 nc -l "$(sf_ip 2)" $port >"$out"
  local server=$SF_BG_PID
  wait_listen 2 $port || { tap_diag "nc did not listen on h2"; return 1; }
  local t0 t1 rc
  t0=$(date +%s.%N)
  sf_h 1 timeout 60 nc -N "$(sf_ip 2)" $port <"$DATA"
  rc=$?
  sf_wait_exit "$server" 30
  t1=$(date +%s.%N)
  after=$(sf_show_json) || return 1

  local sum
  sum=$(sha256sum <"$out" | cut -d' ' -f1)
  sf_expect "coalesce=$coalesce, $threads PMD thread(s): 20 MB TCP h1 -> h2 arrives intact (sha256)" \
    $((rc == 0 && $(stat -c %s "$out") == SF_TCP_BYTES)) \
    "client status $rc; sent $SF_TCP_BYTES bytes sha256 $DATA_SUM;" \
    "received $(stat -c %s "$out") bytes sha256 $sum"
  [[ $sum == "$DATA_SUM" ]] || tap_diag "sha256 differs"

  local d_rx d_xdp d_coal elapsed
  d_rx=$(jq -n --argjson a "$before" --argjson b "$after" '$b.counters.rx_packets - $a.counters.rx_packets')
  d_xdp=$(jq -n --argjson a "$before" --argjson b "$after" \
    '($b.counters.xdp_emc_resolved + $b.counters.xdp_megaflow_resolved)
     - ($a.counters.xdp_emc_resolved + $a.counters.xdp_megaflow_resolved)')
  d_coal=$(jq -n --argjson a "$before" --argjson b "$after" '$b.counters.coalesced - $a.counters.coalesced')
  elapsed=$(echo "$t1 - $t0" | bc -l)
  tap_diag "$(printf 'tcp: %.0f pps, %.1f MB/s, coalesce=%s, pmd threads %d (%d packets in %.2f s, xdp %s)' \
    "$(echo "$d_rx / $elapsed" | bc -l)" "$(echo "$SF_TCP_BYTES / 1000000 / $elapsed" | bc -l)" \
    "$coalesce" "$threads" "$d_rx" "$elapsed" "$SF_MODE")"

  local total_coal
  total_coal=$(jq -r '.counters.coalesced' <<<"$after")
  if [[ $coalesce == on ]]; then
    sf_expect "coalesce=on: sfctl show reports coalesced > 0" $((total_coal > 0 && d_coal > 0)) \
      "coalesced=$total_coal (during the transfer: $d_coal)"
  else
    sf_expect "coalesce=off: sfctl show reports coalesced == 0" $((total_coal == 0)) \
      "coalesced=$total_coal, reinjected=$(jq -r '.counters.reinjected' <<<"$after")"
  fi

  # The XDP share: packets whose stage-0 megaflow XDP found, over all received.
  local share
  share=$(echo "scale=2; 100 * $d_xdp / ($d_rx + (($d_rx == 0)))" | bc -l)
  tap_diag "xdp share: $share% ($d_xdp of $d_rx received packets resolved in XDP), coalesce=$coalesce"
  sf_expect "coalesce=$coalesce: > $SF_XDP_SHARE_MIN% of the packets resolved in XDP" \
    "$(echo "$share > $SF_XDP_SHARE_MIN" | bc -l)"

  sf_stop
  rc=$?
  sf_expect "coalesce=$coalesce: softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
  rm -f "$out"
}

scenario() {
  sf_topology 2 || return 1
  write_flows
  transfer on || return 1
  transfer off || return 1
  # Two PMD threads: each port's queue is served by its own thread, and each
  # thread transmits on the other's socket.
  transfer on 2 || return 1
}

sf_run_modes scenario 12
sf_finish

#!/bin/bash
# XDP-resolved vs userspace-resolved stage-0 lookups (the hybrid's ablation).
# Two hosts through a two-port patch panel, softflowd with --profile, once
# with --no-xdp-lookup and once without:
#   --no-xdp-lookup: no megaflow is mirrored to the XDP program, so it only
#     parses and redirects; ping and a TCP transfer still work, XDP counts no
#     EMC or megaflow hits, every received packet is looked up in userspace,
#     and `sfctl show` says xdp_lookup: false.
#   default: XDP resolves packets from the mirrored megaflows
#     (megaflow_hits > 0) and `sfctl show` says xdp_lookup: true.
# Both lives also check the CPU breakdown `sfctl show` reports per PMD thread.
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd nc ss sha256sum

SF_TCP_BYTES=${SF_TCP_BYTES:-2000000}
DATA=$SF_TMP_ROOT/data
head -c "$SF_TCP_BYTES" /dev/urandom >"$DATA" || sf_bail "cannot write $DATA"
DATA_SUM=$(sha256sum <"$DATA" | cut -d' ' -f1)

# tcp_transfer: DATA from h1 to h2 over TCP; succeeds when it arrives intact.
tcp_transfer() {
  local out=$SF_TMP/received port=5001 rc sum
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 30 nc -l "$(sf_ip 2)" $port >"$out"
  local server=$SF_BG_PID
  sf_wait_listen 2 tcp $port || return 1
  sf_h 1 timeout 30 nc -N "$(sf_ip 2)" $port <"$DATA"
  rc=$?
  sf_wait_exit "$server" 30
  sum=$(sha256sum <"$out" | cut -d' ' -f1)
  rm -f "$out"
  [[ $rc == 0 && $sum == "$DATA_SUM" ]] && return 0
  echo "client status $rc; sent sha256 $DATA_SUM, received sha256 $sum"
  return 1
}

# life on|off: one softflowd with XDP lookups on or off; 6 checks.
life() {
  local lookup=$1 args=(--flows "$SF_TMP/flows" --profile) show
  [[ $lookup == off ]] && args+=(--no-xdp-lookup)
  sf_start "${args[@]}" || return 1
  sf_check "xdp lookups $lookup: ping h1 -> h2" sf_ping 1 2 5
  sf_check "xdp lookups $lookup: 2 MB TCP h1 -> h2 arrives intact" tcp_transfer
  show=$(sf_show_json) || return 1

  local emc mf xdp_resolved rx lookups flag
  emc=$(jq -r '.xdp.emc_hits' <<<"$show")
  mf=$(jq -r '.xdp.megaflow_hits' <<<"$show")
  xdp_resolved=$(jq -r '.resolved.xdp' <<<"$show")
  rx=$(jq -r '.counters.rx_packets' <<<"$show")
  lookups=$(jq -r '.counters.lookups' <<<"$show")
  flag=$(jq -r '.xdp_lookup' <<<"$show")
  local facts="xdp_lookup=$flag; xdp program: emc_hits=$emc megaflow_hits=$mf;"
  facts+=" datapath: rx_packets=$rx lookups=$lookups resolved_in_xdp=$xdp_resolved"
  if [[ $lookup == off ]]; then
    sf_expect "xdp lookups off: sfctl show says xdp_lookup: false" \
      "$([[ $flag == false ]] && echo 1 || echo 0)" "$facts"
    sf_expect "xdp lookups off: XDP resolved nothing, every packet looked up in userspace" \
      $((emc == 0 && mf == 0 && xdp_resolved == 0 && rx > 0 && lookups == rx)) "$facts"
  else
    sf_expect "xdp lookups on: sfctl show says xdp_lookup: true" \
      "$([[ $flag == true ]] && echo 1 || echo 0)" "$facts"
    sf_expect "xdp lookups on: XDP megaflow_hits > 0" $((mf > 0 && xdp_resolved > 0)) "$facts"
  fi

  # --profile: the breakdown per PMD thread, within each thread's wall clock.
  local profile ok
  profile=$(jq -c '.profile' <<<"$show")
  ok=$(jq '.threads | length == 1 and .[0].thread == 0' <<<"$profile" 2>/dev/null)
  ok+=$(jq '.packets > 0 and .cycles.lookup > 0 and .cycles.parse > 0 and .cycles.actions > 0
            and .cycles.io_rx > 0 and .cycles.io_tx > 0 and .cycles.idle > 0 and .tsc_hz > 0
            and ([.cycles[]] | add) <= .wall_cycles' <<<"$profile" 2>/dev/null)
  sf_expect "xdp lookups $lookup: sfctl show has the PMD thread's CPU breakdown" \
    "$([[ $ok == truetrue ]] && echo 1 || echo 0)" "profile: $profile"
  sf_stop
  local rc=$?
  sf_expect "xdp lookups $lookup: softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
}

scenario() {
  sf_topology 2 || return 1
  sf_static_arp || return 1
  sf_port_flows "$SF_TMP/flows"
  life off || return 1
  life on || return 1
}

sf_run_modes scenario 12
sf_finish

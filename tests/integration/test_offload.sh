#!/bin/bash
# Classification offload to the emulated NIC TCAM (softflowd --offload,
# sf-nic), with real kernel TCP through flows in the shape of Pipeline A (the
# firewall of test_firewall.sh).  Host h1 sits behind the emulated NIC, a
# bump in the wire in its own namespace:
#   h1 [h1-ID] <-veth-> [nw-ID] NIC [nh-ID] <-veth-> [s1-ID] switch [s2-ID] <-> h2
# Checks, in each XDP mode (softflowd and sf-nic alike):
#   - with --offload tcam:64: 4 MB TCP h1 -> h2 arrive intact; the NIC marks
#     h1's packets and most of them are classified by hint (sfctl show), none
#     rejected; sfctl offload-show lists the TCP megaflow with hits;
#   - softflowd's exit empties the TCAM, and the NIC keeps its maps pinned;
#   - the same transfer with offload off arrives the same, with nothing
#     classified by hint;
#   - with --offload tcam:1 the TCAM never holds more than one entry although
#     the traffic makes several stage-0 megaflows;
#   - del-flows of the ACL returns with the offloaded megaflows already
#     revalidated: a connection h1 -> h2 that worked fails right after, with
#     its packets still arriving marked;
#   - bad --offload values are refused, naming the value.
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd nc ss sha256sum
SF_NIC=$SF_BUILD/sf-nic
[[ -x $SF_NIC ]] || sf_bail "$SF_NIC is missing (build sf-nic)"

BYTES=4000000
TCP_OK=5201
DATA=$SF_TMP_ROOT/data
head -c "$BYTES" /dev/urandom >"$DATA" || sf_bail "cannot write $DATA"
DATA_SUM=$(sha256sum <"$DATA" | cut -d' ' -f1)

write_flows() {
  local h1 h2
  h1=$(sf_ip 1) h2=$(sf_ip 2)
  cat >"$SF_TMP/flows" <<EOF
table=0,priority=100,sf_stage=0,arp,actions=goto_table:2
table=0,priority=10,sf_stage=0,ip,actions=goto_table:1
table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:2
table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=0,actions=drop
table=1,priority=100,tcp,in_port=1,nw_src=$h1,nw_dst=$h2,tp_dst=$TCP_OK,actions=softflow:conntrack:1
table=1,priority=1,ip,actions=softflow:conntrack:0
table=2,priority=10,dl_dst=$(sf_mac 1),actions=output:1
table=2,priority=10,dl_dst=$(sf_mac 2),actions=output:2
table=2,priority=5,in_port=1,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:2
table=2,priority=5,in_port=2,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:1
EOF
}

# Puts the NIC between h1 and switch port 1: h1's veth is replaced by
# h1 <-> nw (NIC namespace) and nh (NIC namespace) <-> s1.
nic_topology() {
  local h1ns=${SF_NS_H[1]} hif=${SF_HOST_IF[1]} sif=${SF_SW_IF[1]}
  SF_NS_NIC=sf-nic-$SF_RUN
  NIC_WIRE=nw-$SF_RUN
  NIC_HOST=nh-$SF_RUN
  ip netns add "$SF_NS_NIC" || return 1
  SF_NAMESPACES+=("$SF_NS_NIC")
  sf_quiet_ns "$SF_NS_NIC"
  ip -n "$SF_NS_SW" link del "$sif" || return 1
  ip link add "$hif" netns "$h1ns" address "$(sf_mac 1)" type veth \
    peer name "$NIC_WIRE" netns "$SF_NS_NIC" || return 1
  ip link add "$NIC_HOST" netns "$SF_NS_NIC" type veth peer name "$sif" netns "$SF_NS_SW" ||
    return 1
  ip netns exec "$h1ns" ethtool -K "$hif" tx off >/dev/null || return 1
  # The NIC redirects the switch's frames into nw; veth hands them to h1
  # only with NAPI on at h1's end, which GRO turns on.
  ip netns exec "$h1ns" ethtool -K "$hif" gro on >/dev/null || return 1
  ip -n "$h1ns" addr add "$(sf_ip 1)/24" dev "$hif" || return 1
  ip -n "$h1ns" link set "$hif" up || return 1
  # Room for the NIC's 8-byte shim on the NIC -> switch link (a real NIC
  # carries the mark in the receive descriptor instead).
  ip -n "$SF_NS_NIC" link set "$NIC_HOST" mtu 1600 || return 1
  ip -n "$SF_NS_SW" link set "$sif" mtu 1600 || return 1
  ip -n "$SF_NS_NIC" link set "$NIC_WIRE" up || return 1
  ip -n "$SF_NS_NIC" link set "$NIC_HOST" up || return 1
  ip -n "$SF_NS_SW" link set "$sif" up || return 1
}

# Starts sf-nic on the NIC's two interfaces (maps under softflowd's pin dir).
nic_start() {
  NIC_LOG=$SF_TMP/sf-nic.log
  sf_bg "$SF_NIC" --pin-dir "$SF_PIN_DIR" --netns "$SF_NS_NIC" --wire "$NIC_WIRE" \
    --host "$NIC_HOST" --ofport 1 --xdp-mode "$SF_MODE" --json >"$NIC_LOG" 2>&1
  NIC_PID=$SF_BG_PID
  local i
  for ((i = 0; i < 100; i++)); do
    grep -q 'sf-nic: ready' "$NIC_LOG" && return 0
    sf_pid_alive "$NIC_PID" || break
    sleep 0.1
  done
  tap_diag <"$NIC_LOG"
  return 1
}

nic_stop() {
  kill -TERM "$NIC_PID" 2>/dev/null
  sf_wait_exit "$NIC_PID" 10
}

# tcp_transfer PORT: BYTES from h1 to h2:PORT, sha256 compared.
tcp_transfer() {
  local port=$1 out=$SF_TMP/received rc sum size
  rm -f "$out"
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 30 nc -l "$(sf_ip 2)" "$port" >"$out"
  local server=$SF_BG_PID
  sf_wait_listen 2 tcp "$port" || return 1
  sf_h 1 timeout 30 nc -N "$(sf_ip 2)" "$port" <"$DATA"
  rc=$?
  sf_wait_exit "$server" 10
  sum=$(sha256sum <"$out" | cut -d' ' -f1)
  size=$(stat -c %s "$out")
  echo "client status $rc; received $size of $BYTES bytes; sha256 $([[ $sum == "$DATA_SUM" ]] && echo equal || echo differs)"
  [[ $rc == 0 && $size == "$BYTES" && $sum == "$DATA_SUM" ]]
}

# The packets from port 1 (h1, behind the NIC) and how they were classified.
hint_counts() {
  sf_show_json | jq -c '{rx1: ([.ports[] | select(.ofport == 1) | .rx_packets] | add),
    hint: .resolved.hint, marked: .xdp.hint_marked, rejected: .xdp.hint_rejected}'
}

scenario() {
  write_flows
  sf_topology 2 || return 1
  nic_topology || return 1

  # 1. Offload on.
  sf_start --flows "$SF_TMP/flows" --offload tcam:64
  sf_expect "softflowd --offload tcam:64 starts" $((! $?)) || return 1
  nic_start
  sf_expect "sf-nic attaches to the NIC's interfaces" $((! $?)) || return 1
  sf_check "offload on: $BYTES bytes of TCP h1 -> h2 arrive intact" tcp_transfer $TCP_OK
  local c rx1 hint marked rejected
  c=$(hint_counts)
  tap_diag "offload on: $c"
  rx1=$(jq -r .rx1 <<<"$c") hint=$(jq -r .hint <<<"$c")
  marked=$(jq -r .marked <<<"$c") rejected=$(jq -r .rejected <<<"$c")
  sf_expect "offload on: most of h1's packets classified by hint, none rejected" \
    "$(sf_true test $((hint * 100)) -gt $((rx1 * 75)) -a "$rejected" -eq 0 -a "$marked" -ge "$hint")"
  local show
  show=$(sfctl offload-show 2>&1)
  tap_diag <<<"$show"
  sf_expect "offload-show lists h1's TCP megaflow with NIC hits" \
    "$(sf_true jq -e --arg h1 "$(sf_ip 1)" '[.entries[] | select((.match | contains("tcp"))
        and (.match | contains($h1)) and .hits > 100)] | length >= 1' \
      < <(sfctl --json offload-show))"

  # 2. A flow change: the ACL's allow rule goes; the marked packets of a new
  # connection hit megaflows already revalidated when del-flows returned.
  local before
  before=$(sf_json .resolved.hint)
  sfctl del-flows "table=1,tcp,in_port=1,nw_src=$(sf_ip 1),nw_dst=$(sf_ip 2),tp_dst=$TCP_OK" ||
    tap_diag "del-flows failed"
  sf_bg ip netns exec "${SF_NS_H[2]}" timeout 10 nc -l "$(sf_ip 2)" $TCP_OK
  local server=$SF_BG_PID
  sf_wait_listen 2 tcp $TCP_OK
  sf_expect "after del-flows returns, h1 cannot open a connection to h2" \
    "$(sf_true bash -c "! ip netns exec ${SF_NS_H[1]} timeout 5 nc -z -w 2 $(sf_ip 2) $TCP_OK")"
  kill "$server" 2>/dev/null
  sf_wait_exit "$server" 5
  tap_diag "hint classifications during the refused connection: $(($(sf_json .resolved.hint) - before))"
  sf_stop
  local entries_left
  entries_left=$(bpftool map dump pinned "$SF_PIN_DIR/sf_tcam" -j 2>&1)
  sf_expect "softflowd's exit empties the NIC's TCAM; the maps stay for sf-nic" \
    "$(sf_true test "$(jq length <<<"$entries_left")" -eq 0)" "sf_tcam: $entries_left"

  # 3. Offload off: the same transfer, nothing by hint.
  sf_start --flows "$SF_TMP/flows"
  sf_expect "softflowd without --offload starts" $((! $?)) || return 1
  sf_check "offload off: the same bytes arrive" tcp_transfer $TCP_OK
  c=$(hint_counts)
  tap_diag "offload off: $c"
  sf_expect "offload off: nothing classified by hint, nothing marked" \
    "$(sf_true test "$(jq -r .hint <<<"$c")" -eq 0 -a "$(jq -r '.marked // 0' <<<"$c")" -eq 0)"
  sf_stop

  # 4. A TCAM of one entry never holds two.
  sf_start --flows "$SF_TMP/flows" --offload tcam:1
  sf_expect "softflowd --offload tcam:1 starts" $((! $?)) || return 1
  sf_ping 1 2 3 >/dev/null || tap_diag "ping h1 -> h2 failed (ACL: only TCP may open)"
  tcp_transfer $TCP_OK >/dev/null || tap_diag "transfer with tcam:1 failed"
  local max=0 n megaflows i
  for ((i = 0; i < 5; i++)); do
    n=$(sfctl --json offload-show | jq '.entries | length')
    ((n > max)) && max=$n
    sleep 0.3
  done
  megaflows=$(sf_json .megaflows.count)
  tap_diag "tcam:1: at most $max entries with $megaflows megaflows"
  sf_expect "tcam:1: never more than one entry, though there are more megaflows" \
    "$(sf_true test "$max" -eq 1 -a "$megaflows" -gt 1)"
  sf_stop
  nic_stop

  # 5. Bad values.
  local out
  out=$(ip netns exec "$SF_NS_SW" "$SF_SOFTFLOWD" --port "${SF_SW_IF[1]}:1" --socket \
    "$SF_TMP/bad.sock" --pin-dir "$SF_PIN_DIR" --offload tcam:99999 2>&1)
  sf_expect "--offload tcam:99999 is refused, naming the value" \
    "$(sf_true grep -q "'99999' is not a TCAM size" <<<"$out")"
}

sf_run_modes scenario 13

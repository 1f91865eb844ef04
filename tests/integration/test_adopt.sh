#!/bin/bash
# The XDP object attached by hand with iproute2 and adopted by softflowd:
#  - `ip link set dev sN xdpdrv|xdpgeneric obj sf_xdp.bpf.o sec xdp` on both
#    switch ports (one mount namespace, so iproute2 pins the maps by name and
#    the second load reuses them: both programs must list the same maps);
#  - softflowd on those ports adopts them (sfctl: adopted, the prog ids that
#    `ip link` shows), forwards, and on SIGTERM leaves them attached (it did
#    not attach them) and pins nothing.
# And a foreign XDP program (an XDP_PASS program compiled here) on the second
# port: softflowd exits non-zero naming the interface and saying "foreign",
# and leaves the first port without any XDP program (nothing half-applied).
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd clang bpftool

FOREIGN=$SF_TMP_ROOT/foreign_pass.o
cat >"$SF_TMP_ROOT/foreign_pass.c" <<'EOF'
struct xdp_md;
__attribute__((section("xdp"), used)) int foreign_pass(struct xdp_md *ctx) { return 2; /* XDP_PASS */ }
char _license[] __attribute__((section("license"), used)) = "GPL";
EOF
clang -O2 -target bpf -c "$SF_TMP_ROOT/foreign_pass.c" -o "$FOREIGN" ||
  sf_bail "cannot compile the foreign XDP program"

# attach_by_hand OBJECT PORT...: iproute2 attaches OBJECT to the switch ports
# in $SF_MODE, all from one mount namespace with a bpffs.
attach_by_hand() {
  local obj=$1 flag cmd="mount -t bpf bpf /sys/fs/bpf"
  shift
  [[ $SF_MODE == native ]] && flag=xdpdrv || flag=xdpgeneric
  for port in "$@"; do cmd+=" && ip link set dev ${SF_SW_IF[port]} $flag obj $obj sec xdp"; done
  ip netns exec "$SF_NS_SW" sh -c "$cmd"
}

prog_maps() { bpftool prog show id "$1" -j | jq -c '.map_ids | sort'; }

scenario() {
  local rc id1 id2
  sf_topology 2 || return 1
  sf_port_flows "$SF_TMP/flows"

  # ---- adopting the hand-attached object
  sf_check "ip link attaches sf_xdp.bpf.o to both ports by hand" attach_by_hand "$SF_XDP_OBJ" 1 2
  id1=$(sf_port_prog_id 1)
  id2=$(sf_port_prog_id 2)
  local maps1 maps2
  maps1=$(prog_maps "$id1")
  maps2=$(prog_maps "$id2")
  sf_expect "the two hand-attached programs share their maps" \
    "$(sf_true test "$id1" -gt 0 -a "$id2" -gt 0 -a "$id1" != "$id2" -a "$maps1" == "$maps2")" \
    "prog ids $id1 $id2; map ids $maps1 and $maps2"

  if ! sf_start --flows "$SF_TMP/flows"; then
    tap_not_ok "softflowd starts on the hand-attached ports"
    return 1
  fi
  tap_ok "softflowd starts on the hand-attached ports"
  local ports
  ports=$(sf_show_json | jq -c '[.ports[] | {name, adopted, xdp_prog_id}]')
  sf_expect "sfctl show: both ports adopted, with the prog ids ip link shows" \
    "$(jq --argjson a "$id1" --argjson b "$id2" \
      'if (.[0].adopted == true and .[1].adopted == true and .[0].xdp_prog_id == $a
           and .[1].xdp_prog_id == $b) then 1 else 0 end' <<<"$ports")" \
    "sfctl: $ports; ip link: $id1 $id2"
  sf_check "ping h1 -> h2 and h2 -> h1 through the adopted program" \
    eval 'sf_ping 1 2 && sf_ping 2 1'
  sf_stop
  rc=$?
  sf_expect "softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
  sf_expect "the hand-attached programs stay attached after softflowd exits" \
    $(($(sf_port_prog_id 1) == id1 && $(sf_port_prog_id 2) == id2)) \
    "prog ids now: $(sf_port_prog_id 1) $(sf_port_prog_id 2) (were $id1 $id2)"
  sf_expect "softflowd pinned nothing for an adopted program" "$(sf_true test ! -e "$SF_PIN_DIR")" \
    "$(ls -la "$SF_PIN_DIR" 2>&1)"

  # ---- a foreign program on port 2
  local flag
  [[ $SF_MODE == native ]] && flag=xdpdrv || flag=xdpgeneric
  ip -n "$SF_NS_SW" link set dev "${SF_SW_IF[1]}" $flag off
  ip -n "$SF_NS_SW" link set dev "${SF_SW_IF[2]}" $flag off
  attach_by_hand "$FOREIGN" 2 || { tap_diag "cannot attach the foreign program"; return 1; }
  local foreign_id
  foreign_id=$(sf_port_prog_id 2)
  sf_launch --flows "$SF_TMP/flows"
  sf_wait_exit "$SF_PID" 10
  rc=$?
  sf_expect "foreign program on port 2: softflowd exits non-zero" $((rc != 0 && rc != 124)) \
    "exit status $rc"
  sf_expect "the message names ${SF_SW_IF[2]} and says foreign" \
    "$(sf_true grep -E "${SF_SW_IF[2]}.*foreign|foreign.*${SF_SW_IF[2]}" "$SF_LOG")" \
    "softflowd said: $(cat "$SF_LOG")"
  sf_expect "port 1 is left without an XDP program" $(($(sf_port_prog_id 1) == 0)) \
    "port 1 XDP prog id: $(sf_port_prog_id 1)"
  sf_expect "port 2 keeps the foreign program" $(($(sf_port_prog_id 2) == foreign_id)) \
    "prog id $(sf_port_prog_id 2), was $foreign_id"
  sf_expect "nothing pinned" "$(sf_true test ! -e "$SF_PIN_DIR")" \
    "$(ls -la "$SF_PIN_DIR" 2>&1)"
  SF_PID=""
}

sf_run_modes scenario 13
sf_finish

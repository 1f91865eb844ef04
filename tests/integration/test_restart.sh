#!/bin/bash
# softflowd SIGKILLed: its XDP program stays attached; a new softflowd on the
# same interfaces starts, adopts its predecessor's program (same prog id) and
# forwards; after SIGTERM of the new one no XDP program is left on the ports
# and the pin directory is gone (the successor owns what its predecessor
# attached).
#
# Twice: with the pin directory on a bpffs the test mounted (pins outlive
# softflowd, as on a host where /sys/fs/bpf is shared), and with the pin
# directory under /sys/fs/bpf as `ip netns exec` users get it -- softflowd
# mounts bpffs there itself, in its own mount namespace, so its pins die with
# it; the successor must still clean up.
source "$(dirname "$0")/lib.sh"
sf_init "$@"

# cycle LABEL: one crash-and-restart cycle (9 checks; 8 when the pin
# directory is not visible from here).
cycle() {
  local label=$1 rc id1 id2
  sf_start --flows "$SF_TMP/flows" || return 1
  sf_check "$label: first softflowd forwards" sf_ping 1 2 2
  id1=$(sf_port_prog_id 1)
  id2=$(sf_port_prog_id 2)
  sf_kill9
  rc=$?
  tap_diag "first softflowd killed (status $rc); pins: $(ls "$SF_PIN_DIR" 2>&1 | tr '\n' ' ')"
  sf_expect "$label: after SIGKILL the XDP program stays attached" \
    $((id1 > 0 && id1 == id2 && $(sf_port_prog_id 1) == id1 && $(sf_port_prog_id 2) == id2)) \
    "prog ids before $id1 $id2, after $(sf_port_prog_id 1) $(sf_port_prog_id 2)"

  if sf_start --flows "$SF_TMP/flows"; then
    tap_ok "$label: a new softflowd starts on the same interfaces"
  else
    tap_not_ok "$label: a new softflowd starts on the same interfaces"
    return 1
  fi
  local ports
  ports=$(sf_show_json | jq -c '[.ports[] | {name, adopted, xdp_prog_id}]')
  sf_expect "$label: it adopted its predecessor's program" \
    "$(jq --argjson id "$id1" '[.[] | select(.adopted == true and .xdp_prog_id == $id)]
                               | if length == 2 then 1 else 0 end' <<<"$ports")" \
    "sfctl: $ports; predecessor's prog id $id1"
  sf_check "$label: ping h1 -> h2 through the new softflowd" sf_ping 1 2 3
  sf_check "$label: ping h2 -> h1 through the new softflowd" sf_ping 2 1 3
  sf_stop
  rc=$?
  sf_expect "$label: the new softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
  sf_expect "$label: no XDP program is left on the ports" \
    $(($(sf_port_prog_id 1) == 0 && $(sf_port_prog_id 2) == 0)) \
    "prog ids: $(sf_port_prog_id 1) $(sf_port_prog_id 2)"
  [[ $SF_PIN_DIR == /sys/* ]] && return 0
  sf_expect "$label: the pin directory is gone" "$(sf_true test ! -e "$SF_PIN_DIR")" \
    "$(ls -la "$SF_PIN_DIR" 2>&1)"
}

scenario() {
  sf_topology 2 || return 1
  sf_port_flows "$SF_TMP/flows"
  cycle "shared bpffs" || return 1
  SF_PIN_DIR=/sys/fs/bpf/softflow-$SF_RUN
  cycle "bpffs of softflowd's own" || return 1
}

sf_run_modes scenario 17
sf_finish

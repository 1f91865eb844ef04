#!/bin/bash
# Bad input gets a non-zero exit, a message that says what and where, and
# changes nothing:
#  - softflowd with an interface that does not exist, with a flows file with
#    a syntax error (line and token named), with a rule for a port the switch
#    does not have (output:9): exits non-zero and leaves no XDP program on
#    the real ports, no pins, no control socket;
#  - sfctl add-flow / add-flows / del-flows with bad flows or matches against
#    a running softflowd: exits non-zero with a message, and dump-flows is
#    unchanged (add-flows is all-or-nothing); the switch still forwards;
#  - a second softflowd on the same control socket: exits non-zero ("already
#    running") and the first keeps its XDP program and forwards.
source "$(dirname "$0")/lib.sh"
sf_init "$@"

# nothing_left: no XDP program on the switch ports, no pins, no socket.
nothing_left() {
  local i bad=0
  for ((i = 1; i <= SF_N_HOSTS; i++)); do
    if (($(sf_port_prog_id "$i") != 0)); then
      echo "${SF_SW_IF[i]} has XDP program $(sf_port_prog_id "$i")"
      bad=1
    fi
  done
  [[ -e $SF_PIN_DIR ]] && { echo "pin directory left: $(ls "$SF_PIN_DIR")"; bad=1; }
  [[ -e $SF_SOCK ]] && { echo "control socket left: $SF_SOCK"; bad=1; }
  return $bad
}

# refused LABEL PATTERN [SOFTFLOWD ARGS...]: softflowd must fail (3 checks):
# non-zero exit, a message matching PATTERN (grep -E), nothing left behind.
refused() {
  local label=$1 pattern=$2 rc
  shift 2
  sf_launch "$@"
  sf_wait_exit "$SF_PID" 10
  rc=$?
  SF_PID=""
  sf_expect "$label: softflowd exits non-zero" $((rc != 0 && rc != 124 && rc < 128)) \
    "exit status $rc"
  sf_expect "$label: the message says what and where" "$(sf_true grep -qE "$pattern" "$SF_LOG")" \
    "softflowd said: $(cat "$SF_LOG")" "(expected /$pattern/)"
  sf_check "$label: nothing is attached, pinned or bound" nothing_left
}

# rejected LABEL PATTERN SFCTL ARGS...: sfctl must fail with a message
# matching PATTERN, and the rules must be unchanged (1 check).
rejected() {
  local label=$1 pattern=$2 before after err rc
  shift 2
  before=$(sfctl dump-flows)
  err=$(sfctl "$@" 2>&1)
  rc=$?
  after=$(sfctl dump-flows)
  local ok=0
  ((rc != 0)) && grep -qE "$pattern" <<<"$err" && [[ $before == "$after" ]] && ok=1
  sf_expect "$label: sfctl exits non-zero, says why, changes nothing" $ok \
    "sfctl $* -> status $rc: $err" \
    "$([[ $before == "$after" ]] && echo "rules unchanged" ||
      echo "rules changed:"$'\n'"$(diff <(echo "$before") <(echo "$after"))")"
}

scenario() {
  sf_topology 2 || return 1
  local flows=$SF_TMP/flows nosuch=nx-$SF_RUN
  cat >"$flows" <<EOF
# two ports
table=0,priority=10,in_port=1,actions=output:2
table=0,priority=10,in_port=2,actions=output:1
EOF
  cat >"$SF_TMP/syntax.flows" <<EOF
# a typo on line 3
table=0,priority=10,in_port=1,actions=output:2
table=0,priority=10,in_port=2,actions=outptu:1
EOF
  cat >"$SF_TMP/port9.flows" <<EOF
# a port the switch does not have, on line 3
table=0,priority=10,in_port=2,actions=output:1
table=0,priority=10,in_port=1,actions=output:9
EOF

  SF_PORT_ARGS=(--port "${SF_SW_IF[1]}:1" --port "$nosuch:2")
  refused "no such interface" "$nosuch" --flows "$flows"
  unset SF_PORT_ARGS
  refused "flows file syntax error" "syntax\.flows.*line 3.*outptu" --flows "$SF_TMP/syntax.flows"
  refused "rule for a missing port" "port9\.flows.*line 3.*output:9" --flows "$SF_TMP/port9.flows"

  sf_start --flows "$flows" || return 1
  rejected "add-flow unknown action" "outptu" add-flow "priority=5,in_port=1,actions=outptu:2"
  rejected "add-flow missing prerequisite" "tp_dst" add-flow "priority=5,in_port=1,tp_dst=80,actions=output:2"
  rejected "add-flow action after softflow" "last" \
    add-flow "priority=5,in_port=1,actions=softflow:noop:0,output:2"
  rejected "add-flow missing port (output:9)" "output:9|port 9" add-flow "priority=5,in_port=1,actions=output:9"
  rejected "add-flows with a bad second line adds nothing" "line 2" \
    add-flows - <<<$'priority=7,in_port=1,actions=output:2\npriority=7,in_port=2,actions=oops'
  rejected "del-flows with a bad match" "1\.2\.3\.400" del-flows "nw_dst=1.2.3.400"
  sf_check "softflowd still forwards" sf_ping 1 2 2

  # A second softflowd on the same socket (and ports) must stop before it
  # touches anything of the first one's.
  local first_pid=$SF_PID first_log=$SF_LOG id_before rc
  id_before=$(sf_port_prog_id 1)
  sf_launch --flows "$flows"
  sf_wait_exit "$SF_PID" 10
  rc=$?
  sf_expect "second softflowd on the same socket exits non-zero, saying so" \
    "$(sf_true test $rc -ne 0 -a $rc -ne 124 -a $rc -lt 128 -a -n "$(grep -i 'already running' "$SF_LOG")")" \
    "exit status $rc; it said: $(cat "$SF_LOG")"
  # ... and on another socket but the same ports: the interfaces are locked.
  local first_sock=$SF_SOCK
  SF_SOCK=$SF_TMP/second.sock
  sf_launch --flows "$flows"
  sf_wait_exit "$SF_PID" 10
  rc=$?
  SF_SOCK=$first_sock
  sf_expect "second softflowd on other socket, same ports, exits non-zero: in use" \
    "$(sf_true test $rc -ne 0 -a $rc -ne 124 -a $rc -lt 128 -a -n "$(grep -i 'in use by another softflowd' "$SF_LOG")")" \
    "exit status $rc; it said: $(cat "$SF_LOG")"
  SF_PID=$first_pid
  SF_LOG=$first_log
  sf_expect "the first softflowd keeps its program and forwards" \
    "$(sf_true test "$(sf_port_prog_id 1)" == "$id_before" -a "$(sf_true sf_ping 1 2 2)" == 1)" \
    "prog id $(sf_port_prog_id 1), was $id_before"
  sf_stop
}

sf_run_modes scenario 19
sf_finish

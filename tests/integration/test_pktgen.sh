#!/bin/bash
# The traffic tools end to end: sf-pktgen in a generator namespace (host h1
# of lib.sh's topology) against sf-echo, softflowd or nothing in the switch
# namespace, over one veth pair (and a second, two-queue pair for --queues):
#
#   [h1: sf-pktgen] h1-ID ==== s1-ID [sw: sf-echo | softflowd | tcpdump]
#                   g2-ID ==== e2-ID   (2 RX/TX queues; softflowd's port 2)
#
# Traces: T3 (32 TCP connections, 8416 frames at scale 0.001) and T2 at
# scale 0.001 (TCP, UDP and ICMP, 64-byte frames) from sf-tracegen.
# Checks, per XDP mode:
#  - sf-echo --mode xdp-tx: `sf-pktgen --loops 2 --rate 20000` gets back
#    exactly 2 x trace frames, and the reflector's own counters agree;
#  - the same with --mode afxdp (sf-echo's rx equals pktgen's sent), with
#    --busy-poll, and with two queues on each side;
#  - with nothing echoing, pktgen counts nothing received and all lost;
#  - the frames of two passes captured on the far side: pass 1 is the trace
#    byte for byte, pass 2 differs from it only in the TCP/UDP ports and L4
#    checksum, with valid IPv4/TCP/UDP checksums; with --no-rewrite both
#    passes are the trace;
#  - --rate 50000 --duration 2 sends 50000 pps within 5 %;
#  - a missing pcap and a missing interface fail with a message naming them;
#  - nothing stays attached after the tools exit, even after SIGKILL;
#  - softflowd with `actions=in_port` on the echo side returns everything;
#    with port 1 -> port 2 everything comes back on --rx-iface (g2-ID).
source "$(dirname "$0")/lib.sh"
sf_init "$@"
sf_require_cmd tcpdump

PKTGEN=$SF_BUILD/sf-pktgen
ECHO=$SF_BUILD/sf-echo
TRACEGEN=$SF_BUILD/sf-tracegen
for f in "$PKTGEN" "$ECHO" "$TRACEGEN"; do
  [[ -x $f ]] || sf_bail "$f is missing (build sf-pktgen, sf-echo and sf-tracegen)"
done
T3=$SF_TMP_ROOT/t3.pcap
T2=$SF_TMP_ROOT/t2.pcap
"$TRACEGEN" --trace T3 --scale 0.001 --out "$T3" || sf_bail "sf-tracegen T3 failed"
"$TRACEGEN" --trace T2 --scale 0.001 --out "$T2" || sf_bail "sf-tracegen T2 failed"

# Reads pcap files (micro- or nanosecond) and checks frames; prints what is
# wrong and exits 1.
#   count FILE                       number of frames
#   passes TRACE CAPTURE rewrite|same
#     CAPTURE holds two passes of TRACE: pass 1 equal to TRACE; pass 2 equal
#     to TRACE (same) or differing only in L4 ports and checksum, with the
#     ports of (almost) every TCP/UDP frame changed (rewrite).  Every IPv4
#     header and TCP/UDP checksum of the capture must be valid.
PCAP_PY='
import struct, sys

def frames(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xa1b2c3d4, 0xa1b23c4d):
        sys.exit(f"{path}: not a little-endian pcap (magic {magic:#x})")
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s

def l4(f):
    """(l4 offset, proto) of an IPv4 TCP/UDP frame, else None."""
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        return None
    ihl = (f[14] & 15) * 4
    if f[23] not in (6, 17) or struct.unpack("!H", f[20:22])[0] & 0x1fff:
        return None
    return 14 + ihl, f[23]

def check_checksums(f, i):
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        return None
    ihl = (f[14] & 15) * 4
    if csum(f[14:14 + ihl]) != 0xffff:
        return f"frame {i}: bad IPv4 header checksum"
    x = l4(f)
    if x is None:
        return None
    ofs, proto = x
    total = struct.unpack("!H", f[16:18])[0]
    seg = f[ofs:14 + total]
    if proto == 17 and seg[6:8] == b"\0\0":
        return None
    pseudo = f[26:34] + struct.pack("!BBH", 0, proto, len(seg))
    if csum(pseudo + seg) != 0xffff:
        name = "TCP" if proto == 6 else "UDP"
        return f"frame {i}: bad {name} checksum"
    return None

cmd = sys.argv[1]
if cmd == "count":
    print(len(frames(sys.argv[2])))
    sys.exit(0)
trace, cap, want = frames(sys.argv[2]), frames(sys.argv[3]), sys.argv[4]
n = len(trace)
if len(cap) != 2 * n:
    sys.exit(f"captured {len(cap)} frames, expected 2 x {n}")
for i, f in enumerate(cap):
    err = check_checksums(f, i)
    if err:
        sys.exit(err)
for i in range(n):
    if cap[i] != trace[i]:
        sys.exit(f"pass 1 frame {i} differs from the trace")
changed = ported = 0
for i in range(n):
    a, b = cap[i], cap[n + i]
    if want == "same":
        if a != b:
            sys.exit(f"--no-rewrite: pass 2 frame {i} differs from pass 1")
        continue
    x = l4(a)
    if x is None:
        if a != b:
            sys.exit(f"pass 2 frame {i} (no TCP/UDP ports) changed")
        continue
    ofs, proto = x
    ck = ofs + (16 if proto == 6 else 6)
    mask = set(range(ofs, ofs + 4)) | {ck, ck + 1}
    if len(a) != len(b) or any(a[j] != b[j] for j in range(len(a)) if j not in mask):
        sys.exit(f"pass 2 frame {i} differs outside the L4 ports and checksum")
    ported += 1
    if a[ofs:ofs + 4] != b[ofs:ofs + 4]:
        changed += 1
if want == "rewrite" and changed < 0.95 * ported:
    sys.exit(f"pass 2 rewrote the ports of only {changed} of {ported} TCP/UDP frames")
print(f"{n} frames per pass, {ported} with ports, {changed} rewritten")
'
pcap_py() { python3 -c "$PCAP_PY" "$@"; }

# pktgen ARGS...: sf-pktgen in h1, JSON report in $PG (stderr in $PG_ERR).
pktgen() {
  PG_ERR=$SF_TMP/pktgen.err
  PG=$(sf_h 1 "$PKTGEN" --interval 0 --json "$@" 2>"$PG_ERR")
  local rc=$?
  [[ -n $PG ]] || PG='{}'
  return $rc
}
pg() { jq -r "$1" <<<"$PG"; }

# echo_start ARGS...: sf-echo in the switch namespace; waits until it is
# attached.  echo_stop: SIGINT, its JSON report in $EC.
echo_start() {
  ECHO_OUT=$SF_TMP/echo.json
  ECHO_ERR=$SF_TMP/echo.err
  : >"$ECHO_ERR"
  sf_bg ip netns exec "$SF_NS_SW" "$ECHO" --xdp-mode "$SF_MODE" --json "$@" >"$ECHO_OUT" 2>"$ECHO_ERR"
  ECHO_PID=$SF_BG_PID
  local i
  for ((i = 0; i < 50; i++)); do
    grep -q "sf-echo: ready" "$ECHO_ERR" && return 0
    sf_pid_alive "$ECHO_PID" || break
    sleep 0.1
  done
  tap_diag "sf-echo did not start: $(cat "$ECHO_ERR")"
  return 1
}
echo_stop() {
  kill -INT "$ECHO_PID" 2>/dev/null
  sf_wait_exit "$ECHO_PID" 5
  local rc=$?
  EC=$(cat "$ECHO_OUT")
  [[ -n $EC ]] || EC='{}'
  return $rc
}
ec() { jq -r "$1" <<<"$EC"; }

# has_xdp NS IF: succeeds when IF has an XDP program attached.
has_xdp() { ip -n "$1" -d link show dev "$2" | grep -q 'prog/xdp'; }

# echo_round MODE TRACE [SF-ECHO ARGS...]: sf-echo MODE on s1, two passes
# of TRACE at 20 kpps; checks pktgen's counts and the echo's.
echo_round() {
  local mode=$1 trace=$2 n sent received
  shift 2
  local label="$mode${*:+ $*}"
  n=$(pcap_py count "$trace")
  echo_start --iface "${SF_SW_IF[1]}" --mode "$mode" "$@" || return 1
  pktgen --iface "${SF_HOST_IF[1]}" --pcap "$trace" --xdp-mode "$SF_MODE" --loops 2 --rate 20000
  local rc=$?
  echo_stop
  sent=$(pg .sent)
  received=$(pg .received)
  sf_expect "$label: pktgen gets back all it sent (sent = received = 2 x $n)" \
    $((rc == 0 && sent == 2 * n && received == sent)) \
    "exit $rc; sent=$sent received=$received lost=$(pg .lost) loops=$(pg .loops); $(cat "$PG_ERR")"
  if [[ $mode == xdp-tx ]]; then
    sf_expect "$label: the reflector counted rx = tx = sent" \
      $(($(ec '.rx // -1') == sent && $(ec '.tx // -1') == sent && $(ec '.dropped // -1') == 0)) \
      "sf-echo: $EC"
  else
    sf_expect "$label: sf-echo's rx and tx equal pktgen's sent" \
      $(($(ec '.rx // -1') == sent && $(ec '.tx // -1') == sent)) "sf-echo: $EC"
  fi
}

# capture_round rewrite|same: two passes of T2 into the switch namespace,
# where nothing answers; tcpdump captures them.
capture_round() {
  local want=$1 cap=$SF_TMP/capture-$1.pcap args=() i
  [[ $want == same ]] && args=(--no-rewrite)
  sf_bg ip netns exec "$SF_NS_SW" tcpdump -i "${SF_SW_IF[1]}" -n -s 0 -B 16384 -U --immediate-mode \
    -w "$cap" 2>"$SF_TMP/tcpdump.err"
  local dump=$SF_BG_PID
  for ((i = 0; i < 50; i++)); do
    grep -q "listening on" "$SF_TMP/tcpdump.err" && break
    sleep 0.1
  done
  pktgen --iface "${SF_HOST_IF[1]}" --pcap "$T2" --xdp-mode "$SF_MODE" --loops 2 --rate 20000 \
    --drain 0.2 "${args[@]}"
  sleep 0.3
  kill -INT "$dump" 2>/dev/null
  sf_wait_exit "$dump" 5
  CAPTURE=$cap
}

# The two-queue veth pair g2-ID (h1) / e2-ID (switch namespace).
multiqueue_pair() {
  MQ_H=g2-$SF_RUN
  MQ_S=e2-$SF_RUN
  ip link add "$MQ_H" netns "${SF_NS_H[1]}" numtxqueues 2 numrxqueues 2 type veth \
    peer name "$MQ_S" netns "$SF_NS_SW" numtxqueues 2 numrxqueues 2 || return 1
  ip netns exec "${SF_NS_H[1]}" ethtool -K "$MQ_H" tx off >/dev/null || return 1
  ip -n "${SF_NS_H[1]}" link set "$MQ_H" up && ip -n "$SF_NS_SW" link set "$MQ_S" up
}

scenario() {
  local n2 out rc i
  sf_topology 1 || return 1
  multiqueue_pair || return 1
  n2=$(pcap_py count "$T2")

  # (a), (b): the two echoes, exact counts.
  echo_round xdp-tx "$T3"
  echo_round afxdp "$T3"
  echo_round afxdp "$T3" --busy-poll

  # Two queues on each side: connections spread, nothing lost.
  echo_start --iface "$MQ_S" --mode afxdp --queues 2 || return 1
  pktgen --iface "$MQ_H" --queues 2 --pcap "$T2" --xdp-mode "$SF_MODE" --loops 2 --rate 20000
  rc=$?
  echo_stop
  sf_expect "afxdp, 2 queues: received = sent = 2 x $n2, sf-echo saw them all" \
    $((rc == 0 && $(pg .sent) == 2 * n2 && $(pg .received) == 2 * n2 && $(ec '.rx // -1') == 2 * n2)) \
    "pktgen: sent=$(pg .sent) received=$(pg .received) $(cat "$PG_ERR"); sf-echo: $EC"

  # (c) port rewriting, seen on the far side (where nothing answers).
  capture_round rewrite
  sf_expect "nothing echoes: received 0, lost = sent" \
    $(($(pg .sent) == 2 * n2 && $(pg .received) == 0 && $(pg .lost) == $(pg .sent))) \
    "sent=$(pg .sent) received=$(pg .received) lost=$(pg .lost)"
  sf_check "pass 2 has new L4 ports, valid checksums, pass 1 is the trace" \
    pcap_py passes "$T2" "$CAPTURE" rewrite
  capture_round same
  sf_check "--no-rewrite: both passes are the trace" pcap_py passes "$T2" "$CAPTURE" same

  # (d) rate accuracy, against the XDP_TX reflector.
  echo_start --iface "${SF_SW_IF[1]}" --mode xdp-tx || return 1
  pktgen --iface "${SF_HOST_IF[1]}" --pcap "$T3" --xdp-mode "$SF_MODE" --rate 50000 --duration 2 \
    --drain 0.2
  echo_stop
  local pps
  pps=$(pg '.sent_pps // 0 | floor')
  sf_expect "--rate 50000 --duration 2: sent_pps within 5 %" \
    $((pps >= 47500 && pps <= 52500)) "sent_pps=$(pg .sent_pps) seconds=$(pg .seconds) \
generator_bound=$(pg .generator_bound) tx_ring_full=$(pg .tx_ring_full) (machine load: $(cut -d' ' -f1-3 /proc/loadavg))"

  # (e) bad input.
  out=$(sf_h 1 "$PKTGEN" --iface "${SF_HOST_IF[1]}" --pcap "$SF_TMP/missing.pcap" 2>&1)
  rc=$?
  sf_expect "missing pcap: exit status != 0, message names the file" \
    $((rc != 0 && $(grep -c "missing.pcap" <<<"$out") > 0)) "exit $rc: $out"
  out=$(sf_h 1 "$PKTGEN" --iface nosuch0 --pcap "$T3" 2>&1)
  rc=$?
  local out2 rc2
  out2=$(ip netns exec "$SF_NS_SW" "$ECHO" --iface nosuch0 2>&1)
  rc2=$?
  sf_expect "missing interface: pktgen and sf-echo exit != 0 naming it" \
    $((rc != 0 && rc2 != 0 && $(grep -c nosuch0 <<<"$out") > 0 && $(grep -c nosuch0 <<<"$out2") > 0)) \
    "sf-pktgen: exit $rc: $out; sf-echo: exit $rc2: $out2"

  # (f) nothing left attached; not even by a killed sf-echo (BPF links).
  local left=""
  has_xdp "${SF_NS_H[1]}" "${SF_HOST_IF[1]}" && left+=" ${SF_HOST_IF[1]}"
  has_xdp "$SF_NS_SW" "${SF_SW_IF[1]}" && left+=" ${SF_SW_IF[1]}"
  has_xdp "${SF_NS_H[1]}" "$MQ_H" && left+=" $MQ_H"
  has_xdp "$SF_NS_SW" "$MQ_S" && left+=" $MQ_S"
  sf_expect "no XDP program left on any interface after the tools exit" $((${#left} == 0)) \
    "still attached:$left"
  echo_start --iface "${SF_SW_IF[1]}" --mode afxdp || return 1
  local attached=0
  has_xdp "$SF_NS_SW" "${SF_SW_IF[1]}" && attached=1
  {
    kill -KILL "$ECHO_PID"
    sf_wait_exit "$ECHO_PID" 5
  } 2>/dev/null
  local gone=1
  for ((i = 0; i < 20; i++)); do
    gone=1
    has_xdp "$SF_NS_SW" "${SF_SW_IF[1]}" && gone=0
    ((gone)) && break
    sleep 0.1
  done
  sf_expect "sf-echo attached while running, nothing left after SIGKILL" $((attached && gone)) \
    "attached while running: $attached, detached after SIGKILL: $gone"

  # softflowd on the echo side (ports 1 = s1, 2 = e2): first actions=in_port,
  # then port 1 to port 2, which returns the frames on pktgen's --rx-iface.
  echo "table=0,priority=10,actions=in_port" >"$SF_TMP/flows"
  SF_PORT_ARGS=(--port "${SF_SW_IF[1]}:1" --port "$MQ_S:2")
  sf_start --flows "$SF_TMP/flows" || return 1
  pktgen --iface "${SF_HOST_IF[1]}" --pcap "$T3" --xdp-mode "$SF_MODE" --loops 1 --rate 10000
  rc=$?
  sf_expect "softflowd actions=in_port: received = sent = one pass" \
    $((rc == 0 && $(pg .sent) > 0 && $(pg .received) == $(pg .sent))) \
    "exit $rc: sent=$(pg .sent) received=$(pg .received) lost=$(pg .lost); $(cat "$PG_ERR")"
  sfctl del-flows >/dev/null && sfctl add-flow "table=0,priority=10,in_port=1,actions=output:2" \
    >/dev/null || return 1
  pktgen --iface "${SF_HOST_IF[1]}" --rx-iface "$MQ_H" --pcap "$T2" --xdp-mode "$SF_MODE" \
    --loops 2 --rate 10000
  rc=$?
  sf_expect "--rx-iface: what softflowd sends out of port 2 is counted on $MQ_H" \
    $((rc == 0 && $(pg .sent) == 2 * n2 && $(pg .received) == $(pg .sent))) \
    "exit $rc: sent=$(pg .sent) received=$(pg .received) lost=$(pg .lost); $(cat "$PG_ERR")"
  sf_stop
  unset SF_PORT_ARGS
}

sf_run_modes scenario 17
sf_finish

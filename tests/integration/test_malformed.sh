#!/bin/bash
# Malformed frames injected from h1 with a raw AF_PACKET socket: truncated
# VLAN/IPv4/IPv6/TCP headers, bad IHL, IPv4 total lengths that lie (longer
# than the frame, shorter than the header, cutting the TCP header), TCP data
# offset < 5 and beyond the segment, a UDP length that lies, broken IPv6
# extension chains.  Each kind must be counted as malformed by the XDP
# program and by the datapath (`sfctl --json show`: xdp.malformed and
# counters.malformed), softflowd must stay alive, and ping h1 -> h2 must work
# afterwards.
source "$(dirname "$0")/lib.sh"
sf_init "$@"

COPIES=3
INJECT=$SF_TMP_ROOT/inject.py
cat >"$INJECT" <<'EOF'
# inject.py IFACE SRC_MAC DST_MAC SRC_IP DST_IP KIND COUNT | inject.py --list
import socket, struct, sys

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def ipv4(src, dst, proto, payload, ihl=5, total=None, options=b""):
    total = 4 * ihl + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total & 0xFFFF, 1, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + options
    h = h[:10] + struct.pack("!H", csum(h[:20])) + h[12:]
    return h + payload

def tcp(doff=5, extra=b""):
    return struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, doff << 4, 0x02, 65535, 0, 0) + extra

def udp(length=None, payload=b"x" * 8):
    return struct.pack("!HHHH", 40000, 53, 8 + len(payload) if length is None else length, 0) + payload

def ipv6(next_header, payload, payload_len=None):
    plen = len(payload) if payload_len is None else payload_len
    return (struct.pack("!IHBB", 0x60000000, plen, next_header, 64)
            + socket.inet_pton(socket.AF_INET6, "fd00::1")
            + socket.inet_pton(socket.AF_INET6, "fd00::2") + payload)

def frames(s, d):
    V4, V6, VLAN = 0x0800, 0x86DD, 0x8100
    return {
        # VLAN tag without the inner ethertype
        "vlan-truncated": (VLAN, b"\x00\x05"),
        # IPv4 header cut at 10 bytes
        "ipv4-truncated": (V4, ipv4(s, d, 17, udp())[:10]),
        # IHL 3 (< 5)
        "ipv4-ihl-below-5": (V4, ipv4(s, d, 17, udp(), ihl=3)[:12] + ipv4(s, d, 17, udp())[12:]),
        # IHL 15 (60 bytes) in a 28-byte datagram
        "ipv4-ihl-beyond-frame": (V4, bytes([0x4F]) + ipv4(s, d, 17, udp())[1:]),
        # total length 1000 in a 36-byte datagram
        "ipv4-total-length-too-long": (V4, ipv4(s, d, 17, udp(), total=1000)),
        # total length 10 (< the 20-byte header)
        "ipv4-total-length-below-header": (V4, ipv4(s, d, 17, udp(), total=10)),
        # total length ends 10 bytes into a complete TCP header
        "ipv4-total-length-cuts-tcp": (V4, ipv4(s, d, 6, tcp(), total=30)),
        # TCP header cut at 10 bytes (lengths consistent)
        "tcp-truncated": (V4, ipv4(s, d, 6, tcp()[:10])),
        # TCP data offset 2 (< 5)
        "tcp-data-offset-below-5": (V4, ipv4(s, d, 6, tcp(doff=2))),
        # TCP data offset 15 (60 bytes) with a 20-byte segment
        "tcp-data-offset-beyond-segment": (V4, ipv4(s, d, 6, tcp(doff=15))),
        # UDP length 500 in a 16-byte datagram
        "udp-length-too-long": (V4, ipv4(s, d, 17, udp(length=500))),
        # IPv6 header cut at 20 bytes
        "ipv6-truncated": (V6, ipv6(17, udp())[:20]),
        # hop-by-hop header claiming 88 bytes, 8 present
        "ipv6-ext-beyond-packet": (V6, ipv6(0, bytes([17, 10]) + b"\x01\x04\0\0\0\0")),
        # hop-by-hop header cut at 4 bytes
        "ipv6-ext-truncated": (V6, ipv6(0, bytes([17, 0, 1, 2]))),
        # nine destination-options headers (more than the parser follows)
        "ipv6-ext-chain-too-long": (V6, ipv6(60, b"".join(bytes([60, 0]) + b"\x01\x04\0\0\0\0" for _ in range(8))
                                             + bytes([17, 0]) + b"\x01\x04\0\0\0\0" + udp())),
    }

if sys.argv[1] == "--list":
    print("\n".join(frames("10.0.0.1", "10.0.0.2")))
    sys.exit(0)
iface, smac, dmac, sip, dip, kind, count = sys.argv[1:8]
ethertype, l3 = frames(sip, dip)[kind]
frame = (bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", ""))
         + struct.pack("!H", ethertype) + l3)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))
for _ in range(int(count)):
    sock.send(frame)
print("%s: %d frames of %d bytes" % (kind, int(count), len(frame)))
EOF
mapfile -t KINDS < <(python3 "$INJECT" --list) || sf_bail "inject.py does not run"

counters() { sf_show_json | jq -r '"\(.xdp.malformed // 0) \(.counters.malformed)"'; }

# inject KIND: COPIES frames of that kind; both malformed counters must grow
# by COPIES (they are polled: the PMD thread counts asynchronously).
inject() {
  local kind=$1 x0 d0 x1 d1 out i
  read -r x0 d0 <<<"$(counters)"
  out=$(sf_h 1 python3 "$INJECT" "${SF_HOST_IF[1]}" "$(sf_mac 1)" "$(sf_mac 2)" \
    "$(sf_ip 1)" "$(sf_ip 2)" "$kind" $COPIES 2>&1)
  for ((i = 0; i < 30; i++)); do
    read -r x1 d1 <<<"$(counters)"
    ((x1 - x0 >= COPIES && d1 - d0 >= COPIES)) && break
    sleep 0.05
  done
  sf_expect "$kind: counted malformed (XDP and datapath)" \
    $((x1 - x0 == COPIES && d1 - d0 == COPIES)) \
    "$out; xdp malformed +$((x1 - x0)), datapath malformed +$((d1 - d0))"
}

scenario() {
  sf_topology 2 || return 1
  sf_port_flows "$SF_TMP/flows"
  sf_start --flows "$SF_TMP/flows" || return 1
  sf_check "ping h1 -> h2 before" sf_ping 1 2 2
  local kind
  for kind in "${KINDS[@]}"; do inject "$kind"; done
  sf_expect "softflowd is alive" "$(sf_pid_alive "$SF_PID" && echo 1 || echo 0)"
  sf_check "ping h1 -> h2 after the injection" sf_ping 1 2 3
  sf_stop
  local rc=$?
  sf_expect "softflowd exits 0 on SIGTERM" $((rc == 0)) "exit status $rc"
}

sf_run_modes scenario $((${#KINDS[@]} + 4))
sf_finish

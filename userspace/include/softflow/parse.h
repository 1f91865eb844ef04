// Packet parsing into the flow key: Ethernet, 802.1Q, ARP, IPv4 (options,
// fragments), IPv6 (common extension headers), TCP, UDP, ICMP, ICMPv6.
//
// Never reads outside [data, data + len).  A truncated or malformed packet
// gets a key holding whatever parsed before the problem plus a parse flag.
#pragma once

#include "softflow/packet.h"

namespace softflow {

// Parses pkt.data/len.  Keeps pkt.key.in_port and the SoftFlow metadata
// (sf_stage, sf_action, sf_metadata) and rewrites every other key field, the
// header offsets and parse_flags.  Returns pkt.parse_flags.
uint16_t parse_packet(Packet& pkt);

}  // namespace softflow

// Header rewrites executed by datapath actions.  Each keeps the packet's key
// in sync with its bytes and fixes checksums incrementally (RFC 1624), so no
// one re-parses after an action.
#pragma once

#include "softflow/flow.h"
#include "softflow/packet.h"

namespace softflow {

// Applies a kSetField action.  The key is always updated (as xlate did); the
// bytes are rewritten when the packet has the header (ARP for nw_src/nw_dst
// on ARP, IPv4/IPv6, TCP/UDP for tp_src/tp_dst); IPv4 header, TCP, UDP and
// ICMPv6 checksums are updated.  sf_metadata only touches the key.
void packet_set_field(Packet& pkt, const Action& set_field);

enum class TtlResult { kOk, kExpired, kNotIp };
// Decrements the IPv4 TTL (fixing the checksum) or the IPv6 hop limit.
// kExpired (TTL/hop limit was 0 or 1) means the packet must be dropped.
TtlResult packet_dec_ttl(Packet& pkt);

// Internet checksum helpers (exposed for tests and services).
uint16_t checksum_fold(uint32_t sum);
uint32_t checksum_partial(const uint8_t* data, size_t len, uint32_t sum);
// Recomputes all checksums (IPv4 header, TCP/UDP/ICMP/ICMPv6) from scratch;
// for tests and for services that rewrite payloads.
void packet_fix_checksums(Packet& pkt);

}  // namespace softflow

// Header rewrites for datapath actions, with incremental checksum updates
// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
//
// The functions rely on the offsets parse_packet() recorded: when l3_ofs or
// l4_ofs is set, the whole header there lies inside the frame, so the
// rewrites below need no further bounds checks.
//
// Checksum helpers work on big-endian 16-bit words: checksum_partial() sums
// bytes as they are on the wire and checksum_fold() returns the value to
// store in a checksum field (folded and complemented), as a host-order
// integer to be written big-endian.  A header whose checksum is right sums to
// 0xffff, i.e. checksum_fold(checksum_partial(header, len, 0)) == 0.
#include "softflow/packet_ops.h"
#include "softflow/protocols.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace softflow {
namespace {

constexpr uint32_t kEthHeaderLen = 14;
constexpr uint32_t kEthAddrLen = 6;

// Field offsets inside the headers.
constexpr uint32_t kIpv4TtlOffset = 8;
constexpr uint32_t kIpv4ChecksumOffset = 10;
constexpr uint32_t kIpv4SrcOffset = 12;
constexpr uint32_t kIpv4DstOffset = 16;
constexpr uint32_t kIpv6HopLimitOffset = 7;
constexpr uint32_t kIpv6SrcOffset = 8;
constexpr uint32_t kIpv6DstOffset = 24;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kArpSpaOffset = 14;
constexpr uint32_t kArpTpaOffset = 24;
constexpr uint32_t kTcpChecksumOffset = 16;
constexpr uint32_t kUdpChecksumOffset = 6;
constexpr uint32_t kIcmpChecksumOffset = 2;

// Only the DSCP bits of the TOS byte / traffic class are rewritten; ECN
// belongs to the endpoints and the path.
constexpr uint8_t kDscpMask = 0xfc;

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

inline uint16_t ether_type(const Packet& pkt) { return ntohs(pkt.key.dl_type); }
inline bool is_ipv4(const Packet& pkt) { return pkt.has_l3() && ether_type(pkt) == kEthTypeIpv4; }
inline bool is_ipv6(const Packet& pkt) { return pkt.has_l3() && ether_type(pkt) == kEthTypeIpv6; }

// Where the IP datagram ends inside the frame, with the same bounds the
// parser used: the length field, but never past the frame.
uint32_t ip_datagram_end(const Packet& pkt) {
  const uint8_t* ip = pkt.data + pkt.l3_ofs;
  const uint32_t avail = pkt.len - pkt.l3_ofs;
  if (is_ipv4(pkt)) {
    const uint32_t header_len = (ip[0] & 0x0f) * 4u;
    const uint32_t total_len = load_be16(ip + 2);
    return pkt.l3_ofs + std::min(std::max(total_len, header_len), avail);
  }
  return pkt.l3_ofs + std::min(kIpv6HeaderLen + load_be16(ip + 4), avail);
}

// Byte i of the wire becomes (wire & ~mask) | (value & mask); 'old' gets the
// previous bytes for the checksum update.
void masked_write(uint8_t* wire, const uint8_t* value, const uint8_t* mask, size_t n,
                  uint8_t* old) {
  for (size_t i = 0; i < n; ++i) {
    old[i] = wire[i];
    wire[i] = static_cast<uint8_t>((wire[i] & ~mask[i]) | (value[i] & mask[i]));
  }
}

// RFC 1624 update of the checksum at 'field' for n bytes (n even, at an even
// offset of the checksummed data) that changed from old_bytes to new_bytes.
uint16_t updated_checksum(uint16_t checksum, const uint8_t* old_bytes, const uint8_t* new_bytes,
                          size_t n) {
  uint32_t sum = static_cast<uint16_t>(~checksum);
  for (size_t i = 0; i < n; i += 2) {
    sum += static_cast<uint16_t>(~load_be16(old_bytes + i));
    sum += load_be16(new_bytes + i);
  }
  return checksum_fold(sum);
}

void update_checksum(uint8_t* field, const uint8_t* old_bytes, const uint8_t* new_bytes, size_t n) {
  store_be16(field, updated_checksum(load_be16(field), old_bytes, new_bytes, n));
}

// A UDP checksum of 0 means "none" and stays so; a computed 0 is sent as
// 0xffff (RFC 768).  Applied to IPv6 too, so that zero-checksum tunnels
// (RFC 6935) keep working.
void update_udp_checksum(uint8_t* field, const uint8_t* old_bytes, const uint8_t* new_bytes,
                         size_t n) {
  const uint16_t checksum = load_be16(field);
  if (checksum == 0) return;
  const uint16_t updated = updated_checksum(checksum, old_bytes, new_bytes, n);
  store_be16(field, updated == 0 ? 0xffff : updated);
}

// Updates the L4 checksum for a change in bytes it covers: the L4 header
// itself (ports) or, through the pseudo-header, the IP addresses.
void update_l4_checksum(Packet& pkt, const uint8_t* old_bytes, const uint8_t* new_bytes, size_t n,
                        bool pseudo_header_change) {
  if (!pkt.has_l4()) return;
  uint8_t* l4 = pkt.l4();
  switch (pkt.key.nw_proto) {
    case kProtoTcp:
      update_checksum(l4 + kTcpChecksumOffset, old_bytes, new_bytes, n);
      break;
    case kProtoUdp:
      update_udp_checksum(l4 + kUdpChecksumOffset, old_bytes, new_bytes, n);
      break;
    case kProtoIcmpv6:
      // ICMPv6 covers a pseudo-header, ICMP (v4) does not.
      if (pseudo_header_change && is_ipv6(pkt))
        update_checksum(l4 + kIcmpChecksumOffset, old_bytes, new_bytes, n);
      break;
    default:
      break;
  }
}

void set_eth_addr(Packet& pkt, const Action& a, uint32_t offset) {
  if (pkt.len < kEthHeaderLen) return;
  uint8_t old[kEthAddrLen];
  masked_write(pkt.data + offset, a.value.data(), a.mask.data(), kEthAddrLen, old);
}

// nw_src/nw_dst (4 bytes) and ipv6_src/ipv6_dst (16 bytes) share the key's
// address slots; each rewrites whatever address the packet has in that slot.
void set_ip_addr(Packet& pkt, const Action& a, bool is_src) {
  if (!pkt.has_l3()) return;
  uint8_t* l3 = pkt.l3();
  const size_t field_size = field_info(a.field).size;
  uint8_t old[16];
  switch (ether_type(pkt)) {
    case kEthTypeArp:
      masked_write(l3 + (is_src ? kArpSpaOffset : kArpTpaOffset), a.value.data(), a.mask.data(), 4,
                   old);
      break;
    case kEthTypeIpv4: {
      uint8_t* addr = l3 + (is_src ? kIpv4SrcOffset : kIpv4DstOffset);
      masked_write(addr, a.value.data(), a.mask.data(), 4, old);
      update_checksum(l3 + kIpv4ChecksumOffset, old, addr, 4);
      update_l4_checksum(pkt, old, addr, 4, /*pseudo_header_change=*/true);
      break;
    }
    case kEthTypeIpv6: {
      uint8_t* addr = l3 + (is_src ? kIpv6SrcOffset : kIpv6DstOffset);
      masked_write(addr, a.value.data(), a.mask.data(), field_size, old);
      update_l4_checksum(pkt, old, addr, field_size, /*pseudo_header_change=*/true);
      break;
    }
    default:
      break;
  }
}

void set_dscp(Packet& pkt, const Action& a) {
  if (!pkt.has_l3()) return;
  uint8_t* l3 = pkt.l3();
  const uint8_t mask = a.mask[0] & kDscpMask;
  const uint8_t value = a.value[0] & mask;
  if (is_ipv4(pkt)) {
    uint8_t old[2] = {l3[0], l3[1]};
    l3[1] = static_cast<uint8_t>((l3[1] & ~mask) | value);
    update_checksum(l3 + kIpv4ChecksumOffset, old, l3, 2);
  } else if (is_ipv6(pkt)) {
    // The traffic class straddles bytes 0 and 1; no IPv6 header checksum,
    // and it is not part of any pseudo-header.
    uint8_t traffic_class = static_cast<uint8_t>((l3[0] & 0x0f) << 4 | l3[1] >> 4);
    traffic_class = static_cast<uint8_t>((traffic_class & ~mask) | value);
    l3[0] = static_cast<uint8_t>((l3[0] & 0xf0) | traffic_class >> 4);
    l3[1] = static_cast<uint8_t>((traffic_class & 0x0f) << 4 | (l3[1] & 0x0f));
  }
}

void set_port(Packet& pkt, const Action& a, bool is_src) {
  // Later fragments have no L4 header (l4_ofs unset), so they are left alone.
  if (!pkt.has_l4()) return;
  if (pkt.key.nw_proto != kProtoTcp && pkt.key.nw_proto != kProtoUdp) return;
  uint8_t* port = pkt.l4() + (is_src ? 0 : 2);
  uint8_t old[2];
  masked_write(port, a.value.data(), a.mask.data(), 2, old);
  update_l4_checksum(pkt, old, port, 2, /*pseudo_header_change=*/false);
}

// Sum of the IPv4/IPv6 pseudo-header for an upper-layer packet of l4_len bytes.
uint32_t pseudo_header_sum(const Packet& pkt, uint8_t proto, uint32_t l4_len) {
  const uint8_t* l3 = pkt.data + pkt.l3_ofs;
  uint32_t sum;
  if (is_ipv4(pkt)) {
    sum = checksum_partial(l3 + kIpv4SrcOffset, 8, 0);  // source and destination
  } else {
    sum = checksum_partial(l3 + kIpv6SrcOffset, 32, 0);
    sum += l4_len >> 16;
  }
  return sum + proto + (l4_len & 0xffff);
}

}  // namespace

uint16_t checksum_fold(uint32_t sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint32_t checksum_partial(const uint8_t* data, size_t len, uint32_t sum) {
  // Summing 32-bit words into 64 bits and folding gives the same one's
  // complement sum as 16-bit words (2^16 == 1 mod 0xffff), with fewer adds.
  uint64_t acc = sum;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    acc += static_cast<uint32_t>(data[i]) << 24 | static_cast<uint32_t>(data[i + 1]) << 16 |
           static_cast<uint32_t>(data[i + 2]) << 8 | data[i + 3];
  }
  if (i + 2 <= len) {
    acc += load_be16(data + i);
    i += 2;
  }
  if (i < len) acc += static_cast<uint32_t>(data[i]) << 8;  // odd byte: padded with zero
  // Folded to 16 bits so that callers may add a few more terms safely.
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint32_t>(acc);
}

void packet_set_field(Packet& pkt, const Action& a) {
  // The key first, exactly as xlate computed it, so that later stages see
  // what the megaflow was compiled for.
  apply_set_field(pkt.key, a);
  switch (a.field) {
    case Field::kDlDst:
      set_eth_addr(pkt, a, 0);
      break;
    case Field::kDlSrc:
      set_eth_addr(pkt, a, kEthAddrLen);
      break;
    case Field::kNwSrc:
    case Field::kIpv6Src:
      set_ip_addr(pkt, a, /*is_src=*/true);
      break;
    case Field::kNwDst:
    case Field::kIpv6Dst:
      set_ip_addr(pkt, a, /*is_src=*/false);
      break;
    case Field::kNwTos:
      set_dscp(pkt, a);
      break;
    case Field::kTpSrc:
      set_port(pkt, a, /*is_src=*/true);
      break;
    case Field::kTpDst:
      set_port(pkt, a, /*is_src=*/false);
      break;
    default:
      // SoftFlow metadata lives only in the key.  Other fields (dl_type,
      // vlan_tci, nw_proto, ...) are not rewritable on the wire.
      break;
  }
}

TtlResult packet_dec_ttl(Packet& pkt) {
  if (is_ipv4(pkt)) {
    uint8_t* ttl = pkt.l3() + kIpv4TtlOffset;
    if (*ttl <= 1) return TtlResult::kExpired;
    // TTL shares its 16-bit word with the protocol byte.
    const uint8_t old[2] = {ttl[0], ttl[1]};
    --*ttl;
    update_checksum(pkt.l3() + kIpv4ChecksumOffset, old, ttl, 2);
    return TtlResult::kOk;
  }
  if (is_ipv6(pkt)) {
    uint8_t* hop_limit = pkt.l3() + kIpv6HopLimitOffset;
    if (*hop_limit <= 1) return TtlResult::kExpired;
    --*hop_limit;
    return TtlResult::kOk;
  }
  return TtlResult::kNotIp;
}

void packet_fix_checksums(Packet& pkt) {
  const bool ipv4 = is_ipv4(pkt);
  if (!ipv4 && !is_ipv6(pkt)) return;
  if (ipv4) {
    uint8_t* ip = pkt.l3();
    const uint32_t header_len = (ip[0] & 0x0f) * 4u;
    store_be16(ip + kIpv4ChecksumOffset, 0);
    store_be16(ip + kIpv4ChecksumOffset, checksum_fold(checksum_partial(ip, header_len, 0)));
  }
  // A fragment's L4 checksum covers the reassembled datagram, which this
  // frame does not hold; leave it alone.
  if (!pkt.has_l4() || pkt.key.nw_frag != 0) return;
  uint8_t* l4 = pkt.l4();
  const uint32_t l4_len = ip_datagram_end(pkt) - pkt.l4_ofs;
  const uint8_t proto = pkt.key.nw_proto;
  uint8_t* field;
  uint32_t sum = 0;
  switch (proto) {
    case kProtoTcp:
      field = l4 + kTcpChecksumOffset;
      sum = pseudo_header_sum(pkt, proto, l4_len);
      break;
    case kProtoUdp:
      field = l4 + kUdpChecksumOffset;
      if (load_be16(field) == 0) return;  // "no checksum" stays so (see update_udp_checksum)
      sum = pseudo_header_sum(pkt, proto, l4_len);
      break;
    case kProtoIcmp:
      field = l4 + kIcmpChecksumOffset;
      break;
    case kProtoIcmpv6:
      field = l4 + kIcmpChecksumOffset;
      sum = pseudo_header_sum(pkt, proto, l4_len);
      break;
    default:
      return;
  }
  store_be16(field, 0);
  uint16_t checksum = checksum_fold(checksum_partial(l4, l4_len, sum));
  if (proto == kProtoUdp && checksum == 0) checksum = 0xffff;
  store_be16(field, checksum);
}

}  // namespace softflow

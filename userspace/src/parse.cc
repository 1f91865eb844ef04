// Packet parsing into the flow key (see parse.h and sf_abi.h for the key's
// conventions).
//
// Rules that hold for every packet, however malformed:
//  - Nothing outside [data, data + len) is read.
//  - A header is taken whole or not at all: the key holds a layer's fields
//    and its offset is set only when the complete header (IPv4 with options,
//    TCP with options, ...) lies inside the frame and inside the bounds the
//    layer below declares.  So when l3_ofs / l4_ofs is set, a reader may
//    access the whole header there without further checks.
//  - payload_ofs is set exactly when l4_ofs is, and is <= len.
//  - l2_ofs is always 0: data starts at the Ethernet header.
#include "softflow/parse.h"
#include "softflow/protocols.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace softflow {
namespace {

constexpr uint32_t kEthHeaderLen = 14;
constexpr uint32_t kEthTypeOffset = 12;
constexpr uint32_t kVlanTagLen = 4;
constexpr int kMaxVlanTags = 2;

constexpr uint32_t kArpFixedLen = 8;  // htype, ptype, hlen, plen, oper
constexpr uint32_t kArpEthIpv4Len = 28;

constexpr uint32_t kIpv4MinHeaderLen = 20;
constexpr uint16_t kIpv4MoreFragments = 0x2000;
constexpr uint16_t kIpv4FragOffsetMask = 0x1fff;

constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kIpv6ExtMinLen = 8;  // every extension header is >= 8 bytes
constexpr uint32_t kIpv6FragHeaderLen = 8;
constexpr uint16_t kIpv6FragOffsetMask = 0xfff8;
constexpr uint16_t kIpv6MoreFragments = 0x0001;
// Longer chains are not legitimate traffic; bounding them bounds parse time.
constexpr int kMaxIpv6ExtHeaders = 8;

constexpr uint32_t kTcpMinHeaderLen = 20;
constexpr uint32_t kUdpHeaderLen = 8;
// Type, code, checksum and the 4-byte rest-of-header that every ICMP and
// ICMPv6 message type has (echo id/seq, error "unused"/MTU/pointer, ...).
constexpr uint32_t kIcmpHeaderLen = 8;
constexpr uint16_t kTcpFlagsMask = 0x0fff;

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline bool is_vlan_tpid(uint16_t type) { return type == kEthTypeVlan || type == kEthTypeQinQ; }

class FrameParser {
 public:
  explicit FrameParser(Packet& pkt) : pkt_(pkt), key_(pkt.key), data_(pkt.data), len_(pkt.len) {}

  void run() { parse_ethernet(); }

 private:
  // Bytes left in [ofs, end); callers keep ofs <= end.
  static uint32_t room(uint32_t ofs, uint32_t end) { return end - ofs; }

  void flag(uint16_t f) { pkt_.parse_flags = static_cast<uint16_t>(pkt_.parse_flags | f); }

  void parse_ethernet() {
    if (len_ < kEthHeaderLen) {
      flag(kParseTruncatedL2);
      return;
    }
    std::memcpy(key_.dl_dst, data_, 6);
    std::memcpy(key_.dl_src, data_ + 6, 6);

    uint32_t type_ofs = kEthTypeOffset;
    uint16_t type = load_be16(data_ + type_ofs);
    for (int tags = 0; is_vlan_tpid(type) && tags < kMaxVlanTags; ++tags) {
      // The tag's TCI and the next ethertype must both be present.
      if (len_ < type_ofs + 2 + kVlanTagLen) {
        key_.dl_type = htons(type);
        flag(kParseTruncatedL2);
        return;
      }
      const uint16_t tci = load_be16(data_ + type_ofs + 2);
      if (tags == 0) key_.vlan_tci = htons(static_cast<uint16_t>(tci | SF_VLAN_PRESENT));
      type_ofs += kVlanTagLen;
      type = load_be16(data_ + type_ofs);
    }
    key_.dl_type = htons(type);
    // A third tag leaves dl_type at its TPID and the rest unparsed (as OVS).
    const uint32_t l3_ofs = type_ofs + 2;
    switch (type) {
      case kEthTypeIpv4:
        parse_ipv4(l3_ofs);
        break;
      case kEthTypeIpv6:
        parse_ipv6(l3_ofs);
        break;
      case kEthTypeArp:
        parse_arp(l3_ofs);
        break;
      default:
        break;
    }
  }

  void parse_arp(uint32_t ofs) {
    const uint32_t avail = room(ofs, len_);
    if (avail < kArpFixedLen) {
      flag(kParseTruncatedL3);
      return;
    }
    const uint8_t* arp = data_ + ofs;
    // Only Ethernet/IPv4 ARP has addresses the key can hold; others stay
    // unparsed (not malformed, just not ours).
    if (load_be16(arp) != 1 || load_be16(arp + 2) != kEthTypeIpv4 || arp[4] != 6 || arp[5] != 4)
      return;
    if (avail < kArpEthIpv4Len) {
      flag(kParseTruncatedL3);
      return;
    }
    pkt_.l3_ofs = static_cast<uint16_t>(ofs);
    key_.nw_proto = arp[7];  // low byte of the opcode
    std::memcpy(&key_.nw_src[0], arp + 14, 4);
    std::memcpy(&key_.nw_dst[0], arp + 24, 4);
  }

  void parse_ipv4(uint32_t ofs) {
    const uint32_t avail = room(ofs, len_);
    if (avail < kIpv4MinHeaderLen) {
      flag(kParseTruncatedL3);
      return;
    }
    const uint8_t* ip = data_ + ofs;
    const uint32_t header_len = (ip[0] & 0x0f) * 4u;
    if ((ip[0] >> 4) != 4 || header_len < kIpv4MinHeaderLen) {
      flag(kParseBadL3);
      return;
    }
    if (header_len > avail) {
      flag(kParseTruncatedL3);
      return;
    }
    pkt_.l3_ofs = static_cast<uint16_t>(ofs);
    key_.nw_tos = ip[1];
    key_.nw_proto = ip[9];
    std::memcpy(&key_.nw_src[0], ip + 12, 4);
    std::memcpy(&key_.nw_dst[0], ip + 16, 4);

    // The datagram ends at its total length, which excludes Ethernet padding.
    // A length that lies is flagged; we then trust only what is there.
    const uint32_t total_len = load_be16(ip + 2);
    if (total_len < header_len || total_len > avail) flag(kParseBadL3);

    const uint16_t frag = load_be16(ip + 6);
    if (frag & (kIpv4MoreFragments | kIpv4FragOffsetMask)) {
      key_.nw_frag = SF_FRAG_ANY;
      if (frag & kIpv4FragOffsetMask) {
        key_.nw_frag |= SF_FRAG_LATER;  // no L4 header in this fragment
        return;
      }
    }
    if (total_len < header_len) return;  // claims there is no room for L4
    parse_l4(ip[9], ofs + header_len, ofs + std::min(total_len, avail), /*is_ipv6=*/false);
  }

  void parse_ipv6(uint32_t ofs) {
    const uint32_t avail = room(ofs, len_);
    if (avail < kIpv6HeaderLen) {
      flag(kParseTruncatedL3);
      return;
    }
    const uint8_t* ip = data_ + ofs;
    if ((ip[0] >> 4) != 6) {
      flag(kParseBadL3);
      return;
    }
    pkt_.l3_ofs = static_cast<uint16_t>(ofs);
    key_.nw_tos = static_cast<uint8_t>((ip[0] & 0x0f) << 4 | ip[1] >> 4);  // traffic class
    std::memcpy(key_.nw_src, ip + 8, 16);
    std::memcpy(key_.nw_dst, ip + 24, 16);

    uint32_t l3_len = kIpv6HeaderLen + load_be16(ip + 4);
    if (l3_len > avail) {
      flag(kParseBadL3);
      l3_len = avail;
    }
    const uint32_t end = ofs + l3_len;

    uint8_t next = ip[6];
    uint32_t cur = ofs + kIpv6HeaderLen;
    for (int n_headers = 0;; ++n_headers) {
      if (next != kProtoHopByHop && next != kProtoRouting && next != kProtoDestOpts &&
          next != kProtoFragment && next != kProtoAh)
        break;
      // On a broken chain nw_proto names the header we could not get past.
      if (n_headers == kMaxIpv6ExtHeaders || room(cur, end) < kIpv6ExtMinLen) {
        key_.nw_proto = next;
        flag(kParseBadExtHdr);
        return;
      }
      const uint8_t* ext = data_ + cur;
      uint32_t ext_len;
      if (next == kProtoFragment) {
        ext_len = kIpv6FragHeaderLen;
        const uint16_t off_flags = load_be16(ext + 2);
        if (off_flags & (kIpv6FragOffsetMask | kIpv6MoreFragments)) {
          key_.nw_frag = SF_FRAG_ANY;
          if (off_flags & kIpv6FragOffsetMask) {
            // What follows is fragment data, not headers.  nw_proto is the
            // protocol the fragment header announces, as for IPv4.
            key_.nw_frag |= SF_FRAG_LATER;
            key_.nw_proto = ext[0];
            return;
          }
        }
      } else if (next == kProtoAh) {
        ext_len = (ext[1] + 2u) * 4;  // in 4-byte units, minus 2
      } else {
        ext_len = (ext[1] + 1u) * 8;  // in 8-byte units, minus 1
      }
      if (ext_len > room(cur, end)) {
        key_.nw_proto = next;
        flag(kParseBadExtHdr);
        return;
      }
      next = ext[0];
      cur += ext_len;
    }
    key_.nw_proto = next;
    parse_l4(next, cur, end, /*is_ipv6=*/true);
  }

  // Parses the L4 header at [ofs, end), end being where the IP datagram ends
  // inside the frame.
  void parse_l4(uint8_t proto, uint32_t ofs, uint32_t end, bool is_ipv6) {
    const uint32_t avail = room(ofs, end);
    const uint8_t* l4 = data_ + ofs;
    uint32_t header_len;
    switch (proto) {
      case kProtoTcp: {
        if (avail < kTcpMinHeaderLen) {
          flag(kParseTruncatedL4);
          return;
        }
        header_len = (l4[12] >> 4) * 4u;
        if (header_len < kTcpMinHeaderLen) {
          flag(kParseBadL4);
          return;
        }
        if (header_len > avail) {
          flag(kParseTruncatedL4);
          return;
        }
        std::memcpy(&key_.tp_src, l4, 2);
        std::memcpy(&key_.tp_dst, l4 + 2, 2);
        key_.tcp_flags = htons(load_be16(l4 + 12) & kTcpFlagsMask);
        break;
      }
      case kProtoUdp: {
        header_len = kUdpHeaderLen;
        if (avail < header_len) {
          flag(kParseTruncatedL4);
          return;
        }
        // A lying UDP length is flagged; the ports are still good.
        const uint32_t udp_len = load_be16(l4 + 4);
        if (udp_len < kUdpHeaderLen || udp_len > avail) flag(kParseBadL4);
        std::memcpy(&key_.tp_src, l4, 2);
        std::memcpy(&key_.tp_dst, l4 + 2, 2);
        break;
      }
      case kProtoIcmp:
      case kProtoIcmpv6: {
        if ((proto == kProtoIcmpv6) != is_ipv6) return;  // ICMP over IPv6 etc.: opaque
        header_len = kIcmpHeaderLen;
        if (avail < header_len) {
          flag(kParseTruncatedL4);
          return;
        }
        key_.tp_src = htons(l4[0]);  // type
        key_.tp_dst = htons(l4[1]);  // code
        break;
      }
      default:
        return;
    }
    pkt_.l4_ofs = static_cast<uint16_t>(ofs);
    pkt_.payload_ofs = static_cast<uint16_t>(ofs + header_len);
  }

  Packet& pkt_;
  FlowKey& key_;
  const uint8_t* const data_;
  const uint32_t len_;
};

}  // namespace

uint16_t parse_packet(Packet& pkt) {
  FlowKey& key = pkt.key;
  const uint32_t in_port = key.in_port;
  const uint32_t sf_metadata = key.sf_metadata;
  const uint8_t sf_stage = key.sf_stage;
  const uint8_t sf_action = key.sf_action;
  key = zero_key();
  key.in_port = in_port;
  key.sf_metadata = sf_metadata;
  key.sf_stage = sf_stage;
  key.sf_action = sf_action;

  pkt.l2_ofs = 0;
  pkt.l3_ofs = kNoOffset;
  pkt.l4_ofs = kNoOffset;
  pkt.payload_ofs = kNoOffset;
  pkt.parse_flags = kParseOk;

  FrameParser(pkt).run();
  return pkt.parse_flags;
}

}  // namespace softflow

// Builds valid Ethernet frames with correct lengths and checksums, for tests,
// fuzz seeds, benchmarks and traffic generators:
//
//   std::vector<uint8_t> frame = PacketBuilder()
//       .eth(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
//       .vlan(10)
//       .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"), 64)
//       .tcp(1234, 80, kTcpSyn, 1000, 0, 65535)
//       .payload("hello")
//       .build();
//
// Conventions:
//  - MAC addresses are MacAddr (wire order); eth() takes the *source* first.
//  - IPv4 addresses are uint32_t in host order (0x0a000001 is 10.0.0.1).
//  - IPv6 addresses are Ipv6Addr (16 bytes, wire order).
//  - Ports, sequence numbers, ids, ... are host order.
//  - Layers are emitted in the canonical order Ethernet, VLAN tags (in call
//    order, outermost first), ARP | IPv4 | IPv6 + extension headers (in call
//    order), TCP | UDP | ICMP | ICMPv6, payload, padding.  Calling a setter of
//    one layer again replaces that layer.
//  - Lengths (IPv4 total length, IPv6 payload length, UDP length) and all
//    checksums are computed by build(); to craft a malformed frame, build a
//    valid one and patch its bytes.
//
// Not for the packet path: the builder allocates, and the address helpers
// throw std::invalid_argument on malformed text.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace softflow {

using MacAddr = std::array<uint8_t, 6>;
using Ipv6Addr = std::array<uint8_t, 16>;

// "02:00:00:00:00:01" -> MacAddr.
MacAddr mac(std::string_view text);
// "10.0.0.1" -> 0x0a000001 (host order).
uint32_t ipv4_addr(std::string_view text);
// "2001:db8::1" -> Ipv6Addr.
Ipv6Addr ipv6_addr(std::string_view text);

// TCP flag bits (host order, as in the low 12 bits of bytes 12-13).
enum TcpFlags : uint16_t {
  kTcpFin = 0x001,
  kTcpSyn = 0x002,
  kTcpRst = 0x004,
  kTcpPsh = 0x008,
  kTcpAck = 0x010,
  kTcpUrg = 0x020,
  kTcpEce = 0x040,
  kTcpCwr = 0x080,
  kTcpNs = 0x100,
};

class PacketBuilder {
 public:
  // Ethernet header.  Without eth() the frame still gets one, with
  // 02:00:00:00:00:01 -> 02:00:00:00:00:02.
  PacketBuilder& eth(const MacAddr& src, const MacAddr& dst);
  // Overrides the innermost ethertype (default: from the L3 layer, or 0x88b5,
  // the IEEE local experimental type, when there is none).
  PacketBuilder& ether_type(uint16_t type);
  // Adds a VLAN tag; tpid 0x8100 (802.1Q) or 0x88a8 (802.1ad).
  PacketBuilder& vlan(uint16_t vid, uint8_t pcp = 0, uint16_t tpid = 0x8100);

  // ARP for Ethernet/IPv4 (op: 1 request, 2 reply).
  PacketBuilder& arp(uint16_t op, const MacAddr& sha, uint32_t spa, const MacAddr& tha,
                     uint32_t tpa);

  PacketBuilder& ipv4(uint32_t src, uint32_t dst, uint8_t ttl = 64, uint8_t tos = 0);
  // Raw option bytes (padded with End-of-Options to a multiple of 4; at most 40).
  PacketBuilder& ipv4_options(std::span<const uint8_t> options);
  // Fragment offset in 8-byte units, and the More Fragments flag.
  PacketBuilder& ipv4_fragment(uint16_t offset_units, bool more_fragments);
  PacketBuilder& ipv4_id(uint16_t id);
  PacketBuilder& ipv4_dont_fragment(bool df = true);

  PacketBuilder& ipv6(const Ipv6Addr& src, const Ipv6Addr& dst, uint8_t hop_limit = 64,
                      uint8_t traffic_class = 0, uint32_t flow_label = 0);
  // IPv6 extension headers, chained in call order.  'length' is the header's
  // total size in bytes, a multiple of 8 (>= 8); options are PadN filler.
  PacketBuilder& ipv6_hop_by_hop(size_t length = 8);
  PacketBuilder& ipv6_dest_options(size_t length = 8);
  // A routing header (type 4, segment routing, segments left 0: no
  // rerouting, so the pseudo-header destination stays the IPv6 destination).
  PacketBuilder& ipv6_routing(size_t length = 8);
  // Fragment offset in 8-byte units, the M flag and the identification.
  PacketBuilder& ipv6_fragment(uint16_t offset_units, bool more_fragments,
                               uint32_t identification = 1);
  // Authentication header; 'length' in bytes, a multiple of 8 (>= 16).
  PacketBuilder& ipv6_auth(size_t length = 16);

  // The IPv4 protocol / last IPv6 next header.  Defaults to the L4 layer's
  // protocol, or 253 (experimental) / 59 (no next header) without one.
  PacketBuilder& ip_proto(uint8_t proto);

  // flags: TcpFlags bits.  Options are padded with End-of-Options to a
  // multiple of 4 (at most 40 bytes).
  PacketBuilder& tcp(uint16_t src_port, uint16_t dst_port, uint16_t flags = kTcpAck,
                     uint32_t seq = 0, uint32_t ack = 0, uint16_t window = 65535);
  PacketBuilder& tcp_options(std::span<const uint8_t> options);
  PacketBuilder& udp(uint16_t src_port, uint16_t dst_port);
  // Leaves the UDP checksum 0 ("none").
  PacketBuilder& udp_no_checksum();
  // rest: the 4 bytes after the checksum (echo id/seq, MTU, pointer, ...).
  PacketBuilder& icmp(uint8_t type, uint8_t code, uint32_t rest = 0);
  PacketBuilder& icmpv6(uint8_t type, uint8_t code, uint32_t rest = 0);

  PacketBuilder& payload(std::span<const uint8_t> bytes);
  PacketBuilder& payload(std::string_view text);
  // Zero padding after the IP datagram up to 'frame_len' bytes (Ethernet
  // minimum 60); not counted in IP/UDP lengths, as on the wire.
  PacketBuilder& pad_to(size_t frame_len);

  std::vector<uint8_t> build() const;

 private:
  enum class L3 : uint8_t { kNone, kArp, kIpv4, kIpv6 };
  enum class L4 : uint8_t { kNone, kTcp, kUdp, kIcmp, kIcmpv6 };
  struct Ipv6Ext {
    uint8_t type;
    std::vector<uint8_t> bytes;  // next-header byte filled in by build()
  };

  void append_l3(std::vector<uint8_t>& out, size_t l4_len, uint8_t proto) const;
  void append_l4(std::vector<uint8_t>& out) const;
  void fill_l4_checksum(std::vector<uint8_t>& frame, size_t l3_ofs, size_t l4_ofs,
                        uint8_t proto) const;
  uint8_t l4_proto() const;

  MacAddr eth_src_ = {0x02, 0, 0, 0, 0, 0x01};
  MacAddr eth_dst_ = {0x02, 0, 0, 0, 0, 0x02};
  std::optional<uint16_t> ether_type_;
  std::vector<uint32_t> vlan_tags_;  // tpid << 16 | tci

  L3 l3_ = L3::kNone;
  std::vector<uint8_t> arp_;  // the whole 28-byte ARP body
  uint32_t ip4_src_ = 0, ip4_dst_ = 0;
  uint8_t ttl_ = 64, tos_ = 0;
  uint16_t ip4_id_ = 0;
  uint16_t frag_offset_units_ = 0;
  bool more_fragments_ = false, dont_fragment_ = false;
  std::vector<uint8_t> ip4_options_;
  Ipv6Addr ip6_src_{}, ip6_dst_{};
  uint32_t flow_label_ = 0;
  std::vector<Ipv6Ext> ipv6_ext_;
  std::optional<uint8_t> ip_proto_;

  L4 l4_ = L4::kNone;
  uint16_t src_port_ = 0, dst_port_ = 0;
  uint16_t tcp_flags_ = 0, window_ = 0;
  uint32_t seq_ = 0, ack_ = 0;
  std::vector<uint8_t> tcp_options_;
  bool udp_checksum_ = true;
  uint8_t icmp_type_ = 0, icmp_code_ = 0;
  uint32_t icmp_rest_ = 0;

  std::vector<uint8_t> payload_;
  size_t pad_to_ = 0;
};

}  // namespace softflow

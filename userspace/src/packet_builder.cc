#include "softflow/packet_builder.h"
#include "softflow/protocols.h"

#include <arpa/inet.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace softflow {
namespace {

constexpr uint16_t kEthTypeExperimental = 0x88b5;

constexpr uint8_t kProtoExperimental = 253;

constexpr size_t kMaxOptionBytes = 40;  // IPv4 and TCP alike

void put8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v));
}
void put_bytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}
void store16(std::vector<uint8_t>& frame, size_t ofs, uint16_t v) {
  frame[ofs] = static_cast<uint8_t>(v >> 8);
  frame[ofs + 1] = static_cast<uint8_t>(v);
}

// The builder's own Internet checksum, deliberately independent of
// packet_ops.cc so that tests can check one against the other.
uint32_t add_words(uint32_t sum, const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}
uint16_t finish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::vector<uint8_t> padded_options(std::span<const uint8_t> options, const char* what) {
  if (options.size() > kMaxOptionBytes)
    throw std::invalid_argument(std::string(what) + " options longer than 40 bytes");
  std::vector<uint8_t> out(options.begin(), options.end());
  out.resize((out.size() + 3) / 4 * 4, 0);  // End-of-Options is 0 for both
  return out;
}

// An options-type extension header (hop-by-hop, destination options) of
// 'length' bytes: next header (filled later), length, PadN filler.
std::vector<uint8_t> options_ext_header(size_t length) {
  if (length < 8 || length % 8 != 0 || length > 2048)
    throw std::invalid_argument("IPv6 extension header length must be a multiple of 8 in 8..2048");
  std::vector<uint8_t> h(length, 0);
  h[1] = static_cast<uint8_t>(length / 8 - 1);
  h[2] = 1;                                 // PadN
  h[3] = static_cast<uint8_t>(length - 4);  // its data length
  return h;
}

}  // namespace

MacAddr mac(std::string_view text) {
  MacAddr m{};
  unsigned b[6];
  char tail;
  const std::string s(text);
  if (std::sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
                  &tail) != 6)
    throw std::invalid_argument("bad MAC address: " + s);
  for (size_t i = 0; i < 6; ++i) m[i] = static_cast<uint8_t>(b[i]);
  return m;
}

uint32_t ipv4_addr(std::string_view text) {
  const std::string s(text);
  in_addr addr;
  if (inet_pton(AF_INET, s.c_str(), &addr) != 1)
    throw std::invalid_argument("bad IPv4 address: " + s);
  return ntohl(addr.s_addr);
}

Ipv6Addr ipv6_addr(std::string_view text) {
  const std::string s(text);
  Ipv6Addr a{};
  if (inet_pton(AF_INET6, s.c_str(), a.data()) != 1)
    throw std::invalid_argument("bad IPv6 address: " + s);
  return a;
}

PacketBuilder& PacketBuilder::eth(const MacAddr& src, const MacAddr& dst) {
  eth_src_ = src;
  eth_dst_ = dst;
  return *this;
}

PacketBuilder& PacketBuilder::ether_type(uint16_t type) {
  ether_type_ = type;
  return *this;
}

PacketBuilder& PacketBuilder::vlan(uint16_t vid, uint8_t pcp, uint16_t tpid) {
  const uint16_t tci = static_cast<uint16_t>((pcp & 0x7) << 13 | (vid & 0x0fff));
  vlan_tags_.push_back(static_cast<uint32_t>(tpid) << 16 | tci);
  return *this;
}

PacketBuilder& PacketBuilder::arp(uint16_t op, const MacAddr& sha, uint32_t spa, const MacAddr& tha,
                                  uint32_t tpa) {
  l3_ = L3::kArp;
  arp_.clear();
  put16(arp_, 1);             // hardware type: Ethernet
  put16(arp_, kEthTypeIpv4);  // protocol type
  put8(arp_, 6);
  put8(arp_, 4);
  put16(arp_, op);
  put_bytes(arp_, sha);
  put32(arp_, spa);
  put_bytes(arp_, tha);
  put32(arp_, tpa);
  return *this;
}

PacketBuilder& PacketBuilder::ipv4(uint32_t src, uint32_t dst, uint8_t ttl, uint8_t tos) {
  l3_ = L3::kIpv4;
  ip4_src_ = src;
  ip4_dst_ = dst;
  ttl_ = ttl;
  tos_ = tos;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_options(std::span<const uint8_t> options) {
  ip4_options_ = padded_options(options, "IPv4");
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_fragment(uint16_t offset_units, bool more_fragments) {
  frag_offset_units_ = offset_units & 0x1fff;
  more_fragments_ = more_fragments;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_id(uint16_t id) {
  ip4_id_ = id;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_dont_fragment(bool df) {
  dont_fragment_ = df;
  return *this;
}

PacketBuilder& PacketBuilder::ipv6(const Ipv6Addr& src, const Ipv6Addr& dst, uint8_t hop_limit,
                                   uint8_t traffic_class, uint32_t flow_label) {
  l3_ = L3::kIpv6;
  ip6_src_ = src;
  ip6_dst_ = dst;
  ttl_ = hop_limit;
  tos_ = traffic_class;
  flow_label_ = flow_label & 0xfffff;
  return *this;
}

PacketBuilder& PacketBuilder::ipv6_hop_by_hop(size_t length) {
  ipv6_ext_.push_back({kProtoHopByHop, options_ext_header(length)});
  return *this;
}

PacketBuilder& PacketBuilder::ipv6_dest_options(size_t length) {
  ipv6_ext_.push_back({kProtoDestOpts, options_ext_header(length)});
  return *this;
}

PacketBuilder& PacketBuilder::ipv6_routing(size_t length) {
  std::vector<uint8_t> h = options_ext_header(length);
  h[2] = 4;  // routing type: segment routing
  h[3] = 0;  // segments left
  ipv6_ext_.push_back({kProtoRouting, std::move(h)});
  return *this;
}

PacketBuilder& PacketBuilder::ipv6_fragment(uint16_t offset_units, bool more_fragments,
                                            uint32_t identification) {
  std::vector<uint8_t> h;
  put8(h, 0);  // next header, filled by build()
  put8(h, 0);
  put16(h, static_cast<uint16_t>((offset_units & 0x1fff) << 3 | (more_fragments ? 1 : 0)));
  put32(h, identification);
  ipv6_ext_.push_back({kProtoFragment, std::move(h)});
  return *this;
}

PacketBuilder& PacketBuilder::ipv6_auth(size_t length) {
  if (length < 16 || length % 8 != 0 || length > 1024)
    throw std::invalid_argument("IPv6 AH length must be a multiple of 8 in 16..1024");
  std::vector<uint8_t> h(length, 0);
  h[1] = static_cast<uint8_t>(length / 4 - 2);
  h[7] = 1;  // SPI 1 (0 is reserved)
  ipv6_ext_.push_back({kProtoAh, std::move(h)});
  return *this;
}

PacketBuilder& PacketBuilder::ip_proto(uint8_t proto) {
  ip_proto_ = proto;
  return *this;
}

PacketBuilder& PacketBuilder::tcp(uint16_t src_port, uint16_t dst_port, uint16_t flags,
                                  uint32_t seq, uint32_t ack, uint16_t window) {
  l4_ = L4::kTcp;
  src_port_ = src_port;
  dst_port_ = dst_port;
  tcp_flags_ = flags & 0x0fff;
  seq_ = seq;
  ack_ = ack;
  window_ = window;
  return *this;
}

PacketBuilder& PacketBuilder::tcp_options(std::span<const uint8_t> options) {
  tcp_options_ = padded_options(options, "TCP");
  return *this;
}

PacketBuilder& PacketBuilder::udp(uint16_t src_port, uint16_t dst_port) {
  l4_ = L4::kUdp;
  src_port_ = src_port;
  dst_port_ = dst_port;
  return *this;
}

PacketBuilder& PacketBuilder::udp_no_checksum() {
  udp_checksum_ = false;
  return *this;
}

PacketBuilder& PacketBuilder::icmp(uint8_t type, uint8_t code, uint32_t rest) {
  l4_ = L4::kIcmp;
  icmp_type_ = type;
  icmp_code_ = code;
  icmp_rest_ = rest;
  return *this;
}

PacketBuilder& PacketBuilder::icmpv6(uint8_t type, uint8_t code, uint32_t rest) {
  l4_ = L4::kIcmpv6;
  icmp_type_ = type;
  icmp_code_ = code;
  icmp_rest_ = rest;
  return *this;
}

PacketBuilder& PacketBuilder::payload(std::span<const uint8_t> bytes) {
  payload_.assign(bytes.begin(), bytes.end());
  return *this;
}

PacketBuilder& PacketBuilder::payload(std::string_view text) {
  payload_.assign(text.begin(), text.end());
  return *this;
}

PacketBuilder& PacketBuilder::pad_to(size_t frame_len) {
  pad_to_ = frame_len;
  return *this;
}

uint8_t PacketBuilder::l4_proto() const {
  switch (l4_) {
    case L4::kTcp:
      return kProtoTcp;
    case L4::kUdp:
      return kProtoUdp;
    case L4::kIcmp:
      return kProtoIcmp;
    case L4::kIcmpv6:
      return kProtoIcmpv6;
    case L4::kNone:
      break;
  }
  return l3_ == L3::kIpv6 ? kProtoNoNextHeader : kProtoExperimental;
}

void PacketBuilder::append_l3(std::vector<uint8_t>& out, size_t l4_len, uint8_t proto) const {
  if (l3_ == L3::kArp) {
    put_bytes(out, arp_);
  } else if (l3_ == L3::kIpv4) {
    const size_t header_len = 20 + ip4_options_.size();
    const size_t start = out.size();
    put8(out, static_cast<uint8_t>(0x40 | header_len / 4));
    put8(out, tos_);
    put16(out, static_cast<uint16_t>(header_len + l4_len));
    put16(out, ip4_id_);
    put16(out, static_cast<uint16_t>((dont_fragment_ ? 0x4000 : 0) |
                                     (more_fragments_ ? 0x2000 : 0) | frag_offset_units_));
    put8(out, ttl_);
    put8(out, proto);
    put16(out, 0);  // checksum, below
    put32(out, ip4_src_);
    put32(out, ip4_dst_);
    put_bytes(out, ip4_options_);
    store16(out, start + 10, finish(add_words(0, out.data() + start, header_len)));
  } else if (l3_ == L3::kIpv6) {
    size_t ext_len = 0;
    for (const Ipv6Ext& ext : ipv6_ext_) ext_len += ext.bytes.size();
    put32(out, 6u << 28 | static_cast<uint32_t>(tos_) << 20 | flow_label_);
    put16(out, static_cast<uint16_t>(ext_len + l4_len));
    put8(out, ipv6_ext_.empty() ? proto : ipv6_ext_.front().type);
    put8(out, ttl_);
    put_bytes(out, ip6_src_);
    put_bytes(out, ip6_dst_);
    for (size_t i = 0; i < ipv6_ext_.size(); ++i) {
      const size_t start = out.size();
      put_bytes(out, ipv6_ext_[i].bytes);
      out[start] = i + 1 < ipv6_ext_.size() ? ipv6_ext_[i + 1].type : proto;
    }
  }
}

void PacketBuilder::append_l4(std::vector<uint8_t>& out) const {
  switch (l4_) {
    case L4::kTcp:
      put16(out, src_port_);
      put16(out, dst_port_);
      put32(out, seq_);
      put32(out, ack_);
      put16(out, static_cast<uint16_t>((5 + tcp_options_.size() / 4) << 12 | tcp_flags_));
      put16(out, window_);
      put16(out, 0);  // checksum
      put16(out, 0);  // urgent pointer
      put_bytes(out, tcp_options_);
      break;
    case L4::kUdp:
      put16(out, src_port_);
      put16(out, dst_port_);
      put16(out, static_cast<uint16_t>(8 + payload_.size()));
      put16(out, 0);  // checksum
      break;
    case L4::kIcmp:
    case L4::kIcmpv6:
      put8(out, icmp_type_);
      put8(out, icmp_code_);
      put16(out, 0);  // checksum
      put32(out, icmp_rest_);
      break;
    case L4::kNone:
      break;
  }
  put_bytes(out, payload_);
}

void PacketBuilder::fill_l4_checksum(std::vector<uint8_t>& frame, size_t l3_ofs, size_t l4_ofs,
                                     uint8_t proto) const {
  const size_t l4_len = frame.size() - l4_ofs;
  size_t checksum_ofs;
  switch (l4_) {
    case L4::kTcp:
      checksum_ofs = 16;
      break;
    case L4::kUdp:
      if (!udp_checksum_) return;
      checksum_ofs = 6;
      break;
    case L4::kIcmp:
    case L4::kIcmpv6:
      checksum_ofs = 2;
      break;
    default:
      return;
  }
  uint32_t sum = 0;
  if (l4_ != L4::kIcmp) {  // everything but ICMPv4 covers a pseudo-header
    if (l3_ == L3::kIpv4) {
      sum = add_words(sum, frame.data() + l3_ofs + 12, 8);
    } else if (l3_ == L3::kIpv6) {
      sum = add_words(sum, frame.data() + l3_ofs + 8, 32);
      sum += static_cast<uint32_t>(l4_len >> 16);
    }
    sum += proto + static_cast<uint32_t>(l4_len & 0xffff);
  }
  uint16_t checksum = finish(add_words(sum, frame.data() + l4_ofs, l4_len));
  if (l4_ == L4::kUdp && checksum == 0) checksum = 0xffff;
  store16(frame, l4_ofs + checksum_ofs, checksum);
}

std::vector<uint8_t> PacketBuilder::build() const {
  std::vector<uint8_t> frame;
  frame.reserve(128 + payload_.size() + pad_to_);
  put_bytes(frame, eth_dst_);
  put_bytes(frame, eth_src_);
  for (uint32_t tag : vlan_tags_) put32(frame, tag);
  uint16_t type = kEthTypeExperimental;
  if (ether_type_) {
    type = *ether_type_;
  } else if (l3_ == L3::kArp) {
    type = kEthTypeArp;
  } else if (l3_ == L3::kIpv4) {
    type = kEthTypeIpv4;
  } else if (l3_ == L3::kIpv6) {
    type = kEthTypeIpv6;
  }
  put16(frame, type);

  const size_t l3_ofs = frame.size();
  if (l3_ == L3::kNone || l3_ == L3::kArp) {
    append_l3(frame, 0, 0);
    put_bytes(frame, payload_);
  } else {
    std::vector<uint8_t> l4;
    append_l4(l4);
    const uint8_t layer_proto = l4_proto();
    append_l3(frame, l4.size(), ip_proto_.value_or(layer_proto));
    const size_t l4_ofs = frame.size();
    put_bytes(frame, l4);
    fill_l4_checksum(frame, l3_ofs, l4_ofs, layer_proto);
  }
  if (frame.size() < pad_to_) frame.resize(pad_to_, 0);
  return frame;
}

}  // namespace softflow

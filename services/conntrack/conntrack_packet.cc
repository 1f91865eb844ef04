// What a packet is to conntrack: its kind, the key of its connection, its
// direction and, for TCP, the segment fields.  Built from the parser's key
// and offsets; header bytes are read only where the parser vouched for them
// (a set l4_ofs means the whole L4 header is in the frame) or after checking
// lengths (TCP options, the packet an ICMP error quotes).
#include <arpa/inet.h>

#include "conntrack.h"
#include "softflow/packet_builder.h"  // TcpFlags
#include "softflow/protocols.h"

namespace softflow::conntrack {
namespace {

constexpr uint8_t kIcmpEchoReply = 0;
constexpr uint8_t kIcmpEchoRequest = 8;
constexpr uint8_t kIcmpv6EchoRequest = 128;
constexpr uint8_t kIcmpv6EchoReply = 129;
constexpr uint32_t kIcmpHeaderLen = 8;
constexpr uint32_t kTcpMinHeaderLen = 20;
constexpr uint8_t kTcpOptEnd = 0;
constexpr uint8_t kTcpOptNop = 1;
constexpr uint8_t kTcpOptWscale = 3;
constexpr uint8_t kMaxWscale = 14;  // RFC 7323: larger values are treated as 14
constexpr uint32_t kIpv4MinHeaderLen = 20;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr int kMaxQuotedExtHeaders = 8;
// An ICMP error must quote at least this much of the original L4 header
// (RFC 792: the IP header plus the first 64 bits of data).
constexpr uint32_t kQuotedL4Min = 8;

inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

bool is_icmp_error(uint8_t family, uint8_t type) {
  if (family == 4) return type == 3 || type == 4 || type == 11 || type == 12;
  return type >= 1 && type <= 4;
}
bool is_echo_request(uint8_t family, uint8_t type) {
  return type == (family == 4 ? kIcmpEchoRequest : kIcmpv6EchoRequest);
}
bool is_echo_reply(uint8_t family, uint8_t type) {
  return type == (family == 4 ? kIcmpEchoReply : kIcmpv6EchoReply);
}
uint8_t icmp_proto(uint8_t family) { return family == 4 ? kProtoIcmp : kProtoIcmpv6; }

// Fills 'key' for a flow src -> dst with the endpoints in canonical order.
// Returns <0 / 0 / >0 as the source endpoint is lower than, equal to or
// higher than the destination endpoint.
int make_key(ConnKey& key, ConnKind kind, uint8_t family, uint8_t proto, const uint8_t* src,
             const uint8_t* dst, uint16_t sport, uint16_t dport) {
  key = ConnKey{};
  key.kind = kind;
  const size_t addr_len = family == 4 ? 4 : 16;
  std::array<uint8_t, 16> a{}, b{};
  std::memcpy(a.data(), src, addr_len);
  std::memcpy(b.data(), dst, addr_len);
  int order = std::memcmp(a.data(), b.data(), a.size());
  if (order == 0) order = sport < dport ? -1 : sport > dport ? 1 : 0;
  const bool src_low = order <= 0;
  key.addr[src_low ? 0 : 1] = a;
  key.addr[src_low ? 1 : 0] = b;
  key.port[src_low ? 0 : 1] = sport;
  key.port[src_low ? 1 : 0] = dport;
  key.proto = proto;
  key.family = family;
  return order;
}

// ICMP echo: both endpoints carry the id; the requester is part of the key,
// so pings with the same id from either side are different connections.
void make_echo_key(ConnKey& key, uint8_t family, const uint8_t* src, const uint8_t* dst,
                   uint16_t id, bool request) {
  const int order =
      make_key(key, ConnKind::kIcmpEcho, family, icmp_proto(family), src, dst, id, id);
  // The requester is the source of a request and the destination of a reply.
  const bool src_low = order <= 0;
  key.icmp_requester = order == 0 ? 0 : static_cast<uint8_t>(request ? !src_low : src_low);
}

// The window scale option of a SYN, -1 if absent.  The parser guarantees
// the whole TCP header (with options) lies in the frame.
int16_t tcp_wscale_option(const uint8_t* tcp, uint32_t header_len) {
  uint32_t i = kTcpMinHeaderLen;
  while (i < header_len) {
    const uint8_t kind = tcp[i];
    if (kind == kTcpOptEnd) break;
    if (kind == kTcpOptNop) {
      ++i;
      continue;
    }
    if (i + 1 >= header_len) break;
    const uint8_t len = tcp[i + 1];
    if (len < 2 || i + len > header_len) break;  // malformed: stop reading
    if (kind == kTcpOptWscale && len == 3) return std::min(tcp[i + 2], kMaxWscale);
    i += len;
  }
  return -1;
}

// Where the IP datagram ends in the frame (Ethernet padding excluded).  The
// parser has checked the length fields of an unflagged packet.
uint32_t ip_end(const Packet& pkt, uint8_t family) {
  const uint8_t* ip = pkt.data + pkt.l3_ofs;
  const uint32_t end =
      family == 4 ? pkt.l3_ofs + be16(ip + 2) : pkt.l3_ofs + kIpv6HeaderLen + be16(ip + 4);
  return std::min(end, pkt.len);
}

// The key of the packet an ICMP error quotes, from 'len' bytes at 'q'.
// The quote may be cut short or lie; every read is checked against 'len'.
// 'outer_dst' must be the quoted packet's source: errors go back to the
// sender of the packet that caused them.
bool quoted_key(const uint8_t* q, uint32_t len, uint8_t family, const uint8_t* outer_dst,
                ConnKey& key) {
  uint8_t proto;
  uint32_t l4;
  const uint8_t *src, *dst;
  if (family == 4) {
    if (len < kIpv4MinHeaderLen || (q[0] >> 4) != 4) return false;
    l4 = (q[0] & 0x0f) * 4u;
    if (l4 < kIpv4MinHeaderLen) return false;
    if (be16(q + 6) & 0x1fff) return false;  // a later fragment: no L4 header quoted
    proto = q[9];
    src = q + 12;
    dst = q + 16;
    if (std::memcmp(src, outer_dst, 4) != 0) return false;
  } else {
    if (len < kIpv6HeaderLen || (q[0] >> 4) != 6) return false;
    src = q + 8;
    dst = q + 24;
    if (std::memcmp(src, outer_dst, 16) != 0) return false;
    proto = q[6];
    l4 = kIpv6HeaderLen;
    for (int n = 0;; ++n) {
      if (proto != kProtoHopByHop && proto != kProtoRouting && proto != kProtoDestOpts &&
          proto != kProtoFragment && proto != kProtoAh)
        break;
      if (n == kMaxQuotedExtHeaders || len < l4 + 8) return false;
      const uint8_t* ext = q + l4;
      uint32_t ext_len;
      if (proto == kProtoFragment) {
        if (be16(ext + 2) & 0xfff8) return false;  // a later fragment
        ext_len = 8;
      } else if (proto == kProtoAh) {
        ext_len = (ext[1] + 2u) * 4;
      } else {
        ext_len = (ext[1] + 1u) * 8;
      }
      proto = ext[0];
      l4 += ext_len;
    }
  }
  if (len < l4 || len - l4 < kQuotedL4Min) return false;
  const uint8_t* l4p = q + l4;
  switch (proto) {
    case kProtoTcp:
    case kProtoUdp:
      make_key(key, proto == kProtoTcp ? ConnKind::kTcp : ConnKind::kUdp, family, proto, src, dst,
               be16(l4p), be16(l4p + 2));
      return true;
    case kProtoIcmp:
    case kProtoIcmpv6: {
      if (proto != icmp_proto(family)) break;
      // Only echo exchanges are connections; errors about errors are not sent.
      const bool request = is_echo_request(family, l4p[0]);
      if (!request && !is_echo_reply(family, l4p[0])) return false;
      make_echo_key(key, family, src, dst, be16(l4p + 4), request);
      return true;
    }
    default:
      break;
  }
  make_key(key, ConnKind::kOther, family, proto, src, dst, 0, 0);
  return true;
}

}  // namespace

uint32_t ConnKey::hash() const {
  uint64_t words[sizeof(ConnKey) / 8];
  std::memcpy(words, this, sizeof words);
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  for (uint64_t w : words) h = sf_hash_mix(h ^ w) + 1;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

std::string address_text(const ConnKey& key, int side) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(key.family == 4 ? AF_INET : AF_INET6, key.addr[side].data(), buf, sizeof buf);
  return buf;
}

void classify_packet(const Packet& pkt, PacketInfo& out) {
  using Kind = PacketInfo::Kind;
  out = PacketInfo{};
  const FlowKey& fk = pkt.key;
  const uint16_t dl_type = ntohs(fk.dl_type);
  if (pkt.parse_flags != kParseOk || !pkt.has_l3() ||
      (dl_type != kEthTypeIpv4 && dl_type != kEthTypeIpv6)) {
    out.kind = Kind::kInvalid;
    return;
  }
  if (fk.nw_frag & SF_FRAG_LATER) {
    out.kind = Kind::kFragment;
    return;
  }
  const uint8_t family = dl_type == kEthTypeIpv4 ? 4 : 6;
  const uint8_t proto = fk.nw_proto;
  const auto* src = reinterpret_cast<const uint8_t*>(fk.nw_src);
  const auto* dst = reinterpret_cast<const uint8_t*>(fk.nw_dst);
  const uint8_t* l4 = pkt.has_l4() ? pkt.data + pkt.l4_ofs : nullptr;

  if (l4 != nullptr && proto == kProtoTcp) {
    out.kind = Kind::kTcp;
    out.from_low =
        make_key(out.key, ConnKind::kTcp, family, proto, src, dst, be16(l4), be16(l4 + 2)) <= 0;
    TcpSegment& seg = out.tcp;
    seg.seq = be32(l4 + 4);
    seg.ack = be32(l4 + 8);
    seg.flags = ntohs(fk.tcp_flags);
    seg.window = be16(l4 + 14);
    const uint32_t end = ip_end(pkt, family);
    seg.length = end > pkt.payload_ofs ? end - pkt.payload_ofs : 0;
    if (seg.flags & kTcpSyn) seg.wscale = tcp_wscale_option(l4, (l4[12] >> 4) * 4u);
  } else if (l4 != nullptr && proto == kProtoUdp) {
    out.kind = Kind::kUdp;
    out.from_low =
        make_key(out.key, ConnKind::kUdp, family, proto, src, dst, be16(l4), be16(l4 + 2)) <= 0;
  } else if (l4 != nullptr && proto == icmp_proto(family)) {
    const uint8_t type = l4[0];
    if (is_echo_request(family, type) || is_echo_reply(family, type)) {
      out.kind = Kind::kIcmpEcho;
      const bool request = is_echo_request(family, type);
      out.icmp_dir = request ? Dir::kOrig : Dir::kReply;
      make_echo_key(out.key, family, src, dst, be16(l4 + 4), request);
    } else if (is_icmp_error(family, type)) {
      out.kind = Kind::kIcmpError;
      const uint32_t quote_ofs = pkt.l4_ofs + kIcmpHeaderLen;
      const uint32_t end = ip_end(pkt, family);
      out.quote_ok = quote_ofs < end &&
                     quoted_key(pkt.data + quote_ofs, end - quote_ofs, family, dst, out.key);
    } else {
      // Other ICMP messages (timestamps, neighbour discovery, ...) are
      // tracked like any other protocol: by the address pair.
      out.kind = Kind::kOther;
      out.from_low = make_key(out.key, ConnKind::kOther, family, proto, src, dst, 0, 0) <= 0;
    }
  } else {
    out.kind = Kind::kOther;
    out.from_low = make_key(out.key, ConnKind::kOther, family, proto, src, dst, 0, 0) <= 0;
  }
  out.hash = out.key.hash();
}

}  // namespace softflow::conntrack

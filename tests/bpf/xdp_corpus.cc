#include "xdp_corpus.h"

#include <initializer_list>
#include <utility>

#include "sf_abi.h"
#include "softflow/packet_builder.h"

namespace softflow::bpf_test {
namespace {

const MacAddr kMacA = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0a};
const MacAddr kMacB = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0b};

// Frame offsets of the fields the malformed cases patch (untagged frames).
constexpr size_t kIpv4VerIhl = 14;
constexpr size_t kIpv4TotalLen = 16;
constexpr size_t kIpv4L4 = 34;
constexpr size_t kIpv6Ver = 14;
constexpr size_t kIpv6PayloadLen = 18;
constexpr size_t kIpv6Ext = 54;  // first extension header, or the L4 header

constexpr uint16_t kTruncL2 = SF_PARSE_TRUNCATED_L2;
constexpr uint16_t kTruncL3 = SF_PARSE_TRUNCATED_L3;
constexpr uint16_t kBadL3 = SF_PARSE_BAD_L3;
constexpr uint16_t kTruncL4 = SF_PARSE_TRUNCATED_L4;
constexpr uint16_t kBadL4 = SF_PARSE_BAD_L4;
constexpr uint16_t kBadExt = SF_PARSE_BAD_EXT_HDR;
constexpr uint8_t kFragFirst = SF_FRAG_ANY;
constexpr uint8_t kFragLater = SF_FRAG_ANY | SF_FRAG_LATER;

PacketBuilder eth() { return PacketBuilder().eth(kMacA, kMacB); }
PacketBuilder ip4() { return eth().ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"), 64, 0x10); }
PacketBuilder ip6() {
  return eth().ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"), 64, 0xa5, 0x12345);
}

std::vector<uint8_t> patch(std::vector<uint8_t> frame,
                           std::initializer_list<std::pair<size_t, uint8_t>> bytes) {
  for (const auto& [ofs, value] : bytes) frame.at(ofs) = value;
  return frame;
}

std::vector<uint8_t> cut(std::vector<uint8_t> frame, size_t len) {
  frame.resize(len);
  return frame;
}

std::vector<uint8_t> arp_request() {
  return eth().arp(1, kMacA, ipv4_addr("10.0.0.1"), MacAddr{}, ipv4_addr("10.0.0.254")).build();
}

PacketBuilder ipv6_dest_opts_chain(int n) {
  PacketBuilder b = ip6();
  for (int i = 0; i < n; ++i) b.ipv6_dest_options();
  return b;
}

}  // namespace

std::vector<ParseCase> parse_corpus() {
  const std::vector<uint8_t> tcp_options = {2, 4, 0x05, 0xb4, 1, 1, 4, 2};  // MSS, NOP, NOP, SACK
  const std::vector<uint8_t> router_alert = {0x94, 0x04, 0x00, 0x00};
  const std::vector<uint8_t> nops_40(40, 1);
  const std::string payload = "0123456789abcdef";
  std::vector<uint8_t> nonzero_padding = ip4().udp(5, 6).pad_to(60).build();
  for (size_t i = 42; i < nonzero_padding.size(); ++i) nonzero_padding[i] = 0xee;

  // clang-format off
  return {
      // ---- Ethernet and odd ethertypes ----
      {"ethernet, LLDP ethertype", eth().ether_type(0x88cc).payload("lldp").build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"ethernet header alone (14 bytes)", eth().ether_type(0x88b5).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"ethertype 0x0000", eth().ether_type(0x0000).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"ethertype 0xffff", eth().ether_type(0xffff).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"802.3 length field 0x05dc", eth().ether_type(0x05dc).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"MPLS 0x8847", eth().ether_type(0x8847).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"ethertype 0x0801 (next to IPv4)", eth().ether_type(0x0801).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},

      // ---- VLAN ----
      {"vlan/ipv4/udp", ip4().vlan(10, 3).udp(1000, 2000).payload(payload).build(),
       XDP_PASS, 0, 18, 38, 46, 17},
      {"priority tag (vid 0)/ipv6/icmpv6", ip6().vlan(0, 5).icmpv6(128, 0, 1).build(),
       XDP_PASS, 0, 18, 58, 66, 58},
      {"qinq 88a8+8100/ipv4/udp", ip4().vlan(300, 0, 0x88a8).vlan(20).udp(68, 67).build(),
       XDP_PASS, 0, 22, 42, 50, 17},
      {"double 8100/ipv6/tcp", ip6().vlan(1).vlan(2).tcp(1, 2).build(),
       XDP_PASS, 0, 22, 62, 82, 6},
      {"three tags/ipv4: dl_type stays at the third TPID",
       ip4().vlan(1, 0, 0x88a8).vlan(2).vlan(3).udp(1, 2).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"single 88a8 tag/arp",
       eth().vlan(9, 0, 0x88a8).arp(2, kMacB, ipv4_addr("1.1.1.1"), kMacA, ipv4_addr("2.2.2.2")).build(),
       XDP_PASS, 0, 18, kNone, kNone, 2},
      {"vlan/LLDP", eth().vlan(4095, 7).ether_type(0x88cc).payload(payload).build(),
       XDP_PASS, 0, kNone, kNone, kNone},
      {"vlan TPID with its TCI cut", cut(ip4().vlan(5).udp(1, 2).build(), 16),
       XDP_PASS, kTruncL2, kNone, kNone, kNone},

      // ---- ARP ----
      {"arp request", arp_request(), XDP_PASS, 0, 14, kNone, kNone, 1},
      {"arp reply in a vlan, padded to 64",
       eth().vlan(7).arp(2, kMacB, ipv4_addr("10.0.0.254"), kMacA, ipv4_addr("10.0.0.1")).pad_to(64).build(),
       XDP_PASS, 0, 18, kNone, kNone, 2},
      {"arp opcode 0x0102 keeps the low byte", patch(arp_request(), {{20, 0x01}, {21, 0x02}}),
       XDP_PASS, 0, 14, kNone, kNone, 2},
      {"non-Ethernet arp (htype 6) is not parsed", patch(arp_request(), {{15, 6}}),
       XDP_PASS, 0, kNone, kNone, kNone, 0},
      {"arp for IPv6 (ptype 0x86dd) is not parsed", patch(arp_request(), {{16, 0x86}, {17, 0xdd}}),
       XDP_PASS, 0, kNone, kNone, kNone, 0},
      {"arp hlen 8 is not parsed", patch(arp_request(), {{18, 8}}),
       XDP_PASS, 0, kNone, kNone, kNone, 0},
      {"arp plen 16 is not parsed", patch(arp_request(), {{19, 16}}),
       XDP_PASS, 0, kNone, kNone, kNone, 0},
      {"arp body cut at 20 bytes", cut(arp_request(), 34),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},
      {"arp body cut at 6 bytes", cut(arp_request(), 20),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},

      // ---- IPv4 ----
      {"ipv4/tcp", ip4().tcp(1234, 80, kTcpSyn, 1000, 0, 8192).payload("x").build(),
       XDP_PASS, 0, 14, 34, 54, 6, 0},
      {"ipv4+options/tcp+options",
       ip4().ipv4_options(router_alert).tcp(1234, 80, kTcpSyn | kTcpEce).tcp_options(tcp_options).payload(payload).build(),
       XDP_PASS, 0, 14, 38, 66, 6},
      {"ipv4 with 40 bytes of options/udp", ip4().ipv4_options(nops_40).udp(7, 9).build(),
       XDP_PASS, 0, 14, 74, 82, 17},
      {"ipv4/tcp with 40 bytes of options filling the datagram", ip4().tcp(1, 2).tcp_options(nops_40).build(),
       XDP_PASS, 0, 14, 34, 94, 6},
      {"ipv4/tcp, all twelve flag bits", ip4().tcp(1, 2, 0xfff).build(),
       XDP_PASS, 0, 14, 34, 54, 6},
      {"ipv4/udp", ip4().udp(1000, 2000).payload(payload).build(),
       XDP_PASS, 0, 14, 34, 42, 17},
      {"short ipv4/udp with Ethernet padding to 60", ip4().udp(1000, 2000).pad_to(60).build(),
       XDP_PASS, 0, 14, 34, 42, 17},
      {"short ipv4/udp with non-zero padding", nonzero_padding,
       XDP_PASS, 0, 14, 34, 42, 17},
      {"ipv4/icmp echo with padding", ip4().icmp(8, 0, 0x12340001).pad_to(60).build(),
       XDP_PASS, 0, 14, 34, 42, 1},
      {"ipv4/icmp unreachable", ip4().icmp(3, 4, 1500).payload(payload).build(),
       XDP_PASS, 0, 14, 34, 42, 1},
      {"ipv4, unknown protocol 253", ip4().ip_proto(253).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 253},
      {"ipv4 carrying ICMPv6 (58) is opaque", ip4().ip_proto(58).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 58},
      {"ipv4 first fragment/tcp", ip4().ipv4_fragment(0, true).tcp(10, 20).payload("x").build(),
       XDP_PASS, 0, 14, 34, 54, 6, kFragFirst},
      {"ipv4 later fragment (MF)", ip4().ipv4_fragment(185, true).ip_proto(6).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 6, kFragLater},
      {"ipv4 last fragment", ip4().ipv4_fragment(185, false).ip_proto(17).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 17, kFragLater},
      {"ipv4 DF is not a fragment", ip4().ipv4_dont_fragment().udp(1, 2).build(),
       XDP_PASS, 0, 14, 34, 42, 17, 0},
      {"ipv4 total length larger than the frame",
       patch(ip4().udp(1, 2).payload("abc").build(), {{kIpv4TotalLen, 0x05}}),
       XDP_PASS, kBadL3, 14, 34, 42, 17},
      {"ipv4 total length below the header",
       patch(ip4().udp(1, 2).build(), {{kIpv4TotalLen, 0}, {kIpv4TotalLen + 1, 19}}),
       XDP_PASS, kBadL3, 14, kNone, kNone, 17},
      {"ipv4 total length 0 (as TSO sends)",
       patch(ip4().tcp(1, 2).build(), {{kIpv4TotalLen, 0}, {kIpv4TotalLen + 1, 0}}),
       XDP_PASS, kBadL3, 14, kNone, kNone, 6},
      {"ipv4 total length cuts the tcp header",
       patch(ip4().tcp(1, 2).payload(payload).build(), {{kIpv4TotalLen, 0}, {kIpv4TotalLen + 1, 32}}),
       XDP_PASS, kTruncL4, 14, kNone, kNone, 6},
      {"ipv4 IHL 4", patch(ip4().udp(1, 2).build(), {{kIpv4VerIhl, 0x44}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},
      {"ipv4 IHL 0", patch(ip4().udp(1, 2).build(), {{kIpv4VerIhl, 0x40}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},
      {"version 6 under ethertype 0x0800", patch(ip4().udp(1, 2).build(), {{kIpv4VerIhl, 0x65}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},
      {"version 0 under ethertype 0x0800", patch(ip4().udp(1, 2).build(), {{kIpv4VerIhl, 0x05}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},
      {"ipv4 IHL 6 with nothing after 20 bytes", patch(ip4().build(), {{kIpv4VerIhl, 0x46}}),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},
      {"ipv4 IHL 15 with 40 bytes present", patch(ip4().tcp(1, 2).build(), {{kIpv4VerIhl, 0x4f}}),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},
      {"udp length larger than the datagram",
       patch(ip4().udp(11, 22).payload("1234").build(), {{kIpv4L4 + 4, 0x10}}),
       XDP_PASS, kBadL4, 14, 34, 42, 17},
      {"udp length 7", patch(ip4().udp(11, 22).build(), {{kIpv4L4 + 4, 0}, {kIpv4L4 + 5, 7}}),
       XDP_PASS, kBadL4, 14, 34, 42, 17},
      {"tcp data offset 4", patch(ip4().tcp(1, 2, kTcpSyn).build(), {{kIpv4L4 + 12, 0x40}}),
       XDP_PASS, kBadL4, 14, kNone, kNone, 6},
      {"tcp data offset 0", patch(ip4().tcp(1, 2, kTcpSyn).build(), {{kIpv4L4 + 12, 0x00}}),
       XDP_PASS, kBadL4, 14, kNone, kNone, 6},
      {"tcp data offset 15 beyond the frame",
       patch(ip4().tcp(1, 2).payload("1234").build(), {{kIpv4L4 + 12, 0xf0}}),
       XDP_PASS, kTruncL4, 14, kNone, kNone, 6},
      {"ipv4 header alone under 0x0800 cut at 19 bytes", cut(ip4().udp(1, 2).build(), 33),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},
      {"vlan/ipv4 with IHL 4", patch(ip4().vlan(3).udp(1, 2).build(), {{18, 0x44}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},

      // ---- IPv6 ----
      {"ipv6/tcp", ip6().tcp(443, 50000, kTcpAck | kTcpPsh).payload("tls").build(),
       XDP_PASS, 0, 14, 54, 74, 6},
      {"ipv6/udp", ip6().udp(5353, 53).payload(payload).build(),
       XDP_PASS, 0, 14, 54, 62, 17},
      {"ipv6/icmpv6 echo", ip6().icmpv6(128, 0, 0x00010002).build(),
       XDP_PASS, 0, 14, 54, 62, 58},
      {"ipv6 carrying ICMP (1) is opaque", ip6().ip_proto(1).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 1},
      {"ipv6, no next header (59)", ip6().build(),
       XDP_PASS, 0, 14, kNone, kNone, 59},
      {"vlan/ipv6/hop-by-hop 16/udp", ip6().vlan(100, 5).ipv6_hop_by_hop(16).udp(5353, 53).build(),
       XDP_PASS, 0, 18, 74, 82, 17},
      {"ipv6 hbh/dstopts/routing/ah chain/tcp",
       ip6().ipv6_hop_by_hop(8).ipv6_dest_options(24).ipv6_routing(16).ipv6_auth(24).tcp(1, 2).build(),
       XDP_PASS, 0, 14, 126, 146, 6},
      {"ipv6 ah/udp", ip6().ipv6_auth(16).udp(1, 2).build(),
       XDP_PASS, 0, 14, 70, 78, 17},
      {"ipv6 first fragment/udp", ip6().ipv6_fragment(0, true, 77).udp(4000, 4001).payload(payload).build(),
       XDP_PASS, 0, 14, 62, 70, 17, kFragFirst},
      {"ipv6 later fragment", ip6().ipv6_fragment(100, true).ip_proto(17).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 17, kFragLater},
      {"ipv6 last fragment", ip6().ipv6_fragment(100, false).ip_proto(6).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 6, kFragLater},
      {"ipv6 atomic fragment (offset 0, no M)", ip6().ipv6_fragment(0, false).udp(1, 2).build(),
       XDP_PASS, 0, 14, 62, 70, 17, 0},
      {"ipv6 fragment header with only reserved bits set",
       patch(ip6().ipv6_fragment(0, false).udp(1, 2).build(), {{kIpv6Ext + 2, 0}, {kIpv6Ext + 3, 6}}),
       XDP_PASS, 0, 14, 62, 70, 17, 0},
      {"ipv6 hbh then a later fragment",
       ip6().ipv6_hop_by_hop().ipv6_fragment(10, false).ip_proto(6).payload(payload).build(),
       XDP_PASS, 0, 14, kNone, kNone, 6, kFragLater},
      {"ipv6 chain of 8 extension headers/udp", ipv6_dest_opts_chain(8).udp(1, 2).build(),
       XDP_PASS, 0, 14, 118, 126, 17},
      {"ipv6 chain of 9 extension headers is too long", ipv6_dest_opts_chain(9).udp(1, 2).build(),
       XDP_PASS, kBadExt, 14, kNone, kNone, 60},
      {"ipv6 chain of 12 extension headers", ipv6_dest_opts_chain(12).tcp(1, 2).build(),
       XDP_PASS, kBadExt, 14, kNone, kNone, 60},
      {"ipv6 hop-by-hop of 2048 bytes/udp", ip6().ipv6_hop_by_hop(2048).udp(1, 2).build(),
       XDP_PASS, 0, 14, 2102, 2110, 17},
      {"ipv6 hbh claims 48 bytes, 16 present",
       patch(ip6().ipv6_hop_by_hop().udp(3, 4).build(), {{kIpv6Ext + 1, 5}}),
       XDP_PASS, kBadExt, 14, kNone, kNone, 0},
      {"ipv6 ah length beyond the packet",
       patch(ip6().ipv6_auth(16).tcp(3, 4).build(), {{kIpv6Ext + 1, 200}}),
       XDP_PASS, kBadExt, 14, kNone, kNone, 51},
      {"ipv6 chain cut by the frame", cut(ip6().ipv6_hop_by_hop().ipv6_routing(24).udp(1, 2).build(), 70),
       XDP_PASS, kBadL3 | kBadExt, 14, kNone, kNone, 43},
      {"ipv6 payload length larger than the frame",
       patch(ip6().udp(3, 4).build(), {{kIpv6PayloadLen, 0x01}}),
       XDP_PASS, kBadL3, 14, 54, 62, 17},
      {"ipv6 payload length cuts the extension chain",
       patch(ip6().ipv6_hop_by_hop().udp(3, 4).build(), {{kIpv6PayloadLen, 0}, {kIpv6PayloadLen + 1, 4}}),
       XDP_PASS, kBadExt, 14, kNone, kNone, 0},
      {"ipv6 payload length cuts the udp header",
       patch(ip6().udp(3, 4).payload("abcd").build(), {{kIpv6PayloadLen, 0}, {kIpv6PayloadLen + 1, 4}}),
       XDP_PASS, kTruncL4, 14, kNone, kNone, 17},
      {"version 4 under ethertype 0x86dd", patch(ip6().udp(3, 4).build(), {{kIpv6Ver, 0x45}}),
       XDP_PASS, kBadL3, kNone, kNone, kNone, 0},
      {"ipv6 tcp data offset 3", patch(ip6().tcp(3, 4).build(), {{kIpv6Ext + 12, 0x30}}),
       XDP_PASS, kBadL4, 14, kNone, kNone, 6},
      {"ipv6 udp length lies", patch(ip6().udp(3, 4).build(), {{kIpv6Ext + 4, 0xff}, {kIpv6Ext + 5, 0xff}}),
       XDP_PASS, kBadL4, 14, 54, 62, 17},
      {"ipv6 icmpv6 cut to 4 bytes", cut(ip6().icmpv6(1, 4).build(), 58),
       XDP_PASS, kBadL3 | kTruncL4, 14, kNone, kNone, 58},
      {"ipv6 header cut at 39 bytes", cut(ip6().udp(1, 2).build(), 53),
       XDP_PASS, kTruncL3, kNone, kNone, kNone, 0},
  };
  // clang-format on
}

}  // namespace softflow::bpf_test

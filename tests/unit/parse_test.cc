#include "softflow/parse.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"

namespace softflow {
namespace {

const MacAddr kMacA = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0a};
const MacAddr kMacB = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0b};

uint32_t be32(uint32_t host) { return htonl(host); }

// A parsed packet over an exact-size heap copy of the frame, so that
// AddressSanitizer reports any read past len (a FramePool frame would hide it).
class ParsedFrame {
 public:
  explicit ParsedFrame(const std::vector<uint8_t>& frame, size_t len = SIZE_MAX)
      : bytes_(frame.begin(),
               frame.begin() + static_cast<std::ptrdiff_t>(std::min(len, frame.size()))) {
    pkt_.data = bytes_.data();
    pkt_.len = static_cast<uint32_t>(bytes_.size());
    pkt_.key = zero_key();
    parse_packet(pkt_);
  }
  const Packet& pkt() const { return pkt_; }
  const FlowKey& key() const { return pkt_.key; }
  uint16_t flags() const { return pkt_.parse_flags; }

 private:
  std::vector<uint8_t> bytes_;
  Packet pkt_;
};

// Everything parse.cc promises about any packet, however malformed.
::testing::AssertionResult keeps_invariants(const Packet& pkt) {
  const FlowKey& k = pkt.key;
  auto fail = [&](const char* what) {
    return ::testing::AssertionFailure()
           << what << " (len=" << pkt.len << " l3=" << pkt.l3_ofs << " l4=" << pkt.l4_ofs
           << " payload=" << pkt.payload_ofs << " flags=0x" << std::hex << pkt.parse_flags << ")";
  };
  if (pkt.l2_ofs != 0) return fail("l2_ofs must be 0");
  if ((pkt.parse_flags & ~kParseMalformed) != 0) return fail("unknown parse flag");
  for (uint8_t b : k.pad)
    if (b != 0) return fail("key pad not zero");
  if (pkt.len < 14) {
    if (!(pkt.parse_flags & kParseTruncatedL2)) return fail("short frame without TruncatedL2");
    if (k.dl_type != 0 || k.dl_src[0] != 0 || k.dl_dst[0] != 0)
      return fail("L2 fields from a runt");
  }
  if (k.vlan_tci != 0 && !(ntohs(k.vlan_tci) & SF_VLAN_PRESENT))
    return fail("vlan_tci without PRESENT");

  const bool has_l3 = pkt.l3_ofs != kNoOffset;
  const bool has_l4 = pkt.l4_ofs != kNoOffset;
  const bool has_payload = pkt.payload_ofs != kNoOffset;
  if (has_l3 && pkt.l3_ofs >= pkt.len) return fail("l3_ofs out of frame");
  if (has_l4 && pkt.l4_ofs >= pkt.len) return fail("l4_ofs out of frame");
  if (has_payload && pkt.payload_ofs > pkt.len) return fail("payload_ofs out of frame");
  if (has_l4 && !has_l3) return fail("L4 without L3");
  if (has_l4 != has_payload) return fail("payload_ofs set iff l4_ofs set");
  if (has_l4 && !(pkt.l3_ofs < pkt.l4_ofs && pkt.l4_ofs < pkt.payload_ofs))
    return fail("offsets out of order");

  const uint16_t dl_type = ntohs(k.dl_type);
  if (has_l3) {
    if (dl_type != 0x0800 && dl_type != 0x86dd && dl_type != 0x0806)
      return fail("L3 of non-IP/ARP");
    if (pkt.l3_ofs < 14) return fail("l3_ofs inside Ethernet header");
    const uint8_t* l3 = pkt.data + pkt.l3_ofs;
    const uint32_t l3_room = pkt.len - pkt.l3_ofs;
    if (dl_type == 0x0800 && (l3_room < 20u || (l3[0] & 0x0f) * 4u > l3_room))
      return fail("IPv4 header not whole");
    if (dl_type == 0x86dd && l3_room < 40) return fail("IPv6 header not whole");
    if (dl_type == 0x0806 && l3_room < 28) return fail("ARP header not whole");
  } else {
    static const uint8_t kZero[16] = {};
    if (k.nw_proto != 0 || k.nw_tos != 0 || k.nw_frag != 0 || memcmp(k.nw_src, kZero, 16) != 0 ||
        memcmp(k.nw_dst, kZero, 16) != 0)
      return fail("L3 fields without l3_ofs");
  }
  if (has_l4) {
    const uint8_t* l4 = pkt.data + pkt.l4_ofs;
    switch (k.nw_proto) {
      case 6:
        if (pkt.payload_ofs != pkt.l4_ofs + (l4[12] >> 4) * 4) return fail("TCP payload_ofs");
        if ((l4[12] >> 4) < 5) return fail("TCP data offset < 5 accepted");
        break;
      case 17:
      case 1:
      case 58:
        if (pkt.payload_ofs != pkt.l4_ofs + 8) return fail("UDP/ICMP payload_ofs");
        break;
      default:
        return fail("L4 of an unknown protocol");
    }
    if (k.nw_frag & SF_FRAG_LATER) return fail("L4 in a later fragment");
  } else if (k.tp_src != 0 || k.tp_dst != 0 || k.tcp_flags != 0) {
    return fail("L4 fields without l4_ofs");
  }
  if (k.nw_frag != 0 && k.nw_frag != SF_FRAG_ANY && k.nw_frag != (SF_FRAG_ANY | SF_FRAG_LATER))
    return fail("bad nw_frag");
  if (k.tcp_flags != 0 && k.nw_proto != 6) return fail("tcp_flags on non-TCP");
  if ((ntohs(k.tcp_flags) & 0xf000) != 0) return fail("tcp_flags beyond 12 bits");
  return ::testing::AssertionSuccess();
}

uint64_t test_seed() {
  if (const char* env = std::getenv("SF_TEST_SEED")) return std::strtoull(env, nullptr, 0);
  if (int seed = ::testing::UnitTest::GetInstance()->random_seed(); seed != 0)
    return static_cast<uint64_t>(seed);
  return std::random_device{}();
}

// ---- frame shapes used by several tests -------------------------------------

const std::vector<uint8_t> kTcpOptions = {2, 4, 0x05, 0xb4, 1, 1, 4, 2};  // MSS, NOP, NOP, SACK ok
const std::vector<uint8_t> kIpv4RouterAlert = {0x94, 0x04, 0x00, 0x00};

std::vector<uint8_t> ipv4_tcp_with_options() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"), 64, 0x2e)
      .ipv4_options(kIpv4RouterAlert)
      .tcp(1234, 80, kTcpSyn | kTcpEce, 1000, 0, 8192)
      .tcp_options(kTcpOptions)
      .payload("GET / HTTP/1.0\r\n")
      .build();
}

std::vector<uint8_t> vlan_ipv6_hbh_udp() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .vlan(100, 5)
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"), 64, 0xb8)
      .ipv6_hop_by_hop(16)
      .udp(5353, 53)
      .payload("query")
      .build();
}

std::vector<uint8_t> ipv4_icmp_echo() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv4(ipv4_addr("192.168.1.1"), ipv4_addr("192.168.1.2"))
      .icmp(8, 0, 0x12340001)
      .payload("ping-payload")
      .build();
}

std::vector<uint8_t> arp_request() {
  return PacketBuilder()
      .eth(kMacA, mac("ff:ff:ff:ff:ff:ff"))
      .arp(1, kMacA, ipv4_addr("10.0.0.1"), MacAddr{}, ipv4_addr("10.0.0.254"))
      .build();
}

std::vector<uint8_t> ipv6_first_fragment_udp() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv6(ipv6_addr("fe80::1"), ipv6_addr("fe80::2"))
      .ipv6_fragment(0, true, 77)
      .udp(4000, 4001)
      .payload("first-fragment-data")
      .build();
}

std::vector<uint8_t> qinq_ipv4_udp() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .vlan(300, 0, 0x88a8)
      .vlan(20)
      .ipv4(ipv4_addr("172.16.0.1"), ipv4_addr("172.16.0.2"))
      .udp(68, 67)
      .payload("dhcp")
      .build();
}

std::vector<uint8_t> ipv6_icmpv6() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv6(ipv6_addr("2001:db8::a"), ipv6_addr("2001:db8::b"))
      .ipv6_dest_options()
      .icmpv6(128, 0, 0x00010002)
      .build();
}

struct Shape {
  const char* name;
  std::vector<uint8_t> frame;
};

std::vector<Shape> all_shapes() {
  return {
      {"eth/ipv4+opts/tcp+opts", ipv4_tcp_with_options()},
      {"vlan/ipv6/hbh/udp", vlan_ipv6_hbh_udp()},
      {"ipv4/icmp", ipv4_icmp_echo()},
      {"arp", arp_request()},
      {"ipv6/frag/udp", ipv6_first_fragment_udp()},
      {"qinq/ipv4/udp", qinq_ipv4_udp()},
      {"ipv6/dstopts/icmpv6", ipv6_icmpv6()},
  };
}

// ---- one protocol at a time ---------------------------------------------------

TEST(Parse, EthernetWithUnknownEtherType) {
  ParsedFrame p(PacketBuilder().eth(kMacA, kMacB).ether_type(0x88cc).payload("lldp").build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(memcmp(p.key().dl_src, kMacA.data(), 6), 0);
  EXPECT_EQ(memcmp(p.key().dl_dst, kMacB.data(), 6), 0);
  EXPECT_EQ(p.key().dl_type, htons(0x88cc));
  EXPECT_EQ(p.key().vlan_tci, 0);
  EXPECT_EQ(p.pkt().l2_ofs, 0);
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.pkt().payload_ofs, kNoOffset);
  EXPECT_TRUE(keeps_invariants(p.pkt()));
}

TEST(Parse, Ipv4TcpFieldsAndOffsets) {
  ParsedFrame p(ipv4_tcp_with_options());
  const FlowKey& k = p.key();
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(k.dl_type, htons(0x0800));
  EXPECT_EQ(k.nw_src[0], be32(0x0a000001));
  EXPECT_EQ(k.nw_dst[0], be32(0x0a000002));
  EXPECT_EQ(k.nw_src[1], 0u);
  EXPECT_EQ(k.nw_proto, 6);
  EXPECT_EQ(k.nw_tos, 0x2e);
  EXPECT_EQ(k.nw_frag, 0);
  EXPECT_EQ(k.tp_src, htons(1234));
  EXPECT_EQ(k.tp_dst, htons(80));
  EXPECT_EQ(k.tcp_flags, htons(kTcpSyn | kTcpEce));
  EXPECT_EQ(p.pkt().l3_ofs, 14);
  EXPECT_EQ(p.pkt().l4_ofs, 14 + 24);            // 4 bytes of IPv4 options
  EXPECT_EQ(p.pkt().payload_ofs, 14 + 24 + 28);  // 8 bytes of TCP options
  EXPECT_TRUE(keeps_invariants(p.pkt()));
}

TEST(Parse, TcpFlagsTakeAllTwelveBits) {
  ParsedFrame p(
      PacketBuilder().ipv4(1, 2).tcp(1, 2, kTcpNs | kTcpCwr | kTcpUrg | kTcpFin | 0xe00).build());
  // The builder masks to 12 bits; 0xe00 are the reserved bits, which count.
  EXPECT_EQ(ntohs(p.key().tcp_flags), kTcpNs | kTcpCwr | kTcpUrg | kTcpFin | 0xe00);
}

TEST(Parse, Ipv4UdpIgnoresEthernetPadding) {
  const auto frame = PacketBuilder()
                         .eth(kMacA, kMacB)
                         .ipv4(ipv4_addr("1.2.3.4"), ipv4_addr("5.6.7.8"))
                         .udp(1000, 2000)
                         .pad_to(60)
                         .build();
  ASSERT_EQ(frame.size(), 60u);
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseOk);  // padding is not a length lie
  EXPECT_EQ(p.key().nw_proto, 17);
  EXPECT_EQ(p.key().tp_src, htons(1000));
  EXPECT_EQ(p.key().tp_dst, htons(2000));
  EXPECT_EQ(p.key().tcp_flags, 0);
  EXPECT_EQ(p.pkt().l4_ofs, 34);
  EXPECT_EQ(p.pkt().payload_ofs, 42);
}

TEST(Parse, Ipv4IcmpTypeAndCodeInPorts) {
  ParsedFrame p(PacketBuilder().ipv4(1, 2).icmp(3, 4, 1500).build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_proto, 1);
  EXPECT_EQ(p.key().tp_src, htons(3));
  EXPECT_EQ(p.key().tp_dst, htons(4));
  EXPECT_EQ(p.pkt().l4_ofs, 34);
  EXPECT_EQ(p.pkt().payload_ofs, 42);
}

TEST(Parse, SingleVlanTagSetsPresentBit) {
  ParsedFrame p(PacketBuilder().vlan(10, 3).ipv4(1, 2).udp(1, 2).build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().vlan_tci, htons(3 << 13 | SF_VLAN_PRESENT | 10));
  EXPECT_EQ(p.key().dl_type, htons(0x0800));
  EXPECT_EQ(p.pkt().l3_ofs, 18);
  EXPECT_EQ(p.pkt().l4_ofs, 38);
}

TEST(Parse, VlanZeroIsNotNoVlan) {
  ParsedFrame p(PacketBuilder().vlan(0).ether_type(0x1234).build());
  EXPECT_EQ(p.key().vlan_tci, htons(SF_VLAN_PRESENT));
  EXPECT_EQ(p.key().dl_type, htons(0x1234));
}

TEST(Parse, DoubleTagKeepsOuterTciAndInnerEtherType) {
  ParsedFrame p(qinq_ipv4_udp());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().vlan_tci, htons(SF_VLAN_PRESENT | 300));
  EXPECT_EQ(p.key().dl_type, htons(0x0800));
  EXPECT_EQ(p.pkt().l3_ofs, 22);
  EXPECT_EQ(p.key().tp_src, htons(68));
  EXPECT_EQ(p.key().tp_dst, htons(67));
}

TEST(Parse, ThirdVlanTagIsNotParsed) {
  ParsedFrame p(PacketBuilder().vlan(1, 0, 0x88a8).vlan(2).vlan(3).ipv4(1, 2).udp(1, 2).build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().vlan_tci, htons(SF_VLAN_PRESENT | 1));
  EXPECT_EQ(p.key().dl_type, htons(0x8100));
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
  EXPECT_EQ(p.key().nw_proto, 0);
}

TEST(Parse, ArpRequestAndReply) {
  ParsedFrame req(arp_request());
  EXPECT_EQ(req.flags(), kParseOk);
  EXPECT_EQ(req.key().dl_type, htons(0x0806));
  EXPECT_EQ(req.key().nw_proto, 1);
  EXPECT_EQ(req.key().nw_src[0], be32(0x0a000001));
  EXPECT_EQ(req.key().nw_dst[0], be32(0x0a0000fe));
  EXPECT_EQ(req.pkt().l3_ofs, 14);
  EXPECT_EQ(req.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(req.key().tp_src, 0);

  ParsedFrame reply(PacketBuilder()
                        .vlan(7)
                        .arp(2, kMacB, ipv4_addr("10.0.0.254"), kMacA, ipv4_addr("10.0.0.1"))
                        .pad_to(64)
                        .build());
  EXPECT_EQ(reply.flags(), kParseOk);
  EXPECT_EQ(reply.key().nw_proto, 2);
  EXPECT_EQ(reply.key().nw_src[0], be32(0x0a0000fe));
  EXPECT_EQ(reply.key().nw_dst[0], be32(0x0a000001));
  EXPECT_EQ(reply.pkt().l3_ofs, 18);
}

TEST(Parse, ArpOpcodeKeepsLowByte) {
  auto frame = arp_request();
  frame[14 + 6] = 0x01;  // opcode 0x0102
  frame[14 + 7] = 0x02;
  EXPECT_EQ(ParsedFrame(frame).key().nw_proto, 0x02);
}

TEST(Parse, NonEthernetIpv4ArpIsLeftUnparsed) {
  auto frame = arp_request();
  frame[14 + 1] = 6;  // hardware type IEEE 802
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().dl_type, htons(0x0806));
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
  EXPECT_EQ(p.key().nw_src[0], 0u);
  EXPECT_EQ(p.key().nw_proto, 0);
}

TEST(Parse, Ipv4OptionsMoveTheL4Header) {
  const std::vector<uint8_t> options(40, 1);  // 40 bytes of NOP: IHL 15
  ParsedFrame p(PacketBuilder().ipv4(1, 2).ipv4_options(options).udp(7, 9).build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.pkt().l3_ofs, 14);
  EXPECT_EQ(p.pkt().l4_ofs, 14 + 60);
  EXPECT_EQ(p.key().tp_src, htons(7));
  EXPECT_EQ(p.key().tp_dst, htons(9));
}

TEST(Parse, Ipv4FirstFragmentHasPorts) {
  ParsedFrame p(PacketBuilder().ipv4(1, 2).ipv4_fragment(0, true).tcp(10, 20).payload("x").build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_frag, SF_FRAG_ANY);
  EXPECT_EQ(p.key().tp_src, htons(10));
  EXPECT_EQ(p.key().tp_dst, htons(20));
  EXPECT_EQ(p.pkt().l4_ofs, 34);
}

TEST(Parse, Ipv4LaterFragmentHasNoL4) {
  for (bool more : {true, false}) {
    ParsedFrame p(PacketBuilder()
                      .ipv4(1, 2)
                      .ipv4_fragment(185, more)
                      .ip_proto(6)
                      .payload("bytes that look like a tcp header....")
                      .build());
    EXPECT_EQ(p.flags(), kParseOk);
    EXPECT_EQ(p.key().nw_frag, SF_FRAG_ANY | SF_FRAG_LATER);
    EXPECT_EQ(p.key().nw_proto, 6);
    EXPECT_EQ(p.key().tp_src, 0);
    EXPECT_EQ(p.key().tcp_flags, 0);
    EXPECT_EQ(p.pkt().l3_ofs, 14);
    EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
    EXPECT_EQ(p.pkt().payload_ofs, kNoOffset);
  }
}

TEST(Parse, Ipv4DontFragmentIsNotAFragment) {
  ParsedFrame p(PacketBuilder().ipv4(1, 2).ipv4_dont_fragment().udp(1, 2).build());
  EXPECT_EQ(p.key().nw_frag, 0);
}

TEST(Parse, Ipv6TcpFields) {
  ParsedFrame p(PacketBuilder()
                    .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8:0:1::ff"), 3, 0xa5, 0xbeef)
                    .tcp(443, 50000, kTcpAck | kTcpPsh)
                    .payload("tls")
                    .build());
  const FlowKey& k = p.key();
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(k.dl_type, htons(0x86dd));
  const Ipv6Addr src = ipv6_addr("2001:db8::1");
  const Ipv6Addr dst = ipv6_addr("2001:db8:0:1::ff");
  EXPECT_EQ(memcmp(k.nw_src, src.data(), 16), 0);
  EXPECT_EQ(memcmp(k.nw_dst, dst.data(), 16), 0);
  EXPECT_EQ(k.nw_tos, 0xa5);  // the whole traffic class, across the nibble boundary
  EXPECT_EQ(k.nw_proto, 6);
  EXPECT_EQ(k.tp_src, htons(443));
  EXPECT_EQ(k.tp_dst, htons(50000));
  EXPECT_EQ(k.tcp_flags, htons(kTcpAck | kTcpPsh));
  EXPECT_EQ(p.pkt().l3_ofs, 14);
  EXPECT_EQ(p.pkt().l4_ofs, 54);
  EXPECT_EQ(p.pkt().payload_ofs, 74);
}

TEST(Parse, VlanIpv6HopByHopUdp) {
  ParsedFrame p(vlan_ipv6_hbh_udp());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().vlan_tci, htons(5 << 13 | SF_VLAN_PRESENT | 100));
  EXPECT_EQ(p.key().nw_tos, 0xb8);
  EXPECT_EQ(p.key().nw_proto, 17);  // the upper layer, not the extension header
  EXPECT_EQ(p.key().tp_src, htons(5353));
  EXPECT_EQ(p.key().tp_dst, htons(53));
  EXPECT_EQ(p.pkt().l3_ofs, 18);
  EXPECT_EQ(p.pkt().l4_ofs, 18 + 40 + 16);
}

TEST(Parse, Ipv6ExtensionHeaderChain) {
  ParsedFrame p(PacketBuilder()
                    .ipv6(ipv6_addr("::1"), ipv6_addr("::2"))
                    .ipv6_hop_by_hop(8)
                    .ipv6_dest_options(24)
                    .ipv6_routing(16)
                    .ipv6_auth(24)
                    .tcp(1, 2)
                    .build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_proto, 6);
  EXPECT_EQ(p.pkt().l4_ofs, 14 + 40 + 8 + 24 + 16 + 24);
  EXPECT_EQ(p.key().tp_dst, htons(2));
}

TEST(Parse, Ipv6ChainOfEightIsFineNineIsTooLong) {
  PacketBuilder eight;
  eight.ipv6(ipv6_addr("::1"), ipv6_addr("::2"));
  for (int i = 0; i < 8; ++i) eight.ipv6_dest_options();
  ParsedFrame ok(eight.udp(1, 2).build());
  EXPECT_EQ(ok.flags(), kParseOk);
  EXPECT_EQ(ok.key().nw_proto, 17);
  EXPECT_EQ(ok.pkt().l4_ofs, 14 + 40 + 64);

  ParsedFrame too_long(eight.ipv6_dest_options().udp(1, 2).build());
  EXPECT_EQ(too_long.flags(), kParseBadExtHdr);
  EXPECT_EQ(too_long.key().nw_proto, 60);  // the header it gave up on
  EXPECT_EQ(too_long.pkt().l3_ofs, 14);
  EXPECT_EQ(too_long.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(too_long.key().tp_src, 0);
}

TEST(Parse, Ipv6FirstFragmentHasPorts) {
  ParsedFrame p(ipv6_first_fragment_udp());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_frag, SF_FRAG_ANY);
  EXPECT_EQ(p.key().nw_proto, 17);
  EXPECT_EQ(p.key().tp_src, htons(4000));
  EXPECT_EQ(p.pkt().l4_ofs, 14 + 40 + 8);
}

TEST(Parse, Ipv6LaterFragmentHasNoL4) {
  ParsedFrame p(PacketBuilder()
                    .ipv6(ipv6_addr("fe80::1"), ipv6_addr("fe80::2"))
                    .ipv6_hop_by_hop()
                    .ipv6_fragment(100, false)
                    .ip_proto(17)
                    .payload("later fragment data")
                    .build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_frag, SF_FRAG_ANY | SF_FRAG_LATER);
  EXPECT_EQ(p.key().nw_proto, 17);
  EXPECT_EQ(p.key().tp_src, 0);
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.pkt().payload_ofs, kNoOffset);
}

TEST(Parse, Ipv6AtomicFragmentIsNotAFragment) {
  ParsedFrame p(PacketBuilder()
                    .ipv6(ipv6_addr("::1"), ipv6_addr("::2"))
                    .ipv6_fragment(0, false)
                    .tcp(5, 6)
                    .build());
  EXPECT_EQ(p.key().nw_frag, 0);
  EXPECT_EQ(p.key().tp_src, htons(5));
}

TEST(Parse, Icmpv6TypeAndCodeInPorts) {
  ParsedFrame p(ipv6_icmpv6());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_proto, 58);
  EXPECT_EQ(p.key().tp_src, htons(128));
  EXPECT_EQ(p.key().tp_dst, htons(0));
  EXPECT_EQ(p.pkt().l4_ofs, 14 + 40 + 8);
  EXPECT_EQ(p.pkt().payload_ofs, 14 + 40 + 8 + 8);
}

TEST(Parse, IcmpNumberOverTheWrongIpVersionIsOpaque) {
  ParsedFrame p(PacketBuilder()
                    .ipv6(ipv6_addr("::1"), ipv6_addr("::2"))
                    .ip_proto(1)
                    .payload("12345678")
                    .build());
  EXPECT_EQ(p.flags(), kParseOk);
  EXPECT_EQ(p.key().nw_proto, 1);
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.key().tp_src, 0);
}

TEST(Parse, KeepsMetadataAndRewritesEverythingElse) {
  auto frame = PacketBuilder().ether_type(0x9999).build();
  Packet pkt;
  pkt.data = frame.data();
  pkt.len = static_cast<uint32_t>(frame.size());
  memset(&pkt.key, 0xa5, sizeof pkt.key);  // stale state from a previous packet
  pkt.key.in_port = 7;
  pkt.key.sf_metadata = 0xdeadbeef;
  pkt.key.sf_stage = 3;
  pkt.key.sf_action = 2;
  pkt.l4_ofs = 99;
  pkt.parse_flags = kParseBadL4;
  EXPECT_EQ(parse_packet(pkt), kParseOk);

  FlowKey expected = zero_key();
  expected.in_port = 7;
  expected.sf_metadata = 0xdeadbeef;
  expected.sf_stage = 3;
  expected.sf_action = 2;
  expected.dl_type = htons(0x9999);
  memcpy(expected.dl_src, frame.data() + 6, 6);
  memcpy(expected.dl_dst, frame.data(), 6);
  EXPECT_TRUE(key_equal(pkt.key, expected));
  EXPECT_EQ(pkt.l4_ofs, kNoOffset);
  EXPECT_EQ(pkt.parse_flags, kParseOk);
}

TEST(Parse, WorksOnAFramePoolFrame) {
  FramePool pool(1);
  Packet pkt;
  ASSERT_TRUE(pool.load(pkt, ipv4_tcp_with_options(), 4));
  EXPECT_EQ(parse_packet(pkt), kParseOk);
  EXPECT_EQ(pkt.key.in_port, 4u);
  EXPECT_EQ(pkt.key.tp_dst, htons(80));
  pool.release(pkt);
}

// ---- malformed packets -------------------------------------------------------

TEST(ParseMalformed, EmptyAndRuntFrames) {
  for (size_t len : {0, 1, 13}) {
    ParsedFrame p(ipv4_icmp_echo(), len);
    EXPECT_EQ(p.flags(), kParseTruncatedL2) << len;
    EXPECT_TRUE(key_is_zero(p.key())) << len;
    EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
  }
  Packet null_pkt;  // data == nullptr, len == 0
  null_pkt.key = zero_key();
  EXPECT_EQ(parse_packet(null_pkt), kParseTruncatedL2);
}

TEST(ParseMalformed, Ipv4HeaderLengthBelowFive) {
  auto frame = PacketBuilder().ipv4(1, 2).udp(1, 2).build();
  frame[14] = 0x44;
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL3);
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
  EXPECT_EQ(p.key().dl_type, htons(0x0800));
  EXPECT_EQ(p.key().nw_src[0], 0u);
}

TEST(ParseMalformed, Ipv4WrongVersion) {
  auto frame = PacketBuilder().ipv4(1, 2).udp(1, 2).build();
  frame[14] = 0x65;
  EXPECT_EQ(ParsedFrame(frame).flags(), kParseBadL3);
}

TEST(ParseMalformed, Ipv4HeaderLengthBeyondFrame) {
  auto frame = PacketBuilder().ipv4(1, 2).build();  // 20-byte header, nothing after
  frame[14] = 0x46;                                 // claims 24
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseTruncatedL3);
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
}

TEST(ParseMalformed, Ipv4TotalLengthBiggerThanFrame) {
  auto frame = PacketBuilder().ipv4(1, 2).udp(1, 2).payload("abc").build();
  frame[16] = 0x05;  // total length 0x05xx
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL3);
  // What is there still parses, within the frame.
  EXPECT_EQ(p.key().nw_proto, 17);
  EXPECT_EQ(p.key().tp_dst, htons(2));
  EXPECT_EQ(p.pkt().l4_ofs, 34);
  EXPECT_TRUE(keeps_invariants(p.pkt()));
}

TEST(ParseMalformed, Ipv4TotalLengthSmallerThanHeader) {
  auto frame = PacketBuilder().ipv4(1, 2).udp(1, 2).build();
  frame[16] = 0;
  frame[17] = 19;
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL3);
  EXPECT_EQ(p.pkt().l3_ofs, 14);  // the header itself is whole
  EXPECT_EQ(p.key().nw_src[0], be32(1));
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.key().tp_src, 0);
}

TEST(ParseMalformed, Ipv4TotalLengthCutsTheTcpHeader) {
  auto frame = PacketBuilder().ipv4(1, 2).tcp(1, 2).payload("0123456789").build();
  frame[16] = 0;
  frame[17] = 20 + 12;  // frame holds it all, the datagram claims 12 bytes of TCP
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseTruncatedL4);
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.key().tp_src, 0);
}

TEST(ParseMalformed, TcpDataOffsetBelowFive) {
  for (uint8_t data_offset : {0, 4}) {
    auto frame = PacketBuilder().ipv4(1, 2).tcp(1, 2, kTcpSyn).build();
    frame[34 + 12] = static_cast<uint8_t>(data_offset << 4);
    ParsedFrame p(frame);
    EXPECT_EQ(p.flags(), kParseBadL4);
    EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
    EXPECT_EQ(p.pkt().payload_ofs, kNoOffset);
    EXPECT_EQ(p.key().tp_src, 0);
    EXPECT_EQ(p.key().tcp_flags, 0);
    EXPECT_EQ(p.key().nw_proto, 6);
  }
}

TEST(ParseMalformed, TcpOptionsBeyondFrame) {
  auto frame = PacketBuilder().ipv4(1, 2).tcp(1, 2).payload("1234").build();
  frame[34 + 12] = 0xf0;  // 60-byte header in 24 bytes
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseTruncatedL4);
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
}

TEST(ParseMalformed, UdpLengthLiesButPortsParse) {
  auto frame = PacketBuilder().ipv4(1, 2).udp(11, 22).payload("1234").build();
  frame[34 + 4] = 0x10;
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL4);
  EXPECT_EQ(p.key().tp_src, htons(11));
  EXPECT_EQ(p.pkt().l4_ofs, 34);
}

TEST(ParseMalformed, Ipv6PayloadLengthBiggerThanFrame) {
  auto frame = PacketBuilder().ipv6(ipv6_addr("::1"), ipv6_addr("::2")).udp(3, 4).build();
  frame[14 + 4] = 0x01;
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL3);
  EXPECT_EQ(p.key().tp_dst, htons(4));
}

TEST(ParseMalformed, Ipv6WrongVersion) {
  auto frame = PacketBuilder().ipv6(ipv6_addr("::1"), ipv6_addr("::2")).udp(3, 4).build();
  frame[14] = 0x40;
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadL3);
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
}

TEST(ParseMalformed, Ipv6ExtensionHeaderLongerThanPayload) {
  auto frame =
      PacketBuilder().ipv6(ipv6_addr("::1"), ipv6_addr("::2")).ipv6_hop_by_hop().udp(3, 4).build();
  frame[14 + 40 + 1] = 5;  // 48 bytes claimed, 16 present
  ParsedFrame p(frame);
  EXPECT_EQ(p.flags(), kParseBadExtHdr);
  EXPECT_EQ(p.key().nw_proto, 0);  // stuck at hop-by-hop
  EXPECT_EQ(p.pkt().l4_ofs, kNoOffset);
  EXPECT_EQ(p.key().tp_src, 0);
}

TEST(ParseMalformed, TruncatedVlanTag) {
  auto frame = PacketBuilder().vlan(5).ipv4(1, 2).build();
  ParsedFrame p(frame, 16);  // TPID present, TCI cut
  EXPECT_EQ(p.flags(), kParseTruncatedL2);
  EXPECT_EQ(p.key().dl_type, htons(0x8100));
  EXPECT_EQ(p.key().vlan_tci, 0);
  EXPECT_EQ(p.pkt().l3_ofs, kNoOffset);
}

// ---- every truncation of real frames -------------------------------------------

TEST(ParseTruncation, EveryPrefixKeepsInvariantsAndIsFlagged) {
  for (const Shape& shape : all_shapes()) {
    SCOPED_TRACE(shape.name);
    const ParsedFrame full(shape.frame);
    ASSERT_EQ(full.flags(), kParseOk);
    ASSERT_TRUE(keeps_invariants(full.pkt()));
    // Where the last header ends: beyond it, a cut only shortens the payload.
    const size_t headers_end =
        full.pkt().payload_ofs != kNoOffset ? full.pkt().payload_ofs : shape.frame.size();
    for (size_t len = 0; len <= shape.frame.size(); ++len) {
      const ParsedFrame cut(shape.frame, len);
      ASSERT_TRUE(keeps_invariants(cut.pkt())) << "len " << len;
      // None of these shapes has padding, so every cut breaks a length field
      // or a header and must be flagged.
      if (len < shape.frame.size()) {
        EXPECT_NE(cut.flags(), kParseOk) << "len " << len;
      } else {
        EXPECT_EQ(cut.flags(), kParseOk);
      }
      if (len >= headers_end) {
        EXPECT_TRUE(key_equal(cut.key(), full.key())) << "len " << len;
        EXPECT_EQ(cut.pkt().l4_ofs, full.pkt().l4_ofs);
      } else {
        EXPECT_EQ(cut.pkt().l4_ofs, kNoOffset) << "len " << len;
      }
    }
  }
}

// ---- random bytes ------------------------------------------------------------------

TEST(ParseRandom, HundredThousandBuffersKeepInvariants) {
  const uint64_t seed = test_seed();
  std::cout << "[ seed     ] SF_TEST_SEED=" << seed << " replays this test\n";
  RecordProperty("sf_test_seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<Shape> shapes = all_shapes();
  const uint16_t kEtherTypes[] = {0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8};

  for (int i = 0; i < 100000; ++i) {
    std::vector<uint8_t> buf;
    switch (rng() % 3) {
      case 0: {  // uniformly random bytes
        buf.resize(rng() % 160);
        for (uint8_t& b : buf) b = static_cast<uint8_t>(rng());
        break;
      }
      case 1: {  // random, but with an interesting ethertype and IP version
        buf.resize(14 + rng() % 120);
        for (uint8_t& b : buf) b = static_cast<uint8_t>(rng());
        const uint16_t type = kEtherTypes[rng() % std::size(kEtherTypes)];
        buf[12] = static_cast<uint8_t>(type >> 8);
        buf[13] = static_cast<uint8_t>(type);
        if (buf.size() > 14 && type == 0x0800)
          buf[14] = static_cast<uint8_t>(0x40 | (buf[14] & 0x0f));
        if (buf.size() > 14 && type == 0x86dd)
          buf[14] = static_cast<uint8_t>(0x60 | (buf[14] & 0x0f));
        break;
      }
      default: {  // a real frame with a few bytes changed, maybe cut short
        buf = shapes[rng() % shapes.size()].frame;
        for (int flips = 1 + static_cast<int>(rng() % 4); flips > 0; --flips)
          buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
        if (rng() % 2) buf.resize(rng() % (buf.size() + 1));
        break;
      }
    }
    const ParsedFrame p(buf);
    ASSERT_TRUE(keeps_invariants(p.pkt())) << "buffer " << i << " of seed " << seed;
    // Parsing is a function of the bytes alone.
    const ParsedFrame again(buf);
    ASSERT_TRUE(key_equal(p.key(), again.key()));
  }
}

}  // namespace
}  // namespace softflow

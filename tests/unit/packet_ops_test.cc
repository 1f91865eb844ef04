#include "softflow/packet_ops.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "softflow/parse.h"
#include "test_util.h"

namespace softflow {
namespace {

const MacAddr kMacA = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0a};
const MacAddr kMacB = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0b};

// A parsed packet that owns an exact-size copy of its frame.
class TestPacket {
 public:
  explicit TestPacket(std::vector<uint8_t> frame) : bytes_(std::move(frame)) {
    pkt_.data = bytes_.data();
    pkt_.len = static_cast<uint32_t>(bytes_.size());
    pkt_.key = zero_key();
    pkt_.key.in_port = 3;
    parse_packet(pkt_);
  }
  TestPacket(const TestPacket& o) : bytes_(o.bytes_), pkt_(o.pkt_) { pkt_.data = bytes_.data(); }
  TestPacket& operator=(const TestPacket&) = delete;

  Packet& pkt() { return pkt_; }
  const Packet& pkt() const { return pkt_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  uint8_t at(size_t ofs) const { return bytes_.at(ofs); }
  uint16_t be16(size_t ofs) const {
    return static_cast<uint16_t>(bytes_.at(ofs) << 8 | bytes_.at(ofs + 1));
  }

 private:
  std::vector<uint8_t> bytes_;
  Packet pkt_;
};

using test::add_words;
using test::fold;

// IPv4 header and L4 checksums sum to 0xffff (a UDP checksum of 0 is "none").
::testing::AssertionResult checksums_verify(const Packet& pkt) {
  if (pkt.l3_ofs == kNoOffset) return ::testing::AssertionSuccess();
  const uint8_t* l3 = pkt.data + pkt.l3_ofs;
  const bool ipv4 = pkt.key.dl_type == htons(0x0800);
  const bool ipv6 = pkt.key.dl_type == htons(0x86dd);
  if (!ipv4 && !ipv6) return ::testing::AssertionSuccess();
  uint32_t l3_end;
  if (ipv4) {
    const uint32_t header_len = (l3[0] & 0x0f) * 4u;
    if (fold(add_words(0, l3, header_len)) != 0xffff)
      return ::testing::AssertionFailure() << "IPv4 header checksum";
    l3_end = pkt.l3_ofs + (l3[2] << 8 | l3[3]);
  } else {
    l3_end = pkt.l3_ofs + 40 + (l3[4] << 8 | l3[5]);
  }
  if (pkt.l4_ofs == kNoOffset || pkt.key.nw_frag != 0) return ::testing::AssertionSuccess();
  const uint8_t* l4 = pkt.data + pkt.l4_ofs;
  const uint32_t l4_len = l3_end - pkt.l4_ofs;
  const uint8_t proto = pkt.key.nw_proto;
  if (proto == 17 && l4[6] == 0 && l4[7] == 0) return ::testing::AssertionSuccess();
  uint32_t sum = 0;
  if (proto != 1) {
    sum = ipv4 ? add_words(0, l3 + 12, 8) : add_words(0, l3 + 8, 32);
    sum += proto + l4_len;
  }
  if (fold(add_words(sum, l4, l4_len)) != 0xffff)
    return ::testing::AssertionFailure() << "L4 checksum of protocol " << int{proto};
  return ::testing::AssertionSuccess();
}

std::string key_diff(const FlowKey& a, const FlowKey& b) {
  std::string out;
  for (size_t i = 0; i < kFieldCount; ++i) {
    const Field f = static_cast<Field>(i);
    if (memcmp(field_ptr(a, f), field_ptr(b, f), field_info(f).size) != 0)
      out += std::string(field_info(f).name) + " ";
  }
  return out.empty() ? "(padding)" : out;
}

// What every action must leave behind: a key that re-parsing the bytes
// reproduces, and checksums as a from-scratch recomputation would make them.
void expect_consistent(const TestPacket& tp) {
  TestPacket reparsed(tp.bytes());
  reparsed.pkt().key.in_port = tp.pkt().key.in_port;
  reparsed.pkt().key.sf_metadata = tp.pkt().key.sf_metadata;
  reparsed.pkt().key.sf_stage = tp.pkt().key.sf_stage;
  reparsed.pkt().key.sf_action = tp.pkt().key.sf_action;
  EXPECT_TRUE(key_equal(reparsed.pkt().key, tp.pkt().key))
      << "key differs from the bytes in: " << key_diff(reparsed.pkt().key, tp.pkt().key);
  EXPECT_EQ(reparsed.pkt().parse_flags, tp.pkt().parse_flags);

  TestPacket fixed(tp);
  packet_fix_checksums(fixed.pkt());
  EXPECT_EQ(fixed.bytes(), tp.bytes()) << "incremental checksums differ from recomputed ones";
  EXPECT_TRUE(checksums_verify(tp.pkt()));
}

Action set_masked(Field f, std::vector<uint8_t> value, std::vector<uint8_t> mask) {
  Action a;
  a.type = ActionType::kSetField;
  a.field = f;
  for (size_t i = 0; i < value.size(); ++i) {
    a.mask[i] = mask[i];
    a.value[i] = value[i] & mask[i];
  }
  return a;
}

Action set_ipv6(Field f, const Ipv6Addr& addr) {
  return set_masked(f, std::vector<uint8_t>(addr.begin(), addr.end()),
                    std::vector<uint8_t>(16, 0xff));
}

uint64_t test_seed() {
  if (const char* env = std::getenv("SF_TEST_SEED")) return std::strtoull(env, nullptr, 0);
  if (int seed = ::testing::UnitTest::GetInstance()->random_seed(); seed != 0)
    return static_cast<uint64_t>(seed);
  return std::random_device{}();
}

std::vector<uint8_t> ipv4_tcp() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"), 64, 0x03)
      .tcp(1234, 80, kTcpAck, 7, 9, 512)
      .payload("some tcp payload")
      .build();
}
std::vector<uint8_t> ipv4_udp(bool checksum = true) {
  PacketBuilder b;
  b.eth(kMacA, kMacB)
      .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
      .udp(5000, 53)
      .payload("udp!");
  if (!checksum) b.udp_no_checksum();
  return b.build();
}
std::vector<uint8_t> ipv6_tcp() {
  return PacketBuilder()
      .eth(kMacA, kMacB)
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"), 64, 0x01)
      .ipv6_hop_by_hop()
      .tcp(40000, 443, kTcpSyn)
      .build();
}
std::vector<uint8_t> ipv6_udp() {
  return PacketBuilder()
      .vlan(9)
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
      .udp(1000, 2000)
      .payload("odd")
      .build();
}
std::vector<uint8_t> ipv6_icmpv6() {
  return PacketBuilder()
      .ipv6(ipv6_addr("fe80::1"), ipv6_addr("ff02::1"), 255)
      .icmpv6(135, 0)
      .payload("target-address..")
      .build();
}
std::vector<uint8_t> ipv4_icmp() {
  return PacketBuilder()
      .ipv4(ipv4_addr("1.1.1.1"), ipv4_addr("2.2.2.2"))
      .icmp(8, 0, 0x10001)
      .build();
}
std::vector<uint8_t> arp() {
  return PacketBuilder()
      .arp(1, kMacA, ipv4_addr("10.0.0.1"), MacAddr{}, ipv4_addr("10.0.0.9"))
      .build();
}
std::vector<uint8_t> vlan_ipv4_options_udp() {
  const std::vector<uint8_t> options = {1, 1, 1, 1, 1, 1, 1, 0};
  return PacketBuilder()
      .vlan(20, 0, 0x88a8)
      .vlan(30)
      .ipv4(ipv4_addr("192.168.0.1"), ipv4_addr("192.168.0.2"), 8, 0xfe)
      .ipv4_options(options)
      .udp(9, 10)
      .payload("with options")
      .pad_to(80)
      .build();
}

// ---- checksum helpers ---------------------------------------------------------

TEST(PacketOpsChecksum, Rfc1071Example) {
  const uint8_t bytes[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(checksum_partial(bytes, sizeof bytes, 0), 0xddf2u);
  EXPECT_EQ(checksum_fold(checksum_partial(bytes, sizeof bytes, 0)), 0x220d);
  // Chunks of even length add up to the whole.
  EXPECT_EQ(checksum_fold(checksum_partial(bytes + 2, 6, checksum_partial(bytes, 2, 0))), 0x220d);
}

TEST(PacketOpsChecksum, OddLengthIsPaddedWithZero) {
  const uint8_t bytes[] = {0x12, 0x34, 0x56};
  EXPECT_EQ(checksum_partial(bytes, 3, 0), 0x1234u + 0x5600u);
  EXPECT_EQ(checksum_fold(0x1ffff), 0xfffe);  // carries fold back in
}

TEST(PacketOpsChecksum, BuilderFramesVerifyAndFixIsANoOp) {
  for (const auto& frame : {ipv4_tcp(), ipv4_udp(), ipv4_udp(false), ipv6_tcp(), ipv6_udp(),
                            ipv6_icmpv6(), ipv4_icmp(), arp(), vlan_ipv4_options_udp()}) {
    TestPacket tp(frame);
    ASSERT_EQ(tp.pkt().parse_flags, kParseOk);
    EXPECT_TRUE(checksums_verify(tp.pkt()));
    TestPacket fixed(tp);
    packet_fix_checksums(fixed.pkt());
    EXPECT_EQ(fixed.bytes(), tp.bytes());
  }
}

TEST(PacketOpsChecksum, FixChecksumsRepairsEveryChecksum) {
  struct Case {
    std::vector<uint8_t> frame;
    std::vector<size_t> checksum_offsets;
  };
  const std::vector<Case> cases = {
      {ipv4_tcp(), {14 + 10, 34 + 16}}, {ipv4_udp(), {14 + 10, 34 + 6}},
      {ipv4_icmp(), {14 + 10, 34 + 2}}, {ipv6_tcp(), {14 + 48 + 16}},
      {ipv6_icmpv6(), {14 + 40 + 2}},
  };
  for (const Case& c : cases) {
    TestPacket broken(c.frame);
    for (size_t ofs : c.checksum_offsets) {
      broken.pkt().data[ofs] ^= 0x5a;
      broken.pkt().data[ofs + 1] ^= 0x17;
    }
    EXPECT_FALSE(checksums_verify(broken.pkt()));
    packet_fix_checksums(broken.pkt());
    EXPECT_EQ(broken.bytes(), c.frame);
  }
}

// ---- set_field -------------------------------------------------------------------

TEST(PacketOps, SetEthernetAddresses) {
  TestPacket tp(ipv4_tcp());
  const MacAddr new_dst = mac("aa:bb:cc:dd:ee:ff");
  packet_set_field(tp.pkt(), Action::set_field(Field::kDlDst, 0xaabbccddeeffULL));
  packet_set_field(tp.pkt(),
                   set_masked(Field::kDlSrc, {0x12, 0, 0, 0, 0, 0x34}, {0xff, 0, 0, 0, 0, 0x0f}));
  EXPECT_EQ(memcmp(tp.pkt().data, new_dst.data(), 6), 0);
  EXPECT_EQ(tp.at(6), 0x12);
  EXPECT_EQ(tp.at(11), 0x04);  // 0x0a with the low nibble from 0x34
  EXPECT_EQ(tp.pkt().key.dl_src[5], 0x04);
  expect_consistent(tp);
}

TEST(PacketOps, SetIpv4AddressesUpdatesIpAndTcpChecksums) {
  TestPacket tp(ipv4_tcp());
  const uint16_t old_ip_checksum = tp.be16(14 + 10);
  const uint16_t old_tcp_checksum = tp.be16(34 + 16);
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwSrc, ipv4_addr("192.0.2.7")));
  EXPECT_EQ(tp.be16(14 + 12), 0xc000);
  EXPECT_EQ(tp.be16(14 + 14), 0x0207);
  EXPECT_EQ(tp.pkt().key.nw_src[0], htonl(0xc0000207));
  EXPECT_NE(tp.be16(14 + 10), old_ip_checksum);
  EXPECT_NE(tp.be16(34 + 16), old_tcp_checksum);
  expect_consistent(tp);

  packet_set_field(tp.pkt(), Action::set_field(Field::kNwDst, ipv4_addr("198.51.100.1")));
  EXPECT_EQ(tp.be16(14 + 16), 0xc633);
  expect_consistent(tp);
}

TEST(PacketOps, SetIpv4AddressUnderMask) {
  TestPacket tp(ipv4_udp());
  // 10.0.0.2 -> 172.16.5.2 under 255.255.255.0
  packet_set_field(tp.pkt(), set_masked(Field::kNwDst, {172, 16, 5, 99}, {0xff, 0xff, 0xff, 0}));
  EXPECT_EQ(tp.pkt().key.nw_dst[0], htonl(ipv4_addr("172.16.5.2")));
  EXPECT_EQ(tp.at(14 + 16), 172);
  EXPECT_EQ(tp.at(14 + 19), 2);
  expect_consistent(tp);
}

TEST(PacketOps, IpHeaderWithOptionsBehindTwoTags) {
  TestPacket tp(vlan_ipv4_options_udp());
  ASSERT_EQ(tp.pkt().l3_ofs, 22);
  ASSERT_EQ(tp.pkt().l4_ofs, 22 + 28);
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwSrc, ipv4_addr("8.8.8.8")));
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpDst, 5353));
  EXPECT_EQ(tp.be16(22 + 28 + 2), 5353);
  expect_consistent(tp);
}

TEST(PacketOps, UdpZeroChecksumStaysZero) {
  TestPacket tp(ipv4_udp(/*checksum=*/false));
  ASSERT_EQ(tp.be16(34 + 6), 0);
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwSrc, ipv4_addr("10.9.9.9")));
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpSrc, 4242));
  EXPECT_EQ(tp.be16(34 + 6), 0);
  EXPECT_EQ(tp.be16(34), 4242);
  expect_consistent(tp);
}

TEST(PacketOps, UdpChecksumThatComputesToZeroIsSentAsFfff) {
  TestPacket tp(ipv4_udp());
  // Sum of pseudo-header and datagram with the checksum field zeroed.
  std::vector<uint8_t> l4(tp.bytes().begin() + 34, tp.bytes().end());
  l4[6] = l4[7] = 0;
  uint32_t sum =
      add_words(0, tp.bytes().data() + 14 + 12, 8) + 17 + static_cast<uint32_t>(l4.size());
  const uint16_t s = fold(add_words(sum, l4.data(), l4.size()));
  // Choose the source port that makes the sum 0xffff, i.e. the checksum 0.
  uint32_t port = 5000u + (0xffffu - s);
  port = fold(port);
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpSrc, port));
  EXPECT_EQ(tp.be16(34 + 6), 0xffff);
  expect_consistent(tp);
}

TEST(PacketOps, SetArpAddresses) {
  TestPacket tp(arp());
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwSrc, ipv4_addr("10.1.2.3")));
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwDst, ipv4_addr("10.4.5.6")));
  EXPECT_EQ(tp.be16(14 + 14), 0x0a01);
  EXPECT_EQ(tp.be16(14 + 16), 0x0203);
  EXPECT_EQ(tp.be16(14 + 24), 0x0a04);
  EXPECT_EQ(tp.be16(14 + 26), 0x0506);
  expect_consistent(tp);
}

TEST(PacketOps, SetIpv6AddressesUpdatesPseudoHeaderChecksums) {
  const Ipv6Addr new_src = ipv6_addr("2001:db8:ffff::77");
  const Ipv6Addr new_dst = ipv6_addr("fd00::1:2");
  for (const auto& frame : {ipv6_tcp(), ipv6_udp(), ipv6_icmpv6()}) {
    TestPacket tp(frame);
    packet_set_field(tp.pkt(), set_ipv6(Field::kIpv6Src, new_src));
    packet_set_field(tp.pkt(), set_ipv6(Field::kIpv6Dst, new_dst));
    EXPECT_EQ(memcmp(tp.pkt().l3() + 8, new_src.data(), 16), 0);
    EXPECT_EQ(memcmp(tp.pkt().l3() + 24, new_dst.data(), 16), 0);
    expect_consistent(tp);
  }
}

TEST(PacketOps, SetIpv6AddressPrefix) {
  TestPacket tp(ipv6_udp());
  std::vector<uint8_t> mask(16, 0);
  for (int i = 0; i < 8; ++i) mask[i] = 0xff;  // /64
  const Ipv6Addr prefix = ipv6_addr("fd12:3456:789a:1::");
  packet_set_field(tp.pkt(), set_masked(Field::kIpv6Dst, {prefix.begin(), prefix.end()}, mask));
  const Ipv6Addr expected = ipv6_addr("fd12:3456:789a:1::2");
  EXPECT_EQ(memcmp(tp.pkt().l3() + 24, expected.data(), 16), 0);
  EXPECT_EQ(memcmp(tp.pkt().key.nw_dst, expected.data(), 16), 0);
  expect_consistent(tp);
}

TEST(PacketOps, SetTransportPorts) {
  for (const auto& frame : {ipv4_tcp(), ipv4_udp(), ipv6_tcp(), ipv6_udp()}) {
    TestPacket tp(frame);
    const uint16_t l4 = tp.pkt().l4_ofs;
    packet_set_field(tp.pkt(), Action::set_field(Field::kTpSrc, 31337));
    packet_set_field(tp.pkt(), set_masked(Field::kTpDst, {0x12, 0x34}, {0xff, 0x00}));
    EXPECT_EQ(tp.be16(l4), 31337);
    EXPECT_EQ(tp.at(l4 + 2), 0x12);
    EXPECT_EQ(tp.pkt().key.tp_src, htons(31337));
    expect_consistent(tp);
  }
}

TEST(PacketOps, PortsOfIcmpAreNotRewritten) {
  TestPacket tp(ipv4_icmp());
  const std::vector<uint8_t> before = tp.bytes();
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpSrc, 0));
  EXPECT_EQ(tp.bytes(), before);
  EXPECT_EQ(tp.pkt().key.tp_src, 0);  // the key still follows xlate
}

TEST(PacketOps, LaterFragmentKeepsItsBytesButKeyFollowsXlate) {
  TestPacket tp(
      PacketBuilder().ipv4(1, 2).ipv4_fragment(10, false).ip_proto(17).payload("abcdefgh").build());
  const std::vector<uint8_t> before = tp.bytes();
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpDst, 99));
  EXPECT_EQ(tp.bytes(), before);
  EXPECT_EQ(tp.pkt().key.tp_dst, htons(99));
}

TEST(PacketOps, FirstFragmentChecksumIsUpdatedForTheWholeDatagram) {
  // The frame holds the whole datagram, so the TCP checksum of the
  // unfragmented version is what the reassembled packet must carry.
  TestPacket whole(ipv4_tcp());
  TestPacket first(ipv4_tcp());
  first.pkt().data[14 + 6] = 0x20;  // MF
  packet_fix_checksums(first.pkt());
  parse_packet(first.pkt());
  ASSERT_EQ(first.pkt().key.nw_frag, SF_FRAG_ANY);
  for (TestPacket* tp : {&whole, &first})
    packet_set_field(tp->pkt(), Action::set_field(Field::kNwDst, ipv4_addr("10.0.0.200")));
  EXPECT_EQ(first.be16(34 + 16), whole.be16(34 + 16));
  expect_consistent(first);
}

TEST(PacketOps, NwTosRewritesDscpAndKeepsEcn) {
  TestPacket v4(ipv4_tcp());  // TOS 0x03: ECN CE
  packet_set_field(v4.pkt(), set_masked(Field::kNwTos, {0xb8}, {0xfc}));
  EXPECT_EQ(v4.at(14 + 1), 0xbb);
  EXPECT_EQ(v4.pkt().key.nw_tos, 0xbb);
  expect_consistent(v4);

  TestPacket v6(ipv6_tcp());  // traffic class 0x01
  packet_set_field(v6.pkt(), set_masked(Field::kNwTos, {0x28}, {0xfc}));
  EXPECT_EQ(v6.at(14), 0x62);
  EXPECT_EQ(v6.at(15) & 0xf0, 0x90);
  EXPECT_EQ(v6.pkt().key.nw_tos, 0x29);
  expect_consistent(v6);

  // Even a full-byte mask leaves the ECN bits of the wire alone.
  TestPacket full(ipv4_tcp());
  packet_set_field(full.pkt(), Action::set_field(Field::kNwTos, 0x00));
  EXPECT_EQ(full.at(14 + 1), 0x03);
}

TEST(PacketOps, SfMetadataOnlyTouchesTheKey) {
  TestPacket tp(ipv4_tcp());
  const std::vector<uint8_t> before = tp.bytes();
  packet_set_field(tp.pkt(),
                   set_masked(Field::kSfMetadata, {0x78, 0x56, 0x34, 0x12}, {0xff, 0xff, 0, 0}));
  EXPECT_EQ(tp.pkt().key.sf_metadata, 0x5678u);
  EXPECT_EQ(tp.bytes(), before);
}

TEST(PacketOps, RuntFrameOnlyChangesTheKey) {
  std::vector<uint8_t> runt = {1, 2, 3, 4, 5};
  TestPacket tp(runt);
  packet_set_field(tp.pkt(), Action::set_field(Field::kDlSrc, 0x010203040506ULL));
  packet_set_field(tp.pkt(), Action::set_field(Field::kNwSrc, 7));
  packet_set_field(tp.pkt(), Action::set_field(Field::kTpSrc, 7));
  EXPECT_EQ(tp.bytes(), runt);
  EXPECT_EQ(packet_dec_ttl(tp.pkt()), TtlResult::kNotIp);
}

// ---- dec_ttl ---------------------------------------------------------------------

TEST(PacketOps, DecTtlIpv4FixesChecksum) {
  TestPacket tp(ipv4_tcp());
  ASSERT_EQ(tp.at(14 + 8), 64);
  EXPECT_EQ(packet_dec_ttl(tp.pkt()), TtlResult::kOk);
  EXPECT_EQ(tp.at(14 + 8), 63);
  expect_consistent(tp);
}

TEST(PacketOps, DecTtlIpv6) {
  TestPacket tp(ipv6_udp());
  const uint16_t l3 = tp.pkt().l3_ofs;
  EXPECT_EQ(packet_dec_ttl(tp.pkt()), TtlResult::kOk);
  EXPECT_EQ(tp.at(l3 + 7), 63);
  expect_consistent(tp);
}

TEST(PacketOps, DecTtlExpiresAtOneAndZero) {
  for (uint8_t ttl : {1, 0}) {
    TestPacket v4(PacketBuilder().ipv4(1, 2, ttl).udp(1, 2).build());
    const std::vector<uint8_t> before = v4.bytes();
    EXPECT_EQ(packet_dec_ttl(v4.pkt()), TtlResult::kExpired);
    EXPECT_EQ(v4.bytes(), before);
    TestPacket v6(PacketBuilder().ipv6(ipv6_addr("::1"), ipv6_addr("::2"), ttl).udp(1, 2).build());
    EXPECT_EQ(packet_dec_ttl(v6.pkt()), TtlResult::kExpired);
  }
  TestPacket two(PacketBuilder().ipv4(1, 2, 2).udp(1, 2).build());
  EXPECT_EQ(packet_dec_ttl(two.pkt()), TtlResult::kOk);
  EXPECT_EQ(packet_dec_ttl(two.pkt()), TtlResult::kExpired);
}

TEST(PacketOps, DecTtlOnArpIsNotIp) {
  TestPacket tp(arp());
  EXPECT_EQ(packet_dec_ttl(tp.pkt()), TtlResult::kNotIp);
}

// ---- random action sequences ---------------------------------------------------------

TEST(PacketOpsRandom, ActionSequencesKeepKeyAndChecksumsInSync) {
  const uint64_t seed = test_seed();
  std::cout << "[ seed     ] SF_TEST_SEED=" << seed << " replays this test\n";
  RecordProperty("sf_test_seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::vector<uint8_t>> frames = {
      ipv4_tcp(),  ipv4_udp(), ipv4_udp(false),        ipv6_tcp(), ipv6_udp(), ipv6_icmpv6(),
      ipv4_icmp(), arp(),      vlan_ipv4_options_udp()};
  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
    return v;
  };
  for (int round = 0; round < 2000; ++round) {
    TestPacket tp(frames[rng() % frames.size()]);
    const uint16_t dl_type = ntohs(tp.pkt().key.dl_type);
    const uint8_t proto = tp.pkt().key.nw_proto;
    // Only fields the packet has, so the bytes can follow the key.
    std::vector<Field> fields = {Field::kDlSrc, Field::kDlDst, Field::kSfMetadata};
    if (dl_type != 0x86dd) fields.insert(fields.end(), {Field::kNwSrc, Field::kNwDst});
    if (dl_type == 0x86dd) fields.insert(fields.end(), {Field::kIpv6Src, Field::kIpv6Dst});
    if (dl_type != 0x0806) fields.push_back(Field::kNwTos);
    if (proto == 6 || proto == 17) fields.insert(fields.end(), {Field::kTpSrc, Field::kTpDst});
    for (int step = 0; step < 6; ++step) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
      if (rng() % 7 == 0 && dl_type != 0x0806) {
        packet_dec_ttl(tp.pkt());
      } else {
        const Field f = fields[rng() % fields.size()];
        const size_t n = field_info(f).size;
        std::vector<uint8_t> mask = rng() % 2 ? std::vector<uint8_t>(n, 0xff) : random_bytes(n);
        if (f == Field::kNwTos) mask[0] &= 0xfc;
        packet_set_field(tp.pkt(), set_masked(f, random_bytes(n), mask));
      }
      expect_consistent(tp);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace softflow

// The XDP parser against the fixture table and against userspace's
// parse_packet(), which it must equal rule for rule: for every frame the
// metadata's key, header offsets and parse flags are what userspace computes
// from the same bytes.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "../unit/test_util.h"
#include "softflow/packet_builder.h"
#include "softflow/protocols.h"
#include "xdp_corpus.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

constexpr size_t kEthHeaderLen = 14;

class XdpParse : public XdpTest {};

TEST_F(XdpParse, CorpusGivesTheTabulatedMetadataAndEqualsUserspace) {
  for (const ParseCase& c : parse_corpus()) {
    SCOPED_TRACE(c.description);
    const XdpRun r = run(c.frame);
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.verdict, c.verdict);
    ASSERT_TRUE(r.has_meta()) << "meta_len " << r.meta_len;
    EXPECT_EQ(r.meta.magic, SF_XDP_META_MAGIC);
    EXPECT_EQ(r.meta.parse_flags, c.parse_flags);
    EXPECT_EQ(r.meta.l3_ofs, c.l3_ofs);
    EXPECT_EQ(r.meta.l4_ofs, c.l4_ofs);
    EXPECT_EQ(r.meta.payload_ofs, c.payload_ofs);
    if (c.nw_proto) {
      EXPECT_EQ(r.meta.key.nw_proto, *c.nw_proto);
    }
    if (c.nw_frag) {
      EXPECT_EQ(r.meta.key.nw_frag, *c.nw_frag);
    }
    EXPECT_EQ(r.meta.result, SF_XDP_MISS);
    EXPECT_TRUE(meta_matches_userspace(r, c.frame));
    EXPECT_EQ(r.frame, c.frame) << "the program changed the frame";
  }
}

TEST_F(XdpParse, CorpusKeyFieldsAreInWireOrder) {
  // Spot checks of the byte order of what XDP copies, independent of
  // userspace.
  const auto tcp = PacketBuilder()
                       .vlan(10, 3)
                       .ipv4(ipv4_addr("10.1.2.3"), ipv4_addr("10.4.5.6"), 64, 0x2e)
                       .tcp(1234, 80, kTcpSyn | kTcpNs)
                       .build();
  const XdpRun r = run(tcp);
  ASSERT_TRUE(r.has_meta());
  const FlowKey& k = r.meta.key;
  EXPECT_EQ(k.dl_type, htons(0x0800));
  EXPECT_EQ(k.vlan_tci, htons(3 << 13 | SF_VLAN_PRESENT | 10));
  EXPECT_EQ(k.nw_src[0], htonl(0x0a010203));
  EXPECT_EQ(k.nw_dst[0], htonl(0x0a040506));
  EXPECT_EQ(k.nw_tos, 0x2e);
  EXPECT_EQ(k.tp_src, htons(1234));
  EXPECT_EQ(k.tp_dst, htons(80));
  EXPECT_EQ(k.tcp_flags, htons(kTcpSyn | kTcpNs));

  const auto icmp6 = PacketBuilder()
                         .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"), 64, 0xa5)
                         .icmpv6(135, 0)
                         .build();
  const XdpRun r6 = run(icmp6);
  ASSERT_TRUE(r6.has_meta());
  EXPECT_EQ(r6.meta.key.nw_tos, 0xa5);  // the traffic class, across the nibble boundary
  EXPECT_EQ(r6.meta.key.tp_src, htons(135));
  EXPECT_EQ(r6.meta.key.tp_dst, htons(0));
  const Ipv6Addr src = ipv6_addr("2001:db8::1");
  EXPECT_EQ(std::memcmp(r6.meta.key.nw_src, src.data(), 16), 0);
}

TEST_F(XdpParse, EveryTruncationOfTheCorpusEqualsUserspace) {
  size_t runs = 0;
  for (const ParseCase& c : parse_corpus()) {
    SCOPED_TRACE(c.description);
    // BPF_PROG_RUN takes no frame below an Ethernet header (see
    // RuntFramesAreRejectedByBpfProgRun).
    for (size_t len = kEthHeaderLen; len <= c.frame.size(); ++len) {
      const std::vector<uint8_t> prefix(c.frame.begin(),
                                        c.frame.begin() + static_cast<std::ptrdiff_t>(len));
      const XdpRun r = run(prefix);
      ASSERT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS)) << "len " << len;
      ASSERT_TRUE(meta_matches_userspace(r, prefix)) << "len " << len;
      ++runs;
    }
  }
  EXPECT_GT(runs, 1000u);
}

TEST_F(XdpParse, RuntFramesAreRejectedByBpfProgRun) {
  // The kernel's XDP test run refuses data_size_in < ETH_HLEN (EINVAL), so
  // the parser's own "shorter than an Ethernet header" branch cannot be
  // reached from here; 14 bytes is the shortest frame tested.
  const auto frame = PacketBuilder().ipv4(1, 2).udp(1, 2).build();
  for (size_t len = 0; len < kEthHeaderLen; ++len) {
    const std::vector<uint8_t> runt(frame.begin(),
                                    frame.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_EQ(run(runt).error, -EINVAL) << "len " << len;
    EXPECT_EQ(parse_in_userspace(runt).parse_flags, SF_PARSE_TRUNCATED_L2) << "len " << len;
  }
  const std::vector<uint8_t> header(frame.begin(), frame.begin() + kEthHeaderLen);
  const XdpRun r = run(header);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.meta.parse_flags, SF_PARSE_TRUNCATED_L3);  // ethertype 0x0800, no IPv4 header
  EXPECT_TRUE(meta_matches_userspace(r, header));
  EXPECT_EQ(xdp_->stats().rx, 1u);  // the rejected runs never reached the program
}

TEST_F(XdpParse, LongFramesParseWholeUpToOnePage) {
  // sf_xdp is a plain "xdp" program, not "xdp.frags": drivers do not run it
  // on multi-buffer frames and generic XDP linearises the frame for it.  Only
  // BPF_PROG_RUN hands it a frame longer than a page (less headroom and
  // skb_shared_info) as a multi-buffer one, of which the program reads the
  // linear part.  So here frames up to ~3.5 KB must equal userspace whole,
  // longer ones equal userspace on their linear part; and the
  // SF_XDP_MAX_LEN (UNPARSED) branch cannot be reached from BPF_PROG_RUN.
  bool saw_multi_buffer = false;
  for (size_t len : {1514, 2048, 3000, 3400, 4000, 9000}) {
    SCOPED_TRACE(len);
    const std::vector<uint8_t> frame = PacketBuilder()
                                           .vlan(7)
                                           .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
                                           .ipv6_hop_by_hop(512)
                                           .udp(1, 2)
                                           .pad_to(len)
                                           .build();
    ASSERT_EQ(frame.size(), len);
    const XdpRun r = run(frame);
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.frame, frame) << "the frame, fragments included, comes back unchanged";
    ASSERT_TRUE(r.has_meta());
    EXPECT_NE(r.meta.result, SF_XDP_UNPARSED);
    if (len <= 3400) {
      EXPECT_EQ(r.linear_len, len);
      EXPECT_TRUE(meta_matches_userspace(r, frame));
    } else {
      const std::vector<uint8_t> linear(frame.begin(), frame.begin() + r.linear_len);
      EXPECT_TRUE(meta_matches_userspace(r, linear));
    }
    saw_multi_buffer |= r.linear_len < len;
  }
  EXPECT_TRUE(saw_multi_buffer) << "a 9000-byte frame should arrive as multi-buffer";
}

// ---- random and mutated frames ---------------------------------------------------------

class FrameGenerator {
 public:
  explicit FrameGenerator(uint64_t seed) : rng_(seed) {
    for (const ParseCase& c : parse_corpus())
      if (c.frame.size() < 1024) corpus_.push_back(c.frame);
  }

  std::vector<uint8_t> next() {
    switch (rng_() % 6) {
      case 0:
        return random_bytes();
      case 1:
        return random_with_ethertype();
      case 2:
      case 3:
        return mutated_corpus_frame();
      case 4:
        return random_ipv6_chain();
      default:
        return random_ipv4();
    }
  }

 private:
  uint8_t byte() { return static_cast<uint8_t>(rng_()); }
  size_t below(size_t n) { return static_cast<size_t>(rng_() % n); }

  std::vector<uint8_t> random_bytes() {
    std::vector<uint8_t> b(kEthHeaderLen + below(180));
    for (uint8_t& x : b) x = byte();
    return b;
  }

  // Random bytes behind a header the parser takes: an IP/ARP ethertype,
  // perhaps behind one to three tags, with the right IP version nibble.
  std::vector<uint8_t> random_with_ethertype() {
    static constexpr uint16_t kTypes[] = {kEthTypeIpv4, kEthTypeIpv6, kEthTypeArp, kEthTypeVlan,
                                          kEthTypeQinQ};
    std::vector<uint8_t> b = random_bytes();
    b.resize(b.size() + 32);  // room for three tags and an ARP header
    for (uint8_t& x : b) x = byte();
    size_t type_ofs = 12;
    for (int tags = static_cast<int>(below(4)); tags > 0; --tags) {
      const uint16_t tpid = below(2) ? kEthTypeVlan : kEthTypeQinQ;
      b[type_ofs] = static_cast<uint8_t>(tpid >> 8);
      b[type_ofs + 1] = static_cast<uint8_t>(tpid);
      type_ofs += 4;
    }
    const uint16_t type = kTypes[below(std::size(kTypes))];
    b[type_ofs] = static_cast<uint8_t>(type >> 8);
    b[type_ofs + 1] = static_cast<uint8_t>(type);
    const size_t l3 = type_ofs + 2;
    if (type == kEthTypeIpv4) b[l3] = static_cast<uint8_t>(0x40 | (below(4) ? 5 : byte() & 0x0f));
    if (type == kEthTypeIpv6) b[l3] = static_cast<uint8_t>(0x60 | (byte() & 0x0f));
    if (type == kEthTypeArp && below(2)) {
      const uint8_t eth_ipv4_arp[] = {0, 1, 8, 0, 6, 4};
      std::copy(std::begin(eth_ipv4_arp), std::end(eth_ipv4_arp), b.begin() + l3);
    }
    if (below(3) == 0) b.resize(std::max(kEthHeaderLen, below(b.size() + 1)));
    return b;
  }

  // A real frame with a few bytes changed (mostly in the headers), maybe
  // cut short.
  std::vector<uint8_t> mutated_corpus_frame() {
    std::vector<uint8_t> b = corpus_[below(corpus_.size())];
    for (int flips = 1 + static_cast<int>(below(4)); flips > 0; --flips) {
      const size_t span = below(4) ? std::min<size_t>(b.size(), 80) : b.size();
      b[below(span)] = byte();
    }
    if (below(3) == 0) b.resize(std::max(kEthHeaderLen, below(b.size() + 1)));
    return b;
  }

  // IPv6 behind a random chain of extension headers of random sizes, with
  // random fragment fields and an upper layer that may or may not fit.
  std::vector<uint8_t> random_ipv6_chain() {
    static constexpr uint8_t kExt[] = {kProtoHopByHop, kProtoRouting, kProtoDestOpts,
                                       kProtoFragment, kProtoAh};
    static constexpr uint8_t kUpper[] = {kProtoTcp,  kProtoUdp,          kProtoIcmpv6,
                                         kProtoIcmp, kProtoNoNextHeader, 253};
    std::vector<uint8_t> b = PacketBuilder().ipv6(ipv6_addr("::1"), ipv6_addr("::2")).build();
    const size_t next_ofs = kEthHeaderLen + 6;
    size_t prev_next = next_ofs;
    for (int n = static_cast<int>(below(11)); n > 0; --n) {
      const uint8_t type = kExt[below(std::size(kExt))];
      b[prev_next] = type;
      const size_t ofs = b.size();
      size_t len;
      if (type == kProtoFragment) {
        len = 8;
      } else if (type == kProtoAh) {
        len = (below(6) + 2) * 4;
      } else {
        len = (below(4) + 1) * 8;
      }
      b.resize(ofs + len);
      for (size_t i = ofs; i < b.size(); ++i) b[i] = byte();
      if (type == kProtoAh) b[ofs + 1] = static_cast<uint8_t>(len / 4 - 2);
      if (type != kProtoAh && type != kProtoFragment)
        b[ofs + 1] = static_cast<uint8_t>(len / 8 - 1);
      if (type == kProtoFragment && below(2)) {  // not a fragment, or a first one
        b[ofs + 2] = 0;
        b[ofs + 3] &= 0x07;
      }
      if (below(10) == 0) b[ofs + 1] = byte();  // a length that lies
      prev_next = ofs;
    }
    b[prev_next] = kUpper[below(std::size(kUpper))];
    const size_t l4 = b.size();
    b.resize(l4 + below(48));
    for (size_t i = l4; i < b.size(); ++i) b[i] = byte();
    if (b.size() >= l4 + 13 && below(2)) b[l4 + 12] = static_cast<uint8_t>((5 + below(3)) << 4);
    // The payload length: right, or anything.
    const size_t payload_len = below(4) ? b.size() - kEthHeaderLen - 40 : below(b.size());
    b[kEthHeaderLen + 4] = static_cast<uint8_t>(payload_len >> 8);
    b[kEthHeaderLen + 5] = static_cast<uint8_t>(payload_len);
    return b;
  }

  // IPv4 with random IHL, lengths, fragment fields and protocol.
  std::vector<uint8_t> random_ipv4() {
    static constexpr uint8_t kProtos[] = {kProtoTcp, kProtoUdp, kProtoIcmp, kProtoIcmpv6, 253};
    std::vector<uint8_t> b = PacketBuilder().ipv4(1, 2).build();
    const size_t ip = kEthHeaderLen;
    const size_t options = below(3) ? 0 : below(11) * 4;
    b.resize(b.size() + options + below(64));
    for (size_t i = ip + 20; i < b.size(); ++i) b[i] = byte();
    b[ip] = static_cast<uint8_t>(0x40 | ((20 + options) / 4));
    if (below(8) == 0) b[ip] = byte();
    b[ip + 9] = kProtos[below(std::size(kProtos))];
    const size_t total = below(4) ? b.size() - ip : below(b.size());
    b[ip + 2] = static_cast<uint8_t>(total >> 8);
    b[ip + 3] = static_cast<uint8_t>(total);
    if (below(4) == 0) {
      b[ip + 6] = byte();
      b[ip + 7] = byte();
    }
    const size_t l4 = ip + 20 + options;
    if (b.size() >= l4 + 13 && below(2)) b[l4 + 12] = static_cast<uint8_t>(below(16) << 4);
    if (b.size() >= l4 + 6 && below(2)) {
      const size_t udp_len = below(4) ? b.size() - l4 : below(b.size());
      b[l4 + 4] = static_cast<uint8_t>(udp_len >> 8);
      b[l4 + 5] = static_cast<uint8_t>(udp_len);
    }
    if (below(2)) b.resize(b.size() + below(20), 0);  // Ethernet padding
    return b;
  }

  std::mt19937_64 rng_;
  std::vector<std::vector<uint8_t>> corpus_;
};

TEST_F(XdpParse, RandomAndMutatedFramesEqualUserspace) {
  const uint64_t seed = test::test_seed(0x5f78647001);
  FrameGenerator generator(seed);
  constexpr int kFrames = 20000;
  int malformed = 0;
  for (int i = 0; i < kFrames; ++i) {
    const std::vector<uint8_t> frame = generator.next();
    const XdpRun r = run(frame);
    ASSERT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS)) << "frame " << i << " of seed " << seed;
    ASSERT_TRUE(meta_matches_userspace(r, frame))
        << "frame " << i << " of seed " << seed << " (SF_TEST_SEED=" << seed << " replays it)";
    if (r.meta.parse_flags != 0) ++malformed;
  }
  // The generator must reach both outcomes, or it tests little.
  EXPECT_GT(malformed, kFrames / 10);
  EXPECT_LT(malformed, kFrames * 9 / 10);
  const sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.rx, static_cast<uint64_t>(kFrames));
  EXPECT_EQ(s.malformed, static_cast<uint64_t>(malformed));
}

}  // namespace
}  // namespace softflow::bpf_test

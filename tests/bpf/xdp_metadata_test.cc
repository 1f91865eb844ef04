// What the XDP program writes in front of a frame, the verdicts it returns
// without an AF_XDP socket, and its counters: for ports, for interfaces that
// are not ports, and for malformed frames.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "xdp_corpus.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

std::vector<uint8_t> udp_frame() {
  return PacketBuilder()
      .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
      .udp(1000, 53)
      .payload("query")
      .build();
}

// Counters as one comparable line.
std::string counters(const sf_xdp_stats& s) {
  return "rx=" + std::to_string(s.rx) + " emc_hits=" + std::to_string(s.emc_hits) +
         " megaflow_hits=" + std::to_string(s.megaflow_hits) +
         " misses=" + std::to_string(s.misses) + " unparsed=" + std::to_string(s.unparsed) +
         " malformed=" + std::to_string(s.malformed) + " not_port=" + std::to_string(s.not_port) +
         " no_socket=" + std::to_string(s.no_socket) +
         " meta_failed=" + std::to_string(s.meta_failed) +
         " mask_searches=" + std::to_string(s.mask_searches);
}

class XdpMetadata : public XdpTest {};

TEST_F(XdpMetadata, BasicsOfAParsedFrameWithoutSocket) {
  const std::vector<uint8_t> frame = udp_frame();
  const XdpRun r = run(frame);
  ASSERT_EQ(r.error, 0);
  // No socket in sf_xsks: bpf_redirect_map falls back to XDP_PASS.
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS));
  ASSERT_EQ(r.meta_len, sizeof(sf_xdp_meta)) << "data - data_meta after the run";
  const sf_xdp_meta& m = r.meta;
  EXPECT_EQ(m.magic, SF_XDP_META_MAGIC);
  EXPECT_EQ(m.key.in_port, kOfPort);
  EXPECT_EQ(m.datapath, kDatapath);
  EXPECT_EQ(m.key.sf_stage, 0);
  EXPECT_EQ(m.key.sf_action, SF_ACTION_NONE);
  EXPECT_EQ(m.key.sf_metadata, 0u);
  EXPECT_EQ(m.hash, sf_hash_words(key_words(m.key), nullptr));
  EXPECT_EQ(m.result, SF_XDP_MISS);
  EXPECT_EQ(m.ref.id, 0u);
  EXPECT_EQ(m.ref.generation, 0u);
  EXPECT_EQ(m.parse_flags, 0);
  EXPECT_EQ(m.l3_ofs, 14);
  EXPECT_EQ(m.l4_ofs, 34);
  EXPECT_EQ(m.payload_ofs, 42);
  EXPECT_EQ(m.pad, 0);
  EXPECT_EQ(m.reserved, 0u);
  EXPECT_EQ(r.frame, frame) << "the frame after the metadata must be untouched";
  EXPECT_TRUE(meta_matches_userspace(r, frame));

  sf_xdp_stats expected{};
  expected.rx = 1;
  expected.misses = 1;
  expected.no_socket = 1;
  EXPECT_EQ(counters(xdp_->stats()), counters(expected));

  ASSERT_EQ(run(frame).verdict, static_cast<uint32_t>(XDP_PASS));
  expected.rx = 2;
  expected.misses = 2;
  expected.no_socket = 2;
  EXPECT_EQ(counters(xdp_->stats()), counters(expected));
}

TEST_F(XdpMetadata, PortAndDatapathComeFromSfPorts) {
  sf_port port = default_port();
  port.ofport = 0xfffffff0;  // in_port is host order, all 32 bits
  port.datapath[0] = 63;
  port.datapath[1] = 5;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  const XdpRun r = run(udp_frame());
  ASSERT_TRUE(r.has_meta());
  EXPECT_EQ(r.meta.key.in_port, 0xfffffff0u);
  EXPECT_EQ(r.meta.datapath, 63);  // queue 0's
  EXPECT_EQ(r.meta.hash, sf_hash_words(key_words(r.meta.key), nullptr));
}

TEST_F(XdpMetadata, NoMapIsPinned) {
  const std::vector<XdpProgram::MapPinning> maps = xdp_->pinning();
  std::set<std::string> names;
  for (const XdpProgram::MapPinning& m : maps) {
    names.insert(m.name);
    EXPECT_EQ(m.pin_path, nullptr) << m.name << " would be pinned at " << m.pin_path;
    EXPECT_FALSE(m.pinned) << m.name;
  }
  for (const char* name : {SF_MAP_PORTS, SF_MAP_XSKS, SF_MAP_MASKS, SF_MAP_MEGAFLOWS, SF_MAP_CONFIG,
                           SF_MAP_EMC, SF_MAP_MASK_HITS, SF_MAP_STATS})
    EXPECT_EQ(names.count(name), 1u) << name;
}

// ---- not a port -----------------------------------------------------------------------

class XdpNotAPort : public XdpTest {};

TEST_F(XdpNotAPort, InterfaceOutsideSfPortsPassesUntouched) {
  ASSERT_TRUE(xdp_->delete_port(lo_ifindex_));
  const std::vector<uint8_t> frame = udp_frame();
  const XdpRun r = run(frame);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS));
  EXPECT_EQ(r.meta_len, 0u) << "no metadata for a frame that is not the switch's";
  EXPECT_EQ(r.frame, frame);
  sf_xdp_stats expected{};
  expected.not_port = 1;
  EXPECT_EQ(counters(xdp_->stats()), counters(expected));
}

TEST_F(XdpNotAPort, QueueWithoutSocketPassesUntouched) {
  sf_port port = default_port();
  port.n_queues = 0;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  const std::vector<uint8_t> frame = udp_frame();
  const XdpRun r = run(frame);
  ASSERT_EQ(r.error, 0);
  EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS));
  EXPECT_EQ(r.meta_len, 0u);
  EXPECT_EQ(r.frame, frame);
  sf_xdp_stats expected{};
  expected.no_socket = 1;
  EXPECT_EQ(counters(xdp_->stats()), counters(expected));
}

// ---- malformed frames -----------------------------------------------------------------

class XdpMalformed : public XdpTest {};

TEST_F(XdpMalformed, CountedAndStillGivenMetadataWithUserspaceFlags) {
  uint64_t expected_malformed = 0;
  uint64_t runs = 0;
  int n_malformed_cases = 0;
  for (const ParseCase& c : parse_corpus()) {
    SCOPED_TRACE(c.description);
    const XdpRun r = run(c.frame);
    ++runs;
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.verdict, c.verdict);
    ASSERT_TRUE(r.has_meta()) << "a malformed frame still gets metadata";
    EXPECT_EQ(r.meta.magic, SF_XDP_META_MAGIC);
    EXPECT_EQ(r.meta.parse_flags, c.parse_flags);
    EXPECT_EQ(r.meta.parse_flags, parse_in_userspace(c.frame).parse_flags);
    // The key of whatever parsed is valid: looked up, not left to userspace.
    EXPECT_EQ(r.meta.result, SF_XDP_MISS);
    EXPECT_TRUE(meta_matches_userspace(r, c.frame));
    if (c.parse_flags != 0) {
      ++expected_malformed;
      ++n_malformed_cases;
    }
    const sf_xdp_stats s = xdp_->stats();
    ASSERT_EQ(s.malformed, expected_malformed) << "after " << runs << " frames";
    ASSERT_EQ(s.rx, runs);
    ASSERT_EQ(s.misses, runs);
    ASSERT_EQ(s.unparsed, 0u);
  }
  EXPECT_GE(n_malformed_cases, 30) << "the corpus should hold many malformed frames";
}

}  // namespace
}  // namespace softflow::bpf_test

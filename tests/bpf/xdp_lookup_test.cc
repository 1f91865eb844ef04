// The XDP program's lookups: the per-CPU EMC, then the stage-0 megaflow
// mirror searched mask by mask in sf_config.order.
#include <gtest/gtest.h>
#include <sched.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

std::vector<uint8_t> udp_frame(uint32_t dst = ipv4_addr("10.0.0.2"), uint16_t sport = 1000) {
  return PacketBuilder().ipv4(ipv4_addr("10.0.0.1"), dst).udp(sport, 53).payload("query").build();
}

FlowKey mask_of(std::initializer_list<Field> fields) {
  FlowKey mask = zero_key();
  for (Field f : fields) key_or_into(mask, field_mask(f));
  return mask;
}

const char* result_name(uint8_t result) {
  switch (result) {
    case SF_XDP_MISS:
      return "MISS";
    case SF_XDP_EMC_HIT:
      return "EMC_HIT";
    case SF_XDP_MEGAFLOW_HIT:
      return "MEGAFLOW_HIT";
    case SF_XDP_UNPARSED:
      return "UNPARSED";
    default:
      return "?";
  }
}

// The lookup result and megaflow reference of a run, comparable in one go.
struct Lookup {
  std::string result;
  uint32_t id;
  uint32_t generation;
  bool operator==(const Lookup&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Lookup& l) {
  return os << l.result << " {" << l.id << ", " << l.generation << "}";
}
Lookup hit(uint8_t result, uint32_t id, uint32_t generation) {
  return {result_name(result), id, generation};
}
const Lookup kMiss = {"MISS", 0, 0};

class XdpLookup : public XdpTest {
 protected:
  // Masks on in_port + dl_type + nw_dst and on in_port + dl_type + tp_dst.
  static constexpr uint32_t kDstSlot = 1;
  static constexpr uint32_t kPortSlot = 5;

  void SetUp() override {
    XdpTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(xdp_->set_mask(kDstSlot, dst_mask_));
    ASSERT_TRUE(xdp_->set_mask(kPortSlot, port_mask_));
  }

  // The frame's stage-0 key as userspace builds it (equal to XDP's; see
  // xdp_parse_test.cc).
  static FlowKey key_of(const std::vector<uint8_t>& frame) {
    return parse_in_userspace(frame, kOfPort).key;
  }

  void configure(std::initializer_list<uint8_t> order, uint32_t epoch, int n_masks = -1) {
    sf_xdp_config config{};
    config.n_masks =
        n_masks >= 0 ? static_cast<uint32_t>(n_masks) : static_cast<uint32_t>(order.size());
    config.emc_epoch = epoch;
    size_t i = 0;
    for (uint8_t slot : order) config.order[i++] = slot;
    ASSERT_TRUE(xdp_->set_config(config));
  }

  void bump_epoch() {
    sf_xdp_config config;
    ASSERT_TRUE(xdp_->get_config(&config));
    ++config.emc_epoch;
    ASSERT_TRUE(xdp_->set_config(config));
  }

  void add(uint32_t slot, const FlowKey& mask, const std::vector<uint8_t>& frame, uint32_t id,
           uint32_t generation, uint32_t datapath = kDatapath) {
    ASSERT_TRUE(xdp_->add_megaflow(slot, datapath, key_and(key_of(frame), mask), {id, generation}));
  }

  Lookup lookup(const std::vector<uint8_t>& frame) {
    const XdpRun r = run(frame);
    EXPECT_EQ(r.error, 0);
    EXPECT_TRUE(r.has_meta());
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS));
    return {result_name(r.meta.result), r.meta.ref.id, r.meta.ref.generation};
  }

  const FlowKey dst_mask_ = mask_of({Field::kInPort, Field::kDlType, Field::kNwDst});
  const FlowKey port_mask_ = mask_of({Field::kInPort, Field::kDlType, Field::kTpDst});
};

TEST_F(XdpLookup, MirrorHitThenEmcHitOnTheSameCpu) {
  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);

  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.megaflow_hits, 1u);
  EXPECT_EQ(s.mask_searches, 1u);
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 1u);

  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));
  s = xdp_->stats();
  EXPECT_EQ(s.emc_hits, 1u);
  EXPECT_EQ(s.megaflow_hits, 1u);
  EXPECT_EQ(s.mask_searches, 1u) << "an EMC hit searches no mask";
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 1u);
}

TEST_F(XdpLookup, EpochBumpSendsTheNextPacketBackToTheMirror) {
  configure({kDstSlot}, 7);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));
  bump_epoch();
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));
}

TEST_F(XdpLookup, RemovedEntryMissesOnceTheEpochMoves) {
  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  ASSERT_TRUE(xdp_->delete_megaflow(kDstSlot, kDatapath, key_and(key_of(udp_frame()), dst_mask_)));
  // Until the epoch moves the EMC still answers: that is why userspace bumps
  // it on every removal (and verifies every reference it is given).
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));
  bump_epoch();
  EXPECT_EQ(lookup(udp_frame()), kMiss);
  EXPECT_EQ(xdp_->stats().misses, 1u);
}

TEST_F(XdpLookup, KeyOutsideTheMaskedValueMisses) {
  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);
  EXPECT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.3"))), kMiss);
  EXPECT_EQ(xdp_->stats().mask_searches, 1u);
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 0u);
  // A different ingress port is outside the mask too (in_port is in it).
  sf_port port = default_port();
  port.ofport = kOfPort + 1;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  EXPECT_EQ(lookup(udp_frame()), kMiss);
}

TEST_F(XdpLookup, WildcardedFieldsDoNotMatter) {
  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);
  // Another source port: not in the mask, so the same megaflow; a new EMC key.
  EXPECT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.2"), 2000)), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  EXPECT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.2"), 2000)), hit(SF_XDP_EMC_HIT, 42, 5));
}

TEST_F(XdpLookup, EntriesBelongToOneDatapath) {
  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 44, 1, /*datapath=*/4);
  EXPECT_EQ(lookup(udp_frame()), kMiss) << "datapath 3 must not find datapath 4's megaflow";

  sf_port port = default_port();
  port.datapath[0] = 4;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 44, 1));
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 44, 1));

  // Datapath 4's EMC entry is no answer for datapath 3 either.
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, default_port()));
  EXPECT_EQ(lookup(udp_frame()), kMiss);
}

TEST_F(XdpLookup, MasksAreSearchedInConfigOrder) {
  add(kDstSlot, dst_mask_, udp_frame(), 100, 1);
  add(kPortSlot, port_mask_, udp_frame(), 500, 1);

  configure({kPortSlot, kDstSlot}, 1);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 500, 1));
  EXPECT_EQ(xdp_->mask_hits(kPortSlot), 1u);
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 0u);
  EXPECT_EQ(xdp_->stats().mask_searches, 1u) << "the search stops at the first hit";

  configure({kDstSlot, kPortSlot}, 2);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 100, 1));
  EXPECT_EQ(xdp_->mask_hits(kPortSlot), 1u);
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 1u);

  // A frame only the second mask in order matches is found there.
  EXPECT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.9"))), hit(SF_XDP_MEGAFLOW_HIT, 500, 1));
  EXPECT_EQ(xdp_->stats().mask_searches, 1u + 1u + 2u);
}

TEST_F(XdpLookup, OnlyTheFirstNMasksAreSearched) {
  add(kPortSlot, port_mask_, udp_frame(), 500, 1);

  configure({kDstSlot, kPortSlot}, 1, /*n_masks=*/0);
  EXPECT_EQ(lookup(udp_frame()), kMiss);
  EXPECT_EQ(xdp_->stats().mask_searches, 0u) << "n_masks 0: no search";

  configure({kDstSlot, kPortSlot}, 1, /*n_masks=*/1);
  EXPECT_EQ(lookup(udp_frame()), kMiss);
  EXPECT_EQ(xdp_->stats().mask_searches, 1u);

  configure({kDstSlot, kPortSlot}, 1, /*n_masks=*/2);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 500, 1));
  EXPECT_EQ(xdp_->stats().mask_searches, 3u);
}

TEST_F(XdpLookup, SlotOutsideTheMaskArrayEndsTheSearch) {
  add(kPortSlot, port_mask_, udp_frame(), 500, 1);
  configure({SF_MAX_MASKS, kPortSlot}, 1);
  EXPECT_EQ(lookup(udp_frame()), kMiss);
  EXPECT_EQ(xdp_->stats().mask_searches, 0u);
}

TEST_F(XdpLookup, MaskHitsCountPerSlot) {
  configure({kDstSlot, kPortSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 100, 1);
  add(kPortSlot, port_mask_, udp_frame(ipv4_addr("10.0.0.9")), 500, 1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.2"), static_cast<uint16_t>(2000 + i))),
              hit(SF_XDP_MEGAFLOW_HIT, 100, 1));
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.9"), static_cast<uint16_t>(3000 + i))),
              hit(SF_XDP_MEGAFLOW_HIT, 500, 1));
  }
  ASSERT_EQ(lookup(udp_frame(ipv4_addr("10.0.0.9"), 3000)), hit(SF_XDP_EMC_HIT, 500, 1));
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 3u);
  EXPECT_EQ(xdp_->mask_hits(kPortSlot), 2u) << "EMC hits are not mask hits";
  EXPECT_EQ(xdp_->mask_hits(0), 0u);
  const sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.megaflow_hits, 5u);
  EXPECT_EQ(s.emc_hits, 1u);
}

TEST_F(XdpLookup, GenerationZeroEntriesAreIgnored) {
  configure({kDstSlot, kPortSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 100, 0);
  EXPECT_EQ(lookup(udp_frame()), kMiss);
  EXPECT_EQ(lookup(udp_frame()), kMiss) << "and not cached in the EMC";
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 0u);

  // The search goes on past a generation-0 entry.
  add(kPortSlot, port_mask_, udp_frame(), 500, 9);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 500, 9));
  EXPECT_EQ(xdp_->mask_hits(kPortSlot), 1u);
}

TEST_F(XdpLookup, TheEmcIsPerCpu) {
  const int here = sched_getcpu();  // the one CPU the fixture pinned
  int other = -1;
  for (int c : usable_cpus())
    if (c != here && other < 0) other = c;
  if (other < 0) GTEST_SKIP() << "needs a second CPU";

  configure({kDstSlot}, 1);
  add(kDstSlot, dst_mask_, udp_frame(), 42, 5);
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5));
  ASSERT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));

  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(other, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_MEGAFLOW_HIT, 42, 5)) << "CPU " << other;
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5));
  CPU_ZERO(&one);
  CPU_SET(here, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  EXPECT_EQ(lookup(udp_frame()), hit(SF_XDP_EMC_HIT, 42, 5)) << "CPU " << here;
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 2u);
}

}  // namespace
}  // namespace softflow::bpf_test

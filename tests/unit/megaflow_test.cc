// The megaflow cache: tuple-space classifier, EMC, ids with generations,
// limits and idle expiry.
#include <gtest/gtest.h>

#include <vector>

#include "softflow/megaflow.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::key;
using test::prefix_mask;

constexpr uint64_t kSec = 1'000'000'000ULL;

FlowKey mask_of(std::initializer_list<std::pair<Field, uint64_t>> fields) { return key(fields); }

std::vector<MegaflowSegment> segments_for(uint32_t port) {
  MegaflowSegment seg;
  seg.actions = {Action::output(port)};
  return {seg};
}

uint32_t port_of(const Megaflow* mf) {
  if (mf == nullptr || mf->segments.empty() || mf->segments[0].actions.empty()) return 0;
  return mf->segments[0].actions[0].port;
}

FlowKey ip_key(uint32_t src, uint32_t dst, uint16_t dport, uint32_t in_port = 1) {
  return key({{Field::kInPort, in_port},
              {Field::kDlType, 0x0800},
              {Field::kNwProto, 17},
              {Field::kNwSrc, src},
              {Field::kNwDst, dst},
              {Field::kTpSrc, 4000},
              {Field::kTpDst, dport}});
}

Megaflow* lookup(MegaflowCache& c, const FlowKey& k, MegaflowLookupStats* stats = nullptr) {
  MegaflowLookupStats local;
  return c.lookup(k, key_hash(k), stats ? *stats : local);
}

TEST(Megaflow, TupleSpaceLookupAcrossMasks) {
  MegaflowCache c;
  const FlowKey m32 = mask_of({{Field::kNwDst, 0xffffffff}, {Field::kDlType, 0xffff}});
  const FlowKey m16 = mask_of({{Field::kNwDst, prefix_mask(16)}, {Field::kDlType, 0xffff}});
  const FlowKey mport = mask_of({{Field::kTpDst, 0xffff}, {Field::kNwProto, 0xff}});
  const FlowKey mport_in = mask_of({{Field::kInPort, 0xffffffff}, {Field::kTpDst, 0xffff}});
  ASSERT_NE(c.install(ip_key(1, 0x0a000001, 0), m32, segments_for(1), 0), nullptr);
  ASSERT_NE(c.install(ip_key(1, 0x0a000002, 0), m32, segments_for(2), 0), nullptr);
  ASSERT_NE(c.install(ip_key(1, 0x0b010000, 0), m16, segments_for(3), 0), nullptr);
  ASSERT_NE(c.install(ip_key(1, 0x0c000000, 53), mport, segments_for(4), 0), nullptr);
  ASSERT_NE(c.install(ip_key(1, 0x0c000000, 80, 7), mport_in, segments_for(5), 0), nullptr);
  EXPECT_EQ(c.size(), 5u);
  EXPECT_EQ(c.subtable_count(), 4u);

  EXPECT_EQ(port_of(lookup(c, ip_key(9, 0x0a000001, 9))), 1u);
  EXPECT_EQ(port_of(lookup(c, ip_key(9, 0x0a000002, 9))), 2u);
  EXPECT_EQ(port_of(lookup(c, ip_key(9, 0x0b01abcd, 9))), 3u);
  EXPECT_EQ(port_of(lookup(c, ip_key(9, 0x0d000000, 53))), 4u);
  EXPECT_EQ(port_of(lookup(c, ip_key(9, 0x0d000000, 80, 7))), 5u);
  MegaflowLookupStats s;
  EXPECT_EQ(lookup(c, ip_key(9, 0x0a000003, 9), &s), nullptr);
  EXPECT_EQ(lookup(c, ip_key(9, 0x0d000000, 80, 8), &s), nullptr);  // in_port differs
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.megaflow_hits, 0u);
  EXPECT_EQ(s.subtables_searched, 8u);  // every subtable, twice
  // The stored key is masked.
  Megaflow* mf = lookup(c, ip_key(9, 0x0b01abcd, 9));
  ASSERT_NE(mf, nullptr);
  EXPECT_TRUE(key_equal(mf->key, key_and(ip_key(1, 0x0b010000, 0), m16)));
  EXPECT_TRUE(key_equal(mf->mask, m16));
}

TEST(Megaflow, EmcHitFollowsClassifierHit) {
  MegaflowCache c;
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  ASSERT_NE(c.install(ip_key(1, 0x0a000001, 0), m, segments_for(1), 0), nullptr);
  const FlowKey k = ip_key(5, 0x0a000001, 80);
  MegaflowLookupStats s;
  EXPECT_EQ(c.lookup_emc(k, key_hash(k)), nullptr);  // not yet
  Megaflow* first = c.lookup(k, key_hash(k), s);
  EXPECT_EQ(s.megaflow_hits, 1u);
  EXPECT_EQ(s.emc_hits, 0u);
  Megaflow* second = c.lookup(k, key_hash(k), s);
  EXPECT_EQ(second, first);
  EXPECT_EQ(s.megaflow_hits, 1u);
  EXPECT_EQ(s.emc_hits, 1u);
  EXPECT_EQ(c.lookup_emc(k, key_hash(k)), first);
  // The EMC is exact: another key of the same megaflow goes to the classifier.
  const FlowKey k2 = ip_key(6, 0x0a000001, 80);
  c.lookup(k2, key_hash(k2), s);
  EXPECT_EQ(s.megaflow_hits, 2u);

  // EMC disabled: never an EMC hit.
  MegaflowCache no_emc(MegaflowCacheConfig{.emc_entries = 0});
  ASSERT_NE(no_emc.install(ip_key(1, 0x0a000001, 0), m, segments_for(1), 0), nullptr);
  MegaflowLookupStats s2;
  for (int i = 0; i < 3; ++i) EXPECT_NE(no_emc.lookup(k, key_hash(k), s2), nullptr);
  EXPECT_EQ(s2.emc_hits, 0u);
  EXPECT_EQ(s2.megaflow_hits, 3u);
}

TEST(Megaflow, EmcEntryIsInvalidAfterRemove) {
  MegaflowCache c;
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  const FlowKey k = ip_key(5, 0x0a000001, 80);
  Megaflow* mf = c.install(k, m, segments_for(1), 0);
  ASSERT_NE(mf, nullptr);
  lookup(c, k);
  ASSERT_EQ(c.lookup_emc(k, key_hash(k)), mf);
  c.remove(mf);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.lookup_emc(k, key_hash(k)), nullptr);
  MegaflowLookupStats s;
  EXPECT_EQ(c.lookup(k, key_hash(k), s), nullptr);
  EXPECT_EQ(s.misses, 1u);
  // A new megaflow in the same slot (other actions) is not reached through
  // the old EMC entry: the lookup must return the new one's actions.
  Megaflow* again = c.install(k, m, segments_for(2), 0);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(port_of(lookup(c, k)), 2u);
}

TEST(Megaflow, ReusedSlotGetsNewGeneration) {
  MegaflowCache c;
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  Megaflow* a = c.install(ip_key(1, 0x0a000001, 0), m, segments_for(1), 0);
  ASSERT_NE(a, nullptr);
  const uint32_t id = a->id, gen = a->generation;
  EXPECT_NE(gen, 0u);
  EXPECT_EQ(c.find(id, gen), a);
  EXPECT_EQ(c.find(id, gen + 1), nullptr);
  EXPECT_EQ(c.find(id + 100, gen), nullptr);
  c.remove(a);
  EXPECT_EQ(c.find(id, gen), nullptr);
  Megaflow* b = c.install(ip_key(1, 0x0a000002, 0), m, segments_for(2), 0);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->id, id);  // the slot is reused
  EXPECT_NE(b->generation, gen);
  EXPECT_EQ(c.find(id, gen), nullptr);
  EXPECT_EQ(c.find(id, b->generation), b);
  EXPECT_EQ(port_of(c.find(id, b->generation)), 2u);
}

TEST(Megaflow, IdenticalInstallReturnsExistingEntry) {
  MegaflowCache c;
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  Megaflow* a = c.install(ip_key(1, 0x0a000001, 1), m, segments_for(1), 0);
  // Same mask and masked key (differs only in wildcarded bits).
  Megaflow* b = c.install(ip_key(2, 0x0a000001, 2), m, segments_for(2), 5);
  EXPECT_EQ(a, b);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(port_of(b), 1u);  // the first one's program is kept
  // A different mask is a different megaflow, even if it overlaps.
  Megaflow* d = c.install(ip_key(1, 0x0a000001, 1), mask_of({{Field::kNwDst, prefix_mask(8)}}),
                          segments_for(3), 0);
  EXPECT_NE(d, a);
  EXPECT_EQ(c.size(), 2u);
}

TEST(Megaflow, MaxMegaflowsLimit) {
  MegaflowCache c(MegaflowCacheConfig{.max_megaflows = 3});
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  std::vector<Megaflow*> in;
  for (uint32_t i = 0; i < 3; ++i) in.push_back(c.install(ip_key(1, 0x0a000000 + i, 0), m, segments_for(i + 1), 0));
  for (Megaflow* mf : in) ASSERT_NE(mf, nullptr);
  EXPECT_EQ(c.install(ip_key(1, 0x0a0000ff, 0), m, segments_for(9), 0), nullptr);
  // A full cache refuses new masks too, and leaves no empty subtable behind.
  EXPECT_EQ(c.install(ip_key(1, 0x0a0000ff, 0), mask_of({{Field::kTpDst, 0xffff}}), segments_for(9), 0),
            nullptr);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.subtable_count(), 1u);
  // An existing one is still returned when full.
  EXPECT_EQ(c.install(ip_key(7, 0x0a000001, 0), m, segments_for(9), 0), in[1]);
  c.remove(in[0]);
  EXPECT_NE(c.install(ip_key(1, 0x0a0000ff, 0), m, segments_for(9), 0), nullptr);
  EXPECT_EQ(c.size(), 3u);
  c.set_max_megaflows(4);
  EXPECT_NE(c.install(ip_key(1, 0x0a0000fe, 0), m, segments_for(9), 0), nullptr);
  EXPECT_EQ(c.size(), 4u);
}

TEST(Megaflow, IdleExpiryWithInjectedClock) {
  MegaflowCache c;
  EXPECT_EQ(c.config().idle_timeout_ns, 10 * kSec);  // the documented default
  const FlowKey m = mask_of({{Field::kNwDst, 0xffffffff}});
  Megaflow* a = c.install(ip_key(1, 0x0a000001, 0), m, segments_for(1), 0);
  Megaflow* b = c.install(ip_key(1, 0x0a000002, 0), m, segments_for(2), 5 * kSec);
  Megaflow* d = c.install(ip_key(1, 0x0a000003, 0), m, segments_for(3), 1 * kSec);
  ASSERT_TRUE(a && b && d);
  d->used_ns = 9 * kSec;  // used since
  const uint32_t a_id = a->id, a_gen = a->generation;
  std::vector<uint32_t> removed;
  auto collect = [&](Megaflow& mf) { removed.push_back(port_of(&mf)); };
  EXPECT_EQ(c.expire(10 * kSec, collect), 0u);  // a idle exactly 10 s: kept
  EXPECT_EQ(c.expire(10 * kSec + 1, collect), 1u);
  EXPECT_EQ(removed, std::vector<uint32_t>{1});
  EXPECT_EQ(c.find(a_id, a_gen), nullptr);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.expire(15 * kSec, collect), 0u);
  EXPECT_EQ(c.expire(15 * kSec + 1, collect), 1u);  // b (created at 5 s)
  EXPECT_EQ(removed, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(port_of(lookup(c, ip_key(1, 0x0a000003, 0))), 3u);  // d, used at 9 s
  EXPECT_EQ(c.expire(19 * kSec + 1, collect), 1u);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.subtable_count(), 0u);

  // A shorter timeout.
  c.set_idle_timeout_ns(kSec);
  ASSERT_NE(c.install(ip_key(1, 0x0a000001, 0), m, segments_for(1), 100 * kSec), nullptr);
  EXPECT_EQ(c.expire(101 * kSec, collect), 0u);
  EXPECT_EQ(c.expire(101 * kSec + 1, collect), 1u);
}

TEST(Megaflow, SubtableGoesWithItsLastFlow) {
  MegaflowCache c;
  const FlowKey m1 = mask_of({{Field::kNwDst, 0xffffffff}});
  const FlowKey m2 = mask_of({{Field::kTpDst, 0xffff}});
  Megaflow* a = c.install(ip_key(1, 0x0a000001, 0), m1, segments_for(1), 0);
  Megaflow* b = c.install(ip_key(1, 0x0a000002, 0), m1, segments_for(2), 0);
  Megaflow* d = c.install(ip_key(1, 0, 80), m2, segments_for(3), 0);
  EXPECT_EQ(c.subtable_count(), 2u);
  c.remove(a);
  EXPECT_EQ(c.subtable_count(), 2u);
  c.remove(a);  // twice: no effect
  EXPECT_EQ(c.size(), 2u);
  c.remove(b);
  EXPECT_EQ(c.subtable_count(), 1u);
  EXPECT_EQ(port_of(lookup(c, ip_key(3, 3, 80))), 3u);
  c.remove(d);
  EXPECT_EQ(c.subtable_count(), 0u);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(lookup(c, ip_key(3, 3, 80)), nullptr);

  for (uint32_t i = 0; i < 10; ++i) c.install(ip_key(1, i, i), i % 2 ? m1 : m2, segments_for(i), 0);
  EXPECT_EQ(c.subtable_count(), 2u);
  c.clear();
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.subtable_count(), 0u);
}

TEST(Megaflow, ManyFlowsSurviveSubtableRanking) {
  // Enough lookups to trigger the periodic subtable re-ranking; every
  // lookup must still find its own megaflow.
  MegaflowCache c;
  std::vector<FlowKey> masks;
  for (int len = 8; len <= 32; len += 4) masks.push_back(mask_of({{Field::kNwDst, prefix_mask(len)}, {Field::kTpDst, 0xffff}}));
  for (uint16_t port = 0; port < 7; ++port)
    ASSERT_NE(c.install(ip_key(0, 0x0a000000u + port, port), masks[port], segments_for(port + 1), 0), nullptr);
  EXPECT_EQ(c.subtable_count(), 7u);
  for (int i = 0; i < 40000; ++i) {
    const uint16_t port = static_cast<uint16_t>(i % 7 == 0 ? 6 : i % 3);
    const FlowKey k = ip_key(static_cast<uint32_t>(i), 0x0a000000u + port, port);
    ASSERT_EQ(port_of(lookup(c, k)), port + 1u) << i;
  }
}

}  // namespace
}  // namespace softflow

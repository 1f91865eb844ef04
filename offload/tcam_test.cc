// The TCAM model (indexes, generations, marks, one entry per match, the mask
// limit, projection onto NIC fields) and the offload policy (install on
// arrival, synchronous removal, most-active selection, conflicts, races with
// snapshots, device failures, and a randomised workload).
#include "tcam.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace softflow {
namespace {

constexpr uint32_t kLowGenerationBits = (1u << SF_MARK_GENERATION_BITS) - 1;

FlowKey make_key(std::initializer_list<std::pair<Field, uint64_t>> fields) {
  FlowKey k = zero_key();
  for (const auto& [f, v] : fields) set_field_uint(k, f, v);
  return k;
}

uint64_t prefix(int bits) { return bits == 0 ? 0 : (0xffffffffull << (32 - bits)) & 0xffffffff; }

// A stage-0 IPv4 megaflow mask: exact in_port, dl_type, nw_dst/'bits'.
FlowKey ip_mask(int bits = 32) {
  return make_key({{Field::kInPort, 0xffffffff},
                   {Field::kDlType, 0xffff},
                   {Field::kNwDst, prefix(bits)},
                   {Field::kSfStage, 0xff},
                   {Field::kSfAction, 0xff},
                   {Field::kSfMetadata, 0xffffffff}});
}
FlowKey ip_key(uint32_t dst, uint32_t in_port = 1) {
  return make_key({{Field::kInPort, in_port}, {Field::kDlType, 0x0800}, {Field::kNwDst, dst}});
}

Megaflow make_megaflow(uint32_t id, uint32_t generation, const FlowKey& key, const FlowKey& mask) {
  Megaflow mf;
  mf.id = id;
  mf.generation = generation;
  mf.alive = true;
  mf.mask = mask;
  mf.key = key_and(key, mask);
  return mf;
}

OffloadCandidate candidate(uint32_t datapath, const Megaflow& mf, uint64_t packets) {
  return OffloadCandidate{datapath, mf.id, mf.generation, mf.key, mf.mask, packets};
}

uint64_t test_seed(uint64_t default_seed) {
  uint64_t seed = default_seed;
  if (const char* env = std::getenv("SF_TEST_SEED"); env != nullptr && *env != '\0')
    seed = std::strtoull(env, nullptr, 0);
  std::cout << "[   SEED   ] seed=" << seed << " (replay: SF_TEST_SEED=" << seed << ")"
            << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// Records what the Offloader programs and checks the device contract itself:
// never more entries than the capacity, an install for a free index and an
// erase for exactly what was installed there, generations that only grow.
class FakeDevice : public TcamDevice {
 public:
  explicit FakeDevice(uint32_t capacity) : capacity_(capacity) {}

  Status install(const TcamEntry& e) override {
    std::lock_guard lock(mutex_);
    ++install_calls;
    if (fail_next > 0) {
      --fail_next;
      return Status::error("injected device failure", EIO);
    }
    EXPECT_LT(e.index, capacity_);
    EXPECT_FALSE(table_.contains(e.index)) << "install over a live entry at " << e.index;
    EXPECT_LT(table_.size(), capacity_) << "device above capacity";
    EXPECT_EQ(e.mark, SF_MARK(e.index, e.generation));
    EXPECT_NE(e.generation & kLowGenerationBits, 0u);
    EXPECT_GT(e.generation, last_generation_[e.index]) << "generation went back";
    last_generation_[e.index] = e.generation;
    if (on_install) on_install(e);
    table_[e.index] = e;
    log.push_back({'+', e.index});
    return Status::ok();
  }
  void erase(const TcamEntry& e) override {
    std::lock_guard lock(mutex_);
    auto it = table_.find(e.index);
    ASSERT_NE(it, table_.end()) << "erase of an entry never installed at " << e.index;
    EXPECT_EQ(it->second.generation, e.generation);
    EXPECT_EQ(it->second.megaflow_id, e.megaflow_id);
    table_.erase(it);
    log.push_back({'-', e.index});
  }

  std::map<uint32_t, TcamEntry> table() const {
    std::lock_guard lock(mutex_);
    return table_;
  }
  bool has_megaflow(uint32_t datapath, uint32_t id, uint32_t generation) const {
    std::lock_guard lock(mutex_);
    for (const auto& [i, e] : table_)
      if (e.datapath == datapath && e.megaflow_id == id && e.megaflow_generation == generation)
        return true;
    return false;
  }

  std::vector<std::pair<char, uint32_t>> log;
  int fail_next = 0;
  uint64_t install_calls = 0;
  std::function<void(const TcamEntry&)> on_install;

 private:
  mutable std::mutex mutex_;
  uint32_t capacity_;
  std::map<uint32_t, TcamEntry> table_;
  std::map<uint32_t, uint32_t> last_generation_;
};

// The Offloader's entries and the device agree exactly.
void expect_device_matches(const Offloader& off, const FakeDevice& dev) {
  const std::vector<TcamEntry> entries = off.entries();
  const auto table = dev.table();
  ASSERT_EQ(entries.size(), table.size());
  for (const TcamEntry& e : entries) {
    auto it = table.find(e.index);
    ASSERT_NE(it, table.end());
    EXPECT_EQ(it->second.generation, e.generation);
    EXPECT_EQ(it->second.megaflow_id, e.megaflow_id);
    EXPECT_EQ(it->second.datapath, e.datapath);
  }
}

std::set<uint32_t> offloaded_ids(const Offloader& off) {
  std::set<uint32_t> ids;
  for (const TcamEntry& e : off.entries()) ids.insert(e.megaflow_id);
  return ids;
}

// ---- Tcam ---------------------------------------------------------------------

TEST(Tcam, CapacityBounds) {
  EXPECT_THROW(Tcam(0), std::invalid_argument);
  EXPECT_THROW(Tcam(SF_TCAM_MAX_ENTRIES + 1), std::invalid_argument);
  EXPECT_EQ(Tcam(SF_TCAM_MAX_ENTRIES).capacity(), uint32_t{SF_TCAM_MAX_ENTRIES});
  FakeDevice dev(1);
  EXPECT_THROW(Offloader(0, dev), std::invalid_argument);

  Tcam t(3);
  for (uint32_t i = 0; i < 3; ++i) {
    const TcamInsertResult r = t.insert(0, i, 1, ip_key(i), ip_mask());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.entry->index, i);  // lowest free index
  }
  EXPECT_EQ(t.insert(0, 9, 1, ip_key(9), ip_mask()).refusal, TcamRefusal::kFull);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_FALSE(t.remove(3));
  EXPECT_TRUE(t.remove(1));
  EXPECT_FALSE(t.remove(1));
  EXPECT_EQ(t.at(1), nullptr);
  const TcamInsertResult r = t.insert(0, 9, 1, ip_key(9), ip_mask());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.entry->index, 1u);
  EXPECT_EQ(t.size(), 3u);
}

TEST(Tcam, GenerationsSkipLowBitsZeroAndOnlyGrow) {
  Tcam t(2);
  uint32_t last = 0;
  bool saw_after_wrap = false;
  // Reuse index 0 past 2^18 times: the generation whose low 18 bits are 0
  // must be skipped, so no mark is ever 0 and no mark of index 0 reads as 0.
  for (uint32_t n = 0; n < (1u << SF_MARK_GENERATION_BITS) + 4; ++n) {
    const TcamInsertResult r = t.insert(0, n, 1, ip_key(1), ip_mask());
    ASSERT_TRUE(r.ok());
    const uint32_t g = r.entry->generation;
    ASSERT_GT(g, last);
    ASSERT_NE(g & kLowGenerationBits, 0u) << "after " << n << " reuses";
    ASSERT_NE(r.entry->mark, 0u);
    if (g == (1u << SF_MARK_GENERATION_BITS) + 1) saw_after_wrap = true;
    last = g;
    t.remove(0);
  }
  EXPECT_TRUE(saw_after_wrap);
  EXPECT_EQ(last, (1u << SF_MARK_GENERATION_BITS) + 4 + 1);  // one value skipped

  // Index 1 keeps its own counter; the hook jumps it to the next boundary.
  t.set_generation_for_test(1, 3 * (1u << SF_MARK_GENERATION_BITS) - 1);
  ASSERT_TRUE(t.insert(0, 1, 1, ip_key(1), ip_mask()).ok());  // index 0
  const TcamInsertResult r = t.insert(0, 2, 1, ip_key(2), ip_mask());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.entry->index, 1u);
  EXPECT_EQ(r.entry->generation, 3 * (1u << SF_MARK_GENERATION_BITS) + 1);
}

TEST(Tcam, MarksEncodeIndexAndGeneration) {
  Tcam t(SF_TCAM_MAX_ENTRIES);
  for (uint32_t i = 0; i < SF_TCAM_MAX_ENTRIES; ++i)
    ASSERT_TRUE(t.insert(0, i, 1, ip_key(i), ip_mask()).ok());
  for (uint32_t i : {0u, 1u, 777u, uint32_t{SF_TCAM_MAX_ENTRIES - 1}}) {
    const TcamEntry* e = t.at(i);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->mark, SF_MARK(i, e->generation));
    EXPECT_EQ(SF_MARK_INDEX(e->mark), i);
    EXPECT_EQ(SF_MARK_GENERATION(e->mark), e->generation & kLowGenerationBits);
  }
  // A reused index gets a new mark: an old mark no longer names it.
  const uint32_t old_mark = t.at(777)->mark;
  ASSERT_TRUE(t.remove(777));
  const TcamInsertResult r = t.insert(0, 99999, 1, ip_key(99999), ip_mask());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.entry->index, 777u);
  EXPECT_NE(r.entry->mark, old_mark);
  EXPECT_EQ(SF_MARK_INDEX(r.entry->mark), 777u);
}

TEST(Tcam, DuplicateMatchRefused) {
  Tcam t(8);
  ASSERT_TRUE(t.insert(0, 1, 1, ip_key(5), ip_mask()).ok());
  EXPECT_EQ(t.insert(1, 1, 1, ip_key(5), ip_mask()).refusal, TcamRefusal::kDuplicate);
  // Masks that differ only in a field the NIC cannot see give the same match.
  FlowKey with_flags = ip_mask();
  key_or_into(with_flags, field_mask(Field::kTcpFlags));
  FlowKey syn = ip_key(5);
  set_field_uint(syn, Field::kTcpFlags, 0x02);
  EXPECT_EQ(t.check(syn, with_flags), TcamRefusal::kDuplicate);
  EXPECT_EQ(t.insert(0, 2, 1, syn, with_flags).refusal, TcamRefusal::kDuplicate);
  EXPECT_TRUE(t.insert(0, 3, 1, ip_key(6), ip_mask()).ok());
  EXPECT_EQ(t.size(), 2u);
  ASSERT_NE(t.find(ip_key(5), key_and(ip_mask(), tcam_fields())), nullptr);
  EXPECT_EQ(t.find(ip_key(5), key_and(ip_mask(), tcam_fields()))->megaflow_id, 1u);
}

TEST(Tcam, MaskLimit) {
  Tcam t(64);
  for (int bits = 1; bits <= SF_TCAM_MAX_MASKS; ++bits)
    ASSERT_TRUE(t.insert(0, bits, 1, ip_key(0x0a000000), ip_mask(bits)).ok()) << bits;
  EXPECT_EQ(t.mask_count(), size_t{SF_TCAM_MAX_MASKS});
  // A 33rd mask is refused; another key under a mask already in is not.
  EXPECT_EQ(t.insert(0, 100, 1, ip_key(0x0a000000), ip_mask(0)).refusal,
            TcamRefusal::kTooManyMasks);
  EXPECT_TRUE(t.insert(0, 101, 1, ip_key(0x0b000000), ip_mask(8)).ok());
  // Two entries share /8: removing one keeps the mask; removing both frees it.
  ASSERT_TRUE(t.remove(t.find(ip_key(0x0a000000), key_and(ip_mask(8), tcam_fields()))->index));
  EXPECT_EQ(t.check(ip_key(0), ip_mask(0)), TcamRefusal::kTooManyMasks);
  ASSERT_TRUE(t.remove(t.find(ip_key(0x0b000000), key_and(ip_mask(8), tcam_fields()))->index));
  EXPECT_EQ(t.mask_count(), size_t{SF_TCAM_MAX_MASKS - 1});
  EXPECT_TRUE(t.insert(0, 100, 1, ip_key(0x0a000000), ip_mask(0)).ok());
  EXPECT_NE(to_string(TcamRefusal::kTooManyMasks), to_string(TcamRefusal::kDuplicate));
}

TEST(Tcam, LookupLowestIndexWins) {
  Tcam t(4);
  ASSERT_TRUE(t.insert(0, 1, 1, ip_key(0x0a010000), ip_mask(16)).ok());  // index 0
  ASSERT_TRUE(t.insert(0, 2, 1, ip_key(0x0a010203), ip_mask(32)).ok());  // index 1
  const TcamEntry* e = t.lookup(ip_key(0x0a010203));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->megaflow_id, 1u);
  ASSERT_TRUE(t.remove(0));
  ASSERT_NE(t.lookup(ip_key(0x0a010203)), nullptr);
  EXPECT_EQ(t.lookup(ip_key(0x0a010203))->megaflow_id, 2u);
  ASSERT_TRUE(t.insert(0, 3, 1, ip_key(0x0a000000), ip_mask(8)).ok());  // index 0 again
  EXPECT_EQ(t.lookup(ip_key(0x0a010203))->megaflow_id, 3u);
  EXPECT_EQ(t.lookup(ip_key(0x0a010203, /*in_port=*/2)), nullptr);
  EXPECT_EQ(t.lookup(ip_key(0x0b010203)), nullptr);
}

TEST(Tcam, ProjectionOntoNicFields) {
  const FlowKey fields = tcam_fields();
  for (Field f : {Field::kInPort, Field::kDlDst, Field::kDlSrc, Field::kDlType, Field::kVlanTci,
                  Field::kNwSrc, Field::kNwDst, Field::kIpv6Src, Field::kIpv6Dst, Field::kNwProto,
                  Field::kNwTos, Field::kTpSrc, Field::kTpDst})
    EXPECT_TRUE(key_is_subset(field_mask(f), fields)) << field_info(f).name;
  for (Field f :
       {Field::kSfStage, Field::kSfAction, Field::kSfMetadata, Field::kTcpFlags, Field::kNwFrag})
    EXPECT_TRUE(key_is_zero(key_and(field_mask(f), fields))) << field_info(f).name;

  // A megaflow that matches TCP SYNs: its entry matches without tcp_flags.
  FlowKey mask = ip_mask();
  key_or_into(mask, field_mask(Field::kTcpFlags));
  key_or_into(mask, field_mask(Field::kNwFrag));
  FlowKey key = ip_key(7);
  set_field_uint(key, Field::kTcpFlags, 0x02);
  Tcam t(2);
  const TcamInsertResult r = t.insert(3, 4, 5, key, mask);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.entry->partial);
  EXPECT_TRUE(key_equal(r.entry->mask, key_and(mask, fields)));
  EXPECT_EQ(get_field_uint(r.entry->mask, Field::kTcpFlags), 0u);
  EXPECT_EQ(get_field_uint(r.entry->key, Field::kTcpFlags), 0u);
  EXPECT_EQ(get_field_uint(r.entry->mask, Field::kSfStage), 0u);
  EXPECT_TRUE(key_equal(r.entry->megaflow_mask, mask));
  EXPECT_EQ(get_field_uint(r.entry->megaflow_key, Field::kTcpFlags), 0x02u);

  FlowKey ack = ip_key(7);
  set_field_uint(ack, Field::kTcpFlags, 0x10);
  ASSERT_NE(t.lookup(ack), nullptr);  // the switch rejects it against the whole mask
  EXPECT_FALSE(key_matches(ack, r.entry->megaflow_key, r.entry->megaflow_mask));
  EXPECT_EQ(t.lookup(ip_key(8)), nullptr);

  const TcamInsertResult whole = t.insert(3, 6, 1, ip_key(9), ip_mask());
  ASSERT_TRUE(whole.ok());
  // ip_mask() covers the SoftFlow metadata too, which is zero for every frame
  // off the wire: nothing is left for software, so not partial.
  EXPECT_FALSE(whole.entry->partial);
  ASSERT_TRUE(t.remove(whole.entry->index));
  const TcamInsertResult exact = t.insert(3, 6, 1, ip_key(9), key_and(ip_mask(), fields));
  ASSERT_TRUE(exact.ok());
  EXPECT_FALSE(exact.entry->partial);
}

TEST(Tcam, ToHint) {
  Tcam t(16);
  t.set_generation_for_test(0, 41);
  FlowKey mask = ip_mask();
  key_or_into(mask, field_mask(Field::kTcpFlags));
  FlowKey key = ip_key(0x0a000001);
  set_field_uint(key, Field::kTcpFlags, 0x12);
  const TcamInsertResult r = t.insert(7, 1234, 56, key, mask);
  ASSERT_TRUE(r.ok());
  const sf_hint h = to_hint(*r.entry);
  EXPECT_EQ(h.generation, 42u);
  EXPECT_EQ(h.datapath, 7u);
  EXPECT_EQ(h.ref.id, 1234u);
  EXPECT_EQ(h.ref.generation, 56u);
  EXPECT_TRUE(key_equal(h.key, key_and(key, mask)));  // the megaflow's, not the TCAM's
  EXPECT_TRUE(key_equal(h.mask, mask));
  EXPECT_EQ(SF_MARK_GENERATION(r.entry->mark), h.generation & kLowGenerationBits);
}

// ---- Offloader ----------------------------------------------------------------

TEST(Offloader, InstallsOnArrivalWhileRoom) {
  FakeDevice dev(2);
  Offloader off(2, dev);
  EXPECT_EQ(off.capacity(), 2u);
  for (uint32_t id = 0; id < 3; ++id)
    off.megaflow_installed(0, make_megaflow(id, 1, ip_key(id), ip_mask()));
  EXPECT_EQ(offloaded_ids(off), (std::set<uint32_t>{0, 1}));
  EXPECT_EQ(dev.table().size(), 2u);
  // Told twice about one megaflow: one entry.
  off.megaflow_installed(0, make_megaflow(0, 1, ip_key(0), ip_mask()));
  const OffloadStats s = off.stats();
  EXPECT_EQ(s.installs, 2u);
  EXPECT_EQ(s.entries, 2u);
  expect_device_matches(off, dev);
}

TEST(Offloader, RemovalErasesBeforeReturning) {
  FakeDevice dev(4);
  Offloader off(4, dev);
  const Megaflow a = make_megaflow(1, 1, ip_key(1), ip_mask());
  const Megaflow b = make_megaflow(2, 1, ip_key(2), ip_mask());
  off.megaflow_installed(0, a);
  off.megaflow_installed(0, b);
  ASSERT_TRUE(dev.has_megaflow(0, 1, 1));
  off.megaflow_removed(0, a);
  EXPECT_FALSE(dev.has_megaflow(0, 1, 1));
  ASSERT_EQ(dev.log.back(), (std::pair<char, uint32_t>{'-', 0}));
  EXPECT_TRUE(dev.has_megaflow(0, 2, 1));
  // Same id and generation on another datapath is another megaflow.
  off.megaflow_removed(1, b);
  EXPECT_TRUE(dev.has_megaflow(0, 2, 1));
  EXPECT_EQ(off.stats().removals, 1u);
  EXPECT_EQ(off.stats().entries, 1u);
  expect_device_matches(off, dev);
}

TEST(Offloader, KeepsTheMostActive) {
  constexpr uint32_t kFlows = 10;
  FakeDevice dev(4);
  Offloader off(4, dev);
  std::vector<Megaflow> mfs;
  // The first to arrive (and fill the TCAM) are the least active.
  for (uint32_t id = 0; id < kFlows; ++id) {
    mfs.push_back(make_megaflow(id, 1, ip_key(id), ip_mask()));
    off.megaflow_installed(0, mfs.back());
  }
  ASSERT_EQ(offloaded_ids(off), (std::set<uint32_t>{0, 1, 2, 3}));
  auto rate = [](uint32_t id) { return uint64_t{100} * (id + 1); };
  for (uint64_t period = 1; period <= 2; ++period) {
    std::vector<OffloadCandidate> snapshot;
    for (uint32_t id = kFlows; id-- > 0;)
      snapshot.push_back(candidate(0, mfs[id], rate(id) * period));
    off.rebalance(snapshot);
    EXPECT_EQ(offloaded_ids(off), (std::set<uint32_t>{6, 7, 8, 9})) << "period " << period;
    EXPECT_LE(dev.table().size(), 4u);
  }
  for (const TcamEntry& e : off.entries())
    EXPECT_EQ(e.recent, rate(e.megaflow_id));  // one period's
  const OffloadStats s = off.stats();
  EXPECT_EQ(s.evictions, 4u);
  EXPECT_EQ(s.installs, 8u);
  EXPECT_EQ(s.rebalances, 2u);
  expect_device_matches(off, dev);

  // Activity moves: flow 0 is now busiest, flow 6 idle.
  std::vector<OffloadCandidate> snapshot;
  for (uint32_t id = 0; id < kFlows; ++id) {
    uint64_t packets = rate(id) * 2 + (id == 0 ? 5000 : id == 6 ? 0 : rate(id));
    snapshot.push_back(candidate(0, mfs[id], packets));
  }
  off.rebalance(snapshot);
  EXPECT_EQ(offloaded_ids(off), (std::set<uint32_t>{0, 7, 8, 9}));
}

TEST(Offloader, NoChurnOnTies) {
  FakeDevice dev(2);
  Offloader off(2, dev);
  std::vector<Megaflow> mfs;
  for (uint32_t id = 0; id < 4; ++id) mfs.push_back(make_megaflow(id, 1, ip_key(id), ip_mask()));
  // 3 and 2 arrive first, so any other tie-break (such as by id) would move them.
  for (uint32_t id = 4; id-- > 0;) off.megaflow_installed(0, mfs[id]);
  ASSERT_EQ(offloaded_ids(off), (std::set<uint32_t>{2, 3}));
  const auto before = off.entries();
  const size_t ops = dev.log.size();
  // Waiting megaflows 0 and 1 are exactly as busy as the installed 2 and 3.
  for (uint64_t period = 1; period <= 3; ++period) {
    std::vector<OffloadCandidate> snapshot;
    for (uint32_t id = 4; id-- > 0;) snapshot.push_back(candidate(0, mfs[id], 50 * period));
    off.rebalance(snapshot);
  }
  EXPECT_EQ(dev.log.size(), ops) << "equal activity must not move entries";
  const auto after = off.entries();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].megaflow_id, before[i].megaflow_id);
    EXPECT_EQ(after[i].generation, before[i].generation);
  }
  EXPECT_EQ(off.stats().evictions, 0u);

  // One packet more is enough to take a place.
  std::vector<OffloadCandidate> snapshot;
  for (uint32_t id = 0; id < 4; ++id) snapshot.push_back(candidate(0, mfs[id], 200 + (id == 0)));
  off.rebalance(snapshot);
  EXPECT_EQ(offloaded_ids(off).count(0), 1u);
  EXPECT_EQ(off.stats().evictions, 1u);
}

TEST(Offloader, FillsFreeRoomWithIdleCandidates) {
  FakeDevice dev(4);
  Offloader off(4, dev);
  const Megaflow busy = make_megaflow(1, 1, ip_key(1), ip_mask());
  const Megaflow idle = make_megaflow(2, 1, ip_key(2), ip_mask());
  const Megaflow idle2 = make_megaflow(3, 1, ip_key(3), ip_mask());
  const std::vector<OffloadCandidate> snapshot{candidate(0, idle, 0), candidate(0, busy, 10),
                                               candidate(0, idle2, 0)};
  off.rebalance(snapshot);
  EXPECT_EQ(offloaded_ids(off), (std::set<uint32_t>{1, 2, 3}));
  // The most active is programmed first and so takes the lowest index.
  EXPECT_EQ(off.entries().front().megaflow_id, 1u);
}

TEST(Offloader, ConflictingMatches) {
  FakeDevice dev(4);
  Offloader off(4, dev);
  // Two megaflows whose masks differ only in tcp_flags, and the first one's
  // twin on datapath 1: one TCAM match between them.
  FlowKey syn_mask = ip_mask();
  key_or_into(syn_mask, field_mask(Field::kTcpFlags));
  FlowKey syn_key = ip_key(5);
  set_field_uint(syn_key, Field::kTcpFlags, 0x02);
  const Megaflow plain = make_megaflow(1, 1, ip_key(5), ip_mask());
  const Megaflow syn = make_megaflow(2, 1, syn_key, syn_mask);
  const Megaflow twin = make_megaflow(1, 1, ip_key(5), ip_mask());
  off.megaflow_installed(0, plain);
  off.megaflow_installed(0, syn);
  off.megaflow_installed(1, twin);
  EXPECT_EQ(off.entries().size(), 1u);
  EXPECT_EQ(off.stats().conflicts, 2u);

  // The more active wins at rebalance; the other two are conflicts.
  off.rebalance(std::vector<OffloadCandidate>{candidate(0, plain, 10), candidate(0, syn, 30),
                                              candidate(1, twin, 20)});
  ASSERT_EQ(off.entries().size(), 1u);
  EXPECT_EQ(off.entries()[0].megaflow_id, 2u);
  EXPECT_TRUE(off.entries()[0].partial);
  EXPECT_EQ(off.stats().conflicts, 4u);
  EXPECT_EQ(off.stats().evictions, 1u);
  // Ties keep the installed one.
  off.rebalance(std::vector<OffloadCandidate>{candidate(0, plain, 40), candidate(0, syn, 60),
                                              candidate(1, twin, 50)});
  EXPECT_EQ(off.entries()[0].megaflow_id, 2u);
  EXPECT_EQ(off.stats().evictions, 1u);
  expect_device_matches(off, dev);
}

TEST(Offloader, NotStage0Ignored) {
  FakeDevice dev(4);
  Offloader off(4, dev);
  FlowKey stage1 = ip_key(1);
  set_field_uint(stage1, Field::kSfStage, 1);
  FlowKey after_service = ip_key(2);
  set_field_uint(after_service, Field::kSfAction, 3);
  set_field_uint(after_service, Field::kSfMetadata, 9);
  const Megaflow a = make_megaflow(1, 1, stage1, ip_mask());
  const Megaflow b = make_megaflow(2, 1, after_service, ip_mask());
  off.megaflow_installed(0, a);
  off.megaflow_installed(0, b);
  EXPECT_TRUE(off.entries().empty());
  off.rebalance(std::vector<OffloadCandidate>{candidate(0, a, 1000), candidate(0, b, 1000)});
  EXPECT_TRUE(off.entries().empty());
  EXPECT_EQ(off.stats().not_stage0, 4u);
  EXPECT_EQ(dev.install_calls, 0u);
}

TEST(Offloader, RemovedAfterSnapshotNotReinstalled) {
  FakeDevice dev(4);
  Offloader off(4, dev);
  const Megaflow a = make_megaflow(1, 1, ip_key(1), ip_mask());
  const Megaflow b = make_megaflow(2, 1, ip_key(2), ip_mask());
  const Megaflow c = make_megaflow(3, 1, ip_key(3), ip_mask());
  off.megaflow_installed(0, a);
  const std::vector<OffloadCandidate> old{candidate(0, a, 10), candidate(0, b, 10)};
  off.megaflow_removed(0, a);  // after the snapshot was taken
  off.megaflow_removed(0, b);  // never offloaded, still in the snapshot
  off.rebalance(old);
  EXPECT_TRUE(off.entries().empty());

  // A megaflow installed after its snapshot was taken stays.
  const std::vector<OffloadCandidate> without_c{};
  off.megaflow_installed(0, c);
  off.rebalance(without_c);
  EXPECT_EQ(offloaded_ids(off), (std::set<uint32_t>{3}));
  // Missing from two snapshots in a row, it is gone.
  off.rebalance(without_c);
  EXPECT_TRUE(off.entries().empty());
  EXPECT_EQ(off.stats().removals, 2u);
  expect_device_matches(off, dev);
}

TEST(Offloader, DeviceFailureCounted) {
  FakeDevice dev(2);
  Offloader off(2, dev);
  dev.fail_next = 1;
  const Megaflow a = make_megaflow(1, 1, ip_key(1), ip_mask());
  off.megaflow_installed(0, a);
  EXPECT_TRUE(off.entries().empty());
  EXPECT_EQ(off.stats().refused, 1u);
  EXPECT_EQ(off.stats().installs, 0u);
  // The next try works, with a fresh generation (the failed one is not reused).
  off.rebalance(std::vector<OffloadCandidate>{candidate(0, a, 5)});
  ASSERT_EQ(off.entries().size(), 1u);
  EXPECT_EQ(off.entries()[0].generation, 2u);
  EXPECT_EQ(off.stats().installs, 1u);
  expect_device_matches(off, dev);
}

TEST(Offloader, MaskLimitRefused) {
  FakeDevice dev(64);
  Offloader off(64, dev);
  for (int bits = 0; bits <= SF_TCAM_MAX_MASKS; ++bits)
    off.megaflow_installed(0, make_megaflow(bits, 1, ip_key(0x0a000000), ip_mask(bits)));
  EXPECT_EQ(off.entries().size(), size_t{SF_TCAM_MAX_MASKS});
  EXPECT_EQ(off.stats().refused, 1u);
}

TEST(Offloader, MaskLimitDoesNotWasteRoom) {
  // Room for 33: 33 busy megaflows with distinct masks, then a quieter one
  // under a mask already in.  The 33rd mask cannot go in, so the quiet one
  // takes its place rather than leaving the room empty.
  constexpr uint32_t kCapacity = SF_TCAM_MAX_MASKS + 1;
  FakeDevice dev(kCapacity);
  Offloader off(kCapacity, dev);
  std::vector<OffloadCandidate> snapshot;
  for (int bits = 0; bits <= SF_TCAM_MAX_MASKS; ++bits)
    snapshot.push_back(
        candidate(0, make_megaflow(bits, 1, ip_key(0x0a000000), ip_mask(bits)), 1000 - bits));
  const Megaflow quiet = make_megaflow(99, 1, ip_key(0x0b000000), ip_mask(8));
  snapshot.push_back(candidate(0, quiet, 1));
  off.rebalance(snapshot);
  EXPECT_EQ(off.entries().size(), size_t{kCapacity});
  EXPECT_EQ(offloaded_ids(off).count(99), 1u);
  EXPECT_EQ(offloaded_ids(off).count(SF_TCAM_MAX_MASKS), 0u);  // the 33rd mask
  EXPECT_EQ(off.stats().refused, 1u);
}

// Random installs, removals and rebalances (some from snapshots that removals
// overtook) against a device that checks its own contract.  After every step:
// the device matches, every entry's megaflow is alive, no two entries share a
// match, and at most SF_TCAM_MAX_MASKS masks.
TEST(Offloader, RandomWorkloadKeepsInvariants) {
  std::mt19937_64 rng(test_seed(20240611));
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };

  OffloadStats total;
  for (int round = 0; round < 20; ++round) {
    // Small TCAMs churn; large ones reach the mask limit.
    const uint32_t capacity = round % 2 ? 1 + pick(12) : 40 + pick(40);
    FakeDevice dev(capacity);
    Offloader off(capacity, dev);
    struct Live {
      Megaflow mf;
      uint32_t datapath;
      uint64_t packets;
    };
    std::map<std::tuple<uint32_t, uint32_t, uint32_t>, Live> live;
    uint32_t next_generation = 1;
    auto snapshot = [&] {
      std::vector<OffloadCandidate> s;
      for (const auto& [ref, l] : live) s.push_back(candidate(l.datapath, l.mf, l.packets));
      return s;
    };
    std::vector<OffloadCandidate> stale = snapshot();

    for (int step = 0; step < 400; ++step) {
      const uint64_t op = pick(100);
      if (op < 35 && live.size() < 120) {
        const uint32_t dp = pick(3);
        // Few keys and 40 masks: conflicts and the mask limit both happen.
        const int bits = 8 + pick(25);
        FlowKey mask = ip_mask(bits);
        if (pick(4) == 0) key_or_into(mask, field_mask(Field::kTcpFlags));
        if (pick(6) == 0) key_or_into(mask, field_mask(Field::kTpDst));
        if (pick(8) == 0) key_or_into(mask, field_mask(Field::kNwProto));
        FlowKey key = ip_key(0x0a000000 | pick(4) << 24 | pick(3), 1 + pick(2));
        set_field_uint(key, Field::kTcpFlags, pick(2) * 2);
        if (pick(10) == 0) set_field_uint(key, Field::kSfStage, 1);
        const Megaflow mf = make_megaflow(pick(40), next_generation++, key, mask);
        live[{dp, mf.id, mf.generation}] = Live{mf, dp, 0};
        if (pick(20) == 0) dev.fail_next = 1;
        off.megaflow_installed(dp, mf);
      } else if (op < 60 && !live.empty()) {
        auto it = std::next(live.begin(), pick(live.size()));
        off.megaflow_removed(it->second.datapath, it->second.mf);
        live.erase(it);
      } else if (op < 80) {
        for (auto& [ref, l] : live) l.packets += pick(3) == 0 ? 0 : pick(1000);
      } else {
        // Rebalance with a fresh snapshot, or with one taken a while ago.
        if (pick(20) == 0) dev.fail_next = 1;
        off.rebalance(pick(2) ? snapshot() : stale);
        stale = snapshot();
      }

      SCOPED_TRACE("round " + std::to_string(round) + " step " + std::to_string(step));
      expect_device_matches(off, dev);
      const std::vector<TcamEntry> entries = off.entries();
      ASSERT_LE(entries.size(), capacity);
      EXPECT_EQ(off.stats().entries, entries.size());
      std::set<std::vector<uint64_t>> matches;
      std::set<std::vector<uint64_t>> masks;
      for (const TcamEntry& e : entries) {
        ASSERT_TRUE(live.contains({e.datapath, e.megaflow_id, e.megaflow_generation}))
            << "entry " << e.index << " outlived its megaflow";
        EXPECT_TRUE(is_stage0(e.megaflow_key, e.megaflow_mask));
        EXPECT_TRUE(key_equal(e.mask, key_and(e.megaflow_mask, tcam_fields())));
        std::vector<uint64_t> m(key_words(e.key), key_words(e.key) + kKeyWords);
        m.insert(m.end(), key_words(e.mask), key_words(e.mask) + kKeyWords);
        EXPECT_TRUE(matches.insert(m).second) << "two entries with one match";
        masks.insert(std::vector<uint64_t>(key_words(e.mask), key_words(e.mask) + kKeyWords));
      }
      ASSERT_LE(masks.size(), size_t{SF_TCAM_MAX_MASKS});
      if (HasFatalFailure()) return;
    }

    // Two rebalances from fresh snapshots with no device failures: the TCAM
    // then holds the most active megaflows of the last period, except where a
    // match is taken or the mask limit is reached.
    dev.fail_next = 0;
    off.rebalance(snapshot());
    std::map<std::tuple<uint32_t, uint32_t, uint32_t>, uint64_t> recent;
    for (auto& [ref, l] : live) {
      recent[ref] = pick(4) == 0 ? 0 : pick(1000);
      l.packets += recent[ref];
    }
    off.rebalance(snapshot());
    const std::vector<TcamEntry> entries = off.entries();
    std::set<std::tuple<uint32_t, uint32_t, uint32_t>> in;
    uint64_t least = UINT64_MAX;
    Tcam shadow(SF_TCAM_MAX_ENTRIES);  // the entries' matches and masks
    for (const TcamEntry& e : entries) {
      const std::tuple<uint32_t, uint32_t, uint32_t> ref{e.datapath, e.megaflow_id,
                                                         e.megaflow_generation};
      EXPECT_EQ(e.recent, recent[ref]);
      least = std::min(least, e.recent);
      in.insert(ref);
      ASSERT_TRUE(shadow.insert(0, 0, 0, e.megaflow_key, e.megaflow_mask).ok());
    }
    for (const auto& [ref, l] : live) {
      if (in.contains(ref) || !is_stage0(l.mf.key, l.mf.mask)) continue;
      const TcamRefusal why = shadow.check(l.mf.key, l.mf.mask);
      if (why == TcamRefusal::kDuplicate || why == TcamRefusal::kTooManyMasks) continue;
      SCOPED_TRACE("round " + std::to_string(round) + ": megaflow " + std::to_string(l.mf.id) +
                   " left out");
      EXPECT_EQ(entries.size(), capacity) << "room left for an eligible megaflow";
      EXPECT_LE(recent[ref], least) << "a less active megaflow was kept";
    }
    const OffloadStats s = off.stats();
    total.evictions += s.evictions;
    total.removals += s.removals;
    total.conflicts += s.conflicts;
    total.refused += s.refused;
    total.not_stage0 += s.not_stage0;
  }
  // The workload reached every path it is meant to check.
  EXPECT_GT(total.evictions, 0u);
  EXPECT_GT(total.removals, 0u);
  EXPECT_GT(total.conflicts, 0u);
  EXPECT_GT(total.refused, 0u);
  EXPECT_GT(total.not_stage0, 0u);
}

// PMD threads install and remove their datapath's megaflows while the main
// thread rebalances from snapshots: no entry is ever programmed for a
// megaflow already gone, and none outlives its megaflow.
TEST(Offloader, ConcurrentChangesAndRebalances) {
  constexpr uint32_t kThreads = 4;
  constexpr uint32_t kCapacity = 16;
  FakeDevice dev(kCapacity);
  Offloader off(kCapacity, dev);
  // The registry plays the megaflow caches: a snapshot and a removal exclude
  // each other, as they do in a real cache.
  std::mutex registry_mutex;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, OffloadCandidate> registry;
  std::mutex told_mutex;
  std::set<std::tuple<uint32_t, uint32_t, uint32_t>> told_removed;
  dev.on_install = [&](const TcamEntry& e) {
    std::lock_guard lock(told_mutex);
    EXPECT_FALSE(told_removed.contains({e.datapath, e.megaflow_id, e.megaflow_generation}))
        << "programmed a megaflow already reported removed";
  };
  std::atomic<bool> stop{false};
  std::vector<std::thread> pmds;
  const uint64_t seed = test_seed(7);
  for (uint32_t dp = 0; dp < kThreads; ++dp) {
    pmds.emplace_back([&, dp] {
      std::mt19937 rng(seed + dp);
      std::vector<Megaflow> mine;
      uint32_t generation = 1;
      for (int i = 0; i < 3000; ++i) {
        if (mine.size() < 20 && rng() % 2) {
          Megaflow mf = make_megaflow(rng() % 32, generation++, ip_key(rng() % 64, dp), ip_mask());
          {
            std::lock_guard lock(registry_mutex);
            registry[{dp, mf.id, mf.generation}] = candidate(dp, mf, rng() % 1000);
          }
          off.megaflow_installed(dp, mf);
          mine.push_back(mf);
        } else if (!mine.empty()) {
          const size_t k = rng() % mine.size();
          const std::tuple<uint32_t, uint32_t, uint32_t> ref{dp, mine[k].id, mine[k].generation};
          {
            std::lock_guard lock(registry_mutex);
            off.megaflow_removed(dp, mine[k]);  // the cache tells, then forgets
            registry.erase(ref);
          }
          std::lock_guard lock(told_mutex);
          told_removed.insert(ref);
          mine.erase(mine.begin() + k);
        }
      }
    });
  }
  std::thread main_thread([&] {
    while (!stop) {
      std::vector<OffloadCandidate> snapshot;
      {
        std::lock_guard lock(registry_mutex);
        for (auto& [ref, c] : registry) {
          c.packets += 7 * (c.megaflow_id % 5);
          snapshot.push_back(c);
        }
      }
      off.rebalance(snapshot);
    }
  });
  for (auto& t : pmds) t.join();
  stop = true;
  main_thread.join();

  expect_device_matches(off, dev);
  ASSERT_LE(dev.table().size(), kCapacity);
  for (const TcamEntry& e : off.entries())
    EXPECT_TRUE(registry.contains({e.datapath, e.megaflow_id, e.megaflow_generation}));
  EXPECT_GT(off.stats().rebalances, 0u);
}

}  // namespace
}  // namespace softflow

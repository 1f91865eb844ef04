// Tests of the memload service (paper §7.3): lazy allocation, one block
// shared per size, read counting, the cap, allocation failure, configuration,
// threads, and a switch pipeline.  Blocks are small here (never 1 GiB).
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "../../tests/unit/test_util.h"

namespace softflow {
// Test hooks defined in memload.cc.
namespace memload_testing {
void set_allocation_failure(bool fail);
uint64_t allocations();
size_t live_blocks();
}  // namespace memload_testing

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

std::unique_ptr<Service> make_memload(const nlohmann::json& config) {
  return ServiceRegistry::instance().create(test::service_id("memload"), config);
}

uint64_t stat_of(const Service& s, const char* what) { return s.stats().at(what).get<uint64_t>(); }
bool allocated(const Service& s) { return s.stats().at("allocated").get<bool>(); }

// A batch of 'n' packets with metadata 'metadata' (memload reads nothing of
// them but must leave the metadata alone and mark them coalescable).
struct Batch {
  explicit Batch(size_t n, uint32_t metadata = 0x5a5a) : packets(n) {
    for (Packet& p : packets) {
      p.key = zero_key();
      p.key.sf_metadata = metadata;
      p.len = 64;
      pointers.push_back(&p);
    }
  }
  void run(Service& s, uint32_t reads) {
    for (Packet& p : packets) p.sf_coalesce = false;
    s.process(pointers, reads);
  }
  bool all_coalescable_with(uint32_t metadata) const {
    for (const Packet& p : packets)
      if (!p.sf_coalesce || p.key.sf_metadata != metadata) return false;
    return true;
  }
  std::vector<Packet> packets;
  std::vector<Packet*> pointers;
};

// Forces allocation failures for as long as it lives.
struct FailAllocations {
  FailAllocations() { memload_testing::set_allocation_failure(true); }
  ~FailAllocations() { memload_testing::set_allocation_failure(false); }
};

TEST(Memload, ConstructionAndZeroReadsAllocateNothing) {
  const uint64_t before = memload_testing::allocations();
  auto defaults = make_memload(nlohmann::json::object());  // 1 GiB by default, lazily
  ASSERT_NE(defaults, nullptr);
  EXPECT_EQ(stat_of(*defaults, "size"), uint64_t{1} << 30);
  auto m = make_memload({{"size", kMiB}});
  Batch batch(kMaxBatch);
  for (int i = 0; i < 10; ++i) {
    batch.run(*defaults, 0);
    batch.run(*m, 0);
  }
  EXPECT_TRUE(batch.all_coalescable_with(0x5a5a));
  EXPECT_FALSE(allocated(*defaults));
  EXPECT_FALSE(allocated(*m));
  EXPECT_EQ(stat_of(*m, "reads"), 0u);
  EXPECT_EQ(memload_testing::allocations(), before);
}

// The first packet with N > 0 allocates; a second instance of the same size
// shares that block; another size gets its own; the last user frees it.
TEST(Memload, BlockIsAllocatedOnceAndSharedPerSize) {
  const uint64_t size = kMiB + 4096 * 3;  // a size no other test uses
  const uint64_t allocations_before = memload_testing::allocations();
  const size_t live_before = memload_testing::live_blocks();
  {
    auto first = make_memload({{"size", size}});
    auto second = make_memload({{"size", size}});
    auto other = make_memload({{"size", "1M"}});
    Batch batch(3, 7);
    batch.run(*first, 16);
    EXPECT_TRUE(allocated(*first));
    EXPECT_FALSE(allocated(*second));
    EXPECT_EQ(stat_of(*first, "reads"), 3u * 16);
    EXPECT_EQ(memload_testing::allocations(), allocations_before + 1);

    batch.run(*second, 5);
    batch.run(*second, 5);
    EXPECT_TRUE(allocated(*second));
    EXPECT_EQ(stat_of(*second, "reads"), 2u * 3 * 5);
    EXPECT_EQ(stat_of(*first, "reads"), 3u * 16);
    EXPECT_EQ(memload_testing::allocations(), allocations_before + 1) << "not shared";
    EXPECT_EQ(memload_testing::live_blocks(), live_before + 1);
    EXPECT_TRUE(batch.all_coalescable_with(7));

    batch.run(*other, 1);
    EXPECT_EQ(memload_testing::allocations(), allocations_before + 2);
    EXPECT_EQ(memload_testing::live_blocks(), live_before + 2);

    first.reset();  // 'second' still holds the shared block
    EXPECT_EQ(memload_testing::live_blocks(), live_before + 2);
    batch.run(*second, 1);
    EXPECT_EQ(memload_testing::allocations(), allocations_before + 2);
  }
  EXPECT_EQ(memload_testing::live_blocks(), live_before);
  // A new user after the last one went allocates afresh.
  auto again = make_memload({{"size", size}});
  Batch(1).run(*again, 1);
  EXPECT_EQ(memload_testing::allocations(), allocations_before + 3);
}

TEST(Memload, ReadsGrowByNPerPacketUpToTheCap) {
  auto m = make_memload({{"size", "1M"}});
  Batch batch(kMaxBatch);
  uint64_t expected = 0;
  for (uint32_t n : {1u, 2u, 64u, 4096u}) {
    batch.run(*m, n);
    expected += uint64_t{n} * kMaxBatch;
    EXPECT_EQ(stat_of(*m, "reads"), expected) << "N = " << n;
  }
  EXPECT_EQ(stat_of(*m, "clamped_packets"), 0u);
  // Above the cap: capped, and counted.
  const uint64_t cap = stat_of(*m, "max_reads_per_packet");
  EXPECT_EQ(cap, 4096u);
  batch.run(*m, 1'000'000);
  expected += cap * kMaxBatch;
  EXPECT_EQ(stat_of(*m, "reads"), expected);
  EXPECT_EQ(stat_of(*m, "clamped_packets"), kMaxBatch);
  EXPECT_TRUE(batch.all_coalescable_with(0x5a5a));
}

// A failed allocation is not fatal: the instance behaves as N = 0, counts
// the packets it skipped, and does not retry on every packet.
TEST(Memload, AllocationFailureBehavesAsZeroReads) {
  const uint64_t size = kMiB + 4096 * 5;
  const uint64_t allocations_before = memload_testing::allocations();
  auto m = make_memload({{"size", size}});
  {
    FailAllocations fail;
    Batch batch(4, 3);
    batch.run(*m, 8);
    batch.run(*m, 8);
    EXPECT_TRUE(batch.all_coalescable_with(3));
  }
  EXPECT_FALSE(allocated(*m));
  EXPECT_TRUE(m->stats().at("allocation_failed").get<bool>());
  EXPECT_EQ(stat_of(*m, "reads"), 0u);
  EXPECT_EQ(stat_of(*m, "skipped_packets"), 8u);
  Batch(4).run(*m, 8);  // failure is sticky for this instance
  EXPECT_EQ(stat_of(*m, "skipped_packets"), 12u);
  EXPECT_EQ(memload_testing::allocations(), allocations_before);
  // Another instance, once memory is available again, works.
  auto fresh = make_memload({{"size", size}});
  Batch(4).run(*fresh, 8);
  EXPECT_TRUE(allocated(*fresh));
  EXPECT_EQ(stat_of(*fresh, "reads"), 32u);
}

TEST(Memload, SizeParsing) {
  const std::vector<std::pair<nlohmann::json, uint64_t>> good = {
      {"64M", 64 * kMiB},         {"256m", 256 * kMiB},        {"1G", uint64_t{1} << 30},
      {"64MiB", 64 * kMiB},       {"512KB", 512 * 1024},       {"4K", 4096},
      {"1048576", kMiB},          {1048576, kMiB},             {"1T", uint64_t{1} << 40},
      {uint64_t{3} << 20, 3 * kMiB}};
  for (const auto& [value, bytes] : good) {
    auto m = make_memload({{"size", value}});
    EXPECT_EQ(stat_of(*m, "size"), bytes) << value.dump();
    EXPECT_FALSE(allocated(*m));
  }
  const std::vector<nlohmann::json> bad = {"",    "abc", "12X", "-5",  "1.5G", "64 M", "64MB2",
                                           "1P",  "0",   "2T",  "4095", -5,     1.5,    100,
                                           true,  nullptr, nlohmann::json::array(),
                                           "99999999999999999999999G"};
  for (const nlohmann::json& value : bad) {
    try {
      make_memload({{"size", value}});
      ADD_FAILURE() << "no error for size " << value.dump();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("'size'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(value.dump()), std::string::npos) << e.what();
    }
  }
  try {
    make_memload({{"bytes", "1G"}});
    ADD_FAILURE() << "unknown key accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'bytes'"), std::string::npos) << e.what();
  }
  auto set = ServiceSet::create({{"memload", {{"size", "lots"}}}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().find("memload"), std::string::npos) << set.error();
}

// Several threads on one instance: one allocation, every read counted.
TEST(Memload, ThreadsShareOneInstance) {
  const uint64_t size = kMiB + 4096 * 7;
  const uint64_t allocations_before = memload_testing::allocations();
  auto m = make_memload({{"size", size}});
  constexpr int kThreads = 4, kBatches = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      Batch batch(kMaxBatch);
      for (int i = 0; i < kBatches; ++i) batch.run(*m, 8);
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(stat_of(*m, "reads"), uint64_t{kThreads} * kBatches * kMaxBatch * 8);
  EXPECT_EQ(memload_testing::allocations(), allocations_before + 1);
}

// In a switch (configured through the service configuration): frames pass
// unchanged, coalescing on or off, and every packet made N reads.
TEST(Memload, PipelineForwardsUnchanged) {
  const uint8_t memload = test::service_id("memload");
  const std::vector<FlowRule> rules = {
      test::rule(0, 100, test::match({{Field::kSfStage, 0}}), {Action::softflow(memload, 4)}),
      test::rule(0, 100, test::match({{Field::kSfStage, 1}}), {Action::output(2)})};
  std::vector<Frame> frames;
  for (uint32_t i = 0; i < 100; ++i)
    frames.push_back(
        test::frame(1, test::udp4(0x0a000001, 0x0a000002, 1000 + i % 7, 53, "q"), 1000 + i));
  const nlohmann::json config = {{"memload", {{"size", "2M"}}}};
  for (bool coalesce : {false, true}) {
    test::SwitchHarness h(coalesce, {1, 2}, MegaflowCacheConfig{}, config);
    ASSERT_TRUE(h.add(rules));
    h.run(frames);
    const std::vector<Frame>& sent = h.ports().sent(2);
    ASSERT_EQ(sent.size(), frames.size()) << test::drops_string(h.stats());
    for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(sent[i].bytes, frames[i].bytes);
    const nlohmann::json stats = h.sw().services().stats().at("memload");
    EXPECT_EQ(stats.at("reads").get<uint64_t>(), 4u * frames.size());
    EXPECT_EQ(stats.at("size").get<uint64_t>(), 2 * kMiB);
  }
}

}  // namespace
}  // namespace softflow

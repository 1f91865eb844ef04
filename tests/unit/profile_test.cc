// The datapath's CPU breakdown (DatapathConfig::profile, profile.h): with
// profiling on, a pipeline with a service charges cycles to lookup, services,
// actions and the slow path, and never more than the run's wall-clock
// cycles; with it off, every counter stays zero.  Also the clock's nesting
// and the JSON keys that sf-bench and sfctl show print.
#include "softflow/profile.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace softflow {
namespace {

constexpr uint32_t kA = 0x0a000001, kB = 0x0a000002;

// Stage 0 sends IPv4 through noop, stage 1 outputs to port 2.
constexpr char kNoopPipeline[] =
    "table=0,priority=10,sf_stage=0,ip,actions=softflow:noop:0\n"
    "table=0,priority=10,sf_stage=1,sf_action=noop,actions=output:2\n";

struct PipelineRun {
  CycleProfile profile;
  uint64_t wall_cycles = 0;
  uint64_t sent = 0;
};

// 'n' UDP packets over 50 flows through the noop pipeline, timed as a whole.
PipelineRun run_pipeline(bool profile, bool coalesce, size_t n) {
  SwitchConfig cfg;
  cfg.datapath.profile = profile;
  cfg.datapath.coalesce = coalesce;
  auto sw = Switch::create(cfg);
  EXPECT_TRUE(sw.is_ok());
  auto rules = parse_flows(kNoopPipeline);
  EXPECT_TRUE(rules.is_ok());
  EXPECT_TRUE(sw.value()->add_flows(rules.value()));
  MemoryPorts ports({1, 2});
  Datapath& dp = sw.value()->datapath();
  dp.set_sink(&ports);

  std::vector<Frame> frames;
  for (size_t i = 0; i < n; ++i)
    frames.push_back(test::frame(
        1, test::udp4(kA, kB, static_cast<uint16_t>(1000 + i % 50), 53, "p" + std::to_string(i)),
        1000 + i));
  FramePool pool(kMaxBatch);
  PipelineRun run;
  const uint64_t start = tsc_now();
  run_frames(dp, frames, pool);
  run.wall_cycles = tsc_now() - start;
  run.profile = dp.profile();
  run.sent = test::total_sent(ports);
  return run;
}

TEST(Profile, OnChargesLookupServicesActionsAndSlowPathWithinWallClock) {
  for (bool coalesce : {true, false}) {
    SCOPED_TRACE(coalesce ? "coalescing on" : "coalescing off");
    const PipelineRun run = run_pipeline(true, coalesce, 2000);
    const CycleProfile& p = run.profile;
    EXPECT_EQ(run.sent, 2000u);
    EXPECT_EQ(p.packets, 2000u);
    EXPECT_GT(p[ProfileCategory::kLookup], 0u);
    EXPECT_GT(p[ProfileCategory::kServices], 0u);
    EXPECT_GT(p[ProfileCategory::kActions], 0u);
    EXPECT_GT(p[ProfileCategory::kSlowPath], 0u);  // the first packet of each flow
    // run_frames parses and copies, but only a PMD loop or sf-bench charges that.
    EXPECT_EQ(p[ProfileCategory::kParse], 0u);
    EXPECT_EQ(p[ProfileCategory::kIoRx], 0u);
    EXPECT_EQ(p[ProfileCategory::kIoTx], 0u);
    EXPECT_EQ(p[ProfileCategory::kIdle], 0u);
    EXPECT_LE(p.total(), run.wall_cycles);
    EXPECT_EQ(p.wall_cycles, 0u);  // no thread marked its start
  }
}

TEST(Profile, OffLeavesEveryCounterZero) {
  const PipelineRun run = run_pipeline(false, true, 500);
  EXPECT_EQ(run.sent, 500u);
  EXPECT_EQ(run.profile.packets, 0u);
  for (size_t i = 0; i < kProfileCategories; ++i)
    EXPECT_EQ(run.profile.cycles[i], 0u) << profile_category_name(static_cast<ProfileCategory>(i));
  EXPECT_EQ(run.profile.total(), 0u);
}

TEST(Profile, DatapathHandsOutCountersOnlyWhenProfiling) {
  for (bool on : {false, true}) {
    SwitchConfig cfg;
    cfg.datapath.profile = on;
    auto sw = Switch::create(cfg);
    ASSERT_TRUE(sw.is_ok());
    EXPECT_EQ(sw.value()->datapath().profiling(), on);
    EXPECT_EQ(sw.value()->datapath().profile_counters() != nullptr, on);
  }
}

TEST(Profile, ClockChargesNestedScopesToTheirOwnCategory) {
  ProfileCounters counters;
  CycleClock clock(&counters);
  auto spin = [] {
    const uint64_t until = tsc_now() + 20000;
    while (tsc_now() < until) {
    }
  };
  const uint64_t start = tsc_now();
  clock.start(ProfileCategory::kLookup);
  spin();
  {
    CycleClock::Scope slow(clock, ProfileCategory::kSlowPath);
    spin();
  }
  spin();  // back in lookup
  clock.enter(ProfileCategory::kServices);
  spin();
  clock.stop();
  clock.restart();
  spin();  // dropped: nothing charged after restart() until the next charge
  clock.restart();
  clock.charge(ProfileCategory::kIdle);
  clock.count_packets(7);
  const uint64_t wall = tsc_now() - start;

  const CycleProfile p = counters.snapshot();
  EXPECT_EQ(p.packets, 7u);
  EXPECT_GE(p[ProfileCategory::kLookup], 40000u);
  EXPECT_GE(p[ProfileCategory::kSlowPath], 20000u);
  EXPECT_GE(p[ProfileCategory::kServices], 20000u);
  EXPECT_LE(p.total() + 20000u, wall);  // the dropped interval is nowhere
}

TEST(Profile, OffClockDoesNothing) {
  CycleClock clock;
  EXPECT_FALSE(clock.on());
  clock.start(ProfileCategory::kLookup);
  { CycleClock::Scope slow(clock, ProfileCategory::kSlowPath); }
  clock.charge(ProfileCategory::kIdle);
  clock.stop();
  clock.count_packets(3);  // nothing to crash into: no counters
}

TEST(Profile, JsonKeysAndSums) {
  CycleProfile p;
  p.packets = 10;
  for (size_t i = 0; i < kProfileCategories; ++i) p.cycles[i] = 100 * (i + 1);
  CycleProfile twice = p;
  twice += p;
  EXPECT_EQ(twice.total(), 2 * p.total());
  twice -= p;
  EXPECT_EQ(twice.cycles, p.cycles);

  const nlohmann::json j = profile_json(p, 2.5e9);
  EXPECT_EQ(j.at("tsc_hz").get<double>(), 2.5e9);
  EXPECT_EQ(j.at("packets").get<uint64_t>(), 10u);
  EXPECT_FALSE(j.contains("wall_cycles"));
  const std::vector<std::string> names = {"parse",   "lookup", "slow_path", "services",
                                          "actions", "io_rx",  "io_tx",     "idle"};
  ASSERT_EQ(j.at("cycles").size(), names.size()) << j.dump();
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(j.at("cycles").at(names[i]).get<uint64_t>(), 100 * (i + 1)) << names[i];
  p.wall_cycles = 10000;
  EXPECT_EQ(profile_json(p, 1e9).at("wall_cycles").get<uint64_t>(), 10000u);
  // Per packet: parse is 100 cycles / 10 packets.
  EXPECT_NE(profile_text(p).find("parse 10.0 ("), std::string::npos) << profile_text(p);
}

TEST(Profile, TscHzIsCalibratedOnce) {
  const double hz = tsc_hz();
  EXPECT_GT(hz, 1e8);
  EXPECT_LT(hz, 1e11);
  EXPECT_EQ(tsc_hz(), hz);
}

}  // namespace
}  // namespace softflow

// Revalidation (DESIGN.md "Megaflow correctness"): once a flow mod returns,
// no packet follows a stale megaflow.
//
// Each test warms a switch's megaflow cache with traffic, changes the rules
// through Switch::add_flow/del_flows/mod_flows, sends the same traffic
// again, and compares every packet's output with a fresh switch that only
// ever had the new rule set.  Services here are stateless (noop, counter,
// and a test-only metadata service), so the fresh switch must agree exactly.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "softflow/flow_syntax.h"
#include "softflow/service.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::frame;
using test::match;
using test::prefix_mask;
using test::rule;
using test::SwitchHarness;

// Stateless, test-only: sf_metadata = the frame's last byte % 3.  Argument
// 0 lets the datapath coalesce, argument 1 does not.
class MetaService final : public Service {
 public:
  explicit MetaService(const nlohmann::json& /*config*/) {}
  void process(std::span<Packet* const> batch, uint32_t sf_argument) override {
    for (Packet* p : batch) {
      p->key.sf_metadata = (p->len ? p->data[p->len - 1] : 0u) % 3u;
      p->sf_coalesce = sf_argument == 0;
    }
  }
};

}  // namespace
SF_REGISTER_SERVICE(test_meta, MetaService, "test only: sf_metadata = last frame byte % 3");
namespace {

std::string rules_text(const std::vector<FlowRule>& rules) {
  std::string out;
  for (const FlowRule& r : rules) out += "  " + print_flow(r) + "\n";
  return out;
}

// Warm 'sw' with 'frames' (twice: upcalls, then cache hits), apply
// 'change', send 'frames' again, and compare that second run with a fresh
// switch holding only the resulting rules.
void expect_no_stale_megaflow(SwitchHarness& sw, bool coalesce, const std::vector<Frame>& frames,
                              const std::function<void(Switch&)>& change, const std::string& what) {
  SCOPED_TRACE(what);
  const bool failed_before = ::testing::Test::HasFailure();
  sw.run(frames);
  sw.run(frames);
  ASSERT_GT(sw.sw().megaflow_count(), 0u);
  change(sw.sw());
  sw.ports().clear();
  const DatapathStats before = sw.stats();
  sw.run(frames);
  const DatapathStats& after = sw.stats();

  const std::vector<FlowRule> now = test::current_rules(sw.sw().tables());
  SwitchHarness fresh(coalesce);
  ASSERT_TRUE(fresh.add(now));
  fresh.run(frames);
  EXPECT_TRUE(test::same_output(fresh.ports(), sw.ports()));
  for (size_t i = 1; i < after.drops.size(); ++i)
    EXPECT_EQ(after.drops[i] - before.drops[i], fresh.stats().drops[i])
        << drop_reason_name(static_cast<DropReason>(i));
  if (!failed_before && ::testing::Test::HasFailure())
    ADD_FAILURE() << what << ": rules after the change:\n" << rules_text(now);
}

std::vector<Frame> mixed_traffic(uint64_t seed, size_t n = 600) {
  std::mt19937_64 rng(seed);
  return test::random_traffic(rng, test::Universe{}, n, 60);
}

class Revalidation : public ::testing::TestWithParam<bool> {
 protected:
  bool coalesce() const { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Coalescing, Revalidation, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "on" : "off"; });

std::vector<FlowRule> single_stage_rules() {
  return {
      rule(0, 100, match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000, prefix_mask(24)}}),
           {Action::output(2)}),
      rule(0, 50, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 6}}), {Action::output(3)}),
      rule(0, 1, Match{}, {Action::output(4)}),
  };
}

TEST_P(Revalidation, DeletedRuleIsNotFollowed) {
  SwitchHarness sw(coalesce());
  ASSERT_TRUE(sw.add(single_stage_rules()));
  const std::vector<Frame> frames = mixed_traffic(1);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    EXPECT_EQ(s.del_flows(match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000, prefix_mask(24)}}), 0,
                          /*strict=*/true, 100),
              1u);
  }, "del strict");
  // Nothing reached port 2 after the delete returned.
  EXPECT_EQ(sw.ports().sent(2).size(), 0u);
  EXPECT_GT(sw.stats().revalidated_removed + sw.stats().revalidated_updated, 0u);
}

TEST_P(Revalidation, DeleteAllThenTableMiss) {
  SwitchHarness sw(coalesce());
  ASSERT_TRUE(sw.add(single_stage_rules()));
  const std::vector<Frame> frames = mixed_traffic(2);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    EXPECT_EQ(s.del_flows(Match{}, std::nullopt), 3u);
  }, "del all");
  EXPECT_EQ(test::total_sent(sw.ports()), 0u);
}

TEST_P(Revalidation, AddedHigherPriorityRuleTakesEffect) {
  SwitchHarness sw(coalesce());
  ASSERT_TRUE(sw.add(single_stage_rules()));
  const std::vector<Frame> frames = mixed_traffic(3);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    // Narrower than existing megaflows' masks: they must be split/removed.
    EXPECT_TRUE(s.add_flow(rule(0, 200, match({{Field::kTpDst, 80}}), {Action::output(1)})));
  }, "add tp_dst=80");
  EXPECT_GT(sw.ports().sent(1).size(), 0u);
}

TEST_P(Revalidation, AddedLowerPriorityRuleTakesEffectForMisses) {
  SwitchHarness sw(coalesce());
  std::vector<FlowRule> rules = single_stage_rules();
  rules.pop_back();  // no default: IPv6/ARP/UDP elsewhere miss
  ASSERT_TRUE(sw.add(rules));
  const std::vector<Frame> frames = mixed_traffic(4);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    EXPECT_TRUE(s.add_flow(rule(0, 10, match({{Field::kDlType, 0x86dd}}), {Action::output(1)})));
  }, "add ipv6 default");
  EXPECT_GT(sw.ports().sent(1).size(), 0u);
}

TEST_P(Revalidation, ModifiedActionsTakeEffect) {
  SwitchHarness sw(coalesce());
  ASSERT_TRUE(sw.add(single_stage_rules()));
  const std::vector<Frame> frames = mixed_traffic(5);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    EXPECT_EQ(s.mod_flows(match({{Field::kDlType, 0x0800}}), 0,
                          {Action::set_field(Field::kNwDst, 0xc0a80001), Action::output(1)}),
              2u);
  }, "mod ip rules");
  EXPECT_EQ(sw.ports().sent(2).size(), 0u);
  EXPECT_EQ(sw.ports().sent(3).size(), 0u);
}

TEST_P(Revalidation, ReplacingAddTakesEffect) {
  SwitchHarness sw(coalesce());
  ASSERT_TRUE(sw.add(single_stage_rules()));
  const std::vector<Frame> frames = mixed_traffic(6);
  expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
    EXPECT_TRUE(s.add_flow(rule(0, 50, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 6}}), {})));
    EXPECT_EQ(s.tables().rule_count(), 3u);
  }, "replace tcp rule by drop");
  EXPECT_EQ(sw.ports().sent(3).size(), 0u);
}

// A coalesced chain: stage 0 noop, stage 1 counter, stage 2 routes.  The
// rule that changes is consulted only by a continuation (segment 1 or 2).
std::vector<FlowRule> chain_rules() {
  const uint8_t noop = test::service_id("noop");
  const uint8_t counter = test::service_id("counter");
  return {
      rule(0, 100, match({{Field::kSfStage, 0}, {Field::kDlType, 0x0800}}), {Action::softflow(noop, 0)}),
      rule(0, 100, match({{Field::kSfStage, 1}}), {Action::softflow(counter, 3)}),
      rule(0, 100, match({{Field::kSfStage, 2}}), {Action::goto_table(1)}),
      rule(0, 1, Match{}, {Action::output(4)}),
      rule(1, 30, match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000, prefix_mask(24)}}),
           {Action::output(2)}),
      rule(1, 20, match({{Field::kTpDst, 53}}), {Action::set_field(Field::kTpDst, 5353), Action::output(3)}),
      rule(1, 10, Match{}, {Action::output(1)}),
  };
}

struct ChainEdit {
  const char* name;
  std::function<void(Switch&)> apply;
};

std::vector<ChainEdit> chain_edits() {
  return {
      {"mod post-service route",
       [](Switch& s) {
         EXPECT_EQ(s.mod_flows(match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000, prefix_mask(24)}}), 1,
                               {Action::output(4)}, true, 30),
                   1u);
       }},
      {"add post-service rule on a field no megaflow looked at",
       [](Switch& s) {
         EXPECT_TRUE(s.add_flow(rule(1, 40, match({{Field::kTpSrc, 80}}), {Action::output(3)})));
       }},
      {"delete post-service default",
       [](Switch& s) { EXPECT_EQ(s.del_flows(Match{}, 1, true, 10), 1u); }},
      {"add rule at the middle stage",
       [](Switch& s) {
         EXPECT_TRUE(s.add_flow(rule(0, 200, match({{Field::kSfStage, 1}, {Field::kDlType, 0x0800}, {Field::kNwProto, 17}}),
                                     {Action::output(3)})));
       }},
      {"mod the middle stage's service into an output",
       [](Switch& s) {
         EXPECT_EQ(s.mod_flows(match({{Field::kSfStage, 1}}), 0, {Action::output(1)}, true, 100), 1u);
       }},
      {"mod stage 0 into a longer chain",
       [](Switch& s) {
         EXPECT_EQ(s.mod_flows(match({{Field::kSfStage, 2}}), 0,
                               {Action::softflow(test::service_id("noop"), 9)}, true, 100),
                   1u);
         EXPECT_TRUE(s.add_flow(rule(0, 100, match({{Field::kSfStage, 3}}), {Action::goto_table(1)})));
       }},
  };
}

TEST_P(Revalidation, CoalescedChainFollowsPostServiceRuleChanges) {
  const std::vector<Frame> frames = mixed_traffic(7, 800);
  for (const ChainEdit& edit : chain_edits()) {
    SwitchHarness sw(coalesce());
    ASSERT_TRUE(sw.add(chain_rules()));
    if (coalesce()) {
      sw.run(frames);
      // The cache really holds 3-segment megaflows before the change.
      size_t chained = 0;
      sw.dp().megaflows().for_each([&](Megaflow& mf) { chained += mf.segments.size() == 3; });
      EXPECT_GT(chained, 0u) << edit.name;
    }
    expect_no_stale_megaflow(sw, coalesce(), frames, edit.apply, edit.name);
  }
}

// The post-service stage branches on the metadata the service wrote.
TEST_P(Revalidation, MetadataBranchChangesTakeEffect) {
  const uint8_t meta = test::service_id("test_meta");
  const std::vector<FlowRule> rules = {
      rule(0, 10, match({{Field::kSfStage, 0}}), {Action::softflow(meta, 0)}),
      rule(0, 10, match({{Field::kSfStage, 1}, {Field::kSfMetadata, 0}}), {Action::output(1)}),
      rule(0, 10, match({{Field::kSfStage, 1}, {Field::kSfMetadata, 1}}), {Action::output(2)}),
      rule(0, 10, match({{Field::kSfStage, 1}, {Field::kSfMetadata, 2}}), {Action::output(3)}),
  };
  const std::vector<Frame> frames = mixed_traffic(8);
  {
    SwitchHarness sw(coalesce());
    ASSERT_TRUE(sw.add(rules));
    expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
      EXPECT_EQ(s.mod_flows(match({{Field::kSfStage, 1}, {Field::kSfMetadata, 1}}), 0, {Action::output(4)},
                            true, 10),
                1u);
    }, "mod metadata=1 branch");
    EXPECT_EQ(sw.ports().sent(2).size(), 0u);
    if (coalesce()) {
      EXPECT_GT(sw.stats().coalesced, 0u);
    }
  }
  {
    SwitchHarness sw(coalesce());
    ASSERT_TRUE(sw.add(rules));
    expect_no_stale_megaflow(sw, coalesce(), frames, [](Switch& s) {
      EXPECT_TRUE(s.add_flow(rule(0, 20, match({{Field::kSfStage, 1}, {Field::kSfMetadata, 2, 2}, {Field::kNwProto, 17}}),
                                  {Action::output(4)})));
    }, "add masked metadata branch");
  }
}

// ---- randomized ---------------------------------------------------------------

// A random edit of a random pipeline, valid for the tables it touches.
void random_edit(std::mt19937_64& rng, Switch& s, const test::Universe& u, const test::PipelineSpec& spec,
                 std::string& log) {
  const auto rules = s.tables().rules();
  const int kind = static_cast<int>(rng() % 5);
  if (kind == 0 && !rules.empty()) {  // strict delete of one rule
    const FlowRule r = rules[rng() % rules.size()]->flow;
    log += "del strict: " + print_flow(r) + "\n";
    EXPECT_EQ(s.del_flows(r.match, r.table, true, r.priority), 1u);
  } else if (kind == 1) {  // non-strict delete by a packet field
    const test::FieldMatch fm = test::random_packet_field(rng, u);
    Match filter;
    filter.set_uint(fm.field, fm.value, fm.mask);
    const uint8_t table = static_cast<uint8_t>(rng() % spec.tables);
    log += "del table=" + std::to_string(table) + " " + print_match(filter) + "\n";
    s.del_flows(filter, table);
  } else if (kind == 2 && !rules.empty()) {  // modify one rule's actions
    const FlowRule r = rules[rng() % rules.size()]->flow;
    // Borrow the actions of a random rule of a fresh pipeline for the same table.
    std::vector<FlowRule> donor = test::random_pipeline(rng, u, spec);
    std::vector<FlowRule> same_table;
    for (const FlowRule& d : donor)
      if (d.table == r.table) same_table.push_back(d);
    const ActionList actions = same_table.empty() ? ActionList{} : same_table[rng() % same_table.size()].actions;
    log += "mod strict: " + print_flow(r) + " -> " + print_actions(actions) + "\n";
    EXPECT_EQ(s.mod_flows(r.match, r.table, actions, true, r.priority), 1u);
  } else {  // add a rule from a fresh random pipeline of the same shape
    std::vector<FlowRule> donor = test::random_pipeline(rng, u, spec);
    FlowRule r = donor[rng() % donor.size()];
    r.priority = static_cast<uint16_t>(r.priority + rng() % 3);
    log += "add: " + print_flow(r) + "\n";
    EXPECT_TRUE(s.add_flow(r));
  }
}

TEST_P(Revalidation, RandomRuleSetsAndEdits) {
  const uint64_t seed = test::test_seed(coalesce() ? 31337 : 31338);
  std::mt19937_64 seeder(seed);
  const test::Universe u;
  test::PipelineSpec spec;
  spec.services = {{test::service_id("noop"), {0, 1}},
                   {test::service_id("counter"), {2}},
                   {test::service_id("test_meta"), {0, 1}}};
  // Table 0 always dispatches on sf_stage here, so that this test exercises
  // revalidation and not the coalescing bug that
  // Coalescing.ContinuationIsNotReusedAtAnotherStage demonstrates.
  spec.stage_wildcard_pct = 0;
  uint64_t updated = 0, removed = 0;
  for (int c = 0; c < 25; ++c) {
    const uint64_t case_seed = seeder();
    std::mt19937_64 rng(case_seed);
    spec.tables = 2 + static_cast<int>(rng() % 3);
    spec.service_stages = 1 + static_cast<int>(rng() % 3);
    const std::vector<FlowRule> rules = test::random_pipeline(rng, u, spec);
    const std::vector<Frame> frames = test::random_traffic(rng, u, 400, 1 + rng() % 60);
    SwitchHarness sw(coalesce());
    ASSERT_TRUE(sw.add(rules));
    std::string log;
    for (int e = 0; e < 6; ++e) {
      expect_no_stale_megaflow(sw, coalesce(), frames,
                               [&](Switch& s) { random_edit(rng, s, u, spec, log); },
                               "case " + std::to_string(c) + " (seed " + std::to_string(case_seed) +
                                   ") edit " + std::to_string(e));
      if (HasFailure()) {
        ADD_FAILURE() << "initial rules:\n" << rules_text(rules) << "edits:\n" << log;
        return;
      }
    }
    updated += sw.stats().revalidated_updated;
    removed += sw.stats().revalidated_removed;
  }
  std::cout << "[   INFO   ] revalidated: updated=" << updated << " removed=" << removed << std::endl;
  EXPECT_GT(updated, 0u);
  EXPECT_GT(removed, 0u);
}

// Revalidation must not throw away what is still right: rule changes that no
// megaflow depends on keep every megaflow and its coalesced continuations,
// so traffic keeps taking one lookup per packet.
TEST(RevalidationKeeps, UnrelatedChangesKeepCoalescedMegaflows) {
  SwitchHarness sw(true);
  ASSERT_TRUE(sw.add(chain_rules()));
  std::vector<Frame> frames;
  for (int i = 0; i < 64; ++i)
    frames.push_back(frame(9, test::udp4(0x0b000001, i % 2 ? 0x0a000000u + i % 7 : 0x0a010001u, 1000,
                                         i % 2 ? 99 : 53)));
  sw.run(frames);
  sw.run(frames);
  std::vector<size_t> segments;
  sw.dp().megaflows().for_each([&](Megaflow& mf) { segments.push_back(mf.segments.size()); });
  ASSERT_FALSE(segments.empty());
  for (size_t n : segments) EXPECT_EQ(n, 3u);
  const DatapathStats before = sw.stats();
  // A table no rule jumps to, and a route no packet here can match (its
  // rejection is proven by nw_dst bits every megaflow already has).
  ASSERT_TRUE(sw.sw().add_flow(rule(7, 10, Match{}, {Action::output(1)})));
  ASSERT_TRUE(sw.sw().add_flow(rule(1, 40, match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0xc0a80000, prefix_mask(16)}}),
                                    {Action::output(3)})));
  EXPECT_EQ(sw.stats().revalidated_removed, before.revalidated_removed);
  std::vector<size_t> after_change;
  sw.dp().megaflows().for_each([&](Megaflow& mf) { after_change.push_back(mf.segments.size()); });
  EXPECT_EQ(after_change, segments);
  sw.run(frames);
  EXPECT_EQ(sw.stats().lookups - before.lookups, frames.size());
  EXPECT_EQ(sw.stats().upcalls, before.upcalls);
}

// Every datapath (PMD thread) of a switch is revalidated before the flow
// mod returns, and dump_flows sums the counters of all of them.
TEST(RevalidationAllDatapaths, EveryDatapathFollowsTheChange) {
  SwitchConfig cfg;
  cfg.n_datapaths = 3;
  auto created = Switch::create(cfg);
  ASSERT_TRUE(created) << created.error();
  Switch& sw = *created.value();
  ASSERT_EQ(sw.datapath_count(), 3u);
  const std::vector<FlowRule> rules = chain_rules();
  ASSERT_TRUE(sw.add_flows(rules));
  std::vector<MemoryPorts> ports(3, MemoryPorts({1, 2, 3, 4}));
  FramePool pool(128);
  const std::vector<Frame> frames(10, frame(9, test::udp4(0x0b000001, 0x0a000005, 1, 2)));
  for (size_t d = 0; d < 3; ++d) {
    sw.datapath(d).set_sink(&ports[d]);
    run_frames(sw.datapath(d), frames, pool);
    EXPECT_EQ(ports[d].sent(2).size(), 10u) << "datapath " << d;
    EXPECT_GT(sw.datapath(d).megaflows().size(), 0u);
  }
  EXPECT_EQ(sw.mod_flows(rules[4].match, 1, {Action::output(3)}, true, rules[4].priority), 1u);
  for (size_t d = 0; d < 3; ++d) {
    run_frames(sw.datapath(d), frames, pool);
    EXPECT_EQ(ports[d].sent(2).size(), 10u) << "datapath " << d;
    EXPECT_EQ(ports[d].sent(3).size(), 10u) << "datapath " << d;
  }
  for (const auto* r : sw.tables().rules(0))
    if (r->flow.priority == 100) {
      sw.dump_flows();
      EXPECT_EQ(r->n_packets, 60u) << print_flow(r->flow);
    }
  EXPECT_EQ(sw.total_stats().tx_packets, 60u);
}

// ---- rule counters ------------------------------------------------------------------

// " table=T, n_packets=N, n_bytes=B, <rest of print_flow>" is in the dump.
::testing::AssertionResult dump_has(const std::string& dump, const FlowRule& r, uint64_t packets,
                                    uint64_t bytes) {
  const std::string flow = print_flow(r);
  const size_t comma = flow.find(", ");
  const std::string line = " " + flow.substr(0, comma) + ", n_packets=" + std::to_string(packets) +
                           ", n_bytes=" + std::to_string(bytes) + ", " + flow.substr(comma + 2) + "\n";
  if (dump.find(line) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no line\n" << line << "in\n" << dump;
}

TEST_P(Revalidation, DumpFlowsCountsEveryPacketAcrossChangesAndStages) {
  SwitchHarness sw(coalesce());
  const std::vector<FlowRule> rules = chain_rules();
  ASSERT_TRUE(sw.add(rules));
  // 70 IPv4 UDP frames to 10.0.0.0/24 (port 2), 30 to 10.1.0.1:53 (port 3).
  std::vector<Frame> frames;
  uint64_t bytes_a = 0, bytes_b = 0;
  for (int i = 0; i < 100; ++i) {
    const bool a = i % 10 < 7;
    frames.push_back(frame(9, test::udp4(0x0b000001, a ? 0x0a000000u + i % 5 : 0x0a010001u, 1000, a ? 99 : 53,
                                         std::string(i % 13, 'p'))));
    (a ? bytes_a : bytes_b) += frames.back().bytes.size();
  }
  sw.run(frames);
  sw.run(frames);
  std::string dump = sw.sw().dump_flows();
  // Each stage's rule saw every packet (twice), the routes their share.
  for (int stage = 0; stage < 3; ++stage)
    EXPECT_TRUE(dump_has(dump, rules[stage], 200, 2 * (bytes_a + bytes_b))) << "stage " << stage;
  EXPECT_TRUE(dump_has(dump, rules[3], 0, 0));
  EXPECT_TRUE(dump_has(dump, rules[4], 140, 2 * bytes_a));
  EXPECT_TRUE(dump_has(dump, rules[5], 60, 2 * bytes_b));
  EXPECT_TRUE(dump_has(dump, rules[6], 0, 0));
  EXPECT_EQ(sw.ports().sent(2).size(), 140u);
  EXPECT_EQ(sw.ports().sent(3).size(), 60u);

  // Modify the route: its counters stay; traffic after the change adds.
  EXPECT_EQ(sw.sw().mod_flows(rules[4].match, 1, {Action::output(4)}, true, rules[4].priority), 1u);
  sw.run(frames);
  FlowRule modified = rules[4];
  modified.actions = {Action::output(4)};
  dump = sw.sw().dump_flows();
  EXPECT_TRUE(dump_has(dump, modified, 210, 3 * bytes_a));
  EXPECT_TRUE(dump_has(dump, rules[1], 300, 3 * (bytes_a + bytes_b)));
  EXPECT_EQ(sw.ports().sent(4).size(), 70u);

  // Delete the tp_dst=53 route: its packets go to the default; the stage
  // rules keep counting.
  EXPECT_EQ(sw.sw().del_flows(rules[5].match, 1, true, rules[5].priority), 1u);
  sw.run(frames);
  dump = sw.sw().dump_flows();
  EXPECT_TRUE(dump_has(dump, rules[6], 30, bytes_b));
  EXPECT_TRUE(dump_has(dump, rules[0], 400, 4 * (bytes_a + bytes_b)));
  EXPECT_TRUE(dump_has(dump, modified, 280, 4 * bytes_a));

  // Replacing a rule (same table, priority, match) resets its counters.
  EXPECT_TRUE(sw.sw().add_flow(rules[6]));
  sw.run(frames);
  EXPECT_TRUE(dump_has(sw.sw().dump_flows(), rules[6], 30, bytes_b));
}

}  // namespace
}  // namespace softflow

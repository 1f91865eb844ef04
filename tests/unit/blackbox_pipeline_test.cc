// The black-box split of Pipelines A, B and C (paper Figure 5): the hypervisor
// and the VMs, chained port to port in process, forward exactly the frames the
// run-to-completion pipeline forwards, byte for byte, on a T1-like trace.
#include <gtest/gtest.h>

#include <algorithm>

#include "softflow/pipelines.h"
#include "softflow/tracegen.h"
#include "test_util.h"

namespace softflow {
namespace {

std::vector<FlowRule> rules_for(PipelineKind kind, BlackBoxRole role) {
  PipelineOptions o;
  o.kind = kind;
  o.role = role;
  o.l2_rules = 50;
  o.l3_rules = 50;
  o.acl_rules = 50;
  auto rules = pipeline_rules(o);
  if (!rules) throw std::runtime_error(rules.error());
  return std::move(rules.value());
}

// Frames sent on 'port' of 'from', as input on port 'in' of the next hop.
std::vector<Frame> hand_over(const MemoryPorts& from, uint32_t port, uint32_t in) {
  std::vector<Frame> out = from.sent(port);
  for (Frame& f : out) f.port = in;
  return out;
}

std::vector<std::vector<uint8_t>> sorted_bytes(const std::vector<Frame>& frames) {
  std::vector<std::vector<uint8_t>> b;
  for (const Frame& f : frames) b.push_back(f.bytes);
  std::sort(b.begin(), b.end());
  return b;
}

class BlackBoxSplit : public ::testing::TestWithParam<PipelineKind> {};

TEST_P(BlackBoxSplit, ChainForwardsWhatTheWholePipelineForwards) {
  const PipelineKind kind = GetParam();
  TraceSpec spec;
  spec.kind = TraceKind::kT1;
  spec.scale = 0.003;
  auto frames = generate_trace_frames(spec, 1);
  ASSERT_TRUE(frames) << frames.error();
  for (Frame& f : *frames) f.port = 1;

  test::SwitchHarness whole(true, {1});
  ASSERT_TRUE(whole.add(rules_for(kind, BlackBoxRole::kWhole)));
  whole.run(*frames);

  test::SwitchHarness hv(true, {1, 2, 3});
  test::SwitchHarness fw(true, {1});
  test::SwitchHarness second(true, {1});
  ASSERT_TRUE(hv.add(rules_for(kind, BlackBoxRole::kHypervisor)));
  ASSERT_TRUE(fw.add(rules_for(kind, BlackBoxRole::kFirewall)));
  if (kind == PipelineKind::kB) {
    ASSERT_TRUE(second.add(rules_for(kind, BlackBoxRole::kAes)));
  } else if (kind == PipelineKind::kC) {
    ASSERT_TRUE(second.add(rules_for(kind, BlackBoxRole::kBalancer)));
  }

  // Stage by stage: the hypervisor is stateless, so running it once per hop
  // is the same as interleaving; every hop keeps its input order.
  hv.run(*frames);
  EXPECT_EQ(hv.ports().sent(2).size(), frames->size()) << "everything goes to the firewall VM";
  EXPECT_TRUE(hv.ports().sent(1).empty());
  fw.run(hand_over(hv.ports(), 2, 1));
  EXPECT_EQ(fw.ports().sent(1).size(), frames->size()) << test::drops_string(fw.stats());
  hv.run(hand_over(fw.ports(), 1, kBlackBoxFirewallPort));
  if (kind == PipelineKind::kA) {
    EXPECT_TRUE(hv.ports().sent(3).empty());
  } else {
    EXPECT_FALSE(hv.ports().sent(3).empty());
    second.run(hand_over(hv.ports(), 3, 1));
    EXPECT_EQ(second.ports().sent(1).size(), hv.ports().sent(3).size());
    hv.run(hand_over(second.ports(), 1, kBlackBoxSecondPort));
  }

  const std::vector<Frame>& expected = whole.ports().sent(1);
  const std::vector<Frame>& chained = hv.ports().sent(1);
  EXPECT_EQ(expected.size(), frames->size()) << test::drops_string(whole.stats());
  ASSERT_EQ(chained.size(), expected.size());
  EXPECT_TRUE(sorted_bytes(chained) == sorted_bytes(expected))
      << "the chain changed some frame differently from the whole pipeline";
  if (kind == PipelineKind::kA) {  // one path for every packet: same order too
    for (size_t i = 0; i < expected.size(); ++i)
      ASSERT_EQ(chained[i].bytes, expected[i].bytes) << "frame " << i;
  }
  // The VMs do the stateful part, the hypervisor none of it.
  EXPECT_EQ(hv.stats().service_packets, 0u);
  EXPECT_EQ(fw.stats().service_packets, frames->size());
}

INSTANTIATE_TEST_SUITE_P(All, BlackBoxSplit,
                         ::testing::Values(PipelineKind::kA, PipelineKind::kB, PipelineKind::kC),
                         [](const auto& param_info) {
                           return std::string(pipeline_name(param_info.param));
                         });

TEST(BlackBoxSplit, RolesNeedTheirPipeline) {
  PipelineOptions o;
  o.l2_rules = o.l3_rules = o.acl_rules = 5;
  o.kind = PipelineKind::kA;
  o.role = BlackBoxRole::kAes;
  auto r = pipeline_flows(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("pipeline B"), std::string::npos) << r.error();
  o.role = BlackBoxRole::kBalancer;
  EXPECT_FALSE(pipeline_flows(o));
  o.kind = PipelineKind::kD;
  o.role = BlackBoxRole::kHypervisor;
  EXPECT_FALSE(pipeline_flows(o));
  o.kind = PipelineKind::kC;
  EXPECT_TRUE(pipeline_flows(o));
  EXPECT_EQ(blackbox_role("firewall"), BlackBoxRole::kFirewall);
  EXPECT_FALSE(blackbox_role("router"));
}

}  // namespace
}  // namespace softflow

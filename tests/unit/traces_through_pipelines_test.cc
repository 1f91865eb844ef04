// The generated traces through the generated pipelines: every TCP
// conversation of T1, T2 and T3 is valid enough for the strict connection
// tracker, so Pipelines A, B and C forward every packet, on the first replay
// and on a replay with permuted ports (new connections), with coalescing on
// and off; and coalescing saves lookups where the paper says it should.
#include <gtest/gtest.h>

#include "softflow/parse.h"
#include "softflow/pipelines.h"
#include "softflow/tracegen.h"
#include "test_util.h"

namespace softflow {
namespace {


class TracesThroughPipelines : public ::testing::TestWithParam<std::tuple<PipelineKind, TraceKind>> {};

TEST_P(TracesThroughPipelines, StrictFirewallPassesEveryPacketOfEveryReplay) {
  const auto [kind, trace_kind] = GetParam();
  TraceSpec spec;
  spec.kind = trace_kind;
  spec.scale = 0.004;
  spec.rounds = 2;
  auto frames = generate_trace_frames(spec, 1);
  ASSERT_TRUE(frames) << frames.error();
  PipelineOptions opt;
  opt.kind = kind;
  auto rules = pipeline_rules(opt);
  ASSERT_TRUE(rules) << rules.error();

  std::map<bool, DatapathStats> by_mode;
  for (bool coalesce : {true, false}) {
    test::SwitchHarness h(coalesce, {1});
    ASSERT_TRUE(h.add(*rules));
    uint64_t shift = 0;
    for (uint32_t replay : {0u, 1u}) {
      std::vector<Frame> pass = *frames;
      for (Frame& f : pass) {
        rewrite_l4_ports(std::span<uint8_t>(f.bytes), replay);
        f.timestamp_ns += shift;
      }
      shift += pass.back().timestamp_ns + 1'000'000'000ULL;
      h.run(pass);
    }
    const DatapathStats& st = h.stats();
    const uint64_t n = 2 * frames->size();
    EXPECT_EQ(st.total_drops(), 0u) << (coalesce ? "on: " : "off: ") << test::drops_string(st) << "\n"
                                    << h.sw().services().stats().dump();
    EXPECT_EQ(st.tx_packets, n);
    EXPECT_EQ(h.ports().sent(1).size(), n);
    by_mode[coalesce] = st;
  }
  // One lookup per packet with coalescing where every service coalesces
  // (A: conntrack; B: conntrack, aes).  In C the clients' packets also go
  // through the balancer, which never coalesces: a second lookup for them
  // either way, none for the servers' replies.
  const double packets = static_cast<double>(by_mode[true].rx_packets);
  const double on = static_cast<double>(by_mode[true].lookups) / packets;
  const double off = static_cast<double>(by_mode[false].lookups) / packets;
  if (kind == PipelineKind::kC) {
    EXPECT_GT(on, 1.0);
    EXPECT_LT(on, 2.0);
    EXPECT_NEAR(off, on + 1, 0.01);
  } else {
    EXPECT_NEAR(on, 1.0, 0.01);
    EXPECT_NEAR(off, kind == PipelineKind::kA ? 2.0 : 3.0, 0.01);
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, TracesThroughPipelines,
    ::testing::Combine(::testing::Values(PipelineKind::kA, PipelineKind::kB, PipelineKind::kC),
                       ::testing::Values(TraceKind::kT1, TraceKind::kT2, TraceKind::kT3)),
    [](const auto& param_info) {
      return std::string(pipeline_name(std::get<0>(param_info.param))) + "_" +
             std::string(trace_kind_name(std::get<1>(param_info.param)));
    });

}  // namespace
}  // namespace softflow

// sfctl trace: what it prints, and that the megaflows it predicts are the
// ones the datapath installs for the same packet.
#include "softflow/trace.h"

#include <random>

#include "softflow/flow_syntax.h"
#include "softflow/parse.h"
#include "test_util.h"

namespace softflow {
namespace {

using Json = nlohmann::json;
using test::SwitchHarness;

std::vector<FlowRule> parse_rules(const std::string& text) {
  auto rules = parse_flows(text);
  EXPECT_TRUE(rules) << rules.error();
  return rules ? *rules : std::vector<FlowRule>{};
}

FlowKey packet(const std::string& description) {
  FlowParseOptions opts;
  opts.match_only = true;
  auto parsed = parse_flow(description, opts);
  EXPECT_TRUE(parsed) << parsed.error();
  return parsed ? parsed->match.value : zero_key();
}

// The datapath's megaflows as "match actions=..." strings (print_megaflow's
// format without the counters), sorted.
std::vector<std::string> installed_megaflows(Switch& sw) {
  std::vector<std::string> out;
  sw.datapath().megaflows().for_each([&](const Megaflow& mf) {
    Match m;
    m.value = mf.key;
    m.mask = mf.mask;
    const std::string match = print_match(m);
    std::string actions;
    for (size_t i = 0; i < mf.segments.size(); ++i) {
      if (i > 0)
        actions +=
            " [coalesced if sf_metadata=" + std::to_string(mf.segments[i].guard_metadata) + "] ";
      actions += print_actions(mf.segments[i].actions);
    }
    out.push_back((match.empty() ? "any" : match) + " actions=" + actions);
  });
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> traced_megaflows(const TraceResult& t) {
  std::vector<std::string> out;
  for (const Json& mf : t.json["megaflows"])
    out.push_back(mf["match"].get<std::string>() + " actions=" + mf["actions"].get<std::string>());
  std::sort(out.begin(), out.end());
  return out;
}

// Runs one frame through a fresh megaflow cache and returns what got installed.
std::vector<std::string> run_one(SwitchHarness& h, const std::vector<uint8_t>& bytes,
                                 uint32_t in_port) {
  h.sw().datapath().megaflows().clear();
  h.run(std::vector<Frame>{test::frame(in_port, bytes, 1000)});
  return installed_megaflows(h.sw());
}

FlowKey parsed_key(const std::vector<uint8_t>& bytes, uint32_t in_port) {
  FramePool pool(1);
  Packet p;
  EXPECT_TRUE(pool.load(p, bytes, in_port));
  parse_packet(p);
  const FlowKey k = p.key;
  pool.release(p);
  return k;
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

const char* kTwoStageNoop =
    "table=0,priority=10,sf_stage=0,ip,actions=softflow:noop:0\n"
    "table=0,priority=10,sf_stage=1,sf_action=noop,ip,nw_dst=10.0.0.2,actions=output:2\n";

TEST(Trace, TwoStagePipelineCoalesced) {
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(h.add(parse_rules(kTwoStageNoop)));
  const TraceResult t = trace_flow(h.sw(), packet("in_port=1,ip,nw_src=10.0.0.1,nw_dst=10.0.0.2"));
  const std::string& s = t.text;
  for (const char* want :
       {"Flow: ip,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.2\n",
        "stage 0:\n  key: ip,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.2\n",
        "  table 0: table=0, priority=10,sf_stage=0,ip actions=softflow:noop:0\n",
        "  datapath actions: softflow:noop:0\n", "  megaflow mask of this stage: sf_stage=0,ip\n",
        "  service noop runs with argument 0",
        "  next: sf_stage=1, sf_action=noop, sf_metadata=0 (assumed unchanged by the service)\n",
        "  stage 1 is coalesced into the same megaflow if noop sets sf_coalesce",
        "stage 1:\n  key: sf_stage=1,sf_action=noop,ip,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.2\n",
        "  table 0: table=0, priority=10,sf_stage=1,sf_action=noop,ip,nw_dst=10.0.0.2 "
        "actions=output:2\n",
        "  datapath actions: output:2\n",
        // Stage 1 consulted sf_action and in_port (output) too; sf_action
        // is written by the service, so only in_port and nw_dst join the
        // stage-0 mask, with sf_stage in full.
        "  megaflow mask of this stage: sf_stage=1,sf_action=noop,ip,in_port=1,nw_dst=10.0.0.2\n",
        "  merged megaflow (stages 0-1): sf_stage=0,ip,in_port=1,nw_dst=10.0.0.2\n",
        "Datapath actions: softflow:noop:0,output:2\n",
        "Megaflow: sf_stage=0,ip,in_port=1,nw_dst=10.0.0.2 actions=softflow:noop:0 [coalesced if "
        "sf_metadata=0] output:2\n"})
    EXPECT_TRUE(contains(s, want)) << "missing:\n" << want << "\nin:\n" << s;

  ASSERT_EQ(t.json["stages"].size(), 2u);
  EXPECT_EQ(t.json["stages"][0]["service"]["name"], "noop");
  EXPECT_EQ(t.json["stages"][0]["next"]["coalesced"], true);
  EXPECT_EQ(t.json["stages"][1]["merged_mask"], "sf_stage=0,ip,in_port=1,nw_dst=10.0.0.2");
  EXPECT_EQ(t.json["datapath_actions"], "softflow:noop:0,output:2");
  EXPECT_TRUE(t.json["dropped"].is_null());

  // The datapath agrees.
  const auto frame = test::udp4(0x0a000001, 0x0a000002, 1, 2);
  EXPECT_EQ(run_one(h, frame, 1), traced_megaflows(t));
  EXPECT_EQ(h.ports().sent(2).size(), 1u);
}

TEST(Trace, CoalescingOffGivesOneMegaflowPerStage) {
  SwitchHarness h(/*coalesce=*/false);
  ASSERT_TRUE(h.add(parse_rules(kTwoStageNoop)));
  const TraceResult t = trace_flow(h.sw(), packet("in_port=1,ip,nw_dst=10.0.0.2"));
  EXPECT_TRUE(contains(t.text, "stage 1 is looked up separately (coalescing is off)")) << t.text;
  EXPECT_FALSE(contains(t.text, "merged megaflow")) << t.text;
  ASSERT_EQ(t.json["megaflows"].size(), 2u);
  EXPECT_EQ(t.json["megaflows"][1]["match"],
            "sf_stage=1,sf_action=noop,ip,in_port=1,nw_dst=10.0.0.2");
  EXPECT_EQ(run_one(h, test::udp4(0x0a000001, 0x0a000002, 1, 2), 1), traced_megaflows(t));
}

TEST(Trace, MetadataOptionPicksTheNextStagesRule) {
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(
      h.add(parse_rules(std::string(kTwoStageNoop) +
                        "table=0,priority=20,sf_stage=1,sf_metadata=5,ip,actions=output:3\n")));
  const FlowKey k = packet("in_port=1,ip,nw_dst=10.0.0.2");
  TraceResult plain = trace_flow(h.sw(), k);
  EXPECT_EQ(plain.json["datapath_actions"], "softflow:noop:0,output:2");
  TraceOptions o;
  o.metadata[1] = 5;
  TraceResult given = trace_flow(h.sw(), k, o);
  EXPECT_EQ(given.json["datapath_actions"], "softflow:noop:0,output:3");
  EXPECT_TRUE(contains(given.text, "sf_metadata=5 (given with --metadata)")) << given.text;
  EXPECT_TRUE(contains(given.text, "[coalesced if sf_metadata=5] output:3")) << given.text;
  EXPECT_EQ(given.json["stages"][0]["next"]["metadata_given"], true);
}

TEST(Trace, WrittenFieldsLeaveTheMergedMask) {
  // Stage 0 rewrites nw_dst; stage 1 matches the rewritten value, which is
  // the same for every packet of the megaflow, so the megaflow need not.
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(h.add(parse_rules(
      "table=0,priority=10,sf_stage=0,ip,actions=mod_nw_dst:10.0.0.9,softflow:counter:1\n"
      "table=0,priority=10,sf_stage=1,ip,nw_dst=10.0.0.9,actions=output:2\n"
      "table=0,priority=5,sf_stage=1,ip,actions=output:3\n")));
  const TraceResult t = trace_flow(h.sw(), packet("in_port=1,ip,nw_dst=10.0.0.2"));
  EXPECT_TRUE(contains(
      t.text, "stage 1:\n  key: sf_stage=1,sf_action=counter,ip,in_port=1,nw_dst=10.0.0.9"))
      << t.text;
  EXPECT_EQ(t.json["datapath_actions"], "mod_nw_dst:10.0.0.9,softflow:counter:1,output:2");
  EXPECT_EQ(t.json["megaflows"][0]["match"], "sf_stage=0,ip,in_port=1");
  EXPECT_EQ(run_one(h, test::udp4(0x0a000001, 0x0a000002, 1, 2), 1), traced_megaflows(t));
}

TEST(Trace, LoopBound) {
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(h.add(parse_rules("table=0,priority=1,ip,actions=softflow:noop:3\n")));
  const TraceResult t = trace_flow(h.sw(), packet("in_port=1,ip"));
  ASSERT_EQ(t.json["stages"].size(), size_t{SF_MAX_STAGES});
  EXPECT_TRUE(contains(t.text, "stage 15:")) << t.text;
  EXPECT_FALSE(contains(t.text, "stage 16:")) << t.text;
  EXPECT_TRUE(contains(t.text,
                       "stage 16 would exceed the loop bound (SF_MAX_STAGES=16): the packet "
                       "is dropped (loop_limit)"))
      << t.text;
  EXPECT_TRUE(contains(t.text, ", then dropped (loop_limit)")) << t.text;
  EXPECT_EQ(t.json["dropped"], "loop_limit");
  EXPECT_EQ(run_one(h, test::udp4(1, 2, 3, 4), 1), traced_megaflows(t));
  EXPECT_EQ(h.stats().drop_count(DropReason::kLoopLimit), 1u);
}

TEST(Trace, TableMiss) {
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(h.add(parse_rules("table=0,priority=10,tcp,actions=goto_table:3\n")));
  const TraceResult t = trace_flow(h.sw(), packet("in_port=2,tcp,tp_dst=80"));
  EXPECT_TRUE(contains(t.text, "  table 0: table=0, priority=10,tcp actions=goto_table:3\n"))
      << t.text;
  EXPECT_TRUE(contains(t.text, "  table 3: table miss: drop\n")) << t.text;
  EXPECT_TRUE(contains(t.text, "Datapath actions: drop (table_miss)\n")) << t.text;
  EXPECT_EQ(t.json["dropped"], "table_miss");
  EXPECT_TRUE(t.json["stages"][0]["tables"][1]["miss"].get<bool>());
}

TEST(Trace, ChangesNothing) {
  SwitchHarness h(/*coalesce=*/true);
  ASSERT_TRUE(h.add(parse_rules(kTwoStageNoop)));
  const std::string before = h.sw().dump_flows();
  trace_flow(h.sw(), packet("in_port=1,ip,nw_dst=10.0.0.2"));
  EXPECT_EQ(h.sw().dump_flows(), before);
  EXPECT_EQ(h.sw().megaflow_count(), 0u);
  EXPECT_EQ(h.stats().rx_packets, 0u);
}

// The megaflows trace predicts are exactly those the datapath installs for
// the same packet in an empty cache, over random pipelines of the services
// the trace's assumptions fit (noop and counter keep sf_metadata and
// always coalesce), with coalescing on and off.
TEST(Trace, PredictsTheDatapathsMegaflows) {
  const uint64_t seed = test::test_seed(424242);
  std::mt19937_64 rng(seed);
  const test::Universe u;
  test::PipelineSpec spec;
  spec.services = {{test::service_id("noop"), {0, 1}}, {test::service_id("counter"), {1, 2}}};
  size_t compared = 0, multi_stage = 0;
  for (int c = 0; c < 60; ++c) {
    spec.tables = 2 + static_cast<int>(rng() % 4);
    spec.service_stages = 1 + static_cast<int>(rng() % 4);
    // Half the cases dispatch on sf_action in table 0 too, so a stage's
    // wildcards need not include sf_stage (the merge adds it).
    spec.stage_wildcard_pct = c % 2 ? 30 : 0;
    const std::vector<FlowRule> rules = test::random_pipeline(rng, u, spec);
    for (const bool coalesce : {true, false}) {
      SwitchHarness h(coalesce, {1, 2, 3, 4});
      ASSERT_TRUE(h.add(rules));
      for (int p = 0; p < 10; ++p) {
        test::FlowSpec f = test::random_flow(rng, u);
        f.ttl = 64;  // the trace does not know TTLs
        const std::vector<uint8_t> bytes = test::build_flow_frame(rng, f);
        const TraceResult t = trace_flow(h.sw(), parsed_key(bytes, f.in_port));
        const uint64_t upcalls_before = h.stats().upcalls;
        const std::vector<std::string> installed = run_one(h, bytes, f.in_port);
        // A stage can hit the megaflow an earlier stage of the same packet
        // installed (its mask ignored the stage): the datapath then does
        // not install another, and the trace's list is longer.  Compare
        // only when every stage was an upcall.
        if (!coalesce && h.stats().upcalls - upcalls_before != t.json["megaflows"].size()) continue;
        ASSERT_EQ(installed, traced_megaflows(t))
            << "case " << c << " packet " << p << " coalesce=" << coalesce << " seed " << seed
            << "\n"
            << t.text;
        ++compared;
        multi_stage += t.json["stages"].size() > 1;
      }
    }
  }
  std::cout << "[   INFO   ] compared=" << compared << " multi-stage=" << multi_stage << std::endl;
  EXPECT_GT(compared, 900u);
  EXPECT_GT(multi_stage, 200u);
}

}  // namespace
}  // namespace softflow

// The datapath: stages and the loop bound, drop reasons, lookups per packet
// with and without coalescing, services, rewrites on the wire, expiry and
// the megaflow limit.  Frames go through run_frames + MemoryPorts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "softflow/packet_ops.h"
#include "softflow/parse.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::frame;
using test::match;
using test::rule;
using test::SwitchHarness;

constexpr uint32_t kA = 0x0a000001, kB = 0x0a000002;

std::vector<Frame> udp_frames(size_t n, uint32_t in_port = 1, uint16_t sport = 1000) {
  std::vector<Frame> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back(frame(in_port, test::udp4(kA, kB, sport, 53, "u" + std::to_string(i)), 1000 + i));
  return out;
}

// A K-stage noop pipeline (paper pipeline D without routes): stage s < K
// invokes noop:s, stage K outputs to port 2.
std::vector<FlowRule> noop_pipeline(int k, uint32_t out_port = 2) {
  const uint8_t noop = test::service_id("noop");
  std::vector<FlowRule> rules;
  for (int s = 0; s < k; ++s)
    rules.push_back(rule(0, 100, match({{Field::kSfStage, uint64_t(s)}, {Field::kDlType, 0x0800}}),
                         {Action::softflow(noop, static_cast<uint32_t>(s))}));
  rules.push_back(rule(0, 100, match({{Field::kSfStage, uint64_t(k)}, {Field::kDlType, 0x0800}}),
                       {Action::goto_table(1)}));
  rules.push_back(rule(1, 1, Match{}, {Action::output(out_port)}));
  return rules;
}

class DatapathModes : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Coalescing, DatapathModes, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "on" : "off"; });

TEST_P(DatapathModes, LoopBoundDropsAfterMaxStages) {
  SwitchHarness h(GetParam());
  // Every stage re-invokes noop: the rule does not look at sf_stage.
  ASSERT_TRUE(h.add({rule(0, 1, Match{}, {Action::softflow(test::service_id("noop"), 0)})}));
  h.run(udp_frames(40));
  EXPECT_EQ(h.stats().drop_count(DropReason::kLoopLimit), 40u);
  EXPECT_EQ(h.stats().total_drops(), 40u);
  EXPECT_EQ(h.stats().tx_packets, 0u);
  EXPECT_EQ(test::total_sent(h.ports()), 0u);
  // The service ran at stages 0 .. SF_MAX_STAGES-1 for every packet.
  EXPECT_EQ(h.stats().service_packets, 40u * SF_MAX_STAGES);
}

TEST_P(DatapathModes, LoopBoundCountsServiceRunsPerArgument) {
  SwitchHarness h(GetParam());
  ASSERT_TRUE(h.add({rule(0, 1, Match{}, {Action::softflow(test::service_id("counter"), 5)})}));
  const std::vector<Frame> frames = udp_frames(10);
  h.run(frames);
  uint64_t bytes = 0;
  for (const Frame& f : frames) bytes += f.bytes.size();
  const nlohmann::json st = h.sw().services().stats().at("counter");
  EXPECT_EQ(st.at("5").at("packets").get<uint64_t>(), 10u * SF_MAX_STAGES) << st.dump();
  EXPECT_EQ(st.at("5").at("bytes").get<uint64_t>(), bytes * SF_MAX_STAGES);
  EXPECT_EQ(h.stats().drop_count(DropReason::kLoopLimit), 10u);
}

TEST_P(DatapathModes, LongestPipelineWithinTheBoundIsDelivered) {
  // SF_MAX_STAGES - 1 service stages: the last stage (SF_MAX_STAGES - 1)
  // outputs.  One more service stage would need stage SF_MAX_STAGES.
  for (int k : {SF_MAX_STAGES - 1, SF_MAX_STAGES}) {
    SwitchHarness h(GetParam());
    ASSERT_TRUE(h.add(noop_pipeline(k)));
    h.run(udp_frames(5));
    if (k < SF_MAX_STAGES) {
      EXPECT_EQ(h.ports().sent(2).size(), 5u) << "k=" << k;
      EXPECT_EQ(h.stats().total_drops(), 0u) << test::drops_string(h.stats());
    } else {
      EXPECT_EQ(h.ports().sent(2).size(), 0u) << "k=" << k;
      EXPECT_EQ(h.stats().drop_count(DropReason::kLoopLimit), 5u) << test::drops_string(h.stats());
    }
  }
}

TEST_P(DatapathModes, DropReasonsAreCounted) {
  SwitchHarness h(GetParam(), {1, 2, 3, 4});
  ASSERT_TRUE(h.add({
      rule(0, 50, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 6}}), {}),  // action drop
      rule(0, 50, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 17}, {Field::kTpDst, 9}}),
           {Action::output(9)}),  // no such port
      rule(0, 50, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 1}}),
           {Action::dec_ttl(), Action::output(2)}),
      rule(0, 40, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 17}, {Field::kTpDst, 10}}),
           {Action::goto_table(1)}),  // table 1 is empty: table miss there
      rule(0, 10, match({{Field::kDlType, 0x0800}}), {Action::output(3)}),
      // ARP and IPv6 hit nothing in table 0: table miss.
  }));
  std::vector<Frame> frames;
  for (int i = 0; i < 3; ++i) frames.push_back(frame(1, test::tcp4(kA, kB, 1, 2)));
  for (int i = 0; i < 4; ++i) frames.push_back(frame(1, test::udp4(kA, kB, 1, 9)));
  for (int i = 0; i < 2; ++i)
    frames.push_back(frame(1, PacketBuilder().ipv4(kA, kB, 1).icmp(8, 0).build()));  // TTL 1
  frames.push_back(frame(1, PacketBuilder().ipv4(kA, kB, 64).icmp(8, 0).build()));
  for (int i = 0; i < 5; ++i) frames.push_back(frame(1, test::udp4(kA, kB, 1, 10)));
  for (int i = 0; i < 6; ++i)
    frames.push_back(frame(1, PacketBuilder().arp(1, test::Universe{}.macs[0], kA, {}, kB).build()));
  frames.push_back(frame(1, PacketBuilder().ipv6(test::v6(1), test::v6(2)).udp(1, 2).build()));
  frames.push_back(frame(1, test::udp4(kA, kB, 1, 11)));  // delivered to port 3
  h.run(frames);
  const DatapathStats& s = h.stats();
  EXPECT_EQ(s.drop_count(DropReason::kActionDrop), 3u);
  EXPECT_EQ(s.drop_count(DropReason::kNoSuchPort), 4u);
  EXPECT_EQ(s.drop_count(DropReason::kTtlExceeded), 2u);
  EXPECT_EQ(s.drop_count(DropReason::kTableMiss), 5u + 6u + 1u);
  EXPECT_EQ(s.drop_count(DropReason::kLoopLimit), 0u);
  EXPECT_EQ(s.total_drops(), 3u + 4u + 2u + 12u);
  EXPECT_EQ(h.ports().sent(2).size(), 1u);
  EXPECT_EQ(h.ports().sent(3).size(), 1u);
  EXPECT_EQ(s.tx_packets, 2u);
  EXPECT_EQ(s.rx_packets, frames.size());
  // The TTL-64 ICMP left with TTL 63 and a correct header checksum.
  ASSERT_EQ(h.ports().sent(2).size(), 1u);
  EXPECT_EQ(h.ports().sent(2)[0].bytes, PacketBuilder().ipv4(kA, kB, 63).icmp(8, 0).build());
}

TEST_P(DatapathModes, OutputNeverGoesBackToIngressButInPortActionDoes) {
  SwitchHarness h(GetParam());
  ASSERT_TRUE(h.add({rule(0, 1, Match{}, {Action::output(1), Action::output(2), Action::output_in_port()})}));
  std::vector<Frame> frames = udp_frames(3, /*in_port=*/1);
  std::vector<Frame> from3 = udp_frames(2, /*in_port=*/3, 2000);
  frames.insert(frames.end(), from3.begin(), from3.end());
  h.run(frames);
  // From port 1: output:1 skipped, output:2, in_port (1).  From port 3:
  // output:1, output:2, in_port (3).
  EXPECT_EQ(h.ports().sent(1).size(), 3u + 2u);
  EXPECT_EQ(h.ports().sent(2).size(), 5u);
  EXPECT_EQ(h.ports().sent(3).size(), 2u);
  EXPECT_EQ(h.stats().total_drops(), 0u);
}

TEST_P(DatapathModes, PortsReceiveFramesInInputOrder) {
  SwitchHarness h(GetParam());
  const uint8_t noop = test::service_id("noop");
  // Odd source ports take a service detour first; output order per port
  // must still be the input order.
  ASSERT_TRUE(h.add({
      rule(0, 20, match({{Field::kSfStage, 0}, {Field::kTpSrc, 1, 1}}), {Action::softflow(noop, 0)}),
      rule(0, 10, Match{}, {Action::output(2), Action::output(3)}),
  }));
  std::vector<Frame> frames;
  for (uint16_t i = 0; i < 100; ++i)
    frames.push_back(frame(1, test::udp4(kA, kB, i, 53, "#" + std::to_string(i)), 5000 + i));
  h.run(frames);
  ASSERT_EQ(h.ports().sent(2).size(), frames.size());
  ASSERT_EQ(h.ports().sent(3).size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(h.ports().sent(2)[i].bytes, frames[i].bytes) << i;
    EXPECT_EQ(h.ports().sent(3)[i].bytes, frames[i].bytes) << i;
    EXPECT_EQ(h.ports().sent(2)[i].timestamp_ns, frames[i].timestamp_ns) << i;
  }
}

TEST(Datapath, LookupsPerPacketOneWhenCoalescedKPlusOneWithout) {
  constexpr int kStages = 4;
  constexpr size_t kPackets = 96;
  uint64_t lookups[2] = {}, coalesced[2] = {};
  std::vector<Frame> sent[2];
  for (bool on : {false, true}) {
    SwitchHarness h(on);
    ASSERT_TRUE(h.add(noop_pipeline(kStages)));
    h.run(udp_frames(1));  // warm: the first packet's upcall builds the megaflow(s)
    ASSERT_EQ(h.ports().sent(2).size(), 1u);
    const DatapathStats before = h.stats();
    h.run(udp_frames(kPackets));
    const DatapathStats& after = h.stats();
    lookups[on] = after.lookups - before.lookups;
    coalesced[on] = after.coalesced - before.coalesced;
    EXPECT_EQ(after.upcalls, before.upcalls) << "warm cache, no upcalls";
    EXPECT_EQ(after.service_packets - before.service_packets, kPackets * kStages);
    sent[on] = h.ports().sent(2);
  }
  EXPECT_EQ(lookups[true], kPackets) << "one lookup per packet with coalescing";
  EXPECT_EQ(coalesced[true], kPackets * kStages);
  EXPECT_EQ(lookups[false], kPackets * (kStages + 1)) << "a lookup per stage without";
  EXPECT_EQ(coalesced[false], 0u);
  ASSERT_EQ(sent[true].size(), kPackets + 1);
  ASSERT_EQ(sent[false].size(), kPackets + 1);
  for (size_t i = 0; i < sent[true].size(); ++i) EXPECT_EQ(sent[true][i].bytes, sent[false][i].bytes);
}

TEST(Datapath, CoalescedMegaflowHoldsEveryStage) {
  SwitchHarness h(true);
  ASSERT_TRUE(h.add(noop_pipeline(3)));
  h.run(udp_frames(1));
  ASSERT_EQ(h.sw().megaflow_count(), 1u);
  std::vector<size_t> segments;
  h.dp().megaflows().for_each([&](Megaflow& mf) { segments.push_back(mf.segments.size()); });
  ASSERT_EQ(segments, std::vector<size_t>{4});
  // Without coalescing: one megaflow per stage, each a single segment.
  SwitchHarness off(false);
  ASSERT_TRUE(off.add(noop_pipeline(3)));
  off.run(udp_frames(1));
  EXPECT_EQ(off.sw().megaflow_count(), 4u);
  off.dp().megaflows().for_each([&](Megaflow& mf) { EXPECT_EQ(mf.segments.size(), 1u); });
}

TEST(Datapath, CounterServiceCountsPerArgument) {
  SwitchHarness h(true);
  const uint8_t counter = test::service_id("counter");
  ASSERT_TRUE(h.add({
      rule(0, 10, match({{Field::kSfStage, 0}, {Field::kDlType, 0x0800}, {Field::kNwProto, 6}}),
           {Action::softflow(counter, 7)}),
      rule(0, 10, match({{Field::kSfStage, 0}, {Field::kDlType, 0x0800}, {Field::kNwProto, 17}}),
           {Action::softflow(counter, 9)}),
      rule(0, 10, match({{Field::kSfStage, 1}}), {Action::output(2)}),
  }));
  std::vector<Frame> frames;
  uint64_t tcp_bytes = 0, udp_bytes = 0;
  for (int i = 0; i < 50; ++i) {
    const bool tcp = i % 5 < 2;
    frames.push_back(frame(1, tcp ? test::tcp4(kA, kB, 1, 2, std::string(i, 'x'))
                                  : test::udp4(kA, kB, 1, 2, std::string(i, 'y'))));
    (tcp ? tcp_bytes : udp_bytes) += frames.back().bytes.size();
  }
  h.run(frames);
  const nlohmann::json st = h.sw().services().stats().at("counter");
  EXPECT_EQ(st.at("7").at("packets").get<uint64_t>(), 20u) << st.dump();
  EXPECT_EQ(st.at("7").at("bytes").get<uint64_t>(), tcp_bytes);
  EXPECT_EQ(st.at("9").at("packets").get<uint64_t>(), 30u);
  EXPECT_EQ(st.at("9").at("bytes").get<uint64_t>(), udp_bytes);
  EXPECT_EQ(st.size(), 2u);
  EXPECT_EQ(h.ports().sent(2).size(), 50u);
  EXPECT_GT(h.stats().coalesced, 0u);  // and counted even when coalesced
}

TEST(Datapath, RewritesReachTheWireWithValidChecksums) {
  SwitchHarness h(true);
  const uint8_t noop = test::service_id("noop");
  const MacAddr src_mac = {2, 0, 0, 0, 0, 1}, new_mac = {2, 0, 0, 0, 0, 0x99};
  // Stage 0: rewrite nw_dst and tp_dst, then a service; stage 1 routes on
  // the rewritten nw_dst and rewrites dl_dst.
  ASSERT_TRUE(h.add({
      rule(0, 10, match({{Field::kSfStage, 0}, {Field::kDlType, 0x0800}}),
           {Action::set_field(Field::kNwDst, 0xc0a80001), Action::set_field(Field::kTpDst, 8080),
            Action::softflow(noop, 0)}),
      rule(0, 10, match({{Field::kSfStage, 1}, {Field::kDlType, 0x0800}, {Field::kNwDst, 0xc0a80001}}),
           {Action::set_field(Field::kDlDst, 0x020000000099), Action::output(4)}),
  }));
  std::vector<Frame> frames;
  for (int i = 0; i < 4; ++i) {
    frames.push_back(frame(1, PacketBuilder().eth(src_mac, {2, 0, 0, 0, 0, 2}).ipv4(kA, kB).tcp(1234, 80, kTcpSyn, 77)
                                  .payload("hello").build()));
    frames.push_back(frame(1, PacketBuilder().eth(src_mac, {2, 0, 0, 0, 0, 2}).ipv4(kA, kB).udp(1234, 80)
                                  .payload("world").build()));
  }
  h.run(frames);
  const std::vector<uint8_t> tcp_expected = PacketBuilder().eth(src_mac, new_mac).ipv4(kA, 0xc0a80001)
                                                .tcp(1234, 8080, kTcpSyn, 77).payload("hello").build();
  const std::vector<uint8_t> udp_expected = PacketBuilder().eth(src_mac, new_mac).ipv4(kA, 0xc0a80001)
                                                .udp(1234, 8080).payload("world").build();
  ASSERT_EQ(h.ports().sent(4).size(), 8u);
  for (size_t i = 0; i < 8; ++i)
    EXPECT_EQ(test::hex_bytes(h.ports().sent(4)[i].bytes, 200),
              test::hex_bytes(i % 2 ? udp_expected : tcp_expected, 200))
        << i;
}

TEST(Datapath, IdleMegaflowsExpireOnTheFrameClock) {
  SwitchHarness h(true);
  ASSERT_TRUE(h.add({rule(0, 10, match({{Field::kDlType, 0x0800}, {Field::kNwDst, kB}}), {Action::output(2)}),
                     rule(0, 5, Match{}, {Action::output(3)})}));
  constexpr uint64_t kSec = 1'000'000'000ULL;
  std::vector<Frame> frames;
  // Flow X at t = 1 s, then only flow Y every 0.5 s until t = 30 s.
  frames.push_back(frame(1, test::udp4(kA, kB, 1, 2), 1 * kSec));
  for (uint64_t t = 2 * kSec; t <= 30 * kSec; t += kSec / 2)
    frames.push_back(frame(1, test::udp4(kA, 0x0a0000ff, 1, 2), t));
  // One packet per batch, so the clock advances between batches.
  for (const Frame& f : frames) h.run(std::span<const Frame>(&f, 1));
  EXPECT_GE(h.stats().megaflows_expired, 1u);
  EXPECT_EQ(h.sw().megaflow_count(), 1u);  // only Y's stays
  EXPECT_EQ(h.ports().sent(2).size(), 1u);
  EXPECT_EQ(h.ports().sent(3).size(), frames.size() - 1);
  // X again: a fresh upcall, same result.
  const uint64_t upcalls = h.stats().upcalls;
  Frame again = frame(1, test::udp4(kA, kB, 1, 2), 31 * kSec);
  h.run(std::span<const Frame>(&again, 1));
  EXPECT_EQ(h.stats().upcalls, upcalls + 1);
  EXPECT_EQ(h.ports().sent(2).size(), 2u);
}

TEST(Datapath, FullMegaflowCacheStillForwardsCorrectly) {
  MegaflowCacheConfig cache;
  cache.max_megaflows = 2;
  SwitchHarness h(true, {1, 2, 3, 4}, cache);
  std::vector<FlowRule> rules;
  for (uint32_t i = 0; i < 8; ++i)
    rules.push_back(rule(0, 10, match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000 + i}}),
                         {Action::output(1 + i % 4)}));
  ASSERT_TRUE(h.add(rules));
  std::vector<Frame> frames;
  for (int rep = 0; rep < 5; ++rep)
    for (uint32_t i = 0; i < 8; ++i) frames.push_back(frame(9, test::udp4(kA, 0x0a000000 + i, 1, 2)));
  h.run(frames);
  EXPECT_LE(h.sw().megaflow_count(), 2u);
  EXPECT_GT(h.stats().megaflow_limit_hits, 0u);
  for (uint32_t p = 1; p <= 4; ++p) EXPECT_EQ(h.ports().sent(p).size(), 10u) << "port " << p;
  // Rule counters still see every packet (uninstalled megaflows credit at once).
  h.sw().dump_flows();
  for (const auto* r : h.sw().tables().rules()) EXPECT_EQ(r->n_packets, 5u);
}

TEST(Datapath, MalformedFramesAreCountedAndForwardedByWhatParsed) {
  SwitchHarness h(true);
  ASSERT_TRUE(h.add({rule(0, 10, match({{Field::kDlType, 0x0800}}), {Action::output(2)}),
                     rule(0, 5, Match{}, {Action::output(3)})}));
  std::vector<uint8_t> good = test::udp4(kA, kB, 1, 2);
  std::vector<uint8_t> cut_l4(good.begin(), good.begin() + 14 + 20 + 3);  // UDP header cut
  std::vector<uint8_t> cut_l2(good.begin(), good.begin() + 10);
  h.run(std::vector<Frame>{frame(1, good), frame(1, cut_l4), frame(1, cut_l2), frame(1, {})});
  EXPECT_EQ(h.stats().malformed, 3u);
  EXPECT_EQ(h.ports().sent(2).size(), 2u);  // IPv4 parsed in both
  EXPECT_EQ(h.ports().sent(3).size(), 2u);
  ASSERT_EQ(h.ports().sent(2).size(), 2u);
  EXPECT_EQ(h.ports().sent(2)[1].bytes, cut_l4);
}

// sf-bench --miss-rate: a quarter of the lookups take the slow path, the
// output is what the cache would have given, and nothing new is installed.
TEST_P(DatapathModes, SyntheticMissRateForcesEvenlySpreadUpcalls) {
  auto run = [&](double rate, MemoryPorts& out) {
    SwitchConfig cfg;
    cfg.datapath.coalesce = GetParam();
    cfg.datapath.synthetic_miss_rate = rate;
    auto sw = Switch::create(cfg);
    EXPECT_TRUE(sw) << sw.error();
    Switch& s = *sw.value();
    EXPECT_TRUE(s.add_flows(noop_pipeline(2)));
    s.datapath().set_sink(&out);
    FramePool pool(4 * kMaxBatch);
    run_frames(s.datapath(), udp_frames(400), pool);
    return std::make_pair(s.datapath().stats(), s.megaflow_count());
  };
  MemoryPorts plain_out({1, 2}), missing_out({1, 2});
  const auto [plain, plain_flows] = run(0.0, plain_out);
  const auto [missing, missing_flows] = run(0.25, missing_out);
  EXPECT_TRUE(test::same_output(plain_out, missing_out));
  EXPECT_EQ(plain.synthetic_misses, 0u);
  EXPECT_EQ(missing.lookups, plain.lookups);
  // Error diffusion: within one of rate x lookups.
  const double expected = 0.25 * static_cast<double>(missing.lookups);
  EXPECT_NEAR(static_cast<double>(missing.synthetic_misses), expected, 1.0);
  // Every synthetic miss is an upcall; the real misses are at most those of
  // the plain run (a synthetic miss may land on a lookup that missed anyway).
  EXPECT_GE(missing.upcalls, missing.synthetic_misses);
  EXPECT_LE(missing.upcalls - missing.synthetic_misses, plain.upcalls);
  EXPECT_EQ(missing_flows, plain_flows);
  EXPECT_EQ(missing.tx_packets, 400u);
}

// A stateful service sees its packets in input order even when their
// arguments differ: SYN (ACL allows, arg 1), SYN-ACK (arg 0), ACK (arg 1) in
// one batch.  Grouping by argument would hand conntrack the ACK before the
// SYN-ACK, and it would refuse it.
TEST_P(DatapathModes, ServicesSeeTheirPacketsInInputOrder) {
  SwitchHarness h(GetParam());
  const uint8_t ct = test::service_id("conntrack");
  ASSERT_TRUE(h.add({
      rule(0, 300, match({{Field::kSfStage, 1}, {Field::kSfAction, ct}, {Field::kSfMetadata, 1}}),
           {Action::goto_table(1)}),
      rule(0, 100, match({{Field::kSfStage, 0}, {Field::kInPort, 1}}), {Action::softflow(ct, 1)}),
      rule(0, 0, match({{Field::kSfStage, 0}}), {Action::softflow(ct, 0)}),
      rule(1, 10, match({{Field::kInPort, 1}}), {Action::output(2)}),
      rule(1, 10, match({{Field::kInPort, 2}}), {Action::output(1)}),
  }));
  const std::vector<Frame> handshake = {
      frame(1, PacketBuilder().ipv4(kA, kB).tcp(40000, 80, kTcpSyn, 1000, 0).build(), 1000),
      frame(2, PacketBuilder().ipv4(kB, kA).tcp(80, 40000, kTcpSyn | kTcpAck, 5000, 1001).build(), 1001),
      frame(1, PacketBuilder().ipv4(kA, kB).tcp(40000, 80, kTcpAck, 1001, 5001).build(), 1002),
      frame(1, PacketBuilder().ipv4(kA, kB).tcp(40000, 80, kTcpAck | kTcpPsh, 1001, 5001).payload("GET").build(), 1003),
  };
  h.run(handshake);  // one batch
  EXPECT_EQ(h.ports().sent(2).size(), 3u) << test::drops_string(h.stats());
  EXPECT_EQ(h.ports().sent(1).size(), 1u);
  EXPECT_EQ(h.stats().total_drops(), 0u) << test::drops_string(h.stats());
}

}  // namespace
}  // namespace softflow

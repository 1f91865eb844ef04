// The userspace side of the XDP hand-off, without a network: XDP metadata
// taken from in front of a frame, megaflow ids from XDP verified before use,
// output that hands the packet's own buffer to the sink, and the megaflow
// observer that keeps the BPF mirror in step.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <tuple>

#include "sf_abi.h"
#include "softflow/afxdp.h"
#include "softflow/flow_syntax.h"
#include "softflow/packet_builder.h"
#include "softflow/parse.h"
#include "softflow/switch.h"
#include "test_util.h"

namespace softflow::test {
namespace {

constexpr uint32_t kHeadroom = 256;

// A frame in a buffer with headroom, like a UMEM chunk.
struct Frame {
  std::vector<uint8_t> buffer;
  Packet pkt;

  explicit Frame(const std::vector<uint8_t>& bytes) : buffer(kHeadroom + bytes.size() + 64, 0) {
    std::memcpy(buffer.data() + kHeadroom, bytes.data(), bytes.size());
    pkt.data = buffer.data() + kHeadroom;
    pkt.len = static_cast<uint32_t>(bytes.size());
    pkt.headroom = kHeadroom;
    pkt.tailroom = 64;
  }
  sf_xdp_meta& meta() {
    return *reinterpret_cast<sf_xdp_meta*>(buffer.data() + kHeadroom - sizeof(sf_xdp_meta));
  }
};

std::vector<uint8_t> tcp_frame(uint32_t src, uint32_t dst, uint16_t sport = 1000) {
  return PacketBuilder()
      .eth(mac("00:00:00:00:00:01"), mac("00:00:00:00:00:02"))
      .ipv4(src, dst)
      .tcp(sport, 80)
      .payload("hello")
      .build();
}

// Metadata as the XDP program would write it for this frame.
void write_meta(Frame& f, uint32_t ofport, uint8_t result, uint32_t id = 0, uint32_t gen = 0) {
  Packet parsed = f.pkt;
  parsed.key = zero_key();
  parsed.key.in_port = ofport;
  parse_packet(parsed);
  sf_xdp_meta& m = f.meta();
  m = sf_xdp_meta{};
  m.key = parsed.key;
  m.hash = key_hash(parsed.key);
  m.ref = {id, gen};
  m.l3_ofs = parsed.l3_ofs;
  m.l4_ofs = parsed.l4_ofs;
  m.payload_ofs = parsed.payload_ofs;
  m.parse_flags = parsed.parse_flags;
  m.result = result;
  m.magic = SF_XDP_META_MAGIC;
}

TEST(TakeXdpMeta, FillsThePacketAndClearsTheMagic) {
  Frame f(tcp_frame(0x0a000001, 0x0a000002));
  write_meta(f, 3, SF_XDP_MEGAFLOW_HIT, 17, 5);
  ASSERT_TRUE(take_xdp_meta(f.pkt, 3));
  Packet expect = f.pkt;
  expect.key = zero_key();
  expect.key.in_port = 3;
  parse_packet(expect);
  EXPECT_TRUE(key_equal(f.pkt.key, expect.key));
  EXPECT_EQ(f.pkt.l3_ofs, expect.l3_ofs);
  EXPECT_EQ(f.pkt.l4_ofs, expect.l4_ofs);
  EXPECT_EQ(f.pkt.payload_ofs, expect.payload_ofs);
  EXPECT_EQ(f.pkt.hash, key_hash(expect.key));
  EXPECT_EQ(f.pkt.megaflow_id, 17u);
  EXPECT_EQ(f.pkt.megaflow_generation, 5u);
  EXPECT_EQ(f.pkt.xdp_result, SF_XDP_MEGAFLOW_HIT);
  // Consumed: the same frame, reused, does not show it again.
  EXPECT_EQ(f.meta().magic, 0u);
  EXPECT_FALSE(take_xdp_meta(f.pkt, 3));
}

TEST(TakeXdpMeta, MissCarriesTheKeyButNoMegaflow) {
  Frame f(tcp_frame(0x0a000001, 0x0a000002));
  write_meta(f, 3, SF_XDP_MISS, 17, 5);
  ASSERT_TRUE(take_xdp_meta(f.pkt, 3));
  EXPECT_EQ(f.pkt.megaflow_generation, 0u);
  EXPECT_EQ(f.pkt.key.in_port, 3u);
}

TEST(TakeXdpMeta, RefusesWhatItCannotTrust) {
  {  // no magic
    Frame f(tcp_frame(1, 2));
    write_meta(f, 3, SF_XDP_MISS);
    f.meta().magic = 0x12345678;
    EXPECT_FALSE(take_xdp_meta(f.pkt, 3));
  }
  {  // XDP did not parse it
    Frame f(tcp_frame(1, 2));
    write_meta(f, 3, SF_XDP_UNPARSED);
    EXPECT_FALSE(take_xdp_meta(f.pkt, 3));
  }
  {  // another port's metadata
    Frame f(tcp_frame(1, 2));
    write_meta(f, 3, SF_XDP_MISS);
    EXPECT_FALSE(take_xdp_meta(f.pkt, 4));
  }
  {  // offsets past the frame
    Frame f(tcp_frame(1, 2));
    write_meta(f, 3, SF_XDP_MISS);
    f.meta().l4_ofs = static_cast<uint16_t>(f.pkt.len + 10);
    EXPECT_FALSE(take_xdp_meta(f.pkt, 3));
  }
  {  // no room for metadata in front of the frame
    Frame f(tcp_frame(1, 2));
    write_meta(f, 3, SF_XDP_MISS);
    f.pkt.headroom = sizeof(sf_xdp_meta) - 1;
    EXPECT_FALSE(take_xdp_meta(f.pkt, 3));
  }
}

// A sink that records which copies came as the packet's own buffer.
class RecordingSink : public PacketSink {
 public:
  struct Sent {
    uint32_t port;
    std::vector<uint8_t> bytes;
    bool own_buffer;
  };
  bool transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t) override {
    if (port > 8) return false;
    sent.push_back({port, {frame.begin(), frame.end()}, false});
    return true;
  }
  bool transmit_packet(uint32_t port, Packet& pkt, uint32_t len) override {
    if (port > 8) return false;
    sent.push_back({port, {pkt.data, pkt.data + len}, true});
    pkt.buffer_taken = true;
    return true;
  }
  std::vector<Sent> sent;
};

std::unique_ptr<Switch> make_switch(const std::string& flows) {
  auto sw = Switch::create(SwitchConfig{});
  EXPECT_TRUE(sw.is_ok());
  auto rules = parse_flows(flows);
  EXPECT_TRUE(rules.is_ok()) << rules.status().message();
  EXPECT_TRUE(sw.value()->add_flows(rules.value()).is_ok());
  return std::move(sw).value();
}

// Runs one frame through datapath 0 as a PMD would, with an optional hint.
void run_one(Switch& sw, Frame& f, uint32_t in_port, uint32_t id = 0, uint32_t gen = 0,
             uint8_t result = SF_XDP_MISS) {
  f.pkt.key = zero_key();
  f.pkt.key.in_port = in_port;
  parse_packet(f.pkt);
  f.pkt.megaflow_id = id;
  f.pkt.megaflow_generation = gen;
  f.pkt.xdp_result = result;
  Packet* batch[] = {&f.pkt};
  sw.process(0, batch, 1);
}

// The id and generation of the datapath's one megaflow.
std::pair<uint32_t, uint32_t> only_megaflow(Switch& sw) {
  EXPECT_EQ(sw.datapath(0).megaflows().size(), 1u);
  std::pair<uint32_t, uint32_t> ref{0, 0};
  sw.datapath(0).megaflows().for_each([&](Megaflow& mf) { ref = {mf.id, mf.generation}; });
  return ref;
}

// Two ports patched together; one packet from port 1 built the megaflow
// whose id and generation XDP would hand over.
class XdpHint : public ::testing::Test {
 protected:
  void SetUp() override {
    sw = make_switch("in_port=1,actions=output:2\nin_port=2,actions=output:1\n");
    sw->datapath(0).set_sink(&sink);
    Frame first(tcp_frame(1, 2));
    run_one(*sw, first, 1);
    std::tie(id, gen) = only_megaflow(*sw);
  }
  std::unique_ptr<Switch> sw;
  RecordingSink sink;
  uint32_t id = 0, gen = 0;
};

TEST_F(XdpHint, AVerifiedMegaflowIdSkipsTheLookup) {
  const DatapathStats before = sw->datapath(0).stats();

  Frame second(tcp_frame(1, 2, 2000));
  run_one(*sw, second, 1, id, gen, SF_XDP_EMC_HIT);
  const DatapathStats& after = sw->datapath(0).stats();
  EXPECT_EQ(after.xdp_emc_resolved, before.xdp_emc_resolved + 1);
  EXPECT_EQ(after.lookups, before.lookups);  // not re-classified
  EXPECT_EQ(after.xdp_stale, 0u);
  ASSERT_EQ(sink.sent.size(), 2u);
  EXPECT_EQ(sink.sent[1].port, 2u);

  Frame third(tcp_frame(1, 2, 3000));
  run_one(*sw, third, 1, id, gen, SF_XDP_MEGAFLOW_HIT);
  EXPECT_EQ(sw->datapath(0).stats().xdp_megaflow_resolved, 1u);
}

TEST_F(XdpHint, AStaleOrWrongIdFallsBackToALookup) {

  // A generation that is not the slot's.
  Frame stale(tcp_frame(1, 2));
  const uint64_t lookups = sw->datapath(0).stats().lookups;
  run_one(*sw, stale, 1, id, gen + 1, SF_XDP_EMC_HIT);
  EXPECT_EQ(sw->datapath(0).stats().xdp_stale, 1u);
  EXPECT_EQ(sw->datapath(0).stats().lookups, lookups + 1);
  EXPECT_EQ(sink.sent.back().port, 2u);

  // The right id, but the packet does not match that megaflow (in_port=2):
  // it must follow its own rule to port 1, not the hinted one to port 2.
  Frame other_port(tcp_frame(2, 1));
  run_one(*sw, other_port, 2, id, gen, SF_XDP_MEGAFLOW_HIT);
  EXPECT_EQ(sw->datapath(0).stats().xdp_stale, 2u);
  EXPECT_EQ(sink.sent.back().port, 1u);
  EXPECT_EQ(sw->datapath(0).stats().xdp_megaflow_resolved, 0u);
}

TEST(ZeroCopyOutput, AnUntouchedPacketLeavesInItsOwnBuffer) {
  auto sw = make_switch(
      "in_port=1,actions=output:2\n"
      "in_port=3,actions=output:2,output:4\n"
      "in_port=5,actions=output:2,mod_dl_dst:00:00:00:00:00:99,output:4\n");
  RecordingSink sink;
  sw->datapath(0).set_sink(&sink);
  const std::vector<uint8_t> bytes = tcp_frame(1, 2);

  Frame once(bytes);
  run_one(*sw, once, 1);
  ASSERT_EQ(sink.sent.size(), 1u);
  EXPECT_TRUE(sink.sent[0].own_buffer);
  EXPECT_TRUE(once.pkt.buffer_taken);

  // Two outputs of the same bytes: the first is a copy, the last the buffer.
  sink.sent.clear();
  Frame twice(bytes);
  run_one(*sw, twice, 3);
  ASSERT_EQ(sink.sent.size(), 2u);
  EXPECT_FALSE(sink.sent[0].own_buffer);
  EXPECT_TRUE(sink.sent[1].own_buffer);
  EXPECT_EQ(sink.sent[0].bytes, bytes);
  EXPECT_EQ(sink.sent[1].bytes, bytes);

  // Output, rewrite, output: the first copy keeps the original bytes.
  sink.sent.clear();
  Frame rewritten(bytes);
  run_one(*sw, rewritten, 5);
  ASSERT_EQ(sink.sent.size(), 2u);
  EXPECT_EQ(sink.sent[0].port, 2u);
  EXPECT_EQ(sink.sent[0].bytes, bytes);
  EXPECT_FALSE(sink.sent[0].own_buffer);
  EXPECT_EQ(sink.sent[1].port, 4u);
  EXPECT_TRUE(sink.sent[1].own_buffer);
  EXPECT_EQ(sink.sent[1].bytes[5], 0x99);  // dl_dst rewritten
  EXPECT_NE(sink.sent[1].bytes, bytes);
}

// Records what the BPF mirror would be told.
class RecordingObserver : public MegaflowObserver {
 public:
  void megaflow_installed(const Megaflow& mf) override { live[mf.id] = mf.generation; }
  void megaflow_removed(const Megaflow& mf) override {
    EXPECT_TRUE(mf.alive);  // still intact during the call
    auto it = live.find(mf.id);
    ASSERT_NE(it, live.end());
    EXPECT_EQ(it->second, mf.generation);
    live.erase(it);
  }
  std::map<uint32_t, uint32_t> live;
};

TEST(MegaflowObserver, SeesEveryInstallAndRemoval) {
  auto sw = make_switch("in_port=1,actions=output:2\nin_port=2,actions=output:1\n");
  RecordingSink sink;
  RecordingObserver observer;
  sw->datapath(0).set_sink(&sink);
  sw->datapath(0).megaflows().set_observer(&observer);
  Frame a(tcp_frame(1, 2)), b(tcp_frame(2, 1));
  run_one(*sw, a, 1);
  run_one(*sw, b, 2);
  EXPECT_EQ(observer.live.size(), 2u);
  // Deleting a rule turns its megaflow into a drop in place (same mask):
  // nothing for the mirror to do.
  Match m;
  m.set_uint(Field::kInPort, 1, ~0ULL);
  EXPECT_EQ(sw->del_flows(m, std::nullopt), 1u);
  EXPECT_EQ(observer.live.size(), 2u);
  // A rule above them (the default priority is 32768) that makes xlate
  // consult more fields removes both megaflows.
  auto r = parse_flow("priority=40000,tcp,tp_dst=80,actions=drop");
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(sw->add_flow(r.value()).is_ok());
  EXPECT_TRUE(observer.live.empty()) << sw->dump_megaflows(1);
  Frame c(tcp_frame(2, 1, 4000));
  run_one(*sw, c, 2);  // dropped by the new rule, through a new megaflow
  EXPECT_EQ(observer.live.size(), 1u);
  // Expiry removes the rest.
  sw->expire(0, 100'000'000'000ULL);
  EXPECT_TRUE(observer.live.empty());
  EXPECT_EQ(sw->datapath(0).megaflows().size(), 0u);
  sw->datapath(0).megaflows().set_observer(nullptr);
}

}  // namespace
}  // namespace softflow::test

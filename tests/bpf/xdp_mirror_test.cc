// The BPF megaflow mirror end to end, without a network: a Switch installs
// megaflows, MegaflowMirror writes them into the maps of a loaded XDP
// program, BPF_PROG_RUN finds them, and the metadata it writes lets the
// datapath run the megaflow without a lookup.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>

#include "megaflow_mirror.h"
#include "softflow/afxdp.h"
#include "softflow/flow_syntax.h"
#include "softflow/packet_builder.h"
#include "softflow/switch.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

class NullSink : public PacketSink {
 public:
  bool transmit(uint32_t port, std::span<const uint8_t>, uint64_t) override {
    last_port = port;
    ++sent;
    return true;
  }
  uint32_t last_port = 0;
  int sent = 0;
};

std::vector<uint8_t> udp_frame(uint32_t dst, uint16_t sport) {
  return PacketBuilder()
      .eth(mac("00:00:00:00:00:01"), mac("00:00:00:00:00:02"))
      .ipv4(0x0a000001, dst)
      .udp(sport, 53)
      .payload("x")
      .build();
}

class XdpMirror : public XdpTest {
 protected:
  void SetUp() override {
    XdpTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    SwitchConfig config;
    config.n_datapaths = kDatapath + 1;  // the harness's port is served by datapath kDatapath
    auto sw = Switch::create(config);
    ASSERT_TRUE(sw.is_ok());
    sw_ = std::move(sw).value();
    mirror_ = std::make_unique<MegaflowMirror>(xdp_->maps());
    dp().megaflows().set_observer(mirror_->observer(kDatapath));
    dp().set_sink(&sink_);
  }
  void TearDown() override {
    if (sw_) dp().megaflows().set_observer(nullptr);
  }
  Datapath& dp() { return sw_->datapath(kDatapath); }

  void add_flows(const std::string& text) {
    auto rules = parse_flows(text);
    ASSERT_TRUE(rules.is_ok()) << rules.status().message();
    ASSERT_TRUE(sw_->add_flows(rules.value()).is_ok());
  }

  // The frame through XDP and then through the datapath, as softflowd does:
  // the packet is built from XDP's metadata, not parsed again.
  XdpRun through(const std::vector<uint8_t>& frame) {
    XdpRun run = xdp_->run(frame, lo_ifindex_);
    EXPECT_TRUE(run.has_meta());
    std::vector<uint8_t> buffer(256 + frame.size());
    std::memcpy(buffer.data() + 256 - sizeof(sf_xdp_meta), &run.meta, sizeof(run.meta));
    std::memcpy(buffer.data() + 256, frame.data(), frame.size());
    Packet p;
    p.data = buffer.data() + 256;
    p.len = static_cast<uint32_t>(frame.size());
    p.headroom = 256;
    EXPECT_TRUE(take_xdp_meta(p, kOfPort));
    Packet* batch[] = {&p};
    sw_->process(kDatapath, batch, 1);
    return run;
  }

  std::unique_ptr<Switch> sw_;
  std::unique_ptr<MegaflowMirror> mirror_;
  NullSink sink_;
};

TEST_F(XdpMirror, AnInstalledMegaflowIsFoundInXdpAndUsedWithoutALookup) {
  add_flows("in_port=7,ip,nw_dst=10.0.0.2,actions=output:2\nin_port=7,ip,actions=output:3\n");
  // First packet: XDP misses, userspace upcalls and installs; the mirror
  // writes the megaflow.
  XdpRun first = through(udp_frame(0x0a000002, 1000));
  EXPECT_EQ(first.meta.result, SF_XDP_MISS);
  EXPECT_EQ(dp().stats().upcalls, 1u);
  ASSERT_EQ(dp().megaflows().size(), 1u);
  uint32_t id = 0, generation = 0;
  dp().megaflows().for_each([&](Megaflow& mf) {
    id = mf.id;
    generation = mf.generation;
  });
  EXPECT_EQ(mirror_->stats().entries, 1u);

  // Another flow of the same megaflow: found by XDP's mask search, then its
  // EMC; the datapath uses it with no lookup.
  XdpRun second = through(udp_frame(0x0a000002, 2000));
  EXPECT_EQ(second.meta.result, SF_XDP_MEGAFLOW_HIT);
  EXPECT_EQ(second.meta.ref.id, id);
  EXPECT_EQ(second.meta.ref.generation, generation);
  XdpRun third = through(udp_frame(0x0a000002, 2000));
  EXPECT_EQ(third.meta.result, SF_XDP_EMC_HIT);
  EXPECT_EQ(dp().stats().xdp_megaflow_resolved, 1u);
  EXPECT_EQ(dp().stats().xdp_emc_resolved, 1u);
  EXPECT_EQ(dp().stats().lookups, 1u);  // only the first packet's
  EXPECT_EQ(sink_.last_port, 2u);

  // A rule change that removes the megaflow takes it out of XDP (and the
  // EMC) before add_flow returns.
  add_flows("priority=40000,udp,tp_src=2000,actions=output:4\n");
  EXPECT_EQ(dp().megaflows().size(), 0u);
  EXPECT_EQ(mirror_->stats().entries, 0u);
  XdpRun after = xdp_->run(udp_frame(0x0a000002, 2000), lo_ifindex_);
  EXPECT_EQ(after.meta.result, SF_XDP_MISS);
  through(udp_frame(0x0a000002, 2000));
  EXPECT_EQ(sink_.last_port, 4u);
}

TEST_F(XdpMirror, OnlyStageZeroMegaflowsAreMirrored) {
  dp().set_coalescing(false);
  add_flows(
      "sf_stage=0,ip,actions=softflow:noop:0\n"
      "sf_stage=1,sf_action=noop,ip,actions=output:2\n");
  through(udp_frame(0x0a000002, 1000));
  // Stage 0 and (no coalescing) a separate stage-1 megaflow; XDP only ever
  // sees stage-0 packets, so only the first is mirrored.
  EXPECT_EQ(dp().megaflows().size(), 2u);
  const MirrorStats s = mirror_->stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.not_stage0, 1u);
  XdpRun again = through(udp_frame(0x0a000002, 1001));
  EXPECT_EQ(again.meta.result, SF_XDP_MEGAFLOW_HIT);
  EXPECT_EQ(sink_.last_port, 2u);
}

TEST_F(XdpMirror, MasksBeyondTheSlotsStayInUserspace) {
  // Flow i (tp_src=i) matches a rule that also consults a different subset
  // of six more fields, so the megaflows need many masks.
  constexpr int kFlows = 48;
  const char* extra[] = {"nw_tos=0",           "tp_dst=2",
                         "nw_dst=10.0.0.1",    "dl_src=00:00:00:00:00:01",
                         "dl_dst=00:00:00:00:00:02", "nw_src=10.0.0.9"};
  std::string flows;
  for (int i = 1; i <= kFlows; ++i) {
    flows += "priority=" + std::to_string(100 + i) + ",udp,tp_src=" + std::to_string(i);
    for (int b = 0; b < 6; ++b)
      if (i & (1 << b)) flows += std::string(",") + extra[b];
    flows += ",actions=output:2\n";
  }
  add_flows(flows + "priority=1,actions=output:3\n");
  for (int i = 1; i <= kFlows; ++i)
    through(PacketBuilder()
                .eth(mac("00:00:00:00:00:01"), mac("00:00:00:00:00:02"))
                .ipv4(0x0a000009, 0x0a000001)
                .udp(static_cast<uint16_t>(i), 2)
                .build());
  ASSERT_GT(dp().megaflows().subtable_count(), static_cast<size_t>(SF_MAX_MASKS))
      << "the premise: more masks than XDP has slots";
  const MirrorStats s = mirror_->stats();
  EXPECT_EQ(s.masks, static_cast<uint32_t>(SF_MAX_MASKS));
  EXPECT_GT(s.no_mask_slot, 0u);
  EXPECT_EQ(s.entries + s.no_mask_slot, dp().megaflows().size());
  // Forwarding is right either way.
  EXPECT_EQ(sink_.sent, kFlows);
  EXPECT_EQ(sink_.last_port, 2u);
}

}  // namespace
}  // namespace softflow::bpf_test

// A megaflow built by a packet whose service declined to coalesce gets its
// continuation later, from a packet that coalesces.
#include <gtest/gtest.h>

#include <atomic>

#include "softflow/packet_builder.h"
#include "softflow/ports.h"
#include "softflow/switch.h"

namespace softflow {
namespace {

// Declines coalescing for the first packet it ever sees, accepts afterwards.
class FirstDeclinesService final : public Service {
 public:
  explicit FirstDeclinesService(const nlohmann::json&) {}
  void process(std::span<Packet* const> batch, uint32_t) override {
    for (Packet* p : batch) p->sf_coalesce = seen_++ > 0;
  }

 private:
  std::atomic<uint64_t> seen_{0};
};
SF_REGISTER_SERVICE(test_first_declines, FirstDeclinesService, "test only");

FlowRule rule(uint8_t stage, Action action) {
  FlowRule r;
  r.priority = 10;
  r.match.set_uint(Field::kSfStage, stage, 0xff);
  r.match.set_uint(Field::kDlType, 0x0800, 0xffff);
  r.actions.push_back(action);
  return r;
}

TEST(Continuation, AttachedAfterFirstPacketDeclined) {
  const uint8_t svc = ServiceRegistry::instance().id_of("test_first_declines").value();
  auto sw = Switch::create({}).value();
  // Stage 1's output:2 consults in_port (no output to the ingress port), so
  // stage 0 must fix in_port for the continuation to be attachable.
  FlowRule first = rule(0, Action::softflow(svc, 7));
  first.match.set_uint(Field::kInPort, 1, 0xffffffff);
  ASSERT_TRUE(sw->add_flow(first));
  ASSERT_TRUE(sw->add_flow(rule(1, Action::output(2))));
  MemoryPorts ports({1, 2, 3});
  Datapath& dp = sw->datapath();
  dp.set_sink(&ports);
  FramePool pool(64);
  const Frame f{1, 0, PacketBuilder().ipv4(0x0a000001, 0x0a000002).udp(1, 2).build()};

  std::vector<uint64_t> lookups;
  for (int i = 0; i < 4; ++i) {  // one packet per batch
    const uint64_t before = dp.stats().lookups;
    run_frames(dp, std::span<const Frame>(&f, 1), pool, {false, 1});
    lookups.push_back(dp.stats().lookups - before);
  }
  // 1st: miss at stage 0, declined, lookup at stage 1 (miss).  2nd: hit,
  // coalescable but no continuation, lookup at stage 1 hits and attaches.
  // 3rd and 4th: one lookup, coalesced.
  EXPECT_EQ(lookups, (std::vector<uint64_t>{2, 2, 1, 1}));
  EXPECT_EQ(dp.stats().continuations_attached, 1u);
  EXPECT_EQ(dp.stats().coalesced, 2u);
  ASSERT_EQ(ports.sent(2).size(), 4u);
  for (const Frame& out : ports.sent(2)) EXPECT_EQ(out.bytes, f.bytes);

  // The attached segment is revalidated like any other: changing the stage-1
  // rule must redirect coalesced packets at once.
  ASSERT_TRUE(sw->add_flow(rule(1, Action::output(3))));
  run_frames(dp, std::span<const Frame>(&f, 1), pool, {false, 1});
  EXPECT_EQ(ports.sent(3).size(), 1u);
  EXPECT_EQ(ports.sent(2).size(), 4u);
}

TEST(Continuation, NotAttachedWhenNextStageNeedsBitsOutsideTheMask) {
  const uint8_t svc = ServiceRegistry::instance().id_of("test_first_declines").value();
  auto sw = Switch::create({}).value();
  FlowRule first = rule(0, Action::softflow(svc, 1));
  first.match.set_uint(Field::kInPort, 1, 0xffffffff);
  ASSERT_TRUE(sw->add_flow(first));
  // Stage 1 routes on tp_dst, which stage 0 never looked at: attaching the
  // stage-1 megaflow to the stage-0 one would be wrong for other ports.
  FlowRule r = rule(1, Action::output(2));
  r.match.set_uint(Field::kNwProto, 17, 0xff);
  r.match.set_uint(Field::kTpDst, 2, 0xffff);
  ASSERT_TRUE(sw->add_flow(r));
  FlowRule fallback = rule(1, Action::output(3));
  fallback.priority = 5;
  ASSERT_TRUE(sw->add_flow(fallback));
  MemoryPorts ports({1, 2, 3});
  Datapath& dp = sw->datapath();
  dp.set_sink(&ports);
  FramePool pool(64);
  const Frame a{1, 0, PacketBuilder().ipv4(0x0a000001, 0x0a000002).udp(1, 2).build()};
  const Frame b{1, 0, PacketBuilder().ipv4(0x0a000001, 0x0a000002).udp(1, 3).build()};
  for (int i = 0; i < 3; ++i) run_frames(dp, std::span<const Frame>(&a, 1), pool, {false, 1});
  for (int i = 0; i < 3; ++i) run_frames(dp, std::span<const Frame>(&b, 1), pool, {false, 1});
  EXPECT_EQ(ports.sent(2).size(), 3u);
  EXPECT_EQ(ports.sent(3).size(), 3u);
}

}  // namespace
}  // namespace softflow

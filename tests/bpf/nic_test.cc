// The emulated NIC (bpf/sf_nic.bpf.c): on a wire-side port (sf_nic_port.mark)
// it parses each frame with the switch's parser, classifies it against its
// TCAM (sf_tcam, one hash table per mask, masks tried in sf_tcam_config
// order) and inserts a shim carrying the matching entry's mark after the MAC
// addresses; then it forwards the frame to the port's peer.  And end to end:
// what the NIC marks, the switch's XDP program verifies, strips and uses.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

std::vector<uint8_t> tcp4_frame(uint32_t dst = ipv4_addr("10.0.0.2"), uint16_t dport = 80,
                                uint16_t flags = kTcpAck) {
  return PacketBuilder()
      .eth(mac("02:00:00:00:01:0a"), mac("02:00:00:00:01:0b"))
      .ipv4(ipv4_addr("10.0.0.1"), dst)
      .tcp(1234, dport, flags, 1000, 2000)
      .payload("hello")
      .build();
}

std::vector<uint8_t> vlan_udp6_frame() {
  return PacketBuilder()
      .eth(mac("02:00:00:00:01:0c"), mac("02:00:00:00:01:0d"))
      .vlan(30, 2)
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
      .udp(5353, 53)
      .payload("query")
      .build();
}

std::vector<uint8_t> prefix(const std::vector<uint8_t>& frame, size_t len) {
  return {frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(len)};
}

std::string nic_counters(const sf_nic_stats& s) {
  return "rx=" + std::to_string(s.rx) + " marked=" + std::to_string(s.marked) +
         " not_marked=" + std::to_string(s.not_marked) +
         " tcam_miss=" + std::to_string(s.tcam_miss) + " no_room=" + std::to_string(s.no_room) +
         " unparsed=" + std::to_string(s.unparsed) +
         " redirect_failed=" + std::to_string(s.redirect_failed);
}

struct NicExpect {
  uint64_t rx = 1, marked = 0, not_marked = 0, tcam_miss = 0, unparsed = 0;
  sf_nic_stats stats() const {
    sf_nic_stats s{};
    s.rx = rx;
    s.marked = marked;
    s.not_marked = not_marked;
    s.tcam_miss = tcam_miss;
    s.unparsed = unparsed;
    return s;
  }
};

sf_nic_stats nic_delta(const sf_nic_stats& after, const sf_nic_stats& before) {
  constexpr size_t kCounters = sizeof(sf_nic_stats) / sizeof(uint64_t);
  uint64_t a[kCounters], b[kCounters];
  std::memcpy(a, &after, sizeof a);
  std::memcpy(b, &before, sizeof b);
  for (size_t i = 0; i < kCounters; ++i) a[i] -= b[i];
  sf_nic_stats d;
  std::memcpy(&d, a, sizeof d);
  return d;
}

class Nic : public NicTest {
 protected:
  static constexpr uint32_t kDstMask = 3;   // in_port, dl_type, nw_dst
  static constexpr uint32_t kPortMask = 9;  // in_port, dl_type, nw_proto, tp_dst
  static constexpr uint32_t kPeer = 4242;   // never resolved under BPF_PROG_RUN

  void SetUp() override {
    NicTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    ASSERT_TRUE(nic_->set_port(lo_ifindex_, wire_port()));
    ASSERT_TRUE(nic_->set_mask(kDstMask, dst_mask_));
    ASSERT_TRUE(nic_->set_mask(kPortMask, port_mask_));
    configure({kDstMask, kPortMask}, 65536);
  }

  static sf_nic_port wire_port(uint32_t peer = kPeer) {
    sf_nic_port port{};
    port.ofport = kOfPort;
    port.peer_ifindex = peer;
    port.mark = 1;
    return port;
  }

  void configure(std::initializer_list<uint8_t> order, uint32_t mark_per_64k) {
    sf_tcam_config config{};
    config.n_masks = static_cast<uint32_t>(order.size());
    config.mark_per_64k = mark_per_64k;
    size_t i = 0;
    for (uint8_t index : order) config.order[i++] = index;
    ASSERT_TRUE(nic_->set_config(config));
  }

  static FlowKey key_of(const std::vector<uint8_t>& frame, uint32_t in_port = kOfPort) {
    return parse_in_userspace(frame, in_port).key;
  }

  void add_entry(uint32_t mask_index, const FlowKey& mask, const std::vector<uint8_t>& frame,
                 uint32_t mark, uint32_t index) {
    ASSERT_TRUE(nic_->add_entry(mask_index, key_and(key_of(frame), mask), {mark, index}));
  }

  // Runs the NIC on 'frame' and checks the verdict (redirect to the peer).
  XdpRun run_nic(const std::vector<uint8_t>& frame,
                 uint32_t verdict = static_cast<uint32_t>(XDP_REDIRECT)) {
    const XdpRun r = nic_run(frame);
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.verdict, verdict);
    EXPECT_EQ(r.meta_len, 0u) << "the NIC writes no metadata";
    return r;
  }

  sf_nic_stats counters_delta() {
    const sf_nic_stats now = nic_->stats();
    const sf_nic_stats d = nic_delta(now, last_);
    last_ = now;
    return d;
  }

  const FlowKey dst_mask_ = fields_mask({Field::kInPort, Field::kDlType, Field::kNwDst});
  const FlowKey port_mask_ =
      fields_mask({Field::kInPort, Field::kDlType, Field::kNwProto, Field::kTpDst});
  sf_nic_stats last_{};
};

TEST_F(Nic, MarksAMatchingFrame) {
  const auto frame = tcp4_frame();
  const uint32_t mark = SF_MARK(12, 0x2abcd);
  add_entry(kDstMask, dst_mask_, frame, mark, 12);

  const XdpRun r = run_nic(frame);
  EXPECT_EQ(r.frame, with_shim(frame, mark))
      << "\n  got:  " << hex(r.frame) << "\n  want: " << hex(with_shim(frame, mark));
  ASSERT_EQ(r.frame.size(), frame.size() + sizeof(sf_shim));
  // The shim's bytes, spelled out: EtherType, version, pad, mark big endian.
  const uint8_t want_shim[] = {0x88,
                               0xb5,
                               SF_SHIM_VERSION,
                               0,
                               static_cast<uint8_t>(mark >> 24),
                               static_cast<uint8_t>(mark >> 16),
                               static_cast<uint8_t>(mark >> 8),
                               static_cast<uint8_t>(mark)};
  EXPECT_EQ(hex({r.frame.data() + 12, sizeof want_shim}), hex(want_shim));
  sf_shim shim;
  std::memcpy(&shim, r.frame.data() + 12, sizeof shim);
  EXPECT_EQ(ntohl(shim.mark), mark);

  NicExpect e;
  e.marked = 1;
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(e.stats()));
  EXPECT_EQ(nic_->tcam_hits(12), 1u);
  EXPECT_EQ(nic_->tcam_hits(0), 0u);

  ASSERT_EQ(run_nic(frame).frame, with_shim(frame, mark));
  EXPECT_EQ(nic_->tcam_hits(12), 2u);
}

TEST_F(Nic, MarksVlanTaggedFramesAfterTheMacs) {
  const auto frame = vlan_udp6_frame();
  const FlowKey mask = fields_mask(
      {Field::kInPort, Field::kDlType, Field::kVlanTci, Field::kIpv6Dst, Field::kTpDst});
  ASSERT_TRUE(nic_->set_mask(0, mask));
  configure({0}, 65536);
  const uint32_t mark = SF_MARK(1, 5);
  add_entry(0, mask, frame, mark, 1);
  const XdpRun r = run_nic(frame);
  EXPECT_EQ(r.frame, with_shim(frame, mark)) << "shim before the VLAN tag";
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.marked = 1}.stats()));
}

TEST_F(Nic, SecondMaskInOrderMatches) {
  const auto frame = tcp4_frame();
  // Only the port mask (second in order) has an entry for this frame.
  add_entry(kDstMask, dst_mask_, tcp4_frame(ipv4_addr("10.9.9.9")), SF_MARK(1, 1), 1);
  add_entry(kPortMask, port_mask_, frame, SF_MARK(2, 1), 2);
  EXPECT_EQ(run_nic(frame).frame, with_shim(frame, SF_MARK(2, 1)));
  EXPECT_EQ(nic_->tcam_hits(2), 1u);
  EXPECT_EQ(nic_->tcam_hits(1), 0u);

  // With entries under both, the first mask in order wins.
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(3, 1), 3);
  EXPECT_EQ(run_nic(frame).frame, with_shim(frame, SF_MARK(3, 1)));
  configure({kPortMask, kDstMask}, 65536);
  EXPECT_EQ(run_nic(frame).frame, with_shim(frame, SF_MARK(2, 1)));
  EXPECT_EQ(nic_->tcam_hits(3), 1u);
  EXPECT_EQ(nic_->tcam_hits(2), 2u);

  // Only the first n_masks masks are tried.
  configure({kDstMask}, 65536);
  const auto other_port = tcp4_frame(ipv4_addr("10.0.0.7"));  // port mask only
  counters_delta();
  EXPECT_EQ(run_nic(other_port).frame, other_port);
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.tcam_miss = 1}.stats()));
}

TEST_F(Nic, NoMatchLeavesTheFrameAlone) {
  add_entry(kDstMask, dst_mask_, tcp4_frame(ipv4_addr("10.0.0.2")), SF_MARK(1, 1), 1);
  const auto frame = tcp4_frame(ipv4_addr("10.0.0.3"), 8080);
  EXPECT_EQ(run_nic(frame).frame, frame);
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.tcam_miss = 1}.stats()));
  EXPECT_EQ(nic_->tcam_hits(1), 0u);
}

TEST_F(Nic, KeyCarriesThePortsOfport) {
  const auto frame = tcp4_frame();
  // An entry for the same headers entering another switch port.
  ASSERT_TRUE(nic_->add_entry(kDstMask, key_and(key_of(frame, kOfPort + 1), dst_mask_),
                              {SF_MARK(1, 1), 1}));
  EXPECT_EQ(run_nic(frame).frame, frame);
  EXPECT_EQ(counters_delta().tcam_miss, 1u);

  sf_nic_port port = wire_port();
  port.ofport = kOfPort + 1;
  ASSERT_TRUE(nic_->set_port(lo_ifindex_, port));
  EXPECT_EQ(run_nic(frame).frame, with_shim(frame, SF_MARK(1, 1)));
  EXPECT_EQ(counters_delta().marked, 1u);
}

TEST_F(Nic, MarkPer64kZeroNeverMarks) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  configure({kDstMask, kPortMask}, 0);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(run_nic(frame).frame, frame) << "run " << i;
  EXPECT_EQ(nic_counters(counters_delta()),
            nic_counters(NicExpect{.rx = 200, .not_marked = 200}.stats()));
  EXPECT_EQ(nic_->tcam_hits(4), 200u) << "an unmarked match still counts as a hit";
}

TEST_F(Nic, MarkPer64kOf65536AndAboveAlwaysMarks) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  for (uint32_t fraction : {65536u, 65537u, 0xffffffffu}) {
    SCOPED_TRACE("mark_per_64k " + std::to_string(fraction));
    configure({kDstMask, kPortMask}, fraction);
    for (int i = 0; i < 200; ++i)
      ASSERT_EQ(run_nic(frame).frame, with_shim(frame, SF_MARK(4, 1))) << "run " << i;
    EXPECT_EQ(nic_counters(counters_delta()),
              nic_counters(NicExpect{.rx = 200, .marked = 200}.stats()));
  }
}

TEST_F(Nic, MarkPer64kOfHalfMarksAboutHalf) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  configure({kDstMask, kPortMask}, 32768);
  constexpr int kRuns = 2000;
  int marked = 0;
  for (int i = 0; i < kRuns; ++i) {
    const XdpRun r = run_nic(frame);
    if (r.frame == frame) continue;
    ASSERT_EQ(r.frame, with_shim(frame, SF_MARK(4, 1))) << "run " << i;
    ++marked;
  }
  // Binomial(2000, 0.5): the standard deviation is ~22 frames; 35-65 % is
  // over 13 of them.
  EXPECT_GE(marked, kRuns * 35 / 100);
  EXPECT_LE(marked, kRuns * 65 / 100);
  const sf_nic_stats d = counters_delta();
  EXPECT_EQ(d.marked, static_cast<uint64_t>(marked));
  EXPECT_EQ(d.not_marked, static_cast<uint64_t>(kRuns - marked));
  EXPECT_EQ(d.rx, static_cast<uint64_t>(kRuns));
  EXPECT_EQ(nic_->tcam_hits(4), static_cast<uint64_t>(kRuns));
  std::printf("mark_per_64k 32768: %d of %d marked\n", marked, kRuns);
}

TEST_F(Nic, MalformedFrameIsNotMarked) {
  // An entry that would match the key of whatever parsed.
  const FlowKey loose = fields_mask({Field::kInPort, Field::kDlType});
  ASSERT_TRUE(nic_->set_mask(0, loose));
  configure({0}, 65536);
  const auto whole = tcp4_frame();
  add_entry(0, loose, whole, SF_MARK(6, 1), 6);
  ASSERT_EQ(run_nic(whole).frame, with_shim(whole, SF_MARK(6, 1)));
  counters_delta();

  for (size_t len : {size_t{14}, size_t{14 + 10}, size_t{14 + 20 + 10}}) {
    SCOPED_TRACE("len " + std::to_string(len));
    const auto cut = prefix(whole, len);
    ASSERT_NE(parse_in_userspace(cut).parse_flags, 0);
    EXPECT_EQ(run_nic(cut).frame, cut);
    EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.unparsed = 1}.stats()));
  }
  EXPECT_EQ(nic_->tcam_hits(6), 1u) << "malformed frames are not classified";
}

TEST_F(Nic, ReturnDirectionPortNeverMarks) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  sf_nic_port port = wire_port();
  port.mark = 0;
  ASSERT_TRUE(nic_->set_port(lo_ifindex_, port));
  const auto malformed = prefix(frame, 14 + 10);
  for (const auto& f : {frame, malformed}) {
    EXPECT_EQ(run_nic(f).frame, f);
  }
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.rx = 2}.stats()));
  EXPECT_EQ(nic_->tcam_hits(4), 0u);
}

TEST_F(Nic, PortWithoutPeerPasses) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  ASSERT_TRUE(nic_->set_port(lo_ifindex_, wire_port(/*peer=*/0)));
  EXPECT_EQ(run_nic(frame, XDP_PASS).frame, with_shim(frame, SF_MARK(4, 1)));
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.marked = 1}.stats()));
}

TEST_F(Nic, UnknownIfindexPassesUntouched) {
  const auto frame = tcp4_frame();
  add_entry(kDstMask, dst_mask_, frame, SF_MARK(4, 1), 4);
  ASSERT_TRUE(nic_->delete_port(lo_ifindex_));
  // Another NIC port exists, just not this one.
  ASSERT_TRUE(nic_->set_port(lo_ifindex_ + 1000, wire_port()));
  EXPECT_EQ(run_nic(frame, XDP_PASS).frame, frame);
  EXPECT_EQ(nic_counters(counters_delta()), nic_counters(NicExpect{.rx = 0}.stats()));
  EXPECT_EQ(nic_->tcam_hits(4), 0u);
}

// ---- end to end: NIC, then switch ----------------------------------------------------

class NicToSwitch : public Nic {
 protected:
  static constexpr uint32_t kSwitchDstSlot = 1;

  void SetUp() override {
    Nic::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    load_switch();
    if (HasFatalFailure()) return;
    sf_port port = default_port();
    port.flags |= SF_PORT_HINTS;
    ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
    ASSERT_TRUE(xdp_->set_mask(kSwitchDstSlot, dst_mask_));
    sf_xdp_config config{};
    config.n_masks = 1;
    config.emc_epoch = 1;
    config.order[0] = kSwitchDstSlot;
    ASSERT_TRUE(xdp_->set_config(config));
  }

  // Programs both sides of one TCAM entry for a stage-0 megaflow with
  // 'megaflow_mask' (the TCAM gets it restricted to 'tcam_mask').
  void install(const std::vector<uint8_t>& frame, const FlowKey& megaflow_mask,
               const FlowKey& tcam_mask, uint32_t tcam_mask_index, uint32_t index,
               uint32_t generation, sf_megaflow_ref ref) {
    sf_hint h;
    std::memset(&h, 0, sizeof h);
    h.generation = generation;
    h.datapath = kDatapath;
    h.ref = ref;
    h.key = key_and(key_of(frame), megaflow_mask);
    h.mask = megaflow_mask;
    ASSERT_TRUE(xdp_->set_hint(index, h));
    ASSERT_TRUE(nic_->set_mask(tcam_mask_index, tcam_mask));
    ASSERT_TRUE(nic_->add_entry(tcam_mask_index, key_and(key_of(frame), tcam_mask),
                                {SF_MARK(index, generation), index}));
  }

  // The NIC's output, given to the switch.
  XdpRun through_both(const std::vector<uint8_t>& frame) {
    const XdpRun on_wire = run_nic(frame);
    const XdpRun r = xdp_->run(on_wire.frame, lo_ifindex_, 0);
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS));
    EXPECT_TRUE(r.has_meta());
    return r;
  }
};

TEST_F(NicToSwitch, MarkedFrameIsAHintHitAndArrivesUnchanged) {
  const std::vector<std::vector<uint8_t>> frames = {tcp4_frame(), vlan_udp6_frame()};
  const FlowKey megaflow_mask = fields_mask({Field::kInPort, Field::kDlType, Field::kVlanTci,
                                             Field::kNwProto, Field::kIpv6Dst, Field::kTpDst});
  uint32_t index = 20;
  for (const auto& frame : frames) {
    SCOPED_TRACE(hex(frame));
    install(frame, megaflow_mask, megaflow_mask, kDstMask, index, 0x30000 + index, {index, 9});
    const XdpRun r = through_both(frame);
    EXPECT_EQ(r.meta.result, SF_XDP_HINT_HIT);
    EXPECT_EQ(r.meta.ref.id, index);
    EXPECT_EQ(r.meta.ref.generation, 9u);
    EXPECT_EQ(r.frame, frame) << "the switch must see the frame the wire carried";
    EXPECT_TRUE(meta_matches_userspace(r, frame));
    ++index;
  }
  EXPECT_EQ(nic_->stats().marked, 2u);
  const sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.hint_marked, 2u);
  EXPECT_EQ(s.hint_hits, 2u);
  EXPECT_EQ(s.emc_hits + s.megaflow_hits + s.misses + s.mask_searches, 0u);
}

TEST_F(NicToSwitch, TcamMatchesFewerFieldsTheSwitchChecksTheRest) {
  // The megaflow matches on TCP flags too; the TCAM cannot, so it marks the
  // ACK as well, and the switch rejects that mark.
  const FlowKey tcam_mask = fields_mask({Field::kInPort, Field::kDlType, Field::kNwDst});
  FlowKey megaflow_mask = tcam_mask;
  key_or_into(megaflow_mask, field_mask(Field::kTcpFlags));
  const auto syn = tcp4_frame(ipv4_addr("10.0.0.2"), 80, kTcpSyn);
  const auto ack = tcp4_frame(ipv4_addr("10.0.0.2"), 80, kTcpAck);
  install(syn, megaflow_mask, tcam_mask, kDstMask, 30, 5, {30, 1});

  EXPECT_EQ(through_both(syn).meta.result, SF_XDP_HINT_HIT);
  const XdpRun r = through_both(ack);
  EXPECT_EQ(r.meta.result, SF_XDP_MISS);
  EXPECT_EQ(r.frame, ack);
  EXPECT_EQ(nic_->stats().marked, 2u);
  const sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.hint_hits, 1u);
  EXPECT_EQ(s.hint_mismatch, 1u);
}

TEST_F(NicToSwitch, ReassignedIndexMakesTheNicsMarkStale) {
  const auto frame = tcp4_frame();
  install(frame, dst_mask_, dst_mask_, kDstMask, 40, 5, {40, 1});
  ASSERT_EQ(through_both(frame).meta.result, SF_XDP_HINT_HIT);
  // The switch gives index 40 to another megaflow (generation 6) before the
  // NIC's entry is rewritten: the NIC still marks with generation 5.
  sf_hint h;
  std::memset(&h, 0, sizeof h);
  h.generation = 6;
  h.datapath = kDatapath;
  h.ref = {41, 1};
  h.key = key_and(key_of(tcp4_frame(ipv4_addr("10.0.0.99"))), dst_mask_);
  h.mask = dst_mask_;
  ASSERT_TRUE(xdp_->set_hint(40, h));
  const XdpRun r = through_both(frame);
  EXPECT_EQ(r.meta.result, SF_XDP_MISS);
  EXPECT_EQ(r.frame, frame);
  EXPECT_EQ(xdp_->stats().hint_stale, 1u);
}

TEST_F(NicToSwitch, UnmarkedTrafficIsLookedUpAsUsual) {
  const auto frame = tcp4_frame();
  install(frame, dst_mask_, dst_mask_, kDstMask, 50, 5, {50, 1});
  ASSERT_TRUE(
      xdp_->add_megaflow(kSwitchDstSlot, kDatapath, key_and(key_of(frame), dst_mask_), {50, 1}));
  configure({kDstMask, kPortMask}, 0);  // the NIC marks nothing
  EXPECT_EQ(through_both(frame).meta.result, SF_XDP_MEGAFLOW_HIT);
  EXPECT_EQ(through_both(frame).meta.result, SF_XDP_EMC_HIT);
  const sf_xdp_stats s = xdp_->stats();
  EXPECT_EQ(s.hint_marked, 0u);
  EXPECT_EQ(s.hint_hits, 0u);
}

}  // namespace
}  // namespace softflow::bpf_test

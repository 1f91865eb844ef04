// NIC hints in the switch's XDP program: on a port with SF_PORT_HINTS a frame
// may carry the emulated NIC's shim (struct sf_shim) after its MAC addresses.
// The program strips it, parses the frame without it, and trusts the mark
// only when sf_hints says so (the entry exists, has the mark's generation,
// belongs to the queue's datapath, and the packet matches its masked key);
// then it skips the EMC and the megaflow mirror.  Every rejected mark falls
// back to the lookup a frame without a mark gets.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "xdp_harness.h"

namespace softflow::bpf_test {
namespace {

constexpr size_t kMacLen = 12;

std::vector<uint8_t> tcp4_frame(uint32_t dst = ipv4_addr("10.0.0.2"), uint16_t flags = kTcpAck) {
  return PacketBuilder()
      .eth(mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"))
      .ipv4(ipv4_addr("10.0.0.1"), dst)
      .tcp(1234, 80, flags, 1000, 2000)
      .payload("hello")
      .build();
}

std::vector<uint8_t> udp6_frame() {
  return PacketBuilder()
      .eth(mac("02:00:00:00:00:0c"), mac("02:00:00:00:00:0d"))
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"), 64, 0x20, 0x12345)
      .udp(5353, 53)
      .payload("query")
      .build();
}

std::vector<uint8_t> vlan_tcp4_frame() {
  return PacketBuilder()
      .eth(mac("02:00:00:00:00:0e"), mac("02:00:00:00:00:0f"))
      .vlan(10, 3)
      .ipv4(ipv4_addr("10.1.0.1"), ipv4_addr("10.1.0.2"))
      .tcp(4321, 443, kTcpSyn)
      .payload("x")
      .build();
}

std::vector<uint8_t> qinq_tcp6_frame() {
  return PacketBuilder()
      .vlan(100, 0, 0x88a8)
      .vlan(20, 5)
      .ipv6(ipv6_addr("2001:db8::a"), ipv6_addr("2001:db8::b"))
      .tcp(999, 22, kTcpAck | kTcpPsh)
      .payload("ssh")
      .build();
}

std::vector<uint8_t> prefix(const std::vector<uint8_t>& frame, size_t len) {
  return {frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(len)};
}

const char* result_name(uint8_t result) {
  switch (result) {
    case SF_XDP_MISS:
      return "MISS";
    case SF_XDP_EMC_HIT:
      return "EMC_HIT";
    case SF_XDP_MEGAFLOW_HIT:
      return "MEGAFLOW_HIT";
    case SF_XDP_UNPARSED:
      return "UNPARSED";
    case SF_XDP_HINT_HIT:
      return "HINT_HIT";
    default:
      return "?";
  }
}

// The result and megaflow reference of a run, comparable in one go.
struct Lookup {
  std::string result;
  uint32_t id;
  uint32_t generation;
  bool operator==(const Lookup&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Lookup& l) {
  return os << l.result << " {" << l.id << ", " << l.generation << "}";
}
Lookup hit(uint8_t result, uint32_t id, uint32_t generation) {
  return {result_name(result), id, generation};
}
const Lookup kMiss = {"MISS", 0, 0};

// The counters a mark can move, and those of the lookup it may skip, as one
// comparable line.
std::string hint_counters(const sf_xdp_stats& s) {
  return "hint_marked=" + std::to_string(s.hint_marked) +
         " hint_hits=" + std::to_string(s.hint_hits) +
         " hint_stale=" + std::to_string(s.hint_stale) +
         " hint_unknown=" + std::to_string(s.hint_unknown) +
         " hint_mismatch=" + std::to_string(s.hint_mismatch) +
         " hint_malformed=" + std::to_string(s.hint_malformed) + " | rx=" + std::to_string(s.rx) +
         " emc_hits=" + std::to_string(s.emc_hits) +
         " megaflow_hits=" + std::to_string(s.megaflow_hits) +
         " misses=" + std::to_string(s.misses) + " malformed=" + std::to_string(s.malformed) +
         " mask_searches=" + std::to_string(s.mask_searches) +
         " unparsed=" + std::to_string(s.unparsed);
}

// after - before, counter by counter.
sf_xdp_stats delta(const sf_xdp_stats& after, const sf_xdp_stats& before) {
  constexpr size_t kCounters = sizeof(sf_xdp_stats) / sizeof(uint64_t);
  uint64_t a[kCounters], b[kCounters];
  std::memcpy(a, &after, sizeof a);
  std::memcpy(b, &before, sizeof b);
  for (size_t i = 0; i < kCounters; ++i) a[i] -= b[i];
  sf_xdp_stats d;
  std::memcpy(&d, a, sizeof d);
  return d;
}

class XdpHint : public XdpTest {
 protected:
  // One mirror mask (for the fallback) and the hint entries' masks.
  static constexpr uint32_t kDstSlot = 2;
  static constexpr uint32_t kIndex = 5;        // the hint entry most tests use
  static constexpr uint32_t kGeneration = 17;  // its generation

  void SetUp() override {
    XdpTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    ASSERT_TRUE(xdp_->set_port(lo_ifindex_, hints_port()));
    ASSERT_TRUE(xdp_->set_mask(kDstSlot, dst_mask_));
    sf_xdp_config config{};
    config.n_masks = 1;
    config.emc_epoch = 1;
    config.order[0] = kDstSlot;
    ASSERT_TRUE(xdp_->set_config(config));
  }

  sf_port hints_port() const {
    sf_port port = default_port();
    port.flags |= SF_PORT_HINTS;
    return port;
  }

  static FlowKey key_of(const std::vector<uint8_t>& frame) {
    return parse_in_userspace(frame, kOfPort).key;
  }

  // The sf_hints entry of a stage-0 megaflow with 'mask' built from 'frame'.
  static sf_hint hint_for(const std::vector<uint8_t>& frame, const FlowKey& mask,
                          sf_megaflow_ref ref, uint32_t generation, uint32_t datapath = kDatapath) {
    sf_hint h;
    std::memset(&h, 0, sizeof h);
    h.generation = generation;
    h.datapath = datapath;
    h.ref = ref;
    h.key = key_and(key_of(frame), mask);
    h.mask = mask;
    return h;
  }

  // A megaflow in the mirror under kDstSlot, for the fallback to find.
  void add_mirror(const std::vector<uint8_t>& frame, sf_megaflow_ref ref,
                  uint32_t datapath = kDatapath) {
    ASSERT_TRUE(xdp_->add_megaflow(kDstSlot, datapath, key_and(key_of(frame), dst_mask_), ref));
  }

  // Runs 'input' and checks what every run must give: the verdict of a port
  // without a socket and metadata in front of the frame.
  XdpRun run_checked(const std::vector<uint8_t>& input) {
    const XdpRun r = run(input);
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(XDP_PASS)) << "no AF_XDP socket: XDP_PASS";
    EXPECT_TRUE(r.has_meta()) << "meta_len " << r.meta_len;
    EXPECT_EQ(r.meta.magic, SF_XDP_META_MAGIC);
    return r;
  }

  static Lookup lookup_of(const XdpRun& r) {
    return {result_name(r.meta.result), r.meta.ref.id, r.meta.ref.generation};
  }

  // Runs the frame with 'mark' in a shim; the program must hand on exactly
  // 'frame' (shim stripped), with the metadata userspace computes from it.
  Lookup run_marked(const std::vector<uint8_t>& frame, uint32_t mark) {
    const XdpRun r = run_checked(with_shim(frame, mark));
    EXPECT_EQ(r.frame, frame) << "the frame after the run must be the frame without the shim"
                              << "\n  got:  " << hex(r.frame) << "\n  want: " << hex(frame);
    EXPECT_TRUE(meta_matches_userspace(r, frame));
    return lookup_of(r);
  }

  Lookup run_plain(const std::vector<uint8_t>& frame) {
    const XdpRun r = run_checked(frame);
    EXPECT_EQ(r.frame, frame);
    return lookup_of(r);
  }

  // Counters since the last call (since SetUp on the first).
  sf_xdp_stats counters_delta() {
    const sf_xdp_stats now = xdp_->stats();
    const sf_xdp_stats d = delta(now, last_stats_);
    last_stats_ = now;
    return d;
  }

  const FlowKey dst_mask_ = fields_mask({Field::kInPort, Field::kDlType, Field::kNwDst});
  const FlowKey five_tuple_mask_ =
      fields_mask({Field::kInPort, Field::kDlType, Field::kNwProto, Field::kNwSrc, Field::kNwDst,
                   Field::kTpSrc, Field::kTpDst});
  sf_xdp_stats last_stats_{};
};

// Expected counters of runs that reached the fallback lookup or the hint.
struct Expect {
  uint64_t rx = 1, hint_marked = 0, hint_hits = 0, hint_stale = 0, hint_unknown = 0,
           hint_mismatch = 0, hint_malformed = 0, emc_hits = 0, megaflow_hits = 0, misses = 0,
           malformed = 0, mask_searches = 0;
  sf_xdp_stats stats() const {
    sf_xdp_stats s{};
    s.rx = rx;
    s.hint_marked = hint_marked;
    s.hint_hits = hint_hits;
    s.hint_stale = hint_stale;
    s.hint_unknown = hint_unknown;
    s.hint_mismatch = hint_mismatch;
    s.hint_malformed = hint_malformed;
    s.emc_hits = emc_hits;
    s.megaflow_hits = megaflow_hits;
    s.misses = misses;
    s.malformed = malformed;
    s.mask_searches = mask_searches;
    return s;
  }
};

// ---- a valid mark ---------------------------------------------------------------

TEST_F(XdpHint, ValidMarkIsAHintHitWithoutAnyLookup) {
  const auto frame = tcp4_frame();
  // The mirror has the megaflow too (with another reference, to tell the
  // answers apart): a verified mark must not look there.
  add_mirror(frame, {99, 1});
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration)));

  const XdpRun r = run_checked(with_shim(frame, SF_MARK(kIndex, kGeneration)));
  EXPECT_EQ(lookup_of(r), hit(SF_XDP_HINT_HIT, 42, 7));
  EXPECT_EQ(r.frame, frame) << "shim stripped, MACs and the rest intact";
  EXPECT_TRUE(meta_matches_userspace(r, frame));
  EXPECT_EQ(r.meta.key.in_port, kOfPort);
  EXPECT_EQ(r.meta.key.sf_metadata, 0u);
  EXPECT_EQ(r.meta.key.sf_stage, 0);
  EXPECT_EQ(r.meta.key.dl_type, htons(0x0800));
  EXPECT_EQ(r.meta.datapath, kDatapath);
  EXPECT_EQ(r.meta.l3_ofs, 14);
  EXPECT_EQ(r.meta.l4_ofs, 34);
  EXPECT_EQ(r.meta.hash, key_hash(key_of(frame)));
  Expect e;
  e.hint_marked = 1;
  e.hint_hits = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  EXPECT_EQ(xdp_->mask_hits(kDstSlot), 0u);

  // No EMC entry was written: the same frame without a mark goes to the
  // mirror, and only then to the EMC.
  EXPECT_EQ(run_plain(frame), hit(SF_XDP_MEGAFLOW_HIT, 99, 1));
  EXPECT_EQ(run_plain(frame), hit(SF_XDP_EMC_HIT, 99, 1));
  counters_delta();
  // With an EMC entry present, a verified mark still skips it.
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 7));
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

TEST_F(XdpHint, MarkCarriesTheLowGenerationBits) {
  const auto frame = tcp4_frame();
  const uint32_t generation = (1u << SF_MARK_GENERATION_BITS) * 3 + 9;
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, generation}, generation)));
  EXPECT_EQ(SF_MARK_GENERATION(SF_MARK(kIndex, generation)), 9u);
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, generation)), hit(SF_XDP_HINT_HIT, 42, generation));
  EXPECT_EQ(counters_delta().hint_hits, 1u);
}

TEST_F(XdpHint, MarkOfTheHighestIndexIsAHit) {
  const auto frame = tcp4_frame();
  const uint32_t last = SF_TCAM_MAX_ENTRIES - 1;
  ASSERT_TRUE(xdp_->set_hint(last, hint_for(frame, dst_mask_, {42, 7}, kGeneration)));
  EXPECT_EQ(run_marked(frame, SF_MARK(last, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 7));
}

TEST_F(XdpHint, WildcardedFieldsDoNotMatter) {
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(tcp4_frame(), dst_mask_, {42, 7}, kGeneration)));
  // Another source port, TCP flags and payload: outside the mask.
  const auto other = PacketBuilder()
                         .eth(mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"))
                         .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
                         .tcp(5555, 80, kTcpSyn)
                         .payload("another payload")
                         .build();
  EXPECT_EQ(run_marked(other, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 7));
}

// ---- rejected marks fall back to the lookup -----------------------------------------

TEST_F(XdpHint, StaleGenerationFallsBackToTheLookup) {
  const auto frame = tcp4_frame();
  add_mirror(frame, {42, 6});
  // The index was given to another megaflow since the NIC marked the frame.
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 6}, kGeneration + 1)));

  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_MEGAFLOW_HIT, 42, 6));
  Expect e;
  e.hint_marked = 1;
  e.hint_stale = 1;
  e.megaflow_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  // ... exactly as without a mark: the megaflow hit filled the EMC.
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_EMC_HIT, 42, 6));
  e = Expect{};
  e.hint_marked = 1;
  e.hint_stale = 1;
  e.emc_hits = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  // A mark newer than the entry is stale too.
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 6}, kGeneration)));
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration + 1)), hit(SF_XDP_EMC_HIT, 42, 6));
  EXPECT_EQ(counters_delta().hint_stale, 1u);
}

TEST_F(XdpHint, StaleMarkWithoutAMegaflowMisses) {
  const auto frame = tcp4_frame();
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 6}, kGeneration + 1)));
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), kMiss);
  Expect e;
  e.hint_marked = 1;
  e.hint_stale = 1;
  e.misses = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

TEST_F(XdpHint, PacketNotMatchingTheEntryFallsBack) {
  // The entry is the megaflow of nw_dst 10.0.0.2; the packet goes to 10.0.0.3.
  const auto entry_frame = tcp4_frame(ipv4_addr("10.0.0.2"));
  const auto frame = tcp4_frame(ipv4_addr("10.0.0.3"));
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(entry_frame, dst_mask_, {42, 7}, kGeneration)));

  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), kMiss);
  Expect e;
  e.hint_marked = 1;
  e.hint_mismatch = 1;
  e.misses = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  // The fallback finds the packet's own megaflow.
  add_mirror(frame, {43, 1});
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_MEGAFLOW_HIT, 43, 1));
  e = Expect{};
  e.hint_marked = 1;
  e.hint_mismatch = 1;
  e.megaflow_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

TEST_F(XdpHint, EntryOfAnotherIngressPortIsAMismatch) {
  const auto frame = tcp4_frame();
  sf_hint h = hint_for(frame, dst_mask_, {42, 7}, kGeneration);
  h.key.in_port = kOfPort + 1;
  ASSERT_TRUE(xdp_->set_hint(kIndex, h));
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), kMiss);
  EXPECT_EQ(counters_delta().hint_mismatch, 1u);

  // And the key the program builds carries the port's ofport.
  sf_port port = hints_port();
  port.ofport = kOfPort + 1;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  const XdpRun r = run_checked(with_shim(frame, SF_MARK(kIndex, kGeneration)));
  EXPECT_EQ(lookup_of(r), hit(SF_XDP_HINT_HIT, 42, 7));
  EXPECT_EQ(r.meta.key.in_port, kOfPort + 1);
}

TEST_F(XdpHint, UnknownIdFallsBack) {
  const auto frame = tcp4_frame();
  add_mirror(frame, {42, 6});

  // An empty slot.
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_MEGAFLOW_HIT, 42, 6));
  Expect e;
  e.hint_marked = 1;
  e.hint_unknown = 1;
  e.megaflow_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  // An index past the one configured entry (same generation).
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 6}, kGeneration)));
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex + 1, kGeneration)), hit(SF_XDP_EMC_HIT, 42, 6));
  e = Expect{};
  e.hint_marked = 1;
  e.hint_unknown = 1;
  e.emc_hits = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  // The highest index, empty.
  EXPECT_EQ(run_marked(frame, SF_MARK(SF_TCAM_MAX_ENTRIES - 1, kGeneration)),
            hit(SF_XDP_EMC_HIT, 42, 6));
  EXPECT_EQ(counters_delta().hint_unknown, 1u);

  // A removed entry (cleared slot).
  ASSERT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 6));
  ASSERT_TRUE(xdp_->clear_hint(kIndex));
  counters_delta();
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_EMC_HIT, 42, 6));
  e = Expect{};
  e.hint_marked = 1;
  e.hint_unknown = 1;
  e.emc_hits = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

TEST_F(XdpHint, MarkZeroIsVerifiedAndRejectedLikeAnyOther) {
  // Userspace never hands out a generation whose low bits are 0, so no
  // entry's mark is 0; a frame that carries 0 anyway (a stray or forged
  // shim) names index 0, generation 0: it is stripped, and rejected with a
  // counter like every other mark that does not check out.
  const auto frame = tcp4_frame();
  add_mirror(frame, {42, 6});
  EXPECT_EQ(run_marked(frame, 0), hit(SF_XDP_MEGAFLOW_HIT, 42, 6));
  Expect e;
  e.hint_marked = 1;
  e.hint_unknown = 1;  // sf_hints[0] is empty
  e.megaflow_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  ASSERT_TRUE(xdp_->set_hint(0, hint_for(frame, dst_mask_, {42, 6}, kGeneration)));
  EXPECT_EQ(run_marked(frame, 0), hit(SF_XDP_EMC_HIT, 42, 6));
  e = Expect{};
  e.hint_marked = 1;
  e.hint_stale = 1;  // generation 0 is not the entry's
  e.emc_hits = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

TEST_F(XdpHint, EntryOfAnotherDatapathIsAMismatch) {
  const auto frame = tcp4_frame();
  // The queue is served by datapath 4; the entry names datapath 3's megaflow.
  constexpr uint8_t kOtherDatapath = kDatapath + 1;
  sf_port port = hints_port();
  port.datapath[0] = kOtherDatapath;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, port));
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration, kDatapath)));
  add_mirror(frame, {77, 1}, kOtherDatapath);

  const XdpRun r = run_checked(with_shim(frame, SF_MARK(kIndex, kGeneration)));
  EXPECT_EQ(lookup_of(r), hit(SF_XDP_MEGAFLOW_HIT, 77, 1));
  EXPECT_EQ(r.meta.datapath, kOtherDatapath);
  EXPECT_EQ(r.frame, frame);
  Expect e;
  e.hint_marked = 1;
  e.hint_mismatch = 1;
  e.megaflow_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));

  // The entry of the queue's own datapath is a hit.
  ASSERT_TRUE(
      xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration, kOtherDatapath)));
  EXPECT_EQ(run_marked(frame, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 7));
}

TEST_F(XdpHint, MaskWiderThanTheTcamIsCheckedWhole) {
  // The megaflow matches on TCP flags, which the TCAM cannot see: the NIC
  // marks every packet of the 5-tuple, and the switch must tell them apart.
  FlowKey mask = five_tuple_mask_;
  key_or_into(mask, field_mask(Field::kTcpFlags));
  const auto syn = tcp4_frame(ipv4_addr("10.0.0.2"), kTcpSyn);
  const auto ack = tcp4_frame(ipv4_addr("10.0.0.2"), kTcpAck);
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(syn, mask, {42, 7}, kGeneration)));

  EXPECT_EQ(run_marked(syn, SF_MARK(kIndex, kGeneration)), hit(SF_XDP_HINT_HIT, 42, 7));
  EXPECT_EQ(counters_delta().hint_hits, 1u);
  EXPECT_EQ(run_marked(ack, SF_MARK(kIndex, kGeneration)), kMiss);
  Expect e;
  e.hint_marked = 1;
  e.hint_mismatch = 1;
  e.misses = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

// ---- malformed shims and frames ----------------------------------------------------

TEST_F(XdpHint, MarkOnAMalformedFrameIsNotTrusted) {
  // An entry that only looks at in_port and dl_type would match the key of
  // whatever parsed; the mark must still be ignored.
  const FlowKey loose = fields_mask({Field::kInPort, Field::kDlType});
  const auto whole = tcp4_frame();
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(whole, loose, {42, 7}, kGeneration)));

  struct Case {
    const char* description;
    size_t len;
    uint16_t flags;
  } cases[] = {
      {"IPv4 header cut short", 14 + 10, SF_PARSE_TRUNCATED_L3},
      // (and the IPv4 total length now lies)
      {"TCP header cut short", 14 + 20 + 10, SF_PARSE_BAD_L3 | SF_PARSE_TRUNCATED_L4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    const auto frame = prefix(whole, c.len);
    const XdpRun r = run_checked(with_shim(frame, SF_MARK(kIndex, kGeneration)));
    EXPECT_EQ(r.frame, frame) << "a well-formed shim is stripped even from a broken frame";
    EXPECT_EQ(r.meta.parse_flags, c.flags);
    EXPECT_TRUE(meta_matches_userspace(r, frame));
    EXPECT_EQ(lookup_of(r), kMiss);
    Expect e;
    e.hint_marked = 1;
    e.hint_malformed = 1;
    e.misses = 1;
    e.malformed = 1;
    e.mask_searches = 1;
    EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  }

  // A malformed frame's fallback still finds its megaflow.
  const auto frame = prefix(whole, 14 + 10);
  add_mirror(frame, {50, 2});
  const XdpRun r = run_checked(with_shim(frame, SF_MARK(kIndex, kGeneration)));
  EXPECT_EQ(lookup_of(r), hit(SF_XDP_MEGAFLOW_HIT, 50, 2));
}

TEST_F(XdpHint, ShimCutShortIsLeftInPlace) {
  const auto frame = tcp4_frame();
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration)));
  const auto marked = with_shim(frame, SF_MARK(kIndex, kGeneration));
  // 14 bytes (BPF_PROG_RUN's minimum) to one short of shim + EtherType.
  for (size_t len = 14; len < kMacLen + sizeof(sf_shim) + 2; ++len) {
    SCOPED_TRACE("len " + std::to_string(len));
    const auto cut = prefix(marked, len);
    const XdpRun r = run_checked(cut);
    EXPECT_EQ(r.frame, cut) << "nothing stripped";
    EXPECT_EQ(r.meta.key.dl_type, htons(SF_SHIM_ETHERTYPE));
    EXPECT_TRUE(meta_matches_userspace(r, cut));
    EXPECT_EQ(lookup_of(r), kMiss);
    Expect e;
    e.hint_malformed = 1;
    e.misses = 1;
    e.mask_searches = 1;
    EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  }
  // The shortest frame that holds the shim and an EtherType is stripped.
  const auto shortest = prefix(marked, kMacLen + sizeof(sf_shim) + 2);
  const XdpRun r = run_checked(shortest);
  EXPECT_EQ(r.frame, prefix(frame, kMacLen + 2));
  EXPECT_EQ(counters_delta().hint_marked, 1u);
}

TEST_F(XdpHint, WrongVersionIsLeftInPlace) {
  const auto frame = tcp4_frame();
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration)));
  for (uint8_t version : {uint8_t{0}, uint8_t{SF_SHIM_VERSION + 1}, uint8_t{0xff}}) {
    SCOPED_TRACE("version " + std::to_string(version));
    const auto marked = with_shim(frame, SF_MARK(kIndex, kGeneration), version);
    const XdpRun r = run_checked(marked);
    EXPECT_EQ(r.frame, marked) << "nothing stripped";
    EXPECT_EQ(r.meta.key.dl_type, htons(SF_SHIM_ETHERTYPE));
    EXPECT_TRUE(meta_matches_userspace(r, marked));
    EXPECT_EQ(lookup_of(r), kMiss);
    Expect e;
    e.hint_malformed = 1;
    e.misses = 1;
    e.mask_searches = 1;
    EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  }
}

TEST_F(XdpHint, PortWithoutHintsLeavesTheShimAlone) {
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, default_port()));
  const auto frame = tcp4_frame();
  ASSERT_TRUE(xdp_->set_hint(kIndex, hint_for(frame, dst_mask_, {42, 7}, kGeneration)));
  const std::vector<std::vector<uint8_t>> inputs = {
      with_shim(frame, SF_MARK(kIndex, kGeneration)),
      with_shim(frame, SF_MARK(kIndex, kGeneration), 2),
      prefix(with_shim(frame, SF_MARK(kIndex, kGeneration)), 16),
  };
  for (const auto& marked : inputs) {
    SCOPED_TRACE(hex(marked));
    const XdpRun r = run_checked(marked);
    EXPECT_EQ(r.frame, marked) << "not stripped";
    EXPECT_EQ(r.meta.key.dl_type, htons(SF_SHIM_ETHERTYPE));
    EXPECT_TRUE(meta_matches_userspace(r, marked));
    EXPECT_EQ(lookup_of(r), kMiss);
    Expect e;
    e.misses = 1;
    e.mask_searches = 1;
    EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
  }
}

TEST_F(XdpHint, FrameWithoutShimOnAHintsPortIsLookedUpAsUsual) {
  const auto frame = tcp4_frame();
  add_mirror(frame, {42, 6});
  EXPECT_EQ(run_plain(frame), hit(SF_XDP_MEGAFLOW_HIT, 42, 6));
  EXPECT_EQ(run_plain(frame), hit(SF_XDP_EMC_HIT, 42, 6));
  Expect e;
  e.rx = 2;
  e.megaflow_hits = 1;
  e.emc_hits = 1;
  e.mask_searches = 1;
  EXPECT_EQ(hint_counters(counters_delta()), hint_counters(e.stats()));
}

// ---- the stripped frame, byte for byte ---------------------------------------------

TEST_F(XdpHint, StrippedFramesAreExact) {
  struct Case {
    const char* description;
    std::vector<uint8_t> frame;
    uint16_t l3_ofs;
  } cases[] = {
      {"IPv4/TCP", tcp4_frame(), 14},
      {"IPv6/UDP", udp6_frame(), 14},
      {"802.1Q IPv4/TCP", vlan_tcp4_frame(), 18},
      {"802.1ad+802.1Q IPv6/TCP", qinq_tcp6_frame(), 22},
  };
  uint32_t index = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    FlowKey mask = five_tuple_mask_;
    key_or_into(mask, fields_mask({Field::kVlanTci, Field::kIpv6Src, Field::kIpv6Dst}));
    ASSERT_TRUE(xdp_->set_hint(index, hint_for(c.frame, mask, {index, 3}, kGeneration)));
    const XdpRun r = run_checked(with_shim(c.frame, SF_MARK(index, kGeneration)));
    EXPECT_EQ(r.frame, c.frame) << "\n  got:  " << hex(r.frame) << "\n  want: " << hex(c.frame);
    EXPECT_TRUE(meta_matches_userspace(r, c.frame));
    EXPECT_EQ(r.meta.l3_ofs, c.l3_ofs);
    EXPECT_EQ(r.meta.parse_flags, 0);
    EXPECT_EQ(lookup_of(r), hit(SF_XDP_HINT_HIT, index, 3));
    ++index;
  }
  const sf_xdp_stats d = counters_delta();
  EXPECT_EQ(d.hint_marked, 4u);
  EXPECT_EQ(d.hint_hits, 4u);
}

}  // namespace
}  // namespace softflow::bpf_test

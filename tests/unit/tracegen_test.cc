// Tests of the trace generator (T1-like, T2, T3) and the replay port rewrite.
// Everything is checked from the frames' bytes with helpers written here
// (checksums, a TCP validator), not with the generator's own code.
#include "softflow/tracegen.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "softflow/packet_builder.h"
#include "softflow/parse.h"
#include "softflow/ports.h"
#include "softflow/protocols.h"
#include "test_util.h"

namespace softflow {
namespace {

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) { return static_cast<uint32_t>(be16(p)) << 16 | be16(p + 2); }

// ---- independent checksum verification ------------------------------------------

using test::add_words;
using test::fold;

// A parsed copy of a frame.
struct Parsed {
  std::vector<uint8_t> bytes;
  Packet pkt;

  explicit Parsed(std::span<const uint8_t> frame) : bytes(frame.begin(), frame.end()) {
    pkt.data = bytes.data();
    pkt.len = static_cast<uint32_t>(bytes.size());
    pkt.key = zero_key();
    parse_packet(pkt);
  }
  Parsed(const Parsed&) = delete;
  const uint8_t* ip() const { return bytes.data() + pkt.l3_ofs; }
  const uint8_t* l4() const { return bytes.data() + pkt.l4_ofs; }
  uint8_t proto() const { return pkt.key.nw_proto; }
  uint16_t ip_total_len() const { return be16(ip() + 2); }
  size_t l4_len() const { return pkt.l3_ofs + ip_total_len() - pkt.l4_ofs; }
  size_t payload_len() const { return pkt.l3_ofs + ip_total_len() - pkt.payload_ofs; }
};

// IPv4 frames only (what the generator writes); IPv6 is checked separately.
::testing::AssertionResult checksums_valid(const Parsed& p) {
  if (!p.pkt.has_l3() || !p.pkt.has_l4()) return ::testing::AssertionFailure() << "no L3/L4";
  const uint8_t* ip = p.ip();
  const size_t ihl = (ip[0] & 0x0f) * 4u;
  if (fold(add_words(0, ip, ihl)) != 0xffff)
    return ::testing::AssertionFailure() << "bad IPv4 header checksum";
  const uint8_t* l4 = p.l4();
  const size_t l4_len = p.l4_len();
  uint32_t sum = add_words(0, l4, l4_len);
  if (p.proto() == kProtoTcp || p.proto() == kProtoUdp) {
    if (p.proto() == kProtoUdp && be16(l4 + 6) == 0) return ::testing::AssertionSuccess();
    sum = add_words(sum, ip + 12, 8) + p.proto() + static_cast<uint32_t>(l4_len);
  }
  if (fold(sum) != 0xffff)
    return ::testing::AssertionFailure() << "bad L4 checksum (proto " << int(p.proto()) << ")";
  return ::testing::AssertionSuccess();
}

// ---- conversations from the bytes -------------------------------------------------

// (client ip, client port, server ip, server port, proto) with the client
// being the side that sent the first packet.
using Tuple = std::tuple<uint32_t, uint16_t, uint32_t, uint16_t, uint8_t>;

struct Directed {
  Tuple tuple;
  bool from_server;
};

// Ports of ICMP are the echo id on both sides.
Directed directed_tuple(const Parsed& p, std::map<Tuple, bool>& seen) {
  const uint32_t src = be32(p.ip() + 12), dst = be32(p.ip() + 16);
  uint16_t sport = 0, dport = 0;
  if (p.proto() == kProtoIcmp) {
    sport = dport = be16(p.l4() + 4);
  } else {
    sport = be16(p.l4());
    dport = be16(p.l4() + 2);
  }
  const Tuple forward{src, sport, dst, dport, p.proto()};
  const Tuple reverse{dst, dport, src, sport, p.proto()};
  if (seen.count(reverse)) return {reverse, true};
  seen.emplace(forward, true);
  return {forward, false};
}

// ---- the TCP validator -----------------------------------------------------------------
// Strict, in the style of pf/OVS conntrack, but simpler because the traces
// have no loss: per connection the handshake comes first (SYN, SYN-ACK with
// ack = ISN + 1, ACK); after that each side's segments start exactly at its
// next sequence number (no retransmission, no reordering), every segment
// has ACK, acknowledges no more than the peer has sent and never less than
// before, and carries no data beyond the peer's advertised window (scaled
// when both SYNs had window scale); the connection ends with FIN both ways
// and an ACK of the last FIN, or with an RST at the expected sequence number;
// nothing follows.

class TcpValidator {
 public:
  void packet(const Parsed& p, const Directed& d) {
    Conn& c = conns_[d.tuple];
    const int side = d.from_server ? 1 : 0;
    const uint8_t* tcp = p.l4();
    const uint32_t seq = be32(tcp + 4), ack = be32(tcp + 8);
    const uint16_t flags = be16(tcp + 12) & 0x1ff;
    const uint32_t window = be16(tcp + 14);
    const uint32_t len = static_cast<uint32_t>(p.payload_len());
    const size_t header_len = (tcp[12] >> 4) * 4u;
    auto fail = [&](const std::string& what) {
      if (c.error.empty()) c.error = what + " at packet " + std::to_string(c.packets);
    };
    ++c.packets;
    if (!c.error.empty()) return;
    if (c.closed) return fail("packet after close");

    if (c.packets == 1) {
      if (side != 0 || flags != kTcpSyn || len != 0) return fail("first packet is not a SYN");
      c.wscale[0] = window_scale(tcp, header_len);
      c.next_seq[0] = seq + 1;
      c.acked[0] = 0;
      c.window_edge[0] = 0;
      return;
    }
    if (c.packets == 2) {
      if (side != 1 || flags != (kTcpSyn | kTcpAck) || ack != c.next_seq[0] || len != 0)
        return fail("second packet is not a matching SYN-ACK");
      c.wscale[1] = window_scale(tcp, header_len);
      c.next_seq[1] = seq + 1;
      // The SYN-ACK's window is never scaled.
      c.window_edge[1] = ack + window;
      c.acked[1] = ack;
      return;
    }
    if (flags & kTcpSyn) return fail("SYN after the handshake");
    if (!(flags & kTcpAck)) return fail("segment without ACK");
    if (seq != c.next_seq[side]) return fail("unexpected sequence number");
    const int peer = 1 - side;
    if (static_cast<int32_t>(ack - c.next_seq[peer]) > 0) return fail("acknowledges unsent data");
    if (c.packets > 3 && static_cast<int32_t>(ack - c.acked[side]) < 0) return fail("ACK went back");
    if (len > 0 && static_cast<int32_t>(seq + len - c.window_edge[peer]) > 0)
      return fail("data beyond the peer's window");
    // This side's window from its ACK, scaled once both sides agreed to scale.
    const bool scaled = c.wscale[0] >= 0 && c.wscale[1] >= 0;
    c.acked[side] = ack;
    c.window_edge[side] = ack + (window << (scaled ? c.wscale[side] : 0));
    if (c.packets == 3) {
      if (side != 0 || len != 0 || (flags & (kTcpFin | kTcpRst)))
        return fail("third packet is not the handshake ACK");
    }
    c.next_seq[side] = seq + len + ((flags & kTcpFin) ? 1 : 0);
    if (flags & kTcpRst) {
      c.closed = true;
      c.reset = true;
      return;
    }
    if (flags & kTcpFin) {
      if (c.fin[side]) return fail("second FIN");
      c.fin[side] = true;
    }
    // Closed once both FINs are sent and each side has acknowledged the other's.
    if (c.fin[0] && c.fin[1] && c.acked[0] == c.next_seq[1] && c.acked[1] == c.next_seq[0])
      c.closed = true;
  }

  // Every connection valid and closed; returns how many there were.
  size_t check_all(std::string& error, size_t& resets) const {
    resets = 0;
    for (const auto& [tuple, c] : conns_) {
      if (!c.error.empty()) {
        error = describe(tuple) + ": " + c.error;
        return conns_.size();
      }
      if (!c.closed) {
        error = describe(tuple) + ": not closed after " + std::to_string(c.packets) + " packets";
        return conns_.size();
      }
      resets += c.reset;
    }
    return conns_.size();
  }
  std::map<Tuple, size_t> packet_counts() const {
    std::map<Tuple, size_t> counts;
    for (const auto& [tuple, c] : conns_) counts[tuple] = c.packets;
    return counts;
  }

 private:
  struct Conn {
    size_t packets = 0;
    uint32_t next_seq[2] = {0, 0};
    uint32_t acked[2] = {0, 0};
    uint32_t window_edge[2] = {0, 0};  // what each side allows its peer to send up to
    int wscale[2] = {-1, -1};
    bool fin[2] = {false, false};
    bool closed = false, reset = false;
    std::string error;
  };

  // Window scale option of a SYN, or -1.
  static int window_scale(const uint8_t* tcp, size_t header_len) {
    for (size_t i = 20; i < header_len;) {
      const uint8_t kind = tcp[i];
      if (kind == 0) break;
      if (kind == 1) {
        ++i;
        continue;
      }
      if (i + 1 >= header_len || tcp[i + 1] < 2) break;
      if (kind == 3 && tcp[i + 1] == 3 && i + 2 < header_len) return std::min<int>(tcp[i + 2], 14);
      i += tcp[i + 1];
    }
    return -1;
  }
  static std::string describe(const Tuple& t) {
    return std::to_string(std::get<0>(t)) + ":" + std::to_string(std::get<1>(t)) + " -> " +
           std::to_string(std::get<2>(t)) + ":" + std::to_string(std::get<3>(t));
  }

  std::map<Tuple, Conn> conns_;
};

// ---- shared traces (generated once: the suite runs under ASan too) ----------------------

constexpr double kTestScale = 0.01;

const std::vector<Frame>& trace(TraceKind kind) {
  static std::map<TraceKind, std::vector<Frame>> cache;
  auto it = cache.find(kind);
  if (it == cache.end()) {
    TraceSpec spec;
    spec.kind = kind;
    spec.scale = kTestScale;
    spec.seed = 42;
    if (kind == TraceKind::kT3) spec.rounds = 2;
    Result<std::vector<Frame>> frames = generate_trace_frames(spec);
    EXPECT_TRUE(frames.is_ok()) << frames.status().message();
    it = cache.emplace(kind, frames ? std::move(*frames) : std::vector<Frame>{}).first;
  }
  return it->second;
}

struct ConversationSummary {
  std::vector<Tuple> order;  // tuple of each frame, in trace order
  std::vector<bool> from_server;
  std::map<Tuple, size_t> packets;
  std::set<uint32_t> ips;
};

ConversationSummary summarize(const std::vector<Frame>& frames) {
  ConversationSummary s;
  std::map<Tuple, bool> seen;
  for (const Frame& f : frames) {
    Parsed p(f.bytes);
    const Directed d = directed_tuple(p, seen);
    s.order.push_back(d.tuple);
    s.from_server.push_back(d.from_server);
    ++s.packets[d.tuple];
    s.ips.insert(std::get<0>(d.tuple));
    s.ips.insert(std::get<2>(d.tuple));
  }
  return s;
}

void expect_tcp_valid(const std::vector<Frame>& frames, size_t* connections = nullptr,
                      size_t* resets_out = nullptr) {
  TcpValidator validator;
  std::map<Tuple, bool> seen;
  for (const Frame& f : frames) {
    Parsed p(f.bytes);
    const Directed d = directed_tuple(p, seen);
    if (p.proto() == kProtoTcp) validator.packet(p, d);
  }
  std::string error;
  size_t resets = 0;
  const size_t n = validator.check_all(error, resets);
  EXPECT_EQ(error, "");
  EXPECT_GT(n, 0u);
  if (connections) *connections = n;
  if (resets_out) *resets_out = resets;
}

// ---- tests -------------------------------------------------------------------------------

TEST(TracegenTest, SameSeedSameTraceOtherSeedOtherTrace) {
  for (TraceKind kind : {TraceKind::kT1, TraceKind::kT3}) {
    TraceSpec spec{kind, 0.002, 7, 1};
    auto a = generate_trace_frames(spec);
    auto b = generate_trace_frames(spec);
    spec.seed = 8;
    auto c = generate_trace_frames(spec);
    ASSERT_TRUE(a && b && c);
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
      ASSERT_EQ((*a)[i].bytes, (*b)[i].bytes) << "frame " << i;
      ASSERT_EQ((*a)[i].timestamp_ns, (*b)[i].timestamp_ns) << "frame " << i;
    }
    size_t same = 0;
    for (size_t i = 0; i < std::min(a->size(), c->size()); ++i) same += (*a)[i].bytes == (*c)[i].bytes;
    EXPECT_LT(same, a->size() / 10) << "seed 8 repeats seed 7's frames";
  }
}

TEST(TracegenTest, T1StatisticsNearThePaper) {
  const std::vector<Frame>& frames = trace(TraceKind::kT1);
  const ConversationSummary s = summarize(frames);
  uint64_t bytes = 0;
  for (const Frame& f : frames) bytes += f.bytes.size();
  const double mean_size = static_cast<double>(bytes) / frames.size();
  // Target 937 B; ±15 % (the mix of full segments and small packets is
  // drawn, not fixed, and small scales weigh the heaviest conversation more).
  EXPECT_NEAR(mean_size, 937, 0.15 * 937);
  // 4.6 M packets and 44 s at scale 1: both scale.  ±10 %: the lengths are
  // fitted to their target means, leaving only rounding and clipping.
  EXPECT_NEAR(static_cast<double>(frames.size()), 4.6e6 * kTestScale, 0.1 * 4.6e6 * kTestScale);
  const double duration_s = (frames.back().timestamp_ns - frames.front().timestamp_ns) / 1e9;
  EXPECT_NEAR(duration_s, 44 * kTestScale, 0.1 * 44 * kTestScale);

  std::vector<size_t> tcp, udp;
  size_t icmp = 0;
  for (const auto& [tuple, n] : s.packets) {
    switch (std::get<4>(tuple)) {
      case kProtoTcp: tcp.push_back(n); break;
      case kProtoUdp: udp.push_back(n); break;
      case kProtoIcmp: ++icmp; break;
      default: ADD_FAILURE() << "unexpected protocol " << int(std::get<4>(tuple));
    }
  }
  // 100k : 75k at scale 1.
  EXPECT_EQ(tcp.size(), 1000u);
  EXPECT_EQ(udp.size(), 750u);
  EXPECT_GT(icmp, 0u);
  EXPECT_LT(icmp, tcp.size() / 20) << "ICMP is meant to be a small share";
  std::sort(tcp.begin(), tcp.end());
  const double tcp_mean = std::accumulate(tcp.begin(), tcp.end(), 0.0) / tcp.size();
  // Mean 42: fitted, so only rounding moves it (±5 %).  Median 10: a sample
  // median of 1000 draws whose density near 10 is ~4 %/packet has a standard
  // error well under 1 packet, so ±2 is generous.
  EXPECT_NEAR(tcp_mean, 42, 0.05 * 42);
  EXPECT_NEAR(static_cast<double>(tcp[tcp.size() / 2]), 10, 2);
  // The longest conversation scales with the trace: 99k * 0.01.
  EXPECT_NEAR(static_cast<double>(tcp.back()), 990, 10);
  EXPECT_GE(tcp.front(), 6u);  // handshake and close
  // Heavy tail: the top 1 % of conversations carry a large share of packets.
  const double top = std::accumulate(tcp.end() - 10, tcp.end(), 0.0);
  EXPECT_GT(top / (tcp_mean * tcp.size()), 0.1);
  // ~11k addresses at scale 1 (8000 clients, 3000 servers): 110 here; a
  // client or server may go unused by chance, so -10 %.
  EXPECT_LE(s.ips.size(), 110u);
  EXPECT_GE(s.ips.size(), 99u);
  // Zipf-like server popularity: the busiest server has many times the
  // conversations of the median one (Zipf(1) over 30 servers: ~15x).
  std::map<uint32_t, size_t> per_server;
  for (const auto& [tuple, n] : s.packets) ++per_server[std::get<2>(tuple)];
  std::vector<size_t> server_counts;
  for (const auto& [server, n] : per_server) server_counts.push_back(n);
  std::sort(server_counts.begin(), server_counts.end());
  EXPECT_GT(server_counts.back(), 3 * server_counts[server_counts.size() / 2]);
  for (uint32_t ip : s.ips) {
    const bool client = (ip >> 24) == 10, server = (ip & 0xfff00000) == 0xac100000;
    EXPECT_TRUE(client || server) << std::hex << ip;
  }

  // The generator's own summary agrees with what the frames say.
  TraceSpec spec{TraceKind::kT1, kTestScale, 42, 0};
  auto stats = generate_trace(spec, [](uint64_t, std::span<const uint8_t>) {});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->packets, frames.size());
  EXPECT_EQ(stats->bytes, bytes);
  EXPECT_EQ(stats->tcp_length.median, tcp[tcp.size() / 2]);
  EXPECT_EQ(stats->tcp_length.max, tcp.back());
  EXPECT_EQ(stats->distinct_ips, s.ips.size());
  EXPECT_FALSE(format_trace_stats(spec, *stats).empty());
}

TEST(TracegenTest, EveryFrameParsesWithValidChecksumsAndAddressPlan) {
  const uint8_t gateway[6] = {0x02, 0x53, 0x46, 0x00, 0x00, 0x01};
  for (TraceKind kind : {TraceKind::kT1, TraceKind::kT2, TraceKind::kT3}) {
    SCOPED_TRACE(std::string(trace_kind_name(kind)));
    const std::vector<Frame>& frames = trace(kind);
    ASSERT_FALSE(frames.empty());
    uint64_t last_ts = 0;
    for (size_t i = 0; i < frames.size(); ++i) {
      const Frame& f = frames[i];
      Parsed p(f.bytes);
      ASSERT_EQ(p.pkt.parse_flags, kParseOk) << "frame " << i;
      ASSERT_TRUE(p.pkt.has_l4()) << "frame " << i;
      ASSERT_TRUE(checksums_valid(p)) << "frame " << i;
      ASSERT_GE(f.bytes.size(), 60u);
      ASSERT_LE(f.bytes.size(), 1514u);
      ASSERT_GE(f.timestamp_ns, last_ts) << "frame " << i << " out of time order";
      last_ts = f.timestamp_ns;
      ASSERT_EQ(std::memcmp(f.bytes.data(), gateway, 6), 0);
      const uint8_t* src_mac = f.bytes.data() + 6;
      ASSERT_EQ(src_mac[0], 0x02);
      ASSERT_EQ(src_mac[1], 0x00);
      ASSERT_EQ(std::memcmp(src_mac + 2, p.ip() + 12, 4), 0) << "MAC not derived from the IP";
      ASSERT_EQ(p.ip()[8], 64) << "TTL";
      ASSERT_EQ(be16(p.ip() + 6), 0x4000) << "DF, not fragmented";
    }
  }
}

TEST(TracegenTest, EveryTcpConnectionIsValidInT1T2AndT3) {
  for (TraceKind kind : {TraceKind::kT1, TraceKind::kT2, TraceKind::kT3}) {
    SCOPED_TRACE(std::string(trace_kind_name(kind)));
    size_t connections = 0;
    expect_tcp_valid(trace(kind), &connections);
    EXPECT_EQ(connections, kind == TraceKind::kT3 ? 32u : 1000u);
  }
}

TEST(TracegenTest, ValidatorCatchesBrokenTcp) {
  // The validator must be able to fail: shift one data segment's sequence
  // number, or drop a handshake packet, and it complains.
  auto t3 = generate_trace_frames(TraceSpec{TraceKind::kT3, 0.02, 5, 1});
  ASSERT_TRUE(t3);
  auto broken = [&](auto&& mutate) {
    std::vector<Frame> copy = *t3;
    mutate(copy);
    TcpValidator validator;
    std::map<Tuple, bool> seen;
    for (const Frame& f : copy) {
      Parsed p(f.bytes);
      const Directed d = directed_tuple(p, seen);
      validator.packet(p, d);
    }
    std::string error;
    size_t resets = 0;
    validator.check_all(error, resets);
    return error;
  };
  EXPECT_EQ(broken([](std::vector<Frame>&) {}), "");
  EXPECT_NE(broken([](std::vector<Frame>& v) { v[500].bytes[14 + 20 + 7] ^= 1; }), "");
  EXPECT_NE(broken([](std::vector<Frame>& v) { v.erase(v.begin() + 1); }), "");
  EXPECT_NE(broken([](std::vector<Frame>& v) { v.erase(v.end() - 1); }), "");
}

TEST(TracegenTest, RstClosesAreAFewPercent) {
  size_t n = 0, resets = 0;
  expect_tcp_valid(trace(TraceKind::kT1), &n, &resets);
  // 3 % of 1000: expect 30, sd ~5.4.
  EXPECT_GT(resets, 5u);
  EXPECT_LT(resets, 70u);
  EXPECT_EQ(n, 1000u);
}

TEST(TracegenTest, T2IsT1In64ByteFrames) {
  const std::vector<Frame>& t1 = trace(TraceKind::kT1);
  const std::vector<Frame>& t2 = trace(TraceKind::kT2);
  ASSERT_EQ(t1.size(), t2.size());
  for (const Frame& f : t2) ASSERT_EQ(f.bytes.size(), 64u);
  const ConversationSummary s1 = summarize(t1), s2 = summarize(t2);
  EXPECT_EQ(s1.order, s2.order) << "T2 must have T1's 5-tuples in T1's order";
  EXPECT_EQ(s1.from_server, s2.from_server);
  for (size_t i = 0; i < t1.size(); ++i) ASSERT_EQ(t1[i].timestamp_ns, t2[i].timestamp_ns);
  // TCP flags match too (same segments, less payload).
  for (size_t i = 0; i < t1.size(); ++i) {
    Parsed a(t1[i].bytes), b(t2[i].bytes);
    ASSERT_EQ(a.pkt.key.tcp_flags, b.pkt.key.tcp_flags) << "frame " << i;
    ASSERT_EQ(a.payload_len() > 0, b.payload_len() > 0) << "frame " << i;
  }
}

TEST(TracegenTest, T3Has32ConnectionsWithBurstsOf256) {
  const std::vector<Frame>& frames = trace(TraceKind::kT3);
  const uint32_t rounds = 2;
  ASSERT_EQ(frames.size(), 32u * 6 + rounds * 32 * 257);
  const ConversationSummary s = summarize(frames);
  ASSERT_EQ(s.packets.size(), 32u);
  for (const auto& [tuple, n] : s.packets) {
    EXPECT_EQ(std::get<4>(tuple), kProtoTcp);
    EXPECT_EQ(n, 6u + rounds * 257);
  }
  for (const Frame& f : frames) ASSERT_EQ(f.bytes.size(), 64u);
  // After the 96 handshake packets: per round, each connection in turn sends
  // 256 data segments, then gets one ACK.
  size_t i = 96;
  for (uint32_t round = 0; round < rounds; ++round) {
    std::set<Tuple> senders;
    for (int conn = 0; conn < 32; ++conn) {
      const Tuple tuple = s.order[i];
      senders.insert(tuple);
      for (int k = 0; k < 256; ++k, ++i) {
        ASSERT_EQ(s.order[i], tuple) << "burst broken at frame " << i;
        ASSERT_FALSE(s.from_server[i]);
        Parsed p(frames[i].bytes);
        ASSERT_GT(p.payload_len(), 0u);
      }
      ASSERT_EQ(s.order[i], tuple);
      ASSERT_TRUE(s.from_server[i]) << "the receiver's ACK";
      ++i;
    }
    EXPECT_EQ(senders.size(), 32u) << "every connection bursts once per round";
  }
  // Default rounds: ~100k packets at scale 1, at least one round.
  TraceSpec spec{TraceKind::kT3, 1.0, 1, 0};
  auto stats = generate_trace(spec, [](uint64_t, std::span<const uint8_t>) {});
  ASSERT_TRUE(stats);
  EXPECT_NEAR(static_cast<double>(stats->packets), 100'000, 5'000);
  spec.scale = 0.001;
  stats = generate_trace(spec, [](uint64_t, std::span<const uint8_t>) {});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->packets, 32u * 6 + 32 * 257);
}

TEST(TracegenTest, PcapRoundTrip) {
  TraceSpec spec{TraceKind::kT1, 0.002, 3, 0};
  char path[] = "/tmp/sf_tracegen_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto stats = write_trace_pcap(spec, path);
  ASSERT_TRUE(stats) << stats.status().message();
  auto frames = generate_trace_frames(spec, 5);
  ASSERT_TRUE(frames);
  auto reader = PcapReader::open(path, 5);
  ASSERT_TRUE(reader) << reader.status().message();
  Frame f;
  size_t n = 0;
  while ((*reader)->next(f)) {
    ASSERT_LT(n, frames->size());
    EXPECT_EQ(f.bytes, (*frames)[n].bytes) << "frame " << n;
    EXPECT_EQ(f.timestamp_ns, (*frames)[n].timestamp_ns) << "frame " << n;
    EXPECT_EQ(f.port, 5u);
    ++n;
  }
  EXPECT_EQ((*reader)->error(), "");
  EXPECT_EQ(n, frames->size());
  EXPECT_EQ(stats->packets, n);
  std::remove(path);

  EXPECT_FALSE(write_trace_pcap(spec, "/nonexistent-dir/x.pcap"));
}

TEST(TracegenTest, BadSpecsAreRefused) {
  EXPECT_FALSE(parse_trace_kind("T4"));
  ASSERT_TRUE(parse_trace_kind("t2"));
  EXPECT_EQ(*parse_trace_kind("t2"), TraceKind::kT2);
  auto sink = [](uint64_t, std::span<const uint8_t>) {};
  EXPECT_FALSE(generate_trace(TraceSpec{TraceKind::kT1, 0.0, 1, 0}, sink));
  EXPECT_FALSE(generate_trace(TraceSpec{TraceKind::kT1, -1.0, 1, 0}, sink));
  EXPECT_FALSE(generate_trace(TraceSpec{TraceKind::kT3, 1.0, 1, 10'000'000}, sink));
}

// ---- replay port rewrite ------------------------------------------------------------------

TEST(TracegenReplayTest, PortMapIsABijectionAndIdentityForReplayZero) {
  for (uint32_t replay : {1u, 2u, 0xdeadbeefu}) {
    std::vector<bool> hit(65536);
    size_t fixed = 0;
    for (uint32_t p = 1; p <= 65535; ++p) {
      const uint16_t q = replay_port(static_cast<uint16_t>(p), replay);
      ASSERT_NE(q, 0) << "port " << p << " replay " << replay;
      ASSERT_FALSE(hit[q]) << "two ports map to " << q;
      hit[q] = true;
      fixed += q == p;
    }
    EXPECT_LT(fixed, 100u) << "replay " << replay << " leaves too many ports alone";
    EXPECT_EQ(replay_port(0, replay), 0);
  }
  for (uint32_t p = 0; p <= 65535; p += 97) EXPECT_EQ(replay_port(static_cast<uint16_t>(p), 0), p);
  size_t same = 0;
  for (uint32_t p = 1; p <= 65535; ++p)
    same += replay_port(static_cast<uint16_t>(p), 1) == replay_port(static_cast<uint16_t>(p), 2);
  EXPECT_LT(same, 100u) << "replays 1 and 2 should differ";
}

TEST(TracegenReplayTest, RewritingT1KeepsConversationsAndChecksums) {
  // A smaller T1 than the shared one: this test parses every frame 3 times
  // per replay.
  auto generated = generate_trace_frames(TraceSpec{TraceKind::kT1, 0.004, 9, 0});
  ASSERT_TRUE(generated);
  const std::vector<Frame>& frames = *generated;
  const ConversationSummary original = summarize(frames);
  std::map<uint32_t, ConversationSummary> replays;
  for (uint32_t replay : {0u, 1u, 2u}) {
    std::vector<Frame> copy = frames;
    for (Frame& f : copy) rewrite_l4_ports(f.bytes, replay);
    for (size_t i = 0; i < copy.size(); ++i) {
      Parsed before(frames[i].bytes), after(copy[i].bytes);
      ASSERT_TRUE(checksums_valid(after)) << "frame " << i << " replay " << replay;
      if (replay == 0 || before.proto() == kProtoIcmp) {
        ASSERT_EQ(copy[i].bytes, frames[i].bytes) << "frame " << i;
        continue;
      }
      ASSERT_EQ(ntohs(after.pkt.key.tp_src), replay_port(ntohs(before.pkt.key.tp_src), replay));
      ASSERT_EQ(ntohs(after.pkt.key.tp_dst), replay_port(ntohs(before.pkt.key.tp_dst), replay));
      // Only the ports and the checksum changed.
      size_t differing = 0;
      for (size_t b = 0; b < copy[i].bytes.size(); ++b) differing += copy[i].bytes[b] != frames[i].bytes[b];
      ASSERT_LE(differing, 6u);
    }
    replays[replay] = summarize(copy);
    // Both directions stay one conversation: same number of conversations,
    // same packet counts and directions, in the same order.
    const ConversationSummary& s = replays[replay];
    EXPECT_EQ(s.packets.size(), original.packets.size());
    EXPECT_EQ(s.from_server, original.from_server);
    expect_tcp_valid(copy);
  }
  // Each replay makes new connections.
  size_t shared = 0;
  for (const auto& [tuple, n] : replays[1].packets)
    if (std::get<4>(tuple) != kProtoIcmp) shared += replays[2].packets.count(tuple) + original.packets.count(tuple);
  EXPECT_LT(shared, 20u);
}

std::vector<uint8_t> tcp6_vlan_frame() {
  return PacketBuilder()
      .vlan(10)
      .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
      .ipv6_hop_by_hop()
      .ipv6_dest_options(16)
      .tcp(40000, 443, kTcpAck, 1, 2)
      .payload("hello, world")
      .build();
}

::testing::AssertionResult ipv6_l4_checksum_ok(const std::vector<uint8_t>& frame) {
  Packet pkt;
  std::vector<uint8_t> bytes = frame;
  pkt.data = bytes.data();
  pkt.len = static_cast<uint32_t>(bytes.size());
  pkt.key = zero_key();
  if (parse_packet(pkt) != kParseOk || !pkt.has_l4()) return ::testing::AssertionFailure() << "parse";
  const uint8_t* ip = bytes.data() + pkt.l3_ofs;
  const size_t l4_len = pkt.l3_ofs + 40 + be16(ip + 4) - pkt.l4_ofs;
  uint32_t sum = add_words(0, bytes.data() + pkt.l4_ofs, l4_len);
  sum = add_words(sum, ip + 8, 32) + pkt.key.nw_proto + static_cast<uint32_t>(l4_len);
  if (fold(sum) != 0xffff) return ::testing::AssertionFailure() << "bad checksum";
  return ::testing::AssertionSuccess();
}

TEST(TracegenReplayTest, Ipv6VlanAndUdpZeroChecksum) {
  std::vector<uint8_t> frame = tcp6_vlan_frame();
  const std::vector<uint8_t> original = frame;
  rewrite_l4_ports(frame, 3);
  ASSERT_TRUE(ipv6_l4_checksum_ok(frame));
  Parsed p(frame);
  EXPECT_EQ(ntohs(p.pkt.key.tp_src), replay_port(40000, 3));
  EXPECT_EQ(ntohs(p.pkt.key.tp_dst), replay_port(443, 3));

  std::vector<uint8_t> udp = PacketBuilder()
                                 .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("172.16.0.1"))
                                 .udp(5000, 53)
                                 .udp_no_checksum()
                                 .payload("q")
                                 .build();
  rewrite_l4_ports(udp, 3);
  Parsed u(udp);
  EXPECT_EQ(ntohs(u.pkt.key.tp_src), replay_port(5000, 3));
  EXPECT_EQ(be16(u.l4() + 6), 0) << "a zero UDP checksum stays zero";

  std::vector<uint8_t> udp6 = PacketBuilder()
                                  .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
                                  .udp(5000, 53)
                                  .payload("query")
                                  .build();
  rewrite_l4_ports(udp6, 9);
  EXPECT_TRUE(ipv6_l4_checksum_ok(udp6));
}

TEST(TracegenReplayTest, LeavesFragmentsIcmpAndTruncatedFramesAlone) {
  const std::vector<uint8_t> later_fragment = PacketBuilder()
                                                  .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
                                                  .ipv4_fragment(10, false)
                                                  .ip_proto(kProtoTcp)
                                                  .payload("fragment data, not a TCP header")
                                                  .build();
  const std::vector<uint8_t> icmp = PacketBuilder()
                                        .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
                                        .icmp(8, 0, 0x12340001)
                                        .build();
  for (const std::vector<uint8_t>& original : {later_fragment, icmp}) {
    std::vector<uint8_t> frame = original;
    rewrite_l4_ports(frame, 5);
    EXPECT_EQ(frame, original);
  }
  // Every truncation of a TCP/IPv6 frame: no access outside the span (ASan
  // checks, each prefix in its own exact-size buffer) and no change unless
  // the ports and the checksum are all inside.
  const std::vector<uint8_t> full = tcp6_vlan_frame();
  const size_t checksum_end = 18 + 40 + 8 + 16 + 18;  // eth+vlan, ipv6, ext headers, tcp to checksum
  for (size_t len = 0; len <= full.size(); ++len) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + len);
    rewrite_l4_ports(prefix, 5);
    const bool changed = !std::equal(prefix.begin(), prefix.end(), full.begin());
    EXPECT_EQ(changed, len >= checksum_end) << "length " << len;
  }
}

TEST(TracegenReplayTest, PacketVariantKeepsTheKeyInSync) {
  const std::vector<Frame>& frames = trace(TraceKind::kT1);
  for (size_t i = 0; i < 500; ++i) {
    std::vector<uint8_t> raw = frames[i].bytes;
    rewrite_l4_ports(raw, 11);
    Parsed p(frames[i].bytes);
    Packet& pkt = p.pkt;
    rewrite_l4_ports(pkt, 11);
    ASSERT_EQ(p.bytes, raw) << "frame " << i;
    Parsed again(raw);
    again.pkt.key.in_port = pkt.key.in_port;
    ASSERT_TRUE(key_equal(again.pkt.key, pkt.key)) << "frame " << i;
  }
}

}  // namespace
}  // namespace softflow

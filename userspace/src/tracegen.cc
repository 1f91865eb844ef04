// The trace generator (see tracegen.h for what the traces are).
//
// How a T1/T2 trace is made:
//   plan_t1()      draws hosts, conversation lengths (fitted to the target
//                  statistics), 5-tuples and timing for every conversation;
//   merge loop     a min-heap over (next packet time, conversation) asks one
//                  conversation at a time for its next packet (next_event),
//                  renders it (render_frame) and hands it to the sink.
// Every conversation owns its PRNG, so packets are produced lazily and the
// trace is the same however it is consumed.  T2 replays T1's plan and random
// draws with payloads cut so frames are 64 bytes: TCP sequence numbers
// advance by what is actually carried, so T2 is valid TCP too.
#include "softflow/tracegen.h"

#include <arpa/inet.h>
#include <pcap/pcap.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <queue>
#include <unordered_set>

#include <fmt/format.h>

#include "softflow/packet_builder.h"
#include "softflow/packet_ops.h"
#include "softflow/protocols.h"

namespace softflow {
namespace {

// ---- byte order -------------------------------------------------------------

inline uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline void store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store32(uint8_t* p, uint32_t v) {
  store16(p, static_cast<uint16_t>(v >> 16));
  store16(p + 2, static_cast<uint16_t>(v));
}

// ---- randomness ---------------------------------------------------------------
// Our own generator and distributions: the standard library's distributions
// differ between implementations, and a seed must give the same trace
// everywhere.

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Seed of an independent stream: (trace seed, stream id).
inline uint64_t stream_seed(uint64_t seed, uint64_t stream) {
  return mix64(seed ^ mix64(stream + 0x9e3779b97f4a7c15ULL));
}

// SplitMix64: small state (one word per conversation), good enough here.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t below(uint64_t n) {  // [0, n), n > 0
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
  uint32_t range(uint32_t lo, uint32_t hi) {  // [lo, hi]
    return lo + static_cast<uint32_t>(below(uint64_t{hi} - lo + 1));
  }
  bool chance(double p) { return uniform() < p; }
  double normal() {  // Box-Muller, one value per call
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  // exp(N(ln median, sigma^2)).
  double lognormal(double median, double sigma) { return median * std::exp(sigma * normal()); }

 private:
  uint64_t state_;
};

// ---- constants of the traces ----------------------------------------------------

constexpr uint64_t kStartNs = 1'000'000'000;  // first packet at t = 1 s (0 often means "unset")
constexpr size_t kEthLen = 14, kIpv4Len = 20, kTcpLen = 20, kUdpLen = 8, kIcmpLen = 8;
constexpr size_t kSynOptionsLen = 8;  // MSS (4), NOP (1), window scale (3)
constexpr uint16_t kMss = 1460;       // 1514-byte frames; no TCP timestamps
constexpr uint16_t kMaxUdpPayload = 1472;
constexpr uint8_t kWindowScale = 7;
constexpr uint16_t kWindow = 65535;  // << 7 = 8 MB once scaled: covers any data in flight
constexpr size_t kEthMinFrame = 60;  // without FCS
constexpr size_t kT2Frame = 64;
constexpr uint16_t kIcmpEchoPayload = 56;  // ping's default
constexpr uint16_t kEphemeralLo = 32768, kEphemeralHi = 60999;

// Full-scale T1 (paper §7.1).
constexpr double kT1Tcp = 100'000, kT1Udp = 75'000, kT1Icmp = 1'000;
constexpr double kT1Packets = 4.6e6, kT1DurationS = 44.0;
constexpr double kT1Clients = 8000, kT1Servers = 3000;
constexpr double kTcpMeanLength = 42, kTcpMaxLength = 99'000;
constexpr double kIcmpMeanLength = 6;  // 1..5 echo pairs
constexpr double kRstShare = 0.03;
constexpr double kUploadShare = 0.15;

// T3 (paper §7.1).
constexpr uint32_t kT3Connections = 32, kT3Servers = 8, kT3Burst = 256;
constexpr uint32_t kT3RoundsAtScale1 = 12;  // 12 * 32 * 257 + 192 = 98,880 packets
constexpr uint64_t kT3GapNs = 100;          // ~64 B at line rate of 10 Gb/s

// ---- payload bytes ------------------------------------------------------------------
// Every payload is a prefix of one fixed pseudo-random pattern, so its
// checksum contribution is a table lookup instead of a pass over 1460 bytes.

struct PayloadPattern {
  static constexpr size_t kLen = 1500;
  uint8_t bytes[kLen];
  uint32_t prefix_sum[kLen + 1];  // checksum_partial(bytes, n, 0)

  PayloadPattern() {
    for (size_t i = 0; i < kLen; ++i) bytes[i] = static_cast<uint8_t>(mix64(i + 1) >> 56);
    for (size_t n = 0; n <= kLen; ++n) prefix_sum[n] = checksum_partial(bytes, n, 0);
  }
};

const PayloadPattern& payload_pattern() {
  static const PayloadPattern pattern;
  return pattern;
}

// ---- hosts ----------------------------------------------------------------------------

struct HostPlan {
  std::vector<uint32_t> clients;  // 10.0.0.0/8, host order
  std::vector<uint32_t> servers;  // 172.16.0.0/12
  std::vector<double> server_cdf;  // Zipf(1) popularity in server index order
  std::vector<uint16_t> next_port;  // per client: next ephemeral port

  uint32_t pick_server(Rng& rng) const {
    const double u = rng.uniform() * server_cdf.back();
    const auto it = std::upper_bound(server_cdf.begin(), server_cdf.end(), u);
    return static_cast<uint32_t>(std::min<size_t>(it - server_cdf.begin(), servers.size() - 1));
  }
  // Ports are handed out in sequence per client, so a client never reuses a
  // port within a trace (unless it has > 28k conversations).
  uint16_t allocate_port(uint32_t client) {
    const uint16_t port = next_port[client];
    next_port[client] = port == kEphemeralHi ? kEphemeralLo : static_cast<uint16_t>(port + 1);
    return port;
  }
};

// Distinct random addresses in prefix/len, avoiding .0 and .255 hosts.
std::vector<uint32_t> random_addresses(Rng& rng, size_t n, uint32_t prefix, int len) {
  std::vector<uint32_t> out;
  std::unordered_set<uint32_t> seen;
  const uint32_t host_mask = (1u << (32 - len)) - 1;
  while (out.size() < n) {
    const uint32_t addr = prefix | (static_cast<uint32_t>(rng.next()) & host_mask);
    const uint8_t last = addr & 0xff;
    if (last == 0 || last == 255 || !seen.insert(addr).second) continue;
    out.push_back(addr);
  }
  return out;
}

HostPlan make_hosts(Rng& rng, size_t n_clients, size_t n_servers) {
  HostPlan hosts;
  hosts.clients = random_addresses(rng, n_clients, 0x0a000000, 8);
  hosts.servers = random_addresses(rng, n_servers, 0xac100000, 12);
  double total = 0;
  for (size_t rank = 1; rank <= n_servers; ++rank) {
    total += 1.0 / static_cast<double>(rank);
    hosts.server_cdf.push_back(total);
  }
  for (size_t i = 0; i < n_clients; ++i)
    hosts.next_port.push_back(static_cast<uint16_t>(rng.range(kEphemeralLo, kEphemeralHi)));
  return hosts;
}

// ---- frames ---------------------------------------------------------------------------

struct Endpoints {
  uint32_t client_ip = 0, server_ip = 0;  // host order
  uint16_t client_port = 0, server_port = 0;  // ICMP: client_port is the echo id
  uint8_t proto = kProtoTcp;
};

// One packet of a conversation, before rendering.
struct PacketEvent {
  uint8_t from_server = 0;
  uint16_t tcp_flags = 0;
  uint32_t seq = 0, ack = 0;
  bool syn_options = false;
  uint8_t icmp_type = 0;
  uint16_t icmp_seq = 0;
  uint16_t payload = 0;  // bytes, already cut to the trace's limit
};

// Largest payload each protocol may carry in a trace.
struct PayloadLimit {
  uint16_t tcp = kMss, udp = kMaxUdpPayload, icmp = kIcmpEchoPayload;
  size_t min_frame = kEthMinFrame;
};
constexpr PayloadLimit kT1Limit{};
constexpr PayloadLimit kT64Limit{kT2Frame - kEthLen - kIpv4Len - kTcpLen,
                                 kT2Frame - kEthLen - kIpv4Len - kUdpLen,
                                 kT2Frame - kEthLen - kIpv4Len - kIcmpLen, kT2Frame};

void write_mac(uint8_t* p, uint32_t ip) {
  p[0] = 0x02;
  p[1] = 0x00;
  store32(p + 2, ip);
}

// Writes the frame into 'out' (>= 1514 bytes); returns its length.
size_t render_frame(const Endpoints& e, const PacketEvent& ev, uint16_t ip_id, size_t min_frame,
                    uint8_t* out) {
  const PayloadPattern& pattern = payload_pattern();
  const uint32_t src = ev.from_server ? e.server_ip : e.client_ip;
  const uint32_t dst = ev.from_server ? e.client_ip : e.server_ip;

  std::memcpy(out, kTraceGatewayMac, 6);
  write_mac(out + 6, src);
  store16(out + 12, kEthTypeIpv4);

  uint8_t* l4 = out + kEthLen + kIpv4Len;
  size_t l4_header = 0;
  uint32_t sum = 0;  // L4 checksum accumulator
  if (e.proto == kProtoTcp) {
    const uint16_t sport = ev.from_server ? e.server_port : e.client_port;
    const uint16_t dport = ev.from_server ? e.client_port : e.server_port;
    l4_header = kTcpLen + (ev.syn_options ? kSynOptionsLen : 0);
    store16(l4, sport);
    store16(l4 + 2, dport);
    store32(l4 + 4, ev.seq);
    store32(l4 + 8, ev.ack);
    store16(l4 + 12, static_cast<uint16_t>((l4_header / 4) << 12 | ev.tcp_flags));
    store16(l4 + 14, kWindow);
    store16(l4 + 16, 0);
    store16(l4 + 18, 0);
    if (ev.syn_options) {
      const uint8_t options[kSynOptionsLen] = {2, 4, kMss >> 8, kMss & 0xff, 1, 3, 3, kWindowScale};
      std::memcpy(l4 + kTcpLen, options, sizeof options);
    }
  } else if (e.proto == kProtoUdp) {
    l4_header = kUdpLen;
    store16(l4, ev.from_server ? e.server_port : e.client_port);
    store16(l4 + 2, ev.from_server ? e.client_port : e.server_port);
    store16(l4 + 4, static_cast<uint16_t>(kUdpLen + ev.payload));
    store16(l4 + 6, 0);
  } else {  // ICMP echo
    l4_header = kIcmpLen;
    l4[0] = ev.icmp_type;
    l4[1] = 0;
    store16(l4 + 2, 0);
    store16(l4 + 4, e.client_port);
    store16(l4 + 6, ev.icmp_seq);
  }
  const size_t l4_len = l4_header + ev.payload;
  std::memcpy(l4 + l4_header, pattern.bytes, ev.payload);

  uint8_t* ip = out + kEthLen;
  ip[0] = 0x45;
  ip[1] = 0;
  store16(ip + 2, static_cast<uint16_t>(kIpv4Len + l4_len));
  store16(ip + 4, ip_id);
  store16(ip + 6, 0x4000);  // DF
  ip[8] = 64;
  ip[9] = e.proto;
  store16(ip + 10, 0);
  store32(ip + 12, src);
  store32(ip + 16, dst);
  store16(ip + 10, checksum_fold(checksum_partial(ip, kIpv4Len, 0)));

  // Headers have even lengths, so the payload's words line up with the
  // pattern's precomputed sum.
  sum = checksum_partial(l4, l4_header, 0) + pattern.prefix_sum[ev.payload];
  if (e.proto == kProtoIcmp) {
    store16(l4 + 2, checksum_fold(sum));
  } else {
    sum += checksum_partial(ip + 12, 8, 0) + e.proto + static_cast<uint32_t>(l4_len);
    const uint16_t checksum = checksum_fold(sum);
    if (e.proto == kProtoTcp) {
      store16(l4 + 16, checksum);
    } else {
      store16(l4 + 6, checksum == 0 ? 0xffff : checksum);  // 0 would mean "none"
    }
  }

  size_t len = kEthLen + kIpv4Len + l4_len;
  if (len < min_frame) {
    std::memset(out + len, 0, min_frame - len);  // Ethernet padding
    len = min_frame;
  }
  return len;
}

// ---- TCP ------------------------------------------------------------------------------

// Sequence numbers of one connection: side 0 is the client, 1 the server.
// Every segment acknowledges all the peer has sent (nothing is lost).
class TcpConn {
 public:
  TcpConn(uint32_t isn_client, uint32_t isn_server) : seq_{isn_client, isn_server} {}

  PacketEvent segment(int side, uint16_t flags, uint16_t payload) {
    PacketEvent ev;
    ev.from_server = static_cast<uint8_t>(side);
    ev.tcp_flags = flags;
    ev.seq = seq_[side];
    ev.ack = (flags & kTcpAck) ? seq_[1 - side] : 0;
    ev.payload = payload;
    ev.syn_options = (flags & kTcpSyn) != 0;
    seq_[side] += payload + ((flags & kTcpSyn) ? 1 : 0) + ((flags & kTcpFin) ? 1 : 0);
    return ev;
  }
  PacketEvent syn() { return segment(0, kTcpSyn, 0); }
  PacketEvent syn_ack() { return segment(1, kTcpSyn | kTcpAck, 0); }

 private:
  uint32_t seq_[2];
};

enum class TcpPhase : uint8_t { kSyn, kSynAck, kAck, kMiddle, kFin1, kFin2, kFin3, kRst, kDone };

// A T1 TCP conversation after its handshake: an exchange of messages, the
// client's first (a request), then alternating.  The bulk side (the server,
// or the client for an upload) sends multi-segment messages, full-size but
// the last, and its peer ACKs every 'ack_every' segments (stretch ACKs, as
// seen behind GRO/LRO); the other side sends one small segment per message.
struct TcpScript {
  TcpConn conn{0, 0};
  uint32_t middle_left = 0;  // packets between the handshake and the close
  uint32_t seg_left = 0;     // segments left in the current message
  uint16_t last_payload = 0;
  TcpPhase phase = TcpPhase::kSyn;
  uint8_t sender = 1;  // side of the current message
  uint8_t since_ack = 0;
  uint8_t ack_every = 2;
  uint8_t closer = 0;  // sends the first FIN, or the RST
  bool rst = false;
  bool upload = false;
};

// ---- conversations ----------------------------------------------------------------------

enum class UdpKind : uint8_t { kDns, kNtp, kStream };

struct Conversation {
  Endpoints ends;
  uint32_t client = 0, server = 0;  // host indices
  uint32_t length = 0;              // packets, both directions
  uint32_t emitted = 0;
  uint64_t start_ns = 0, gap_ns = 1;
  uint64_t next_ns = 0;
  uint16_t ip_id[2] = {0, 0};
  Rng rng;
  UdpKind udp_kind = UdpKind::kDns;
  TcpScript tcp;
};

TcpPhase close_phase(const TcpScript& s) { return s.rst ? TcpPhase::kRst : TcpPhase::kFin1; }

PacketEvent tcp_middle_packet(TcpScript& s, Rng& rng, uint16_t cap) {
  const uint8_t bulk_side = s.upload ? 0 : 1;
  if (s.seg_left == 0) {
    s.sender = static_cast<uint8_t>(1 - s.sender);
    s.since_ack = 0;
    if (s.sender == bulk_side) {
      s.seg_left = 1 + static_cast<uint32_t>(std::lround(std::min(rng.lognormal(4.0, 1.5), 1e6)));
      s.last_payload = static_cast<uint16_t>(rng.range(1, kMss));
    } else {
      s.seg_left = 1;
      s.last_payload = static_cast<uint16_t>(rng.range(40, 700));
    }
  }
  if (s.since_ack >= s.ack_every) {
    s.since_ack = 0;
    return s.conn.segment(1 - s.sender, kTcpAck, 0);
  }
  const bool last = s.seg_left == 1;
  const uint16_t payload = std::min(last ? s.last_payload : kMss, cap);
  --s.seg_left;
  ++s.since_ack;
  return s.conn.segment(s.sender, kTcpAck | (last ? kTcpPsh : 0), payload);
}

PacketEvent tcp_next(TcpScript& s, Rng& rng, uint16_t cap) {
  switch (s.phase) {
    case TcpPhase::kSyn:
      s.phase = TcpPhase::kSynAck;
      return s.conn.syn();
    case TcpPhase::kSynAck:
      s.phase = TcpPhase::kAck;
      return s.conn.syn_ack();
    case TcpPhase::kAck:
      s.phase = s.middle_left ? TcpPhase::kMiddle : close_phase(s);
      return s.conn.segment(0, kTcpAck, 0);
    case TcpPhase::kMiddle: {
      PacketEvent ev = tcp_middle_packet(s, rng, cap);
      if (--s.middle_left == 0) s.phase = close_phase(s);
      return ev;
    }
    case TcpPhase::kFin1:
      s.phase = TcpPhase::kFin2;
      return s.conn.segment(s.closer, kTcpFin | kTcpAck, 0);
    case TcpPhase::kFin2:
      s.phase = TcpPhase::kFin3;
      return s.conn.segment(1 - s.closer, kTcpFin | kTcpAck, 0);
    case TcpPhase::kFin3:
      s.phase = TcpPhase::kDone;
      return s.conn.segment(s.closer, kTcpAck, 0);
    case TcpPhase::kRst:
      s.phase = TcpPhase::kDone;
      return s.conn.segment(s.closer, kTcpRst | kTcpAck, 0);
    case TcpPhase::kDone:
      break;
  }
  return {};  // not reached: a conversation stops after 'length' packets
}

// Random sizes are drawn whatever the limit, so T1 and T2 make the same draws.
PacketEvent udp_next(Conversation& c, const PayloadLimit& limit) {
  Rng& rng = c.rng;
  PacketEvent ev;
  const uint32_t k = c.emitted;
  uint32_t payload = 0;
  switch (c.udp_kind) {
    case UdpKind::kDns:  // query, answer
      ev.from_server = k == 1;
      payload = k == 0 ? rng.range(28, 64) : rng.range(60, 480);
      break;
    case UdpKind::kNtp:
      ev.from_server = k == 1;
      payload = 48;
      break;
    case UdpKind::kStream: {  // QUIC/RTP-like: mostly server to client
      ev.from_server = k > 0 && rng.chance(0.75);
      const bool large = rng.chance(0.85);
      const uint32_t small = rng.range(30, 200);
      const uint32_t big = rng.range(1150, 1350);
      payload = (k == 0) ? 1200 : (ev.from_server && large) ? big : small;
      break;
    }
  }
  ev.payload = static_cast<uint16_t>(std::min<uint32_t>(payload, limit.udp));
  return ev;
}

PacketEvent icmp_next(const Conversation& c, const PayloadLimit& limit) {
  PacketEvent ev;
  ev.from_server = c.emitted % 2;
  ev.icmp_type = ev.from_server ? 0 : 8;  // echo reply : echo request
  ev.icmp_seq = static_cast<uint16_t>(c.emitted / 2 + 1);
  ev.payload = std::min(kIcmpEchoPayload, limit.icmp);
  return ev;
}

PacketEvent next_event(Conversation& c, const PayloadLimit& limit) {
  switch (c.ends.proto) {
    case kProtoTcp:
      return tcp_next(c.tcp, c.rng, limit.tcp);
    case kProtoUdp:
      return udp_next(c, limit);
    default:
      return icmp_next(c, limit);
  }
}

// Packet k of a conversation is sent at start + k * gap + jitter, jitter in
// [0, gap / 2): strictly increasing, within the conversation's span.
uint64_t packet_time(Conversation& c, uint32_t k) {
  return c.start_ns + k * c.gap_ns + c.rng.below(std::max<uint64_t>(c.gap_ns / 2, 1));
}

// ---- conversation lengths -------------------------------------------------------------

// Adjusts sampled lengths to the target mean while keeping the median: the
// excess of every value above the median is scaled by one factor (a few
// rounds, since values clip at max_len).  With pin_max the largest sample
// becomes exactly max_len first.  This keeps the sampled shape but lands the
// mean (which a heavy tail makes noisy, above all at small scales) on target.
void fit_lengths(std::vector<uint32_t>& lengths, double target_mean, uint32_t max_len,
                 bool pin_max) {
  if (lengths.empty()) return;
  for (uint32_t& len : lengths) len = std::min(len, max_len);
  size_t pinned = lengths.size();
  if (pin_max) {
    pinned = static_cast<size_t>(std::max_element(lengths.begin(), lengths.end()) - lengths.begin());
    lengths[pinned] = max_len;
  }
  std::vector<uint32_t> sorted = lengths;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  const uint32_t median = sorted[sorted.size() / 2];
  const double target_sum = target_mean * static_cast<double>(lengths.size());
  for (int round = 0; round < 6; ++round) {
    double fixed = 0, excess = 0, n_above = 0;
    for (size_t i = 0; i < lengths.size(); ++i) {
      if (i == pinned || lengths[i] <= median) {
        fixed += lengths[i];
      } else {
        excess += lengths[i] - median;
        n_above += 1;
      }
    }
    if (excess <= 0) return;
    const double want = target_sum - fixed - n_above * median;
    if (std::abs(want - excess) < 0.5) return;
    const double factor = std::clamp(want / excess, 0.01, 100.0);
    for (size_t i = 0; i < lengths.size(); ++i) {
      if (i == pinned || lengths[i] <= median) continue;
      const double scaled = median + (lengths[i] - median) * factor;
      lengths[i] = static_cast<uint32_t>(std::min<double>(std::lround(scaled), max_len));
    }
  }
}

// TCP: 6 packets at least (handshake and FIN close), median 10, a lognormal
// (sigma 2) heavy tail; fitted to mean 42 with the max pinned.
std::vector<uint32_t> tcp_lengths(Rng& rng, size_t n, double scale) {
  std::vector<uint32_t> lengths(n);
  for (uint32_t& len : lengths)
    len = 6 + static_cast<uint32_t>(std::lround(std::min(rng.lognormal(4.0, 2.0), 1e7)));
  const auto max_len = static_cast<uint32_t>(std::max(300.0, std::round(kTcpMaxLength * scale)));
  fit_lengths(lengths, kTcpMeanLength, max_len, /*pin_max=*/true);
  return lengths;
}

// UDP: 60 % request/response pairs, the rest streams; the mean is what
// brings the whole trace to 4.6 M packets at scale 1 (~5.25).
std::vector<uint32_t> udp_lengths(Rng& rng, size_t n, double scale) {
  std::vector<uint32_t> lengths(n);
  for (uint32_t& len : lengths) {
    const bool pair = rng.chance(0.6);
    const double stream = rng.lognormal(4.0, 1.0);
    len = pair ? 2 : 3 + static_cast<uint32_t>(std::lround(std::min(stream, 1e6)));
  }
  const double mean =
      (kT1Packets - kT1Tcp * kTcpMeanLength - kT1Icmp * kIcmpMeanLength) / kT1Udp;
  const auto max_len = static_cast<uint32_t>(std::max(200.0, std::round(20'000 * scale)));
  fit_lengths(lengths, mean, max_len, /*pin_max=*/false);
  return lengths;
}

LengthStats length_stats(std::vector<uint32_t> lengths) {
  LengthStats s;
  s.count = lengths.size();
  if (lengths.empty()) return s;
  std::nth_element(lengths.begin(), lengths.begin() + lengths.size() / 2, lengths.end());
  s.median = lengths[lengths.size() / 2];
  s.max = *std::max_element(lengths.begin(), lengths.end());
  s.mean = std::accumulate(lengths.begin(), lengths.end(), 0.0) / static_cast<double>(s.count);
  return s;
}

// ---- T1 plan ------------------------------------------------------------------------------

uint16_t weighted_port(Rng& rng, std::span<const std::pair<uint16_t, double>> table) {
  double u = rng.uniform();
  for (const auto& [port, weight] : table) {
    if (u < weight) return port;
    u -= weight;
  }
  return table.back().first;
}

constexpr std::pair<uint16_t, double> kTcpServerPorts[] = {
    {443, 0.55}, {80, 0.20}, {8080, 0.05}, {3306, 0.04}, {22, 0.03},
    {5432, 0.03}, {6379, 0.03}, {9092, 0.03}, {25, 0.02}, {993, 0.02}};
constexpr std::pair<uint16_t, double> kUdpStreamPorts[] = {
    {443, 0.60}, {3478, 0.15}, {5004, 0.15}, {1194, 0.10}};

struct T1Plan {
  std::vector<Conversation> conversations;
  TraceStats stats;  // the planned part: conversations, lengths, distinct IPs
};

size_t scaled_count(double full, double scale, size_t at_least) {
  return std::max(at_least, static_cast<size_t>(std::llround(full * scale)));
}

// Start and inter-packet gap: gaps log-uniform in [20 us, 20 ms], squeezed
// when the conversation would not fit the trace; start uniform so that the
// whole conversation lies inside [0, duration).
void plan_timing(Conversation& c, Rng& rng, uint64_t duration_ns) {
  double gap = std::exp(std::log(20e3) + rng.uniform() * std::log(1000.0));
  const double usable = 0.95 * static_cast<double>(duration_ns);
  if (c.length > 1 && gap * (c.length - 1) > usable) gap = usable / (c.length - 1);
  c.gap_ns = std::max<uint64_t>(2, static_cast<uint64_t>(gap));
  const uint64_t span = c.gap_ns * (c.length - 1) + c.gap_ns / 2;
  c.start_ns = kStartNs + (span < duration_ns ? rng.below(duration_ns - span) : 0);
}

T1Plan plan_t1(const TraceSpec& spec) {
  const double scale = spec.scale;
  Rng host_rng(stream_seed(spec.seed, 1));
  Rng length_rng(stream_seed(spec.seed, 2));
  Rng plan_rng(stream_seed(spec.seed, 3));
  HostPlan hosts = make_hosts(host_rng, scaled_count(kT1Clients, scale, 4),
                              scaled_count(kT1Servers, scale, 2));
  const std::vector<uint32_t> tcp = tcp_lengths(length_rng, scaled_count(kT1Tcp, scale, 1), scale);
  const std::vector<uint32_t> udp = udp_lengths(length_rng, scaled_count(kT1Udp, scale, 1), scale);
  std::vector<uint32_t> icmp(scaled_count(kT1Icmp, scale, 1));
  for (uint32_t& len : icmp) len = 2 * length_rng.range(1, 5);

  const auto duration_ns = static_cast<uint64_t>(kT1DurationS * scale * 1e9);
  T1Plan plan;
  plan.conversations.reserve(tcp.size() + udp.size() + icmp.size());
  std::vector<bool> client_used(hosts.clients.size()), server_used(hosts.servers.size());

  auto add = [&](uint8_t proto, uint32_t length) -> Conversation& {
    Conversation& c = plan.conversations.emplace_back();
    c.rng = Rng(stream_seed(spec.seed, 1000 + plan.conversations.size()));
    c.length = length;
    c.client = static_cast<uint32_t>(plan_rng.below(hosts.clients.size()));
    c.server = hosts.pick_server(plan_rng);
    client_used[c.client] = server_used[c.server] = true;
    c.ends.proto = proto;
    c.ends.client_ip = hosts.clients[c.client];
    c.ends.server_ip = hosts.servers[c.server];
    c.ends.client_port = hosts.allocate_port(c.client);
    c.ip_id[0] = static_cast<uint16_t>(plan_rng.next());
    c.ip_id[1] = static_cast<uint16_t>(plan_rng.next());
    plan_timing(c, plan_rng, duration_ns);
    return c;
  };
  for (uint32_t length : tcp) {
    Conversation& c = add(kProtoTcp, length);
    c.ends.server_port = weighted_port(plan_rng, kTcpServerPorts);
    TcpScript& s = c.tcp;
    s.conn = TcpConn(static_cast<uint32_t>(plan_rng.next()), static_cast<uint32_t>(plan_rng.next()));
    s.rst = plan_rng.chance(kRstShare);
    s.middle_left = length - (s.rst ? 4 : 6);
    s.closer = static_cast<uint8_t>(plan_rng.below(2));
    s.upload = plan_rng.chance(kUploadShare);
    s.ack_every = static_cast<uint8_t>(plan_rng.range(2, 5));
  }
  for (uint32_t length : udp) {
    Conversation& c = add(kProtoUdp, length);
    if (length > 2) {
      c.udp_kind = UdpKind::kStream;
      c.ends.server_port = weighted_port(plan_rng, kUdpStreamPorts);
    } else {
      c.udp_kind = plan_rng.chance(0.85) ? UdpKind::kDns : UdpKind::kNtp;
      c.ends.server_port = c.udp_kind == UdpKind::kDns ? 53 : 123;
    }
  }
  for (uint32_t length : icmp) add(kProtoIcmp, length);

  TraceStats& st = plan.stats;
  st.tcp_conversations = tcp.size();
  st.udp_conversations = udp.size();
  st.icmp_conversations = icmp.size();
  st.distinct_ips = std::count(client_used.begin(), client_used.end(), true) +
                    std::count(server_used.begin(), server_used.end(), true);
  st.tcp_length = length_stats(tcp);
  st.udp_length = length_stats(udp);
  std::vector<uint32_t> all = tcp;
  all.insert(all.end(), udp.begin(), udp.end());
  all.insert(all.end(), icmp.begin(), icmp.end());
  st.all_length = length_stats(std::move(all));
  return plan;
}

// ---- emitting --------------------------------------------------------------------------

class Emitter {
 public:
  Emitter(const TraceFrameSink& sink, TraceStats& stats) : sink_(sink), stats_(stats) {}

  void emit(uint64_t ts, const Endpoints& ends, const PacketEvent& ev, uint16_t ip_id,
            size_t min_frame) {
    const size_t len = render_frame(ends, ev, ip_id, min_frame, buffer_);
    if (stats_.packets == 0) stats_.first_ns = ts;
    stats_.last_ns = ts;
    ++stats_.packets;
    stats_.bytes += len;
    sink_(ts, std::span<const uint8_t>(buffer_, len));
  }

 private:
  const TraceFrameSink& sink_;
  TraceStats& stats_;
  uint8_t buffer_[2048];
};

void run_t1(const TraceSpec& spec, const TraceFrameSink& sink, TraceStats& stats) {
  T1Plan plan = plan_t1(spec);
  stats = plan.stats;
  const PayloadLimit& limit = spec.kind == TraceKind::kT2 ? kT64Limit : kT1Limit;
  std::vector<Conversation>& convs = plan.conversations;

  using Entry = std::pair<uint64_t, uint32_t>;  // (time, conversation): ties by index
  std::vector<Entry> heap_storage;
  heap_storage.reserve(convs.size());
  for (uint32_t i = 0; i < convs.size(); ++i) {
    convs[i].next_ns = packet_time(convs[i], 0);
    heap_storage.emplace_back(convs[i].next_ns, i);
  }
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap(std::greater<>{},
                                                                      std::move(heap_storage));
  Emitter emitter(sink, stats);
  while (!heap.empty()) {
    const auto [ts, index] = heap.top();
    heap.pop();
    Conversation& c = convs[index];
    const PacketEvent ev = next_event(c, limit);
    emitter.emit(ts, c.ends, ev, c.ip_id[ev.from_server]++, limit.min_frame);
    if (++c.emitted < c.length) {
      c.next_ns = packet_time(c, c.emitted);
      heap.emplace(c.next_ns, index);
    }
  }
}

// ---- T3 ---------------------------------------------------------------------------------

void run_t3(const TraceSpec& spec, const TraceFrameSink& sink, TraceStats& stats) {
  const uint32_t rounds =
      spec.rounds ? spec.rounds
                  : std::max<uint32_t>(1, static_cast<uint32_t>(std::lround(kT3RoundsAtScale1 * spec.scale)));
  Rng rng(stream_seed(spec.seed, 4));
  HostPlan hosts = make_hosts(rng, kT3Connections, kT3Servers);
  struct Connection {
    Endpoints ends;
    TcpConn tcp{0, 0};
    uint16_t ip_id[2];
  };
  std::vector<Connection> conns(kT3Connections);
  std::vector<bool> server_used(kT3Servers);
  for (uint32_t i = 0; i < kT3Connections; ++i) {
    Connection& c = conns[i];
    const uint32_t server = hosts.pick_server(rng);
    server_used[server] = true;
    c.ends = {hosts.clients[i], hosts.servers[server], hosts.allocate_port(i), 5201, kProtoTcp};
    c.tcp = TcpConn(static_cast<uint32_t>(rng.next()), static_cast<uint32_t>(rng.next()));
    c.ip_id[0] = static_cast<uint16_t>(rng.next());
    c.ip_id[1] = static_cast<uint16_t>(rng.next());
  }

  Emitter emitter(sink, stats);
  uint64_t now = kStartNs;
  auto emit = [&](Connection& c, const PacketEvent& ev) {
    emitter.emit(now, c.ends, ev, c.ip_id[ev.from_server]++, kT2Frame);
    now += kT3GapNs;
  };
  const uint16_t payload = kT64Limit.tcp;
  for (Connection& c : conns) {
    emit(c, c.tcp.syn());
    emit(c, c.tcp.syn_ack());
    emit(c, c.tcp.segment(0, kTcpAck, 0));
  }
  for (uint32_t round = 0; round < rounds; ++round) {
    for (Connection& c : conns) {
      for (uint32_t i = 0; i < kT3Burst; ++i)
        emit(c, c.tcp.segment(0, kTcpAck | (i + 1 == kT3Burst ? kTcpPsh : 0), payload));
      emit(c, c.tcp.segment(1, kTcpAck, 0));
    }
  }
  for (Connection& c : conns) {
    emit(c, c.tcp.segment(0, kTcpFin | kTcpAck, 0));
    emit(c, c.tcp.segment(1, kTcpFin | kTcpAck, 0));
    emit(c, c.tcp.segment(0, kTcpAck, 0));
  }

  stats.tcp_conversations = kT3Connections;
  stats.distinct_ips =
      kT3Connections + std::count(server_used.begin(), server_used.end(), true);
  const std::vector<uint32_t> lengths(kT3Connections, 6 + rounds * (kT3Burst + 1));
  stats.tcp_length = length_stats(lengths);
  stats.all_length = stats.tcp_length;
}

// ---- replay ports -------------------------------------------------------------------------

// A 4-round Feistel network over the two bytes of a port, keyed by the
// replay number: a permutation of 0..65535.  The round keys are derived once
// per frame; a round is two multiplies, so a port costs a few nanoseconds.
struct ReplayKey {
  uint32_t round[4];
  explicit ReplayKey(uint32_t replay) {
    const uint64_t a = mix64(uint64_t{replay} << 1), b = mix64(uint64_t{replay} << 1 | 1);
    round[0] = static_cast<uint32_t>(a);
    round[1] = static_cast<uint32_t>(a >> 32);
    round[2] = static_cast<uint32_t>(b);
    round[3] = static_cast<uint32_t>(b >> 32);
  }
};

uint16_t feistel16(uint16_t x, const ReplayKey& key) {
  uint32_t left = x >> 8, right = x & 0xff;
  for (uint32_t k : key.round) {
    const uint32_t f = (((right * 0x9e3779b1u) ^ k) * 0x85ebca6bu) >> 24;
    const uint32_t next_right = left ^ f;
    left = right;
    right = next_right;
  }
  return static_cast<uint16_t>(left << 8 | right);
}

// Cycle-walking keeps 0 out of the image: if port p maps to 0, take the
// image of 0 instead (never 0 itself), a bijection on 1..65535.
uint16_t permute_port(uint16_t port, const ReplayKey& key) {
  if (port == 0) return 0;
  const uint16_t mapped = feistel16(port, key);
  return mapped != 0 ? mapped : feistel16(0, key);
}

// Rewrites the two ports at 'l4' (TCP or UDP header with its checksum inside
// the buffer) and updates the checksum; returns the new ports.
std::pair<uint16_t, uint16_t> rewrite_ports_at(uint8_t* l4, uint8_t proto, uint32_t replay) {
  const uint16_t old_src = load16(l4), old_dst = load16(l4 + 2);
  const ReplayKey key(replay);
  const uint16_t new_src = permute_port(old_src, key), new_dst = permute_port(old_dst, key);
  store16(l4, new_src);
  store16(l4 + 2, new_dst);
  uint8_t* checksum = l4 + (proto == kProtoTcp ? 16 : 6);
  const uint16_t old_checksum = load16(checksum);
  if (proto == kProtoUdp && old_checksum == 0) return {new_src, new_dst};  // "no checksum"
  // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
  uint32_t sum = static_cast<uint16_t>(~old_checksum);
  sum += static_cast<uint16_t>(~old_src) + static_cast<uint32_t>(new_src);
  sum += static_cast<uint16_t>(~old_dst) + static_cast<uint32_t>(new_dst);
  uint16_t updated = checksum_fold(sum);
  if (proto == kProtoUdp && updated == 0) updated = 0xffff;
  store16(checksum, updated);
  return {new_src, new_dst};
}

// Offset of the L4 header of an IPv6 packet starting at 'ofs', with its
// protocol; false when there is none to rewrite (later fragment, truncated
// or too long chain).
bool ipv6_l4(const uint8_t* p, size_t len, size_t ofs, size_t& l4, uint8_t& proto) {
  constexpr size_t kIpv6Len = 40;
  constexpr int kMaxExtHeaders = 8;
  if (len < ofs + kIpv6Len || (p[ofs] >> 4) != 6) return false;
  uint8_t next = p[ofs + 6];
  size_t cur = ofs + kIpv6Len;
  for (int n = 0; n <= kMaxExtHeaders; ++n) {
    if (next != kProtoHopByHop && next != kProtoRouting && next != kProtoDestOpts &&
        next != kProtoFragment && next != kProtoAh) {
      l4 = cur;
      proto = next;
      return true;
    }
    if (n == kMaxExtHeaders || len < cur + 8) return false;
    size_t ext_len;
    if (next == kProtoFragment) {
      if (load16(p + cur + 2) & 0xfff8) return false;  // not the first fragment
      ext_len = 8;
    } else if (next == kProtoAh) {
      ext_len = (p[cur + 1] + 2u) * 4;
    } else {
      ext_len = (p[cur + 1] + 1u) * 8;
    }
    next = p[cur];
    cur += ext_len;
  }
  return false;
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------

Result<TraceKind> parse_trace_kind(std::string_view name) {
  std::string upper(name);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (upper == "T1") return TraceKind::kT1;
  if (upper == "T2") return TraceKind::kT2;
  if (upper == "T3") return TraceKind::kT3;
  return Status::error(fmt::format("unknown trace '{}' (expected T1, T2 or T3)", name));
}

std::string_view trace_kind_name(TraceKind kind) {
  switch (kind) {
    case TraceKind::kT1:
      return "T1";
    case TraceKind::kT2:
      return "T2";
    case TraceKind::kT3:
      return "T3";
  }
  return "?";
}

Result<TraceStats> generate_trace(const TraceSpec& spec, const TraceFrameSink& sink) {
  if (!(spec.scale > 0 && spec.scale <= 10))
    return Status::error(fmt::format("scale {} is out of range (0, 10]", spec.scale));
  if (spec.rounds > 100'000)
    return Status::error(fmt::format("{} rounds is too many (at most 100000)", spec.rounds));
  TraceStats stats;
  if (spec.kind == TraceKind::kT3) {
    run_t3(spec, sink, stats);
  } else {
    run_t1(spec, sink, stats);
  }
  return stats;
}

Result<std::vector<Frame>> generate_trace_frames(const TraceSpec& spec, uint32_t port) {
  std::vector<Frame> frames;
  Result<TraceStats> stats =
      generate_trace(spec, [&](uint64_t ts, std::span<const uint8_t> bytes) {
        frames.push_back(Frame{port, ts, std::vector<uint8_t>(bytes.begin(), bytes.end())});
      });
  if (!stats) return stats.status();
  return frames;
}

Result<TraceStats> write_trace_pcap(const TraceSpec& spec, const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr)
    return Status::error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)), EIO);
  // A large stdio buffer: a full-scale T1 is ~4 GB of small writes.
  std::setvbuf(file, nullptr, _IOFBF, 1 << 20);
  pcap_t* pcap = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, 65535, PCAP_TSTAMP_PRECISION_NANO);
  if (pcap == nullptr) {
    std::fclose(file);
    return Status::error("pcap_open_dead failed", ENOMEM);
  }
  pcap_dumper_t* dumper = pcap_dump_fopen(pcap, file);
  if (dumper == nullptr) {
    const std::string error = fmt::format("{}: {}", path, pcap_geterr(pcap));
    std::fclose(file);
    pcap_close(pcap);
    return Status::error(error, EIO);
  }
  Result<TraceStats> stats =
      generate_trace(spec, [&](uint64_t ts, std::span<const uint8_t> bytes) {
        pcap_pkthdr hdr{};
        hdr.ts.tv_sec = static_cast<time_t>(ts / 1'000'000'000);
        hdr.ts.tv_usec = static_cast<suseconds_t>(ts % 1'000'000'000);  // nanoseconds
        hdr.caplen = hdr.len = static_cast<uint32_t>(bytes.size());
        pcap_dump(reinterpret_cast<u_char*>(dumper), &hdr, bytes.data());
      });
  const bool write_failed = pcap_dump_flush(dumper) != 0 || std::ferror(file) != 0;
  pcap_dump_close(dumper);  // closes 'file'
  pcap_close(pcap);
  if (!stats) return stats.status();
  if (write_failed)
    return Status::error(fmt::format("{}: write failed: {}", path, std::strerror(errno)), EIO);
  return stats;
}

std::string format_trace_stats(const TraceSpec& spec, const TraceStats& s) {
  auto lengths = [](const LengthStats& l) {
    return fmt::format("mean {:.1f} median {} max {}", l.mean, l.median, l.max);
  };
  std::string out = fmt::format("trace {} scale {} seed {}\n", trace_kind_name(spec.kind),
                                spec.scale, spec.seed);
  out += fmt::format("packets {}  bytes {}  mean size {:.1f} B\n", s.packets, s.bytes,
                     s.mean_size());
  out += fmt::format("conversations tcp {} udp {} icmp {}  distinct IPs {}\n",
                     s.tcp_conversations, s.udp_conversations, s.icmp_conversations,
                     s.distinct_ips);
  out += fmt::format("length (packets) tcp: {}\n", lengths(s.tcp_length));
  if (s.udp_length.count) out += fmt::format("length (packets) udp: {}\n", lengths(s.udp_length));
  out += fmt::format("length (packets) all: {}\n", lengths(s.all_length));
  out += fmt::format("duration {:.3f} s\n", s.duration_s());
  return out;
}

uint16_t replay_port(uint16_t port, uint32_t replay) {
  return replay == 0 ? port : permute_port(port, ReplayKey(replay));
}

void rewrite_l4_ports(std::span<uint8_t> frame, uint32_t replay) {
  if (replay == 0) return;
  uint8_t* p = frame.data();
  const size_t len = frame.size();
  constexpr size_t kMaxVlanTags = 2;
  if (len < kEthLen) return;
  uint16_t type = load16(p + 12);
  size_t ofs = kEthLen;
  for (size_t tags = 0; tags < kMaxVlanTags && (type == kEthTypeVlan || type == kEthTypeQinQ);
       ++tags) {
    if (len < ofs + 4) return;
    type = load16(p + ofs + 2);
    ofs += 4;
  }
  size_t l4 = 0;
  uint8_t proto = 0;
  if (type == kEthTypeIpv4) {
    if (len < ofs + kIpv4Len || (p[ofs] >> 4) != 4) return;
    const size_t header_len = (p[ofs] & 0x0f) * 4u;
    if (header_len < kIpv4Len) return;
    if (load16(p + ofs + 6) & 0x1fff) return;  // a later fragment: no L4 header
    proto = p[ofs + 9];
    l4 = ofs + header_len;
  } else if (type == kEthTypeIpv6) {
    if (!ipv6_l4(p, len, ofs, l4, proto)) return;
  } else {
    return;
  }
  // The ports and the checksum must be inside the frame.
  if (proto == kProtoTcp ? len < l4 + 18 : proto == kProtoUdp ? len < l4 + kUdpLen : true) return;
  rewrite_ports_at(p + l4, proto, replay);
}

void rewrite_l4_ports(Packet& pkt, uint32_t replay) {
  if (replay == 0 || !pkt.has_l4()) return;
  const uint8_t proto = pkt.key.nw_proto;
  if (proto != kProtoTcp && proto != kProtoUdp) return;
  // The parser sets l4_ofs only for a whole TCP/UDP header.
  const auto [src, dst] = rewrite_ports_at(pkt.l4(), proto, replay);
  pkt.key.tp_src = htons(src);
  pkt.key.tp_dst = htons(dst);
}

}  // namespace softflow

// Seeded generator of the evaluation traces (paper §7.1, EVALUATION.md
// "Traces") and the per-replay L4 port rewrite.
//
//   T1  T1-like: at scale 1.0, 100k TCP + 75k UDP conversations (plus a few
//       ICMP echo exchanges), ~4.6 M packets over 44 s, mean frame ~937 B.
//       TCP conversation lengths (packets, both directions) are heavy-tailed,
//       fitted to mean 42 / median 10 / max 99k (max scaled, see below).
//   T2  T1's conversations, same 5-tuples, packet counts and order, with
//       every frame exactly 64 bytes (payload cut, Ethernet padding).
//   T3  32 TCP connections: handshakes, then rounds in which each connection
//       in turn sends a burst of 256 frames of 64 bytes (one ACK per burst
//       from the receiver), then FIN closes.
//
// Address plan (shared with the pipeline generators): clients in 10.0.0.0/8
// open conversations to servers in 172.16.0.0/12 (IPv4 only); at scale 1.0
// 8000 clients and 3000 servers (~11k addresses; both scale, at least 4 and
// 2), servers picked with Zipf(1) popularity.  Every frame goes through a
// gateway: dl_src is the sending host's MAC 02:00:<its IPv4 address>, dl_dst
// is always the gateway MAC 02:53:46:00:00:01 ("SF").  IPv4: TTL 64, DF,
// per-direction incrementing ids, correct checksums; UDP checksums computed.
//
// TCP conversations are complete and valid in both directions, so a strict
// pf/OVS-style tracker passes every packet: SYN and SYN-ACK carry MSS 1460
// and window scale 7; every segment advertises window 65535 (<< 7 after the
// handshake, far above the data ever in flight); random ISNs; ACKs
// acknowledge exactly what the peer sent; no loss, retransmission or
// reordering; full-size segments carry 1460 bytes (1514-byte frames, no TCP
// timestamps); conversations end with FIN, FIN-ACK, ACK, or (a few %) with an
// in-window RST.  Client ports are unique per client over the whole trace,
// so no two conversations share a 5-tuple.
//
// Deterministic for a given (trace, scale, seed, rounds): only our own PRNG
// and distributions are used.  Frames are produced lazily in timestamp order
// (a heap merges the conversations), so a full-scale trace streams to disk.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/packet.h"
#include "softflow/ports.h"
#include "softflow/status.h"

namespace softflow {

enum class TraceKind : uint8_t { kT1, kT2, kT3 };

// "T1" / "T2" / "T3" (case-insensitive).
Result<TraceKind> parse_trace_kind(std::string_view name);
std::string_view trace_kind_name(TraceKind kind);

struct TraceSpec {
  TraceKind kind = TraceKind::kT1;
  // Scales conversation counts, host counts and the duration (T1/T2), and
  // the default number of rounds (T3).  1.0 is the paper's size.
  double scale = 0.02;
  uint64_t seed = 1;
  // T3 only: rounds of bursts; 0 = max(1, round(12 * scale)), ~100k packets
  // at scale 1.
  uint32_t rounds = 0;
};

// Gateway MAC every frame is sent to.
inline constexpr uint8_t kTraceGatewayMac[6] = {0x02, 0x53, 0x46, 0x00, 0x00, 0x01};

struct LengthStats {
  uint64_t count = 0;
  double mean = 0;
  uint64_t median = 0;
  uint64_t max = 0;
};

struct TraceStats {
  uint64_t packets = 0;
  uint64_t bytes = 0;  // frame bytes (no FCS)
  uint64_t tcp_conversations = 0;
  uint64_t udp_conversations = 0;
  uint64_t icmp_conversations = 0;
  uint64_t distinct_ips = 0;
  LengthStats tcp_length;  // packets per conversation, both directions
  LengthStats udp_length;
  LengthStats all_length;  // TCP, UDP and ICMP
  uint64_t first_ns = 0;
  uint64_t last_ns = 0;

  double mean_size() const { return packets ? static_cast<double>(bytes) / packets : 0.0; }
  double duration_s() const { return (last_ns - first_ns) / 1e9; }
};

// Multi-line human-readable summary (what sf-tracegen --stats prints).
std::string format_trace_stats(const TraceSpec& spec, const TraceStats& stats);

// Called once per frame, in timestamp order.  The span is only valid during
// the call.
using TraceFrameSink = std::function<void(uint64_t timestamp_ns, std::span<const uint8_t> frame)>;

// Generates the trace, streaming frames to 'sink'.  Fails on a bad spec
// (scale not in (0, 10], T3 rounds too large).
Result<TraceStats> generate_trace(const TraceSpec& spec, const TraceFrameSink& sink);

// In memory, for tests and sf-bench at small scales (frames on 'port').
Result<std::vector<Frame>> generate_trace_frames(const TraceSpec& spec, uint32_t port = 0);

// Streams the trace to a pcap file (nanosecond timestamps, Ethernet).
Result<TraceStats> write_trace_pcap(const TraceSpec& spec, const std::string& path);

// ---- replay port rewrite ----------------------------------------------------
//
// On each replay of a trace the L4 ports are replaced by a keyed permutation
// of their values (paper §7.1): consistent (the same port maps to the same
// port in both directions, so conversations stay conversations), different
// per replay (each replay opens new connections and misses the exact-match
// cache), bijective on 1..65535 (distinct 5-tuples stay distinct; port 0 is
// kept) and the identity for replay 0.

uint16_t replay_port(uint16_t port, uint32_t replay);

// Rewrites the TCP/UDP ports of a raw Ethernet frame (IPv4 or IPv6, up to two
// VLAN tags, IPv6 extension headers; non-first fragments, ICMP, other
// protocols and truncated headers are left alone), updating the L4 checksum
// incrementally (RFC 1624; a zero UDP checksum stays zero).  Never reads or
// writes outside 'frame'; no allocation.
void rewrite_l4_ports(std::span<uint8_t> frame, uint32_t replay);

// The same on a parsed packet, keeping key.tp_src / key.tp_dst in sync.
void rewrite_l4_ports(Packet& pkt, uint32_t replay);

}  // namespace softflow

// conntrack (paper §4.1): the stateful firewall's connection tracker.
//
// Internal declarations shared by the files of this service:
//   conntrack_config.cc  configuration (limits, timeouts, policy)
//   conntrack_packet.cc  what a packet is to conntrack: kind, connection key,
//                        direction, TCP segment, the flow an ICMP error quotes
//   conntrack_tcp.cc     the TCP state machine and sequence-window checks
//   conntrack_table.cc   the sharded, bounded connection table and its sweep
//   conntrack.cc         the service: process(), counters, dump, flush
//
// Semantics (`softflow:conntrack:ARG`):
//   ARG 1  the packet matched an allow rule: it may create a connection;
//   ARG 0  only packets of existing (or related) connections pass.
// Each packet gets sf_metadata 1 (pass) or 0 (drop) and, when it passes,
// sf_coalesce = true: the verdict is all the next stage depends on.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/packet.h"

namespace softflow::conntrack {

inline constexpr uint64_t kNsPerSec = 1'000'000'000ULL;

// ---- configuration ------------------------------------------------------------------

// Each connection state has a timeout class; the configuration names them
// ("timeouts": {"tcp_established": 3600, ...}, in seconds).
enum class TimeoutClass : uint8_t {
  kTcpSynSent,
  kTcpSynRecv,
  kTcpEstablished,
  kTcpFinWait,  // FIN_WAIT, CLOSE_WAIT, CLOSING, LAST_ACK
  kTcpTimeWait,
  kTcpClosed,  // after an RST
  kUdpFirst,
  kUdpSingle,
  kUdpMultiple,
  kIcmpFirst,
  kIcmpReply,
  kOtherFirst,
  kOtherMultiple,
  kCount
};
inline constexpr size_t kTimeoutClasses = static_cast<size_t>(TimeoutClass::kCount);

std::string_view timeout_name(TimeoutClass c);

enum class MidstreamPolicy : uint8_t {
  kStrict,  // a TCP packet of an unknown connection that is not a SYN is refused
  kLoose,   // with ARG 1 it picks the connection up as ESTABLISHED
};

struct Config {
  size_t max_connections = 1'000'000;
  MidstreamPolicy tcp_midstream = MidstreamPolicy::kStrict;
  std::array<uint64_t, kTimeoutClasses> timeout_ns = default_timeouts();

  uint64_t timeout(TimeoutClass c) const { return timeout_ns[static_cast<size_t>(c)]; }
  static std::array<uint64_t, kTimeoutClasses> default_timeouts();
  // Throws std::runtime_error naming the offending key and value.
  static Config from_json(const nlohmann::json& json);
};

// ---- connection keys ----------------------------------------------------------------

// How a connection is tracked; part of the key, so an ICMP echo exchange
// and, say, other ICMP traffic between the same hosts never collide.
enum class ConnKind : uint8_t {
  kNone = 0,
  kTcp,
  kUdp,
  kIcmpEcho,  // ICMP or ICMPv6 echo, keyed by the echo id
  kOther,     // any other IP protocol (and non-echo ICMP): the address pair
};

// A connection's identity, the same for both directions: the two endpoints
// (address, port) are stored in a canonical order (the lower first), so one
// lookup finds a connection whichever way a packet travels, and a hash of
// the key is direction-independent (both directions meet in one shard).
// Compared and hashed as raw bytes: keep every byte initialised.
struct ConnKey {
  std::array<uint8_t, 16> addr[2]{};  // IPv4 in the first 4 bytes, rest 0
  uint16_t port[2]{};                 // host order; ICMP echo: the id on both sides
  uint8_t proto = 0;
  uint8_t family = 0;          // 4 or 6
  uint8_t icmp_requester = 0;  // ICMP echo: which endpoint sent the requests
  ConnKind kind = ConnKind::kNone;

  bool operator==(const ConnKey& o) const { return std::memcmp(this, &o, sizeof o) == 0; }
  uint32_t hash() const;
};
static_assert(sizeof(ConnKey) == 40, "ConnKey is compared as raw bytes");

// Which way a packet travels relative to the connection's first packet.
enum class Dir : uint8_t { kOrig = 0, kReply = 1 };
inline Dir flip(Dir d) { return d == Dir::kOrig ? Dir::kReply : Dir::kOrig; }

// ---- TCP ----------------------------------------------------------------------------

// Per-peer progress (pf's TCPS_* subset): what this side has sent.
enum class TcpPeerState : uint8_t {
  kNone,         // nothing seen from this side yet
  kSynSent,      // sent a SYN, not yet acknowledged
  kEstablished,  // its SYN was acknowledged (or picked up mid-stream)
  kFinSent,      // sent a FIN, not yet acknowledged
  kFinAcked,     // its FIN was acknowledged
};

struct TcpPeer {
  uint32_t seq_end = 0;  // highest sequence end (seq + len [+ SYN/FIN]) this side sent
  uint32_t seq_max = 0;  // highest end it may reach: the other side's ack + window
  uint32_t max_win = 0;  // largest window (bytes, after scaling) this side advertised
  uint8_t wscale = 0;    // window scale from this side's SYN option
  bool wscale_offered = false;
  TcpPeerState state = TcpPeerState::kNone;
};

// Connection-level states, derived from both peers (what ct-dump shows).
enum class TcpState : uint8_t {
  kSynSent,      // the originator's SYN, no answer yet
  kSynRecv,      // the responder's SYN-ACK seen, handshake not complete
  kEstablished,  // both SYNs acknowledged
  kFinWait,      // the originator sent a FIN, the responder has not
  kCloseWait,    // the responder sent a FIN, the originator has not
  kClosing,      // both sent FINs, neither acknowledged
  kLastAck,      // both sent FINs, one acknowledged
  kTimeWait,     // both FINs acknowledged
  kClosed,       // reset
};
std::string_view tcp_state_name(TcpState s);
TimeoutClass tcp_timeout_class(TcpState s);

struct TcpConn {
  TcpPeer peer[2];         // indexed by Dir
  bool scaling = false;    // both SYNs carried a window scale option
  bool reset = false;      // an acceptable RST was seen
  bool midstream = false;  // picked up without a handshake (loose policy)
};

// The TCP fields of one segment.
struct TcpSegment {
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint16_t flags = 0;   // TcpFlags bits
  uint16_t window = 0;  // raw, unscaled
  uint32_t length = 0;  // payload bytes
  int16_t wscale = -1;  // window scale option (-1: absent)
};

enum class TcpVerdict : uint8_t { kPass, kInvalidFlags, kOutOfWindow, kRefused };

// Flag combinations no correct stack sends (SYN+FIN, SYN+RST, no flags, ...).
bool tcp_flags_valid(uint16_t flags);
// A SYN without ACK: the only segment that opens a connection.
bool tcp_is_opening_syn(uint16_t flags);
// Whether a segment may pick up an unknown connection under the loose policy.
bool tcp_can_pick_up(uint16_t flags);
// Initialises a connection from its first segment (orig direction): a SYN,
// or with 'midstream' any segment tcp_can_pick_up accepts.
void tcp_start(TcpConn& conn, const TcpSegment& seg, bool midstream);
// Checks a segment of an existing connection and, when acceptable, updates
// the state.  An unacceptable segment changes nothing.
TcpVerdict tcp_update(TcpConn& conn, Dir dir, const TcpSegment& seg);
TcpState tcp_state(const TcpConn& conn);
// Closed (TIME_WAIT or reset): a new SYN on the same 5-tuple starts afresh.
bool tcp_reusable(const TcpConn& conn);

// ---- connections ----------------------------------------------------------------------

struct DirCounters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// UDP, ICMP echo and other protocols: which directions have been seen.
enum class SimpleState : uint8_t {
  kFirst,     // one packet, from the originator
  kSingle,    // several, all from the originator
  kMultiple,  // both directions (ICMP: a reply)
};

struct Connection {
  ConnKey key;
  uint32_t hash = 0;
  bool orig_is_low = true;  // the originator is key.addr[0]/port[0]
  SimpleState simple = SimpleState::kFirst;
  uint64_t expires_ns = 0;
  uint64_t last_ns = 0;  // newest packet time seen by this connection
  DirCounters counters[2];
  TcpConn tcp;

  // Table bookkeeping (conntrack_table.cc).
  Connection* next_in_bucket = nullptr;
  uint32_t slot = 0;  // index in its shard's list

  bool expired(uint64_t now_ns) const { return now_ns >= expires_ns; }
};

// The state name shown by ct-dump and the timeout that applies now.
std::string_view connection_state_name(const Connection& c);
TimeoutClass connection_timeout_class(const Connection& c);

// ---- packets --------------------------------------------------------------------------

// What conntrack makes of a packet (from its parsed key and offsets; the
// packet bytes are read only for the TCP header and ICMP payloads, always
// inside [data, data + len)).
struct PacketInfo {
  enum class Kind : uint8_t {
    kInvalid,   // not IP, or flagged by the parser
    kFragment,  // a non-first IP fragment: no L4 header to track
    kTcp,
    kUdp,
    kIcmpEcho,   // echo request/reply (ICMP or ICMPv6)
    kIcmpError,  // an error quoting another packet
    kOther,      // any other IP protocol (and other ICMP types): addresses only
  };
  Kind kind = Kind::kInvalid;
  ConnKey key;                // the connection the packet belongs to (or the quoted one)
  bool from_low = true;       // the packet's source is key's lower endpoint
  Dir icmp_dir = Dir::kOrig;  // ICMP echo: request = orig, reply = reply
  bool quote_ok = false;      // ICMP error: the quoted packet made a key
  TcpSegment tcp;
  uint32_t hash = 0;
};

void classify_packet(const Packet& pkt, PacketInfo& out);

// Text of a key's endpoint address (inet_ntop).
std::string address_text(const ConnKey& key, int side);

// ---- the table --------------------------------------------------------------------------

// Connections in shards, each a chained hash table under its own mutex.
// Memory grows with use: one allocation per connection, freed when it goes.
class ConnTable {
 public:
  static constexpr size_t kShards = 128;  // a power of two

  struct alignas(64) Shard {
    std::mutex mutex;
    std::vector<Connection*> buckets;                // power-of-two size
    std::vector<std::unique_ptr<Connection>> slots;  // owns the connections
    size_t sweep_cursor = 0;
    std::atomic<size_t> size{0};  // readable without the lock (sweep skips empty shards)
  };

  explicit ConnTable(size_t max_connections) : max_connections_(max_connections) {}
  ConnTable(const ConnTable&) = delete;
  ConnTable& operator=(const ConnTable&) = delete;

  Shard& shard_for(uint32_t hash) { return shards_[hash & (kShards - 1)]; }

  // With the shard locked:
  Connection* find(Shard& s, const ConnKey& key, uint32_t hash) const;
  // A new zeroed connection with this key, or nullptr when the table holds
  // max_connections.
  Connection* insert(Shard& s, const ConnKey& key, uint32_t hash);
  void remove(Shard& s, Connection* c);

  // Removes connections expired at 'now_ns', visiting at most 'budget'
  // connections or empty shards; never blocks on a busy shard.  Returns how
  // many it removed.
  size_t sweep(uint64_t now_ns, size_t budget);
  // Removes everything; returns how many were live (not expired) at now_ns
  // and adds the expired ones to *expired.
  size_t flush(uint64_t now_ns, size_t* expired);

  // Calls fn(const Connection&) for every connection, one shard locked at a time.
  template <class Fn>
  void for_each(Fn&& fn) {
    for (Shard& s : shards_) {
      std::lock_guard lock(s.mutex);
      for (const auto& c : s.slots) fn(*c);
    }
  }

  size_t size() const { return count_.load(std::memory_order_relaxed); }
  size_t max_connections() const { return max_connections_; }
  bool full() const { return size() >= max_connections_; }

 private:
  void grow(Shard& s);
  void unlink(Shard& s, Connection* c);

  const size_t max_connections_;
  std::atomic<size_t> count_{0};
  std::atomic<size_t> next_sweep_shard_{0};
  std::array<Shard, kShards> shards_;
};

}  // namespace softflow::conntrack

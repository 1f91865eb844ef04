// conntrack (paper §4.1): the stateful firewall's connection tracker as a
// SoftFlow service.  See conntrack.h for the file map and the semantics of
// the argument.
//
// Per batch: classify every packet (kind, key, direction; no locks), then
// reclaim a few expired connections, then decide each packet under its
// shard's lock.  Counters are summed per batch and added to shared atomics
// once.  The packet path neither throws nor allocates, except to create a
// connection.
//
// Time is the packets' own (Packet::timestamp_ns): pcap time in sf-offline,
// monotonic time in softflowd, whatever a test sets.  A connection expires
// when a packet at least its timeout newer arrives; the sweep and ct-dump use
// the newest packet time seen.
//
// Limits, documented: IP fragments after the first carry no L4 header and
// are dropped and counted (we do not reassemble, so fragmented datagrams do
// not pass); an ICMP error is related when it quotes a tracked connection,
// without checking the quoted TCP sequence numbers; a TCP simultaneous open
// (a SYN without ACK answering a SYN) is refused.
#include "conntrack.h"

#include <algorithm>

#include "softflow/service.h"

namespace softflow::conntrack {

std::string_view connection_state_name(const Connection& c) {
  switch (c.key.kind) {
    case ConnKind::kTcp:
      return tcp_state_name(tcp_state(c.tcp));
    case ConnKind::kIcmpEcho:
      return c.simple == SimpleState::kMultiple ? "REPLIED" : "REQUESTED";
    default:
      break;
  }
  switch (c.simple) {
    case SimpleState::kFirst:
      return "FIRST";
    case SimpleState::kSingle:
      return "SINGLE";
    case SimpleState::kMultiple:
      return "MULTIPLE";
  }
  return "?";
}

TimeoutClass connection_timeout_class(const Connection& c) {
  const SimpleState s = c.simple;
  switch (c.key.kind) {
    case ConnKind::kTcp:
      return tcp_timeout_class(tcp_state(c.tcp));
    case ConnKind::kUdp:
      return s == SimpleState::kFirst    ? TimeoutClass::kUdpFirst
             : s == SimpleState::kSingle ? TimeoutClass::kUdpSingle
                                         : TimeoutClass::kUdpMultiple;
    case ConnKind::kIcmpEcho:
      return s == SimpleState::kMultiple ? TimeoutClass::kIcmpReply : TimeoutClass::kIcmpFirst;
    default:
      return s == SimpleState::kMultiple ? TimeoutClass::kOtherMultiple : TimeoutClass::kOtherFirst;
  }
}

namespace {

// Reclaiming: a little every batch, in proportion to its size (a step is one
// connection examined or one empty shard skipped); much more, rate-limited
// by packet time so a flood against a full table cannot make every batch
// pay for it, when the table is full and a new connection may need room.
constexpr size_t kSweepBase = 8;
constexpr size_t kSweepPerPacket = 4;
constexpr size_t kFullSweepBudget = 4096;
constexpr uint64_t kFullSweepIntervalNs = 100'000'000;

enum Counter : size_t {
  kPassed,
  kDropped,
  kCreated,
  kReopened,             // a closed TCP connection replaced by a new SYN (port reuse)
  kRefusedNoConnection,  // no connection, and this packet may not create one
  kRefusedFull,          // would create one, but the table is full
  kInvalid,              // not IP, or flagged by the parser
  kInvalidTcpFlags,
  kOutOfWindow,
  kRelated,  // ICMP errors quoting a tracked connection
  kFragments,
  kExpired,
  kFlushed,
  kCounters
};

constexpr std::string_view kCounterNames[kCounters] = {
    "passed",       "dropped", "created",           "reopened",      "refused_no_connection",
    "refused_full", "invalid", "invalid_tcp_flags", "out_of_window", "related",
    "fragments",    "expired", "flushed",
};

using BatchCounters = std::array<uint64_t, kCounters>;

std::string proto_name(const ConnKey& key) {
  switch (key.proto) {
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 1:
      return "icmp";
    case 58:
      return "icmpv6";
    default:
      return std::to_string(key.proto);
  }
}

class ConntrackService final : public Service {
 public:
  explicit ConntrackService(const nlohmann::json& config)
      : config_(Config::from_json(config)), table_(config_.max_connections) {}

  void process(std::span<Packet* const> batch, uint32_t sf_argument) override {
    // Datapath batches hold at most kMaxBatch packets; callers may pass more.
    for (size_t i = 0; i < batch.size(); i += kMaxBatch)
      process_chunk(batch.subspan(i, std::min(kMaxBatch, batch.size() - i)), sf_argument == 1);
  }

  nlohmann::json stats() const override {
    nlohmann::json out = nlohmann::json::object();
    out["connections"] = table_.size();
    out["max_connections"] = table_.max_connections();
    for (size_t i = 0; i < kCounters; ++i)
      out[std::string(kCounterNames[i])] = counters_[i].load(std::memory_order_relaxed);
    return out;
  }

  std::optional<nlohmann::json> dump_connections() const override {
    const uint64_t now = newest_ns_.load(std::memory_order_relaxed);
    nlohmann::json out = nlohmann::json::array();
    table_.for_each([&](const Connection& c) {
      if (c.expired(now)) return;  // gone, just not reclaimed yet
      out.push_back(describe(c, now));
    });
    return out;
  }

  std::optional<size_t> flush_connections() override {
    size_t expired = 0;
    const size_t live = table_.flush(newest_ns_.load(std::memory_order_relaxed), &expired);
    counters_[kExpired].fetch_add(expired, std::memory_order_relaxed);
    counters_[kFlushed].fetch_add(live, std::memory_order_relaxed);
    return live;
  }

 private:
  void process_chunk(std::span<Packet* const> batch, bool may_create) {
    std::array<PacketInfo, kMaxBatch> info;
    uint64_t newest = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      classify_packet(*batch[i], info[i]);
      __builtin_prefetch(&table_.shard_for(info[i].hash));
      newest = std::max(newest, batch[i]->timestamp_ns);
    }
    newest = advance_clock(newest);

    BatchCounters counts{};
    reclaim(newest, kSweepBase + kSweepPerPacket * batch.size(), counts);
    for (size_t i = 0; i < batch.size(); ++i) {
      Packet& pkt = *batch[i];
      const bool pass = decide(pkt, info[i], may_create, counts);
      pkt.key.sf_metadata = pass ? 1 : 0;
      pkt.sf_coalesce = pass;
      ++counts[pass ? kPassed : kDropped];
    }
    for (size_t i = 0; i < kCounters; ++i)
      if (counts[i]) counters_[i].fetch_add(counts[i], std::memory_order_relaxed);
  }

  uint64_t advance_clock(uint64_t t) {
    uint64_t seen = newest_ns_.load(std::memory_order_relaxed);
    while (t > seen && !newest_ns_.compare_exchange_weak(seen, t, std::memory_order_relaxed)) {
    }
    return std::max(t, seen);
  }

  void reclaim(uint64_t now, size_t budget, BatchCounters& counts) {
    if (table_.full()) {
      uint64_t allowed = next_full_sweep_ns_.load(std::memory_order_relaxed);
      if (now >= allowed && next_full_sweep_ns_.compare_exchange_strong(
                                allowed, now + kFullSweepIntervalNs, std::memory_order_relaxed))
        budget = kFullSweepBudget;
    }
    counts[kExpired] += table_.sweep(now, budget);
  }

  bool decide(const Packet& pkt, const PacketInfo& info, bool may_create, BatchCounters& counts) {
    using Kind = PacketInfo::Kind;
    switch (info.kind) {
      case Kind::kInvalid:
        ++counts[kInvalid];
        return false;
      case Kind::kFragment:
        ++counts[kFragments];
        return false;
      case Kind::kIcmpError:
        return related(pkt, info, counts);
      default:
        return track(pkt, info, may_create, counts);
    }
  }

  // An ICMP error passes when the packet it quotes belongs to a live
  // connection, in either direction.  It changes nothing in that connection.
  bool related(const Packet& pkt, const PacketInfo& info, BatchCounters& counts) {
    if (info.quote_ok) {
      ConnTable::Shard& shard = table_.shard_for(info.hash);
      std::lock_guard lock(shard.mutex);
      const Connection* c = table_.find(shard, info.key, info.hash);
      if (c != nullptr && !c->expired(std::max(pkt.timestamp_ns, c->last_ns))) {
        ++counts[kRelated];
        return true;
      }
    }
    ++counts[kRefusedNoConnection];
    return false;
  }

  bool track(const Packet& pkt, const PacketInfo& info, bool may_create, BatchCounters& counts) {
    const bool is_tcp = info.kind == PacketInfo::Kind::kTcp;
    if (is_tcp && !tcp_flags_valid(info.tcp.flags)) {
      ++counts[kInvalidTcpFlags];
      return false;
    }
    ConnTable::Shard& shard = table_.shard_for(info.hash);
    std::lock_guard lock(shard.mutex);
    Connection* c = table_.find(shard, info.key, info.hash);
    uint64_t now = pkt.timestamp_ns;
    Connection* stale = nullptr;  // an expired entry with this key, reusable
    if (c != nullptr) {
      now = std::max(now, c->last_ns);
      if (c->expired(now)) std::swap(c, stale);
    }

    if (c != nullptr) {
      const Dir dir = direction(info, *c);
      if (is_tcp) {
        if (may_create && tcp_is_opening_syn(info.tcp.flags) && tcp_reusable(c->tcp)) {
          // Port reuse: the old connection is closed; this SYN opens a new one.
          start(*c, info, now, /*midstream=*/false);
          ++counts[kReopened];
          ++counts[kCreated];
          account(*c, Dir::kOrig, pkt, now);
          return true;
        }
        switch (tcp_update(c->tcp, dir, info.tcp)) {
          case TcpVerdict::kPass:
            break;
          case TcpVerdict::kInvalidFlags:
            ++counts[kInvalidTcpFlags];
            return false;
          case TcpVerdict::kOutOfWindow:
            ++counts[kOutOfWindow];
            return false;
          case TcpVerdict::kRefused:
            ++counts[kRefusedNoConnection];
            return false;
        }
      } else if (dir == Dir::kReply) {
        c->simple = SimpleState::kMultiple;
      } else if (c->simple == SimpleState::kFirst) {
        c->simple = SimpleState::kSingle;
      }
      account(*c, dir, pkt, now);
      return true;
    }

    // No live connection: may this packet open one?
    bool midstream = false;
    if (!may_create || !opens_connection(info, &midstream)) {
      ++counts[kRefusedNoConnection];
      return false;
    }
    if (stale != nullptr) {
      c = stale;  // reuse the expired entry in place
      ++counts[kExpired];
    } else {
      c = table_.insert(shard, info.key, info.hash);
      if (c == nullptr) {
        ++counts[kRefusedFull];
        return false;
      }
    }
    start(*c, info, now, midstream);
    ++counts[kCreated];
    account(*c, Dir::kOrig, pkt, now);
    return true;
  }

  bool opens_connection(const PacketInfo& info, bool* midstream) const {
    switch (info.kind) {
      case PacketInfo::Kind::kTcp:
        if (tcp_is_opening_syn(info.tcp.flags)) return true;
        *midstream =
            config_.tcp_midstream == MidstreamPolicy::kLoose && tcp_can_pick_up(info.tcp.flags);
        return *midstream;
      case PacketInfo::Kind::kIcmpEcho:
        return info.icmp_dir == Dir::kOrig;  // a reply without a request opens nothing
      default:
        return true;
    }
  }

  static Dir direction(const PacketInfo& info, const Connection& c) {
    if (info.kind == PacketInfo::Kind::kIcmpEcho) return info.icmp_dir;
    return info.from_low == c.orig_is_low ? Dir::kOrig : Dir::kReply;
  }

  // (Re)initialises 'c' from the packet that opens it.
  static void start(Connection& c, const PacketInfo& info, uint64_t now, bool midstream) {
    c.orig_is_low =
        info.kind == PacketInfo::Kind::kIcmpEcho ? info.key.icmp_requester == 0 : info.from_low;
    c.simple = SimpleState::kFirst;
    c.counters[0] = c.counters[1] = DirCounters{};
    c.last_ns = now;
    if (info.kind == PacketInfo::Kind::kTcp) tcp_start(c.tcp, info.tcp, midstream);
  }

  void account(Connection& c, Dir dir, const Packet& pkt, uint64_t now) const {
    DirCounters& dc = c.counters[static_cast<int>(dir)];
    ++dc.packets;
    dc.bytes += pkt.len;
    c.last_ns = now;
    c.expires_ns = now + config_.timeout(connection_timeout_class(c));
  }

  static nlohmann::json describe(const Connection& c, uint64_t now) {
    const int orig = c.orig_is_low ? 0 : 1;
    nlohmann::json j;
    j["proto"] = proto_name(c.key);
    j["src"] = address_text(c.key, orig);
    j["dst"] = address_text(c.key, 1 - orig);
    if (c.key.kind == ConnKind::kTcp || c.key.kind == ConnKind::kUdp) {
      j["sport"] = c.key.port[orig];
      j["dport"] = c.key.port[1 - orig];
    } else if (c.key.kind == ConnKind::kIcmpEcho) {
      j["id"] = c.key.port[0];
    }
    j["state"] = connection_state_name(c);
    j["timeout_s"] = (c.expires_ns - now) / kNsPerSec;
    for (int d = 0; d < 2; ++d)
      j[d == 0 ? "orig" : "reply"] = {{"packets", c.counters[d].packets},
                                      {"bytes", c.counters[d].bytes}};
    return j;
  }

  const Config config_;
  mutable ConnTable table_;  // dump_connections() locks its shards
  std::atomic<uint64_t> newest_ns_{0};
  std::atomic<uint64_t> next_full_sweep_ns_{0};
  std::array<std::atomic<uint64_t>, kCounters> counters_{};
};

}  // namespace
}  // namespace softflow::conntrack

namespace softflow {
using conntrack::ConntrackService;
SF_REGISTER_SERVICE(conntrack, ConntrackService,
                    "stateful firewall connection tracking (arg 1: may create a connection; "
                    "0: existing and related only); sf_metadata 1 pass, 0 drop");
}  // namespace softflow

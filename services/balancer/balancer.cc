// balancer (paper §4.2): assigns each new connection to the least-loaded
// bucket (by bytes sent through the balancer so far) and keeps every later
// packet of that connection, in both directions, on the same bucket.  The
// bucket goes into sf_metadata, where an OpenFlow table maps it to a backend.
//
// The choice depends on internal load state that OpenFlow cannot see, so the
// result is never coalescable: sf_coalesce always stays false.
//
// Concurrency: the connection table is split into shards, each an
// open-addressed (linear probing) table behind its own mutex, chosen by the
// connection's hash; bucket loads and counters are relaxed atomics, so two
// threads may occasionally both pick the same "least-loaded" bucket — harmless
// for balancing, and the per-connection decision itself is made under the
// shard lock, so both directions always agree.
//
// Memory: the table only grows (amortised doubling, never per packet), and
// the number of remembered connections is capped by max_connections; beyond
// that a new connection is still balanced but not remembered ("untracked").
// Idle connections are reclaimed by a bounded sweep of a few slots per batch,
// and a lookup that finds an idle entry treats the packet as a new connection,
// so expiry is exact even when the sweep lags behind.
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "softflow/protocols.h"
#include "softflow/service.h"

namespace softflow {
namespace {

constexpr uint64_t kDefaultBuckets = 8;
constexpr uint64_t kMaxBuckets = 64;
constexpr double kDefaultIdleTimeoutS = 60;
constexpr double kMaxIdleTimeoutS = 1e9;  // keeps the timeout in ns within 64 bits
constexpr uint64_t kDefaultMaxConnections = 1'000'000;
constexpr uint64_t kMaxMaxConnections = uint64_t{1} << 32;
constexpr size_t kShardBits = 6;
constexpr size_t kShards = size_t{1} << kShardBits;
// Slots examined by the expiry sweep per process() call: a full pass over a
// table of C slots takes C / 64 batches, while a batch pays a fixed small cost.
constexpr size_t kSweepSlotsPerBatch = 64;
constexpr size_t kInitialShardSlots = 16;

// ---- configuration ------------------------------------------------------------

struct BalancerConfig {
  uint64_t buckets = kDefaultBuckets;
  uint64_t idle_timeout_ns = static_cast<uint64_t>(kDefaultIdleTimeoutS * 1e9);
  uint64_t max_connections = kDefaultMaxConnections;

  static BalancerConfig parse(const nlohmann::json& config);
};

[[noreturn]] void config_error(const std::string& key, const nlohmann::json& value,
                               const std::string& expected) {
  throw std::runtime_error("balancer: '" + key + "' must be " + expected + ", got " +
                           value.dump());
}

uint64_t integer_in_range(const std::string& key, const nlohmann::json& value, uint64_t lo,
                          uint64_t hi) {
  const std::string expected =
      "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
  uint64_t v = 0;
  if (value.is_number_unsigned()) {
    v = value.get<uint64_t>();
  } else if (value.is_number_integer()) {
    const int64_t s = value.get<int64_t>();
    if (s < 0) config_error(key, value, expected);
    v = static_cast<uint64_t>(s);
  } else {
    config_error(key, value, expected);
  }
  if (v < lo || v > hi) config_error(key, value, expected);
  return v;
}

BalancerConfig BalancerConfig::parse(const nlohmann::json& config) {
  BalancerConfig out;
  if (config.is_null()) return out;
  if (!config.is_object()) throw std::runtime_error("balancer: configuration must be an object");
  for (const auto& [key, value] : config.items()) {
    if (key == "buckets") {
      out.buckets = integer_in_range(key, value, 1, kMaxBuckets);
    } else if (key == "max_connections") {
      out.max_connections = integer_in_range(key, value, 1, kMaxMaxConnections);
    } else if (key == "idle_timeout_s") {
      const std::string expected = "a number of seconds above 0 and at most 1e9";
      if (!value.is_number()) config_error(key, value, expected);
      const double s = value.get<double>();
      if (!std::isfinite(s) || s <= 0 || s > kMaxIdleTimeoutS) config_error(key, value, expected);
      out.idle_timeout_ns = std::max<uint64_t>(1, static_cast<uint64_t>(s * 1e9));
    } else {
      throw std::runtime_error("balancer: unknown configuration key '" + key +
                               "' (known: buckets, idle_timeout_s, max_connections)");
    }
  }
  return out;
}

// ---- connection identity ----------------------------------------------------------

// A connection's 5-tuple with its two endpoints in a canonical order, so a
// packet and its reply map to the same key.  Addresses and ports are kept in
// wire order (only equality and a consistent order matter).  Zero-initialised
// padding makes it safe to hash as raw words.
struct ConnectionKey {
  std::array<uint8_t, 16> low_addr{};
  std::array<uint8_t, 16> high_addr{};
  uint16_t low_port = 0;
  uint16_t high_port = 0;
  uint8_t proto = 0;
  uint8_t family = 0;  // 4 or 6
  uint8_t pad[2] = {0, 0};

  bool operator==(const ConnectionKey&) const = default;
};
static_assert(sizeof(ConnectionKey) == 40);

// The connection a packet belongs to, or nullopt for non-IP packets.  ICMP's
// type/code sit in tp_src/tp_dst, which differ between a request and its
// reply, so ICMP uses port 0: all ICMP between two hosts is one connection.
// (A later IP fragment carries no ports, so it keys by addresses only; the
// balancer treats it as its own "connection".)
std::optional<ConnectionKey> connection_key(const FlowKey& key) {
  ConnectionKey conn;
  size_t addr_len = 0;
  if (key.dl_type == htons(kEthTypeIpv4)) {
    conn.family = 4;
    addr_len = 4;
  } else if (key.dl_type == htons(kEthTypeIpv6)) {
    conn.family = 6;
    addr_len = 16;
  } else {
    return std::nullopt;
  }
  conn.proto = key.nw_proto;
  const bool icmp = key.nw_proto == kProtoIcmp || key.nw_proto == kProtoIcmpv6;
  const uint16_t src_port = icmp ? 0 : key.tp_src;
  const uint16_t dst_port = icmp ? 0 : key.tp_dst;
  std::array<uint8_t, 16> src{}, dst{};
  std::memcpy(src.data(), key.nw_src, addr_len);
  std::memcpy(dst.data(), key.nw_dst, addr_len);
  const int order = std::memcmp(src.data(), dst.data(), src.size());
  if (order < 0 || (order == 0 && src_port <= dst_port)) {
    conn.low_addr = src, conn.high_addr = dst;
    conn.low_port = src_port, conn.high_port = dst_port;
  } else {
    conn.low_addr = dst, conn.high_addr = src;
    conn.low_port = dst_port, conn.high_port = src_port;
  }
  return conn;
}

uint64_t connection_hash(const ConnectionKey& conn) {
  std::array<uint64_t, sizeof(ConnectionKey) / 8> words;
  std::memcpy(words.data(), &conn, sizeof conn);
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < words.size(); ++i) h = sf_hash_mix(h ^ words[i]) + i;
  return h;
}

// ---- one shard of the connection table -------------------------------------------

// Linear probing with backward-shift deletion (no tombstones), so the table
// never degrades and the sweep can walk slots with a plain cursor.  All
// methods require the caller to hold 'mutex'.
class alignas(64) ConnectionShard {
 public:
  struct Slot {
    ConnectionKey key;
    uint64_t last_seen_ns = 0;
    uint32_t hash = 0;  // low bits of the connection hash: the home slot
    uint8_t bucket = 0;
    bool used = false;
  };

  mutable std::mutex mutex;

  Slot* find(const ConnectionKey& conn, uint32_t hash) {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (!s.used) return nullptr;
      if (s.hash == hash && s.key == conn) return &s;
    }
  }

  // Inserts a connection known to be absent.  Returns nullptr if growing the
  // table failed (out of memory): the caller leaves the connection untracked.
  Slot* insert(const ConnectionKey& conn, uint32_t hash) {
    if ((size_ + 1) * 4 > slots_.size() * 3 && !grow()) return nullptr;
    size_t i = hash & mask_;
    while (slots_[i].used) i = (i + 1) & mask_;
    Slot& s = slots_[i];
    s.key = conn;
    s.hash = hash;
    s.used = true;
    ++size_;
    return &s;
  }

  // Examines up to 'budget' slots from the sweep cursor and removes
  // connections idle for longer than 'timeout_ns' at time 'now_ns'.  Returns
  // how many were removed.
  size_t sweep(uint64_t now_ns, uint64_t timeout_ns, size_t budget) {
    size_t removed = 0;
    for (size_t examined = 0; examined < budget && size_ > 0; ++examined) {
      const size_t i = sweep_cursor_ & mask_;
      if (slots_[i].used && is_idle(slots_[i], now_ns, timeout_ns)) {
        // Backward shift may move a later entry into slot i: look at it again.
        erase_at(i);
        ++removed;
      } else {
        sweep_cursor_ = (i + 1) & mask_;
      }
    }
    return removed;
  }

  static bool is_idle(const Slot& s, uint64_t now_ns, uint64_t timeout_ns) {
    // Threads' clocks may be slightly out of order: "now" before last_seen is not idle.
    return now_ns > s.last_seen_ns && now_ns - s.last_seen_ns > timeout_ns;
  }

 private:
  bool grow() {
    const size_t capacity = slots_.empty() ? kInitialShardSlots : slots_.size() * 2;
    std::vector<Slot> bigger;
    try {
      bigger.resize(capacity);
    } catch (const std::bad_alloc&) {
      return false;
    }
    const size_t new_mask = capacity - 1;
    for (const Slot& s : slots_) {
      if (!s.used) continue;
      size_t i = s.hash & new_mask;
      while (bigger[i].used) i = (i + 1) & new_mask;
      bigger[i] = s;
    }
    slots_.swap(bigger);
    mask_ = new_mask;
    sweep_cursor_ &= mask_;
    return true;
  }

  void erase_at(size_t hole) {
    // Pull back each following entry of the probe run whose home slot does
    // not lie cyclically in (hole, j]; such an entry would become unreachable.
    for (size_t j = (hole + 1) & mask_; slots_[j].used; j = (j + 1) & mask_) {
      const size_t home = slots_[j].hash & mask_;
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole].used = false;
    --size_;
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
  size_t sweep_cursor_ = 0;
};

// ---- the service ------------------------------------------------------------------

class BalancerService final : public Service {
 public:
  explicit BalancerService(const nlohmann::json& config)
      : config_(BalancerConfig::parse(config)) {}

  void process(std::span<Packet* const> batch, uint32_t /*sf_argument*/) override {
    uint64_t newest_ns = 0;
    for (Packet* p : batch) {
      const uint8_t bucket = assign(p->key, p->timestamp_ns);
      p->key.sf_metadata = bucket;
      p->sf_coalesce = false;  // the decision depends on internal state, not on the key
      loads_[bucket].bytes.fetch_add(p->len, std::memory_order_relaxed);
      loads_[bucket].packets.fetch_add(1, std::memory_order_relaxed);
      newest_ns = std::max(newest_ns, p->timestamp_ns);
    }
    sweep(newest_ns);
  }

  nlohmann::json stats() const override {
    nlohmann::json buckets = nlohmann::json::array();
    for (size_t b = 0; b < config_.buckets; ++b) {
      buckets.push_back({{"bucket", b},
                         {"bytes", loads_[b].bytes.load(std::memory_order_relaxed)},
                         {"packets", loads_[b].packets.load(std::memory_order_relaxed)},
                         {"connections", loads_[b].connections.load(std::memory_order_relaxed)}});
    }
    return {{"buckets", std::move(buckets)},
            {"live_connections", live_.load(std::memory_order_relaxed)},
            {"expired", expired_.load(std::memory_order_relaxed)},
            {"untracked", untracked_.load(std::memory_order_relaxed)},
            {"non_ip_packets", non_ip_packets_.load(std::memory_order_relaxed)},
            {"max_connections", config_.max_connections},
            {"idle_timeout_s", static_cast<double>(config_.idle_timeout_ns) / 1e9}};
  }

 private:
  struct alignas(64) BucketLoad {
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> packets{0};
    std::atomic<uint64_t> connections{0};  // connections assigned (new or re-balanced)
  };

  // Lowest byte count; ties go to the lowest index.
  uint8_t least_loaded() const {
    uint8_t best = 0;
    uint64_t best_bytes = loads_[0].bytes.load(std::memory_order_relaxed);
    for (size_t b = 1; b < config_.buckets; ++b) {
      const uint64_t bytes = loads_[b].bytes.load(std::memory_order_relaxed);
      if (bytes < best_bytes) best = static_cast<uint8_t>(b), best_bytes = bytes;
    }
    return best;
  }

  uint8_t new_connection() {
    const uint8_t bucket = least_loaded();
    loads_[bucket].connections.fetch_add(1, std::memory_order_relaxed);
    return bucket;
  }

  uint8_t assign(const FlowKey& key, uint64_t now_ns) {
    const std::optional<ConnectionKey> conn = connection_key(key);
    if (!conn) {
      non_ip_packets_.fetch_add(1, std::memory_order_relaxed);
      return least_loaded();
    }
    const uint64_t hash = connection_hash(*conn);
    ConnectionShard& shard = shards_[hash >> (64 - kShardBits)];
    const auto slot_hash = static_cast<uint32_t>(hash);
    std::lock_guard lock(shard.mutex);
    if (ConnectionShard::Slot* s = shard.find(*conn, slot_hash)) {
      if (ConnectionShard::is_idle(*s, now_ns, config_.idle_timeout_ns)) {
        // Idle past the timeout but not yet swept: a new connection.
        expired_.fetch_add(1, std::memory_order_relaxed);
        s->bucket = new_connection();
      }
      s->last_seen_ns = std::max(s->last_seen_ns, now_ns);
      return s->bucket;
    }
    const uint8_t bucket = new_connection();
    // Reserve a place under the global bound before touching the shard.
    if (live_.fetch_add(1, std::memory_order_relaxed) >= config_.max_connections) {
      live_.fetch_sub(1, std::memory_order_relaxed);
      untracked_.fetch_add(1, std::memory_order_relaxed);
      return bucket;
    }
    ConnectionShard::Slot* s = shard.insert(*conn, slot_hash);
    if (s == nullptr) {
      live_.fetch_sub(1, std::memory_order_relaxed);
      untracked_.fetch_add(1, std::memory_order_relaxed);
      return bucket;
    }
    s->bucket = bucket;
    s->last_seen_ns = now_ns;
    return bucket;
  }

  // One shard per batch, in turn, a bounded number of slots.
  void sweep(uint64_t now_ns) {
    if (now_ns == 0 || live_.load(std::memory_order_relaxed) == 0) return;
    const size_t index = sweep_turn_.fetch_add(1, std::memory_order_relaxed) % kShards;
    ConnectionShard& shard = shards_[index];
    size_t removed = 0;
    {
      std::lock_guard lock(shard.mutex);
      removed = shard.sweep(now_ns, config_.idle_timeout_ns, kSweepSlotsPerBatch);
    }
    if (removed > 0) {
      live_.fetch_sub(removed, std::memory_order_relaxed);
      expired_.fetch_add(removed, std::memory_order_relaxed);
    }
  }

  const BalancerConfig config_;
  std::array<BucketLoad, kMaxBuckets> loads_;
  std::array<ConnectionShard, kShards> shards_;
  std::atomic<uint64_t> live_{0};
  std::atomic<uint64_t> expired_{0};
  std::atomic<uint64_t> untracked_{0};
  std::atomic<uint64_t> non_ip_packets_{0};
  std::atomic<size_t> sweep_turn_{0};
};

}  // namespace
SF_REGISTER_SERVICE(balancer, BalancerService,
                    "assigns each connection to the least-loaded of N buckets (sf_metadata); "
                    "sticky both ways; never coalescable");
}  // namespace softflow

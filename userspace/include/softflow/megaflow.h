// The megaflow cache: priority-less (masked key, mask) -> action program
// entries, found by tuple-space search (one hash table per distinct mask,
// "subtables", searched most-hit first), with an exact-match cache (EMC) in
// front.  Entries expire when idle and are bounded in number.
//
// A megaflow's action program is a list of segments.  Segment 0 holds the
// actions of the stage the megaflow was looked up at; when that stage ends in
// a coalescable SoftFlow action, segment 1 holds the next stage's actions,
// guarded by the sf_metadata value it was compiled for; and so on (stage
// coalescing, paper §3.1).
//
// Megaflow ids are slot indexes with a generation that changes whenever the
// slot is reused, so an id handed out earlier (to the EMC, or to XDP through
// the BPF mirror) is never trusted after the megaflow is gone.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "softflow/flow.h"
#include "softflow/flow_key.h"
#include "softflow/openflow.h"

namespace softflow {

struct MegaflowSegment {
  ActionList actions;           // ends with kSoftflow when a service follows
  uint32_t guard_metadata = 0;  // segment > 0: sf_metadata the segment was built for
  FlowKey input_key;            // the key this stage was translated for
  std::vector<uint64_t> rule_ids;
  DropReason drop_reason = DropReason::kNone;
  uint64_t n_packets = 0;  // packets that executed this segment
  uint64_t n_bytes = 0;
  uint64_t pushed_packets = 0;  // already credited to the rules
  uint64_t pushed_bytes = 0;

  bool ends_in_service() const {
    return !actions.empty() && actions.back().type == ActionType::kSoftflow;
  }
};

struct Megaflow {
  uint32_t id = 0;
  uint32_t generation = 0;
  bool alive = false;
  FlowKey key;   // masked
  FlowKey mask;
  std::vector<MegaflowSegment> segments;
  uint64_t n_packets = 0;
  uint64_t n_bytes = 0;
  uint64_t created_ns = 0;
  uint64_t used_ns = 0;
};

struct MegaflowCacheConfig {
  size_t max_megaflows = 200000;                   // like OVS's flow-limit
  uint64_t idle_timeout_ns = 10'000'000'000ULL;    // 10 s
  size_t emc_entries = 8192;                       // power of two; 0 disables the EMC
};

struct MegaflowLookupStats {
  uint64_t emc_hits = 0;
  uint64_t megaflow_hits = 0;
  uint64_t misses = 0;
  uint64_t subtables_searched = 0;
};

// Told about every megaflow that comes and goes (the BPF mirror of the
// stage-0 megaflows listens here).  A megaflow's key and mask never change
// while it lives; revalidation changes only its segments.
class MegaflowObserver {
 public:
  virtual ~MegaflowObserver() = default;
  virtual void megaflow_installed(const Megaflow& mf) = 0;
  virtual void megaflow_removed(const Megaflow& mf) = 0;  // still intact during the call
};

class MegaflowCache {
 public:
  explicit MegaflowCache(MegaflowCacheConfig config = {});

  // EMC, then the subtables; a subtable hit is inserted into the EMC.
  // 'hash' is key_hash(key) (computed by XDP when available).
  Megaflow* lookup(const FlowKey& key, uint32_t hash, MegaflowLookupStats& stats);
  Megaflow* lookup_emc(const FlowKey& key, uint32_t hash);
  Megaflow* lookup_classifier(const FlowKey& key, MegaflowLookupStats& stats);

  // Installs a megaflow (key is masked here).  If one with the same mask and
  // masked key exists, it is kept and returned (check its segments pointer).
  // Returns nullptr when the cache is full.
  Megaflow* install(const FlowKey& key, const FlowKey& mask, std::vector<MegaflowSegment> segments,
                    uint64_t now_ns);
  void remove(Megaflow* mf);
  void clear();

  // The megaflow an id/generation names, if it still exists.
  Megaflow* find(uint32_t id, uint32_t generation);

  // Removes megaflows idle for longer than the idle timeout; calls on_remove
  // for each before it goes.  Returns how many went.
  template <typename Fn>
  size_t expire(uint64_t now_ns, Fn&& on_remove);

  template <typename Fn>
  void for_each(Fn&& fn) {
    for (Megaflow& mf : slots_)
      if (mf.alive) fn(mf);
  }

  void set_observer(MegaflowObserver* observer) { observer_ = observer; }

  size_t size() const { return live_; }
  size_t subtable_count() const { return subtables_.size(); }
  const MegaflowCacheConfig& config() const { return config_; }
  void set_max_megaflows(size_t n) { config_.max_megaflows = n; }
  void set_idle_timeout_ns(uint64_t ns) { config_.idle_timeout_ns = ns; }

 private:
  struct Subtable {
    FlowKey mask;
    absl::flat_hash_map<FlowKey, uint32_t, FlowKeyHash, FlowKeyEqual> flows;  // key -> slot
    uint64_t hits = 0;
  };
  struct EmcEntry {
    FlowKey key;
    uint32_t slot = 0;
    uint32_t generation = 0;  // 0: empty (generations start at 1)
  };

  Subtable* subtable_for(const FlowKey& mask, bool create);
  void rank_subtables();
  void emc_insert(const FlowKey& key, uint32_t hash, const Megaflow& mf);

  MegaflowCacheConfig config_;
  std::deque<Megaflow> slots_;  // stable addresses
  std::vector<uint32_t> free_slots_;
  size_t live_ = 0;
  std::vector<std::unique_ptr<Subtable>> subtables_;  // ranked by hits
  uint64_t lookups_since_rank_ = 0;
  std::vector<EmcEntry> emc_;
  size_t emc_mask_ = 0;
  uint32_t emc_victim_ = 0;
  MegaflowObserver* observer_ = nullptr;
};

template <typename Fn>
size_t MegaflowCache::expire(uint64_t now_ns, Fn&& on_remove) {
  size_t n = 0;
  for (Megaflow& mf : slots_) {
    if (!mf.alive) continue;
    const uint64_t last = mf.used_ns > mf.created_ns ? mf.used_ns : mf.created_ns;
    if (now_ns > last && now_ns - last > config_.idle_timeout_ns) {
      on_remove(mf);
      remove(&mf);
      ++n;
    }
  }
  return n;
}

}  // namespace softflow

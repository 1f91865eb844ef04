// The emulated NIC's TCAM (a model of its table) and the offload policy that
// keeps the most active stage-0 megaflows in it (DESIGN.md "Offload").
//
// Tcam is the table itself: entries by index, a generation per index that
// changes whenever the index is given to another megaflow (so a mark names one
// entry's lifetime), one entry per (key, mask), at most SF_TCAM_MAX_MASKS
// masks.  Offloader decides what goes in and programs a TcamDevice (the BPF
// maps in production, a recording fake in tests) to match its Tcam exactly.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "sf_abi.h"
#include "softflow/flow_key.h"
#include "softflow/megaflow.h"
#include "softflow/status.h"

namespace softflow {

// The mask of every field a NIC parser gives: in_port, L2, L3 and L4 headers.
// Not SoftFlow metadata, TCP flags or fragment bits.
FlowKey tcam_fields();

// A megaflow can be offloaded only if it is looked up at stage 0 with no
// SoftFlow state: the NIC sees frames straight from the wire.
bool is_stage0(const FlowKey& megaflow_key, const FlowKey& megaflow_mask);

struct TcamEntry {
  uint32_t index = 0;
  uint32_t generation = 0;  // low SF_MARK_GENERATION_BITS bits never all 0
  uint32_t mark = 0;        // SF_MARK(index, generation): never 0
  FlowKey key;              // TCAM side: fields restricted to tcam_fields(), key masked
  FlowKey mask;
  uint32_t datapath = 0;
  uint32_t megaflow_id = 0;
  uint32_t megaflow_generation = 0;
  FlowKey megaflow_key;  // masked
  FlowKey megaflow_mask;
  bool partial = false;  // the megaflow matches wire fields the TCAM lacks: software checks them
  uint64_t recent = 0;   // packets in the last rebalance period (Offloader)
};

// The switch's copy of an entry (the sf_hints array value).
sf_hint to_hint(const TcamEntry& entry);

// Why Tcam::insert said no.
enum class TcamRefusal : uint8_t {
  kNone,
  kFull,          // every index is taken
  kDuplicate,     // an entry with the same (key, mask) exists: one action per match
  kTooManyMasks,  // the entry would need mask number SF_TCAM_MAX_MASKS + 1
};
const char* to_string(TcamRefusal refusal);

struct TcamInsertResult {
  TcamRefusal refusal = TcamRefusal::kNone;
  const TcamEntry* entry = nullptr;  // set when refusal == kNone
  bool ok() const { return refusal == TcamRefusal::kNone; }
};

class Tcam {
 public:
  // Throws std::invalid_argument unless 1 <= capacity <= SF_TCAM_MAX_ENTRIES.
  explicit Tcam(uint32_t capacity);

  // Takes the lowest free index and the index's next generation.  The entry
  // matches the megaflow restricted to tcam_fields().
  TcamInsertResult insert(uint32_t datapath, uint32_t megaflow_id, uint32_t megaflow_generation,
                          const FlowKey& megaflow_key, const FlowKey& megaflow_mask);
  // Would insert() of this megaflow be refused, and why (no side effects).
  TcamRefusal check(const FlowKey& megaflow_key, const FlowKey& megaflow_mask) const;
  bool remove(uint32_t index);  // false: no entry there

  // TCAM semantics: the lowest index among the entries matching the packet.
  const TcamEntry* lookup(const FlowKey& packet_key) const;
  const TcamEntry* at(uint32_t index) const;
  // The entry with exactly this TCAM (key, mask) (already restricted), if any.
  const TcamEntry* find(const FlowKey& key, const FlowKey& mask) const;

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return static_cast<uint32_t>(slots_.size()); }
  size_t mask_count() const { return masks_.size(); }
  std::vector<TcamEntry> entries() const;  // by index

  // Tests only: the generation the index's next entry will follow.
  void set_generation_for_test(uint32_t index, uint32_t generation) {
    generations_.at(index) = generation;
  }

 private:
  // Tuple-space search, like the emulated NIC: one hash table per mask.
  struct MaskTable {
    FlowKey mask;
    absl::flat_hash_map<FlowKey, uint32_t, FlowKeyHash, FlowKeyEqual> keys;  // -> index
  };
  MaskTable* table_for(const FlowKey& mask);
  const MaskTable* table_for(const FlowKey& mask) const;

  std::vector<std::optional<TcamEntry>> slots_;
  std::vector<uint32_t> generations_;  // last generation handed out per index
  std::vector<MaskTable> masks_;       // at most SF_TCAM_MAX_MASKS
  std::set<uint32_t> free_;            // lowest first: deterministic placement
  uint32_t size_ = 0;
};

// Where the Offloader's decisions go.  A real device writes the switch's
// sf_hints entry before the NIC's TCAM entry on install (so a mark can be
// verified before any frame carries it) and removes them in the other order on
// erase (so a stale mark is refused at once).  Called with the Offloader's lock
// held: implementations must not call back into the Offloader.
class TcamDevice {
 public:
  virtual ~TcamDevice() = default;
  virtual Status install(const TcamEntry& entry) = 0;
  virtual void erase(const TcamEntry& entry) = 0;
  virtual uint64_t hits(uint32_t /*index*/) const { return 0; }  // the NIC's counter
};

// One live megaflow in a rebalance snapshot.
struct OffloadCandidate {
  uint32_t datapath = 0;
  uint32_t megaflow_id = 0;
  uint32_t megaflow_generation = 0;
  FlowKey key;  // masked
  FlowKey mask;
  uint64_t packets = 0;  // cumulative n_packets
};

struct OffloadStats {
  uint64_t entries = 0;     // in the TCAM now
  uint64_t installs = 0;    // entries programmed
  uint64_t evictions = 0;   // entries taken out for more active megaflows
  uint64_t removals = 0;    // entries taken out because their megaflow went
  uint64_t refused = 0;     // device errors and mask-limit refusals
  uint64_t conflicts = 0;   // lost to another megaflow with the same TCAM match
  uint64_t not_stage0 = 0;  // offers (installs, snapshot candidates) not at stage 0
  uint64_t rebalances = 0;
};

// The offload policy.  Thread-safe: megaflow_installed/removed come from PMD
// threads, rebalance from the main thread.  One caller rebalances, taking each
// snapshot after the previous rebalance() returned, and a megaflow reported
// removed is in no snapshot taken afterwards (the cache tells and forgets in
// one step).  Then a megaflow missing from one snapshot is missing from all
// later ones, which lets a removal's tombstone go at the first snapshot
// without it.
class Offloader {
 public:
  Offloader(uint32_t capacity, TcamDevice& device);  // throws like Tcam

  // A new stage-0 megaflow goes in at once while there is room; otherwise it
  // waits for rebalance().
  void megaflow_installed(uint32_t datapath, const Megaflow& mf);
  // Erases the megaflow's entry from the device before returning, so its mark
  // is refused from then on.
  void megaflow_removed(uint32_t datapath, const Megaflow& mf);
  // Keeps the most active candidates (packets since the last rebalance) in
  // the TCAM; ties keep what is in.  An entry whose megaflow is not in the
  // snapshot goes, unless it was installed since the last rebalance (the
  // snapshot may be older than it): it goes if the next snapshot lacks it too.
  void rebalance(std::span<const OffloadCandidate> candidates);

  std::vector<TcamEntry> entries() const;  // by index, with 'recent'
  uint32_t capacity() const { return tcam_.capacity(); }
  OffloadStats stats() const;

 private:
  struct MegaflowRef {
    uint32_t datapath;
    uint32_t id;
    uint32_t generation;
    bool operator==(const MegaflowRef&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const MegaflowRef& r) {
      return H::combine(std::move(h), r.datapath, r.id, r.generation);
    }
  };
  struct Offloaded {
    uint32_t index;
    uint64_t recent;
    bool fresh;  // installed since the last rebalance: maybe newer than its snapshot
  };
  struct Ranked;

  bool install_locked(const MegaflowRef& ref, const FlowKey& key, const FlowKey& mask,
                      uint64_t recent, bool fresh);
  void erase_locked(const MegaflowRef& ref);

  mutable std::mutex mutex_;
  TcamDevice& device_;
  Tcam tcam_;
  absl::flat_hash_map<MegaflowRef, Offloaded> offloaded_;
  absl::flat_hash_map<MegaflowRef, uint64_t> packets_seen_;  // at the last rebalance
  absl::flat_hash_set<MegaflowRef> removed_;  // gone since the last rebalance's snapshot
  OffloadStats stats_;
};

}  // namespace softflow

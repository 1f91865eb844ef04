// The emulated NIC's TCAM model and the offload policy (see tcam.h).
#include "tcam.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>

namespace softflow {

namespace {

constexpr uint32_t kMarkGenerationMask = (1u << SF_MARK_GENERATION_BITS) - 1;

// A TCAM match: what the NIC keys its table by.
struct TcamMatch {
  FlowKey key;
  FlowKey mask;
  bool operator==(const TcamMatch& o) const {
    return key_equal(key, o.key) && key_equal(mask, o.mask);
  }
};
struct TcamMatchHash {
  size_t operator()(const TcamMatch& m) const {
    return (static_cast<size_t>(key_hash(m.key)) << 32) ^ key_hash(m.mask);
  }
};

TcamMatch restrict_to_tcam(const FlowKey& megaflow_key, const FlowKey& megaflow_mask) {
  TcamMatch m;
  m.mask = key_and(megaflow_mask, tcam_fields());
  m.key = key_and(megaflow_key, m.mask);
  return m;
}

}  // namespace

FlowKey tcam_fields() {
  static const FlowKey fields = [] {
    FlowKey m = zero_key();
    // kIpv6Src/kIpv6Dst are the whole address slots, so they cover the IPv4
    // fields (nw_src/nw_dst) as well.
    for (Field f : {Field::kInPort, Field::kDlDst, Field::kDlSrc, Field::kDlType, Field::kVlanTci,
                    Field::kIpv6Src, Field::kIpv6Dst, Field::kNwProto, Field::kNwTos, Field::kTpSrc,
                    Field::kTpDst})
      key_or_into(m, field_mask(f));
    return m;
  }();
  return fields;
}

bool is_stage0(const FlowKey& megaflow_key, const FlowKey& megaflow_mask) {
  const FlowKey k = key_and(megaflow_key, megaflow_mask);
  return k.sf_stage == 0 && k.sf_action == SF_ACTION_NONE && k.sf_metadata == 0;
}

sf_hint to_hint(const TcamEntry& entry) {
  sf_hint h{};
  h.generation = entry.generation;
  h.datapath = entry.datapath;
  h.ref.id = entry.megaflow_id;
  h.ref.generation = entry.megaflow_generation;
  h.key = entry.megaflow_key;
  h.mask = entry.megaflow_mask;
  return h;
}

const char* to_string(TcamRefusal refusal) {
  switch (refusal) {
    case TcamRefusal::kNone:
      return "none";
    case TcamRefusal::kFull:
      return "TCAM full";
    case TcamRefusal::kDuplicate:
      return "an entry with the same match exists";
    case TcamRefusal::kTooManyMasks:
      return "TCAM mask limit reached";
  }
  return "?";
}

// ---- Tcam -------------------------------------------------------------------

Tcam::Tcam(uint32_t capacity) {
  if (capacity < 1 || capacity > SF_TCAM_MAX_ENTRIES)
    throw std::invalid_argument("TCAM capacity " + std::to_string(capacity) + " is outside 1.." +
                                std::to_string(SF_TCAM_MAX_ENTRIES));
  slots_.resize(capacity);
  generations_.assign(capacity, 0);
  for (uint32_t i = 0; i < capacity; ++i) free_.insert(free_.end(), i);
}

Tcam::MaskTable* Tcam::table_for(const FlowKey& mask) {
  for (MaskTable& t : masks_)
    if (key_equal(t.mask, mask)) return &t;
  return nullptr;
}

const Tcam::MaskTable* Tcam::table_for(const FlowKey& mask) const {
  return const_cast<Tcam*>(this)->table_for(mask);
}

TcamRefusal Tcam::check(const FlowKey& megaflow_key, const FlowKey& megaflow_mask) const {
  const TcamMatch m = restrict_to_tcam(megaflow_key, megaflow_mask);
  if (free_.empty()) return TcamRefusal::kFull;
  const MaskTable* table = table_for(m.mask);
  if (table == nullptr)
    return masks_.size() >= SF_TCAM_MAX_MASKS ? TcamRefusal::kTooManyMasks : TcamRefusal::kNone;
  return table->keys.contains(m.key) ? TcamRefusal::kDuplicate : TcamRefusal::kNone;
}

TcamInsertResult Tcam::insert(uint32_t datapath, uint32_t megaflow_id, uint32_t megaflow_generation,
                              const FlowKey& megaflow_key, const FlowKey& megaflow_mask) {
  if (TcamRefusal r = check(megaflow_key, megaflow_mask); r != TcamRefusal::kNone) return {r};
  const TcamMatch m = restrict_to_tcam(megaflow_key, megaflow_mask);

  const uint32_t index = *free_.begin();
  free_.erase(free_.begin());
  // The mark carries only the low bits of the generation, and a mark of 0
  // would read as "no mark": skip generations whose low bits are all 0.
  uint32_t generation = generations_[index] + 1;
  if ((generation & kMarkGenerationMask) == 0) ++generation;
  generations_[index] = generation;

  MaskTable* table = table_for(m.mask);
  if (table == nullptr) table = &masks_.emplace_back(MaskTable{m.mask, {}});
  table->keys.emplace(m.key, index);

  TcamEntry& e = slots_[index].emplace();
  e.index = index;
  e.generation = generation;
  e.mark = SF_MARK(index, generation);
  e.key = m.key;
  e.mask = m.mask;
  e.datapath = datapath;
  e.megaflow_id = megaflow_id;
  e.megaflow_generation = megaflow_generation;
  e.megaflow_mask = megaflow_mask;
  e.megaflow_key = key_and(megaflow_key, megaflow_mask);
  // The SoftFlow metadata of a stage-0 megaflow is 0 for every frame off the
  // wire: matching it leaves nothing for software to resolve.
  FlowKey wire_mask = megaflow_mask;
  wire_mask.sf_stage = 0;
  wire_mask.sf_action = 0;
  wire_mask.sf_metadata = 0;
  e.partial = !key_equal(m.mask, wire_mask);
  ++size_;
  return {TcamRefusal::kNone, &e};
}

bool Tcam::remove(uint32_t index) {
  if (index >= slots_.size() || !slots_[index]) return false;
  const TcamEntry& e = *slots_[index];
  MaskTable* table = table_for(e.mask);
  table->keys.erase(e.key);
  if (table->keys.empty()) {  // free the mask for another
    *table = std::move(masks_.back());
    masks_.pop_back();
  }
  slots_[index].reset();
  free_.insert(index);
  --size_;
  return true;
}

const TcamEntry* Tcam::lookup(const FlowKey& packet_key) const {
  const TcamEntry* best = nullptr;
  for (const MaskTable& t : masks_) {
    auto it = t.keys.find(key_and(packet_key, t.mask));
    if (it != t.keys.end() && (best == nullptr || it->second < best->index))
      best = &*slots_[it->second];
  }
  return best;
}

const TcamEntry* Tcam::at(uint32_t index) const {
  return index < slots_.size() && slots_[index] ? &*slots_[index] : nullptr;
}

const TcamEntry* Tcam::find(const FlowKey& key, const FlowKey& mask) const {
  const MaskTable* table = table_for(mask);
  if (table == nullptr) return nullptr;
  auto it = table->keys.find(key);
  return it == table->keys.end() ? nullptr : &*slots_[it->second];
}

std::vector<TcamEntry> Tcam::entries() const {
  std::vector<TcamEntry> out;
  out.reserve(size_);
  for (const auto& slot : slots_)
    if (slot) out.push_back(*slot);
  return out;
}

// ---- Offloader ----------------------------------------------------------------

Offloader::Offloader(uint32_t capacity, TcamDevice& device) : device_(device), tcam_(capacity) {}

bool Offloader::install_locked(const MegaflowRef& ref, const FlowKey& key, const FlowKey& mask,
                               uint64_t recent, bool fresh) {
  const TcamInsertResult r = tcam_.insert(ref.datapath, ref.id, ref.generation, key, mask);
  if (!r.ok()) {
    if (r.refusal == TcamRefusal::kDuplicate)
      ++stats_.conflicts;
    else if (r.refusal == TcamRefusal::kTooManyMasks)
      ++stats_.refused;
    return false;  // kFull: waits for room
  }
  if (!device_.install(*r.entry).is_ok()) {
    tcam_.remove(r.entry->index);  // the generation stays used: it only grows
    ++stats_.refused;
    return false;
  }
  offloaded_[ref] = Offloaded{r.entry->index, recent, fresh};
  ++stats_.installs;
  return true;
}

void Offloader::erase_locked(const MegaflowRef& ref) {
  auto it = offloaded_.find(ref);
  if (it == offloaded_.end()) return;
  device_.erase(*tcam_.at(it->second.index));
  tcam_.remove(it->second.index);
  offloaded_.erase(it);
}

void Offloader::megaflow_installed(uint32_t datapath, const Megaflow& mf) {
  std::lock_guard lock(mutex_);
  if (!is_stage0(mf.key, mf.mask)) {
    ++stats_.not_stage0;
    return;
  }
  const MegaflowRef ref{datapath, mf.id, mf.generation};
  if (offloaded_.contains(ref) || tcam_.size() == tcam_.capacity()) return;
  install_locked(ref, mf.key, mf.mask, 0, /*fresh=*/true);
}

void Offloader::megaflow_removed(uint32_t datapath, const Megaflow& mf) {
  std::lock_guard lock(mutex_);
  const MegaflowRef ref{datapath, mf.id, mf.generation};
  // A rebalance whose snapshot predates this removal must not bring it back.
  removed_.insert(ref);
  if (offloaded_.contains(ref)) {
    erase_locked(ref);
    ++stats_.removals;
  }
}

struct Offloader::Ranked {
  MegaflowRef ref;
  FlowKey key;
  FlowKey mask;
  uint64_t recent;
  bool installed;
};

void Offloader::rebalance(std::span<const OffloadCandidate> candidates) {
  std::lock_guard lock(mutex_);
  ++stats_.rebalances;

  // 1. The live stage-0 megaflows and their packets since the last rebalance.
  std::vector<Ranked> ranked;
  ranked.reserve(candidates.size());
  absl::flat_hash_map<MegaflowRef, uint64_t> packets_now;
  absl::flat_hash_set<MegaflowRef> still_removed;
  for (const OffloadCandidate& c : candidates) {
    const MegaflowRef ref{c.datapath, c.megaflow_id, c.megaflow_generation};
    if (!is_stage0(c.key, c.mask)) {
      ++stats_.not_stage0;
      continue;
    }
    if (removed_.contains(ref)) {  // the snapshot is older than the removal
      still_removed.insert(ref);
      continue;
    }
    if (!packets_now.emplace(ref, c.packets).second) continue;  // listed twice
    auto seen = packets_seen_.find(ref);
    const uint64_t recent = seen != packets_seen_.end() && c.packets >= seen->second
                                ? c.packets - seen->second
                                : c.packets;
    ranked.push_back(Ranked{ref, c.key, c.mask, recent, offloaded_.contains(ref)});
  }
  // A snapshot without a removed megaflow was taken after its removal, and so
  // are all later ones: its tombstone is no longer needed.
  removed_ = std::move(still_removed);
  packets_seen_ = std::move(packets_now);

  // 2. Entries whose megaflow is not in the snapshot: gone, unless installed
  // after the last rebalance (the snapshot may predate it; a removal would
  // have erased it already).  Those stay in the running with no hits.
  std::vector<MegaflowRef> gone;
  for (auto& [ref, off] : offloaded_) {
    if (packets_seen_.contains(ref)) continue;
    if (off.fresh) {
      const TcamEntry& e = *tcam_.at(off.index);
      ranked.push_back(Ranked{ref, e.megaflow_key, e.megaflow_mask, 0, true});
    } else {
      gone.push_back(ref);
    }
  }
  for (const MegaflowRef& ref : gone) {
    erase_locked(ref);
    ++stats_.removals;
  }

  // 3. The most active first; ties keep what is installed (no churn), then a
  // fixed order so the outcome does not depend on the snapshot's order.
  std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    if (a.recent != b.recent) return a.recent > b.recent;
    if (a.installed != b.installed) return a.installed;
    return std::tie(a.ref.datapath, a.ref.id, a.ref.generation) <
           std::tie(b.ref.datapath, b.ref.id, b.ref.generation);
  });

  // 4. Choose the new contents: the top of the ranking, one megaflow per TCAM
  // match and at most SF_TCAM_MAX_MASKS masks.
  absl::flat_hash_set<TcamMatch, TcamMatchHash> matches;
  std::vector<FlowKey> masks;
  std::vector<const Ranked*> chosen;
  absl::flat_hash_set<MegaflowRef> chosen_refs;
  for (const Ranked& r : ranked) {
    const TcamMatch m = restrict_to_tcam(r.key, r.mask);
    if (matches.contains(m)) {
      ++stats_.conflicts;
      continue;
    }
    if (chosen.size() == tcam_.capacity()) break;
    const bool new_mask = std::none_of(masks.begin(), masks.end(),
                                       [&](const FlowKey& k) { return key_equal(k, m.mask); });
    if (new_mask && masks.size() >= SF_TCAM_MAX_MASKS) {
      ++stats_.refused;
      continue;
    }
    if (new_mask) masks.push_back(m.mask);
    matches.insert(m);
    chosen.push_back(&r);
    chosen_refs.insert(r.ref);
  }

  // 5. Program the difference: out first, so the TCAM never exceeds its
  // capacity and a match or mask is free before its new owner needs it.
  std::vector<MegaflowRef> evicted;
  for (const auto& [ref, off] : offloaded_)
    if (!chosen_refs.contains(ref)) evicted.push_back(ref);
  for (const MegaflowRef& ref : evicted) {
    erase_locked(ref);
    ++stats_.evictions;
  }
  for (const Ranked* r : chosen) {
    auto it = offloaded_.find(r->ref);
    if (it != offloaded_.end()) {
      it->second.recent = r->recent;
      it->second.fresh = false;
    } else {
      install_locked(r->ref, r->key, r->mask, r->recent, /*fresh=*/false);
    }
  }
}

std::vector<TcamEntry> Offloader::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<TcamEntry> out = tcam_.entries();
  absl::flat_hash_map<uint32_t, uint64_t> recent_by_index;
  for (const auto& [ref, off] : offloaded_) recent_by_index[off.index] = off.recent;
  for (TcamEntry& e : out) e.recent = recent_by_index[e.index];
  return out;
}

OffloadStats Offloader::stats() const {
  std::lock_guard lock(mutex_);
  OffloadStats s = stats_;
  s.entries = tcam_.size();
  return s;
}

}  // namespace softflow

#include "softflow/megaflow.h"

#include <algorithm>
#include <bit>

namespace softflow {
namespace {
// Re-rank subtables by hits after this many classifier lookups (OVS re-sorts
// its dpcls subtables about once a second; a lookup count is deterministic).
constexpr uint64_t kRankInterval = 1 << 14;
}  // namespace

MegaflowCache::MegaflowCache(MegaflowCacheConfig config) : config_(config) {
  if (config_.emc_entries) {
    const size_t n = std::bit_ceil(config_.emc_entries);
    emc_.resize(n);
    emc_mask_ = n - 1;
  }
}

Megaflow* MegaflowCache::lookup_emc(const FlowKey& key, uint32_t hash) {
  if (emc_.empty()) return nullptr;
  // Two candidate ways per key.
  const size_t ways[2] = {hash & emc_mask_, (hash >> 16 ^ hash * 0x9e3779b1u) & emc_mask_};
  for (size_t w : ways) {
    EmcEntry& e = emc_[w];
    if (e.generation == 0 || !key_equal(e.key, key)) continue;
    Megaflow& mf = slots_[e.slot];
    if (mf.alive && mf.generation == e.generation) return &mf;
    e.generation = 0;  // stale: the megaflow went away
  }
  return nullptr;
}

void MegaflowCache::emc_insert(const FlowKey& key, uint32_t hash, const Megaflow& mf) {
  if (emc_.empty()) return;
  const size_t ways[2] = {hash & emc_mask_, (hash >> 16 ^ hash * 0x9e3779b1u) & emc_mask_};
  size_t target = ways[0];
  bool found_free = false;
  for (size_t w : ways) {
    const EmcEntry& e = emc_[w];
    if (e.generation == 0 || !slots_[e.slot].alive || slots_[e.slot].generation != e.generation) {
      target = w;
      found_free = true;
      break;
    }
  }
  if (!found_free) target = ways[emc_victim_++ & 1];
  EmcEntry& e = emc_[target];
  e.key = key;
  e.slot = mf.id;
  e.generation = mf.generation;
}

Megaflow* MegaflowCache::lookup_classifier(const FlowKey& key, MegaflowLookupStats& stats) {
  if (++lookups_since_rank_ >= kRankInterval) rank_subtables();
  for (auto& st : subtables_) {
    ++stats.subtables_searched;
    const FlowKey masked = key_and(key, st->mask);
    auto it = st->flows.find(masked);
    if (it != st->flows.end()) {
      ++st->hits;
      return &slots_[it->second];
    }
  }
  return nullptr;
}

Megaflow* MegaflowCache::lookup(const FlowKey& key, uint32_t hash, MegaflowLookupStats& stats) {
  if (Megaflow* mf = lookup_emc(key, hash)) {
    ++stats.emc_hits;
    return mf;
  }
  if (Megaflow* mf = lookup_classifier(key, stats)) {
    ++stats.megaflow_hits;
    emc_insert(key, hash, *mf);
    return mf;
  }
  ++stats.misses;
  return nullptr;
}

void MegaflowCache::rank_subtables() {
  lookups_since_rank_ = 0;
  std::stable_sort(subtables_.begin(), subtables_.end(),
                   [](const auto& a, const auto& b) { return a->hits > b->hits; });
  // Decay so the order follows the current traffic.
  for (auto& st : subtables_) st->hits /= 2;
}

MegaflowCache::Subtable* MegaflowCache::subtable_for(const FlowKey& mask, bool create) {
  for (auto& st : subtables_)
    if (key_equal(st->mask, mask)) return st.get();
  if (!create) return nullptr;
  auto st = std::make_unique<Subtable>();
  st->mask = mask;
  subtables_.push_back(std::move(st));
  return subtables_.back().get();
}

Megaflow* MegaflowCache::install(const FlowKey& key, const FlowKey& mask,
                                 std::vector<MegaflowSegment> segments, uint64_t now_ns) {
  const FlowKey masked = key_and(key, mask);
  Subtable* st = subtable_for(mask, true);
  if (auto it = st->flows.find(masked); it != st->flows.end()) {
    // The same megaflow was built twice (several packets of one flow missed
    // in one batch).  Both are correct; keep the one packets may be using.
    return &slots_[it->second];
  }
  if (live_ >= config_.max_megaflows) {
    if (st->flows.empty()) {
      subtables_.erase(std::find_if(subtables_.begin(), subtables_.end(),
                                    [st](const auto& p) { return p.get() == st; }));
    }
    return nullptr;
  }
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Megaflow& mf = slots_[slot];
  const uint32_t generation = mf.generation + 1 == 0 ? 1 : mf.generation + 1;
  mf = Megaflow{};
  mf.id = slot;
  mf.generation = generation;
  mf.alive = true;
  mf.key = masked;
  mf.mask = mask;
  mf.segments = std::move(segments);
  mf.created_ns = now_ns;
  mf.used_ns = now_ns;
  st->flows.emplace(masked, slot);
  ++live_;
  if (observer_ != nullptr) observer_->megaflow_installed(mf);
  return &mf;
}

void MegaflowCache::remove(Megaflow* mf) {
  if (mf == nullptr || !mf->alive) return;
  if (observer_ != nullptr) observer_->megaflow_removed(*mf);
  Subtable* st = subtable_for(mf->mask, false);
  if (st != nullptr) {
    st->flows.erase(mf->key);
    if (st->flows.empty())
      subtables_.erase(std::find_if(subtables_.begin(), subtables_.end(),
                                    [st](const auto& p) { return p.get() == st; }));
  }
  mf->alive = false;
  mf->segments.clear();
  mf->segments.shrink_to_fit();
  free_slots_.push_back(mf->id);
  --live_;
}

void MegaflowCache::clear() {
  for (Megaflow& mf : slots_)
    if (mf.alive) remove(&mf);
}

Megaflow* MegaflowCache::find(uint32_t id, uint32_t generation) {
  if (id >= slots_.size()) return nullptr;
  Megaflow& mf = slots_[id];
  return mf.alive && mf.generation == generation ? &mf : nullptr;
}

}  // namespace softflow

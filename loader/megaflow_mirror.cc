#include "megaflow_mirror.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cstring>

namespace softflow {

class MegaflowMirror::Observer : public MegaflowObserver {
 public:
  Observer(MegaflowMirror& mirror, uint32_t datapath) : mirror_(mirror), datapath_(datapath) {}
  void megaflow_installed(const Megaflow& mf) override { mirror_.installed(datapath_, mf); }
  void megaflow_removed(const Megaflow& mf) override { mirror_.removed(datapath_, mf); }

 private:
  MegaflowMirror& mirror_;
  uint32_t datapath_;
};

MegaflowMirror::MegaflowMirror(const XdpMaps& maps) : maps_(maps) {
  uint32_t zero = 0;
  sf_xdp_config config{};
  if (bpf_map_lookup_elem(maps_.config, &zero, &config) == 0) {
    epoch_ = config.emc_epoch;
    flags_ = config.flags;
  }
  write_config();
}

MegaflowMirror::~MegaflowMirror() = default;

MegaflowObserver* MegaflowMirror::observer(uint32_t datapath) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (observers_.size() <= datapath) {
    observers_.push_back(std::make_unique<Observer>(*this, static_cast<uint32_t>(observers_.size())));
    mirrored_.emplace_back();
  }
  return observers_[datapath].get();
}

void MegaflowMirror::write_config() {
  sf_xdp_config config{};
  config.n_masks = static_cast<uint32_t>(order_.size());
  config.emc_epoch = epoch_;
  config.flags = flags_;
  std::copy(order_.begin(), order_.end(), config.order);
  uint32_t zero = 0;
  bpf_map_update_elem(maps_.config, &zero, &config, BPF_ANY);
}

int MegaflowMirror::acquire_mask(const FlowKey& mask) {
  int free_slot = -1;
  for (int i = 0; i < SF_MAX_MASKS; ++i) {
    if (slots_[i].refs > 0 && key_equal(slots_[i].mask, mask)) {
      ++slots_[i].refs;
      return i;
    }
    if (slots_[i].refs == 0 && free_slot < 0) free_slot = i;
  }
  if (free_slot < 0) return -1;
  MaskSlot& s = slots_[free_slot];
  s.mask = mask;
  s.refs = 1;
  s.recent = 0;
  uint32_t key = static_cast<uint32_t>(free_slot);
  // The mask is in place before the slot is searched or any entry uses it.
  bpf_map_update_elem(maps_.masks, &key, &mask, BPF_ANY);
  order_.push_back(static_cast<uint8_t>(free_slot));
  write_config();
  return free_slot;
}

void MegaflowMirror::release_mask(int slot) {
  if (--slots_[slot].refs > 0) return;
  order_.erase(std::find(order_.begin(), order_.end(), static_cast<uint8_t>(slot)));
  write_config();
}

void MegaflowMirror::installed(uint32_t datapath, const Megaflow& mf) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Only megaflows a packet can hit before any SoftFlow action.
  if (mf.key.sf_stage != 0 || mf.key.sf_action != 0 || mf.key.sf_metadata != 0) {
    ++stats_.not_stage0;
    return;
  }
  const int slot = acquire_mask(mf.mask);
  if (slot < 0) {
    ++stats_.no_mask_slot;
    return;
  }
  sf_megaflow_map_key key{};
  key.mask_slot = static_cast<uint32_t>(slot);
  key.datapath = datapath;
  key.key = mf.key;
  const sf_megaflow_ref ref{mf.id, mf.generation};
  if (bpf_map_update_elem(maps_.megaflows, &key, &ref, BPF_ANY) != 0) {
    ++stats_.map_full;
    release_mask(slot);
    return;
  }
  auto& ids = mirrored_[datapath];
  if (ids.size() <= mf.id) ids.resize(mf.id + 1, 0);
  ids[mf.id] = static_cast<uint8_t>(slot + 1);
  ++stats_.mirrored;
  ++stats_.entries;
}

void MegaflowMirror::removed(uint32_t datapath, const Megaflow& mf) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& ids = mirrored_[datapath];
  if (mf.id >= ids.size() || ids[mf.id] == 0) return;
  const int slot = ids[mf.id] - 1;
  ids[mf.id] = 0;
  sf_megaflow_map_key key{};
  key.mask_slot = static_cast<uint32_t>(slot);
  key.datapath = datapath;
  key.key = mf.key;
  bpf_map_delete_elem(maps_.megaflows, &key);
  // EMC entries may name this megaflow: invalidate them all.
  ++epoch_;
  release_mask(slot);  // writes the config when the slot goes
  write_config();
  ++stats_.removed;
  --stats_.entries;
}

void MegaflowMirror::rank() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (order_.size() < 2) return;
  const int n_cpus = libbpf_num_possible_cpus();
  if (n_cpus <= 0) return;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(n_cpus));
  for (uint8_t slot : order_) {
    uint32_t key = slot;
    if (bpf_map_lookup_elem(maps_.mask_hits, &key, per_cpu.data()) != 0) continue;
    uint64_t total = 0;
    for (uint64_t v : per_cpu) total += v;
    MaskSlot& s = slots_[slot];
    s.recent = total >= s.hits_seen ? total - s.hits_seen : total;
    s.hits_seen = total;
  }
  std::vector<uint8_t> sorted = order_;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](uint8_t a, uint8_t b) { return slots_[a].recent > slots_[b].recent; });
  if (sorted != order_) {
    order_ = std::move(sorted);
    write_config();
  }
}

MirrorStats MegaflowMirror::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  MirrorStats s = stats_;
  s.masks = static_cast<uint32_t>(order_.size());
  return s;
}

}  // namespace softflow

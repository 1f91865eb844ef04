#include "nic_tcam.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "percpu.h"
#include "sf_nic.skel.h"

namespace softflow {

namespace {
constexpr const char* kNicMaps[] = {SF_MAP_TCAM,      SF_MAP_TCAM_MASKS, SF_MAP_TCAM_CONFIG,
                                    SF_MAP_TCAM_HITS, SF_MAP_NIC_PORTS,  SF_MAP_NIC_STATS};
}  // namespace

Result<std::unique_ptr<NicTcam>> NicTcam::open(const std::string& pin_dir,
                                               const XdpMaps& switch_maps) {
  if (pin_dir.empty())
    return Status::error(
        "the emulated NIC needs a pin directory (--pin-dir): `sf-nic` finds the TCAM there");
  if (switch_maps.hints < 0)
    return Status::error(fmt::format("the XDP program has no {} map", SF_MAP_HINTS));
  std::unique_ptr<NicTcam> t(new NicTcam());
  std::vector<std::string> existed;
  for (const char* name : kNicMaps)
    if (access((pin_dir + "/" + name).c_str(), F_OK) == 0) existed.push_back(name);

  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  t->skel_ = sf_nic__open_opts(&opts);
  if (t->skel_ == nullptr)
    return Status::error(fmt::format("cannot open the NIC's BPF object: {}", std::strerror(errno)));
  // Only the maps: the program runs where `sf-nic` attaches it.
  bpf_program__set_autoload(t->skel_->progs.sf_nic, false);
  if (int err = sf_nic__load(t->skel_))
    return Status::error(
        fmt::format("cannot load the NIC's maps under {}: {}", pin_dir, std::strerror(-err)));
  t->pin_dir_ = pin_dir;

  t->hints_fd_ = switch_maps.hints;
  t->tcam_fd_ = bpf_map__fd(t->skel_->maps.sf_tcam);
  t->masks_fd_ = bpf_map__fd(t->skel_->maps.sf_tcam_masks);
  t->config_fd_ = bpf_map__fd(t->skel_->maps.sf_tcam_config);
  t->hits_fd_ = bpf_map__fd(t->skel_->maps.sf_tcam_hits);
  t->stats_fd_ = bpf_map__fd(t->skel_->maps.sf_nic_stats);
  t->n_cpus_ = std::max(1, libbpf_num_possible_cpus());
  t->slot_of_index_.assign(SF_TCAM_MAX_ENTRIES, -1);

  // A table left by an earlier life goes: its marks name nothing now.
  std::vector<uint8_t> key(sizeof(sf_tcam_key));
  while (bpf_map_get_next_key(t->tcam_fd_, nullptr, key.data()) == 0)
    if (bpf_map_delete_elem(t->tcam_fd_, key.data()) != 0) break;
  sf_tcam_config config{};
  uint32_t zero = 0;
  const bool new_config =
      std::find(existed.begin(), existed.end(), SF_MAP_TCAM_CONFIG) == existed.end();
  if (bpf_map_lookup_elem(t->config_fd_, &zero, &config) != 0 || new_config)
    config.mark_per_64k = 65536;  // a new NIC marks everything it matches
  config.n_masks = 0;
  bpf_map_update_elem(t->config_fd_, &zero, &config, BPF_ANY);
  return t;
}

NicTcam::~NicTcam() {
  if (skel_ == nullptr) return;
  for (uint32_t i = 0; i < slot_of_index_.size(); ++i) {
    if (slot_of_index_[i] < 0) continue;
    const sf_hint none{};
    bpf_map_update_elem(hints_fd_, &i, &none, BPF_ANY);
  }
  order_.clear();
  write_config();  // the NIC stops marking
  std::vector<uint8_t> key(sizeof(sf_tcam_key));
  while (bpf_map_get_next_key(tcam_fd_, nullptr, key.data()) == 0)
    if (bpf_map_delete_elem(tcam_fd_, key.data()) != 0) break;
  // The NIC's maps are its hardware: they stay while an sf-nic uses them
  // (it has ports in sf_nic_ports), so that a restarted softflowd programs
  // the same NIC.  The last one out unpins them (sf-nic does the same).
  uint32_t port = 0;
  if (bpf_map_get_next_key(bpf_map__fd(skel_->maps.sf_nic_ports), nullptr, &port) != 0)
    for (const char* name : kNicMaps) unlink((pin_dir_ + "/" + name).c_str());
  sf_nic__destroy(skel_);
}

void NicTcam::write_config() {
  uint32_t zero = 0;
  sf_tcam_config config{};
  bpf_map_lookup_elem(config_fd_, &zero, &config);  // keeps sf-nic's mark_per_64k
  config.n_masks = static_cast<uint32_t>(order_.size());
  std::fill(std::begin(config.order), std::end(config.order), 0);
  std::copy(order_.begin(), order_.end(), config.order);
  bpf_map_update_elem(config_fd_, &zero, &config, BPF_ANY);
}

int NicTcam::acquire_mask(const FlowKey& mask) {
  int free_slot = -1;
  for (int i = 0; i < SF_TCAM_MAX_MASKS; ++i) {
    if (slots_[i].refs > 0 && key_equal(slots_[i].mask, mask)) {
      ++slots_[i].refs;
      return i;
    }
    if (slots_[i].refs == 0 && free_slot < 0) free_slot = i;
  }
  if (free_slot < 0) return -1;
  slots_[free_slot] = {mask, 1};
  uint32_t key = static_cast<uint32_t>(free_slot);
  bpf_map_update_elem(masks_fd_, &key, &mask, BPF_ANY);  // before the NIC searches it
  order_.push_back(static_cast<uint8_t>(free_slot));
  write_config();
  return free_slot;
}

void NicTcam::release_mask(int slot) {
  if (--slots_[slot].refs > 0) return;
  order_.erase(std::find(order_.begin(), order_.end(), static_cast<uint8_t>(slot)));
  write_config();
}

Status NicTcam::install(const TcamEntry& entry) {
  if (entry.index >= SF_TCAM_MAX_ENTRIES || slot_of_index_[entry.index] >= 0)
    return Status::error(fmt::format("TCAM index {} is taken or out of range", entry.index));
  uint32_t index = entry.index;
  const sf_hint hint = to_hint(entry);
  if (bpf_map_update_elem(hints_fd_, &index, &hint, BPF_ANY) != 0)
    return Status::error(fmt::format("{}[{}]: {}", SF_MAP_HINTS, index, std::strerror(errno)));
  // The index's hit counter starts again with the entry.
  const std::vector<uint64_t> zeros(static_cast<size_t>(n_cpus_), 0);
  bpf_map_update_elem(hits_fd_, &index, zeros.data(), BPF_ANY);
  const int slot = acquire_mask(entry.mask);
  sf_tcam_key key{};
  key.mask_index = static_cast<uint32_t>(slot);
  key.key = entry.key;
  const sf_tcam_action action{entry.mark, entry.index};
  if (slot < 0 || bpf_map_update_elem(tcam_fd_, &key, &action, BPF_ANY) != 0) {
    const int err = slot < 0 ? ENOSPC : errno;
    if (slot >= 0) release_mask(slot);
    const sf_hint none{};
    bpf_map_update_elem(hints_fd_, &index, &none, BPF_ANY);
    return Status::error(fmt::format("{}: {}", SF_MAP_TCAM, std::strerror(err)));
  }
  slot_of_index_[index] = static_cast<int16_t>(slot);
  return Status::ok();
}

void NicTcam::erase(const TcamEntry& entry) {
  if (entry.index >= SF_TCAM_MAX_ENTRIES || slot_of_index_[entry.index] < 0) return;
  uint32_t index = entry.index;
  const sf_hint none{};
  bpf_map_update_elem(hints_fd_, &index, &none, BPF_ANY);  // marks refused from here on
  const int slot = slot_of_index_[index];
  slot_of_index_[index] = -1;
  sf_tcam_key key{};
  key.mask_index = static_cast<uint32_t>(slot);
  key.key = entry.key;
  bpf_map_delete_elem(tcam_fd_, &key);
  release_mask(slot);
}

uint64_t NicTcam::hits(uint32_t index) const { return sum_percpu<uint64_t>(hits_fd_, index); }

sf_nic_stats NicTcam::nic_stats() const { return sum_percpu<sf_nic_stats>(stats_fd_, 0); }

}  // namespace softflow

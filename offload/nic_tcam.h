// The emulated NIC's TCAM as a TcamDevice: what the Offloader decides goes
// into the BPF maps.  Two sides per entry:
//   - the switch's copy, sf_hints[index] (sf_xdp's maps): what a mark must
//     agree with before the XDP program uses it;
//   - the NIC's table (bpf/sf_nic.bpf.c's maps, pinned by name under the
//     switch's pin directory, where `sf-nic` finds them): one hash table per
//     TCAM mask (sf_tcam_masks, at most SF_TCAM_MAX_MASKS, searched in the
//     order of sf_tcam_config) mapping the masked key to the mark.
// install() writes the switch's copy first and erase() clears it first, so a
// frame never carries a mark the switch cannot check, and a mark stops being
// trusted the moment its entry goes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sf_abi.h"
#include "softflow/status.h"
#include "tcam.h"
#include "xdp_loader.h"

struct sf_nic;  // the bpftool skeleton (sf_nic.skel.h)

namespace softflow {

class NicTcam : public TcamDevice {
 public:
  // Creates the NIC's maps under pin_dir (or reuses those an `sf-nic` made
  // there first) and empties its table.  switch_maps: the XDP loader's.
  static Result<std::unique_ptr<NicTcam>> open(const std::string& pin_dir,
                                               const XdpMaps& switch_maps);
  // Empties both sides; unpins the NIC's maps unless an sf-nic still uses them.
  ~NicTcam() override;
  NicTcam(const NicTcam&) = delete;
  NicTcam& operator=(const NicTcam&) = delete;

  Status install(const TcamEntry& entry) override;
  void erase(const TcamEntry& entry) override;
  uint64_t hits(uint32_t index) const override;  // the NIC's counter, summed over CPUs

  // The NIC's counters (sf_nic_stats), summed over CPUs.
  sf_nic_stats nic_stats() const;

 private:
  NicTcam() = default;
  int acquire_mask(const FlowKey& mask);
  void release_mask(int slot);
  void write_config();

  ::sf_nic* skel_ = nullptr;
  int hints_fd_ = -1;
  int tcam_fd_ = -1, masks_fd_ = -1, config_fd_ = -1, hits_fd_ = -1, stats_fd_ = -1;
  struct MaskSlot {
    FlowKey mask{};
    uint32_t refs = 0;
  };
  std::array<MaskSlot, SF_TCAM_MAX_MASKS> slots_{};
  std::vector<uint8_t> order_;          // slots in use, in search order
  std::vector<int16_t> slot_of_index_;  // entry index -> mask slot (-1: none)
  std::string pin_dir_;
  int n_cpus_ = 1;
};

}  // namespace softflow

// The BPF mirror of the stage-0 megaflows.
//
// Userspace owns the megaflow table; this writes the entries an XDP program
// can use (megaflows that match a packet fresh off the wire: sf_stage,
// sf_action and sf_metadata all zero) into the XDP maps as they are installed
// and removed.  Masks get slots (reference counted, at most SF_MAX_MASKS;
// megaflows with further masks stay userspace-only and are counted), and the
// search order of the slots follows their hit counts (rank()).  A removal
// bumps the EMC epoch, which invalidates every XDP EMC entry at once.
//
// One MegaflowMirror per switch; one observer per datapath (megaflow ids are
// per datapath).  Observers are called under their datapath's mutex, so the
// shared state has its own.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "sf_abi.h"
#include "softflow/megaflow.h"
#include "xdp_loader.h"

namespace softflow {

struct MirrorStats {
  uint64_t mirrored = 0;      // entries written
  uint64_t removed = 0;
  uint64_t not_stage0 = 0;    // megaflows XDP can never see
  uint64_t no_mask_slot = 0;  // all SF_MAX_MASKS slots in use
  uint64_t map_full = 0;      // the mirror map refused an entry
  uint32_t masks = 0;         // mask slots in use
  uint32_t entries = 0;       // entries in the map now
};

class MegaflowMirror {
 public:
  explicit MegaflowMirror(const XdpMaps& maps);
  ~MegaflowMirror();

  // The observer to register on datapath 'index''s megaflow cache.
  MegaflowObserver* observer(uint32_t datapath);
  // Re-sorts the mask search order by the hits XDP counted since last time.
  void rank();
  MirrorStats stats() const;

 private:
  class Observer;
  struct MaskSlot {
    FlowKey mask{};
    uint32_t refs = 0;
    uint64_t hits_seen = 0;  // sf_mask_hits total at the last rank()
    uint64_t recent = 0;     // hits since the previous rank()
  };

  void installed(uint32_t datapath, const Megaflow& mf);
  void removed(uint32_t datapath, const Megaflow& mf);
  int acquire_mask(const FlowKey& mask);
  void release_mask(int slot);
  void write_config();

  XdpMaps maps_;
  mutable std::mutex mutex_;
  std::array<MaskSlot, SF_MAX_MASKS> slots_{};
  std::vector<uint8_t> order_;  // slots in use, search order
  uint32_t epoch_ = 0;
  uint32_t flags_ = 0;  // the loader's, kept as they are
  MirrorStats stats_;
  // Per datapath: megaflow id -> mask slot + 1 (0: not mirrored).
  std::vector<std::vector<uint8_t>> mirrored_;
  std::vector<std::unique_ptr<Observer>> observers_;
};

}  // namespace softflow

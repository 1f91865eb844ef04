// Puts the XDP program on the switch's interfaces and hands out its maps.
//
// For each interface: an XDP program already attached is adopted when it is
// SoftFlow's (name sf_xdp with the sf_* maps: attached by hand with
// `ip link set dev IF xdpdrv obj sf_xdp.bpf.o sec xdp`, or left behind by a
// softflowd that was killed) and refused when it is anyone else's.  Otherwise
// the program (embedded in the binary as a bpftool skeleton) is loaded once,
// its maps pinned by name under the pin directory, and attached.  Every
// interface shares one program and one set of maps.
//
// On destruction everything this instance attached is detached (only if it is
// still the program we attached) and everything it pinned is unpinned; the
// maps of an adopted program are emptied so that it passes traffic to the
// kernel stack instead of redirecting to sockets that are gone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sf_abi.h"
#include "softflow/status.h"

struct sf_xdp;  // the bpftool skeleton (sf_xdp.skel.h)

namespace softflow {

enum class XdpMode : uint8_t { kNative, kGeneric };
std::string_view xdp_mode_name(XdpMode mode);
Result<XdpMode> parse_xdp_mode(std::string_view name);

// File descriptors of the program's maps (owned by the loader).
struct XdpMaps {
  int ports = -1;
  int xsks = -1;
  int masks = -1;
  int megaflows = -1;
  int config = -1;
  int emc = -1;
  int mask_hits = -1;
  int stats = -1;
  int hints = -1;
};

// The map fds of a loaded skeleton.
XdpMaps skeleton_maps(const ::sf_xdp& skeleton);

struct XdpInterface {
  std::string name;
  int ifindex = 0;
  XdpMode mode = XdpMode::kNative;  // how the program is attached there
  uint32_t prog_id = 0;
  bool adopted = false;   // it was attached before we started
  bool attached = false;  // we attached it (and detach it on exit)
};

struct XdpLoaderOptions {
  XdpMode mode = XdpMode::kNative;
  // Where the maps are pinned by name; "" disables pinning.  bpffs is mounted
  // on /sys/fs/bpf when it is not.
  std::string pin_dir = "/sys/fs/bpf/softflow";
};

class XdpLoader {
 public:
  static Result<std::unique_ptr<XdpLoader>> attach(const std::vector<std::string>& interfaces,
                                                   const XdpLoaderOptions& options);
  ~XdpLoader();
  XdpLoader(const XdpLoader&) = delete;
  XdpLoader& operator=(const XdpLoader&) = delete;

  const XdpMaps& maps() const { return maps_; }
  const std::vector<XdpInterface>& interfaces() const { return interfaces_; }
  int prog_fd() const { return prog_fd_; }
  uint32_t prog_id() const { return prog_id_; }
  const std::string& pinned_dir() const { return pinned_dir_; }

  // Empties every map userspace writes (ports, sockets, mirror, masks,
  // config); a restarted softflowd starts from nothing.
  void clear_maps();
  // The XDP counters summed over CPUs.
  sf_xdp_stats read_stats() const;

 private:
  XdpLoader() = default;
  Status adopt(uint32_t prog_id);
  Status load(const XdpLoaderOptions& options);
  void release();

  ::sf_xdp* skeleton_ = nullptr;
  int prog_fd_ = -1;
  uint32_t prog_id_ = 0;
  XdpMaps maps_;
  std::vector<int> owned_fds_;  // fds we opened by id (adopted program)
  std::vector<int> lock_fds_;   // flock()ed: interfaces and pin directory
  std::vector<XdpInterface> interfaces_;
  bool owned_ = false;      // SF_CONFIG_OWNED_BY_SOFTFLOWD: we attached it everywhere
  std::string pinned_dir_;  // non-empty: we pinned the maps here
  std::vector<std::string> pinned_paths_;
};

}  // namespace softflow

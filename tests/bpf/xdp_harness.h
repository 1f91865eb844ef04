// Runs the XDP program (build/bpf/sf_xdp.skel.h) on frames through
// BPF_PROG_RUN, without any network: the program is loaded with its maps
// unpinned (nothing under /sys/fs/bpf is read or written), the loopback
// device stands in as the ingress port (the kernel wants a real device for
// ingress_ifindex), and the metadata the program writes in front of the
// frame is read back from data_out.
//
// XdpTest is the fixture every test in tests/bpf uses: it checks that the
// process can run BPF programs, pins the thread to one CPU (the EMC and the
// counters are per CPU), loads a fresh program and registers the loopback as
// switch port kOfPort served by datapath kDatapath.  NicTest does the same
// for the emulated NIC (sf_nic.skel.h, NicProgram), loading the switch only
// when a test asks for it (load_switch()).
#pragma once

#include <gtest/gtest.h>
#include <linux/bpf.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sf_abi.h"
#include "softflow/flow_key.h"
#include "softflow/packet.h"
#include "xdp_loader.h"

struct sf_xdp;  // the skeletons (bpftool gen skeleton), kept out of the tests
struct sf_nic;

namespace softflow::bpf_test {

inline constexpr uint32_t kOfPort = 7;
inline constexpr uint8_t kDatapath = 3;

// The exit code of a test process that found a kernel feature missing
// (ctest SKIP_RETURN_CODE).
inline constexpr int kSkipExitCode = 77;

// What one BPF_PROG_RUN of the program gave.
struct XdpRun {
  int error = 0;               // 0, or -errno from BPF_PROG_RUN
  uint32_t verdict = 0;        // XDP_* the program returned
  uint32_t meta_len = 0;       // bytes between data_meta and data after the run
  uint32_t linear_len = 0;     // data_end - data after the run: what the program saw
  sf_xdp_meta meta{};          // valid when has_meta()
  std::vector<uint8_t> frame;  // data_out from data on: the frame after the run

  bool has_meta() const { return meta_len == sizeof(sf_xdp_meta); }
};

// What userspace's parse_packet() makes of the same bytes, with in_port set
// the way the XDP program sets it.
struct UserspaceParse {
  FlowKey key;
  uint16_t l3_ofs;
  uint16_t l4_ofs;
  uint16_t payload_ofs;
  uint16_t parse_flags;
};
UserspaceParse parse_in_userspace(std::span<const uint8_t> frame, uint32_t in_port = kOfPort);

// The CPUs the process may run on (its affinity when it started).
std::vector<int> usable_cpus();

// Metadata fields in one line, for failure messages.
std::string describe_meta(const sf_xdp_meta& meta);
std::string describe_key(const FlowKey& key);
std::string hex(std::span<const uint8_t> bytes);

// 'frame' with the emulated NIC's shim {0x88b5, version, 0, mark (big
// endian)} inserted after the MAC addresses (bytes 12-19), as sf_nic does.
std::vector<uint8_t> with_shim(std::span<const uint8_t> frame, uint32_t mark,
                               uint8_t version = SF_SHIM_VERSION);

// The mask with every bit of 'fields' set.
FlowKey fields_mask(std::initializer_list<Field> fields);

// The XDP program equals userspace on 'frame': key, l3/l4/payload offsets,
// parse flags, and the hash of the key.
::testing::AssertionResult meta_matches_userspace(const XdpRun& run,
                                                  std::span<const uint8_t> frame);

class XdpProgram {
 public:
  // Opens the skeleton, unpins every map and loads; nullptr and a message
  // on failure.
  static std::unique_ptr<XdpProgram> load(std::string* error);
  ~XdpProgram();
  XdpProgram(const XdpProgram&) = delete;
  XdpProgram& operator=(const XdpProgram&) = delete;

  // Runs the program once on 'frame' as if received on 'ifindex' queue
  // 'rx_queue'.
  XdpRun run(std::span<const uint8_t> frame, uint32_t ifindex, uint32_t rx_queue = 0);

  // Map access (all return false / zero on a failed syscall, which the
  // callers assert).
  bool set_port(uint32_t ifindex, const sf_port& port);
  bool delete_port(uint32_t ifindex);
  bool set_mask(uint32_t slot, const FlowKey& mask);
  bool set_config(const sf_xdp_config& config);
  bool get_config(sf_xdp_config* config);
  bool add_megaflow(uint32_t mask_slot, uint32_t datapath, const FlowKey& masked_key,
                    sf_megaflow_ref ref);
  bool delete_megaflow(uint32_t mask_slot, uint32_t datapath, const FlowKey& masked_key);
  // sf_hints (an array: clearing writes the all-zero "no entry").
  bool set_hint(uint32_t index, const sf_hint& hint);
  bool clear_hint(uint32_t index);
  // The map fds, as softflowd's loader hands them out (for MegaflowMirror).
  XdpMaps maps() const;
  // Per-CPU maps, summed over the possible CPUs.
  sf_xdp_stats stats();
  uint64_t mask_hits(uint32_t slot);

  // Every map of the object, with its pin path (nullptr when unpinned) and
  // whether libbpf pinned it.
  struct MapPinning {
    std::string name;
    const char* pin_path;
    bool pinned;
  };
  std::vector<MapPinning> pinning() const;

 private:
  explicit XdpProgram(sf_xdp* skel);

  sf_xdp* skel_;
  int n_cpus_;
};

// The emulated NIC (build/bpf/sf_nic.skel.h), loaded the same way: maps
// unpinned, frames run through BPF_PROG_RUN.  Its runs carry no metadata
// (XdpRun::meta_len 0); XdpRun::frame is the frame it sends on.
class NicProgram {
 public:
  static std::unique_ptr<NicProgram> load(std::string* error);
  ~NicProgram();
  NicProgram(const NicProgram&) = delete;
  NicProgram& operator=(const NicProgram&) = delete;

  XdpRun run(std::span<const uint8_t> frame, uint32_t ifindex, uint32_t rx_queue = 0);

  bool set_port(uint32_t ifindex, const sf_nic_port& port);
  bool delete_port(uint32_t ifindex);
  bool set_mask(uint32_t index, const FlowKey& mask);
  bool set_config(const sf_tcam_config& config);
  // An sf_tcam entry: 'masked_key' must already be masked by mask 'mask_index'.
  bool add_entry(uint32_t mask_index, const FlowKey& masked_key, const sf_tcam_action& action);
  bool delete_entry(uint32_t mask_index, const FlowKey& masked_key);
  // Per-CPU maps, summed over the possible CPUs.
  sf_nic_stats stats();
  uint64_t tcam_hits(uint32_t index);

 private:
  explicit NicProgram(sf_nic* skel);

  sf_nic* skel_;
  int n_cpus_;
};

class XdpTest : public ::testing::Test {
 protected:
  // prepare(), then load_switch().
  void SetUp() override;
  // Root, XDP support, one CPU, the loopback's ifindex.
  void prepare();
  // Loads a fresh sf_xdp into xdp_ with the loopback as port kOfPort.
  void load_switch();

  // Runs on the loopback, queue 0.
  XdpRun run(std::span<const uint8_t> frame) { return xdp_->run(frame, lo_ifindex_, 0); }
  sf_port default_port() const;

  std::unique_ptr<XdpProgram> xdp_;
  uint32_t lo_ifindex_ = 0;
};

// A fresh emulated NIC (nic_), with no NIC port registered; xdp_ stays
// empty until a test calls load_switch().
class NicTest : public XdpTest {
 protected:
  void SetUp() override;

  // Runs the NIC on the loopback, queue 0.
  XdpRun nic_run(std::span<const uint8_t> frame) { return nic_->run(frame, lo_ifindex_, 0); }

  std::unique_ptr<NicProgram> nic_;
};

}  // namespace softflow::bpf_test

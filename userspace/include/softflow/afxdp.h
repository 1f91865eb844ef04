// AF_XDP ports: one socket per (interface, queue), all sharing one UMEM, so
// a frame received on one port is transmitted on another without a copy.
//
// An XSKMAP redirect only reaches the socket of the receiving device and
// queue, so forwarding is a userspace TX on the output port's own socket
// (DESIGN.md, "Facts about this kernel").  Each socket belongs to one PMD
// thread, which polls its RX ring, keeps its fill ring stocked, runs the
// batch through its datapath run-to-completion, and transmits.  TX rings are
// shared by the PMD threads (any thread may output to any port) and guarded
// by a per-socket mutex, held once per batch.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "softflow/status.h"
#include "softflow/switch.h"
#include "xdp_loader.h"

namespace softflow {

struct AfxdpPortSpec {
  std::string name;
  int ifindex = 0;
  uint32_t ofport = 0;
  uint32_t n_queues = 1;
};

struct AfxdpConfig {
  uint32_t frame_size = 2048;        // UMEM chunk
  uint32_t ring_size = 2048;         // RX, TX, fill and completion rings
  uint32_t frames_per_socket = 4096;
  uint32_t pmd_threads = 1;
  bool hints = false;  // frames may carry the emulated NIC's mark (SF_PORT_HINTS)
};

struct AfxdpQueueStats {
  std::string port;
  uint32_t ofport = 0;
  uint32_t queue = 0;
  uint32_t thread = 0;
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t rx_xdp_meta = 0;   // arrived with XDP metadata (not re-parsed)
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_zero_copy = 0;  // sent in the buffer they arrived in
  uint64_t tx_dropped = 0;    // TX ring full or no free frame
  uint64_t fill_empty = 0;    // times the fill ring could not be stocked
};

class AfxdpPorts {
 public:
  // Creates the UMEM and the sockets, registers them in the XDP maps
  // (sf_xsks, then sf_ports) so traffic starts flowing to them.
  static Result<std::unique_ptr<AfxdpPorts>> create(const std::vector<AfxdpPortSpec>& ports,
                                                    const AfxdpConfig& config,
                                                    const XdpMaps& maps);
  ~AfxdpPorts();
  AfxdpPorts(const AfxdpPorts&) = delete;
  AfxdpPorts& operator=(const AfxdpPorts&) = delete;

  // The PMD loop of thread 'thread' (datapath 'thread' of the switch), until
  // 'stop' becomes true.  When that datapath profiles, the loop charges its
  // RX/fill ring handling (io_rx), parsing (parse), TX flushes and completions
  // (io_tx) and empty polls (idle) to the datapath's counters (profile.h).
  void run_pmd(uint32_t thread, Switch& sw, const std::atomic<bool>& stop);

  uint32_t pmd_threads() const { return config_.pmd_threads; }
  std::vector<AfxdpQueueStats> stats() const;

  struct Queue;  // internal (public so that the .cc's helpers can name them)
  struct Impl;

 private:
  AfxdpPorts() = default;
  std::unique_ptr<Impl> impl_;
  AfxdpConfig config_;
};

// Fills the packet (key, header offsets, parse flags, hash, XDP's megaflow)
// from the struct sf_xdp_meta the XDP program wrote in front of the frame, if
// it is there, fresh and sane, and clears its magic so that a reused frame
// never shows it again.  Returns false when the packet must be parsed here.
bool take_xdp_meta(Packet& p, uint32_t ofport);

// Number of RX queues of an interface (1 when it cannot be told).
uint32_t interface_rx_queues(const std::string& name);

}  // namespace softflow

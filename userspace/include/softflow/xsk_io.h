// Small AF_XDP building blocks for the traffic tools (sf-pktgen, sf-echo):
// an AF_XDP socket with a UMEM of its own, an XDP program attached through a
// BPF link, and the pure parts of the generator (flow-to-queue hash, token
// bucket), which tests/unit/xsk_io_test.cc checks.
//
// The switch's ports (afxdp.h) share one UMEM so that a frame can leave by
// another port without a copy; the tools never forward between sockets, so
// each socket owns its UMEM.  Its frames are split in two regions: the TX
// region starts on the socket's free list (tx_free) and the RX region on the
// fill ring.  Nothing here is thread-safe: one thread drives a socket.
#pragma once

#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "softflow/status.h"
#include "xdp_loader.h"

namespace softflow {

// ---- pure logic -------------------------------------------------------------------

// Hash of a frame's IP addresses, protocol and L4 ports that is the same in
// both directions of a connection (the endpoints are ordered first), so both
// halves of a conversation go to the same queue.  Frames without ports hash
// their addresses; non-IP frames hash their Ethernet addresses the same way.
uint32_t symmetric_flow_hash(std::span<const uint8_t> frame);

// The queue (0..n_queues-1) of a frame's connection.
uint32_t flow_queue(std::span<const uint8_t> frame, uint32_t n_queues);

// Paces packets at 'rate' per second.  Tokens accrue continuously and are
// taken whole; at most 'burst' accumulate, so a stall (the thread was
// descheduled, the TX ring was full) is not made up by a burst larger than
// that: the lost time shows as a lower achieved rate instead.  The bucket
// starts empty.  Rate 0 means unlimited (take() always grants 'max').
class TokenBucket {
 public:
  TokenBucket(double rate_per_second, uint32_t burst);
  void start(uint64_t now_ns);
  // Up to 'max' tokens, as many as have accrued by now_ns.
  uint32_t take(uint64_t now_ns, uint32_t max);
  // Nanoseconds until the next whole token (0 if one is available).
  uint64_t wait_ns() const;
  bool unlimited() const { return rate_ <= 0; }

 private:
  double rate_;
  double burst_;
  double tokens_ = 0;
  uint64_t last_ns_ = 0;
};

// ---- XDP program attachment -------------------------------------------------------

// An XDP program attached to an interface through a BPF link: detached when
// the object is destroyed or the process exits in any way (the kernel drops
// the link with its last fd), so a killed tool leaves nothing attached.
class XdpLink {
 public:
  // Fails with a message naming the interface when it does not exist or
  // already has an XDP program.
  static Result<std::unique_ptr<XdpLink>> attach(int prog_fd, const std::string& ifname,
                                                 XdpMode mode);
  ~XdpLink();
  XdpLink(const XdpLink&) = delete;
  XdpLink& operator=(const XdpLink&) = delete;
  int ifindex() const { return ifindex_; }

 private:
  XdpLink() = default;
  int link_fd_ = -1;
  int ifindex_ = 0;
};

// The interface's index, or an error naming it.
Result<int> interface_index(const std::string& ifname);

// ---- one AF_XDP socket with its own UMEM -----------------------------------------

struct XskSocketConfig {
  std::string ifname;
  uint32_t queue = 0;
  bool rx = true;              // has an RX ring; the RX region goes on the fill ring
  bool tx = true;              // has a TX ring
  uint32_t frame_size = 2048;  // UMEM chunk (power of two)
  // Frames of each region (0 allowed): the RX region starts on the fill ring,
  // the TX region on tx_free.  A tool that transmits the frames it received
  // (sf-echo) has no TX region.
  uint32_t rx_frames = 4096;
  uint32_t tx_frames = 4096;
  // Ring sizes (powers of two); fill_ring >= rx_frames.
  uint32_t fill_ring = 4096;
  uint32_t comp_ring = 4096;
  uint32_t rx_ring = 2048;
  uint32_t tx_ring = 2048;
};

// The socket's XDP_STATISTICS.
struct XskStatistics {
  uint64_t rx_dropped = 0;    // no room in the frame (too long) or the fill ring was empty
  uint64_t rx_ring_full = 0;  // the RX ring was full
  uint64_t rx_fill_ring_empty = 0;
  uint64_t rx_invalid = 0;
  uint64_t tx_invalid = 0;
  uint64_t tx_ring_empty = 0;
};

class XskSocket {
 public:
  // Copy or zero-copy as the driver allows; need_wakeup on.  No XDP program
  // is loaded: register fd() in an XSKMAP of the caller's program.
  static Result<std::unique_ptr<XskSocket>> create(const XskSocketConfig& config);
  ~XskSocket();
  XskSocket(const XskSocket&) = delete;
  XskSocket& operator=(const XskSocket&) = delete;

  int fd() const { return fd_; }
  const XskSocketConfig& config() const { return config_; }
  uint8_t* data(uint64_t addr) { return area_ + addr; }
  uint64_t chunk_of(uint64_t addr) const { return addr & ~uint64_t{config_.frame_size - 1}; }

  // Frames submitted on the TX ring that the kernel has not taken yet.
  uint32_t tx_unsent() { return config_.tx_ring - xsk_prod_nb_free(&tx, config_.tx_ring); }
  // Copy mode transmits in sendto() (a bounded number of frames per call):
  // kicks the kernel when the ring asks for it.  Returns 0 or an errno
  // (EAGAIN / EBUSY / ENOBUFS: the device pushed back, try again).
  int kick_tx();
  // Wakes the kernel to use the fill ring when it asks for it.
  void wake_rx();
  // Completed TX frames back onto tx_free; returns how many.
  uint32_t reap_to_free_list();
  // Preferred busy polling (SO_PREFER_BUSY_POLL, SO_BUSY_POLL,
  // SO_BUSY_POLL_BUDGET): the socket's own recvfrom()/sendto() run the RX
  // queue's NAPI on the calling thread, in batches of 'budget', instead of
  // softirqs on whichever CPU the traffic came from.  For the kernel to leave
  // the NAPI to the socket between calls, the interface needs
  // napi_defer_hard_irqs and gro_flush_timeout set (sysfs).
  Status enable_busy_poll(uint32_t budget, uint32_t timeout_us = 20);
  // With busy polling: a recvfrom() that runs the RX queue's NAPI here.
  void busy_poll_rx();
  XskStatistics statistics() const;

  // The rings, for the tools' loops (xsk.h's inline functions).
  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  // TX frames not in use (chunk addresses) and TX frames submitted but not
  // completed.
  std::vector<uint64_t> tx_free;
  uint32_t tx_outstanding = 0;

 private:
  XskSocket() = default;
  XskSocketConfig config_;
  uint8_t* area_ = nullptr;
  size_t area_size_ = 0;
  xsk_umem* umem_ = nullptr;
  xsk_socket* xsk_ = nullptr;
  int fd_ = -1;
};

// Puts a socket in an XSKMAP at 'key' (its queue).
Status register_xsk(int xskmap_fd, uint32_t key, int xsk_fd);

}  // namespace softflow

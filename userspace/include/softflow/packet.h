// A packet as the datapath sees it: a frame in a buffer (a UMEM frame with
// AF_XDP, a pool frame in memory), its parsed flow key and header offsets,
// and the SoftFlow metadata that is not part of the key.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "softflow/flow_key.h"

namespace softflow {

// Maximum packets processed together (BESS kMaxBurst, OVS NETDEV_MAX_BURST).
inline constexpr size_t kMaxBatch = 32;

// Header offset value meaning "this layer is absent".
inline constexpr uint16_t kNoOffset = SF_NO_OFFSET;

// Parse flags: what was found wrong while parsing.  A flagged packet still has
// a key made of whatever parsed; it is counted and forwarded by that key.
enum ParseFlags : uint16_t {
  kParseOk = 0,
  kParseTruncatedL2 = SF_PARSE_TRUNCATED_L2,  // frame shorter than an Ethernet/VLAN header
  kParseTruncatedL3 = SF_PARSE_TRUNCATED_L3,  // IP/ARP header cut short
  kParseBadL3 = SF_PARSE_BAD_L3,              // bad IHL/version, length field lies, ...
  kParseTruncatedL4 = SF_PARSE_TRUNCATED_L4,  // TCP/UDP/ICMP header cut short
  kParseBadL4 = SF_PARSE_BAD_L4,              // e.g. TCP data offset < 5
  kParseBadExtHdr = SF_PARSE_BAD_EXT_HDR,     // IPv6 extension header chain cut short/too long
  kParseMalformed = kParseTruncatedL2 | kParseTruncatedL3 | kParseBadL3 | kParseTruncatedL4 |
                    kParseBadL4 | kParseBadExtHdr,
};

struct Packet {
  // Frame bytes.  'data' points at the Ethernet header inside a buffer that
  // has 'headroom' bytes before it and 'tailroom' after data + len.
  uint8_t* data = nullptr;
  uint32_t len = 0;
  uint32_t headroom = 0;
  uint32_t tailroom = 0;

  // Parsed state.  The key carries in_port, sf_stage, sf_action and
  // sf_metadata; actions keep it in sync with the bytes, so nothing
  // downstream re-parses.
  FlowKey key;
  uint16_t l2_ofs = 0;
  uint16_t l3_ofs = kNoOffset;
  uint16_t l4_ofs = kNoOffset;
  uint16_t payload_ofs = kNoOffset;
  uint16_t parse_flags = kParseOk;

  // SoftFlow metadata outside the key (paper, Figure 3).
  uint32_t sf_argument = 0;
  bool sf_coalesce = false;

  // Key hash (computed by XDP with the AF_XDP datapath; 0 = not computed).
  uint32_t hash = 0;
  // The stage-0 megaflow the XDP program found (generation 0: none).  The
  // datapath uses it after checking that the megaflow still exists with this
  // generation and that the key matches it.
  uint32_t megaflow_id = 0;
  uint32_t megaflow_generation = 0;
  uint8_t xdp_result = 0;  // SF_XDP_* (sf_abi.h)
  uint64_t timestamp_ns = 0;

  // Owner's cookie (e.g. a UMEM address or an input index).
  uint64_t cookie = 0;
  // Set by a PacketSink that took the buffer to transmit it (the owner must
  // not free or reuse it).
  bool buffer_taken = false;

  std::span<uint8_t> bytes() { return {data, len}; }
  std::span<const uint8_t> bytes() const { return {data, len}; }
  bool has_l3() const { return l3_ofs != kNoOffset; }
  bool has_l4() const { return l4_ofs != kNoOffset; }
  uint8_t* l3() { return data + l3_ofs; }
  uint8_t* l4() { return data + l4_ofs; }
  uint32_t in_port() const { return key.in_port; }
};

// Fixed-size frames in one contiguous block, as a UMEM is laid out; used for
// in-memory and pcap ports so they exercise the same packet handling.
class FramePool {
 public:
  static constexpr uint32_t kFrameSize = 2048;
  static constexpr uint32_t kHeadroom = 256;

  explicit FramePool(size_t n_frames);
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  // Copies 'frame' into a free buffer and initialises 'pkt' (not parsed).
  // Returns false when the pool is empty or the frame does not fit.
  bool load(Packet& pkt, std::span<const uint8_t> frame, uint32_t in_port,
            uint64_t timestamp_ns = 0);
  void release(Packet& pkt);
  size_t available() const { return free_.size(); }
  size_t capacity() const { return n_frames_; }

 private:
  size_t n_frames_;
  std::unique_ptr<uint8_t[]> memory_;
  std::vector<uint32_t> free_;
};

}  // namespace softflow

// Ports for tests and benchmarks: in-memory ports (frames in, captured frames
// out) and pcap file ports (libpcap).  They drive the same Datapath code as
// AF_XDP ports, minus the socket I/O.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "softflow/datapath.h"
#include "softflow/packet.h"
#include "softflow/status.h"

typedef struct pcap pcap_t;
typedef struct pcap_dumper pcap_dumper_t;

namespace softflow {

struct Frame {
  uint32_t port = 0;          // input or output port
  uint64_t timestamp_ns = 0;
  std::vector<uint8_t> bytes;
};

// Captures what the datapath transmits, per port, in emission order.
class MemoryPorts : public PacketSink {
 public:
  // Ports that exist; transmitting to another port fails (counted as a drop).
  explicit MemoryPorts(std::set<uint32_t> ports) : ports_(std::move(ports)) {}
  bool transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t timestamp_ns) override;

  const std::vector<Frame>& sent(uint32_t port) const;
  const std::map<uint32_t, std::vector<Frame>>& all_sent() const { return sent_; }
  void clear() { sent_.clear(); }

 private:
  std::set<uint32_t> ports_;
  std::map<uint32_t, std::vector<Frame>> sent_;
};

// Feeds frames to a datapath in batches of kMaxBatch, the way a PMD thread
// does: load into frame buffers, parse, process, release.  With
// 'timestamps_as_clock' the frames' timestamps drive megaflow expiry (checked
// once per second of that clock); otherwise now_ns is used for all.
struct RunOptions {
  bool timestamps_as_clock = true;
  uint64_t now_ns = 0;
};
// Returns how many frames were not processed because they do not fit a
// frame buffer (larger than FramePool::kFrameSize - kHeadroom bytes).
size_t run_frames(Datapath& dp, std::span<const Frame> frames, FramePool& pool,
                  const RunOptions& opts = {});

// Reads an Ethernet pcap file (any timestamp precision).
class PcapReader {
 public:
  static Result<std::unique_ptr<PcapReader>> open(const std::string& path, uint32_t port);
  ~PcapReader();
  // Next frame; false at end of file.  Errors are reported by error().
  bool next(Frame& out);
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }

 private:
  PcapReader() = default;
  pcap_t* pcap_ = nullptr;
  uint32_t port_ = 0;
  bool nanosecond_ = false;
  std::string path_;
  std::string error_;
};

// Writes each output port's frames to DIR/port-N.pcap (nanosecond pcap,
// opened on first use).
class PcapPorts : public PacketSink {
 public:
  PcapPorts(std::string dir, std::set<uint32_t> ports) : dir_(std::move(dir)), ports_(std::move(ports)) {}
  ~PcapPorts() override;
  bool transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t timestamp_ns) override;
  // Flushes and closes the files; returns the first write error, if any.
  Status close();
  const std::map<uint32_t, uint64_t>& counts() const { return counts_; }

 private:
  struct Output {
    pcap_t* pcap = nullptr;
    pcap_dumper_t* dumper = nullptr;
  };
  std::string dir_;
  std::set<uint32_t> ports_;
  std::map<uint32_t, Output> outputs_;
  std::map<uint32_t, uint64_t> counts_;
  std::string error_;
};

// Writes frames to one pcap file (tests and generators).
Status write_pcap(const std::string& path, std::span<const Frame> frames);

// A whole text file (flow files, configuration), or "PATH: cannot open: why".
Result<std::string> read_text_file(const std::string& path);

}  // namespace softflow

#include "softflow/ports.h"

#include <pcap/pcap.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "softflow/parse.h"

namespace softflow {

// ---- in-memory ports --------------------------------------------------------------

bool MemoryPorts::transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t timestamp_ns) {
  if (!ports_.count(port)) return false;
  sent_[port].push_back(Frame{port, timestamp_ns, {frame.begin(), frame.end()}});
  return true;
}

const std::vector<Frame>& MemoryPorts::sent(uint32_t port) const {
  static const std::vector<Frame> kNone;
  auto it = sent_.find(port);
  return it == sent_.end() ? kNone : it->second;
}

size_t run_frames(Datapath& dp, std::span<const Frame> frames, FramePool& pool,
                  const RunOptions& opts) {
  size_t skipped = 0;
  constexpr uint64_t kExpireInterval = 1'000'000'000;
  std::array<Packet, kMaxBatch> packets;
  std::array<Packet*, kMaxBatch> batch;
  uint64_t last_expire = 0;
  size_t i = 0;
  while (i < frames.size()) {
    size_t n = 0;
    uint64_t now = opts.now_ns;
    while (n < kMaxBatch && i < frames.size()) {
      const Frame& f = frames[i++];
      Packet& p = packets[n];
      if (!pool.load(p, f.bytes, f.port, f.timestamp_ns)) {
        ++skipped;  // oversized
        continue;
      }
      parse_packet(p);
      batch[n++] = &p;
      if (opts.timestamps_as_clock) now = f.timestamp_ns;
    }
    if (n) dp.process_batch({batch.data(), n}, now);
    for (size_t k = 0; k < n; ++k) pool.release(packets[k]);
    if (now >= last_expire + kExpireInterval) {
      dp.expire(now);
      last_expire = now;
    }
  }
  return skipped;
}

// ---- pcap files -------------------------------------------------------------------

Result<std::unique_ptr<PcapReader>> PcapReader::open(const std::string& path, uint32_t port) {
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  std::unique_ptr<PcapReader> r(new PcapReader());
  r->pcap_ = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO,
                                                     errbuf);
  if (r->pcap_ == nullptr) return Status::error(path + ": " + errbuf, EIO);
  if (pcap_datalink(r->pcap_) != DLT_EN10MB)
    return Status::error(path + ": not an Ethernet capture (link type " +
                         std::to_string(pcap_datalink(r->pcap_)) + ")");
  r->nanosecond_ = pcap_get_tstamp_precision(r->pcap_) == PCAP_TSTAMP_PRECISION_NANO;
  r->port_ = port;
  r->path_ = path;
  return r;
}

PcapReader::~PcapReader() {
  if (pcap_) pcap_close(pcap_);
}

bool PcapReader::next(Frame& out) {
  pcap_pkthdr* hdr = nullptr;
  const u_char* data = nullptr;
  const int rc = pcap_next_ex(pcap_, &hdr, &data);
  if (rc == PCAP_ERROR_BREAK) return false;  // end of file
  if (rc != 1) {
    error_ = path_ + ": " + pcap_geterr(pcap_);
    return false;
  }
  out.port = port_;
  out.timestamp_ns = static_cast<uint64_t>(hdr->ts.tv_sec) * 1'000'000'000ULL +
                     static_cast<uint64_t>(hdr->ts.tv_usec) * (nanosecond_ ? 1 : 1000);
  out.bytes.assign(data, data + hdr->caplen);
  return true;
}

namespace {

Result<std::pair<pcap_t*, pcap_dumper_t*>> open_dumper(const std::string& path) {
  pcap_t* p = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, 65535, PCAP_TSTAMP_PRECISION_NANO);
  if (p == nullptr) return Status::error("pcap_open_dead failed", ENOMEM);
  pcap_dumper_t* d = pcap_dump_open(p, path.c_str());
  if (d == nullptr) {
    std::string err = path + ": " + pcap_geterr(p);
    pcap_close(p);
    return Status::error(err, EIO);
  }
  return std::make_pair(p, d);
}

void dump_frame(pcap_dumper_t* d, std::span<const uint8_t> frame, uint64_t ts_ns) {
  pcap_pkthdr hdr{};
  hdr.ts.tv_sec = static_cast<time_t>(ts_ns / 1'000'000'000ULL);
  hdr.ts.tv_usec = static_cast<suseconds_t>(ts_ns % 1'000'000'000ULL);  // ns precision file
  hdr.caplen = hdr.len = static_cast<bpf_u_int32>(frame.size());
  pcap_dump(reinterpret_cast<u_char*>(d), &hdr, frame.data());
}

}  // namespace

PcapPorts::~PcapPorts() { (void)close(); }

bool PcapPorts::transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t timestamp_ns) {
  if (!ports_.count(port)) return false;
  auto it = outputs_.find(port);
  if (it == outputs_.end()) {
    auto opened = open_dumper(dir_ + "/port-" + std::to_string(port) + ".pcap");
    if (!opened) {
      if (error_.empty()) error_ = opened.error();
      return false;
    }
    it = outputs_.emplace(port, Output{opened->first, opened->second}).first;
  }
  dump_frame(it->second.dumper, frame, timestamp_ns);
  ++counts_[port];
  return true;
}

Status PcapPorts::close() {
  for (auto& [port, out] : outputs_) {
    if (out.dumper) {
      if (pcap_dump_flush(out.dumper) != 0 && error_.empty())
        error_ = dir_ + "/port-" + std::to_string(port) + ".pcap: write failed";
      pcap_dump_close(out.dumper);
    }
    if (out.pcap) pcap_close(out.pcap);
  }
  outputs_.clear();
  return error_.empty() ? Status::ok() : Status::error(error_, EIO);
}

Status write_pcap(const std::string& path, std::span<const Frame> frames) {
  auto opened = open_dumper(path);
  if (!opened) return opened.status();
  for (const Frame& f : frames) dump_frame(opened->second, f.bytes, f.timestamp_ns);
  const bool ok = pcap_dump_flush(opened->second) == 0;
  pcap_dump_close(opened->second);
  pcap_close(opened->first);
  return ok ? Status::ok() : Status::error(path + ": write failed", EIO);
}

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::error(path + ": cannot open: " + std::strerror(errno), EIO);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::error(path + ": cannot read: " + std::strerror(errno), EIO);
  return ss.str();
}

}  // namespace softflow

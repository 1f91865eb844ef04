#include "softflow/packet.h"

namespace softflow {

FramePool::FramePool(size_t n_frames)
    : n_frames_(n_frames), memory_(new uint8_t[n_frames * kFrameSize]) {
  free_.reserve(n_frames);
  for (size_t i = n_frames; i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
}

bool FramePool::load(Packet& pkt, std::span<const uint8_t> frame, uint32_t in_port,
                     uint64_t timestamp_ns) {
  if (free_.empty() || frame.size() > kFrameSize - kHeadroom) return false;
  uint32_t idx = free_.back();
  free_.pop_back();
  uint8_t* base = memory_.get() + static_cast<size_t>(idx) * kFrameSize;
  pkt = Packet{};
  pkt.data = base + kHeadroom;
  pkt.len = static_cast<uint32_t>(frame.size());
  pkt.headroom = kHeadroom;
  pkt.tailroom = kFrameSize - kHeadroom - pkt.len;
  if (!frame.empty()) std::memcpy(pkt.data, frame.data(), frame.size());
  pkt.key = zero_key();
  pkt.key.in_port = in_port;
  pkt.timestamp_ns = timestamp_ns;
  pkt.cookie = idx;
  return true;
}

void FramePool::release(Packet& pkt) {
  if (pkt.data == nullptr) return;
  free_.push_back(static_cast<uint32_t>(pkt.cookie));
  pkt.data = nullptr;
}

}  // namespace softflow

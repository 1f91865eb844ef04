// The monotonic clock in nanoseconds, for the daemon's and the tools' timing
// (not the datapath's packet time, which comes from Packet::timestamp_ns).
#pragma once

#include <time.h>

#include <cstdint>

namespace softflow {

inline uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace softflow

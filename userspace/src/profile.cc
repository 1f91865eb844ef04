#include "softflow/profile.h"

#include <fmt/format.h>
#include <time.h>

#include "softflow/clock.h"

namespace softflow {
namespace {

constexpr std::array<std::string_view, kProfileCategories> kCategoryNames = {
    "parse", "lookup", "slow_path", "services", "actions", "io_rx", "io_tx", "idle"};

double calibrate_tsc() {
#if defined(__x86_64__) || defined(__i386__)
  // TSC and clock read back to back at both ends of a 20 ms sleep: the
  // pairing error (well under a microsecond) is < 1e-4 of the interval.
  const uint64_t ns0 = monotonic_ns();
  const uint64_t tsc0 = tsc_now();
  timespec nap{0, 20'000'000};
  while (nanosleep(&nap, &nap) != 0) {
  }
  const uint64_t ns1 = monotonic_ns();
  const uint64_t tsc1 = tsc_now();
  if (ns1 <= ns0 || tsc1 <= tsc0) return 1e9;
  return static_cast<double>(tsc1 - tsc0) * 1e9 / static_cast<double>(ns1 - ns0);
#else
  return 1e9;  // tsc_now() is CLOCK_MONOTONIC in nanoseconds
#endif
}

}  // namespace

std::string_view profile_category_name(ProfileCategory c) {
  const size_t i = static_cast<size_t>(c);
  return i < kCategoryNames.size() ? kCategoryNames[i] : "?";
}

uint64_t CycleProfile::total() const {
  uint64_t n = 0;
  for (uint64_t c : cycles) n += c;
  return n;
}

CycleProfile& CycleProfile::operator+=(const CycleProfile& other) {
  packets += other.packets;
  for (size_t i = 0; i < cycles.size(); ++i) cycles[i] += other.cycles[i];
  wall_cycles += other.wall_cycles;
  return *this;
}

CycleProfile& CycleProfile::operator-=(const CycleProfile& other) {
  packets -= other.packets;
  for (size_t i = 0; i < cycles.size(); ++i) cycles[i] -= other.cycles[i];
  wall_cycles -= other.wall_cycles;
  return *this;
}

double tsc_hz() {
  static const double hz = calibrate_tsc();
  return hz;
}

CycleProfile ProfileCounters::snapshot() const {
  CycleProfile p;
  // Counters first, the clock after: the wall then covers everything charged.
  for (size_t i = 0; i < cycles_.size(); ++i)
    p.cycles[i] = cycles_[i].load(std::memory_order_relaxed);
  p.packets = packets_.load(std::memory_order_relaxed);
  if (const uint64_t start = start_.load(std::memory_order_relaxed); start != 0) {
    const uint64_t now = tsc_now();
    p.wall_cycles = now > start ? now - start : 0;
  }
  return p;
}

nlohmann::json profile_json(const CycleProfile& p, double hz) {
  nlohmann::json cycles = nlohmann::json::object();
  for (size_t i = 0; i < kProfileCategories; ++i)
    cycles[std::string(kCategoryNames[i])] = p.cycles[i];
  nlohmann::json j = {{"tsc_hz", hz}, {"packets", p.packets}, {"cycles", cycles}};
  if (p.wall_cycles != 0) j["wall_cycles"] = p.wall_cycles;
  return j;
}

std::string profile_text(const CycleProfile& p) {
  const double packets = p.packets == 0 ? 1.0 : static_cast<double>(p.packets);
  const uint64_t total = p.total();
  std::string out;
  for (size_t i = 0; i < kProfileCategories; ++i) {
    const double share = total == 0 ? 0.0 : 100.0 * static_cast<double>(p.cycles[i]) / total;
    out += fmt::format("{}{} {:.1f} ({:.1f}%)", i == 0 ? "" : ", ", kCategoryNames[i],
                       static_cast<double>(p.cycles[i]) / packets, share);
  }
  out += fmt::format("; sum {:.1f}", static_cast<double>(total) / packets);
  if (p.wall_cycles != 0)
    out += fmt::format(" of {:.1f} wall ({:.1f}%)", static_cast<double>(p.wall_cycles) / packets,
                       100.0 * static_cast<double>(total) / static_cast<double>(p.wall_cycles));
  return out;
}

}  // namespace softflow

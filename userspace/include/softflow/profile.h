// An opt-in CPU breakdown of the packet path in TSC cycles (the paper's
// Figure 12: megaflow / services / parsing / I/O) for machines without a
// hardware PMU.
//
// Time is charged per batch and per phase, never per packet: a CycleClock
// reads the TSC at each phase boundary and charges the cycles since the
// previous boundary to one category.  The datapath charges parse-free work
// (lookup, slow path, services, actions); whoever feeds it (the AF_XDP PMD
// loop, sf-bench) charges parse, I/O and idle time around its calls, so the
// categories of one thread never overlap and their sum is at most the
// thread's wall-clock cycles.  With profiling off a CycleClock has no
// counters and every call is one predictable branch: no TSC read, no store.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#else
#include <time.h>
#endif

namespace softflow {

enum class ProfileCategory : uint8_t {
  kParse,     // parse_packet, or taking the XDP program's metadata instead
  kLookup,    // EMC and megaflow cache (and checking what XDP resolved)
  kSlowPath,  // upcalls: OpenFlow xlate, megaflow build and install, expiry
  kServices,  // SoftFlow actions and the stage transition after them
  kActions,   // header rewrites and output (handing frames to the sink)
  kIoRx,      // RX and fill rings, frame set-up (sf-bench: copying frames in)
  kIoTx,      // TX rings, sendto() kicks, completions (sf-bench: freeing frames)
  kIdle,      // empty polls and poll(2)
  kCount
};
inline constexpr size_t kProfileCategories = static_cast<size_t>(ProfileCategory::kCount);

// "parse", "lookup", "slow_path", "services", "actions", "io_rx", "io_tx", "idle".
std::string_view profile_category_name(ProfileCategory c);

// A snapshot of a thread's (or a sum of threads') counters.
struct CycleProfile {
  uint64_t packets = 0;
  std::array<uint64_t, kProfileCategories> cycles{};
  // Cycles the measured threads existed for (0: not known); the categories
  // sum to at most this.
  uint64_t wall_cycles = 0;

  uint64_t operator[](ProfileCategory c) const { return cycles[static_cast<size_t>(c)]; }
  uint64_t total() const;
  CycleProfile& operator+=(const CycleProfile& other);
  CycleProfile& operator-=(const CycleProfile& other);
};

inline uint64_t tsc_now() {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
#endif
}

// TSC ticks per second, calibrated once against CLOCK_MONOTONIC (the first
// call sleeps ~20 ms; later calls return the same value).
double tsc_hz();

// Live counters.  One writer -- the thread that owns the datapath -- and any
// number of readers (sfctl show), so the adds are plain relaxed loads and
// stores, as cheap as non-atomic ones on x86.
class ProfileCounters {
 public:
  void add(ProfileCategory c, uint64_t cycles) { bump(cycles_[static_cast<size_t>(c)], cycles); }
  void add_packets(uint64_t n) { bump(packets_, n); }
  // Marks the start of the owning thread, so snapshots carry wall_cycles.
  void set_start(uint64_t tsc) { start_.store(tsc, std::memory_order_relaxed); }
  CycleProfile snapshot() const;

 private:
  static void bump(std::atomic<uint64_t>& a, uint64_t n) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::array<std::atomic<uint64_t>, kProfileCategories> cycles_{};
  std::atomic<uint64_t> packets_{0};
  std::atomic<uint64_t> start_{0};
};

// Charges phases of one thread to counters (null: profiling off).
//  charge(c)  cycles since the last mark go to c; marks now.
//  enter(c)   charges the current category, then c is current.
//  restart()  marks now, dropping the interval (another clock covered it).
class CycleClock {
 public:
  explicit CycleClock(ProfileCounters* counters = nullptr) : counters_(counters) {}
  bool on() const { return counters_ != nullptr; }

  void restart() {
    if (counters_ != nullptr) last_ = tsc_now();
  }
  void start(ProfileCategory c) {
    if (counters_ == nullptr) return;
    current_ = c;
    last_ = tsc_now();
  }
  void charge(ProfileCategory c) {
    if (counters_ == nullptr) return;
    const uint64_t now = tsc_now();
    counters_->add(c, now - last_);
    last_ = now;
  }
  void enter(ProfileCategory c) {
    if (counters_ == nullptr) return;
    charge(current_);
    current_ = c;
  }
  void stop() { charge(current_); }
  void count_packets(uint64_t n) {
    if (counters_ != nullptr) counters_->add_packets(n);
  }

  // Charges a nested section (e.g. an upcall inside the lookup phase) to
  // 'c' and returns to the enclosing category when it ends.
  class Scope {
   public:
    Scope(CycleClock& clock, ProfileCategory c) : clock_(clock), outer_(clock.current_) {
      clock_.enter(c);
    }
    ~Scope() { clock_.enter(outer_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    CycleClock& clock_;
    ProfileCategory outer_;
  };

 private:
  ProfileCounters* counters_;
  uint64_t last_ = 0;
  ProfileCategory current_ = ProfileCategory::kLookup;
};

// {"tsc_hz", "packets", "cycles": {"parse", ..., "idle"}} plus "wall_cycles"
// when known.
nlohmann::json profile_json(const CycleProfile& p, double hz);
// "parse 12.3 (4.5%), lookup ..." in cycles per packet and share of the
// charged cycles; then "; charged X of Y wall cycles/packet" when known.
std::string profile_text(const CycleProfile& p);

}  // namespace softflow

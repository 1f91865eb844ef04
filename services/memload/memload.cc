// memload (paper §7.3, Figure 10): models the memory cost of a complex
// service.  For each packet it makes N = sf_argument random, prefetched reads
// of a large block (default 1 GiB, config "size").  It decides nothing, so
// sf_metadata is left alone and every packet is coalescable.
//
// The block is allocated on the first packet with N > 0, never at
// construction (every switch constructs every service at start-up, and
// sf-bench creates many switches).  Instances of the same size share one
// block through a process-wide registry; the last user frees it.  The block is
// filled with non-zero pseudo-random data so its pages are really backed
// rather than all mapping the shared zero page, which would make every read a
// cache hit.
//
// If the allocation fails the failure is logged once and the instance behaves
// as N = 0 from then on (counted in "skipped_packets"); it never crashes.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

#include "softflow/service.h"

namespace softflow {
namespace {

constexpr uint64_t kDefaultSize = uint64_t{1} << 30;
constexpr uint64_t kMinSize = 4096;
constexpr uint64_t kMaxSize = uint64_t{1} << 40;
// Reads per packet are capped so a typo in a flow (softflow:memload:4000000)
// cannot stall a PMD thread for milliseconds per packet.
constexpr uint32_t kMaxReadsPerPacket = 4096;
constexpr uint64_t kCacheLine = 64;
constexpr uint64_t kHugePage = uint64_t{2} << 20;

// ---- configuration ----------------------------------------------------------------

[[noreturn]] void size_error(const nlohmann::json& value) {
  throw std::runtime_error(
      "memload: 'size' must be a byte count from 4096 to 1T, as a number or a string such as "
      "\"1048576\", \"256M\", \"1G\" or \"64MiB\", got " +
      value.dump());
}

// "123", "64K", "256M", "1G", "1T", optionally followed by "iB" or "B"
// (binary units in every case).
uint64_t parse_size_text(const nlohmann::json& value) {
  const std::string text = value.get<std::string>();
  size_t i = 0;
  uint64_t number = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (number > (kMaxSize - digit) / 10) size_error(value);
    number = number * 10 + digit;
    ++i;
  }
  if (i == 0) size_error(value);
  int shift = 0;
  if (i < text.size()) {
    switch (std::toupper(static_cast<unsigned char>(text[i]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: size_error(value);
    }
    ++i;
    const std::string rest = text.substr(i);
    if (!rest.empty() && rest != "B" && rest != "iB") size_error(value);
  }
  if (number > (kMaxSize >> shift)) size_error(value);
  return number << shift;
}

uint64_t parse_size(const nlohmann::json& value) {
  uint64_t size = 0;
  if (value.is_number_unsigned()) {
    size = value.get<uint64_t>();
  } else if (value.is_number_integer()) {
    const int64_t s = value.get<int64_t>();
    if (s < 0) size_error(value);
    size = static_cast<uint64_t>(s);
  } else if (value.is_string()) {
    size = parse_size_text(value);
  } else {
    size_error(value);
  }
  if (size < kMinSize || size > kMaxSize) size_error(value);
  return size;
}

uint64_t parse_config(const nlohmann::json& config) {
  uint64_t size = kDefaultSize;
  if (config.is_null()) return size;
  if (!config.is_object()) throw std::runtime_error("memload: configuration must be an object");
  for (const auto& [key, value] : config.items()) {
    if (key == "size")
      size = parse_size(value);
    else
      throw std::runtime_error("memload: unknown configuration key '" + key + "' (known: size)");
  }
  return size;
}

// ---- pseudo-random numbers ----------------------------------------------------------

// splitmix64: one add and a few multiply/xor-shifts per number, statistically
// good enough to defeat hardware prefetchers, and the state is one word.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Per-thread generator state, so PMD threads never share a cache line for it.
uint64_t& thread_rng_state() {
  static std::atomic<uint64_t> next_seed{0x5eed};
  thread_local uint64_t state = next_seed.fetch_add(0x632be59bd9b4e019ULL) * 0xd1342543de82ef95ULL;
  return state;
}

// ---- the shared block ---------------------------------------------------------------

class MemoryBlock {
 public:
  // Maps and fills 'size' bytes; nullptr (errno set) if the mapping fails.
  static std::unique_ptr<MemoryBlock> allocate(uint64_t size) {
    // Over-map by one huge page so the block can start 2 MiB-aligned, which
    // transparent huge pages need; untouched tail pages cost nothing.
    const uint64_t mapped = size + kHugePage;
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) & ~(kHugePage - 1);
    auto* data = reinterpret_cast<uint64_t*>(aligned);
#ifdef MADV_HUGEPAGE
    madvise(data, size, MADV_HUGEPAGE);  // a hint: failure (no THP) is fine
#endif
    uint64_t state = 0x6d656d6c6f6164ULL ^ size;
    for (uint64_t i = 0; i < size / sizeof(uint64_t); ++i) data[i] = splitmix64(state) | 1;
    return std::unique_ptr<MemoryBlock>(new MemoryBlock(base, mapped, data, size));
  }

  ~MemoryBlock() { munmap(base_, mapped_); }
  MemoryBlock(const MemoryBlock&) = delete;
  MemoryBlock& operator=(const MemoryBlock&) = delete;

  const uint8_t* bytes() const { return reinterpret_cast<const uint8_t*>(data_); }
  uint64_t lines() const { return size_ / kCacheLine; }

 private:
  MemoryBlock(void* base, uint64_t mapped, uint64_t* data, uint64_t size)
      : base_(base), mapped_(mapped), data_(data), size_(size) {}

  void* base_;
  uint64_t mapped_;
  uint64_t* data_;
  uint64_t size_;
};

// Process-wide blocks by size.  Holds weak references: instances own the
// blocks, so the last instance to go frees its block.
class BlockRegistry {
 public:
  static BlockRegistry& instance() {
    static BlockRegistry registry;
    return registry;
  }

  std::shared_ptr<const MemoryBlock> acquire(uint64_t size) {
    std::lock_guard lock(mutex_);
    if (auto it = blocks_.find(size); it != blocks_.end()) {
      if (auto block = it->second.lock()) return block;
    }
    std::unique_ptr<MemoryBlock> block;
    if (!fail_for_testing_) block = MemoryBlock::allocate(size);
    if (!block) {
      const int error = fail_for_testing_ ? ENOMEM : errno;
      if (failures_logged_.insert(size).second)
        std::fprintf(stderr, "memload: cannot allocate a %llu-byte block (%s); reads disabled\n",
                     static_cast<unsigned long long>(size), std::strerror(error));
      return nullptr;
    }
    ++allocations_;
    std::shared_ptr<const MemoryBlock> shared(std::move(block));
    blocks_[size] = shared;
    return shared;
  }

  // Test hooks (see memload_testing below).
  void set_fail_for_testing(bool fail) {
    std::lock_guard lock(mutex_);
    fail_for_testing_ = fail;
  }
  uint64_t allocations() const {
    std::lock_guard lock(mutex_);
    return allocations_;
  }
  size_t live_blocks() const {
    std::lock_guard lock(mutex_);
    return static_cast<size_t>(std::count_if(blocks_.begin(), blocks_.end(),
                                             [](const auto& e) { return !e.second.expired(); }));
  }

 private:
  mutable std::mutex mutex_;
  std::map<uint64_t, std::weak_ptr<const MemoryBlock>> blocks_;
  std::set<uint64_t> failures_logged_;  // log each failing size once
  uint64_t allocations_ = 0;
  bool fail_for_testing_ = false;
};

// ---- the service --------------------------------------------------------------------

class MemloadService final : public Service {
 public:
  explicit MemloadService(const nlohmann::json& config) : size_(parse_config(config)) {}

  void process(std::span<Packet* const> batch, uint32_t sf_argument) override {
    for (Packet* p : batch) p->sf_coalesce = true;
    if (sf_argument > kMaxReadsPerPacket)
      clamped_packets_.fetch_add(batch.size(), std::memory_order_relaxed);
    const uint32_t reads = std::min(sf_argument, kMaxReadsPerPacket);
    if (reads == 0 || batch.empty()) return;
    const MemoryBlock* block = block_for_reads();
    if (block == nullptr) {
      skipped_packets_.fetch_add(batch.size(), std::memory_order_relaxed);
      return;
    }
    const uint8_t* bytes = block->bytes();
    const uint64_t lines = block->lines();
    uint64_t& rng = thread_rng_state();
    uint64_t fold = 0;
    for (size_t n = 0; n < batch.size(); ++n) {
      // Prefetch all N lines first so the misses overlap, then read them.
      // Replaying the generator from the same state yields the same offsets
      // without storing them.
      const uint64_t start = rng;
      for (uint32_t i = 0; i < reads; ++i)
        __builtin_prefetch(bytes + line_offset(splitmix64(rng), lines));
      rng = start;
      for (uint32_t i = 0; i < reads; ++i) {
        uint64_t word;
        std::memcpy(&word, bytes + line_offset(splitmix64(rng), lines), sizeof word);
        fold += word;
      }
    }
    // Publishing the fold keeps the compiler from dropping the reads.
    sink_.fetch_xor(fold, std::memory_order_relaxed);
    reads_.fetch_add(uint64_t{reads} * batch.size(), std::memory_order_relaxed);
  }

  nlohmann::json stats() const override {
    return {{"size", size_},
            {"allocated", block_ptr_.load(std::memory_order_acquire) != nullptr},
            {"allocation_failed", allocation_failed_.load(std::memory_order_relaxed)},
            {"reads", reads_.load(std::memory_order_relaxed)},
            {"skipped_packets", skipped_packets_.load(std::memory_order_relaxed)},
            {"clamped_packets", clamped_packets_.load(std::memory_order_relaxed)},
            {"max_reads_per_packet", kMaxReadsPerPacket}};
  }

 private:
  // A cache-line-aligned offset in [0, lines * 64) from a random word
  // (multiply-high instead of a slow modulo).
  static uint64_t line_offset(uint64_t random, uint64_t lines) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(random) * lines) >> 64) *
           kCacheLine;
  }

  // The block, allocated (or fetched from the registry) on first use.
  const MemoryBlock* block_for_reads() {
    if (const MemoryBlock* b = block_ptr_.load(std::memory_order_acquire)) return b;
    if (allocation_failed_.load(std::memory_order_relaxed)) return nullptr;
    std::lock_guard lock(init_mutex_);
    if (const MemoryBlock* b = block_ptr_.load(std::memory_order_relaxed)) return b;
    if (allocation_failed_.load(std::memory_order_relaxed)) return nullptr;
    block_ = BlockRegistry::instance().acquire(size_);
    if (!block_) {
      allocation_failed_.store(true, std::memory_order_relaxed);
      return nullptr;
    }
    block_ptr_.store(block_.get(), std::memory_order_release);
    return block_.get();
  }

  const uint64_t size_;
  std::mutex init_mutex_;
  std::shared_ptr<const MemoryBlock> block_;  // written once, under init_mutex_
  std::atomic<const MemoryBlock*> block_ptr_{nullptr};
  std::atomic<bool> allocation_failed_{false};
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> sink_{0};
  std::atomic<uint64_t> skipped_packets_{0};
  std::atomic<uint64_t> clamped_packets_{0};
};

}  // namespace

// Test hooks, declared by memload_test.cc (not part of any public header):
// force allocation failures, and observe allocations and live shared blocks.
namespace memload_testing {
void set_allocation_failure(bool fail);
uint64_t allocations();
size_t live_blocks();

void set_allocation_failure(bool fail) { BlockRegistry::instance().set_fail_for_testing(fail); }
uint64_t allocations() { return BlockRegistry::instance().allocations(); }
size_t live_blocks() { return BlockRegistry::instance().live_blocks(); }
}  // namespace memload_testing

SF_REGISTER_SERVICE(memload, MemloadService,
                    "N = argument random prefetched reads of a large shared block per packet");
}  // namespace softflow

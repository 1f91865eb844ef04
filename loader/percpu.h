// Reading the per-CPU counters of the BPF programs: a per-CPU array entry
// whose value is one __u64 or a struct of them (sf_abi.h), summed over the
// possible CPUs.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace softflow {

// The sum over CPUs of entry 'key' of a per-CPU map of T (zero when the
// lookup fails).
template <typename T>
T sum_percpu(int map_fd, uint32_t key) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % sizeof(uint64_t) == 0,
                "T must be __u64 counters");
  constexpr size_t kWords = sizeof(T) / sizeof(uint64_t);
  T total{};
  const int n_cpus = libbpf_num_possible_cpus();
  if (map_fd < 0 || n_cpus <= 0) return total;
  std::vector<T> per_cpu(static_cast<size_t>(n_cpus));
  if (bpf_map_lookup_elem(map_fd, &key, per_cpu.data()) != 0) return total;
  uint64_t sums[kWords] = {};
  for (const T& v : per_cpu) {
    uint64_t words[kWords];
    std::memcpy(words, &v, sizeof(v));
    for (size_t i = 0; i < kWords; ++i) sums[i] += words[i];
  }
  std::memcpy(&total, sums, sizeof(total));
  return total;
}

}  // namespace softflow

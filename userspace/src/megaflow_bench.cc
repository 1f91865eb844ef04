// Micro-benchmarks of the megaflow cache: EMC hits, classifier (tuple-space)
// hits with several subtables, and misses.
#include <benchmark/benchmark.h>

#include <arpa/inet.h>

#include <random>
#include <vector>

#include "softflow/megaflow.h"

namespace softflow {
namespace {

FlowKey random_key(std::mt19937_64& rng) {
  FlowKey k = zero_key();
  k.in_port = 1;
  k.dl_type = htons(0x0800);
  k.nw_proto = 17;
  k.nw_src[0] = static_cast<uint32_t>(rng());
  k.nw_dst[0] = static_cast<uint32_t>(rng());
  k.tp_src = static_cast<uint16_t>(rng());
  k.tp_dst = static_cast<uint16_t>(rng());
  return k;
}

// A cache with 'subtables' distinct masks (nw_src exact, nw_dst prefixes
// /8 + i) and 'flows' megaflows spread round-robin over them; returns their
// keys.  Each key matches exactly one subtable, so a hit searches on average
// about half of them until ranking moves the busiest first.
std::vector<FlowKey> fill(MegaflowCache& cache, int subtables, int flows, std::mt19937_64& rng) {
  std::vector<FlowKey> keys;
  for (int i = 0; i < flows; ++i) {
    FlowKey k = random_key(rng);
    FlowKey mask = zero_key();
    mask.dl_type = 0xffff;
    mask.nw_src[0] = 0xffffffff;  // random: every flow unique to its subtable
    mask.nw_dst[0] = htonl(~0u << (24 - (i % subtables)));
    MegaflowSegment seg;
    seg.actions.push_back(Action::output(2));
    if (cache.install(k, mask, {seg}, 0) != nullptr) keys.push_back(k);
  }
  return keys;
}

void BM_EmcHit(benchmark::State& state) {
  std::mt19937_64 rng(1);
  MegaflowCache cache;
  auto keys = fill(cache, 4, 1024, rng);
  std::vector<uint32_t> hashes;
  for (auto& k : keys) hashes.push_back(key_hash(k));
  MegaflowLookupStats st;
  for (size_t i = 0; i < keys.size(); ++i) cache.lookup(keys[i], hashes[i], st);  // fill the EMC
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.lookup_emc(keys[i], hashes[i]));
    if (++i == keys.size()) i = 0;
  }
}
BENCHMARK(BM_EmcHit);

void BM_ClassifierHit(benchmark::State& state) {
  std::mt19937_64 rng(2);
  MegaflowCacheConfig cfg;
  cfg.emc_entries = 0;
  MegaflowCache cache(cfg);
  auto keys = fill(cache, static_cast<int>(state.range(0)), 10000, rng);
  MegaflowLookupStats st;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.lookup_classifier(keys[i], st));
    if (++i == keys.size()) i = 0;
  }
  state.counters["subtables_per_lookup"] =
      benchmark::Counter(static_cast<double>(st.subtables_searched) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_ClassifierHit)->Arg(1)->Arg(4)->Arg(16);

void BM_Miss(benchmark::State& state) {
  std::mt19937_64 rng(3);
  MegaflowCache cache;
  fill(cache, static_cast<int>(state.range(0)), 10000, rng);
  std::vector<FlowKey> misses;
  for (int i = 0; i < 4096; ++i) {
    FlowKey k = random_key(rng);
    k.dl_type = htons(0x86dd);  // no megaflow matches IPv6
    misses.push_back(k);
  }
  MegaflowLookupStats st;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.lookup(misses[i], key_hash(misses[i]), st));
    if (++i == misses.size()) i = 0;
  }
}
BENCHMARK(BM_Miss)->Arg(4)->Arg(16);

}  // namespace
}  // namespace softflow

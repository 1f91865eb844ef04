// sf-bench: the in-process benchmark.  Runs pipelines over traces on the real
// datapath code with in-memory ports, no socket I/O: frames are loaded into
// frame buffers, parsed, processed in batches of 32 and counted at the output,
// exactly as a PMD thread would do minus the rings.
//
//   sf-bench --pipeline A,B,C --trace T1,T2,T3 --coalesce both
//   sf-bench --pipeline D --stages 0-8 --coalesce both
//   sf-bench --pipeline M --memload 0,1,2,4,8,16,32,64
//   sf-bench --pipeline A --trace T2 --miss-rate 0,0.25,0.5,0.75,1
//   sf-bench --flows my.flows --trace capture.pcap
//   sf-bench --pipeline A --trace T1 --profile          (CPU breakdown, Figure 12)
//   sf-bench --pipeline A --trace T2 --threads 1,2 --pin  (scaling, Figure 8)
//
// --threads N runs N threads, each with its own datapath of the same switch
// (as softflowd's PMD threads), each replaying its share of the trace: frames
// are split by a hash of their connection that is the same both ways, so a
// connection stays on one thread as RSS would keep it on one queue.  Mpps is
// the aggregate (all packets over the first start to the last finish), with
// each thread's own rate beside it.  --profile charges TSC cycles per batch
// phase (profile.h) and prints the breakdown per packet.
//
// Every configuration (pipeline x trace x coalescing x miss rate) gets its own
// switch.  Configurations are measured side by side: each run visits every
// configuration in turn, so machine noise hits them alike; each result is the
// median of --runs runs (min and max shown).  A warm-up pass builds the
// megaflows first.  Each pass over a trace is a replay: the L4 ports are
// replaced by a per-replay permutation (paper §7.1; --rewrite-ports off keeps
// them) and timestamps move on, so stateful services see new connections and
// time passing as they would with a generator looping over the trace.
#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "softflow/flow_syntax.h"
#include "softflow/parse.h"
#include "softflow/pipelines.h"
#include "softflow/ports.h"
#include "softflow/profile.h"
#include "softflow/switch.h"
#include "softflow/tracegen.h"

namespace sf = softflow;

namespace {

class CountingSink : public sf::PacketSink {
 public:
  bool transmit(uint32_t, std::span<const uint8_t> frame, uint64_t) override {
    ++packets;
    bytes += frame.size();
    return true;
  }
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// A trace in memory: the frames as generated or read, and the working copy a
// replay rewrites.
struct Trace {
  std::string name;
  std::vector<sf::Frame> original;
  std::vector<sf::Frame> replay;  // original with this replay's ports
  uint64_t span_ns = 0;           // last - first timestamp
  double mean_size = 0;
  // Per thread count: each thread's frames of this replay, in trace order.
  std::map<uint32_t, std::vector<std::vector<const sf::Frame*>>> shares;
};

struct Pipeline {
  std::string name;  // "A", "D4", "M16", or a flow file's stem
  std::vector<sf::FlowRule> rules;
};

struct Bench {
  const Pipeline* pipeline;
  Trace* trace;
  bool coalesce;
  double miss_rate;
  uint32_t threads = 1;
  bool profile = false;
  std::unique_ptr<sf::Switch> sw;
  std::vector<std::unique_ptr<CountingSink>> sinks;  // one per thread (datapath)
  std::vector<double> ns_per_packet;                 // per run, all threads together
  std::vector<std::vector<double>> thread_mpps;      // [thread][run]
  uint64_t packets = 0;                              // measured passes only
  sf::DatapathStats before;
  uint64_t tx = 0;
  sf::CycleProfile profile_before;
  double thread_ns = 0;  // measured passes, summed over threads (profile wall)

  uint64_t sent() const {
    uint64_t n = 0;
    for (const auto& s : sinks) n += s->packets;
    return n;
  }
  sf::CycleProfile profile_now() const {
    sf::CycleProfile p;
    for (size_t t = 0; t < sw->datapath_count(); ++t) p += sw->datapath(t).profile();
    return p;
  }
};

int fail(const std::string& msg) {
  std::cerr << "sf-bench: " << msg << "\n";
  return 1;
}

// Parses "4", "0-8" or "0,2,4" (integers within [lo, hi]).
std::vector<int> parse_int_list(const std::string& what, const std::string& text, int lo, int hi) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t dash = item.find('-', 1);
    size_t used = 0;
    const int a = std::stoi(item.substr(0, dash), &used);
    if (used != (dash == std::string::npos ? item.size() : dash)) throw std::invalid_argument(item);
    const int b = dash == std::string::npos ? a : std::stoi(item.substr(dash + 1));
    if (a < lo || b > hi || b < a)
      throw std::invalid_argument(fmt::format("{} '{}': expected values in {}..{}", what, item, lo, hi));
    for (int k = a; k <= b; ++k) out.push_back(k);
  }
  if (out.empty()) throw std::invalid_argument(what + ": empty list");
  return out;
}

// Parses "0,0.1,0.5" or percentages "0,10%,50%" into fractions in [0, 1].
std::vector<double> parse_rate_list(const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const bool percent = !item.empty() && item.back() == '%';
    size_t used = 0;
    double v = std::stod(percent ? item.substr(0, item.size() - 1) : item, &used);
    if (used != item.size() - (percent ? 1 : 0)) throw std::invalid_argument(item);
    if (percent) v /= 100.0;
    if (v < 0.0 || v > 1.0) throw std::invalid_argument("miss rate '" + item + "' not in 0..1");
    out.push_back(v);
  }
  if (out.empty()) throw std::invalid_argument("--miss-rate: empty list");
  return out;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

sf::Result<std::unique_ptr<Trace>> load_trace(const std::string& name, const sf::TraceSpec& base,
                                              const sf::TrafficSpec& udp) {
  auto t = std::make_unique<Trace>();
  t->name = name;
  if (name == "udp") {
    t->original = sf::udp_traffic(udp);
  } else if (auto kind = sf::parse_trace_kind(name)) {
    sf::TraceSpec spec = base;
    spec.kind = *kind;
    auto frames = sf::generate_trace_frames(spec, 1);
    if (!frames) return sf::Status::error(name + ": " + frames.error());
    t->original = std::move(frames.value());
    t->name = std::string(sf::trace_kind_name(*kind));
  } else {
    auto reader = sf::PcapReader::open(name, 1);
    if (!reader) return sf::Status::error(reader.error());
    sf::Frame f;
    while (reader.value()->next(f)) t->original.push_back(f);
    if (!reader.value()->error().empty()) return sf::Status::error(reader.value()->error());
    t->name = std::filesystem::path(name).stem().string();
  }
  if (t->original.empty()) return sf::Status::error(name + ": no packets");
  uint64_t bytes = 0, first = UINT64_MAX, last = 0;
  for (const sf::Frame& f : t->original) {
    if (f.bytes.size() > sf::FramePool::kFrameSize - sf::FramePool::kHeadroom)
      return sf::Status::error(fmt::format("{}: a frame of {} bytes is larger than a frame buffer", name,
                                           f.bytes.size()));
    bytes += f.bytes.size();
    first = std::min(first, f.timestamp_ns);
    last = std::max(last, f.timestamp_ns);
  }
  t->span_ns = last - first;
  t->mean_size = static_cast<double>(bytes) / static_cast<double>(t->original.size());
  t->replay = t->original;
  return t;
}

uint64_t mix64(uint64_t x) {  // the murmur3 finaliser
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// A hash of a packet's connection that is the same in both directions: the
// two endpoints (address, port) are hashed alone and combined by a sum.
// ICMP's "ports" (type, code) differ between request and reply, so they are
// left out; frames without IP addresses are spread by their MAC addresses.
uint64_t connection_hash(const sf::FlowKey& k) {
  auto endpoint = [](const uint32_t* addr, uint16_t port) {
    uint64_t h = port;
    for (int i = 0; i < 4; ++i) h = mix64(h ^ addr[i]) + 1;
    return h;
  };
  const bool icmp = k.nw_proto == 1 || k.nw_proto == 58;
  uint64_t a = endpoint(k.nw_src, icmp ? 0 : k.tp_src);
  uint64_t b = endpoint(k.nw_dst, icmp ? 0 : k.tp_dst);
  if (k.nw_src[0] == 0 && k.nw_src[1] == 0 && k.nw_src[2] == 0 && k.nw_src[3] == 0 &&
      k.nw_dst[0] == 0 && k.nw_dst[1] == 0 && k.nw_dst[2] == 0 && k.nw_dst[3] == 0) {
    uint64_t src = 0, dst = 0;
    std::memcpy(&src, k.dl_src, sizeof k.dl_src);
    std::memcpy(&dst, k.dl_dst, sizeof k.dl_dst);
    a = mix64(src);
    b = mix64(dst);
  }
  return mix64(a + b + k.nw_proto);
}

// Prepares replay 'r' of a trace: ports permuted (unless disabled) and
// timestamps moved past the previous replay's, so that time only goes
// forward; then each thread count's shares of it.
void prepare_replay(Trace& t, uint32_t r, bool rewrite_ports,
                    const std::set<uint32_t>& thread_counts, sf::FramePool& pool) {
  const uint64_t shift = static_cast<uint64_t>(r) * (t.span_ns + 1'000'000'000ULL);
  for (size_t i = 0; i < t.original.size(); ++i) {
    sf::Frame& f = t.replay[i];
    f.bytes = t.original[i].bytes;
    f.timestamp_ns = t.original[i].timestamp_ns + shift;
    if (rewrite_ports) sf::rewrite_l4_ports(std::span<uint8_t>(f.bytes), r);
  }
  std::vector<uint64_t> hashes;
  if (*thread_counts.rbegin() > 1) {
    hashes.reserve(t.replay.size());
    sf::Packet p;
    for (const sf::Frame& f : t.replay) {
      uint64_t h = 0;
      if (pool.load(p, f.bytes, f.port, f.timestamp_ns)) {  // sizes checked at load
        sf::parse_packet(p);
        h = connection_hash(p.key);
        pool.release(p);
      }
      hashes.push_back(h);
    }
  }
  for (uint32_t k : thread_counts) {
    auto& shares = t.shares[k];
    shares.assign(k, {});
    for (auto& share : shares) share.reserve(t.replay.size() / k + 1);
    for (size_t i = 0; i < t.replay.size(); ++i)
      shares[k == 1 ? 0 : hashes[i] % k].push_back(&t.replay[i]);
  }
}

// One pass over the frames; returns elapsed nanoseconds.  Megaflows expire
// on the frames' clock, once a second, as a PMD thread does.  When the
// datapath profiles, copying frames in counts as io_rx, parsing as parse and
// freeing the buffers as io_tx; the datapath charges the rest.
double run_once(sf::Datapath& dp, const std::vector<const sf::Frame*>& frames,
                sf::FramePool& pool) {
  if (frames.empty()) return 0.0;
  std::array<sf::Packet, sf::kMaxBatch> packets;
  std::array<sf::Packet*, sf::kMaxBatch> batch;
  uint64_t last_expire = frames.front()->timestamp_ns;
  sf::CycleClock clock(dp.profile_counters());
  const auto start = std::chrono::steady_clock::now();
  clock.restart();
  size_t i = 0;
  while (i < frames.size()) {
    size_t n = 0;
    while (n < sf::kMaxBatch && i < frames.size()) {
      const sf::Frame& f = *frames[i++];
      if (!pool.load(packets[n], f.bytes, f.port, f.timestamp_ns))
        continue;  // sizes checked at load
      batch[n] = &packets[n];
      ++n;
    }
    clock.charge(sf::ProfileCategory::kIoRx);
    for (size_t k = 0; k < n; ++k) sf::parse_packet(packets[k]);
    clock.charge(sf::ProfileCategory::kParse);
    const uint64_t now = frames[i - 1]->timestamp_ns;
    if (n) dp.process_batch({batch.data(), n}, now);
    clock.restart();
    for (size_t k = 0; k < n; ++k) pool.release(packets[k]);
    clock.charge(sf::ProfileCategory::kIoTx);
    if (now >= last_expire + 1'000'000'000ULL) {
      dp.expire(now);  // charged by the datapath
      clock.restart();
      last_expire = now;
    }
  }
  const auto end = std::chrono::steady_clock::now();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
}

// The CPUs this process may run on, for --pin.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

void pin_current_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set))
    std::cerr << fmt::format("sf-bench: cannot pin a thread to CPU {}: {}\n", cpu,
                             std::strerror(err));
}

// One replay of a bench's trace on its threads, each on its own datapath and
// share, started together.  Returns the wall time from the first start to
// the last finish; thread_ns gets each thread's own time.
double run_replay(Bench& b, std::vector<std::unique_ptr<sf::FramePool>>& pools, bool pin,
                  const std::vector<int>& cpus, std::vector<double>& thread_ns) {
  const auto& shares = b.trace->shares.at(b.threads);
  thread_ns.assign(b.threads, 0.0);
  if (b.threads == 1 && !pin) {
    thread_ns[0] = run_once(b.sw->datapath(0), shares[0], *pools[0]);
    return thread_ns[0];
  }
  using Clock = std::chrono::steady_clock;
  std::vector<Clock::time_point> starts(b.threads), ends(b.threads);
  std::barrier sync(static_cast<std::ptrdiff_t>(b.threads));
  std::vector<std::thread> workers;
  for (uint32_t t = 0; t < b.threads; ++t) {
    workers.emplace_back([&, t] {
      if (pin) pin_current_thread(cpus[t % cpus.size()]);
      sync.arrive_and_wait();
      starts[t] = Clock::now();
      run_once(b.sw->datapath(t), shares[t], *pools[t]);
      ends[t] = Clock::now();
    });
  }
  for (auto& w : workers) w.join();
  for (uint32_t t = 0; t < b.threads; ++t)
    thread_ns[t] = static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(ends[t] - starts[t]).count());
  const auto first = *std::min_element(starts.begin(), starts.end());
  const auto last = *std::max_element(ends.begin(), ends.end());
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(last - first).count());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string drops_text(const sf::DatapathStats& a, const sf::DatapathStats& b, nlohmann::json& out) {
  std::string text;
  for (size_t r = 1; r < b.drops.size(); ++r) {
    const uint64_t d = b.drops[r] - a.drops[r];
    if (d == 0) continue;
    const std::string name = sf::drop_reason_name(static_cast<sf::DropReason>(r));
    out[name] = d;
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", name, d);
  }
  return text.empty() ? "-" : text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SoftFlow in-process benchmark (in-memory ports, no socket I/O)"};
  std::string pipelines_text, stages_text = "4", memload_text = "1", coalesce_mode = "on";
  std::string traces_text, miss_text = "0", service_config_path, rewrite_mode = "on";
  std::string threads_text = "1", profile_mode = "off";
  std::vector<std::string> flow_files;
  bool no_coalesce = false, json = false, pin = false;
  sf::TrafficSpec traffic;
  traffic.flows = 10000;
  traffic.packets = 200000;
  sf::TraceSpec trace_spec;
  int runs = 5;
  uint64_t seed = 1;
  size_t max_megaflows = sf::MegaflowCacheConfig{}.max_megaflows;
  auto* pipeline_opt =
      app.add_option("--pipeline", pipelines_text, "generated pipelines: A, B, C, D, M, comma-separated (default D)");
  app.add_option("--flows", flow_files, "a flow file to run as a pipeline (repeatable)");
  app.add_option("--stages", stages_text, "Pipeline D's noop stages: K, LO-HI or a list (0-8)");
  app.add_option("--memload", memload_text, "Pipeline M's random reads per packet: N, LO-HI or a list");
  app.add_option("--trace", traces_text,
                 "traces, comma-separated: T1, T2, T3 (generated at --scale), udp (--flows-count UDP "
                 "flows of --frame-size bytes) or a pcap file (default: T1 for A-C and flow files, udp "
                 "for D and M)");
  app.add_option("--scale", trace_spec.scale, "scale of the generated traces (1.0 = the paper's T1)")
      ->check(CLI::Range(1e-4, 10.0));
  app.add_option("--rounds", trace_spec.rounds, "T3's rounds of bursts (0: by --scale)");
  app.add_option("--coalesce", coalesce_mode, "stage coalescing: on, off or both")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_flag("--no-coalesce", no_coalesce, "same as --coalesce off");
  app.add_option("--miss-rate", miss_text,
                 "synthetic megaflow miss rates, e.g. 0,0.25,0.5 or 0,50%,100% (paper Figure 11)");
  app.add_option("--rewrite-ports", rewrite_mode, "permute L4 ports on every replay: on or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--service-config", service_config_path, "service configuration (JSON)");
  app.add_option("--max-megaflows", max_megaflows, "megaflow cache size limit");
  app.add_option("--flows-count", traffic.flows, "udp trace: distinct flows")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--packets", traffic.packets, "udp trace: packets")->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--frame-size", traffic.frame_size, "udp trace: frame size in bytes (60-1792)")
      ->check(CLI::Range(size_t{60}, size_t{sf::FramePool::kFrameSize - sf::FramePool::kHeadroom}));
  app.add_option("--runs", runs, "measured runs per configuration (median reported)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", seed, "seed for rules and traffic");
  auto* threads_opt = app.add_option(
      "--threads", threads_text,
      "threads, each with its own datapath and share of the traffic (split by connection): N or "
      "a list, e.g. 1,2");
  app.add_flag("--pin", pin, "pin thread i to the i-th CPU this process may use");
  app.add_flag("--profile{on}", profile_mode,
               "CPU breakdown in TSC cycles per packet; --profile=both: with and without, side "
               "by side")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_flag("--json", json, "one JSON object per configuration");
  CLI11_PARSE(app, argc, argv);
  if (no_coalesce) coalesce_mode = "off";
  if (pipeline_opt->count() == 0 && flow_files.empty()) pipelines_text = "D";
  traffic.seed = seed;
  trace_spec.seed = seed;

  // Service configuration.
  nlohmann::json service_config = nlohmann::json::object();
  if (!service_config_path.empty()) {
    auto cfg = sf::load_service_config(service_config_path);
    if (!cfg) return fail(cfg.error());
    service_config = std::move(cfg.value());
  }

  // Pipelines.
  std::vector<std::unique_ptr<Pipeline>> pipelines;
  bool needs_trace = false, needs_udp = false;
  try {
    for (const std::string& name : split(pipelines_text)) {
      const auto kind = sf::pipeline_kind(name);
      if (!kind) return fail("--pipeline '" + name + "': expected A, B, C, D or M");
      std::vector<int> variants = {0};
      if (*kind == sf::PipelineKind::kD) variants = parse_int_list("--stages", stages_text, 0, sf::kMaxNoopStages);
      if (*kind == sf::PipelineKind::kM) variants = parse_int_list("--memload", memload_text, 0, 4096);
      for (int v : variants) {
        sf::PipelineOptions opt;
        opt.kind = *kind;
        opt.seed = seed;
        if (*kind == sf::PipelineKind::kD) opt.stages = v;
        if (*kind == sf::PipelineKind::kM) opt.memload = static_cast<uint32_t>(v);
        auto rules = sf::pipeline_rules(opt);
        if (!rules) return fail(fmt::format("pipeline {}: {}", name, rules.error()));
        auto p = std::make_unique<Pipeline>();
        p->name = sf::pipeline_name(*kind);
        if (*kind == sf::PipelineKind::kD || *kind == sf::PipelineKind::kM) p->name += std::to_string(v);
        p->rules = std::move(rules.value());
        (*kind == sf::PipelineKind::kD || *kind == sf::PipelineKind::kM ? needs_udp : needs_trace) = true;
        pipelines.push_back(std::move(p));
      }
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  for (const std::string& path : flow_files) {
    auto text = sf::read_text_file(path);
    if (!text) return fail(text.error());
    auto rules = sf::parse_flows(*text);
    if (!rules) return fail(path + ": " + rules.error());
    auto p = std::make_unique<Pipeline>();
    p->name = std::filesystem::path(path).stem().string();
    p->rules = std::move(rules.value());
    needs_trace = true;
    pipelines.push_back(std::move(p));
  }
  if (pipelines.empty()) return fail("nothing to run: give --pipeline or --flows");

  // Traces.
  if (traces_text.empty()) traces_text = needs_trace ? (needs_udp ? "T1,udp" : "T1") : "udp";
  std::vector<std::unique_ptr<Trace>> traces;
  for (const std::string& name : split(traces_text)) {
    auto t = load_trace(name, trace_spec, traffic);
    if (!t) return fail(t.error());
    traces.push_back(std::move(t.value()));
  }

  std::vector<double> miss_rates;
  try {
    miss_rates = parse_rate_list(miss_text);
  } catch (const std::exception& e) {
    return fail(std::string("--miss-rate: ") + e.what());
  }
  std::vector<bool> modes;
  if (coalesce_mode != "off") modes.push_back(true);
  if (coalesce_mode != "on") modes.push_back(false);
  const bool rewrite_ports = rewrite_mode == "on";
  std::vector<uint32_t> thread_counts;
  try {
    for (int k : parse_int_list("--threads", threads_text, 1, SF_MAX_DATAPATHS))
      thread_counts.push_back(static_cast<uint32_t>(k));
  } catch (const std::exception& e) {
    return fail(std::string("--threads: ") + e.what());
  }
  const std::set<uint32_t> distinct_threads(thread_counts.begin(), thread_counts.end());
  std::vector<bool> profile_modes;
  if (profile_mode != "on") profile_modes.push_back(false);
  if (profile_mode != "off") profile_modes.push_back(true);
  const double hz = profile_mode == "off" ? 0.0 : sf::tsc_hz();

  // Configurations, each with its own switch.
  std::vector<std::unique_ptr<Bench>> benches;
  for (const auto& p : pipelines) {
    for (const auto& t : traces) {
      for (bool coalesce : modes) {
        for (double miss : miss_rates) {
          for (uint32_t threads : thread_counts) {
            for (bool profile : profile_modes) {
              auto b = std::make_unique<Bench>();
              b->pipeline = p.get();
              b->trace = t.get();
              b->coalesce = coalesce;
              b->miss_rate = miss;
              b->threads = threads;
              b->profile = profile;
              sf::SwitchConfig cfg;
              cfg.datapath.coalesce = coalesce;
              cfg.datapath.synthetic_miss_rate = miss;
              cfg.datapath.cache.max_megaflows = max_megaflows;
              cfg.datapath.profile = profile;
              cfg.service_config = service_config;
              cfg.n_datapaths = threads;
              auto sw = sf::Switch::create(cfg);
              if (!sw) return fail(sw.error());
              b->sw = std::move(sw.value());
              if (sf::Status s = b->sw->add_flows(p->rules); !s)
                return fail(p->name + ": " + s.message());
              for (uint32_t k = 0; k < threads; ++k) {
                b->sinks.push_back(std::make_unique<CountingSink>());
                b->sw->datapath(k).set_sink(b->sinks.back().get());
              }
              b->thread_mpps.resize(threads);
              benches.push_back(std::move(b));
            }
          }
        }
      }
    }
  }

  // Replay 0 warms every configuration up (builds megaflows); replays
  // 1..runs are measured.
  const std::vector<int> cpus = allowed_cpus();
  std::vector<std::unique_ptr<sf::FramePool>> pools;
  for (uint32_t k = 0; k < *distinct_threads.rbegin(); ++k)
    pools.push_back(std::make_unique<sf::FramePool>(sf::kMaxBatch));
  std::vector<double> thread_ns;
  for (int r = 0; r <= runs; ++r) {
    for (auto& t : traces)
      prepare_replay(*t, static_cast<uint32_t>(r), rewrite_ports, distinct_threads, *pools[0]);
    for (auto& b : benches) {
      if (r == 1) {
        b->before = b->sw->total_stats();
        b->tx = b->sent();
        b->profile_before = b->profile_now();
      }
      const double ns = run_replay(*b, pools, pin, cpus, thread_ns);
      if (r == 0) continue;
      b->ns_per_packet.push_back(ns / static_cast<double>(b->trace->replay.size()));
      b->packets += b->trace->replay.size();
      const auto& shares = b->trace->shares.at(b->threads);
      for (uint32_t k = 0; k < b->threads; ++k) {
        b->thread_mpps[k].push_back(
            thread_ns[k] > 0 ? 1e3 * static_cast<double>(shares[k].size()) / thread_ns[k] : 0.0);
        b->thread_ns += thread_ns[k];
      }
    }
  }

  // A configuration's partner with one thread (for the speed-up column).
  auto one_thread = [&](const Bench& b) -> const Bench* {
    for (const auto& o : benches)
      if (o->threads == 1 && o->pipeline == b.pipeline && o->trace == b.trace &&
          o->coalesce == b.coalesce && o->miss_rate == b.miss_rate && o->profile == b.profile)
        return o.get();
    return nullptr;
  };
  const bool show_threads = threads_opt->count() > 0;
  const bool show_profile = profile_modes.size() > 1;
  if (!json) {
    std::cout << fmt::format("# {} runs each after a warm-up pass (median, min-max); ports {} per replay\n",
                             runs, rewrite_ports ? "permuted" : "kept");
    for (const auto& t : traces)
      std::cout << fmt::format("# trace {}: {} packets, mean {:.0f} bytes\n", t->name, t->original.size(),
                               t->mean_size);
    if (show_threads)
      std::cout << fmt::format("# threads split traffic by connection{}\n",
                               pin ? fmt::format("; pinned to CPUs {}", fmt::join(cpus, ",")) : "");
    if (hz > 0)
      std::cout << fmt::format(
          "# profile: TSC {:.3f} GHz; cycles per packet by category (share of "
          "the charged cycles); sum of the categories of wall cycles\n",
          hz / 1e9);
    std::cout << fmt::format("{:<9} {:<6} {:>8} {:>5} ", "pipeline", "trace", "coalesce", "miss");
    if (show_threads) std::cout << fmt::format("{:>7} ", "threads");
    if (show_profile) std::cout << fmt::format("{:>7} ", "profile");
    std::cout << fmt::format("{:>7} {:>15} {:>8} {:>8} {:>8} {:>9} {:>6}  {}\n", "Mpps",
                             "(min-max)", "ns/pkt", "lookups", "upcalls", "megaflows", "tx",
                             "drops");
  }
  for (auto& b : benches) {
    const double ns = median(b->ns_per_packet);
    const double lo = *std::min_element(b->ns_per_packet.begin(), b->ns_per_packet.end());
    const double hi = *std::max_element(b->ns_per_packet.begin(), b->ns_per_packet.end());
    const sf::DatapathStats after = b->sw->total_stats();
    const double n = static_cast<double>(b->packets);
    const double lookups = static_cast<double>(after.lookups - b->before.lookups) / n;
    const double upcalls = static_cast<double>(after.upcalls - b->before.upcalls) / n;
    const double tx = static_cast<double>(b->sent() - b->tx) / n;
    std::vector<double> per_thread;
    for (const auto& runs_of_thread : b->thread_mpps) per_thread.push_back(median(runs_of_thread));
    const Bench* single = b->threads > 1 ? one_thread(*b) : nullptr;
    const double speedup = single != nullptr ? median(single->ns_per_packet) / ns : 0.0;
    sf::CycleProfile profile;
    if (b->profile) {
      profile = b->profile_now();
      profile -= b->profile_before;
      profile.wall_cycles = static_cast<uint64_t>(b->thread_ns * hz / 1e9);
    }
    const size_t megaflows = b->sw->megaflow_count();
    nlohmann::json drops = nlohmann::json::object();
    const std::string drop_text = drops_text(b->before, after, drops);
    if (json) {
      nlohmann::json j = {{"pipeline", b->pipeline->name},
                          {"trace", b->trace->name},
                          {"trace_packets", b->trace->original.size()},
                          {"mean_frame_size", b->trace->mean_size},
                          {"coalesce", b->coalesce},
                          {"miss_rate", b->miss_rate},
                          {"runs", runs},
                          {"seed", seed},
                          {"scale", trace_spec.scale},
                          {"rewrite_ports", rewrite_ports},
                          {"mpps", 1e3 / ns},
                          {"mpps_min", 1e3 / hi},
                          {"mpps_max", 1e3 / lo},
                          {"ns_per_packet", ns},
                          {"lookups_per_packet", lookups},
                          {"upcalls_per_packet", upcalls},
                          {"megaflows", megaflows},
                          {"tx_per_packet", tx},
                          {"drops", drops},
                          {"services", b->sw->services().stats()},
                          {"threads", b->threads},
                          {"pin", pin},
                          {"mpps_per_thread", per_thread}};
      if (single != nullptr) j["speedup_vs_1_thread"] = speedup;
      if (b->profile) j["profile"] = sf::profile_json(profile, hz);
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format("{:<9} {:<6} {:>8} {:>4.0f}% ", b->pipeline->name, b->trace->name,
                               b->coalesce ? "on" : "off", b->miss_rate * 100);
      if (show_threads) std::cout << fmt::format("{:>7} ", b->threads);
      if (show_profile) std::cout << fmt::format("{:>7} ", b->profile ? "on" : "off");
      std::cout << fmt::format("{:>7.3f} {:>15} {:>8.1f} {:>8.2f} {:>8.4f} {:>9} {:>6.2f}  {}\n",
                               1e3 / ns, fmt::format("({:.3f}-{:.3f})", 1e3 / hi, 1e3 / lo), ns,
                               lookups, upcalls, megaflows, tx, drop_text);
      if (b->threads > 1) {
        std::string line;
        for (size_t k = 0; k < per_thread.size(); ++k)
          line += fmt::format("{}thread {}: {:.3f} Mpps ({} packets/replay)", k ? ", " : "", k,
                              per_thread[k], b->trace->shares.at(b->threads)[k].size());
        if (single != nullptr) line += fmt::format("; {:.2f}x the 1-thread rate", speedup);
        std::cout << "  " << line << "\n";
      }
      if (b->profile) std::cout << "  profile: " << sf::profile_text(profile) << "\n";
    }
  }
  return 0;
}

// sf-bench: the in-process benchmark.  Runs a pipeline on the real datapath
// code over in-memory ports on one thread (no socket I/O): frames are loaded
// into frame buffers, parsed, processed in batches of 32 and counted at the
// output port, exactly as a PMD thread would do minus the rings.
//
//   sf-bench --pipeline D --stages 0-8 [--coalesce on|off|both] [--json]
//
// Configurations are measured side by side: every run visits every
// configuration in turn, so machine noise hits them alike; each result is the
// median of --runs runs (min and max shown).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "softflow/parse.h"
#include "softflow/pipelines.h"
#include "softflow/ports.h"
#include "softflow/switch.h"

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

struct Config {
  std::string pipeline;
  int stages;
  bool coalesce;
};

struct Bench {
  Config config;
  std::unique_ptr<sf::Switch> sw;
  CountingSink sink;
  std::vector<double> ns_per_packet;
  double lookups_per_packet = 0;
  double upcalls_per_packet = 0;
  uint64_t tx = 0;
};

// Parses "4", "0-8" or "0,2,4".
std::vector<int> parse_stage_list(const std::string& text) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = item.find('-');
    const int lo = std::stoi(item.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(item.substr(dash + 1));
    if (lo < 0 || hi < lo || hi >= SF_MAX_STAGES) throw std::invalid_argument(item);
    for (int k = lo; k <= hi; ++k) out.push_back(k);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// One pass over the frames; returns elapsed nanoseconds.
double run_once(sf::Datapath& dp, const std::vector<sf::Frame>& frames, sf::FramePool& pool) {
  std::array<sf::Packet, sf::kMaxBatch> packets;
  std::array<sf::Packet*, sf::kMaxBatch> batch;
  const auto start = std::chrono::steady_clock::now();
  size_t i = 0;
  while (i < frames.size()) {
    size_t n = 0;
    while (n < sf::kMaxBatch && i < frames.size()) {
      const sf::Frame& f = frames[i++];
      if (!pool.load(packets[n], f.bytes, f.port, f.timestamp_ns)) continue;  // cannot happen: sizes checked
      sf::parse_packet(packets[n]);
      batch[n] = &packets[n];
      ++n;
    }
    if (n) dp.process_batch({batch.data(), n}, frames[i - 1].timestamp_ns);
    for (size_t k = 0; k < n; ++k) pool.release(packets[k]);
  }
  const auto end = std::chrono::steady_clock::now();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SoftFlow in-process benchmark (one thread, in-memory ports)"};
  std::string pipeline = "D", stages_text = "4", coalesce_mode = "on";
  bool no_coalesce = false, json = false;
  sf::TrafficSpec traffic;
  traffic.flows = 10000;
  traffic.packets = 200000;
  int runs = 5;
  app.add_option("--pipeline", pipeline, "pipeline (D)")->check(CLI::IsMember({"D"}));
  app.add_option("--stages", stages_text, "noop stages: K, LO-HI or a list (0-8)");
  app.add_option("--coalesce", coalesce_mode, "stage coalescing: on, off or both")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_flag("--no-coalesce", no_coalesce, "same as --coalesce off");
  app.add_option("--flows", traffic.flows, "distinct flows in the generated traffic")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--packets", traffic.packets, "packets per run")->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--frame-size", traffic.frame_size, "frame size in bytes (60-1792)")
      ->check(CLI::Range(size_t{60}, size_t{sf::FramePool::kFrameSize - sf::FramePool::kHeadroom}));
  app.add_option("--runs", runs, "runs per configuration (median reported)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", traffic.seed, "seed for rules and traffic");
  app.add_flag("--json", json, "one JSON object per configuration");
  CLI11_PARSE(app, argc, argv);
  if (no_coalesce) coalesce_mode = "off";

  std::vector<int> stage_list;
  try {
    stage_list = parse_stage_list(stages_text);
  } catch (const std::exception&) {
    std::cerr << "sf-bench: --stages '" << stages_text << "': expected K, LO-HI or K1,K2,... with 0 <= K < "
              << SF_MAX_STAGES << "\n";
    return 1;
  }

  std::vector<bool> modes;
  if (coalesce_mode != "off") modes.push_back(true);
  if (coalesce_mode != "on") modes.push_back(false);

  const std::vector<sf::Frame> frames = sf::udp_traffic(traffic);
  sf::FramePool pool(sf::kMaxBatch);

  std::vector<std::unique_ptr<Bench>> benches;
  for (int k : stage_list) {
    for (bool coalesce : modes) {
      auto b = std::make_unique<Bench>();
      b->config = {pipeline, k, coalesce};
      sf::SwitchConfig cfg;
      cfg.datapath.coalesce = coalesce;
      auto sw = sf::Switch::create(cfg);
      if (!sw) {
        std::cerr << "sf-bench: " << sw.error() << "\n";
        return 1;
      }
      b->sw = std::move(sw.value());
      if (sf::Status s = b->sw->add_flows(sf::pipeline_d(k, traffic.seed)); !s) {
        std::cerr << "sf-bench: " << s.message() << "\n";
        return 1;
      }
      b->sw->datapath().set_sink(&b->sink);
      run_once(b->sw->datapath(), frames, pool);  // warm-up: builds the megaflows
      benches.push_back(std::move(b));
    }
  }

  for (int r = 0; r < runs; ++r) {
    for (auto& b : benches) {
      sf::Datapath& dp = b->sw->datapath();
      const sf::DatapathStats before = dp.stats();
      const uint64_t tx_before = b->sink.packets;
      const double ns = run_once(dp, frames, pool);
      const sf::DatapathStats& after = dp.stats();
      const double n = static_cast<double>(frames.size());
      b->ns_per_packet.push_back(ns / n);
      b->lookups_per_packet = static_cast<double>(after.lookups - before.lookups) / n;
      b->upcalls_per_packet = static_cast<double>(after.upcalls - before.upcalls) / n;
      b->tx = b->sink.packets - tx_before;
    }
  }

  if (!json) {
    std::cout << fmt::format("# {} packets of {} bytes, {} flows, {} runs each (median, min-max)\n",
                             frames.size(), traffic.frame_size, traffic.flows, runs);
    std::cout << fmt::format("{:<8} {:>6} {:>8} {:>8} {:>17} {:>9} {:>11} {:>10} {:>9}\n", "pipeline",
                             "stages", "coalesce", "Mpps", "(min-max)", "ns/pkt", "lookups/pkt",
                             "megaflows", "tx/pkt");
  }
  for (auto& b : benches) {
    const double ns = median(b->ns_per_packet);
    const double lo = *std::min_element(b->ns_per_packet.begin(), b->ns_per_packet.end());
    const double hi = *std::max_element(b->ns_per_packet.begin(), b->ns_per_packet.end());
    const size_t megaflows = b->sw->megaflow_count();
    const double tx_ratio = static_cast<double>(b->tx) / static_cast<double>(frames.size());
    if (json) {
      nlohmann::json j = {{"pipeline", b->config.pipeline},
                          {"stages", b->config.stages},
                          {"coalesce", b->config.coalesce},
                          {"flows", traffic.flows},
                          {"packets", frames.size()},
                          {"frame_size", traffic.frame_size},
                          {"runs", runs},
                          {"seed", traffic.seed},
                          {"mpps", 1e3 / ns},
                          {"mpps_min", 1e3 / hi},
                          {"mpps_max", 1e3 / lo},
                          {"ns_per_packet", ns},
                          {"lookups_per_packet", b->lookups_per_packet},
                          {"upcalls_per_packet", b->upcalls_per_packet},
                          {"megaflows", megaflows},
                          {"tx_per_packet", tx_ratio}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format("{:<8} {:>6} {:>8} {:>8.3f} {:>17} {:>9.1f} {:>11.2f} {:>10} {:>9.2f}\n",
                               b->config.pipeline, b->config.stages, b->config.coalesce ? "on" : "off",
                               1e3 / ns, fmt::format("({:.3f}-{:.3f})", 1e3 / hi, 1e3 / lo), ns,
                               b->lookups_per_packet, megaflows, tx_ratio);
    }
  }
  return 0;
}

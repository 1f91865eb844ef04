// sf-offline: runs the SoftFlow datapath over pcap files, no root needed.
//
//   sf-offline --flows FILE --in 1=a.pcap [--in 2=b.pcap ...] --out DIR [--no-coalesce]
//
// Input packets are processed in timestamp order across the inputs (ties:
// earlier --in first), in batches as a PMD thread would; each output port's
// packets go to DIR/port-N.pcap in emission order.  The packets' timestamps
// are the datapath's clock (megaflow idle expiry).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include <array>
#include <cstring>
#include <map>
#include <iostream>
#include <queue>
#include <set>

#include "softflow/flow_syntax.h"
#include "softflow/parse.h"
#include "softflow/ports.h"
#include "softflow/switch.h"

namespace sf = softflow;

namespace {

struct Input {
  uint32_t port;
  std::unique_ptr<sf::PcapReader> reader;
  sf::Frame pending;
  bool has_pending = false;
};

int fail(const std::string& msg) {
  std::cerr << "sf-offline: " << msg << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Run the SoftFlow datapath over pcap files"};
  std::string flows_path, out_dir, service_config_path;
  std::vector<std::string> inputs;
  bool no_coalesce = false;
  size_t max_megaflows = sf::MegaflowCacheConfig{}.max_megaflows;
  double idle_timeout_s = 10.0;
  app.add_option("--flows", flows_path, "flow file (flow syntax, one rule per line, # comments)")
      ->required();
  app.add_option("--in", inputs, "PORT=FILE.pcap: packets received on PORT (repeatable)")
      ->required();
  app.add_option("--out", out_dir, "directory for port-N.pcap outputs")->required();
  app.add_flag("--no-coalesce", no_coalesce, "disable stage coalescing");
  app.add_option("--service-config", service_config_path, "service configuration (JSON)");
  app.add_option("--max-megaflows", max_megaflows, "megaflow cache size limit");
  app.add_option("--idle-timeout", idle_timeout_s, "megaflow idle timeout in seconds")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  // Inputs.
  std::vector<Input> sources;
  std::set<uint32_t> ports;
  for (const std::string& spec : inputs) {
    const size_t eq = spec.find('=');
    uint32_t port = 0;
    try {
      size_t used = 0;
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("no port");
      const unsigned long v = std::stoul(spec.substr(0, eq), &used);
      if (used != eq || v == 0 || v > 0xfffffffful) throw std::invalid_argument("bad port");
      port = static_cast<uint32_t>(v);
    } catch (const std::exception&) {
      return fail("--in '" + spec + "': expected PORT=FILE with PORT a number >= 1");
    }
    if (ports.count(port)) return fail("--in: port " + std::to_string(port) + " given twice");
    auto reader = sf::PcapReader::open(spec.substr(eq + 1), port);
    if (!reader) return fail(reader.error());
    ports.insert(port);
    sources.push_back(Input{port, std::move(reader.value()), {}, false});
  }

  // Flows.
  auto text = sf::read_text_file(flows_path);
  if (!text) return fail(text.error());
  auto rules = sf::parse_flows(*text);
  if (!rules) return fail(flows_path + ": " + rules.error());

  nlohmann::json service_config = nlohmann::json::object();
  if (!service_config_path.empty()) {
    auto cfg = sf::load_service_config(service_config_path);
    if (!cfg) return fail(cfg.error());
    service_config = std::move(cfg.value());
  }

  struct stat st{};
  if (stat(out_dir.c_str(), &st) != 0 && mkdir(out_dir.c_str(), 0755) != 0)
    return fail(out_dir + ": cannot create directory: " + std::strerror(errno));
  if (stat(out_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(out_dir + ": not a directory");

  // Output ports: every input port plus every port a rule outputs to.
  std::set<uint32_t> out_ports = ports;
  for (const sf::FlowRule& r : *rules)
    for (const sf::Action& a : r.actions)
      if (a.type == sf::ActionType::kOutput) out_ports.insert(a.port);

  sf::SwitchConfig config;
  config.datapath.coalesce = !no_coalesce;
  config.datapath.cache.max_megaflows = max_megaflows;
  config.datapath.cache.idle_timeout_ns = static_cast<uint64_t>(idle_timeout_s * 1e9);
  config.service_config = service_config;
  auto sw_result = sf::Switch::create(config);
  if (!sw_result) return fail(sw_result.error());
  sf::Switch& sw = *sw_result.value();
  if (sf::Status s = sw.add_flows(*rules); !s) return fail(flows_path + ": " + s.message());

  sf::PcapPorts sink(out_dir, out_ports);
  sf::Datapath& dp = sw.datapath();
  dp.set_sink(&sink);

  // Merge inputs by timestamp and process in batches.
  auto later = [&](size_t a, size_t b) {
    const auto& fa = sources[a].pending;
    const auto& fb = sources[b].pending;
    return fa.timestamp_ns != fb.timestamp_ns ? fa.timestamp_ns > fb.timestamp_ns : a > b;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  auto refill = [&](size_t i) -> bool {
    Input& in = sources[i];
    in.has_pending = in.reader->next(in.pending);
    if (!in.has_pending && !in.reader->error().empty()) return false;
    if (in.has_pending) heap.push(i);
    return true;
  };
  for (size_t i = 0; i < sources.size(); ++i)
    if (!refill(i)) return fail(sources[i].reader->error());

  sf::FramePool pool(sf::kMaxBatch * 2);
  std::array<sf::Packet, sf::kMaxBatch> packets;
  std::array<sf::Packet*, sf::kMaxBatch> batch;
  std::map<uint32_t, uint64_t> rx_per_port;
  uint64_t oversized = 0, now = 0, last_expire = 0;
  while (!heap.empty()) {
    size_t n = 0;
    while (n < sf::kMaxBatch && !heap.empty()) {
      const size_t i = heap.top();
      heap.pop();
      sf::Frame& f = sources[i].pending;
      ++rx_per_port[f.port];
      if (pool.load(packets[n], f.bytes, f.port, f.timestamp_ns)) {
        sf::parse_packet(packets[n]);
        batch[n] = &packets[n];
        ++n;
      } else {
        ++oversized;
      }
      now = std::max(now, f.timestamp_ns);
      if (!refill(i)) return fail(sources[i].reader->error());
    }
    if (n) dp.process_batch({batch.data(), n}, now);
    for (size_t k = 0; k < n; ++k) pool.release(packets[k]);
    if (now >= last_expire + 1'000'000'000ULL) {
      dp.expire(now);
      last_expire = now;
    }
  }
  if (sf::Status s = sink.close(); !s) return fail(s.message());

  // Summary.
  const sf::DatapathStats& st_dp = dp.stats();
  std::cout << fmt::format("{:>6} {:>12} {:>12}\n", "port", "rx_packets", "tx_packets");
  for (uint32_t p : out_ports) {
    const auto rx = rx_per_port.count(p) ? rx_per_port[p] : 0;
    const auto tx = sink.counts().count(p) ? sink.counts().at(p) : 0;
    std::cout << fmt::format("{:>6} {:>12} {:>12}\n", p, rx, tx);
  }
  std::cout << fmt::format("drops: total={}", st_dp.total_drops() + oversized);
  for (size_t r = 1; r < st_dp.drops.size(); ++r)
    if (st_dp.drops[r])
      std::cout << fmt::format(" {}={}", sf::drop_reason_name(static_cast<sf::DropReason>(r)),
                               st_dp.drops[r]);
  if (oversized) std::cout << fmt::format(" oversized={}", oversized);
  std::cout << "\n";
  std::cout << fmt::format("malformed packets (forwarded by what parsed): {}\n", st_dp.malformed);
  std::cout << fmt::format(
      "megaflows: {} live, {} installed, {} expired; coalescing {}\n",
      dp.megaflows().size(), st_dp.megaflows_installed, st_dp.megaflows_expired,
      no_coalesce ? "off" : "on");
  const double per_packet =
      st_dp.rx_packets ? static_cast<double>(st_dp.lookups) / static_cast<double>(st_dp.rx_packets)
                       : 0.0;
  std::cout << fmt::format(
      "megaflow lookups per packet: {:.3f} (lookups={} emc_hits={} megaflow_hits={} upcalls={} "
      "coalesced={})\n",
      per_packet, st_dp.lookups, st_dp.emc_hits, st_dp.megaflow_hits, st_dp.upcalls,
      st_dp.coalesced);
  return 0;
}

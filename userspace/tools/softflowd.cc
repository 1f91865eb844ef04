// softflowd: the SoftFlow switch on real interfaces.
//
//   softflowd --port veth-a:1 --port veth-b:2 [--flows FILE] [--socket PATH]
//             [--no-coalesce] [--xdp-mode native|generic] [--pmd-threads N]
//             [--profile] [--no-xdp-lookup] [--offload tcam[:ENTRIES]]
//
// --profile charges TSC cycles per batch phase (parse, lookup, slow path,
// services, actions, I/O, idle; profile.h) and `sfctl show` prints them per
// PMD thread.  --no-xdp-lookup mirrors no megaflows to the XDP program: it
// still parses and redirects, but every stage-0 lookup happens in userspace
// (the ablation of the hybrid's XDP-side classification).  --offload keeps
// the most active stage-0 megaflows in the emulated NIC's TCAM (offload/,
// `sf-nic`), whose marks the XDP program verifies to skip classification.
//
// Start-up checks everything before it changes anything (flows file, ports,
// interfaces, the XDP programs already attached, the control socket); then it
// attaches (or adopts) the XDP program, creates the AF_XDP sockets, and runs
// one PMD thread per --pmd-threads until SIGINT/SIGTERM, when it detaches
// what it attached and removes what it pinned.
#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstring>
#include <set>
#include <thread>

#include "megaflow_mirror.h"
#include "nic_tcam.h"
#include "softflow/describe.h"
#include "softflow/afxdp.h"
#include "softflow/clock.h"
#include "softflow/control.h"
#include "softflow/flow_syntax.h"
#include "softflow/ports.h"
#include "softflow/profile.h"
#include "softflow/switch.h"
#include "xdp_loader.h"

namespace softflow {
namespace {

struct Options {
  std::vector<std::string> ports;
  std::string socket = kDefaultControlSocket;
  std::string flows;
  std::string service_config;
  bool no_coalesce = false;
  bool profile = false;
  bool no_xdp_lookup = false;
  std::string xdp_mode = "native";
  uint32_t pmd_threads = 1;
  std::vector<int> pmd_cpus;  // PMD thread i runs on pmd_cpus[i % size]
  std::string pin_dir = "/sys/fs/bpf/softflow";
  size_t max_megaflows = 200000;
  double idle_timeout_s = 10.0;
  std::string offload;  // "", "tcam" or "tcam:ENTRIES"
};

// --offload tcam[:ENTRIES]: the TCAM's capacity (0: offload off).
Result<uint32_t> parse_offload(const std::string& arg) {
  if (arg.empty()) return 0u;
  const std::string kind = arg.substr(0, arg.find(':'));
  if (kind != "tcam")
    return Status::error(fmt::format("--offload {}: unknown offload '{}' (try tcam[:ENTRIES])",
                                     arg, kind));
  if (arg.size() == kind.size()) return uint32_t{SF_TCAM_DEFAULT_ENTRIES};
  const std::string num = arg.substr(kind.size() + 1);
  char* end = nullptr;
  const unsigned long v = std::strtoul(num.c_str(), &end, 10);
  if (num.empty() || *end != '\0' || v == 0 || v > SF_TCAM_MAX_ENTRIES)
    return Status::error(fmt::format("--offload {}: '{}' is not a TCAM size (1..{})", arg, num,
                                     SF_TCAM_MAX_ENTRIES));
  return static_cast<uint32_t>(v);
}

// Tells both the BPF mirror (when XDP lookups are on) and the offload policy
// about each megaflow of one datapath.
class OffloadObserver : public MegaflowObserver {
 public:
  OffloadObserver(MegaflowObserver* mirror, Offloader& offloader, uint32_t datapath)
      : mirror_(mirror), offloader_(offloader), datapath_(datapath) {}
  void megaflow_installed(const Megaflow& mf) override {
    if (mirror_ != nullptr) mirror_->megaflow_installed(mf);
    offloader_.megaflow_installed(datapath_, mf);
  }
  void megaflow_removed(const Megaflow& mf) override {
    offloader_.megaflow_removed(datapath_, mf);  // its marks are refused from here on
    if (mirror_ != nullptr) mirror_->megaflow_removed(mf);
  }

 private:
  MegaflowObserver* mirror_;
  Offloader& offloader_;
  uint32_t datapath_;
};

// Every live stage-0 megaflow with its packet count (under exclusive()).
std::vector<OffloadCandidate> offload_candidates(Switch& sw) {
  std::vector<OffloadCandidate> out;
  for (size_t t = 0; t < sw.datapath_count(); ++t)
    sw.datapath(t).megaflows().for_each([&](const Megaflow& mf) {
      if (!is_stage0(mf.key, mf.mask)) return;
      out.push_back({static_cast<uint32_t>(t), mf.id, mf.generation, mf.key, mf.mask,
                     mf.n_packets});
    });
  return out;
}

nlohmann::json offload_json(const Offloader& offloader, const NicTcam& nic) {
  nlohmann::json entries = nlohmann::json::array();
  for (const TcamEntry& e : offloader.entries())
    entries.push_back({{"index", e.index},
                       {"mark", e.mark},
                       {"generation", e.generation},
                       {"hits", nic.hits(e.index)},
                       {"recent", e.recent},
                       {"datapath", e.datapath},
                       {"megaflow_id", e.megaflow_id},
                       {"partial", e.partial},
                       {"match", print_match(Match{e.key, e.mask})},
                       {"megaflow_match", print_match(Match{e.megaflow_key, e.megaflow_mask})}});
  const OffloadStats s = offloader.stats();
  const sf_nic_stats n = nic.nic_stats();
  return {{"capacity", offloader.capacity()},
          {"stats",
           {{"entries", s.entries},
            {"installs", s.installs},
            {"evictions", s.evictions},
            {"removals", s.removals},
            {"refused", s.refused},
            {"conflicts", s.conflicts},
            {"not_stage0", s.not_stage0},
            {"rebalances", s.rebalances}}},
          {"nic",
           {{"rx", n.rx},
            {"marked", n.marked},
            {"not_marked", n.not_marked},
            {"tcam_miss", n.tcam_miss},
            {"no_room", n.no_room},
            {"unparsed", n.unparsed},
            {"redirect_failed", n.redirect_failed}}},
          {"entries", entries}};
}

int fail(const std::string& message) {
  fmt::print(stderr, "softflowd: {}\n", message);
  return 1;
}

Result<std::vector<AfxdpPortSpec>> parse_ports(const std::vector<std::string>& args) {
  std::vector<AfxdpPortSpec> ports;
  std::set<std::string> names;
  std::set<uint32_t> numbers;
  for (size_t i = 0; i < args.size(); ++i) {
    AfxdpPortSpec p;
    const std::string& a = args[i];
    const size_t colon = a.rfind(':');
    p.name = a.substr(0, colon);
    p.ofport = static_cast<uint32_t>(i + 1);
    if (colon != std::string::npos) {
      const std::string num = a.substr(colon + 1);
      char* end = nullptr;
      const unsigned long v = std::strtoul(num.c_str(), &end, 10);
      if (num.empty() || *end != '\0' || v == 0 || v > 0xfffffeffUL)
        return Status::error(fmt::format("--port {}: '{}' is not an OpenFlow port number (1..{})",
                                         a, num, 0xfffffeffUL));
      p.ofport = static_cast<uint32_t>(v);
    }
    if (p.name.empty()) return Status::error(fmt::format("--port {}: no interface name", a));
    if (!names.insert(p.name).second)
      return Status::error(fmt::format("--port {}: interface given twice", a));
    if (!numbers.insert(p.ofport).second)
      return Status::error(fmt::format("--port {}: OpenFlow port {} given twice", a, p.ofport));
    ports.push_back(p);
  }
  return ports;
}

// Every port a rule names must exist: a rule for a missing port is almost
// always a typo, and catching it at start beats a silent drop counter.
Status check_rule_ports(const FlowRule& rule, const std::set<uint32_t>& ofports) {
  const bool in_port_matched = rule.match.mask.in_port != 0;
  if (in_port_matched && !ofports.count(rule.match.value.in_port))
    return Status::error(
        fmt::format("in_port={} is not a port of this switch", rule.match.value.in_port));
  for (const Action& a : rule.actions)
    if (a.type == ActionType::kOutput && !ofports.count(a.port))
      return Status::error(fmt::format("output:{} is not a port of this switch", a.port));
  return Status::ok();
}

int run(const Options& opt) {
  auto ports_r = parse_ports(opt.ports);
  if (!ports_r) return fail(ports_r.status().message());
  std::vector<AfxdpPortSpec> ports = std::move(ports_r).value();
  std::set<uint32_t> ofports;
  for (const auto& p : ports) ofports.insert(p.ofport);
  auto mode = parse_xdp_mode(opt.xdp_mode);
  if (!mode) return fail(mode.status().message());
  auto tcam_entries = parse_offload(opt.offload);
  if (!tcam_entries) return fail(tcam_entries.status().message());
  if (tcam_entries.value() != 0 && opt.pin_dir.empty())
    return fail("--offload needs --pin-dir: the emulated NIC (sf-nic) finds its TCAM there");
  if (opt.pmd_threads == 0 || opt.pmd_threads > SF_MAX_DATAPATHS)
    return fail(fmt::format("--pmd-threads must be 1..{}", SF_MAX_DATAPATHS));

  auto port_by_name = [&ports](std::string_view name) -> std::optional<uint32_t> {
    for (const auto& p : ports)
      if (p.name == name) return p.ofport;
    return std::nullopt;
  };

  // The flows file, parsed and checked in full before anything changes.
  std::vector<FlowRule> rules;
  if (!opt.flows.empty()) {
    auto text = read_text_file(opt.flows);
    if (!text) return fail(text.error());
    FlowParseOptions popts;
    popts.port_by_name = port_by_name;
    popts.check_rule = [&ofports](const FlowRule& r) { return check_rule_ports(r, ofports); };
    auto parsed = parse_flows(*text, popts);
    if (!parsed) return fail(fmt::format("{}: {}", opt.flows, parsed.status().message()));
    rules = std::move(parsed).value();
  }

  nlohmann::json service_config = nlohmann::json::object();
  if (!opt.service_config.empty()) {
    auto cfg = load_service_config(opt.service_config);
    if (!cfg) return fail(cfg.error());
    service_config = std::move(cfg).value();
  }

  SwitchConfig sc;
  sc.n_datapaths = opt.pmd_threads;
  sc.datapath.coalesce = !opt.no_coalesce;
  sc.datapath.profile = opt.profile;
  sc.datapath.cache.max_megaflows = opt.max_megaflows;
  sc.datapath.cache.idle_timeout_ns = static_cast<uint64_t>(opt.idle_timeout_s * 1e9);
  sc.service_config = service_config;
  auto sw_r = Switch::create(sc);
  if (!sw_r) return fail(sw_r.status().message());
  std::unique_ptr<Switch> sw = std::move(sw_r).value();
  if (Status s = sw->add_flows(rules); !s)
    return fail(fmt::format("{}: {}", opt.flows, s.message()));

  // Signals go to the main thread only (sigtimedwait below).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // A second softflowd on the same control socket stops here, before it can
  // touch the first one's interfaces and maps.  The socket itself is bound
  // once the ports run, so that a socket that answers means a switch that
  // forwards.
  {
    Request probe;
    probe.command = "show";
    if (control_request(opt.socket, probe, std::chrono::milliseconds{2000}).is_ok())
      return fail(fmt::format("softflowd already running on {}", opt.socket));
  }
  std::unique_ptr<XdpLoader> loader;
  std::unique_ptr<AfxdpPorts> afxdp;
  std::unique_ptr<MegaflowMirror> mirror;
  std::unique_ptr<NicTcam> nic;
  std::unique_ptr<Offloader> offloader;
  std::vector<std::unique_ptr<OffloadObserver>> offload_observers;
  DaemonHooks hooks;
  hooks.now_ns = monotonic_ns;
  hooks.show = [&]() {
    nlohmann::json j;
    j["pmd_threads"] = opt.pmd_threads;
    j["coalescing"] = !opt.no_coalesce;
    j["xdp_lookup"] = !opt.no_xdp_lookup;
    nlohmann::json jports = nlohmann::json::array();
    std::vector<AfxdpQueueStats> qstats = afxdp ? afxdp->stats() : std::vector<AfxdpQueueStats>{};
    for (size_t i = 0; i < ports.size(); ++i) {
      nlohmann::json p;
      p["name"] = ports[i].name;
      p["ofport"] = ports[i].ofport;
      p["ifindex"] = ports[i].ifindex;
      p["queues"] = ports[i].n_queues;
      if (loader) {
        const XdpInterface& itf = loader->interfaces()[i];
        p["xdp_mode"] = std::string(xdp_mode_name(itf.mode));
        p["xdp_prog_id"] = itf.prog_id;
        p["adopted"] = itf.adopted;
      }
      uint64_t rx = 0, tx = 0, txd = 0, zc = 0, meta = 0;
      for (const auto& q : qstats) {
        if (q.ofport != ports[i].ofport) continue;
        rx += q.rx_packets;
        tx += q.tx_packets;
        txd += q.tx_dropped;
        zc += q.tx_zero_copy;
        meta += q.rx_xdp_meta;
      }
      p["rx_packets"] = rx;
      p["rx_xdp_metadata"] = meta;
      p["tx_packets"] = tx;
      p["tx_zero_copy"] = zc;
      p["tx_dropped"] = txd;
      jports.push_back(p);
    }
    j["ports"] = jports;
    if (loader) {
      const sf_xdp_stats x = loader->read_stats();
      j["xdp"] = {{"rx", x.rx},
                  {"emc_hits", x.emc_hits},
                  {"megaflow_hits", x.megaflow_hits},
                  {"misses", x.misses},
                  {"unparsed", x.unparsed},
                  {"malformed", x.malformed},
                  {"not_port", x.not_port},
                  {"no_socket", x.no_socket},
                  {"meta_failed", x.meta_failed},
                  {"mask_searches", x.mask_searches},
                  {"hint_marked", x.hint_marked},
                  {"hint_hits", x.hint_hits},
                  {"hint_stale", x.hint_stale},
                  {"hint_unknown", x.hint_unknown},
                  {"hint_mismatch", x.hint_mismatch},
                  {"hint_malformed", x.hint_malformed},
                  {"hint_rejected", x.hint_stale + x.hint_unknown + x.hint_mismatch +
                                        x.hint_malformed}};
    }
    if (mirror) {
      const MirrorStats m = mirror->stats();
      j["mirror"] = {{"entries", m.entries},           {"masks", m.masks},
                     {"mask_slots", SF_MAX_MASKS},     {"mirrored", m.mirrored},
                     {"removed", m.removed},           {"not_stage0", m.not_stage0},
                     {"no_mask_slot", m.no_mask_slot}, {"map_full", m.map_full}};
    }
    if (offloader) {
      const OffloadStats s = offloader->stats();
      j["offload"] = {{"tcam_entries", s.entries}, {"capacity", offloader->capacity()},
                      {"installs", s.installs},    {"evictions", s.evictions},
                      {"removals", s.removals},    {"refused", s.refused},
                      {"conflicts", s.conflicts}};
    }
    return j;
  };
  if (tcam_entries.value() != 0)
    hooks.offload = [&]() -> nlohmann::json {
      if (!offloader || !nic) return nullptr;
      return offload_json(*offloader, *nic);
    };

  XdpLoaderOptions lopts;
  lopts.mode = mode.value();
  lopts.pin_dir = opt.pin_dir;
  std::vector<std::string> names;
  for (const auto& p : ports) names.push_back(p.name);
  auto loader_r = XdpLoader::attach(names, lopts);
  if (!loader_r) return fail(loader_r.status().message());
  loader = std::move(loader_r).value();
  for (size_t i = 0; i < ports.size(); ++i) {
    ports[i].ifindex = loader->interfaces()[i].ifindex;
    ports[i].n_queues = interface_rx_queues(ports[i].name);
    if (ports[i].n_queues > SF_MAX_QUEUES)
      return fail(fmt::format(
          "{} has {} RX queues; softflowd serves at most {} per port "
          "(reduce them with `ethtool -L {} combined {}`)",
          ports[i].name, ports[i].n_queues, SF_MAX_QUEUES, ports[i].name, SF_MAX_QUEUES));
  }

  // The mirror starts by writing an empty mask list to XDP; without its
  // observers (--no-xdp-lookup) it stays empty and XDP resolves nothing.
  mirror = std::make_unique<MegaflowMirror>(loader->maps());
  if (tcam_entries.value() != 0) {
    auto nic_r = NicTcam::open(opt.pin_dir, loader->maps());
    if (!nic_r) return fail(nic_r.status().message());
    nic = std::move(nic_r).value();
    offloader = std::make_unique<Offloader>(tcam_entries.value(), *nic);
  }
  sw->exclusive([&] {
    for (size_t t = 0; t < sw->datapath_count(); ++t) {
      const auto dp = static_cast<uint32_t>(t);
      MegaflowObserver* observer = opt.no_xdp_lookup ? nullptr : mirror->observer(dp);
      if (offloader) {
        offload_observers.push_back(std::make_unique<OffloadObserver>(observer, *offloader, dp));
        observer = offload_observers.back().get();
      }
      sw->datapath(t).megaflows().set_observer(observer);
    }
    return 0;
  });
  if (opt.profile) tsc_hz();  // calibrated once, before the PMD threads start

  AfxdpConfig acfg;
  acfg.pmd_threads = opt.pmd_threads;
  acfg.hints = offloader != nullptr;
  auto afxdp_r = AfxdpPorts::create(ports, acfg, loader->maps());
  if (!afxdp_r) return fail(afxdp_r.status().message());
  afxdp = std::move(afxdp_r).value();

  std::atomic<bool> stop{false};
  std::vector<std::thread> pmds;
  for (uint32_t t = 0; t < opt.pmd_threads; ++t) {
    pmds.emplace_back([&, t] { afxdp->run_pmd(t, *sw, stop); });
    if (!opt.pmd_cpus.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(opt.pmd_cpus[t % opt.pmd_cpus.size()], &set);
      if (int err = pthread_setaffinity_np(pmds.back().native_handle(), sizeof(set), &set))
        fmt::print(stderr, "softflowd: cannot pin PMD thread {} to CPU {}: {}\n", t,
                   opt.pmd_cpus[t % opt.pmd_cpus.size()], std::strerror(err));
    }
  }

  Controller controller(*sw, hooks);
  ControlServer server;
  if (Status s = server.start(opt.socket, controller); !s) {
    stop = true;
    for (auto& t : pmds) t.join();
    return fail(s.message());
  }

  for (size_t i = 0; i < ports.size(); ++i) {
    const XdpInterface& itf = loader->interfaces()[i];
    fmt::print(stderr, "softflowd: port {} = {} (ifindex {}, {} queue{}, XDP {} prog {}{})\n",
               ports[i].ofport, ports[i].name, ports[i].ifindex, ports[i].n_queues,
               ports[i].n_queues == 1 ? "" : "s", xdp_mode_name(itf.mode), itf.prog_id,
               itf.adopted ? ", adopted" : "");
  }
  fmt::print(stderr, "softflowd: {} flows, {} PMD thread{}, coalescing {}, control {}{}{}{}\n",
             rules.size(), opt.pmd_threads, opt.pmd_threads == 1 ? "" : "s",
             opt.no_coalesce ? "off" : "on", opt.socket,
             opt.no_xdp_lookup ? ", no XDP lookups" : "", opt.profile ? ", profiling" : "",
             offloader ? fmt::format(", offload to an emulated NIC TCAM of {} entries",
                                     offloader->capacity())
                       : "");

  // Housekeeping until a signal: re-rank the XDP mask search order, and
  // keep the most active megaflows in the TCAM.
  int signo = 0;
  for (;;) {
    timespec timeout{1, 0};
    signo = sigtimedwait(&signals, nullptr, &timeout);
    if (signo > 0) break;
    mirror->rank();
    if (offloader) {
      const std::vector<OffloadCandidate> candidates =
          sw->exclusive([&] { return offload_candidates(*sw); });
      offloader->rebalance(candidates);
    }
  }
  fmt::print(stderr, "softflowd: {}: shutting down\n", strsignal(signo));

  stop = true;
  for (auto& t : pmds) t.join();
  server.stop();
  afxdp.reset();  // ports out of sf_ports, sockets closed
  sw->exclusive([&] {
    for (size_t t = 0; t < sw->datapath_count(); ++t)
      sw->datapath(t).megaflows().set_observer(nullptr);
    return 0;
  });
  offload_observers.clear();
  offloader.reset();
  nic.reset();  // TCAM emptied, the NIC's maps unpinned (those it created)
  mirror.reset();
  loader.reset();  // maps emptied, detached, unpinned
  return 0;
}

}  // namespace
}  // namespace softflow

int main(int argc, char** argv) {
  softflow::Options opt;
  CLI::App app{"softflowd: the SoftFlow virtual switch on AF_XDP/XDP ports"};
  app.add_option("--port", opt.ports, "IFACE[:OFPORT] (repeatable; default OFPORT: position)")
      ->required();
  app.add_option("--socket", opt.socket, "control socket for sfctl")->capture_default_str();
  app.add_option("--flows", opt.flows, "OpenFlow rules to start with (ovs-ofctl syntax)");
  app.add_option("--service-config", opt.service_config, "service configuration (JSON)");
  app.add_flag("--no-coalesce", opt.no_coalesce, "turn stage coalescing off");
  app.add_flag("--profile", opt.profile,
               "CPU breakdown per PMD thread in TSC cycles (sfctl show prints it)");
  app.add_flag("--no-xdp-lookup", opt.no_xdp_lookup,
               "mirror no megaflows to XDP: every stage-0 lookup in userspace");
  app.add_option("--offload", opt.offload,
                 "tcam[:ENTRIES]: keep the most active megaflows in an emulated NIC TCAM "
                 "(default 1024 entries, at most 16384); `sf-nic` is the NIC");
  app.add_option("--xdp-mode", opt.xdp_mode, "native or generic")->capture_default_str();
  app.add_option("--pmd-threads,--threads", opt.pmd_threads, "polling threads")
      ->capture_default_str();
  app.add_option("--pmd-cpus", opt.pmd_cpus, "CPUs for the PMD threads (thread i on the i-th)")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pin-dir", opt.pin_dir, "bpffs directory for the XDP maps ('' = no pins)")
      ->capture_default_str();
  app.add_option("--max-megaflows", opt.max_megaflows, "megaflow limit")->capture_default_str();
  app.add_option("--idle-timeout", opt.idle_timeout_s, "megaflow idle timeout, seconds")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return softflow::run(opt);
}

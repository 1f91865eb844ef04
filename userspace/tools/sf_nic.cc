// sf-nic: the emulated NIC with a TCAM (bpf/sf_nic.bpf.c) on the wire side of
// a switch port, as a bump in the wire between two interfaces:
//
//   sf-nic --wire IF --host IF --ofport N [--pin-dir DIR] [--netns NAME]
//          [--mark-percent P] [--xdp-mode native|generic] [--interval S] [--json]
//
// Frames arriving on --wire are classified against the TCAM that softflowd
// --offload programs (maps pinned by name under --pin-dir, the switch's pin
// directory: whichever of softflowd and sf-nic comes first creates them), and
// a match gets a shim with the entry's mark; then they go to --host, the veth
// whose peer is switch port --ofport.  Frames arriving on --host go back to
// --wire untouched.  --mark-percent marks only that share of the matching
// frames (at random), the x axis of the paper's Figure 9.
//
// --netns NAME switches only the network namespace (after opening the maps),
// so the pin directory is the one this process sees (`ip netns exec` would
// remount /sys and hide /sys/fs/bpf).  Runs until SIGINT/SIGTERM, then prints
// the NIC's counters (text or one JSON object) and detaches (the programs
// are attached through BPF links).  "sf-nic: ready" on stdout says the NIC
// forwards.  The pinned maps stay while softflowd runs (it owns the TCAM's
// contents); the last of the two to leave unpins them.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "sf_abi.h"
#include "sf_nic.skel.h"
#include "softflow/xsk_io.h"

namespace sf = softflow;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

int fail(const std::string& message) {
  fmt::print(stderr, "sf-nic: {}\n", message);
  return 1;
}

constexpr long kBpfFsMagic = 0xcafe4a11;

struct Options {
  std::string wire, host, pin_dir = "/sys/fs/bpf/softflow", netns, xdp_mode = "native";
  uint32_t ofport = 0;
  double mark_percent = 100;
  double interval = 0;
  bool json = false;
};

sf_nic_stats read_stats(int fd) {
  sf_nic_stats total{};
  const int n_cpus = libbpf_num_possible_cpus();
  if (n_cpus <= 0) return total;
  std::vector<sf_nic_stats> per_cpu(static_cast<size_t>(n_cpus));
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(fd, &zero, per_cpu.data()) != 0) return total;
  for (const sf_nic_stats& s : per_cpu) {
    total.rx += s.rx;
    total.marked += s.marked;
    total.not_marked += s.not_marked;
    total.tcam_miss += s.tcam_miss;
    total.no_room += s.no_room;
    total.unparsed += s.unparsed;
    total.redirect_failed += s.redirect_failed;
  }
  return total;
}

void print_stats(const sf_nic_stats& s, bool json) {
  const std::pair<const char*, uint64_t> fields[] = {{"rx", s.rx},
                                                     {"marked", s.marked},
                                                     {"not_marked", s.not_marked},
                                                     {"tcam_miss", s.tcam_miss},
                                                     {"no_room", s.no_room},
                                                     {"unparsed", s.unparsed},
                                                     {"redirect_failed", s.redirect_failed}};
  if (json) {
    nlohmann::json j;
    for (const auto& [k, v] : fields) j[k] = v;
    std::cout << j.dump() << std::endl;
    return;
  }
  std::string line;
  for (const auto& [k, v] : fields) line += fmt::format("{}{}={}", line.empty() ? "" : " ", k, v);
  std::cout << line << std::endl;
}

int run(const Options& opt) {
  if (opt.wire == opt.host) return fail("--wire and --host must be different interfaces");
  if (!(opt.mark_percent >= 0 && opt.mark_percent <= 100))
    return fail(fmt::format("--mark-percent {}: not a percentage (0..100)", opt.mark_percent));
  auto mode = sf::parse_xdp_mode(opt.xdp_mode);
  if (!mode) return fail(mode.status().message());

  // The maps, shared with softflowd through the pin directory.
  if (opt.pin_dir.rfind("/sys/fs/bpf", 0) == 0) {
    struct statfs fs {};
    if (statfs("/sys/fs/bpf", &fs) != 0 || static_cast<long>(fs.f_type) != kBpfFsMagic)
      mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700");
  }
  mkdir(opt.pin_dir.c_str(), 0700);
  struct statfs fs {};
  if (statfs(opt.pin_dir.c_str(), &fs) != 0 || static_cast<long>(fs.f_type) != kBpfFsMagic)
    return fail(fmt::format("--pin-dir {}: not a directory on a bpf filesystem", opt.pin_dir));
  LIBBPF_OPTS(bpf_object_open_opts, oopts, .pin_root_path = opt.pin_dir.c_str());
  sf_nic* skel = sf_nic__open_opts(&oopts);
  if (skel == nullptr) return fail(fmt::format("cannot open sf_nic: {}", std::strerror(errno)));
  std::unique_ptr<sf_nic, void (*)(sf_nic*)> guard(skel, sf_nic__destroy);
  if (int err = sf_nic__load(skel))
    return fail(
        fmt::format("cannot load sf_nic (maps under {}): {}", opt.pin_dir, std::strerror(-err)));

  if (!opt.netns.empty()) {
    const std::string path = "/run/netns/" + opt.netns;
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(fmt::format("--netns {}: {}", opt.netns, std::strerror(errno)));
    const int rc = setns(fd, CLONE_NEWNET);
    const int err = errno;
    close(fd);
    if (rc != 0) return fail(fmt::format("--netns {}: {}", opt.netns, std::strerror(err)));
  }
  auto wire = sf::interface_index(opt.wire);
  if (!wire) return fail(fmt::format("--wire: {}", wire.status().message()));
  auto host = sf::interface_index(opt.host);
  if (!host) return fail(fmt::format("--host: {}", host.status().message()));

  // The mark share; softflowd writes the rest of this entry (masks, order).
  const int config_fd = bpf_map__fd(skel->maps.sf_tcam_config);
  uint32_t zero = 0;
  sf_tcam_config config{};
  bpf_map_lookup_elem(config_fd, &zero, &config);
  config.mark_per_64k = static_cast<uint32_t>(std::lround(opt.mark_percent / 100.0 * 65536));
  bpf_map_update_elem(config_fd, &zero, &config, BPF_ANY);

  const int ports_fd = bpf_map__fd(skel->maps.sf_nic_ports);
  const sf_nic_port from_wire{opt.ofport, static_cast<uint32_t>(*host), 1, 0};
  const sf_nic_port from_host{opt.ofport, static_cast<uint32_t>(*wire), 0, 0};
  uint32_t wire_key = static_cast<uint32_t>(*wire), host_key = static_cast<uint32_t>(*host);
  if (bpf_map_update_elem(ports_fd, &wire_key, &from_wire, BPF_ANY) != 0 ||
      bpf_map_update_elem(ports_fd, &host_key, &from_host, BPF_ANY) != 0)
    return fail(fmt::format("cannot write {}: {}", SF_MAP_NIC_PORTS, std::strerror(errno)));
  auto forget_ports = [&] {
    bpf_map_delete_elem(ports_fd, &wire_key);
    bpf_map_delete_elem(ports_fd, &host_key);
  };

  const int prog_fd = bpf_program__fd(skel->progs.sf_nic);
  auto wire_link = sf::XdpLink::attach(prog_fd, opt.wire, mode.value());
  if (!wire_link) {
    forget_ports();
    return fail(wire_link.status().message());
  }
  auto host_link = sf::XdpLink::attach(prog_fd, opt.host, mode.value());
  if (!host_link) {
    forget_ports();
    return fail(host_link.status().message());
  }

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  std::cout << "sf-nic: ready" << std::endl;
  const int stats_fd = bpf_map__fd(skel->maps.sf_nic_stats);
  double waited = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    usleep(100000);
    waited += 0.1;
    if (opt.interval > 0 && waited + 1e-9 >= opt.interval) {
      print_stats(read_stats(stats_fd), opt.json);
      waited = 0;
    }
  }
  print_stats(read_stats(stats_fd), opt.json);
  forget_ports();
  // The last one out unpins the NIC's maps: no other NIC port left and no
  // switch (softflowd pins sf_ports while it runs).
  uint32_t any = 0;
  if (bpf_map_get_next_key(ports_fd, nullptr, &any) != 0 &&
      access((opt.pin_dir + "/" SF_MAP_PORTS).c_str(), F_OK) != 0) {
    for (const char* name : {SF_MAP_TCAM, SF_MAP_TCAM_MASKS, SF_MAP_TCAM_CONFIG, SF_MAP_TCAM_HITS,
                             SF_MAP_NIC_PORTS, SF_MAP_NIC_STATS})
      unlink((opt.pin_dir + "/" + name).c_str());
    rmdir(opt.pin_dir.c_str());
  }
  return 0;  // the links go with the process
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"sf-nic: the emulated NIC TCAM on the wire side of a SoftFlow port"};
  app.add_option("--wire", opt.wire, "interface frames arrive on from the wire")->required();
  app.add_option("--host", opt.host, "veth whose peer is the switch's port")->required();
  app.add_option("--ofport", opt.ofport, "OpenFlow number of that switch port")->required();
  app.add_option("--pin-dir", opt.pin_dir, "bpffs directory of softflowd's maps")
      ->capture_default_str();
  app.add_option("--netns", opt.netns, "network namespace of the interfaces (/run/netns/NAME)");
  app.add_option("--mark-percent", opt.mark_percent, "share of matching frames marked")
      ->capture_default_str();
  app.add_option("--xdp-mode", opt.xdp_mode, "native or generic")->capture_default_str();
  app.add_option("--interval", opt.interval, "print the counters every S seconds (0: at exit)")
      ->capture_default_str();
  app.add_flag("--json", opt.json, "counters as JSON");
  CLI11_PARSE(app, argc, argv);
  return run(opt);
}

// sf-nic: the emulated NIC with a TCAM (bpf/sf_nic.bpf.c) on the wire side of
// a switch port, as a bump in the wire between two interfaces:
//
//   sf-nic --wire IF --host IF --ofport N [--pin-dir DIR] [--netns NAME]
//          [--mark-percent P] [--xdp-mode native|generic] [--stats-interval S] [--json]
//
//   WIRE --> sf_nic: classify against the TCAM, insert the mark shim --> HOST
//   WIRE <-- sf_nic: untouched                                       <-- HOST
//
// Frames arriving on --wire are classified against the TCAM that softflowd
// --offload programs and, on a match, get a shim with the entry's mark; then
// they go to --host, the veth whose peer is switch port --ofport.  Frames
// arriving on --host (from the switch) go back to --wire untouched.  Both
// directions are one entry each in sf_nic_ports, keyed by the receiving
// interface.  --mark-percent marks only that share of the matching frames
// (at random), the x axis of the paper's Figure 9.
//
// The NIC's maps are pinned by name under --pin-dir, the switch's pin
// directory: whichever of softflowd and sf-nic comes first creates them, the
// other reuses them.  --netns NAME switches only the network namespace, so
// the pin directory is the one this process sees (`ip netns exec` would
// remount /sys and hide /sys/fs/bpf).
//
// "sf-nic: ready" on stdout says the NIC forwards.  It runs until SIGINT or
// SIGTERM, printing the NIC's counters every --stats-interval seconds and at
// exit (key=value text, or one JSON object a line with --json).  On exit it
// detaches and deletes its sf_nic_ports entries.  The programs are attached
// through BPF links, so they are detached however the process ends (even
// SIGKILL) and never replace or remove another program.  The pinned maps
// stay while softflowd runs (it owns the TCAM's contents) or another sf-nic
// has ports in them; the last one out unpins them (offload/nic_tcam.cc does
// the same on softflowd's side).
//
// Example:  sf-nic --netns nic --wire nw --host nh --ofport 1 --mark-percent 50
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
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "percpu.h"
#include "sf_abi.h"
#include "sf_nic.skel.h"
#include "softflow/status.h"
#include "softflow/xsk_io.h"

namespace sf = softflow;
using sf::Result;
using sf::Status;

namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;
constexpr const char* kBpfFsRoot = "/sys/fs/bpf";
constexpr uint64_t kMaxOfport = 0xfffffeff;  // OFPP_MAX, as softflowd --port

struct Options {
  std::string wire, host;
  std::string pin_dir = "/sys/fs/bpf/softflow";
  std::string netns;
  std::string xdp_mode = "native";
  uint64_t ofport = 0;
  std::string mark_percent = "100";  // text, so that an error repeats what was given
  double stats_interval = 0;
  bool json = false;
};

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

int fail(const std::string& message) {
  fmt::print(stderr, "sf-nic: {}\n", message);
  return 1;
}

// ---- start-up checks ---------------------------------------------------------------

// P in 0..100 (a fraction allowed) -> marks per 65536 matching frames.
Result<uint32_t> parse_mark_percent(const std::string& text) {
  double percent = -1;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, percent);
  if (text.empty() || ec != std::errc() || ptr != end || !(percent >= 0 && percent <= 100))
    return Status::error(fmt::format("--mark-percent {}: not a percentage (0..100)", text));
  return static_cast<uint32_t>(std::lround(percent / 100.0 * 65536));
}

bool on_bpffs(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && static_cast<long>(fs.f_type) == kBpfFsMagic;
}

// The pin directory must be on bpffs.  /sys/fs/bpf is mounted if it is not
// (a fresh /sys has no bpffs), and a missing directory is created when its
// nearest existing parent is on bpffs, as softflowd does.
Status prepare_pin_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path path = fs::path(dir).lexically_normal();
  const std::string normal = path.string();
  const bool under_root = normal.rfind(std::string(kBpfFsRoot) + "/", 0) == 0 ||
                          normal == kBpfFsRoot || normal == std::string(kBpfFsRoot) + "/";
  if (under_root && !on_bpffs(kBpfFsRoot) && mount("bpf", kBpfFsRoot, "bpf", 0, "mode=0700") != 0)
    return Status::error(fmt::format("cannot mount bpffs on {}: {}", kBpfFsRoot, errno_text(errno)),
                         errno);
  if (!fs::exists(path, ec)) {
    fs::path parent = path.parent_path();
    while (!parent.empty() && !fs::exists(parent, ec)) parent = parent.parent_path();
    if (parent.empty() || !on_bpffs(parent.string()))
      return Status::error(fmt::format("--pin-dir {}: no such directory on a bpf filesystem", dir),
                           ENOENT);
    if (!fs::create_directories(path, ec) && ec)
      return Status::error(fmt::format("--pin-dir {}: cannot create it: {}", dir, ec.message()),
                           ec.value());
  }
  if (!fs::is_directory(path, ec))
    return Status::error(fmt::format("--pin-dir {}: not a directory", dir), ENOTDIR);
  if (!on_bpffs(dir))
    return Status::error(
        fmt::format("--pin-dir {}: not on a bpf filesystem (mount -t bpf bpf DIR)", dir), EINVAL);
  return Status::ok();
}

// Only the network namespace: the mount namespace, and so the pin directory,
// stays the caller's.
Status enter_netns(const std::string& name) {
  const std::string path = "/run/netns/" + name;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::error(
        fmt::format("--netns {}: cannot open {}: {}", name, path, errno_text(errno)), errno);
  const int rc = setns(fd, CLONE_NEWNET);
  const int err = errno;
  close(fd);
  if (rc != 0)
    return Status::error(fmt::format("--netns {}: cannot enter it: {}", name, errno_text(err)),
                         err);
  return Status::ok();
}

// ---- the NIC ------------------------------------------------------------------------

// The sf_nic program and maps (pinned under the pin directory), attached to
// both interfaces, with their two sf_nic_ports entries.  The destructor
// undoes it all but the maps' contents, which are softflowd's.
class EmulatedNic {
 public:
  struct Config {
    std::string pin_dir, wire, host;
    int wire_ifindex = 0, host_ifindex = 0;
    uint32_t ofport = 0;
    uint32_t mark_per_64k = 65536;
    sf::XdpMode mode = sf::XdpMode::kNative;
  };

  static Result<std::unique_ptr<EmulatedNic>> start(const Config& config);
  ~EmulatedNic();
  EmulatedNic(const EmulatedNic&) = delete;
  EmulatedNic& operator=(const EmulatedNic&) = delete;

  sf_nic_stats stats() const;
  // Detaches from both interfaces (the destructor does it too).
  void detach() {
    wire_link_.reset();
    host_link_.reset();
  }

 private:
  EmulatedNic() = default;
  void forget_ports();
  void unpin_if_last();

  std::string pin_dir_;
  ::sf_nic* skel_ = nullptr;
  int ports_fd_ = -1;
  // Entries written in sf_nic_ports: receiving ifindex -> its port.
  std::vector<std::pair<uint32_t, sf_nic_port>> ports_;
  std::unique_ptr<sf::XdpLink> wire_link_, host_link_;
};

Result<std::unique_ptr<EmulatedNic>> EmulatedNic::start(const Config& config) {
  std::unique_ptr<EmulatedNic> nic(new EmulatedNic());
  nic->pin_dir_ = config.pin_dir;

  // Maps pinned by name under pin_root_path are reused if they exist, else
  // created and pinned there.
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .pin_root_path = config.pin_dir.c_str());
  nic->skel_ = sf_nic__open_opts(&open_opts);
  if (nic->skel_ == nullptr)
    return Status::error(fmt::format("cannot open the sf_nic program: {}", errno_text(errno)));
  if (int err = sf_nic__load(nic->skel_))
    return Status::error(fmt::format("cannot load sf_nic with its maps under {}: {} (maps of "
                                     "another build pinned there? remove them)",
                                     config.pin_dir, errno_text(err)),
                         -err);
  nic->ports_fd_ = bpf_map__fd(nic->skel_->maps.sf_nic_ports);

  // Attached first, so that an sf-nic refused here (another program, e.g.
  // another sf-nic, holds an interface) changes no map.  A link fails if the
  // interface already has an XDP program: nothing is replaced, and a failure
  // on --host drops the --wire link with 'nic'.  Until the ports are written
  // below, the program passes every frame to the stack.
  const int prog_fd = bpf_program__fd(nic->skel_->progs.sf_nic);
  auto wire_link = sf::XdpLink::attach(prog_fd, config.wire, config.mode);
  if (!wire_link) return wire_link.status();
  nic->wire_link_ = std::move(*wire_link);
  auto host_link = sf::XdpLink::attach(prog_fd, config.host, config.mode);
  if (!host_link) return host_link.status();
  nic->host_link_ = std::move(*host_link);

  // The share of matching frames marked; softflowd writes the rest of the
  // entry (the masks and their order), so read, modify, write.
  const int config_fd = bpf_map__fd(nic->skel_->maps.sf_tcam_config);
  const uint32_t zero = 0;
  sf_tcam_config tcam_config{};
  bool written = bpf_map_lookup_elem(config_fd, &zero, &tcam_config) == 0;
  tcam_config.mark_per_64k = config.mark_per_64k;
  written = written && bpf_map_update_elem(config_fd, &zero, &tcam_config, BPF_ANY) == 0;
  if (!written)
    return Status::error(fmt::format("cannot write {}: {}", SF_MAP_TCAM_CONFIG, errno_text(errno)));

  // Both directions.  Interface indexes are per namespace while the map is
  // shared: an entry already there is another sf-nic's (in another
  // namespace) or one that did not clean up; ours replaces it.
  const uint32_t wire = static_cast<uint32_t>(config.wire_ifindex);
  const uint32_t host = static_cast<uint32_t>(config.host_ifindex);
  for (const auto& [ifindex, port] :
       {std::pair{wire, sf_nic_port{config.ofport, host, /*mark=*/1, 0}},
        std::pair{host, sf_nic_port{config.ofport, wire, /*mark=*/0, 0}}}) {
    sf_nic_port old{};
    if (bpf_map_lookup_elem(nic->ports_fd_, &ifindex, &old) == 0)
      fmt::print(stderr,
                 "sf-nic: warning: {} already had an entry for ifindex {} (ofport {}): replaced\n",
                 SF_MAP_NIC_PORTS, ifindex, old.ofport);
    if (bpf_map_update_elem(nic->ports_fd_, &ifindex, &port, BPF_ANY) != 0)
      return Status::error(fmt::format("cannot write {}: {}", SF_MAP_NIC_PORTS, errno_text(errno)));
    nic->ports_.emplace_back(ifindex, port);
  }

  return nic;
}

EmulatedNic::~EmulatedNic() {
  detach();
  if (skel_ == nullptr) return;
  forget_ports();
  unpin_if_last();
  sf_nic__destroy(skel_);
}

// Our entries, unless another sf-nic has replaced them since.
void EmulatedNic::forget_ports() {
  for (const auto& [ifindex, port] : ports_) {
    sf_nic_port now{};
    if (bpf_map_lookup_elem(ports_fd_, &ifindex, &now) == 0 &&
        std::memcmp(&now, &port, sizeof(now)) == 0)
      bpf_map_delete_elem(ports_fd_, &ifindex);
  }
  ports_.clear();
}

// The NIC's maps are its hardware: they stay while softflowd runs (its
// sf_ports is pinned beside them), so that its TCAM entries survive an
// sf-nic restart, and while another sf-nic has ports in them.  The last one
// out unpins them, like softflowd's NicTcam.
void EmulatedNic::unpin_if_last() {
  uint32_t any = 0;
  if (ports_fd_ < 0) return;  // not loaded: the pins, if any, are not ours to judge
  if (bpf_map_get_next_key(ports_fd_, nullptr, &any) == 0) return;
  if (access((pin_dir_ + "/" + SF_MAP_PORTS).c_str(), F_OK) == 0) return;
  for (const char* name : {SF_MAP_TCAM, SF_MAP_TCAM_MASKS, SF_MAP_TCAM_CONFIG, SF_MAP_TCAM_HITS,
                           SF_MAP_NIC_PORTS, SF_MAP_NIC_STATS})
    unlink((pin_dir_ + "/" + name).c_str());
  rmdir(pin_dir_.c_str());  // only if empty (and not a mount point)
}

sf_nic_stats EmulatedNic::stats() const {
  return softflow::sum_percpu<sf_nic_stats>(bpf_map__fd(skel_->maps.sf_nic_stats), 0);
}

void print_stats(const sf_nic_stats& s, bool json) {
  const std::pair<const char*, uint64_t> fields[] = {{"rx", s.rx},
                                                     {"marked", s.marked},
                                                     {"not_marked", s.not_marked},
                                                     {"tcam_miss", s.tcam_miss},
                                                     {"no_room", s.no_room},
                                                     {"unparsed", s.unparsed},
                                                     {"redirect_failed", s.redirect_failed}};
  std::string line;
  if (json) {
    nlohmann::ordered_json j;
    for (const auto& [key, value] : fields) j[key] = value;
    line = j.dump();
  } else {
    for (const auto& [key, value] : fields)
      line += fmt::format("{}{}={}", line.empty() ? "" : " ", key, value);
  }
  fmt::print("{}\n", line);
  std::fflush(stdout);
}

// SIGINT or SIGTERM (blocked since start-up) within 'seconds' (<= 0: ever).
bool wait_for_stop(double seconds) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  if (seconds <= 0) {
    while (sigwaitinfo(&stop, nullptr) < 0) {
    }
    return true;
  }
  const double whole = std::floor(seconds);
  const timespec timeout{static_cast<time_t>(whole), static_cast<long>((seconds - whole) * 1e9)};
  while (true) {
    if (sigtimedwait(&stop, nullptr, &timeout) >= 0) return true;
    if (errno == EAGAIN) return false;  // EINTR: another signal; wait again
  }
}

int run(const Options& opt) {
  // Everything is checked before anything changes.
  if (opt.wire == opt.host)
    return fail(
        fmt::format("--wire and --host are both {}: they must be two interfaces", opt.wire));
  if (opt.ofport == 0 || opt.ofport > kMaxOfport)
    return fail(
        fmt::format("--ofport {}: not an OpenFlow port number (1..{})", opt.ofport, kMaxOfport));
  auto mark_per_64k = parse_mark_percent(opt.mark_percent);
  if (!mark_per_64k) return fail(mark_per_64k.error());
  if (!(opt.stats_interval >= 0 && std::isfinite(opt.stats_interval)))
    return fail(fmt::format("--stats-interval {}: not a number of seconds (0: only at exit)",
                            opt.stats_interval));
  auto mode = sf::parse_xdp_mode(opt.xdp_mode);
  if (!mode) return fail(fmt::format("--xdp-mode: {}", mode.error()));

  // Stopping waits until the NIC is fully set up, then undoes it.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed stdout must not skip the clean-up

  // Setting the network namespace leaves the mount namespace (and so the
  // pin directory) alone: the interfaces are resolved there, before any map
  // is created.
  if (!opt.netns.empty())
    if (Status s = enter_netns(opt.netns); !s) return fail(s.message());
  EmulatedNic::Config config;
  for (const auto& [flag, name, ifindex] :
       {std::tuple{"--wire", &opt.wire, &config.wire_ifindex},
        std::tuple{"--host", &opt.host, &config.host_ifindex}}) {
    auto index = sf::interface_index(*name);
    if (!index)
      return fail(fmt::format("{} {}: {}{}", flag, *name, index.error(),
                              opt.netns.empty() ? "" : " in network namespace " + opt.netns));
    *ifindex = *index;
  }
  if (Status s = prepare_pin_dir(opt.pin_dir); !s) return fail(s.message());

  config.pin_dir = opt.pin_dir;
  config.wire = opt.wire;
  config.host = opt.host;
  config.ofport = static_cast<uint32_t>(opt.ofport);
  config.mark_per_64k = *mark_per_64k;
  config.mode = *mode;
  auto nic = EmulatedNic::start(config);
  if (!nic) return fail(nic.error());

  fmt::print("sf-nic: ready\n");
  std::fflush(stdout);
  while (!wait_for_stop(opt.stats_interval)) print_stats((*nic)->stats(), opt.json);
  (*nic)->detach();
  print_stats((*nic)->stats(), opt.json);
  return 0;  // the destructor deletes our sf_nic_ports entries
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{
      "sf-nic: the emulated NIC TCAM on the wire side of a SoftFlow port (a bump in the wire).\n"
      "Frames from --wire are classified against the TCAM softflowd --offload programs,\n"
      "marked, and sent to --host (the veth whose peer is the switch's port); frames from\n"
      "--host go back to --wire untouched.  Runs until SIGINT/SIGTERM."};
  app.add_option("--wire", opt.wire, "interface frames from the outside world arrive on")
      ->required()
      ->type_name("IF");
  app.add_option("--host", opt.host, "veth whose peer is the switch's port")
      ->required()
      ->type_name("IF");
  app.add_option("--ofport", opt.ofport, "OpenFlow number of that switch port")
      ->required()
      ->type_name("N");
  app.add_option("--pin-dir", opt.pin_dir,
                 "bpffs directory of softflowd's maps (the NIC's maps are pinned there)")
      ->capture_default_str()
      ->type_name("DIR");
  app.add_option("--netns", opt.netns,
                 "network namespace of the interfaces (/run/netns/NAME); maps stay in this "
                 "mount namespace")
      ->type_name("NAME");
  app.add_option("--mark-percent", opt.mark_percent,
                 "share of TCAM-matching frames marked, 0..100 (random)")
      ->capture_default_str()
      ->type_name("P");
  app.add_option("--xdp-mode", opt.xdp_mode, "native or generic")
      ->capture_default_str()
      ->type_name("MODE");
  app.add_option("--stats-interval", opt.stats_interval,
                 "print the counters every S seconds (0: only at exit)")
      ->capture_default_str()
      ->type_name("S");
  app.add_flag("--json", opt.json, "counters as one JSON object a line");
  CLI11_PARSE(app, argc, argv);
  return run(opt);
}

// sf-echo: the bare I/O ceilings SoftFlow is measured against (EVALUATION.md):
// sends every frame that arrives on an interface back out of it, with the
// Ethernet addresses swapped, and nothing else.
//
//   sf-echo --iface IF [--mode afxdp|xdp-tx] [--queues N] [--cpu N]
//           [--xdp-mode native|generic] [--batch N] [--busy-poll] [--json]
//
//   --mode xdp-tx  the XDP program sf_reflect (sf_reflect.bpf.c) returns
//                  XDP_TX; no userspace on the packet path.
//   --mode afxdp   (default) a minimal AF_XDP echo: one busy-polling thread
//                  (pinned with --cpu) over the sockets of queues 0..N-1;
//                  receive a batch, swap the addresses in place, put the same
//                  UMEM frames on the same socket's TX ring, return completed
//                  frames to the fill ring.  No switch logic; batching and
//                  need_wakeup as a switch would use them.  --busy-poll:
//                  preferred busy polling (xsk_io.h), so the echo's thread
//                  runs its own RX NAPI; set napi_defer_hard_irqs and
//                  gro_flush_timeout on IF for it to take effect.
//
// Runs until SIGINT or SIGTERM, then prints rx, tx and dropped (text, or one
// JSON object with --json) and detaches everything (the XDP program is
// attached through a BPF link, so it goes away with the process however it
// ends).  "sf-echo: ready" on stderr says the program is attached.
//
// Example:  ip netns exec echo sf-echo --iface e0 --cpu 1 --json
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "sf_reflect.skel.h"
#include "softflow/clock.h"
#include "softflow/xsk_io.h"

namespace sf = softflow;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

// A copy-mode sendto() transmits at most 32 frames (the kernel's TX_BATCH_SIZE).
constexpr uint32_t kFramesPerKick = 32;
// Empty rounds before the thread sleeps in poll(2) (an idle echo leaves the
// CPU alone, as softflowd's PMD threads do).
constexpr int kIdleSpins = 1024;
constexpr int kPollTimeoutMs = 10;

int fail(const std::string& message) {
  std::cerr << "sf-echo: " << message << "\n";
  return 1;
}

// Sum over CPUs of a single-entry per-CPU counter map.
uint64_t read_percpu_counter(const bpf_map* map) {
  const int n_cpus = libbpf_num_possible_cpus();
  if (n_cpus <= 0) return 0;
  std::vector<uint64_t> values(static_cast<size_t>(n_cpus));
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(map), &zero, values.data()) != 0) return 0;
  uint64_t sum = 0;
  for (uint64_t v : values) sum += v;
  return sum;
}

void swap_macs(uint8_t* frame) {
  uint8_t mac[6];
  std::memcpy(mac, frame, 6);
  std::memcpy(frame, frame + 6, 6);
  std::memcpy(frame + 6, mac, 6);
}

struct EchoCounters {
  uint64_t rx = 0;
  uint64_t tx = 0;
  uint64_t tx_ring_full = 0;  // received but not sent back: the TX ring was full
  uint64_t kick_errors = 0;
};

class AfxdpEcho {
 public:
  AfxdpEcho(std::vector<sf::XskSocket*> sockets, uint32_t batch, bool busy_poll)
      : sockets_(std::move(sockets)),
        batch_(batch),
        max_kicks_(batch / kFramesPerKick + 2),
        busy_poll_(busy_poll) {}

  void run();
  const EchoCounters& counters() const { return counters_; }

 private:
  uint32_t echo(sf::XskSocket& s);
  void complete(sf::XskSocket& s);
  void push(sf::XskSocket& s);

  std::vector<sf::XskSocket*> sockets_;
  uint32_t batch_;
  uint32_t max_kicks_;
  bool busy_poll_;
  EchoCounters counters_;
};

// Completed TX frames go straight back to the fill ring (it has room for
// every frame of the UMEM).
void AfxdpEcho::complete(sf::XskSocket& s) {
  if (s.tx_outstanding == 0) return;
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&s.comp, s.tx_outstanding, &idx);
  if (n == 0) return;
  uint32_t fill_idx = 0;
  xsk_ring_prod__reserve(&s.fill, n, &fill_idx);
  for (uint32_t i = 0; i < n; ++i)
    *xsk_ring_prod__fill_addr(&s.fill, fill_idx + i) =
        s.chunk_of(*xsk_ring_cons__comp_addr(&s.comp, idx + i));
  xsk_ring_prod__submit(&s.fill, n);
  xsk_ring_cons__release(&s.comp, n);
  s.tx_outstanding -= n;
}

void AfxdpEcho::push(sf::XskSocket& s) {
  for (uint32_t i = 0; i < max_kicks_ && s.tx_unsent() > 0; ++i) {
    const int err = s.kick_tx();
    if (err != 0 && err != EAGAIN && err != EBUSY && err != ENOBUFS) {
      ++counters_.kick_errors;
      break;
    }
  }
}

uint32_t AfxdpEcho::echo(sf::XskSocket& s) {
  complete(s);
  // Busy polling: this call runs the RX queue's NAPI here.
  if (busy_poll_) s.busy_poll_rx();
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&s.rx, batch_, &idx);
  if (n == 0) {
    if (s.tx_unsent() > 0) push(s);
    s.wake_rx();
    return 0;
  }
  uint32_t tx_idx = 0;
  uint32_t m = xsk_prod_nb_free(&s.tx, n);
  m = std::min(m, n);
  if (m > 0) xsk_ring_prod__reserve(&s.tx, m, &tx_idx);
  for (uint32_t i = 0; i < m; ++i) {
    const xdp_desc* in = xsk_ring_cons__rx_desc(&s.rx, idx + i);
    swap_macs(s.data(in->addr));
    xdp_desc* out = xsk_ring_prod__tx_desc(&s.tx, tx_idx + i);
    out->addr = in->addr;
    out->len = in->len;
    out->options = 0;
  }
  if (m < n) {  // no room to send them back: return them to the fill ring
    uint32_t fill_idx = 0;
    xsk_ring_prod__reserve(&s.fill, n - m, &fill_idx);
    for (uint32_t i = m; i < n; ++i)
      *xsk_ring_prod__fill_addr(&s.fill, fill_idx + i - m) =
          s.chunk_of(xsk_ring_cons__rx_desc(&s.rx, idx + i)->addr);
    xsk_ring_prod__submit(&s.fill, n - m);
    counters_.tx_ring_full += n - m;
  }
  xsk_ring_cons__release(&s.rx, n);
  xsk_ring_prod__submit(&s.tx, m);
  s.tx_outstanding += m;
  counters_.rx += n;
  counters_.tx += m;
  push(s);
  s.wake_rx();
  return n;
}

void AfxdpEcho::run() {
  std::vector<pollfd> pfds;
  for (sf::XskSocket* s : sockets_) pfds.push_back({s->fd(), POLLIN, 0});
  int idle = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint32_t got = 0;
    for (sf::XskSocket* s : sockets_) got += echo(*s);
    if (got > 0) {
      idle = 0;
      continue;
    }
    if (++idle < kIdleSpins) continue;
    idle = 0;
    bool in_flight = false;
    for (sf::XskSocket* s : sockets_) in_flight = in_flight || s->tx_outstanding > 0;
    if (!in_flight) poll(pfds.data(), pfds.size(), kPollTimeoutMs);
  }
  // Let what is on the TX rings go (up to 100 ms).
  const uint64_t deadline = sf::monotonic_ns() + 100'000'000ULL;
  for (;;) {
    bool in_flight = false;
    for (sf::XskSocket* s : sockets_) {
      complete(*s);
      if (s->tx_unsent() > 0) push(*s);
      in_flight = in_flight || s->tx_outstanding > 0;
    }
    if (!in_flight || sf::monotonic_ns() >= deadline) break;
  }
}

void wait_for_signal() {
  sigset_t mask, old;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, &old);
  while (!g_stop.load()) sigsuspend(&old);
  sigprocmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Send every frame back where it came from: the bare XDP_TX / AF_XDP ceilings"};
  std::string iface, mode_name = "afxdp", xdp_mode_name = "native";
  uint32_t queues = 1, batch = 64;
  int cpu = -1;
  bool json = false, busy_poll = false;
  app.add_option("--iface", iface, "interface to echo on")->required();
  app.add_option("--mode", mode_name, "afxdp (AF_XDP echo) or xdp-tx (XDP_TX reflector)")
      ->capture_default_str()
      ->check(CLI::IsMember({"afxdp", "xdp-tx"}));
  app.add_option("--queues", queues, "afxdp: sockets on queues 0..N-1")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--cpu", cpu, "afxdp: pin the polling thread to this CPU");
  app.add_option("--xdp-mode", xdp_mode_name, "native|generic")->capture_default_str();
  app.add_option("--batch", batch, "afxdp: frames per RX batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_flag("--busy-poll", busy_poll,
               "afxdp: preferred busy polling (needs napi_defer_hard_irqs and gro_flush_timeout "
               "on IF)");
  app.add_flag("--json", json, "one JSON object on stdout");
  CLI11_PARSE(app, argc, argv);

  const sf::Result<sf::XdpMode> xdp_mode = sf::parse_xdp_mode(xdp_mode_name);
  if (!xdp_mode) return fail(xdp_mode.error());
  if (auto index = sf::interface_index(iface); !index) return fail(index.error());
  const bool afxdp = mode_name == "afxdp";
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
      return fail(fmt::format("cannot pin to CPU {}: {}", cpu, std::strerror(errno)));
  }

  sf_reflect* skel = sf_reflect__open();
  if (skel == nullptr) return fail("cannot open the XDP program");
  bpf_program__set_autoload(afxdp ? skel->progs.sf_reflect : skel->progs.sf_xsk_redirect, false);
  if (int err = sf_reflect__load(skel); err != 0) {
    sf_reflect__destroy(skel);
    return fail(fmt::format("cannot load the XDP program: {}", std::strerror(-err)));
  }
  std::unique_ptr<sf_reflect, decltype(&sf_reflect__destroy)> skel_owner(skel, sf_reflect__destroy);

  // Every frame of a socket's UMEM starts on the fill ring and is sent back
  // in the buffer it arrived in: no TX region.
  std::vector<std::unique_ptr<sf::XskSocket>> sockets;
  std::vector<sf::XskSocket*> raw;
  if (afxdp) {
    const int xsks_fd = bpf_map__fd(skel->maps.sf_reflect_xsks);
    for (uint32_t q = 0; q < queues; ++q) {
      sf::XskSocketConfig cfg;
      cfg.ifname = iface;
      cfg.queue = q;
      cfg.rx_frames = 4096;
      cfg.tx_frames = 0;
      auto s = sf::XskSocket::create(cfg);
      if (!s) return fail(fmt::format("{} (does {} have {} queues?)", s.error(), iface, queues));
      if (sf::Status st = sf::register_xsk(xsks_fd, q, (*s)->fd()); !st) return fail(st.message());
      if (busy_poll)
        if (sf::Status st = (*s)->enable_busy_poll(batch); !st) return fail(st.message());
      raw.push_back(s->get());
      sockets.push_back(std::move(*s));
    }
  }
  const int prog_fd = bpf_program__fd(afxdp ? skel->progs.sf_xsk_redirect : skel->progs.sf_reflect);
  auto link = sf::XdpLink::attach(prog_fd, iface, *xdp_mode);
  if (!link) return fail(link.error());

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  fmt::print(stderr, "sf-echo: ready: {} on {} ({} XDP)\n", mode_name, iface,
             sf::xdp_mode_name(*xdp_mode));

  const uint64_t started = sf::monotonic_ns();
  nlohmann::json j;
  j["mode"] = mode_name;
  j["iface"] = iface;
  if (afxdp) {
    AfxdpEcho echo(raw, batch, busy_poll);
    echo.run();
    link->reset();
    const EchoCounters& c = echo.counters();
    sf::XskStatistics xs;
    for (const sf::XskSocket* s : raw) {
      const sf::XskStatistics one = s->statistics();
      xs.rx_dropped += one.rx_dropped;
      xs.rx_ring_full += one.rx_ring_full;
      xs.rx_fill_ring_empty += one.rx_fill_ring_empty;
    }
    j["queues"] = queues;
    j["busy_poll"] = busy_poll;
    j["rx"] = c.rx;
    j["tx"] = c.tx;
    j["dropped"] = c.tx_ring_full + xs.rx_dropped + xs.rx_ring_full;
    j["tx_ring_full"] = c.tx_ring_full;
    j["tx_errors"] = c.kick_errors;
    j["rx_kernel_dropped"] = xs.rx_dropped;
    j["rx_ring_full"] = xs.rx_ring_full;
    j["rx_fill_ring_empty"] = xs.rx_fill_ring_empty;
  } else {
    wait_for_signal();
    const uint64_t reflected = read_percpu_counter(skel->maps.sf_reflected);
    const uint64_t dropped = read_percpu_counter(skel->maps.sf_reflect_short);
    link->reset();
    j["rx"] = reflected + dropped;
    j["tx"] = reflected;
    j["dropped"] = dropped;
  }
  j["seconds"] = static_cast<double>(sf::monotonic_ns() - started) / 1e9;

  if (json) {
    std::cout << j.dump() << std::endl;
  } else {
    for (auto it = j.begin(); it != j.end(); ++it)
      std::cout << it.key() << ": " << (it->is_string() ? it->get<std::string>() : it->dump())
                << "\n";
  }
  return 0;
}

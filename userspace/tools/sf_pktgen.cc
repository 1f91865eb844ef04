// sf-pktgen: replays a pcap through AF_XDP sockets, as fast as one core
// allows or at a given rate, looping, and counts what comes back.
//
//   sf-pktgen --iface IF --pcap FILE [--queues N] [--rx-iface IF2] [--rate PPS]
//             [--duration S] [--warmup S] [--loops N] [--no-rewrite] [--drain S]
//             [--interval S] [--cpu N] [--batch N] [--xdp-mode native|generic] [--json]
//
// Pass r of the trace (r = 0, 1, 2, ...) has its L4 ports rewritten with
// rewrite_l4_ports(frame, r) (tracegen.h; pass 0 is the trace as it is), so
// every pass opens new connections; --no-rewrite sends the trace unchanged.
// Frames go to queue hash(5-tuple) % N of IF (both directions of a connection
// on one queue).  What arrives on IF (or IF2) is counted by an XDP program
// (sf_reflect.bpf.o's sf_xsk_redirect) that hands every frame to our
// sockets; it is attached through a BPF link, so it goes away with the
// process however it ends.
//
// The report (text, or one JSON object with --json) covers the measured
// window: from the end of --warmup to the last send.  'received' also counts
// what arrives during --drain; lost = sent - received (>= 0); the rates are
// per second of the window.  'generator_bound' says the generator, not the
// device, may have been the limit: it missed --rate by more than 5 %, or, at
// an unlimited rate, got back >= 99 % of what it sent.
//
// Example, a reflector (sf-echo) in namespace echo behind veth pair g0/e0:
//   ip netns exec gen sf-pktgen --iface g0 --pcap t2.pcap --cpu 0 --duration 10 --json
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "sf_reflect.skel.h"
#include "softflow/afxdp.h"
#include "softflow/clock.h"
#include "softflow/ports.h"
#include "softflow/tracegen.h"
#include "softflow/xsk_io.h"

namespace sf = softflow;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

uint64_t seconds_to_ns(double s) { return s <= 0 ? 0 : static_cast<uint64_t>(s * 1e9); }

constexpr uint32_t kFrameSize = 2048;
constexpr uint32_t kRxBatch = 256;
// A copy-mode sendto() transmits at most 32 frames (the kernel's TX_BATCH_SIZE).
constexpr uint32_t kFramesPerKick = 32;

struct Options {
  std::string iface;
  std::string pcap;
  uint32_t queues = 1;
  std::string rx_iface;
  double rate = 0;
  double duration = 10;
  double warmup = 0;
  uint64_t loops = 0;
  bool no_rewrite = false;
  double drain = 0.5;
  double interval = 1;
  int cpu = -1;
  uint32_t batch = 64;
  std::string xdp_mode = "native";
  bool json = false;
};

// The trace in one block, each frame with its queue.
struct TracePacket {
  uint32_t offset;
  uint32_t len;
  uint32_t queue;
};
struct Trace {
  std::vector<uint8_t> bytes;
  std::vector<TracePacket> packets;
  uint64_t skipped_too_large = 0;
};

sf::Result<Trace> load_trace(const std::string& path, uint32_t max_len, uint32_t n_queues) {
  // libpcap's own message for a missing file repeats the path; say it once.
  if (access(path.c_str(), R_OK) != 0)
    return sf::Status::error(fmt::format("cannot read pcap {}: {}", path, std::strerror(errno)),
                             errno);
  auto reader = sf::PcapReader::open(path, 0);
  if (!reader) return reader.status();
  Trace trace;
  sf::Frame frame;
  while ((*reader)->next(frame)) {
    if (frame.bytes.size() > max_len || frame.bytes.size() < 14) {
      ++trace.skipped_too_large;
      continue;
    }
    TracePacket p;
    p.offset = static_cast<uint32_t>(trace.bytes.size());
    p.len = static_cast<uint32_t>(frame.bytes.size());
    p.queue = sf::flow_queue(frame.bytes, n_queues);
    trace.bytes.insert(trace.bytes.end(), frame.bytes.begin(), frame.bytes.end());
    trace.packets.push_back(p);
    if (trace.bytes.size() > (uint64_t{1} << 31))
      return sf::Status::error(path + ": trace too large (over 2 GiB of frames)");
  }
  if (!(*reader)->error().empty()) return sf::Status::error((*reader)->error(), EIO);
  if (trace.packets.empty())
    return sf::Status::error(fmt::format("{}: no frames to send ({} longer than {} bytes skipped)",
                                         path, trace.skipped_too_large, max_len));
  return trace;
}

struct Counters {
  uint64_t sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t received = 0;
  uint64_t bytes_received = 0;
};

struct TxQueue {
  sf::XskSocket* xsk = nullptr;
  uint32_t queue = 0;
  std::vector<std::pair<uint32_t, uint32_t>> pending;  // (trace index, replay)
};

class Generator {
 public:
  Generator(const Options& opts, const Trace& trace, std::vector<TxQueue> tx,
            std::vector<sf::XskSocket*> rx)
      : opts_(opts), trace_(trace), tx_(std::move(tx)), rx_(std::move(rx)) {
    max_kicks_ = opts.batch / kFramesPerKick + 2;
  }

  void run();
  nlohmann::json report() const;

 private:
  void send_pending(TxQueue& q);
  void push(sf::XskSocket& s);
  void poll_rx();
  void progress(uint64_t now);
  bool tx_busy();

  const Options& opts_;
  const Trace& trace_;
  std::vector<TxQueue> tx_;
  std::vector<sf::XskSocket*> rx_;
  uint32_t max_kicks_;

  Counters total_;
  Counters at_measure_start_;
  uint64_t tx_ring_full_ = 0;  // reservations refused (ring full or no free frame)
  uint64_t tx_dropped_ = 0;    // sendto() said EBUSY: the device dropped a frame
  uint64_t kick_errors_ = 0;   // other sendto() errors
  uint64_t loops_done_ = 0;
  uint64_t replays_started_ = 0;
  uint64_t tx_unfinished_ = 0;  // never completed (left in flight at exit)
  bool interrupted_ = false;
  uint64_t start_ns_ = 0;
  uint64_t measure_start_ns_ = 0;
  uint64_t send_stop_ns_ = 0;
  uint64_t end_ns_ = 0;
  // Progress lines.
  uint64_t last_report_ns_ = 0;
  Counters last_report_;
};

// Copy mode sends in sendto(), at most kFramesPerKick frames per call: kick
// until the ring is empty, a bounded number of times (the rest goes on the
// next round, after the receive side had its turn).
void Generator::push(sf::XskSocket& s) {
  for (uint32_t i = 0; i < max_kicks_ && s.tx_unsent() > 0; ++i) {
    const int err = s.kick_tx();
    if (err == 0 || err == EAGAIN) continue;  // EAGAIN: more than one call's worth queued
    if (err == EBUSY) {                       // the device dropped one frame; the others go on
      ++tx_dropped_;
      continue;
    }
    if (err == ENOBUFS) continue;  // no skb right now: try again
    ++kick_errors_;
    break;
  }
}

void Generator::send_pending(TxQueue& q) {
  sf::XskSocket& s = *q.xsk;
  const auto& items = q.pending;
  size_t done = 0;
  bool stalled = false;
  while (done < items.size()) {
    s.reap_to_free_list();
    uint32_t n = static_cast<uint32_t>(std::min(items.size() - done, s.tx_free.size()));
    n = std::min(n, xsk_prod_nb_free(&s.tx, n));
    uint32_t idx = 0;
    if (n == 0 || xsk_ring_prod__reserve(&s.tx, n, &idx) != n) {
      // Backpressure: spin kicking, keep receiving.
      if (!stalled) ++tx_ring_full_;
      stalled = true;
      push(s);
      poll_rx();
      if (g_stop.load(std::memory_order_relaxed)) break;
      continue;
    }
    stalled = false;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const auto [index, replay] = items[done + i];
      const TracePacket& p = trace_.packets[index];
      const uint64_t addr = s.tx_free.back();
      s.tx_free.pop_back();
      uint8_t* frame = s.data(addr);
      std::memcpy(frame, trace_.bytes.data() + p.offset, p.len);
      if (replay != 0) sf::rewrite_l4_ports({frame, p.len}, replay);
      xdp_desc* d = xsk_ring_prod__tx_desc(&s.tx, idx + i);
      d->addr = addr;
      d->len = p.len;
      d->options = 0;
      bytes += p.len;
    }
    xsk_ring_prod__submit(&s.tx, n);
    s.tx_outstanding += n;
    total_.sent += n;
    total_.bytes_sent += bytes;
    done += n;
    push(s);
  }
  q.pending.clear();
}

void Generator::poll_rx() {
  for (sf::XskSocket* s : rx_) {
    uint32_t idx = 0;
    const uint32_t n = xsk_ring_cons__peek(&s->rx, kRxBatch, &idx);
    if (n == 0) {
      s->wake_rx();
      continue;
    }
    uint32_t fill_idx = 0;
    // The fill ring has room for every RX frame, so this cannot fail.
    xsk_ring_prod__reserve(&s->fill, n, &fill_idx);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const xdp_desc* d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
      bytes += d->len;
      *xsk_ring_prod__fill_addr(&s->fill, fill_idx + i) = s->chunk_of(d->addr);
    }
    xsk_ring_prod__submit(&s->fill, n);
    xsk_ring_cons__release(&s->rx, n);
    total_.received += n;
    total_.bytes_received += bytes;
    s->wake_rx();
  }
}

bool Generator::tx_busy() {
  bool busy = false;
  for (TxQueue& q : tx_) {
    q.xsk->reap_to_free_list();
    if (q.xsk->tx_outstanding > 0) busy = true;
    if (q.xsk->tx_unsent() > 0) push(*q.xsk);
  }
  return busy;
}

void Generator::progress(uint64_t now) {
  const double dt = static_cast<double>(now - last_report_ns_) / 1e9;
  if (dt <= 0) return;
  const double sent = static_cast<double>(total_.sent - last_report_.sent) / dt;
  const double received = static_cast<double>(total_.received - last_report_.received) / dt;
  fmt::print(stderr, "t={:.1f}s sent {:.0f} pps received {:.0f} pps lost {:.0f} pps\n",
             static_cast<double>(now - start_ns_) / 1e9, sent, received,
             std::max(0.0, sent - received));
  last_report_ns_ = now;
  last_report_ = total_;
}

void Generator::run() {
  const uint32_t n_trace = static_cast<uint32_t>(trace_.packets.size());
  // Up to 20 ms of tokens (at least a batch) accumulate: the generator makes
  // up for being descheduled for a time slice or two (these machines are
  // shared), so the average rate holds; a longer stall shows as a lower rate
  // instead of a flood.
  sf::TokenBucket bucket(opts_.rate,
                         std::max<uint32_t>(opts_.batch, static_cast<uint32_t>(opts_.rate / 50)));
  start_ns_ = sf::monotonic_ns();
  bucket.start(start_ns_);
  const uint64_t warmup_end = start_ns_ + seconds_to_ns(opts_.warmup);
  const uint64_t send_end = start_ns_ + seconds_to_ns(opts_.duration);
  const uint64_t interval = seconds_to_ns(opts_.interval);
  last_report_ns_ = start_ns_;
  bool measuring = false;
  if (opts_.warmup <= 0) {
    measuring = true;
    measure_start_ns_ = start_ns_;
  }
  uint32_t cursor = 0;
  uint32_t replay = 0;
  replays_started_ = 1;
  bool finished = false;

  while (!finished) {
    if (g_stop.load(std::memory_order_relaxed)) {
      interrupted_ = true;
      break;
    }
    const uint64_t now = sf::monotonic_ns();
    if (!measuring && now >= warmup_end) {
      measuring = true;
      measure_start_ns_ = now;
      at_measure_start_ = total_;
    }
    if (now >= send_end) break;
    if (interval != 0 && now - last_report_ns_ >= interval) progress(now);

    const uint32_t budget = bucket.take(now, opts_.batch);
    if (budget > 0) {
      for (uint32_t b = 0; b < budget; ++b) {
        tx_[trace_.packets[cursor].queue].pending.emplace_back(cursor, replay);
        if (++cursor == n_trace) {
          cursor = 0;
          ++loops_done_;
          if (opts_.loops != 0 && loops_done_ >= opts_.loops) {
            finished = true;
            break;
          }
          if (!opts_.no_rewrite) ++replay;
          ++replays_started_;
        }
      }
      for (TxQueue& q : tx_)
        if (!q.pending.empty()) send_pending(q);
    } else {
      tx_busy();  // frames the device pushed back: keep them moving
    }
    poll_rx();
  }
  send_stop_ns_ = sf::monotonic_ns();
  if (!measuring) {  // stopped during the warm-up: nothing measured
    measure_start_ns_ = send_stop_ns_;
    at_measure_start_ = total_;
  }

  // Let the TX rings empty (up to 1 s), then drain what comes back.
  const uint64_t flush_end = send_stop_ns_ + 1'000'000'000ULL;
  while (tx_busy() && sf::monotonic_ns() < flush_end) poll_rx();
  for (TxQueue& q : tx_) tx_unfinished_ += q.xsk->tx_outstanding;
  const uint64_t drain_end = sf::monotonic_ns() + seconds_to_ns(opts_.drain);
  while (sf::monotonic_ns() < drain_end) poll_rx();
  end_ns_ = sf::monotonic_ns();
}

nlohmann::json Generator::report() const {
  const uint64_t sent = total_.sent - at_measure_start_.sent;
  const uint64_t received = total_.received - at_measure_start_.received;
  const uint64_t lost = sent > received ? sent - received : 0;
  const double seconds = static_cast<double>(send_stop_ns_ - measure_start_ns_) / 1e9;
  auto per_second = [&](uint64_t n) {
    return seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
  };
  const double sent_pps = per_second(sent);
  bool generator_bound = false;
  if (opts_.rate > 0)
    generator_bound = sent_pps < 0.95 * opts_.rate;
  else
    generator_bound = sent > 0 && static_cast<double>(received) >= 0.99 * static_cast<double>(sent);

  sf::XskStatistics xs;
  for (const sf::XskSocket* s : rx_) {
    const sf::XskStatistics one = s->statistics();
    xs.rx_dropped += one.rx_dropped;
    xs.rx_ring_full += one.rx_ring_full;
    xs.rx_fill_ring_empty += one.rx_fill_ring_empty;
  }
  for (const TxQueue& q : tx_) xs.tx_invalid += q.xsk->statistics().tx_invalid;

  nlohmann::json j;
  j["iface"] = opts_.iface;
  j["rx_iface"] = opts_.rx_iface.empty() ? opts_.iface : opts_.rx_iface;
  j["queues"] = opts_.queues;
  j["sent"] = sent;
  j["received"] = received;
  j["lost"] = lost;
  j["seconds"] = seconds;
  j["sent_pps"] = sent_pps;
  j["received_pps"] = per_second(received);
  j["lost_pps"] = per_second(lost);
  j["offered_pps"] = opts_.rate;
  j["loops"] = loops_done_;
  j["replays"] = replays_started_;
  j["tx_ring_full"] = tx_ring_full_;
  j["tx_dropped"] = tx_dropped_;
  j["tx_errors"] = kick_errors_;
  j["tx_unfinished"] = tx_unfinished_;
  j["generator_bound"] = generator_bound;
  j["trace_packets"] = trace_.packets.size();
  j["trace_skipped"] = trace_.skipped_too_large;
  j["bytes_sent"] = total_.bytes_sent - at_measure_start_.bytes_sent;
  j["bytes_received"] = total_.bytes_received - at_measure_start_.bytes_received;
  j["total_sent"] = total_.sent;
  j["total_received"] = total_.received;
  j["rx_kernel_dropped"] = xs.rx_dropped + xs.rx_ring_full;
  j["rx_fill_ring_empty"] = xs.rx_fill_ring_empty;
  j["warmup_seconds"] = opts_.warmup;
  j["drain_seconds"] = static_cast<double>(end_ns_ - send_stop_ns_) / 1e9;
  j["rewrite"] = !opts_.no_rewrite;
  j["interrupted"] = interrupted_;
  return j;
}

void print_text(const nlohmann::json& j) {
  for (const char* key : {"sent",           "received",          "lost",
                          "seconds",        "sent_pps",          "received_pps",
                          "lost_pps",       "offered_pps",       "loops",
                          "replays",        "tx_ring_full",      "tx_dropped",
                          "tx_errors",      "tx_unfinished",     "generator_bound",
                          "trace_packets",  "trace_skipped",     "bytes_sent",
                          "bytes_received", "rx_kernel_dropped", "rx_fill_ring_empty"}) {
    const auto& v = j.at(key);
    if (v.is_number_float())
      std::cout << fmt::format("{}: {:.3f}\n", key, v.get<double>());
    else
      std::cout << key << ": " << v.dump() << "\n";
  }
}

int fail(const std::string& message) {
  std::cerr << "sf-pktgen: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Replay a pcap through AF_XDP sockets and count what comes back"};
  Options opts;
  app.add_option("--iface", opts.iface, "interface to send on")->required();
  app.add_option("--pcap", opts.pcap, "Ethernet pcap to replay")->required();
  app.add_option("--queues", opts.queues, "sockets on queues 0..N-1 (connections hashed)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--rx-iface", opts.rx_iface, "count what arrives here (default: --iface)");
  app.add_option("--rate", opts.rate, "packets per second (0: as fast as possible)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", opts.duration, "seconds of sending")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", opts.warmup, "seconds sent but left out of the report")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--loops", opts.loops, "passes over the trace (0: until --duration)")
      ->capture_default_str();
  app.add_flag("--no-rewrite", opts.no_rewrite, "send the trace unchanged on every pass");
  app.add_option("--drain", opts.drain, "seconds of receiving after the last send")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--interval", opts.interval, "seconds between progress lines (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cpu", opts.cpu, "pin to this CPU");
  app.add_option("--batch", opts.batch, "frames per TX batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--xdp-mode", opts.xdp_mode, "mode of the receive program: native|generic")
      ->capture_default_str();
  app.add_flag("--json", opts.json, "one JSON object on stdout");
  CLI11_PARSE(app, argc, argv);

  const sf::Result<sf::XdpMode> mode = sf::parse_xdp_mode(opts.xdp_mode);
  if (!mode) return fail(mode.error());
  const std::string rx_iface = opts.rx_iface.empty() ? opts.iface : opts.rx_iface;
  for (const std::string& name : {opts.iface, rx_iface})
    if (auto index = sf::interface_index(name); !index) return fail(index.error());

  sf::Result<Trace> trace = load_trace(opts.pcap, kFrameSize, opts.queues);
  if (!trace) return fail(trace.error());
  if (trace->skipped_too_large > 0)
    fmt::print(stderr, "sf-pktgen: skipped {} frames longer than {} bytes\n",
               trace->skipped_too_large, kFrameSize);

  if (opts.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(opts.cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
      return fail(fmt::format("cannot pin to CPU {}: {}", opts.cpu, std::strerror(errno)));
  }

  // The receive program; sockets are registered before it is attached.
  sf_reflect* skel = sf_reflect__open();
  if (skel == nullptr) return fail("cannot open the XDP program");
  bpf_program__set_autoload(skel->progs.sf_reflect, false);
  if (int err = sf_reflect__load(skel); err != 0) {
    sf_reflect__destroy(skel);
    return fail(fmt::format("cannot load the XDP program: {}", std::strerror(-err)));
  }
  std::unique_ptr<sf_reflect, decltype(&sf_reflect__destroy)> skel_owner(skel, sf_reflect__destroy);

  // Sockets: TX on queues 0..N-1 of IF; RX on every queue of the receiving
  // interface (a reply may come back on any of them).  One socket does both
  // when the interfaces are the same.
  const uint32_t rx_queues =
      std::max(rx_iface == opts.iface ? opts.queues : 1U, sf::interface_rx_queues(rx_iface));
  std::map<std::pair<std::string, uint32_t>, std::unique_ptr<sf::XskSocket>> sockets;
  std::vector<TxQueue> tx;
  std::vector<sf::XskSocket*> rx;
  auto make_socket = [&](const std::string& name, uint32_t queue, bool want_tx,
                         bool want_rx) -> sf::Result<sf::XskSocket*> {
    sf::XskSocketConfig cfg;
    cfg.ifname = name;
    cfg.queue = queue;
    cfg.frame_size = kFrameSize;
    cfg.tx = want_tx;
    cfg.rx = want_rx;
    cfg.tx_frames = want_tx ? 4096 : 0;
    cfg.rx_frames = want_rx ? 4096 : 0;
    auto s = sf::XskSocket::create(cfg);
    if (!s) return s.status();
    sf::XskSocket* raw = s->get();
    sockets[{name, queue}] = std::move(*s);
    return raw;
  };
  for (uint32_t q = 0; q < std::max(opts.queues, rx_iface == opts.iface ? rx_queues : 0U); ++q) {
    const bool want_tx = q < opts.queues;
    const bool want_rx = rx_iface == opts.iface;
    auto s = make_socket(opts.iface, q, want_tx, want_rx);
    if (!s) {
      if (!want_tx) continue;  // an extra receive queue that does not exist
      return fail(fmt::format("{} (does {} have {} queues?)", s.error(), opts.iface, opts.queues));
    }
    if (want_tx) tx.push_back({*s, q, {}});
    if (want_rx) rx.push_back(*s);
  }
  if (rx_iface != opts.iface) {
    for (uint32_t q = 0; q < rx_queues; ++q) {
      auto s = make_socket(rx_iface, q, false, true);
      if (!s) {
        if (q > 0) continue;
        return fail(s.error());
      }
      rx.push_back(*s);
    }
  }
  const int xsks_fd = bpf_map__fd(skel->maps.sf_reflect_xsks);
  for (sf::XskSocket* s : rx)
    if (sf::Status st = sf::register_xsk(xsks_fd, s->config().queue, s->fd()); !st)
      return fail(st.message());
  auto link = sf::XdpLink::attach(bpf_program__fd(skel->progs.sf_xsk_redirect), rx_iface, *mode);
  if (!link) return fail(link.error());

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Generator generator(opts, *trace, std::move(tx), std::move(rx));
  generator.run();
  link->reset();  // detach before the sockets go
  const nlohmann::json report = generator.report();

  if (opts.json)
    std::cout << report.dump() << std::endl;
  else
    print_text(report);
  if (report["generator_bound"].get<bool>()) {
    if (opts.rate > 0)
      fmt::print(stderr,
                 "sf-pktgen: warning: generator-bound: sent {:.0f} pps, more than 5 % short of "
                 "--rate {:.0f}\n",
                 report["sent_pps"].get<double>(), opts.rate);
    else
      fmt::print(stderr,
                 "sf-pktgen: warning: generator-bound: {} of {} frames came back (>= 99 %); the "
                 "generator, not the device, may be the bottleneck\n",
                 report["received"].get<uint64_t>(), report["sent"].get<uint64_t>());
  }
  return 0;
}

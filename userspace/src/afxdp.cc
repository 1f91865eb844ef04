#include "softflow/afxdp.h"

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "sf_abi.h"
#include "softflow/clock.h"
#include "softflow/parse.h"
#include "softflow/profile.h"

namespace softflow {
namespace {

// Frames are written (copies) and received at this offset in their chunk;
// the kernel's own XDP headroom, which also holds our XDP metadata.
constexpr uint32_t kFrameHeadroom = 256;
// Empty polls before a PMD thread sleeps in poll(2) (keeps an idle switch off
// the CPU on these shared 2-core machines).
constexpr int kIdleSpins = 64;
constexpr int kPollTimeoutMs = 10;
constexpr uint64_t kExpireIntervalNs = 1'000'000'000ULL;
// sendto() kicks per flush of one TX ring (each sends up to 32 frames).
constexpr int kMaxKicks = 8;

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace

bool take_xdp_meta(Packet& p, uint32_t ofport) {
  if (p.headroom < sizeof(sf_xdp_meta)) return false;
  auto* meta = reinterpret_cast<sf_xdp_meta*>(p.data - sizeof(sf_xdp_meta));
  if (meta->magic != SF_XDP_META_MAGIC) return false;
  meta->magic = 0;  // a reused frame must not show this metadata again
  if (meta->result == SF_XDP_UNPARSED || meta->key.in_port != ofport) return false;
  std::memcpy(&p.key, &meta->key, sizeof(p.key));
  p.l2_ofs = 0;
  p.l3_ofs = meta->l3_ofs;
  p.l4_ofs = meta->l4_ofs;
  p.payload_ofs = meta->payload_ofs;
  p.parse_flags = meta->parse_flags;
  p.hash = meta->hash;
  // Offsets from XDP are within the frame XDP saw, which is this frame;
  // check anyway, a packet buffer is no place for trust.
  if ((p.l3_ofs != kNoOffset && p.l3_ofs >= p.len) ||
      (p.l4_ofs != kNoOffset && p.l4_ofs >= p.len) ||
      (p.payload_ofs != kNoOffset && p.payload_ofs > p.len))
    return false;
  if (meta->result == SF_XDP_EMC_HIT || meta->result == SF_XDP_MEGAFLOW_HIT ||
      meta->result == SF_XDP_HINT_HIT) {
    p.megaflow_id = meta->ref.id;
    p.megaflow_generation = meta->ref.generation;
    p.xdp_result = meta->result;
  }
  return true;
}

uint32_t interface_rx_queues(const std::string& name) {
  std::error_code ec;
  uint32_t n = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator("/sys/class/net/" + name + "/queues", ec))
    if (entry.path().filename().string().rfind("rx-", 0) == 0) ++n;
  return n == 0 ? 1 : n;
}

// One AF_XDP socket.
struct AfxdpPorts::Queue {
  xsk_socket* xsk = nullptr;
  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  int fd = -1;
  uint32_t port_index = 0;
  uint32_t queue = 0;
  uint32_t thread = 0;
  uint32_t slot = 0;    // key in sf_xsks
  std::mutex tx_mutex;  // tx and comp rings
  // Submitted, not yet completed; written under tx_mutex, peeked without.
  std::atomic<uint32_t> tx_outstanding{0};

  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_xdp_meta{0};
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_zero_copy{0}, tx_dropped{0};
  std::atomic<uint64_t> fill_empty{0};
};

struct AfxdpPorts::Impl {
  AfxdpConfig config;
  std::vector<AfxdpPortSpec> ports;
  XdpMaps maps;
  uint8_t* area = nullptr;
  size_t area_size = 0;
  xsk_umem* umem = nullptr;
  xsk_ring_prod umem_fill{};  // the first socket's rings, before it takes them
  xsk_ring_cons umem_comp{};
  std::vector<std::unique_ptr<Queue>> queues;
  std::vector<std::vector<uint32_t>> port_queues;  // port index -> queue indexes

  // Free chunk addresses shared by the PMD threads; each thread keeps a
  // local cache and trades with this in bulk.
  std::mutex free_mutex;
  std::vector<uint64_t> free_frames;

  int port_index_of(uint32_t ofport) const {
    for (size_t i = 0; i < ports.size(); ++i)
      if (ports[i].ofport == ofport) return static_cast<int>(i);
    return -1;
  }
  uint64_t chunk_of(uint64_t addr) const { return addr & ~uint64_t{config.frame_size - 1}; }
};

namespace {

// A PMD thread's frame cache.
class FrameCache {
 public:
  FrameCache(std::mutex& mutex, std::vector<uint64_t>& shared) : mutex_(mutex), shared_(shared) {}
  ~FrameCache() { spill(0); }

  bool get(uint64_t& addr) {
    if (local_.empty()) refill();
    if (local_.empty()) return false;
    addr = local_.back();
    local_.pop_back();
    return true;
  }
  void put(uint64_t chunk) {
    local_.push_back(chunk);
    if (local_.size() > kHigh) spill(kHigh / 2);
  }
  size_t size() const { return local_.size(); }
  // Makes the cache hold up to n frames; returns how many it holds (<= n).
  size_t ensure(size_t n) {
    while (local_.size() < n) {
      const size_t before = local_.size();
      refill();
      if (local_.size() == before) break;
    }
    return std::min(n, local_.size());
  }

 private:
  static constexpr size_t kBulk = 256;
  static constexpr size_t kHigh = 2048;
  void refill() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t n = std::min(kBulk, shared_.size());
    local_.insert(local_.end(), shared_.end() - static_cast<ptrdiff_t>(n), shared_.end());
    shared_.resize(shared_.size() - n);
  }
  void spill(size_t keep) {
    if (local_.size() <= keep) return;
    std::lock_guard<std::mutex> lock(mutex_);
    shared_.insert(shared_.end(), local_.begin() + static_cast<ptrdiff_t>(keep), local_.end());
    local_.resize(keep);
  }
  std::mutex& mutex_;
  std::vector<uint64_t>& shared_;
  std::vector<uint64_t> local_;
};

}  // namespace

Result<std::unique_ptr<AfxdpPorts>> AfxdpPorts::create(const std::vector<AfxdpPortSpec>& ports,
                                                       const AfxdpConfig& config,
                                                       const XdpMaps& maps) {
  std::unique_ptr<AfxdpPorts> self(new AfxdpPorts());
  self->config_ = config;
  self->config_.pmd_threads = std::max<uint32_t>(1, config.pmd_threads);
  self->impl_ = std::make_unique<Impl>();
  Impl& im = *self->impl_;
  im.config = self->config_;
  im.ports = ports;
  im.maps = maps;

  size_t n_queues = 0;
  for (const AfxdpPortSpec& p : ports) n_queues += p.n_queues;
  if (n_queues == 0) return self;
  if (n_queues > SF_MAX_XSKS)
    return Status::error(fmt::format("too many queues ({} > {})", n_queues, SF_MAX_XSKS));
  const size_t n_frames = n_queues * config.frames_per_socket;
  im.area_size = n_frames * config.frame_size;
  void* area = mmap(nullptr, im.area_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (area == MAP_FAILED)
    return Status::error(fmt::format("cannot allocate the UMEM: {}", errno_text(errno)));
  im.area = static_cast<uint8_t*>(area);

  xsk_umem_config ucfg{};
  ucfg.fill_size = config.ring_size;
  ucfg.comp_size = config.ring_size;
  ucfg.frame_size = config.frame_size;
  ucfg.frame_headroom = 0;
  ucfg.flags = 0;
  if (int err =
          xsk_umem__create(&im.umem, im.area, im.area_size, &im.umem_fill, &im.umem_comp, &ucfg);
      err != 0)
    return Status::error(fmt::format("cannot create the UMEM: {}", errno_text(err)), -err);
  for (size_t i = 0; i < n_frames; ++i) im.free_frames.push_back(i * config.frame_size);

  im.port_queues.resize(ports.size());
  uint32_t slot = 0;
  for (size_t pi = 0; pi < ports.size(); ++pi) {
    for (uint32_t q = 0; q < ports[pi].n_queues; ++q) {
      auto queue = std::make_unique<Queue>();
      queue->port_index = static_cast<uint32_t>(pi);
      queue->queue = q;
      queue->slot = slot;
      queue->thread = slot % self->config_.pmd_threads;
      xsk_socket_config scfg{};
      scfg.rx_size = config.ring_size;
      scfg.tx_size = config.ring_size;
      scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // our program, our XSKMAP
      scfg.bind_flags = XDP_USE_NEED_WAKEUP;
      if (int err =
              xsk_socket__create_shared(&queue->xsk, ports[pi].name.c_str(), q, im.umem, &queue->rx,
                                        &queue->tx, &queue->fill, &queue->comp, &scfg);
          err != 0)
        return Status::error(fmt::format("cannot create an AF_XDP socket on {} queue {}: {}",
                                         ports[pi].name, q, errno_text(err)),
                             -err);
      queue->fd = xsk_socket__fd(queue->xsk);
      // Owned by im.queues from here, so every later failure closes it.
      Queue& qr = *queue;
      im.port_queues[pi].push_back(static_cast<uint32_t>(im.queues.size()));
      im.queues.push_back(std::move(queue));
      // Stock the fill ring with half of this socket's frames.
      const uint32_t want = config.ring_size / 2;
      uint32_t idx = 0;
      const uint32_t got = xsk_ring_prod__reserve(&qr.fill, want, &idx);
      for (uint32_t i = 0; i < got; ++i) {
        *xsk_ring_prod__fill_addr(&qr.fill, idx + i) = im.free_frames.back();
        im.free_frames.pop_back();
      }
      xsk_ring_prod__submit(&qr.fill, got);
      if (bpf_map_update_elem(maps.xsks, &slot, &qr.fd, BPF_ANY) != 0)
        return Status::error(fmt::format("cannot register the socket of {} queue {} in {}: {}",
                                         ports[pi].name, q, SF_MAP_XSKS, errno_text(errno)));
      ++slot;
    }
  }
  // Ports last: from here on XDP redirects their traffic to the sockets.
  for (size_t pi = 0; pi < ports.size(); ++pi) {
    sf_port port{};
    port.ofport = ports[pi].ofport;
    port.n_queues = ports[pi].n_queues;
    port.flags = config.hints ? SF_PORT_HINTS : 0;
    port.xsk_base = im.queues[im.port_queues[pi].front()]->slot;
    for (uint32_t qi : im.port_queues[pi]) {
      const Queue& q = *im.queues[qi];
      if (q.queue < SF_MAX_QUEUES) port.datapath[q.queue] = static_cast<uint8_t>(q.thread);
    }
    uint32_t ifindex = static_cast<uint32_t>(ports[pi].ifindex);
    if (bpf_map_update_elem(maps.ports, &ifindex, &port, BPF_ANY) != 0)
      return Status::error(fmt::format("cannot register port {} in {}: {}", ports[pi].name,
                                       SF_MAP_PORTS, errno_text(errno)));
  }
  return self;
}

AfxdpPorts::~AfxdpPorts() {
  if (!impl_) return;
  Impl& im = *impl_;
  // Stop redirects before the sockets go.
  for (const AfxdpPortSpec& p : im.ports) {
    uint32_t ifindex = static_cast<uint32_t>(p.ifindex);
    if (im.maps.ports >= 0) bpf_map_delete_elem(im.maps.ports, &ifindex);
  }
  for (auto& q : im.queues) {
    if (im.maps.xsks >= 0) bpf_map_delete_elem(im.maps.xsks, &q->slot);
    if (q->xsk != nullptr) xsk_socket__delete(q->xsk);
  }
  im.queues.clear();
  if (im.umem != nullptr) xsk_umem__delete(im.umem);
  if (im.area != nullptr) munmap(im.area, im.area_size);
}

std::vector<AfxdpQueueStats> AfxdpPorts::stats() const {
  std::vector<AfxdpQueueStats> out;
  if (!impl_) return out;
  for (const auto& q : impl_->queues) {
    AfxdpQueueStats s;
    s.port = impl_->ports[q->port_index].name;
    s.ofport = impl_->ports[q->port_index].ofport;
    s.queue = q->queue;
    s.thread = q->thread;
    s.rx_packets = q->rx_packets.load(std::memory_order_relaxed);
    s.rx_bytes = q->rx_bytes.load(std::memory_order_relaxed);
    s.rx_xdp_meta = q->rx_xdp_meta.load(std::memory_order_relaxed);
    s.tx_packets = q->tx_packets.load(std::memory_order_relaxed);
    s.tx_bytes = q->tx_bytes.load(std::memory_order_relaxed);
    s.tx_zero_copy = q->tx_zero_copy.load(std::memory_order_relaxed);
    s.tx_dropped = q->tx_dropped.load(std::memory_order_relaxed);
    s.fill_empty = q->fill_empty.load(std::memory_order_relaxed);
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

// The datapath's PacketSink for one PMD thread: collects descriptors per
// output socket during a batch and hands them to the TX rings in flush().
class XskSink : public PacketSink {
 public:
  XskSink(AfxdpPorts::Impl& im, uint32_t thread, FrameCache& frames)
      : im_(im), thread_(thread), frames_(frames), pending_(im.queues.size()) {}

  bool transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t) override {
    const int qi = output_queue(port);
    if (qi < 0) return false;
    uint64_t chunk;
    if (frame.size() > im_.config.frame_size - kFrameHeadroom || !frames_.get(chunk)) {
      im_.queues[qi]->tx_dropped.fetch_add(1, std::memory_order_relaxed);
      return true;  // the port exists; the drop is the port's
    }
    std::memcpy(im_.area + chunk + kFrameHeadroom, frame.data(), frame.size());
    pending_[qi].push_back({chunk + kFrameHeadroom, static_cast<uint32_t>(frame.size()), 0});
    return true;
  }

  bool transmit_packet(uint32_t port, Packet& pkt, uint32_t len) override {
    const int qi = output_queue(port);
    if (qi < 0) return false;
    pending_[qi].push_back({static_cast<uint64_t>(pkt.data - im_.area), len, 0});
    pkt.buffer_taken = true;
    ++zero_copy_[qi];
    return true;
  }

  // Puts the batch's descriptors on the TX rings and kicks the kernel.
  void flush() {
    for (size_t qi = 0; qi < pending_.size(); ++qi) {
      auto& descs = pending_[qi];
      if (descs.empty()) continue;
      AfxdpPorts::Queue& q = *im_.queues[qi];
      uint32_t sent = 0;
      {
        std::lock_guard<std::mutex> lock(q.tx_mutex);
        reclaim_locked(q);
        uint32_t idx = 0;
        sent = xsk_ring_prod__reserve(&q.tx, static_cast<uint32_t>(descs.size()), &idx);
        for (uint32_t i = 0; i < sent; ++i) {
          xdp_desc* d = xsk_ring_prod__tx_desc(&q.tx, idx + i);
          d->addr = descs[i].addr;
          d->len = descs[i].len;
          d->options = 0;
        }
        xsk_ring_prod__submit(&q.tx, sent);
        q.tx_outstanding += sent;
        // Copy mode sends a bounded number of frames per sendto(); the
        // socket may belong to another thread that is asleep in poll(), so
        // kick until the ring is drained rather than leave frames waiting.
        for (int kicks = 0; kicks < kMaxKicks &&
                            xsk_prod_nb_free(&q.tx, im_.config.ring_size) < im_.config.ring_size;
             ++kicks)
          kick_locked(q);
      }
      uint64_t bytes = 0;
      for (uint32_t i = 0; i < sent; ++i) bytes += descs[i].len;
      for (size_t i = sent; i < descs.size(); ++i) frames_.put(im_.chunk_of(descs[i].addr));
      q.tx_packets.fetch_add(sent, std::memory_order_relaxed);
      q.tx_bytes.fetch_add(bytes, std::memory_order_relaxed);
      q.tx_zero_copy.fetch_add(std::min<uint64_t>(zero_copy_[qi], sent), std::memory_order_relaxed);
      if (sent < descs.size())
        q.tx_dropped.fetch_add(descs.size() - sent, std::memory_order_relaxed);
      zero_copy_[qi] = 0;
      descs.clear();
    }
  }

  // Completed TX frames back to the cache; the caller holds q.tx_mutex.
  void reclaim_locked(AfxdpPorts::Queue& q) {
    if (q.tx_outstanding.load(std::memory_order_relaxed) == 0) return;
    uint32_t idx = 0;
    const uint32_t n = xsk_ring_cons__peek(&q.comp, q.tx_outstanding.load(), &idx);
    for (uint32_t i = 0; i < n; ++i)
      frames_.put(im_.chunk_of(*xsk_ring_cons__comp_addr(&q.comp, idx + i)));
    xsk_ring_cons__release(&q.comp, n);
    q.tx_outstanding -= n;
  }

  // Copy-mode TX happens in sendto(); the kernel sends a bounded number per
  // call, so a socket with frames outstanding is kicked again from the poll
  // loop.
  static void kick_locked(AfxdpPorts::Queue& q) {
    if (q.tx_outstanding.load(std::memory_order_relaxed) == 0 ||
        !xsk_ring_prod__needs_wakeup(&q.tx))
      return;
    sendto(q.fd, nullptr, 0, MSG_DONTWAIT, nullptr, 0);
  }

 private:
  struct Desc {
    uint64_t addr;
    uint32_t len;
    uint32_t pad;
  };
  int output_queue(uint32_t ofport) {
    const int pi = im_.port_index_of(ofport);
    if (pi < 0) return -1;
    const auto& qs = im_.port_queues[static_cast<size_t>(pi)];
    if (qs.empty()) return -1;
    return static_cast<int>(qs[thread_ % qs.size()]);
  }

  AfxdpPorts::Impl& im_;
  uint32_t thread_;
  FrameCache& frames_;
  std::vector<std::vector<Desc>> pending_;
  std::vector<uint64_t> zero_copy_ = std::vector<uint64_t>(im_.queues.size(), 0);
};

}  // namespace

// With profiling (DatapathConfig::profile) the loop charges its own phases
// to the datapath's counters -- ring and fill handling to io_rx, taking XDP's
// metadata or parsing to parse, TX flushes and completions to io_tx, empty
// polls and poll(2) to idle -- and leaves the batch itself to the datapath.
void AfxdpPorts::run_pmd(uint32_t thread, Switch& sw, const std::atomic<bool>& stop) {
  if (!impl_) return;
  Impl& im = *impl_;
  FrameCache frames(im.free_mutex, im.free_frames);
  XskSink sink(im, thread, frames);
  sw.datapath(thread).set_sink(&sink);
  ProfileCounters* profile = sw.datapath(thread).profile_counters();
  if (profile != nullptr) profile->set_start(tsc_now());
  CycleClock clock(profile);

  std::vector<Queue*> mine;
  for (auto& q : im.queues)
    if (q->thread == thread) mine.push_back(q.get());
  std::vector<pollfd> pfds;
  for (Queue* q : mine) pfds.push_back({q->fd, POLLIN, 0});

  std::array<Packet, kMaxBatch> packets;
  std::array<Packet*, kMaxBatch> batch;
  uint64_t last_expire = monotonic_ns();
  int idle = 0;

  clock.restart();
  while (!stop.load(std::memory_order_relaxed)) {
    bool any = false;
    for (Queue* q : mine) {
      // Stock the fill ring.
      const uint32_t free_slots = xsk_prod_nb_free(&q->fill, im.config.ring_size);
      if (free_slots >= kMaxBatch) {
        const uint32_t want = std::min<uint32_t>(free_slots, 4 * kMaxBatch);
        const uint32_t avail = static_cast<uint32_t>(frames.ensure(want));
        if (avail < want) q->fill_empty.fetch_add(1, std::memory_order_relaxed);
        uint32_t idx = 0;
        const uint32_t got = xsk_ring_prod__reserve(&q->fill, avail, &idx);
        for (uint32_t i = 0; i < got; ++i) {
          uint64_t chunk = 0;
          frames.get(chunk);  // cannot fail: ensure() put them in the cache
          *xsk_ring_prod__fill_addr(&q->fill, idx + i) = chunk;
        }
        xsk_ring_prod__submit(&q->fill, got);
      }
      if (xsk_ring_prod__needs_wakeup(&q->fill))
        recvfrom(q->fd, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);

      uint32_t idx = 0;
      const uint32_t n = xsk_ring_cons__peek(&q->rx, kMaxBatch, &idx);
      if (n == 0) {
        clock.charge(ProfileCategory::kIdle);
        continue;
      }
      any = true;
      const uint64_t now = monotonic_ns();
      const uint32_t ofport = im.ports[q->port_index].ofport;
      uint64_t bytes = 0;
      for (uint32_t i = 0; i < n; ++i) {
        const xdp_desc* d = xsk_ring_cons__rx_desc(&q->rx, idx + i);
        const uint64_t addr = xsk_umem__add_offset_to_addr(d->addr);
        const uint64_t chunk = im.chunk_of(addr);
        Packet& p = packets[i];
        p = Packet{};
        p.data = im.area + addr;
        p.len = d->len;
        p.headroom = static_cast<uint32_t>(addr - chunk);
        p.tailroom = im.config.frame_size - p.headroom - p.len;
        p.cookie = chunk;
        p.timestamp_ns = now;
        bytes += p.len;
        batch[i] = &p;
      }
      xsk_ring_cons__release(&q->rx, n);
      q->rx_packets.fetch_add(n, std::memory_order_relaxed);
      q->rx_bytes.fetch_add(bytes, std::memory_order_relaxed);
      clock.charge(ProfileCategory::kIoRx);

      uint64_t with_meta = 0;
      for (uint32_t i = 0; i < n; ++i) {
        Packet& p = packets[i];
        if (take_xdp_meta(p, ofport)) {
          ++with_meta;
        } else {
          p.key = FlowKey{};
          p.key.in_port = ofport;
          parse_packet(p);
        }
      }
      q->rx_xdp_meta.fetch_add(with_meta, std::memory_order_relaxed);
      clock.charge(ProfileCategory::kParse);

      // The datapath charges the batch; the flush of its output is TX.
      sw.process(thread, {batch.data(), n}, now, [&] {
        clock.restart();
        sink.flush();
        clock.charge(ProfileCategory::kIoTx);
      });
      for (uint32_t i = 0; i < n; ++i)
        if (!packets[i].buffer_taken) frames.put(packets[i].cookie);
      clock.charge(ProfileCategory::kIoRx);
    }

    // Sockets with TX outstanding: collect completions, kick again.
    for (Queue* q : mine) {
      if (q->tx_outstanding.load(std::memory_order_relaxed) == 0) continue;
      std::lock_guard<std::mutex> lock(q->tx_mutex);
      sink.reclaim_locked(*q);
      XskSink::kick_locked(*q);
    }
    clock.charge(ProfileCategory::kIoTx);

    const uint64_t now = monotonic_ns();
    if (now - last_expire >= kExpireIntervalNs) {
      sw.expire(thread, now);  // charged by the datapath
      clock.restart();
      last_expire = now;
    }
    if (any) {
      idle = 0;
    } else if (++idle >= kIdleSpins) {
      poll(pfds.data(), pfds.size(), kPollTimeoutMs);
      clock.charge(ProfileCategory::kIdle);
      idle = 0;
    }
  }
  sw.datapath(thread).set_sink(nullptr);
}

}  // namespace softflow

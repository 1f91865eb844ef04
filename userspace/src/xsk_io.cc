#include "softflow/xsk_io.h"

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "softflow/parse.h"

namespace softflow {
namespace {

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

// Murmur3's 64-bit finaliser folded over the words.
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

bool is_power_of_two(uint32_t n) { return n != 0 && (n & (n - 1)) == 0; }

}  // namespace

// ---- pure logic -------------------------------------------------------------------

uint32_t symmetric_flow_hash(std::span<const uint8_t> frame) {
  Packet pkt;
  // parse_packet only reads the frame.
  pkt.data = const_cast<uint8_t*>(frame.data());
  pkt.len = static_cast<uint32_t>(frame.size());
  parse_packet(pkt);
  const FlowKey& key = pkt.key;

  // Endpoint words: the address (or MAC when there is no IP) and the port.
  uint64_t a[3] = {}, b[3] = {};
  if (pkt.has_l3()) {
    std::memcpy(a, key.nw_src, 16);
    std::memcpy(b, key.nw_dst, 16);
    a[2] = key.tp_src;
    b[2] = key.tp_dst;
  } else {
    std::memcpy(a, key.dl_src, 6);
    std::memcpy(b, key.dl_dst, 6);
  }
  const bool swap =
      std::lexicographical_compare(std::begin(b), std::end(b), std::begin(a), std::end(a));
  const uint64_t* lo = swap ? b : a;
  const uint64_t* hi = swap ? a : b;
  uint64_t h = mix(0x9e3779b97f4a7c15ULL, (uint64_t{key.nw_proto} << 16) | key.dl_type);
  for (int i = 0; i < 3; ++i) h = mix(h, lo[i]);
  for (int i = 0; i < 3; ++i) h = mix(h, hi[i]);
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return static_cast<uint32_t>(h);
}

uint32_t flow_queue(std::span<const uint8_t> frame, uint32_t n_queues) {
  if (n_queues <= 1) return 0;
  return symmetric_flow_hash(frame) % n_queues;
}

TokenBucket::TokenBucket(double rate_per_second, uint32_t burst)
    : rate_(rate_per_second), burst_(std::max<uint32_t>(burst, 1)) {}

void TokenBucket::start(uint64_t now_ns) {
  last_ns_ = now_ns;
  tokens_ = 0;
}

uint32_t TokenBucket::take(uint64_t now_ns, uint32_t max) {
  if (unlimited()) return max;
  if (now_ns > last_ns_) {
    tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_ns - last_ns_) * rate_ / 1e9);
    last_ns_ = now_ns;
  }
  const double whole = std::floor(tokens_);
  const uint32_t n = whole >= max ? max : static_cast<uint32_t>(whole);
  tokens_ -= n;
  return n;
}

uint64_t TokenBucket::wait_ns() const {
  if (unlimited() || tokens_ >= 1) return 0;
  return static_cast<uint64_t>(std::ceil((1 - tokens_) * 1e9 / rate_));
}

// ---- XDP program attachment -------------------------------------------------------

Result<int> interface_index(const std::string& ifname) {
  const unsigned index = if_nametoindex(ifname.c_str());
  if (index == 0) return Status::error(fmt::format("no interface named {}", ifname), ENODEV);
  return static_cast<int>(index);
}

Result<std::unique_ptr<XdpLink>> XdpLink::attach(int prog_fd, const std::string& ifname,
                                                 XdpMode mode) {
  Result<int> ifindex = interface_index(ifname);
  if (!ifindex) return ifindex.status();
  LIBBPF_OPTS(bpf_link_create_opts, opts);
  opts.flags = mode == XdpMode::kNative ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
  const int fd = bpf_link_create(prog_fd, *ifindex, BPF_XDP, &opts);
  if (fd < 0) {
    const int err = -fd;
    std::string why = errno_text(err);
    if (err == EBUSY || err == EEXIST)
      why = "it already has an XDP program (detach it first)";
    else if (err == EOPNOTSUPP || err == EINVAL)
      why += fmt::format(" (does it support {} XDP?)", xdp_mode_name(mode));
    return Status::error(
        fmt::format("cannot attach XDP to {} in {} mode: {}", ifname, xdp_mode_name(mode), why),
        err);
  }
  std::unique_ptr<XdpLink> link(new XdpLink());
  link->link_fd_ = fd;
  link->ifindex_ = *ifindex;
  return link;
}

XdpLink::~XdpLink() {
  if (link_fd_ >= 0) close(link_fd_);  // the last reference: the kernel detaches
}

// ---- one AF_XDP socket --------------------------------------------------------------

Result<std::unique_ptr<XskSocket>> XskSocket::create(const XskSocketConfig& config) {
  if (!config.rx && !config.tx) return Status::error("an AF_XDP socket needs RX or TX");
  for (uint32_t n :
       {config.frame_size, config.fill_ring, config.comp_ring, config.rx_ring, config.tx_ring})
    if (!is_power_of_two(n))
      return Status::error(fmt::format("AF_XDP ring sizes must be powers of two (got {})", n));
  if (config.rx && config.rx_frames > config.fill_ring)
    return Status::error("more RX frames than fill ring entries");
  if (Result<int> ifindex = interface_index(config.ifname); !ifindex) return ifindex.status();

  std::unique_ptr<XskSocket> s(new XskSocket());
  s->config_ = config;
  const uint64_t tx_frames = config.tx ? config.tx_frames : 0;
  const uint64_t rx_frames = config.rx ? config.rx_frames : 0;
  s->area_size_ = (tx_frames + rx_frames) * config.frame_size;
  void* area = mmap(nullptr, s->area_size_, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (area == MAP_FAILED)
    return Status::error(fmt::format("cannot allocate a UMEM: {}", errno_text(errno)), errno);
  s->area_ = static_cast<uint8_t*>(area);

  xsk_umem_config ucfg{};
  ucfg.fill_size = config.fill_ring;
  ucfg.comp_size = config.comp_ring;
  ucfg.frame_size = config.frame_size;
  ucfg.frame_headroom = 0;
  if (int err = xsk_umem__create(&s->umem_, s->area_, s->area_size_, &s->fill, &s->comp, &ucfg);
      err != 0)
    return Status::error(fmt::format("cannot create a UMEM: {}", errno_text(err)), -err);

  xsk_socket_config scfg{};
  scfg.rx_size = config.rx ? config.rx_ring : 0;
  scfg.tx_size = config.tx ? config.tx_ring : 0;
  scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // the caller's program and XSKMAP
  scfg.bind_flags = XDP_USE_NEED_WAKEUP;
  if (int err =
          xsk_socket__create(&s->xsk_, config.ifname.c_str(), config.queue, s->umem_,
                             config.rx ? &s->rx : nullptr, config.tx ? &s->tx : nullptr, &scfg);
      err != 0)
    return Status::error(fmt::format("cannot create an AF_XDP socket on {} queue {}: {}",
                                     config.ifname, config.queue, errno_text(err)),
                         -err);
  s->fd_ = xsk_socket__fd(s->xsk_);

  // TX region first, RX region after it, all of it on the fill ring.
  s->tx_free.reserve(tx_frames);
  for (uint64_t i = tx_frames; i-- > 0;) s->tx_free.push_back(i * config.frame_size);
  if (rx_frames > 0) {
    uint32_t idx = 0;
    const uint32_t got = xsk_ring_prod__reserve(&s->fill, static_cast<uint32_t>(rx_frames), &idx);
    for (uint32_t i = 0; i < got; ++i)
      *xsk_ring_prod__fill_addr(&s->fill, idx + i) = (tx_frames + i) * config.frame_size;
    xsk_ring_prod__submit(&s->fill, got);
  }
  return s;
}

XskSocket::~XskSocket() {
  if (xsk_ != nullptr) xsk_socket__delete(xsk_);
  if (umem_ != nullptr) xsk_umem__delete(umem_);
  if (area_ != nullptr) munmap(area_, area_size_);
}

int XskSocket::kick_tx() {
  if (!xsk_ring_prod__needs_wakeup(&tx)) return 0;
  if (sendto(fd_, nullptr, 0, MSG_DONTWAIT, nullptr, 0) >= 0) return 0;
  return errno;
}

void XskSocket::wake_rx() {
  if (xsk_ring_prod__needs_wakeup(&fill)) recvfrom(fd_, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
}

uint32_t XskSocket::reap_to_free_list() {
  if (tx_outstanding == 0) return 0;
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&comp, tx_outstanding, &idx);
  for (uint32_t i = 0; i < n; ++i)
    tx_free.push_back(chunk_of(*xsk_ring_cons__comp_addr(&comp, idx + i)));
  xsk_ring_cons__release(&comp, n);
  tx_outstanding -= n;
  return n;
}

Status XskSocket::enable_busy_poll(uint32_t budget, uint32_t timeout_us) {
  const std::pair<int, int> options[] = {{SO_PREFER_BUSY_POLL, 1},
                                         {SO_BUSY_POLL, static_cast<int>(timeout_us)},
                                         {SO_BUSY_POLL_BUDGET, static_cast<int>(budget)}};
  for (const auto& [option, value] : options)
    if (setsockopt(fd_, SOL_SOCKET, option, &value, sizeof(value)) != 0)
      return Status::error(fmt::format("cannot enable busy polling on {} queue {}: {}",
                                       config_.ifname, config_.queue, errno_text(errno)),
                           errno);
  return Status::ok();
}

void XskSocket::busy_poll_rx() { recvfrom(fd_, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr); }

XskStatistics XskSocket::statistics() const {
  xdp_statistics st{};
  socklen_t len = sizeof(st);
  XskStatistics out;
  if (getsockopt(fd_, SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return out;
  out.rx_dropped = st.rx_dropped;
  out.rx_invalid = st.rx_invalid_descs;
  out.tx_invalid = st.tx_invalid_descs;
  if (len >= sizeof(st)) {  // kernels before 5.9 stop after tx_invalid_descs
    out.rx_ring_full = st.rx_ring_full;
    out.rx_fill_ring_empty = st.rx_fill_ring_empty_descs;
    out.tx_ring_empty = st.tx_ring_empty_descs;
  }
  return out;
}

Status register_xsk(int xskmap_fd, uint32_t key, int xsk_fd) {
  if (bpf_map_update_elem(xskmap_fd, &key, &xsk_fd, BPF_ANY) != 0)
    return Status::error(
        fmt::format("cannot register an AF_XDP socket for queue {}: {}", key, errno_text(errno)),
        errno);
  return Status::ok();
}

}  // namespace softflow

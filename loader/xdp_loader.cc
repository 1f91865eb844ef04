#include "xdp_loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "percpu.h"
#include "sf_xdp.skel.h"

namespace softflow {
namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;
constexpr const char* kBpfFsRoot = "/sys/fs/bpf";

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

uint32_t attach_flags(XdpMode mode) {
  return mode == XdpMode::kNative ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
}

// bpffs must be mounted to pin; `ip netns exec` gives a fresh /sys without it.
Status ensure_bpffs() {
  struct statfs fs {};
  if (statfs(kBpfFsRoot, &fs) == 0 && static_cast<long>(fs.f_type) == kBpfFsMagic)
    return Status::ok();
  if (mount("bpf", kBpfFsRoot, "bpf", 0, "mode=0700") != 0)
    return Status::error(fmt::format("cannot mount bpffs on {}: {}", kBpfFsRoot, errno_text(errno)),
                         errno);
  return Status::ok();
}

struct ProgInfo {
  std::string name;
  std::vector<uint32_t> map_ids;
};

Result<ProgInfo> prog_info(int fd) {
  uint32_t ids[16] = {};
  bpf_prog_info info{};
  info.nr_map_ids = 16;
  info.map_ids = reinterpret_cast<uint64_t>(ids);
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
    return Status::error(fmt::format("cannot read XDP program info: {}", errno_text(errno)));
  ProgInfo out;
  out.name = info.name;
  for (uint32_t i = 0; i < std::min<uint32_t>(info.nr_map_ids, 16); ++i)
    out.map_ids.push_back(ids[i]);
  return out;
}

Result<bpf_map_info> map_info(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
    return Status::error(fmt::format("cannot read map info: {}", errno_text(errno)));
  return info;
}

// The program attached to an interface (0: none) and how.
struct Attached {
  uint32_t prog_id = 0;
  XdpMode mode = XdpMode::kNative;
  bool offloaded_or_multi = false;
};

Result<Attached> query(int ifindex, const std::string& name) {
  bpf_xdp_query_opts opts{};
  opts.sz = sizeof(opts);
  if (int err = bpf_xdp_query(ifindex, 0, &opts); err != 0)
    return Status::error(fmt::format("cannot query XDP on {}: {}", name, errno_text(err)), -err);
  Attached a;
  switch (opts.attach_mode) {
    case XDP_ATTACHED_NONE:
      break;
    case XDP_ATTACHED_DRV:
      a.prog_id = opts.drv_prog_id ? opts.drv_prog_id : opts.prog_id;
      a.mode = XdpMode::kNative;
      break;
    case XDP_ATTACHED_SKB:
      a.prog_id = opts.skb_prog_id ? opts.skb_prog_id : opts.prog_id;
      a.mode = XdpMode::kGeneric;
      break;
    default:  // hardware offload or several modes at once: not ours to manage
      a.prog_id =
          opts.prog_id ? opts.prog_id : (opts.drv_prog_id ? opts.drv_prog_id : opts.skb_prog_id);
      a.offloaded_or_multi = true;
      break;
  }
  return a;
}

// An exclusive lock that lives as long as this process (the kernel drops it
// when the process dies, however it dies): one per interface and one per pin
// directory, so that a second softflowd can neither adopt a running one's
// program nor clear its maps, while a crashed one's leftovers are free to take.
constexpr const char* kLockDir = "/run/softflow";

Result<int> take_lock(const std::string& name, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(kLockDir, ec);
  const std::string path = std::string(kLockDir) + "/" + name + ".lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status::error(fmt::format("cannot open lock file {}: {}", path, errno_text(errno)));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK)
      return Status::error(fmt::format("{} is in use by another softflowd", what), EBUSY);
    return Status::error(fmt::format("cannot lock {}: {}", path, errno_text(err)));
  }
  return fd;
}

// Interfaces are named per network namespace: the lock names carry the
// namespace's inode.
std::string netns_id() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) return "0";
  return std::to_string(st.st_ino);
}

}  // namespace

std::string_view xdp_mode_name(XdpMode mode) {
  return mode == XdpMode::kNative ? "native" : "generic";
}

Result<XdpMode> parse_xdp_mode(std::string_view name) {
  if (name == "native" || name == "drv") return XdpMode::kNative;
  if (name == "generic" || name == "skb") return XdpMode::kGeneric;
  return Status::error(fmt::format("unknown XDP mode '{}' (native or generic)", name));
}

Result<std::unique_ptr<XdpLoader>> XdpLoader::attach(const std::vector<std::string>& names,
                                                     const XdpLoaderOptions& options) {
  std::unique_ptr<XdpLoader> loader(new XdpLoader());
  // Look at every interface before changing anything: a bad one fails the
  // whole start with nothing attached.
  uint32_t adopt_id = 0;
  std::vector<Attached> found;
  for (const std::string& name : names) {
    XdpInterface itf;
    itf.name = name;
    itf.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
    if (itf.ifindex == 0) return Status::error(fmt::format("no such interface: {}", name), ENODEV);
    auto lock = take_lock(fmt::format("netns-{}-ifindex-{}", netns_id(), itf.ifindex),
                          fmt::format("interface {}", name));
    if (!lock) return lock.status();
    loader->lock_fds_.push_back(lock.value());
    auto a = query(itf.ifindex, name);
    if (!a) return a.status();
    if (a.value().prog_id != 0) {
      int fd = bpf_prog_get_fd_by_id(a.value().prog_id);
      if (fd < 0)
        return Status::error(
            fmt::format("cannot open the XDP program on {}: {}", name, errno_text(errno)));
      auto info = prog_info(fd);
      close(fd);
      if (!info) return info.status();
      if (info.value().name != SF_XDP_PROG_NAME || a.value().offloaded_or_multi)
        return Status::error(
            fmt::format("{} already has a foreign XDP program (id {}, name '{}'); remove it with "
                        "`ip link set dev {} xdp off` or choose another interface",
                        name, a.value().prog_id, info.value().name, name),
            EBUSY);
      if (adopt_id != 0 && adopt_id != a.value().prog_id) {
        // Two copies of our program: fine if they share maps (ip pins by
        // name), which adopting the first one and attaching it everywhere
        // would otherwise silently split.
        int other = bpf_prog_get_fd_by_id(adopt_id);
        auto first = other >= 0 ? prog_info(other) : Result<ProgInfo>(Status::error("gone"));
        if (other >= 0) close(other);
        if (!first || first.value().map_ids != info.value().map_ids)
          return Status::error(
              fmt::format(
                  "{} has a different SoftFlow XDP program (id {}) with its own maps; attach one "
                  "object to all ports or remove it with `ip link set dev {} xdp off`",
                  name, a.value().prog_id, name),
              EBUSY);
      } else if (adopt_id == 0) {
        adopt_id = a.value().prog_id;
      }
      itf.adopted = true;
      itf.prog_id = a.value().prog_id;
      itf.mode = a.value().mode;
    }
    found.push_back(a.value());
    loader->interfaces_.push_back(itf);
  }

  if (adopt_id != 0) {
    if (Status s = loader->adopt(adopt_id); !s) return s;
    // Left behind by a softflowd that attached it and died: ours again.
    uint32_t zero = 0;
    sf_xdp_config config{};
    if (bpf_map_lookup_elem(loader->maps_.config, &zero, &config) == 0 &&
        (config.flags & SF_CONFIG_OWNED_BY_SOFTFLOWD)) {
      loader->owned_ = true;
      for (XdpInterface& itf : loader->interfaces_)
        if (itf.adopted) itf.attached = true;
    }
    // A program we pinned ourselves before a crash: it is ours again, so
    // detach and unpin it on exit as if we had just attached it.
    if (!options.pin_dir.empty()) {
      const std::string pinned_ports = options.pin_dir + "/" + SF_MAP_PORTS;
      int fd = bpf_obj_get(pinned_ports.c_str());
      if (fd >= 0) {
        auto pinned = map_info(fd);
        auto current = map_info(loader->maps_.ports);
        close(fd);
        if (pinned && current && pinned.value().id == current.value().id) {
          loader->pinned_dir_ = options.pin_dir;
          for (const char* m :
               {SF_MAP_PORTS, SF_MAP_XSKS, SF_MAP_MASKS, SF_MAP_MEGAFLOWS, SF_MAP_CONFIG,
                SF_MAP_EMC, SF_MAP_MASK_HITS, SF_MAP_STATS, SF_MAP_HINTS})
            loader->pinned_paths_.push_back(options.pin_dir + "/" + m);
          for (XdpInterface& itf : loader->interfaces_)
            if (itf.adopted) itf.attached = true;
        }
      }
    }
  } else {
    if (Status s = loader->load(options); !s) return s;
  }

  for (XdpInterface& itf : loader->interfaces_) {
    if (itf.adopted) continue;
    const uint32_t flags = XDP_FLAGS_UPDATE_IF_NOEXIST | attach_flags(options.mode);
    if (int err = bpf_xdp_attach(itf.ifindex, loader->prog_fd_, flags, nullptr); err != 0) {
      return Status::error(fmt::format("cannot attach XDP to {} in {} mode: {}", itf.name,
                                       xdp_mode_name(options.mode), errno_text(err)),
                           -err);  // the destructor detaches the others
    }
    itf.attached = true;
    itf.mode = options.mode;
    itf.prog_id = loader->prog_id_;
  }
  // Ours when we attached it everywhere (a program someone attached by hand
  // on one port stays theirs, even if we put it on others too).
  bool all_ours = true;
  for (const XdpInterface& itf : loader->interfaces_) all_ours = all_ours && itf.attached;
  loader->owned_ = all_ours;
  loader->clear_maps();
  return loader;
}

Status XdpLoader::adopt(uint32_t prog_id) {
  prog_fd_ = bpf_prog_get_fd_by_id(prog_id);
  if (prog_fd_ < 0)
    return Status::error(fmt::format("cannot open XDP program {}: {}", prog_id, errno_text(errno)));
  prog_id_ = prog_id;
  owned_fds_.push_back(prog_fd_);
  auto info = prog_info(prog_fd_);
  if (!info) return info.status();
  struct Want {
    const char* name;
    int* fd;
    uint32_t key_size;
    uint32_t value_size;
  };
  const Want wants[] = {
      {SF_MAP_PORTS, &maps_.ports, 4, sizeof(sf_port)},
      {SF_MAP_XSKS, &maps_.xsks, 4, 4},
      {SF_MAP_MASKS, &maps_.masks, 4, sizeof(sf_flow_key)},
      {SF_MAP_MEGAFLOWS, &maps_.megaflows, sizeof(sf_megaflow_map_key), sizeof(sf_megaflow_ref)},
      {SF_MAP_CONFIG, &maps_.config, 4, sizeof(sf_xdp_config)},
      {SF_MAP_EMC, &maps_.emc, 4, sizeof(sf_emc_entry)},
      {SF_MAP_MASK_HITS, &maps_.mask_hits, 4, 8},
      {SF_MAP_STATS, &maps_.stats, 4, sizeof(sf_xdp_stats)},
      {SF_MAP_HINTS, &maps_.hints, 4, sizeof(sf_hint)},
  };
  for (uint32_t id : info.value().map_ids) {
    int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) continue;
    owned_fds_.push_back(fd);
    auto mi = map_info(fd);
    if (!mi) return mi.status();
    for (const Want& w : wants) {
      if (std::strcmp(mi.value().name, w.name) != 0) continue;
      if (mi.value().key_size != w.key_size || mi.value().value_size != w.value_size)
        return Status::error(fmt::format(
            "the attached SoftFlow XDP program (id {}) is from an incompatible build (map {}); "
            "remove it with `ip link set dev IF xdp off`",
            prog_id, w.name));
      *w.fd = fd;
    }
  }
  for (const Want& w : wants)
    if (*w.fd < 0)
      return Status::error(
          fmt::format("the attached XDP program {} named {} lacks map {}: not SoftFlow's", prog_id,
                      SF_XDP_PROG_NAME, w.name));
  return Status::ok();
}

Status XdpLoader::load(const XdpLoaderOptions& options) {
  if (!options.pin_dir.empty()) {
    if (Status s = ensure_bpffs(); !s) return s;
    std::error_code ec;
    std::filesystem::create_directories(options.pin_dir, ec);
    if (ec)
      return Status::error(
          fmt::format("cannot create pin directory {}: {}", options.pin_dir, ec.message()));
    // Maps pinned there are reused by name: they must not be a running
    // softflowd's.  A bpffs directory is identified by device and inode.
    struct stat st {};
    if (stat(options.pin_dir.c_str(), &st) != 0)
      return Status::error(fmt::format("cannot stat {}: {}", options.pin_dir, errno_text(errno)));
    auto lock = take_lock(fmt::format("pins-{}-{}", st.st_dev, st.st_ino),
                          fmt::format("pin directory {}", options.pin_dir));
    if (!lock) return lock.status();
    lock_fds_.push_back(lock.value());
  }
  skeleton_ = sf_xdp__open();
  if (skeleton_ == nullptr)
    return Status::error(fmt::format("cannot open the XDP object: {}", errno_text(errno)));
  bpf_map* map;
  if (!options.pin_dir.empty()) {
    bpf_object__for_each_map(map, skeleton_->obj) {
      const std::string path = options.pin_dir + "/" + bpf_map__name(map);
      if (int err = bpf_map__set_pin_path(map, path.c_str()); err != 0)
        return Status::error(fmt::format("cannot pin {}: {}", path, errno_text(err)));
    }
  } else {
    bpf_object__for_each_map(map, skeleton_->obj) bpf_map__set_pin_path(map, nullptr);
  }
  if (int err = sf_xdp__load(skeleton_); err != 0) {
    std::string hint;
    if (!options.pin_dir.empty())
      hint = fmt::format(" (maps pinned in {} by another build? remove them)", options.pin_dir);
    return Status::error(fmt::format("cannot load the XDP program: {}{}", errno_text(err), hint));
  }
  if (!options.pin_dir.empty()) {
    pinned_dir_ = options.pin_dir;
    bpf_object__for_each_map(map, skeleton_->obj) pinned_paths_.push_back(bpf_map__pin_path(map));
  }
  prog_fd_ = bpf_program__fd(skeleton_->progs.sf_xdp);
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog_fd_, &info, &len) == 0) prog_id_ = info.id;
  maps_ = skeleton_maps(*skeleton_);
  return Status::ok();
}

XdpMaps skeleton_maps(const ::sf_xdp& skeleton) {
  XdpMaps m;
  m.ports = bpf_map__fd(skeleton.maps.sf_ports);
  m.xsks = bpf_map__fd(skeleton.maps.sf_xsks);
  m.masks = bpf_map__fd(skeleton.maps.sf_masks);
  m.megaflows = bpf_map__fd(skeleton.maps.sf_megaflows);
  m.config = bpf_map__fd(skeleton.maps.sf_config);
  m.emc = bpf_map__fd(skeleton.maps.sf_emc);
  m.mask_hits = bpf_map__fd(skeleton.maps.sf_mask_hits);
  m.stats = bpf_map__fd(skeleton.maps.sf_xdp_stats);
  m.hints = bpf_map__fd(skeleton.maps.sf_hints);
  return m;
}

namespace {
void delete_all(int fd, size_t key_size) {
  std::vector<uint8_t> key(key_size), next(key_size);
  while (bpf_map_get_next_key(fd, nullptr, next.data()) == 0) {
    if (bpf_map_delete_elem(fd, next.data()) != 0) break;
  }
}
}  // namespace

void XdpLoader::clear_maps() {
  if (maps_.ports < 0) return;
  delete_all(maps_.ports, sizeof(uint32_t));
  delete_all(maps_.megaflows, sizeof(sf_megaflow_map_key));
  for (uint32_t i = 0; i < SF_MAX_XSKS; ++i) bpf_map_delete_elem(maps_.xsks, &i);
  if (maps_.hints >= 0) {  // no NIC mark of a previous life is verifiable
    const sf_hint none{};
    for (uint32_t i = 0; i < SF_TCAM_MAX_ENTRIES; ++i) {
      sf_hint hint{};
      if (bpf_map_lookup_elem(maps_.hints, &i, &hint) == 0 && hint.generation != 0)
        bpf_map_update_elem(maps_.hints, &i, &none, BPF_ANY);
    }
  }
  // Keep counting epochs: EMC entries of the previous life must stay invalid.
  uint32_t zero = 0;
  sf_xdp_config config{};
  bpf_map_lookup_elem(maps_.config, &zero, &config);
  const uint32_t epoch = config.emc_epoch + 1;
  config = sf_xdp_config{};
  config.emc_epoch = epoch;
  config.flags = owned_ ? SF_CONFIG_OWNED_BY_SOFTFLOWD : 0;
  bpf_map_update_elem(maps_.config, &zero, &config, BPF_ANY);
}

sf_xdp_stats XdpLoader::read_stats() const { return sum_percpu<sf_xdp_stats>(maps_.stats, 0); }

void XdpLoader::release() {
  clear_maps();
  for (const XdpInterface& itf : interfaces_) {
    if (!itf.attached) continue;
    bpf_xdp_attach_opts opts{};
    opts.sz = sizeof(opts);
    opts.old_prog_fd = prog_fd_;
    // REPLACE with old_prog_fd: detaches only if our program is still there.
    bpf_xdp_detach(itf.ifindex, attach_flags(itf.mode) | XDP_FLAGS_REPLACE, &opts);
  }
  for (const std::string& path : pinned_paths_) unlink(path.c_str());
  if (!pinned_dir_.empty()) rmdir(pinned_dir_.c_str());
  pinned_paths_.clear();
  for (int fd : owned_fds_) close(fd);
  owned_fds_.clear();
  for (int fd : lock_fds_) close(fd);  // last: everything above is undone
  lock_fds_.clear();
  if (skeleton_ != nullptr) sf_xdp__destroy(skeleton_);
  skeleton_ = nullptr;
  maps_ = XdpMaps{};
}

XdpLoader::~XdpLoader() { release(); }

}  // namespace softflow

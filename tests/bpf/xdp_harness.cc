#include "xdp_harness.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>

#include "sf_nic.skel.h"
#include "sf_xdp.skel.h"
#include "softflow/parse.h"

namespace softflow::bpf_test {
namespace {

// ENOTSUPP (524) is kernel-internal but reaches userspace from BPF_PROG_RUN
// when a program type has no test_run.
constexpr int kKernelEnotsupp = 524;

std::string errno_text(int err) { return std::string(std::strerror(err < 0 ? -err : err)); }

[[noreturn]] void skip_missing_kernel_feature(const std::string& what) {
  std::cout << std::flush;
  std::cerr
      << "\nSKIP (exit " << kSkipExitCode << "): kernel feature missing: " << what
      << "\n  sf-bpf-tests needs XDP programs and BPF_PROG_RUN for them, with an xdp_md context."
      << std::endl;
  std::exit(kSkipExitCode);
}

// The EMC and the counters are per CPU: every run of a test must land on the
// same CPU.  Pins to the CPU the thread is on now (or the first allowed).
::testing::AssertionResult pin_to_one_cpu() {
  const std::vector<int> allowed = usable_cpus();
  if (allowed.empty()) return ::testing::AssertionFailure() << "no CPU in the affinity mask";
  int cpu = sched_getcpu();
  if (std::find(allowed.begin(), allowed.end(), cpu) == allowed.end()) cpu = allowed.front();
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0)
    return ::testing::AssertionFailure()
           << "sched_setaffinity(cpu " << cpu << "): " << errno_text(errno);
  return ::testing::AssertionSuccess();
}

// The object pins its maps by name (LIBBPF_PIN_BY_NAME); a test must
// neither reuse a running switch's maps nor leave pins behind.
bool unpin_all_maps(bpf_object* obj, std::string* error) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (int err = bpf_map__set_pin_path(map, nullptr); err != 0) {
      *error = std::string("bpf_map__set_pin_path(") + bpf_map__name(map) +
               ", NULL): " + errno_text(err);
      return false;
    }
  }
  return true;
}

// One BPF_PROG_RUN of the XDP program 'prog_fd' on 'frame', as if received
// on 'ifindex' queue 'rx_queue'.
XdpRun run_xdp_program(int prog_fd, std::span<const uint8_t> frame, uint32_t ifindex,
                       uint32_t rx_queue) {
  XdpRun result;
  xdp_md ctx_in{};
  ctx_in.data = 0;
  ctx_in.data_end = static_cast<uint32_t>(frame.size());
  ctx_in.ingress_ifindex = ifindex;
  ctx_in.rx_queue_index = rx_queue;
  xdp_md ctx_out{};
  // Room for the frame, the metadata and whatever the program might add.
  std::vector<uint8_t> out(frame.size() + 512);

  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<uint32_t>(frame.size());
  opts.data_out = out.data();
  opts.data_size_out = static_cast<uint32_t>(out.size());
  opts.ctx_in = &ctx_in;
  opts.ctx_size_in = sizeof ctx_in;
  opts.ctx_out = &ctx_out;
  opts.ctx_size_out = sizeof ctx_out;
  opts.repeat = 1;
  if (int err = bpf_prog_test_run_opts(prog_fd, &opts); err != 0) {
    result.error = err < 0 ? err : -err;
    return result;
  }
  result.verdict = opts.retval;
  // data_out starts at data_meta; ctx_out holds data and data_end relative
  // to it.  A frame longer than fits in one page arrives as a multi-buffer
  // frame: data_end ends the linear part and the fragments follow it in
  // data_out.
  if (ctx_out.data_meta != 0 || ctx_out.data > ctx_out.data_end ||
      ctx_out.data_end > opts.data_size_out || opts.data_size_out > out.size()) {
    ADD_FAILURE() << "unexpected BPF_PROG_RUN output: ctx_out data_meta=" << ctx_out.data_meta
                  << " data=" << ctx_out.data << " data_end=" << ctx_out.data_end
                  << ", data_size_out=" << opts.data_size_out;
    result.error = -EPROTO;
    return result;
  }
  result.meta_len = ctx_out.data;
  if (result.has_meta()) std::memcpy(&result.meta, out.data(), sizeof result.meta);
  result.linear_len = ctx_out.data_end - ctx_out.data;
  result.frame.assign(out.begin() + ctx_out.data, out.begin() + opts.data_size_out);
  return result;
}

// A per-CPU value made of u64 counters, summed over the CPUs.
template <typename T>
bool sum_per_cpu(int map_fd, uint32_t key, int n_cpus, T* sum) {
  constexpr size_t kCounters = sizeof(T) / sizeof(uint64_t);
  static_assert(sizeof(T) == kCounters * sizeof(uint64_t));
  std::vector<T> per_cpu(static_cast<size_t>(n_cpus));
  std::memset(sum, 0, sizeof *sum);
  if (bpf_map_lookup_elem(map_fd, &key, per_cpu.data()) != 0) return false;
  uint64_t total[kCounters] = {};
  for (const T& v : per_cpu) {
    uint64_t counters[kCounters];
    std::memcpy(counters, &v, sizeof counters);
    for (size_t i = 0; i < kCounters; ++i) total[i] += counters[i];
  }
  std::memcpy(sum, total, sizeof *sum);
  return true;
}

// Formats one key field (by its descriptor) as hex bytes.
std::string field_hex(const FlowKey& key, Field f) {
  return hex({field_ptr(key, f), field_info(f).size});
}

}  // namespace

std::vector<int> usable_cpus() {
  // The mask the process started with, before any test pinned it.
  static const std::vector<int> cpus = [] {
    std::vector<int> out;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &allowed)) out.push_back(c);
    }
    return out;
  }();
  return cpus;
}

std::string hex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0x0f];
  }
  return out;
}

std::string describe_key(const FlowKey& key) {
  std::string out;
  for (size_t i = 0; i < kFieldCount; ++i) {
    const Field f = static_cast<Field>(i);
    if (f == Field::kNwSrc || f == Field::kNwDst) continue;  // inside kIpv6Src/kIpv6Dst
    if (!out.empty()) out += ' ';
    out += std::string(field_info(f).name) + "=" + field_hex(key, f);
  }
  out += " pad=" + hex({key.pad, sizeof key.pad});
  return out;
}

std::string describe_meta(const sf_xdp_meta& meta) {
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "l3_ofs=%u l4_ofs=%u payload_ofs=%u parse_flags=0x%x result=%u datapath=%u "
                "hash=0x%08x ref={%u,%u} magic=0x%08x",
                meta.l3_ofs, meta.l4_ofs, meta.payload_ofs, meta.parse_flags, meta.result,
                meta.datapath, meta.hash, meta.ref.id, meta.ref.generation, meta.magic);
  return std::string(buf) + "\n    key: " + describe_key(meta.key);
}

std::vector<uint8_t> with_shim(std::span<const uint8_t> frame, uint32_t mark, uint8_t version) {
  constexpr size_t kMacLen = 12;
  std::vector<uint8_t> out(frame.begin(), frame.end());
  const uint8_t shim[sizeof(sf_shim)] = {SF_SHIM_ETHERTYPE >> 8,
                                         SF_SHIM_ETHERTYPE & 0xff,
                                         version,
                                         0,
                                         static_cast<uint8_t>(mark >> 24),
                                         static_cast<uint8_t>(mark >> 16),
                                         static_cast<uint8_t>(mark >> 8),
                                         static_cast<uint8_t>(mark)};
  const size_t at = std::min(kMacLen, out.size());
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(at), std::begin(shim), std::end(shim));
  return out;
}

FlowKey fields_mask(std::initializer_list<Field> fields) {
  FlowKey mask = zero_key();
  for (Field f : fields) key_or_into(mask, field_mask(f));
  return mask;
}

UserspaceParse parse_in_userspace(std::span<const uint8_t> frame, uint32_t in_port) {
  // An exact-size copy, so the sanitizers see any read past the end.
  std::vector<uint8_t> bytes(frame.begin(), frame.end());
  Packet pkt;
  pkt.data = bytes.data();
  pkt.len = static_cast<uint32_t>(bytes.size());
  pkt.key = zero_key();
  pkt.key.in_port = in_port;
  parse_packet(pkt);
  return {pkt.key, pkt.l3_ofs, pkt.l4_ofs, pkt.payload_ofs, pkt.parse_flags};
}

::testing::AssertionResult meta_matches_userspace(const XdpRun& run,
                                                  std::span<const uint8_t> frame) {
  if (run.error != 0)
    return ::testing::AssertionFailure()
           << "BPF_PROG_RUN failed: " << errno_text(run.error) << "\n  frame (" << frame.size()
           << " bytes): " << hex(frame);
  if (!run.has_meta())
    return ::testing::AssertionFailure()
           << "no metadata (meta_len " << run.meta_len << ")\n  frame: " << hex(frame);
  if (run.linear_len != frame.size())
    return ::testing::AssertionFailure()
           << "the program saw " << run.linear_len << " of the frame's " << frame.size()
           << " bytes (a multi-buffer frame)";
  const UserspaceParse user = parse_in_userspace(frame);
  const sf_xdp_meta& m = run.meta;
  std::string diffs;
  if (!key_equal(m.key, user.key)) {
    diffs += " key";
    for (size_t i = 0; i < kFieldCount; ++i) {
      const Field f = static_cast<Field>(i);
      if (field_hex(m.key, f) != field_hex(user.key, f))
        diffs += "[" + std::string(field_info(f).name) + " xdp=" + field_hex(m.key, f) +
                 " user=" + field_hex(user.key, f) + "]";
    }
    if (std::memcmp(m.key.pad, user.key.pad, sizeof m.key.pad) != 0) diffs += "[pad]";
  }
  if (m.l3_ofs != user.l3_ofs) diffs += " l3_ofs";
  if (m.l4_ofs != user.l4_ofs) diffs += " l4_ofs";
  if (m.payload_ofs != user.payload_ofs) diffs += " payload_ofs";
  if (m.parse_flags != user.parse_flags) diffs += " parse_flags";
  if (m.hash != key_hash(user.key)) diffs += " hash";
  if (m.result == SF_XDP_UNPARSED) diffs += " result=UNPARSED";
  if (diffs.empty()) return ::testing::AssertionSuccess();
  char user_line[120];
  std::snprintf(user_line, sizeof user_line,
                "l3_ofs=%u l4_ofs=%u payload_ofs=%u parse_flags=0x%x hash=0x%08x", user.l3_ofs,
                user.l4_ofs, user.payload_ofs, user.parse_flags, key_hash(user.key));
  return ::testing::AssertionFailure()
         << "XDP and userspace parse differ in:" << diffs << "\n  frame (" << frame.size()
         << " bytes): " << hex(frame) << "\n  xdp:  " << describe_meta(m)
         << "\n  user: " << user_line << "\n    key: " << describe_key(user.key);
}

// ---- XdpProgram ---------------------------------------------------------------------

XdpProgram::XdpProgram(sf_xdp* skel) : skel_(skel), n_cpus_(libbpf_num_possible_cpus()) {}

XdpProgram::~XdpProgram() { sf_xdp__destroy(skel_); }

std::unique_ptr<XdpProgram> XdpProgram::load(std::string* error) {
  sf_xdp* skel = sf_xdp__open();
  if (skel == nullptr) {
    *error = "sf_xdp__open: " + errno_text(errno);
    return nullptr;
  }
  if (!unpin_all_maps(skel->obj, error)) {
    sf_xdp__destroy(skel);
    return nullptr;
  }
  if (int err = sf_xdp__load(skel); err != 0) {
    *error = "sf_xdp__load: " + errno_text(err) + " (the verifier log, if any, is above)";
    sf_xdp__destroy(skel);
    return nullptr;
  }
  std::unique_ptr<XdpProgram> program(new XdpProgram(skel));
  if (program->n_cpus_ <= 0) {
    *error = "libbpf_num_possible_cpus: " + errno_text(program->n_cpus_);
    return nullptr;
  }
  return program;
}

XdpRun XdpProgram::run(std::span<const uint8_t> frame, uint32_t ifindex, uint32_t rx_queue) {
  return run_xdp_program(bpf_program__fd(skel_->progs.sf_xdp), frame, ifindex, rx_queue);
}

XdpMaps XdpProgram::maps() const { return skeleton_maps(*skel_); }

bool XdpProgram::set_port(uint32_t ifindex, const sf_port& port) {
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_ports), &ifindex, &port, BPF_ANY) == 0;
}

bool XdpProgram::delete_port(uint32_t ifindex) {
  return bpf_map_delete_elem(bpf_map__fd(skel_->maps.sf_ports), &ifindex) == 0;
}

bool XdpProgram::set_mask(uint32_t slot, const FlowKey& mask) {
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_masks), &slot, &mask, BPF_ANY) == 0;
}

bool XdpProgram::set_config(const sf_xdp_config& config) {
  const uint32_t zero = 0;
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_config), &zero, &config, BPF_ANY) == 0;
}

bool XdpProgram::get_config(sf_xdp_config* config) {
  const uint32_t zero = 0;
  return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sf_config), &zero, config) == 0;
}

namespace {
sf_megaflow_map_key megaflow_map_key(uint32_t mask_slot, uint32_t datapath,
                                     const FlowKey& masked_key) {
  sf_megaflow_map_key k;
  std::memset(&k, 0, sizeof k);
  k.mask_slot = mask_slot;
  k.datapath = datapath;
  k.key = masked_key;
  return k;
}
}  // namespace

bool XdpProgram::add_megaflow(uint32_t mask_slot, uint32_t datapath, const FlowKey& masked_key,
                              sf_megaflow_ref ref) {
  const sf_megaflow_map_key k = megaflow_map_key(mask_slot, datapath, masked_key);
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_megaflows), &k, &ref, BPF_ANY) == 0;
}

bool XdpProgram::delete_megaflow(uint32_t mask_slot, uint32_t datapath, const FlowKey& masked_key) {
  const sf_megaflow_map_key k = megaflow_map_key(mask_slot, datapath, masked_key);
  return bpf_map_delete_elem(bpf_map__fd(skel_->maps.sf_megaflows), &k) == 0;
}

bool XdpProgram::set_hint(uint32_t index, const sf_hint& hint) {
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_hints), &index, &hint, BPF_ANY) == 0;
}

bool XdpProgram::clear_hint(uint32_t index) {
  sf_hint none;
  std::memset(&none, 0, sizeof none);
  return set_hint(index, none);
}

sf_xdp_stats XdpProgram::stats() {
  sf_xdp_stats sum{};
  if (!sum_per_cpu(bpf_map__fd(skel_->maps.sf_xdp_stats), 0, n_cpus_, &sum))
    ADD_FAILURE() << "lookup sf_xdp_stats: " << errno_text(errno);
  return sum;
}

uint64_t XdpProgram::mask_hits(uint32_t slot) {
  std::vector<uint64_t> per_cpu(static_cast<size_t>(n_cpus_));
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sf_mask_hits), &slot, per_cpu.data()) != 0) {
    ADD_FAILURE() << "lookup sf_mask_hits[" << slot << "]: " << errno_text(errno);
    return 0;
  }
  uint64_t sum = 0;
  for (uint64_t v : per_cpu) sum += v;
  return sum;
}

std::vector<XdpProgram::MapPinning> XdpProgram::pinning() const {
  std::vector<MapPinning> out;
  const bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    out.push_back({bpf_map__name(map), bpf_map__pin_path(map), bpf_map__is_pinned(map)});
  }
  return out;
}

// ---- NicProgram ---------------------------------------------------------------------

NicProgram::NicProgram(sf_nic* skel) : skel_(skel), n_cpus_(libbpf_num_possible_cpus()) {}

NicProgram::~NicProgram() { sf_nic__destroy(skel_); }

std::unique_ptr<NicProgram> NicProgram::load(std::string* error) {
  sf_nic* skel = sf_nic__open();
  if (skel == nullptr) {
    *error = "sf_nic__open: " + errno_text(errno);
    return nullptr;
  }
  if (!unpin_all_maps(skel->obj, error)) {
    sf_nic__destroy(skel);
    return nullptr;
  }
  if (int err = sf_nic__load(skel); err != 0) {
    *error = "sf_nic__load: " + errno_text(err) + " (the verifier log, if any, is above)";
    sf_nic__destroy(skel);
    return nullptr;
  }
  std::unique_ptr<NicProgram> program(new NicProgram(skel));
  if (program->n_cpus_ <= 0) {
    *error = "libbpf_num_possible_cpus: " + errno_text(program->n_cpus_);
    return nullptr;
  }
  return program;
}

XdpRun NicProgram::run(std::span<const uint8_t> frame, uint32_t ifindex, uint32_t rx_queue) {
  return run_xdp_program(bpf_program__fd(skel_->progs.sf_nic), frame, ifindex, rx_queue);
}

bool NicProgram::set_port(uint32_t ifindex, const sf_nic_port& port) {
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_nic_ports), &ifindex, &port, BPF_ANY) == 0;
}

bool NicProgram::delete_port(uint32_t ifindex) {
  return bpf_map_delete_elem(bpf_map__fd(skel_->maps.sf_nic_ports), &ifindex) == 0;
}

bool NicProgram::set_mask(uint32_t index, const FlowKey& mask) {
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_tcam_masks), &index, &mask, BPF_ANY) == 0;
}

bool NicProgram::set_config(const sf_tcam_config& config) {
  const uint32_t zero = 0;
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_tcam_config), &zero, &config, BPF_ANY) == 0;
}

namespace {
sf_tcam_key tcam_key(uint32_t mask_index, const FlowKey& masked_key) {
  sf_tcam_key k;
  std::memset(&k, 0, sizeof k);
  k.mask_index = mask_index;
  k.key = masked_key;
  return k;
}
}  // namespace

bool NicProgram::add_entry(uint32_t mask_index, const FlowKey& masked_key,
                           const sf_tcam_action& action) {
  const sf_tcam_key k = tcam_key(mask_index, masked_key);
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.sf_tcam), &k, &action, BPF_ANY) == 0;
}

bool NicProgram::delete_entry(uint32_t mask_index, const FlowKey& masked_key) {
  const sf_tcam_key k = tcam_key(mask_index, masked_key);
  return bpf_map_delete_elem(bpf_map__fd(skel_->maps.sf_tcam), &k) == 0;
}

sf_nic_stats NicProgram::stats() {
  sf_nic_stats sum{};
  if (!sum_per_cpu(bpf_map__fd(skel_->maps.sf_nic_stats), 0, n_cpus_, &sum))
    ADD_FAILURE() << "lookup sf_nic_stats: " << errno_text(errno);
  return sum;
}

uint64_t NicProgram::tcam_hits(uint32_t index) {
  std::vector<uint64_t> per_cpu(static_cast<size_t>(n_cpus_));
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sf_tcam_hits), &index, per_cpu.data()) != 0) {
    ADD_FAILURE() << "lookup sf_tcam_hits[" << index << "]: " << errno_text(errno);
    return 0;
  }
  uint64_t sum = 0;
  for (uint64_t v : per_cpu) sum += v;
  return sum;
}

// ---- XdpTest --------------------------------------------------------------------------

sf_port XdpTest::default_port() const {
  sf_port port{};
  port.ofport = kOfPort;
  port.xsk_base = 0;
  port.n_queues = 1;
  port.datapath[0] = kDatapath;
  return port;
}

void XdpTest::SetUp() {
  prepare();
  if (HasFatalFailure()) return;
  load_switch();
}

void XdpTest::prepare() {
  if (geteuid() != 0)
    GTEST_FAIL() << "sf-bpf-tests must run as root: it loads an XDP program and creates "
                    "maps (CAP_BPF, CAP_NET_ADMIN).  Run it with sudo (CI runs it as root).";
  const int xdp_supported = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, nullptr);
  if (xdp_supported == 0) skip_missing_kernel_feature("BPF_PROG_TYPE_XDP");
  if (xdp_supported < 0)
    GTEST_FAIL() << "probing for XDP program support failed: " << errno_text(xdp_supported);
  ASSERT_TRUE(pin_to_one_cpu());

  lo_ifindex_ = if_nametoindex("lo");
  ASSERT_NE(lo_ifindex_, 0u) << "no loopback device 'lo' to stand in as the ingress port";
}

void XdpTest::load_switch() {
  std::string error;
  // Once per process, a probe frame on a program of its own tells a kernel
  // without BPF_PROG_RUN for XDP from a failure of ours.
  static bool prog_run_works = false;
  if (!prog_run_works) {
    std::unique_ptr<XdpProgram> probe_program = XdpProgram::load(&error);
    ASSERT_NE(probe_program, nullptr) << error;
    const std::vector<uint8_t> probe(60, 0);
    const XdpRun r = probe_program->run(probe, lo_ifindex_, 0);
    if (r.error == -EOPNOTSUPP || r.error == -kKernelEnotsupp)
      skip_missing_kernel_feature("BPF_PROG_RUN (BPF_PROG_TEST_RUN) for XDP programs");
    ASSERT_EQ(r.error, 0) << "BPF_PROG_RUN of a 60-byte frame on ifindex " << lo_ifindex_ << ": "
                          << errno_text(r.error);
    prog_run_works = true;
  }

  // A fresh program per test: empty EMC, zero counters.
  xdp_ = XdpProgram::load(&error);
  ASSERT_NE(xdp_, nullptr) << error;
  ASSERT_TRUE(xdp_->set_port(lo_ifindex_, default_port())) << errno_text(errno);
}

// ---- NicTest --------------------------------------------------------------------------

void NicTest::SetUp() {
  // The NIC alone: sf_xdp is loaded only by the tests that need it
  // (load_switch()).
  prepare();
  if (HasFatalFailure()) return;
  std::string error;
  nic_ = NicProgram::load(&error);
  ASSERT_NE(nic_, nullptr) << error;
  static bool prog_run_works = false;
  if (!prog_run_works) {
    const std::vector<uint8_t> probe(60, 0);
    const XdpRun r = nic_->run(probe, lo_ifindex_, 0);
    if (r.error == -EOPNOTSUPP || r.error == -kKernelEnotsupp)
      skip_missing_kernel_feature("BPF_PROG_RUN (BPF_PROG_TEST_RUN) for XDP programs");
    ASSERT_EQ(r.error, 0) << "BPF_PROG_RUN of a 60-byte frame on ifindex " << lo_ifindex_ << ": "
                          << errno_text(r.error);
    prog_run_works = true;
  }
}

}  // namespace softflow::bpf_test

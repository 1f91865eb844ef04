// Helpers shared by the core unit tests (xlate, megaflow, datapath,
// equivalence, coalescing, revalidation): seeds, rule and key builders,
// frame generators and a switch harness with in-memory ports.
#pragma once

#include <arpa/inet.h>
#include <sys/wait.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <random>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/datapath.h"
#include "softflow/flow.h"
#include "softflow/flow_key.h"
#include "softflow/openflow.h"
#include "softflow/packet_builder.h"
#include "softflow/ports.h"
#include "softflow/service.h"
#include "softflow/switch.h"

namespace softflow::test {

// ---- seeds ------------------------------------------------------------------------

// The seed of a randomised test: SF_TEST_SEED from the environment if set,
// else 'default_seed' (fixed, so a plain run is reproducible).  Printed and
// recorded as a test property so a failure can be replayed with
//   SF_TEST_SEED=<seed> sf-unit-tests --gtest_filter=<test>
inline uint64_t test_seed(uint64_t default_seed) {
  uint64_t seed = default_seed;
  if (const char* env = std::getenv("SF_TEST_SEED"); env != nullptr && *env != '\0')
    seed = std::strtoull(env, nullptr, 0);
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::cout << "[   SEED   ] " << (info ? info->test_suite_name() : "?") << "."
            << (info ? info->name() : "?") << " seed=" << seed
            << " (replay: SF_TEST_SEED=" << seed << ")" << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// ---- services -----------------------------------------------------------------------

// Service ids are 1-based in name order, so they move when a service is
// registered (test files register their own): always look them up by name.
inline uint8_t service_id(std::string_view name) {
  const std::optional<uint8_t> id = ServiceRegistry::instance().id_of(name);
  if (!id) {
    ADD_FAILURE() << "service '" << name << "' is not registered";
    return 0;
  }
  return *id;
}

// ---- matches, rules, keys -----------------------------------------------------------

inline constexpr uint64_t kAll = ~0ULL;

inline uint32_t prefix_mask(int len) { return len <= 0 ? 0u : len >= 32 ? ~0u : ~0u << (32 - len); }

// Match{ {Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000000, 0xff000000} }.
struct FieldMatch {
  Field field;
  uint64_t value;
  uint64_t mask = kAll;
};
inline Match match(std::initializer_list<FieldMatch> fields) {
  Match m;
  for (const FieldMatch& f : fields) m.set_uint(f.field, f.value, f.mask);
  return m;
}

inline FlowRule rule(uint8_t table, uint16_t priority, Match m, ActionList actions) {
  FlowRule r;
  r.table = table;
  r.priority = priority;
  r.match = m;
  r.actions = std::move(actions);
  return r;
}

// A full-width set_field with the value given as a host-order integer.
inline Action set_field(Field f, uint64_t v) { return Action::set_field(f, v); }
// A masked set_field (value and mask host-order integers).
inline Action set_field_masked(Field f, uint64_t v, uint64_t m) {
  Action a = Action::set_field(f, 0);
  FlowKey tv = zero_key(), tm = zero_key();
  set_field_uint(tv, f, v);
  set_field_uint(tm, f, m);
  const size_t n = field_info(f).size;
  for (size_t i = 0; i < n; ++i) {
    a.mask[i] = field_ptr(tm, f)[i];
    a.value[i] = static_cast<uint8_t>(field_ptr(tv, f)[i] & a.mask[i]);
  }
  return a;
}

// Key from field values (host-order integers).
inline FlowKey key(std::initializer_list<std::pair<Field, uint64_t>> fields) {
  FlowKey k = zero_key();
  for (const auto& [f, v] : fields) set_field_uint(k, f, v);
  return k;
}

inline std::string hex_key(const FlowKey& k) {
  std::string out;
  const auto* b = reinterpret_cast<const uint8_t*>(&k);
  char buf[4];
  for (size_t i = 0; i < sizeof k; ++i) {
    if (i && i % 8 == 0) out += ' ';
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    out += buf;
  }
  return out;
}

inline std::string describe_actions(const ActionList& actions) {
  std::ostringstream os;
  if (actions.empty()) os << "drop";
  for (size_t i = 0; i < actions.size(); ++i) {
    const Action& a = actions[i];
    if (i) os << ",";
    switch (a.type) {
      case ActionType::kOutput: os << "output:" << a.port; break;
      case ActionType::kOutputInPort: os << "in_port"; break;
      case ActionType::kGotoTable: os << "goto_table:" << int(a.table); break;
      case ActionType::kDecTtl: os << "dec_ttl"; break;
      case ActionType::kSoftflow:
        os << "softflow:" << ServiceRegistry::instance().name_of(a.service) << ":" << a.sf_argument;
        break;
      case ActionType::kSetField: {
        os << "set_field:0x";
        char buf[4];
        for (size_t j = 0; j < field_info(a.field).size; ++j) {
          std::snprintf(buf, sizeof buf, "%02x", a.value[j]);
          os << buf;
        }
        os << "->" << field_info(a.field).name;
        break;
      }
    }
  }
  return os.str();
}

// ---- frames -------------------------------------------------------------------------

inline Ipv6Addr v6(uint8_t last, uint8_t net = 0) {
  Ipv6Addr a{0x20, 0x01, 0x0d, 0xb8};
  a[7] = net;
  a[15] = last;
  return a;
}

// ---- checksums, computed independently of packet_ops.cc -------------------------------

// Adds the bytes as big-endian 16-bit words (an odd last byte padded with zero).
inline uint32_t add_words(uint32_t sum, const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}
// Folds the carries back in (one's complement sum).
inline uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// ---- running the built tools ----------------------------------------------------

struct CommandResult {
  int status = -1;     // exit status; -1 if the command could not run or was killed
  std::string output;  // what it wrote to stdout (add 2>&1 to the command for stderr)
};
// Runs a shell command line and collects its standard output.
inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Every frame of a pcap file (none if it cannot be read).
inline std::vector<Frame> read_pcap_frames(const std::string& path, uint32_t port = 0) {
  std::vector<Frame> out;
  auto reader = PcapReader::open(path, port);
  if (!reader) return out;
  Frame f;
  while (reader.value()->next(f)) out.push_back(f);
  return out;
}

inline Frame frame(uint32_t port, std::vector<uint8_t> bytes, uint64_t ts = 0) {
  Frame f;
  f.port = port;
  f.timestamp_ns = ts;
  f.bytes = std::move(bytes);
  return f;
}

inline std::vector<uint8_t> udp4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                                 std::string_view payload = "payload", uint8_t ttl = 64) {
  return PacketBuilder().ipv4(src, dst, ttl).udp(sport, dport).payload(payload).build();
}
inline std::vector<uint8_t> tcp4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                                 std::string_view payload = "payload", uint8_t ttl = 64) {
  return PacketBuilder().ipv4(src, dst, ttl).tcp(sport, dport).payload(payload).build();
}

// ---- a switch on in-memory ports ------------------------------------------------------

// One Switch whose datapath transmits into MemoryPorts; frames go in through
// run_frames, exactly as the in-memory port path of the daemon does.
class SwitchHarness {
 public:
  explicit SwitchHarness(bool coalesce, std::set<uint32_t> ports = {1, 2, 3, 4},
                         MegaflowCacheConfig cache = {}, nlohmann::json service_config = {})
      : ports_(std::move(ports)), pool_(4 * kMaxBatch) {
    SwitchConfig cfg;
    cfg.datapath.coalesce = coalesce;
    cfg.datapath.cache = cache;
    if (!service_config.is_null()) cfg.service_config = service_config;
    auto created = Switch::create(cfg);
    if (!created) throw std::runtime_error("Switch::create: " + created.error());
    sw_ = std::move(created.value());
    sw_->datapath().set_sink(&ports_);
  }

  Switch& sw() { return *sw_; }
  Datapath& dp() { return sw_->datapath(); }
  const DatapathStats& stats() { return sw_->datapath().stats(); }
  MemoryPorts& ports() { return ports_; }

  ::testing::AssertionResult add(const std::vector<FlowRule>& rules) {
    Status s = sw_->add_flows(rules);
    if (!s) return ::testing::AssertionFailure() << "add_flows: " << s.message();
    return ::testing::AssertionSuccess();
  }
  void run(std::span<const Frame> frames, const RunOptions& opts = {}) {
    run_frames(sw_->datapath(), frames, pool_, opts);
  }

 private:
  MemoryPorts ports_;
  FramePool pool_;
  std::unique_ptr<Switch> sw_;
};

inline std::string hex_bytes(const std::vector<uint8_t>& b, size_t max = 96) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < b.size() && i < max; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    out += buf;
  }
  if (b.size() > max) out += "...";
  return out;
}

// Same frames (bytes and timestamps), in the same order, on every port.
inline ::testing::AssertionResult same_output(const MemoryPorts& expected, const MemoryPorts& actual) {
  std::set<uint32_t> ports;
  for (const auto& [p, v] : expected.all_sent()) ports.insert(p);
  for (const auto& [p, v] : actual.all_sent()) ports.insert(p);
  for (uint32_t p : ports) {
    const std::vector<Frame>& e = expected.sent(p);
    const std::vector<Frame>& a = actual.sent(p);
    for (size_t i = 0; i < std::min(e.size(), a.size()); ++i) {
      if (e[i].bytes != a[i].bytes || e[i].timestamp_ns != a[i].timestamp_ns)
        return ::testing::AssertionFailure()
               << "port " << p << " frame #" << i << " differs:\n  expected ts=" << e[i].timestamp_ns
               << " " << hex_bytes(e[i].bytes) << "\n  actual   ts=" << a[i].timestamp_ns << " "
               << hex_bytes(a[i].bytes);
    }
    if (e.size() != a.size())
      return ::testing::AssertionFailure() << "port " << p << ": expected " << e.size()
                                           << " frames, got " << a.size();
  }
  return ::testing::AssertionSuccess();
}

inline size_t total_sent(const MemoryPorts& ports) {
  size_t n = 0;
  for (const auto& [p, v] : ports.all_sent()) n += v.size();
  return n;
}

inline std::string drops_string(const DatapathStats& s) {
  std::string out;
  for (size_t i = 1; i < s.drops.size(); ++i)
    out += std::string(drop_reason_name(static_cast<DropReason>(i))) + "=" +
           std::to_string(s.drops[i]) + " ";
  return out;
}

// ---- random traffic over a small address universe ------------------------------------

// Addresses and ports that both the random rule sets and the random traffic
// draw from, so that rules are hit often.
struct Universe {
  std::vector<uint32_t> in_ports{1, 2, 3};
  std::vector<uint32_t> out_ports{1, 2, 3, 4, 5};  // port 5 does not exist (no_such_port)
  std::vector<uint32_t> ipv4{0x0a000001, 0x0a000002, 0x0a000003, 0x0a000104, 0x0a000105,
                             0x0a010006, 0x0a010107, 0xc0a80108};
  std::vector<uint8_t> ipv6_last{1, 2, 3, 4};
  std::vector<uint16_t> tp{53, 80, 443, 8080, 1000, 1001};
  std::vector<MacAddr> macs{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, {2, 0, 0, 0, 0, 3}};
};

struct FlowSpec {
  enum Kind { kTcp4, kUdp4, kIcmp4, kTcp6, kUdp6, kIcmp6, kArp, kVlanUdp4 } kind;
  uint32_t in_port;
  uint32_t src4, dst4;
  uint8_t src6, dst6;
  uint16_t sport, dport;
  MacAddr dl_src, dl_dst;
  uint8_t ttl;
};

template <typename T>
const T& pick(std::mt19937_64& rng, const std::vector<T>& v) {
  return v[rng() % v.size()];
}

inline FlowSpec random_flow(std::mt19937_64& rng, const Universe& u) {
  FlowSpec f;
  const int k = static_cast<int>(rng() % 100);
  f.kind = k < 30   ? FlowSpec::kTcp4
           : k < 55 ? FlowSpec::kUdp4
           : k < 63 ? FlowSpec::kIcmp4
           : k < 73 ? FlowSpec::kTcp6
           : k < 83 ? FlowSpec::kUdp6
           : k < 88 ? FlowSpec::kIcmp6
           : k < 93 ? FlowSpec::kArp
                    : FlowSpec::kVlanUdp4;
  f.in_port = pick(rng, u.in_ports);
  f.src4 = pick(rng, u.ipv4);
  f.dst4 = rng() % 8 == 0 ? static_cast<uint32_t>(rng()) : pick(rng, u.ipv4);
  f.src6 = pick(rng, u.ipv6_last);
  f.dst6 = pick(rng, u.ipv6_last);
  f.sport = rng() % 4 == 0 ? static_cast<uint16_t>(rng()) : pick(rng, u.tp);
  f.dport = pick(rng, u.tp);
  f.dl_src = pick(rng, u.macs);
  f.dl_dst = pick(rng, u.macs);
  f.ttl = rng() % 16 == 0 ? 1 : 64;  // some expire on dec_ttl
  return f;
}

inline std::vector<uint8_t> build_flow_frame(std::mt19937_64& rng, const FlowSpec& f) {
  std::vector<uint8_t> payload(rng() % 40);
  for (uint8_t& b : payload) b = static_cast<uint8_t>(rng());
  PacketBuilder pb;
  pb.eth(f.dl_src, f.dl_dst);
  switch (f.kind) {
    case FlowSpec::kTcp4: pb.ipv4(f.src4, f.dst4, f.ttl).tcp(f.sport, f.dport, kTcpAck); break;
    case FlowSpec::kUdp4: pb.ipv4(f.src4, f.dst4, f.ttl).udp(f.sport, f.dport); break;
    case FlowSpec::kIcmp4: pb.ipv4(f.src4, f.dst4, f.ttl).icmp(8, 0, 0x12340001); break;
    case FlowSpec::kTcp6: pb.ipv6(v6(f.src6), v6(f.dst6), f.ttl).tcp(f.sport, f.dport); break;
    case FlowSpec::kUdp6: pb.ipv6(v6(f.src6), v6(f.dst6), f.ttl).udp(f.sport, f.dport); break;
    case FlowSpec::kIcmp6: pb.ipv6(v6(f.src6), v6(f.dst6), f.ttl).icmpv6(128, 0, 7); break;
    case FlowSpec::kArp: pb.arp(1, f.dl_src, f.src4, MacAddr{}, f.dst4); break;
    case FlowSpec::kVlanUdp4:
      pb.vlan(10).ipv4(f.src4, f.dst4, f.ttl).udp(f.sport, f.dport);
      break;
  }
  if (f.kind != FlowSpec::kArp) pb.payload(payload);
  return pb.build();
}

// 'n' frames from 'n_flows' flows (skewed: low-numbered flows repeat more),
// with a few malformed ones (truncated anywhere, bad IPv4 header length).
// Timestamps start at 'ts0' and advance by 'step_ns'.
inline std::vector<Frame> random_traffic(std::mt19937_64& rng, const Universe& u, size_t n,
                                         size_t n_flows, uint64_t ts0 = 1000,
                                         uint64_t step_ns = 1000) {
  std::vector<FlowSpec> flows;
  for (size_t i = 0; i < n_flows; ++i) flows.push_back(random_flow(rng, u));
  std::vector<Frame> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // Square of a uniform draw: a skewed popularity.
    const double x = std::uniform_real_distribution<double>(0, 1)(rng);
    const FlowSpec& f = flows[std::min(flows.size() - 1, static_cast<size_t>(x * x * flows.size()))];
    std::vector<uint8_t> bytes = build_flow_frame(rng, f);
    const int damage = static_cast<int>(rng() % 100);
    if (damage < 3) {
      bytes.resize(rng() % bytes.size());  // truncated anywhere, even to 0 bytes
    } else if (damage < 5 && bytes.size() > 15 && bytes[12] == 0x08 && bytes[13] == 0x00) {
      bytes[14] = static_cast<uint8_t>(0x40 | (rng() % 5));  // IHL < 5
    }
    out.push_back(frame(f.in_port, std::move(bytes), ts0 + i * step_ns));
  }
  return out;
}

// ---- random multi-stage pipelines over packet fields ----------------------------------

struct PipelineSpec {
  // Services the pipeline may invoke, with the arguments to draw from.
  std::vector<std::pair<uint8_t, std::vector<uint32_t>>> services;
  int tables = 4;
  int max_rules = 12;         // per table
  int service_stages = 3;     // table 0 dispatches on sf_stage 0..service_stages
  // Percentage of table-0 service rules that match sf_action/sf_metadata
  // instead of sf_stage (valid pipelines, but the stage is then wildcarded).
  int stage_wildcard_pct = 0;
};

inline FieldMatch random_packet_field(std::mt19937_64& rng, const Universe& u) {
  switch (rng() % 9) {
    case 0: {
      const int len = std::array<int, 5>{8, 16, 24, 30, 32}[rng() % 5];
      return {Field::kNwDst, pick(rng, u.ipv4), prefix_mask(len)};
    }
    case 1: {
      const int len = std::array<int, 4>{8, 16, 24, 32}[rng() % 4];
      return {Field::kNwSrc, pick(rng, u.ipv4), prefix_mask(len)};
    }
    case 2: return {Field::kTpDst, pick(rng, u.tp), rng() % 3 ? 0xffffu : 0xff00u};
    case 3: return {Field::kTpSrc, pick(rng, u.tp), 0xffff};
    case 4: return {Field::kNwProto, std::array<uint64_t, 4>{6, 17, 1, 58}[rng() % 4], 0xff};
    case 5: return {Field::kDlType, std::array<uint64_t, 3>{0x0800, 0x86dd, 0x0806}[rng() % 3], 0xffff};
    case 6: return {Field::kInPort, pick(rng, u.in_ports), 0xffffffff};
    case 7: {
      const MacAddr& m = pick(rng, u.macs);
      uint64_t v = 0;
      for (uint8_t b : m) v = v << 8 | b;
      return {Field::kDlDst, v, rng() % 2 ? 0xffffffffffffULL : 0xffULL};
    }
    default: return {Field::kSfMetadata, rng() % 4, rng() % 2 ? 0xffffffffu : 0x1u};
  }
}

inline Action random_simple_action(std::mt19937_64& rng, const Universe& u) {
  switch (rng() % 10) {
    case 0: return set_field(Field::kNwDst, pick(rng, u.ipv4));
    case 1: return set_field(Field::kTpDst, pick(rng, u.tp));
    case 2: {
      uint64_t v = 0;
      for (uint8_t b : pick(rng, u.macs)) v = v << 8 | b;
      return set_field(Field::kDlDst, v);
    }
    case 3: return set_field(Field::kSfMetadata, rng() % 4);
    case 4: return Action::dec_ttl();
    case 5: return Action::output_in_port();
    default: return Action::output(pick(rng, u.out_ports));
  }
}

// A random but valid pipeline: table 0 dispatches by stage into services or
// into the later tables; later tables route on packet fields and metadata,
// rewrite fields, and sometimes invoke a service themselves.
inline std::vector<FlowRule> random_pipeline(std::mt19937_64& rng, const Universe& u,
                                             const PipelineSpec& spec) {
  std::vector<FlowRule> rules;
  auto random_service = [&]() {
    const auto& [id, args] = spec.services[rng() % spec.services.size()];
    return Action::softflow(id, args[rng() % args.size()]);
  };
  const int tables = std::max(2, spec.tables);
  // Table 0.
  for (int s = 0; s <= spec.service_stages; ++s) {
    const int n = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < n; ++i) {
      FlowRule r;
      r.table = 0;
      r.priority = static_cast<uint16_t>(100 + rng() % 50);
      const bool wildcard_stage = static_cast<int>(rng() % 100) < spec.stage_wildcard_pct;
      if (!wildcard_stage) {
        r.match.set_uint(Field::kSfStage, static_cast<uint64_t>(s), 0xff);
      } else if (!spec.services.empty()) {
        // Dispatch on the last service instead, ahead of the stage rules
        // (so lookups that hit it need not consult sf_stage at all).
        r.priority = static_cast<uint16_t>(r.priority + 100);
        r.match.set_uint(Field::kSfAction, spec.services[rng() % spec.services.size()].first, 0xff);
      }
      if (rng() % 2) {
        const FieldMatch fm = random_packet_field(rng, u);
        r.match.set_uint(fm.field, fm.value, fm.mask);
      }
      if (rng() % 4 == 0) r.actions.push_back(random_simple_action(rng, u));
      if (s < spec.service_stages && !spec.services.empty() && rng() % 4 != 0)
        r.actions.push_back(random_service());
      else
        r.actions.push_back(Action::goto_table(static_cast<uint8_t>(1 + rng() % (tables - 1))));
      rules.push_back(r);
    }
  }
  rules.push_back(rule(0, 1, Match{}, {Action::goto_table(1)}));
  // Later tables.
  for (int t = 1; t < tables; ++t) {
    const int n = 1 + static_cast<int>(rng() % spec.max_rules);
    for (int i = 0; i < n; ++i) {
      FlowRule r;
      r.table = static_cast<uint8_t>(t);
      r.priority = static_cast<uint16_t>(10 + rng() % 20);  // duplicates on purpose
      const int n_fields = static_cast<int>(rng() % 3);
      for (int f = 0; f < n_fields; ++f) {
        const FieldMatch fm = random_packet_field(rng, u);
        r.match.set_uint(fm.field, fm.value, fm.mask);
      }
      if (rng() % 5 == 0 && !spec.services.empty())
        r.match.set_uint(Field::kSfAction, spec.services[rng() % spec.services.size()].first, 0xff);
      const int n_actions = static_cast<int>(rng() % 3);
      for (int a = 0; a < n_actions; ++a) r.actions.push_back(random_simple_action(rng, u));
      const int end = static_cast<int>(rng() % 10);
      if (end < 3 && t + 1 < tables)
        r.actions.push_back(Action::goto_table(static_cast<uint8_t>(t + 1 + rng() % (tables - t - 1))));
      else if (end < 5 && !spec.services.empty())
        r.actions.push_back(random_service());
      rules.push_back(r);
    }
    rules.push_back(rule(static_cast<uint8_t>(t), 0, Match{}, {Action::output(pick(rng, u.out_ports))}));
  }
  return rules;
}

// The rule set of 'tables', in lookup order (re-adding in this order keeps
// the relative order of equal-priority rules).
inline std::vector<FlowRule> current_rules(const OpenFlowTables& tables) {
  std::vector<FlowRule> out;
  for (const OpenFlowTables::Rule* r : tables.rules()) out.push_back(r->flow);
  return out;
}

}  // namespace softflow::test

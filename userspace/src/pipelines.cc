#include "softflow/pipelines.h"

#include <algorithm>
#include <cctype>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>

#include "softflow/flow_syntax.h"
#include "softflow/packet_builder.h"

namespace softflow {

namespace {

namespace T = pipeline_table;

constexpr uint32_t prefix_mask(int len) {
  return len <= 0 ? 0u : len >= 32 ? ~0u : ~0u << (32 - len);
}

std::string ipv4_text(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xff) + "." +
         std::to_string((a >> 8) & 0xff) + "." + std::to_string(a & 0xff);
}

std::string mac_text(uint64_t m) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x",
                static_cast<unsigned>(m >> 40 & 0xff), static_cast<unsigned>(m >> 32 & 0xff),
                static_cast<unsigned>(m >> 24 & 0xff), static_cast<unsigned>(m >> 16 & 0xff),
                static_cast<unsigned>(m >> 8 & 0xff), static_cast<unsigned>(m & 0xff));
  return buf;
}

// One independent random stream per part of a pipeline, so that changing
// one table's size leaves the others' contents as they were.  splitmix64
// spreads (seed, part) over the Mersenne Twister's seed.
std::mt19937_64 stream(uint64_t seed, uint64_t part) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (part + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return std::mt19937_64(z ^ (z >> 31));
}
enum Part : uint64_t { kPartIngressL2 = 1, kPartL3, kPartAcl, kPartOutputL2 };

struct Cidr {
  uint32_t addr = 0;
  int len = 0;
};

// "a.b.c.d/len" or "a.b.c.d" (a /32).
Result<Cidr> parse_cidr(std::string_view text) {
  Cidr c;
  const auto bad = [&] {
    return Status::error("bad client CIDR '" + std::string(text) + "' (expected a.b.c.d/len)");
  };
  size_t pos = 0;
  auto number = [&](uint32_t max) -> std::optional<uint32_t> {
    uint32_t v = 0;
    const size_t start = pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) &&
           pos - start < 3)
      v = v * 10 + static_cast<uint32_t>(text[pos++] - '0');
    if (pos == start || v > max) return std::nullopt;
    return v;
  };
  for (int i = 0; i < 4; ++i) {
    if (i > 0 && (pos >= text.size() || text[pos++] != '.')) return bad();
    const auto octet = number(255);
    if (!octet) return bad();
    c.addr = c.addr << 8 | *octet;
  }
  c.len = 32;
  if (pos < text.size()) {
    if (text[pos++] != '/') return bad();
    const auto len = number(32);
    if (!len) return bad();
    c.len = static_cast<int>(*len);
  }
  if (pos != text.size()) return bad();
  c.addr &= prefix_mask(c.len);
  return c;
}

// Distinct random unicast MACs (locally administered, so they cannot be a
// real vendor's).
std::vector<uint64_t> random_macs(std::mt19937_64& rng, int n) {
  std::vector<uint64_t> macs;
  std::set<uint64_t> seen;
  while (static_cast<int>(macs.size()) < n) {
    uint64_t m = rng() & 0xffffffffffffULL;
    m = (m & ~(0x03ULL << 40)) | (0x02ULL << 40);  // unicast, locally administered
    if (seen.insert(m).second) macs.push_back(m);
  }
  return macs;
}

struct Route {
  uint32_t prefix;
  int len;
  uint64_t next_hop;
};

// Distinct random prefixes with next-hop MACs drawn from 'next_hops' (the
// output L2 table's addresses, so forwarded packets hit it).  Half are of
// lengths 8..32 anywhere; the other half fall inside the traces' networks
// (clients 10.0.0.0/8, servers 172.16.0.0/12), with lengths from the
// network's to 32: random tables only make megaflow masks specific where
// traffic meets them, and a table the traffic never gets near would leave
// the classifier nothing to do.
std::vector<Route> random_routes(std::mt19937_64& rng, int n,
                                 const std::vector<uint64_t>& next_hops) {
  struct Net {
    uint32_t addr;
    int len;
  };
  static constexpr Net kTrafficNets[] = {{0x0a000000u, 8}, {0xac100000u, 12}};
  std::vector<Route> routes;
  std::set<std::pair<uint32_t, int>> seen;
  while (static_cast<int>(routes.size()) < n) {
    int len;
    uint32_t prefix;
    if (rng() % 2 == 0) {
      len = 8 + static_cast<int>(rng() % 25);
      prefix = static_cast<uint32_t>(rng()) & prefix_mask(len);
    } else {
      const Net& net = kTrafficNets[rng() % std::size(kTrafficNets)];
      len = net.len + static_cast<int>(rng() % static_cast<uint64_t>(33 - net.len));
      prefix =
          (net.addr | (static_cast<uint32_t>(rng()) & ~prefix_mask(net.len))) & prefix_mask(len);
    }
    const uint64_t hop = next_hops.empty() ? (rng() & 0xfcffffffffffULL) | 0x020000000000ULL
                                           : next_hops[rng() % next_hops.size()];
    if (seen.insert({prefix, len}).second) routes.push_back({prefix, len, hop});
  }
  return routes;
}

// Accumulates the flow file.
class FlowWriter {
 public:
  void comment(const std::string& text) { out_ += "# " + text + "\n"; }
  void blank() { out_ += "\n"; }
  void rule(uint8_t table, int priority, const std::string& match, const std::string& actions) {
    out_ += "table=" + std::to_string(table) + ",priority=" + std::to_string(priority);
    if (!match.empty()) out_ += "," + match;
    out_ += ",actions=" + actions + "\n";
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Everything the tables are made of, drawn up front from the seed.
struct Ingredients {
  Cidr clients;
  std::vector<uint64_t> ingress_macs;  // table 0 stage-0 dl_dst rules
  std::vector<uint64_t> output_macs;   // table 5 dl_dst rules
  std::vector<Route> routes;           // table 1
  uint64_t default_next_hop = 0;
  std::vector<AclRule> acl;  // table 2, in priority order
  std::string acl_description;
  std::string output_action;  // "in_port" or "output:N"
};

Status check_options(const PipelineOptions& o) {
  constexpr int kMaxTableRules = 1'000'000;
  // ACL rules take priorities 2..n+1 under the ARP bypass; keep them below
  // the 16-bit priority limit.
  constexpr int kMaxAclRules = 65'000;
  if (o.l2_rules < 0 || o.l2_rules > kMaxTableRules)
    return Status::error("L2 rules must be 0.." + std::to_string(kMaxTableRules));
  if (o.l3_rules < 0 || o.l3_rules > kMaxTableRules)
    return Status::error("L3 rules must be 0.." + std::to_string(kMaxTableRules));
  if (o.acl_rules < 0 || o.acl_rules > kMaxAclRules)
    return Status::error("ACL rules must be 0.." + std::to_string(kMaxAclRules));
  if (o.stages < 0 || o.stages > kMaxNoopStages)
    return Status::error("noop stages must be 0.." + std::to_string(kMaxNoopStages) +
                         " (the datapath drops packets at sf_stage " +
                         std::to_string(SF_MAX_STAGES) + ")");
  if (o.acl_source && o.acl_source->empty()) return Status::error("the ACL source has no rules");
  if (o.role != BlackBoxRole::kWhole) {
    const std::string role = blackbox_role_name(o.role);
    if (o.kind == PipelineKind::kD || o.kind == PipelineKind::kM)
      return Status::error("the black-box split (" + role + ") exists for pipelines A, B and C");
    if (o.role == BlackBoxRole::kAes && o.kind != PipelineKind::kB)
      return Status::error("the aes VM is part of pipeline B only");
    if (o.role == BlackBoxRole::kBalancer && o.kind != PipelineKind::kC)
      return Status::error("the balancer VM is part of pipeline C only");
  }
  return Status::ok();
}

Result<Ingredients> draw(const PipelineOptions& o) {
  Ingredients in;
  auto clients = parse_cidr(o.client_cidr);
  if (!clients) return clients.status();
  in.clients = *clients;
  in.output_action = o.output_port ? "output:" + std::to_string(*o.output_port) : "in_port";

  const bool firewall =
      o.kind == PipelineKind::kA || o.kind == PipelineKind::kB || o.kind == PipelineKind::kC;
  if (firewall) {
    std::mt19937_64 l2 = stream(o.seed, kPartIngressL2);
    in.ingress_macs = random_macs(l2, o.l2_rules);
    std::mt19937_64 out = stream(o.seed, kPartOutputL2);
    in.output_macs = random_macs(out, o.l2_rules);
  }
  std::mt19937_64 l3 = stream(o.seed, kPartL3);
  in.routes = random_routes(l3, o.l3_rules, in.output_macs);
  in.default_next_hop = random_macs(l3, 1).front();

  if (firewall) {
    const uint64_t acl_seed = stream(o.seed, kPartAcl)();
    const size_t n = static_cast<size_t>(o.acl_rules);
    if (!o.acl_source) {
      in.acl = generate_acl(n, acl_seed);
      in.acl_description = "generated (ClassBench acl1 style)";
    } else {
      const std::vector<AclRule>& all = *o.acl_source;
      if (o.acl_first)
        in.acl.assign(all.begin(), all.begin() + static_cast<ptrdiff_t>(std::min(n, all.size())));
      else
        in.acl = sample_acl(all, n, acl_seed);
      in.acl_description =
          (o.acl_source_name.empty() ? std::string("given ClassBench rules") : o.acl_source_name) +
          " (" + std::to_string(all.size()) + " rules; " +
          (o.acl_first ? "the first " : "a seeded sample of ") + std::to_string(in.acl.size()) +
          " kept in file order)";
    }
  }
  return in;
}

void write_header(FlowWriter& w, const PipelineOptions& o, const Ingredients& in) {
  w.comment(std::string("SoftFlow Pipeline ") + pipeline_name(o.kind) +
            " (EVALUATION.md \"Pipelines\", paper section 7.2)");
  w.comment(
      "generated by sf-pipegen (userspace/src/pipelines.cc); the same options give this file");
  std::string opts = "seed=" + std::to_string(o.seed);
  switch (o.kind) {
    case PipelineKind::kA:
    case PipelineKind::kB:
    case PipelineKind::kC:
      opts += " l2-rules=" + std::to_string(o.l2_rules) +
              " l3-rules=" + std::to_string(o.l3_rules) +
              " acl-rules=" + std::to_string(o.acl_rules) + " client=" + o.client_cidr;
      break;
    case PipelineKind::kD:
      opts += " stages=" + std::to_string(o.stages) + " l3-rules=" + std::to_string(o.l3_rules);
      break;
    case PipelineKind::kM:
      opts += " memload=" + std::to_string(o.memload) + " l3-rules=" + std::to_string(o.l3_rules);
      break;
  }
  opts += " output=" + in.output_action;
  if (o.role != BlackBoxRole::kWhole)
    opts += std::string(" blackbox=") + blackbox_role_name(o.role);
  w.comment(opts);
  if (!in.acl_description.empty()) w.comment("ACL: " + in.acl_description);
  for (const std::string& line : o.header) w.comment(line);
  w.blank();
}

// ---- tables --------------------------------------------------------------------

void write_ingress_l2(FlowWriter& w, const Ingredients& in) {
  w.comment("table 0, stage 0: ingress L2.  Every rule goes to the L3 table, the random ones as");
  w.comment("the default does: they are there because random tables make megaflow masks as");
  w.comment("specific as they get (the paper's worst case), not to steer packets.");
  for (uint64_t m : in.ingress_macs)
    w.rule(T::kIngress, 100, "sf_stage=0,dl_dst=" + mac_text(m),
           "goto_table:" + std::to_string(T::kL3));
  w.rule(T::kIngress, 0, "sf_stage=0", "goto_table:" + std::to_string(T::kL3));
  w.blank();
}

// 'then' follows each route's next-hop rewrite: a goto (A-C) or the output
// (D, M).  'non_ip' (A-C) lets ARP and IPv6 on to the ACL table unchanged.
void write_l3(FlowWriter& w, const Ingredients& in, const std::string& then, bool non_ip) {
  w.comment("table 1: L3, random IPv4 prefixes; priority = prefix length, so the longest wins");
  for (const Route& r : in.routes)
    w.rule(T::kL3, r.len, "ip,nw_dst=" + ipv4_text(r.prefix) + "/" + std::to_string(r.len),
           "mod_dl_dst:" + mac_text(r.next_hop) + "," + then);
  w.rule(T::kL3, 1, "ip", "mod_dl_dst:" + mac_text(in.default_next_hop) + "," + then);
  if (non_ip) w.rule(T::kL3, 0, "", then);
  w.blank();
}

Status write_acl(FlowWriter& w, const Ingredients& in) {
  const int n = static_cast<int>(in.acl.size());
  w.comment("table 2: the firewall's ACL (paper Figure 4).  ARP bypasses the firewall; each ACL");
  w.comment("rule, in order (earlier = higher priority; port ranges expanded into masked");
  w.comment("matches), lets conntrack create connections; the clients may open connections;");
  w.comment("everything else passes only as part of a tracked connection (conntrack:0).");
  w.rule(T::kAcl, n + 2, "arp", "goto_table:" + std::to_string(T::kOutputL2));
  for (int i = 0; i < n; ++i) {
    auto matches = acl_matches(in.acl[static_cast<size_t>(i)]);
    if (!matches)
      return Status::error("ACL rule " + std::to_string(i + 1) + " (" +
                           format_classbench(in.acl[static_cast<size_t>(i)]) +
                           "): " + matches.error());
    for (const std::string& m : *matches) w.rule(T::kAcl, n + 1 - i, m, "softflow:conntrack:1");
  }
  std::string clients = "ip";
  if (in.clients.len > 0)
    clients += ",nw_src=" + ipv4_text(in.clients.addr) + "/" + std::to_string(in.clients.len);
  w.rule(T::kAcl, 1, clients, "softflow:conntrack:1");
  w.rule(T::kAcl, 0, "", "softflow:conntrack:0");
  w.blank();
  return Status::ok();
}

void write_output_l2(FlowWriter& w, const Ingredients& in) {
  w.comment("table 5: output L2, random dl_dst rules and a default, all out " + in.output_action);
  for (uint64_t m : in.output_macs)
    w.rule(T::kOutputL2, 100, "dl_dst=" + mac_text(m), in.output_action);
  w.rule(T::kOutputL2, 0, "", in.output_action);
  w.blank();
}

// Pipeline B: O.a.b.c -> 10.O.b.c, one rule per first octet O: the 256 /8s land
// in distinct 10.O.0.0/16 blocks.  Stateless and lossy (a is dropped): a
// benchmark NAT that keys on nw_dst, not a reversible translation.
void write_nat(FlowWriter& w) {
  w.comment(
      "table 3: stateless NAT into 10.0.0.0/8: O.a.b.c -> 10.O.b.c (256 rules on the first octet)");
  for (int octet = 0; octet < 256; ++octet)
    w.rule(T::kNat, 100, "ip,nw_dst=" + std::to_string(octet) + ".0.0.0/8",
           "set_field:10." + std::to_string(octet) +
               ".0.0/255.255.0.0->nw_dst,goto_table:" + std::to_string(T::kOutputL2));
  w.rule(T::kNat, 0, "", "goto_table:" + std::to_string(T::kOutputL2));
  w.blank();
}

void write_backends(FlowWriter& w) {
  w.comment("table 4: backend L3, a route per load-balancer backend");
  for (int b = 0; b < kBalancerBuckets; ++b)
    w.rule(T::kBackendL3, 32, "ip,nw_dst=" + ipv4_text(balancer_backend_ip(b)),
           "goto_table:" + std::to_string(T::kOutputL2));
  w.rule(T::kBackendL3, 0, "", "goto_table:" + std::to_string(T::kOutputL2));
  w.blank();
}

// Table 0 after the services (every packet re-enters table 0 with sf_stage
// incremented and sf_action set): Figure 4's two post-conntrack rules, with
// the pass rule leading to what follows the firewall in each pipeline.
void write_post_services(FlowWriter& w, PipelineKind kind, const Cidr& clients) {
  const std::string out_l2 = "goto_table:" + std::to_string(T::kOutputL2);
  w.comment("table 0, after the services");
  if (kind == PipelineKind::kC) {
    // The balancer spreads the clients' connections over the backends; what
    // comes back from the servers passes the firewall and leaves as it is.
    std::string from_clients = "sf_stage=1,sf_action=conntrack,sf_metadata=1,ip";
    if (clients.len > 0)
      from_clients += ",nw_src=" + ipv4_text(clients.addr) + "/" + std::to_string(clients.len);
    w.rule(T::kIngress, 110, from_clients, "softflow:balancer:0");
  }
  w.rule(T::kIngress, 100, "sf_stage=1,sf_action=conntrack,sf_metadata=1",
         kind == PipelineKind::kB ? "softflow:aes:1" : out_l2);
  w.rule(T::kIngress, 100, "sf_stage=1,sf_action=conntrack,sf_metadata=0", "drop");
  if (kind == PipelineKind::kB) {
    w.rule(T::kIngress, 100, "sf_stage=2,sf_action=aes,sf_metadata=1",
           "goto_table:" + std::to_string(T::kNat));
    w.rule(T::kIngress, 100, "sf_stage=2,sf_action=aes,sf_metadata=0", "drop");
  }
  if (kind == PipelineKind::kC) {
    // Bucket -> backend (destination MAC and IP), then the backend routes.
    for (int b = 0; b < kBalancerBuckets; ++b)
      w.rule(T::kIngress, 100,
             "sf_stage=2,sf_action=balancer,sf_metadata=" + std::to_string(b) + ",ip",
             "mod_dl_dst:" + mac_text(balancer_backend_mac(b)) +
                 ",mod_nw_dst:" + ipv4_text(balancer_backend_ip(b)) +
                 ",goto_table:" + std::to_string(T::kBackendL3));
  }
  w.blank();
}

Result<std::string> firewall_pipeline(const PipelineOptions& o, const Ingredients& in) {
  FlowWriter w;
  write_header(w, o, in);
  write_ingress_l2(w, in);
  write_post_services(w, o.kind, in.clients);
  write_l3(w, in, "goto_table:" + std::to_string(T::kAcl), true);
  if (Status s = write_acl(w, in); !s) return s;
  if (o.kind == PipelineKind::kB) write_nat(w);
  if (o.kind == PipelineKind::kC) write_backends(w);
  write_output_l2(w, in);
  return w.take();
}

// ---- the black-box split (paper Figure 5) ---------------------------------------

std::string port_text(uint32_t port) { return "output:" + std::to_string(port); }

// The stateless part: L2/L3 towards the firewall VM, and what follows each VM.
Result<std::string> blackbox_hypervisor(const PipelineOptions& o, Ingredients in) {
  const std::string out_l2 = "goto_table:" + std::to_string(T::kOutputL2);
  in.output_action = port_text(o.output_port.value_or(kBlackBoxUplink));
  FlowWriter w;
  write_header(w, o, in);
  w.comment("table 0: packets coming back from the VMs");
  const std::string from_fw = "in_port=" + std::to_string(kBlackBoxFirewallPort);
  const std::string from_second = "in_port=" + std::to_string(kBlackBoxSecondPort);
  switch (o.kind) {
    case PipelineKind::kB:
      w.rule(T::kIngress, 200, from_fw, port_text(kBlackBoxSecondPort));
      w.rule(T::kIngress, 200, from_second, "goto_table:" + std::to_string(T::kNat));
      break;
    case PipelineKind::kC: {
      std::string clients = from_fw + ",ip";
      if (in.clients.len > 0)
        clients += ",nw_src=" + ipv4_text(in.clients.addr) + "/" + std::to_string(in.clients.len);
      w.rule(T::kIngress, 210, clients, port_text(kBlackBoxSecondPort));
      w.rule(T::kIngress, 200, from_fw, out_l2);
      w.rule(T::kIngress, 200, from_second, "goto_table:" + std::to_string(T::kBackendL3));
      break;
    }
    default:
      w.rule(T::kIngress, 200, from_fw, out_l2);
      break;
  }
  w.blank();
  write_ingress_l2(w, in);
  write_l3(w, in, "goto_table:" + std::to_string(T::kAcl), true);
  w.comment("table 2: everything but ARP to the firewall VM");
  w.rule(T::kAcl, 1, "arp", out_l2);
  w.rule(T::kAcl, 0, "", port_text(kBlackBoxFirewallPort));
  w.blank();
  if (o.kind == PipelineKind::kB) write_nat(w);
  if (o.kind == PipelineKind::kC) write_backends(w);
  write_output_l2(w, in);
  return w.take();
}

// A VM: its middlebox, then back out the port the packet came in on.
Result<std::string> blackbox_vm(const PipelineOptions& o, Ingredients in) {
  in.output_action = "in_port";
  FlowWriter w;
  write_header(w, o, in);
  w.comment(std::string("the ") + blackbox_role_name(o.role) +
            " VM: every packet leaves by the port it came in on");
  switch (o.role) {
    case BlackBoxRole::kFirewall:
      w.rule(T::kIngress, 100, "sf_stage=0", "goto_table:" + std::to_string(T::kAcl));
      w.rule(T::kIngress, 100, "sf_stage=1,sf_action=conntrack,sf_metadata=1", "in_port");
      w.rule(T::kIngress, 100, "sf_stage=1,sf_action=conntrack,sf_metadata=0", "drop");
      w.blank();
      if (Status s = write_acl(w, in); !s) return s;
      w.rule(T::kOutputL2, 0, "", "in_port");
      break;
    case BlackBoxRole::kAes:
      w.rule(T::kIngress, 100, "sf_stage=0,ip", "softflow:aes:1");
      w.rule(T::kIngress, 0, "sf_stage=0", "in_port");
      w.rule(T::kIngress, 100, "sf_stage=1,sf_action=aes,sf_metadata=1", "in_port");
      w.rule(T::kIngress, 100, "sf_stage=1,sf_action=aes,sf_metadata=0", "drop");
      break;
    case BlackBoxRole::kBalancer:
      w.rule(T::kIngress, 100, "sf_stage=0,ip", "softflow:balancer:0");
      w.rule(T::kIngress, 0, "sf_stage=0", "in_port");
      for (int b = 0; b < kBalancerBuckets; ++b)
        w.rule(T::kIngress, 100,
               "sf_stage=1,sf_action=balancer,sf_metadata=" + std::to_string(b) + ",ip",
               "mod_dl_dst:" + mac_text(balancer_backend_mac(b)) +
                   ",mod_nw_dst:" + ipv4_text(balancer_backend_ip(b)) + ",in_port");
      break;
    default:
      return Status::error("not a VM role");
  }
  w.blank();
  return w.take();
}

std::string noop_pipeline(const PipelineOptions& o, const Ingredients& in) {
  FlowWriter w;
  write_header(w, o, in);
  w.comment("table 0: " + std::to_string(o.stages) + " noop stages, then L3");
  for (int s = 0; s < o.stages; ++s)
    w.rule(T::kIngress, 100, "sf_stage=" + std::to_string(s) + ",ip",
           "softflow:noop:" + std::to_string(s));
  w.rule(T::kIngress, 100, "sf_stage=" + std::to_string(o.stages) + ",ip",
         "goto_table:" + std::to_string(T::kL3));
  w.blank();
  write_l3(w, in, in.output_action, false);
  return w.take();
}

std::string memload_pipeline(const PipelineOptions& o, const Ingredients& in) {
  FlowWriter w;
  write_header(w, o, in);
  w.comment("table 0: memload (" + std::to_string(o.memload) +
            " random reads per packet), then L3");
  w.rule(T::kIngress, 100, "sf_stage=0,ip", "softflow:memload:" + std::to_string(o.memload));
  w.rule(T::kIngress, 100, "sf_stage=1,sf_action=memload", "goto_table:" + std::to_string(T::kL3));
  w.blank();
  write_l3(w, in, in.output_action, false);
  return w.take();
}

}  // namespace

const char* pipeline_name(PipelineKind kind) {
  switch (kind) {
    case PipelineKind::kA:
      return "A";
    case PipelineKind::kB:
      return "B";
    case PipelineKind::kC:
      return "C";
    case PipelineKind::kD:
      return "D";
    case PipelineKind::kM:
      return "M";
  }
  return "?";
}

std::optional<PipelineKind> pipeline_kind(std::string_view name) {
  if (name.size() != 1) return std::nullopt;
  switch (std::toupper(static_cast<unsigned char>(name[0]))) {
    case 'A':
      return PipelineKind::kA;
    case 'B':
      return PipelineKind::kB;
    case 'C':
      return PipelineKind::kC;
    case 'D':
      return PipelineKind::kD;
    case 'M':
      return PipelineKind::kM;
    default:
      return std::nullopt;
  }
}

const char* blackbox_role_name(BlackBoxRole role) {
  switch (role) {
    case BlackBoxRole::kWhole:
      return "whole";
    case BlackBoxRole::kHypervisor:
      return "hypervisor";
    case BlackBoxRole::kFirewall:
      return "firewall";
    case BlackBoxRole::kAes:
      return "aes";
    case BlackBoxRole::kBalancer:
      return "balancer";
  }
  return "?";
}

std::optional<BlackBoxRole> blackbox_role(std::string_view name) {
  for (BlackBoxRole r : {BlackBoxRole::kWhole, BlackBoxRole::kHypervisor, BlackBoxRole::kFirewall,
                         BlackBoxRole::kAes, BlackBoxRole::kBalancer})
    if (name == blackbox_role_name(r)) return r;
  return std::nullopt;
}

uint32_t balancer_backend_ip(int bucket) {
  return 0xc0a86400u + 10u + static_cast<uint32_t>(bucket);
}
uint64_t balancer_backend_mac(int bucket) {
  return 0x02be00000000ULL | static_cast<uint64_t>(bucket);
}

Result<std::string> pipeline_flows(const PipelineOptions& options) {
  if (Status s = check_options(options); !s) return s;
  auto in = draw(options);
  if (!in) return in.status();
  switch (options.kind) {
    case PipelineKind::kD:
      return noop_pipeline(options, *in);
    case PipelineKind::kM:
      return memload_pipeline(options, *in);
    default:
      break;
  }
  switch (options.role) {
    case BlackBoxRole::kWhole:
      return firewall_pipeline(options, *in);
    case BlackBoxRole::kHypervisor:
      return blackbox_hypervisor(options, std::move(*in));
    default:
      return blackbox_vm(options, std::move(*in));
  }
}

Result<std::vector<FlowRule>> pipeline_rules(const PipelineOptions& options) {
  auto text = pipeline_flows(options);
  if (!text) return text.status();
  auto rules = parse_flows(*text);
  if (!rules)
    return Status::error(std::string("Pipeline ") + pipeline_name(options.kind) + ": " +
                         rules.error());
  return rules;
}

std::vector<FlowRule> pipeline_d(int stages, uint64_t seed, int routes, uint32_t out_port) {
  PipelineOptions o;
  o.kind = PipelineKind::kD;
  o.seed = seed;
  o.stages = stages;
  o.l3_rules = routes;
  o.output_port = out_port;
  auto rules = pipeline_rules(o);
  if (!rules) throw std::logic_error(rules.error());
  return std::move(rules.value());
}

std::vector<Frame> udp_traffic(const TrafficSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  struct Tuple {
    uint32_t src, dst;
    uint16_t sport, dport;
  };
  std::vector<Tuple> tuples(std::max<size_t>(1, spec.flows));
  for (Tuple& t : tuples)
    t = {0x0a000000u | static_cast<uint32_t>(rng() & 0xffffff), static_cast<uint32_t>(rng()),
         static_cast<uint16_t>(1024 + rng() % 60000), static_cast<uint16_t>(1 + rng() % 1023)};
  std::vector<Frame> frames;
  frames.reserve(spec.packets);
  const size_t headers = 14 + 20 + 8;
  const size_t frame_size = std::max<size_t>(spec.frame_size, 60);
  const std::vector<uint8_t> payload(frame_size > headers ? frame_size - headers : 0, 0x5a);
  for (size_t i = 0; i < spec.packets; ++i) {
    const Tuple& t = tuples[rng() % tuples.size()];
    Frame f;
    f.port = spec.in_port;
    f.timestamp_ns = 1'000'000'000ULL + i * 1000;
    f.bytes = PacketBuilder()
                  .eth(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
                  .ipv4(t.src, t.dst, 64)
                  .udp(t.sport, t.dport)
                  .payload(payload)
                  .build();
    frames.push_back(std::move(f));
  }
  return frames;
}

}  // namespace softflow

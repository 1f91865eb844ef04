// The evaluation's pipelines (softflow/pipelines.h): flow text that parses,
// rule counts per table, determinism per seed, and a Switch running each
// pipeline on a TCP handshake (forwarded back out the input port) and, for
// the firewall, on an unsolicited SYN from a server (dropped).  Also the
// sf-pipegen tool and scripts/gen-pipelines.sh.
#include "softflow/pipelines.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "softflow/acl.h"
#include "softflow/flow_syntax.h"
#include "softflow/parse.h"
#include "test_util.h"

namespace softflow {
namespace {

namespace T = pipeline_table;
using test::test_seed;

const std::vector<PipelineKind> kAllKinds = {PipelineKind::kA, PipelineKind::kB, PipelineKind::kC,
                                             PipelineKind::kD, PipelineKind::kM};

PipelineOptions small(PipelineKind kind, uint64_t seed) {
  PipelineOptions o;
  o.kind = kind;
  o.seed = seed;
  o.l2_rules = 40;
  o.l3_rules = 50;
  o.acl_rules = 30;
  o.stages = 3;
  o.memload = 5;
  return o;
}

std::vector<FlowRule> rules_of(const PipelineOptions& o) {
  auto rules = pipeline_rules(o);
  EXPECT_TRUE(rules) << rules.error();
  return rules ? std::move(rules.value()) : std::vector<FlowRule>{};
}

std::map<int, size_t> per_table(const std::vector<FlowRule>& rules) {
  std::map<int, size_t> n;
  for (const FlowRule& r : rules) ++n[r.table];
  return n;
}

std::set<uint16_t> priorities(const std::vector<FlowRule>& rules, uint8_t table) {
  std::set<uint16_t> out;
  for (const FlowRule& r : rules)
    if (r.table == table) out.insert(r.priority);
  return out;
}

// Flow rules the ACL table gets from these ACL rules.
size_t expanded(const std::vector<AclRule>& acl) {
  size_t n = 0;
  for (const AclRule& r : acl) {
    auto m = acl_matches(r);
    EXPECT_TRUE(m) << m.error();
    if (m) n += m->size();
  }
  return n;
}

// ---- text ---------------------------------------------------------------------------------

TEST(PipelineText, DeterministicPerSeedAndDifferentAcrossSeeds) {
  const uint64_t seed = test_seed(1);
  for (PipelineKind kind : kAllKinds) {
    auto a = pipeline_flows(small(kind, seed));
    auto again = pipeline_flows(small(kind, seed));
    auto other = pipeline_flows(small(kind, seed + 1));
    ASSERT_TRUE(a && again && other) << pipeline_name(kind);
    EXPECT_EQ(*a, *again) << pipeline_name(kind);
    EXPECT_NE(*a, *other) << pipeline_name(kind);
  }
}

TEST(PipelineText, HeaderNamesGeneratorSeedAndOptions) {
  PipelineOptions o = small(PipelineKind::kA, 1234);
  o.header.push_back("command: sf-pipegen --pipeline A");
  auto text = pipeline_flows(o);
  ASSERT_TRUE(text) << text.error();
  const std::string head = text->substr(0, text->find("\n\n"));
  for (const char* want : {"# SoftFlow Pipeline A", "sf-pipegen", "seed=1234", "l2-rules=40",
                           "l3-rules=50", "acl-rules=30", "client=10.0.0.0/8", "output=in_port",
                           "ACL: generated", "# command: sf-pipegen --pipeline A"})
    EXPECT_NE(head.find(want), std::string::npos) << want << " not in\n" << head;
  // Every line is a comment, blank, or a rule.
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);)
    EXPECT_TRUE(line.empty() || line[0] == '#' || line.rfind("table=", 0) == 0) << line;
}

// Changing one table's size leaves the other tables as they were (each
// draws from its own stream), so sweeps over one parameter compare like
// with like.
TEST(PipelineText, TablesDrawFromIndependentStreams) {
  PipelineOptions a = small(PipelineKind::kA, 9);
  PipelineOptions b = a;
  b.l3_rules = 80;
  const std::vector<FlowRule> ra = rules_of(a), rb = rules_of(b);
  for (uint8_t t : {T::kIngress, T::kOutputL2}) {
    std::vector<FlowRule> ta, tb;
    for (const FlowRule& r : ra)
      if (r.table == t) ta.push_back(r);
    for (const FlowRule& r : rb)
      if (r.table == t) tb.push_back(r);
    EXPECT_EQ(ta, tb) << "table " << int(t);
  }
}

TEST(PipelineText, BadOptionsAreErrors) {
  const std::vector<std::pair<std::function<void(PipelineOptions&)>, std::string>> cases = {
      {[](PipelineOptions& o) { o.client_cidr = "10.0.0/8"; }, "client CIDR"},
      {[](PipelineOptions& o) { o.client_cidr = "10.0.0.0/33"; }, "client CIDR"},
      {[](PipelineOptions& o) { o.client_cidr = "10.0.0.0/8x"; }, "client CIDR"},
      {[](PipelineOptions& o) { o.stages = kMaxNoopStages + 1; }, "noop stages"},
      {[](PipelineOptions& o) { o.stages = -1; }, "noop stages"},
      {[](PipelineOptions& o) { o.acl_rules = 70000; }, "ACL rules"},
      {[](PipelineOptions& o) { o.l2_rules = -1; }, "L2 rules"},
      {[](PipelineOptions& o) { o.acl_source = std::vector<AclRule>{}; }, "no rules"},
  };
  for (const auto& [change, want] : cases) {
    PipelineOptions o = small(PipelineKind::kA, 1);
    change(o);
    auto text = pipeline_flows(o);
    ASSERT_FALSE(text) << want;
    EXPECT_NE(text.error().find(want), std::string::npos) << text.error();
  }
}

// ---- parsed rules and counts per table ----------------------------------------------

// Pipeline A at the paper's sizes (500 per table), with the generated ACL.
TEST(PipelineRules, PipelineAAtPaperSizes) {
  PipelineOptions o;
  o.kind = PipelineKind::kA;
  o.seed = test_seed(2);
  const std::vector<FlowRule> rules = rules_of(o);
  const auto n = per_table(rules);
  EXPECT_EQ(n.at(T::kIngress), 500u + 1 + 2);  // L2, default, two post-conntrack rules
  EXPECT_EQ(n.at(T::kL3), 500u + 2);           // prefixes, IPv4 default, non-IP default
  // Every ACL rule has its own priority (its expansions share it), plus the
  // ARP bypass, the client rule and the default.
  EXPECT_EQ(priorities(rules, T::kAcl).size(), 500u + 3);
  EXPECT_GE(n.at(T::kAcl), 500u + 3);
  EXPECT_EQ(n.at(T::kOutputL2), 500u + 1);
  EXPECT_EQ(n.count(T::kNat) + n.count(T::kBackendL3), 0u);
  // The L3 prefixes are distinct and their priority is their length.
  std::set<std::pair<uint32_t, uint32_t>> prefixes;
  for (const FlowRule& r : rules) {
    if (r.table != T::kL3 || r.priority < 8) continue;
    const uint32_t mask = static_cast<uint32_t>(get_field_uint(r.match.mask, Field::kNwDst));
    EXPECT_EQ(mask, test::prefix_mask(r.priority));
    prefixes.insert({static_cast<uint32_t>(get_field_uint(r.match.value, Field::kNwDst)), mask});
  }
  EXPECT_EQ(prefixes.size(), 500u);
}

TEST(PipelineRules, CountsPerTableForEveryKind) {
  const uint64_t seed = test_seed(3);
  for (PipelineKind kind : kAllKinds) {
    const PipelineOptions o = small(kind, seed);
    const std::vector<FlowRule> rules = rules_of(o);
    ASSERT_FALSE(rules.empty()) << pipeline_name(kind);
    const auto n = per_table(rules);
    const size_t l2 = static_cast<size_t>(o.l2_rules), l3 = static_cast<size_t>(o.l3_rules);
    switch (kind) {
      case PipelineKind::kA:
        EXPECT_EQ(n.at(T::kIngress), l2 + 1 + 2);
        break;
      case PipelineKind::kB:
        EXPECT_EQ(n.at(T::kIngress), l2 + 1 + 4);  // + aes pass/fail
        EXPECT_EQ(n.at(T::kNat), 256u + 1);
        break;
      case PipelineKind::kC:
        EXPECT_EQ(n.at(T::kIngress), l2 + 1 + 3 + kBalancerBuckets);  // + clients to the balancer
        EXPECT_EQ(n.at(T::kBackendL3), static_cast<size_t>(kBalancerBuckets) + 1);
        break;
      case PipelineKind::kD:
        EXPECT_EQ(n.at(T::kIngress), static_cast<size_t>(o.stages) + 1);
        EXPECT_EQ(n.at(T::kL3), l3 + 1);
        EXPECT_EQ(n.size(), 2u);
        break;
      case PipelineKind::kM:
        EXPECT_EQ(n.at(T::kIngress), 2u);
        EXPECT_EQ(n.at(T::kL3), l3 + 1);
        EXPECT_EQ(n.size(), 2u);
        break;
    }
    if (kind == PipelineKind::kA || kind == PipelineKind::kB || kind == PipelineKind::kC) {
      EXPECT_EQ(n.at(T::kL3), l3 + 2) << pipeline_name(kind);
      EXPECT_EQ(priorities(rules, T::kAcl).size(), static_cast<size_t>(o.acl_rules) + 3);
      EXPECT_EQ(n.at(T::kOutputL2), l2 + 1) << pipeline_name(kind);
    }
  }
}

// Figure 4's post-conntrack rules and what follows the firewall in each of
// A, B, C; the services' arguments in D and M.
TEST(PipelineRules, ServiceRulesAreTheOnesTheDesignNames) {
  auto text_of = [](PipelineKind kind) {
    auto t = pipeline_flows(small(kind, 1));
    EXPECT_TRUE(t) << t.error();
    return t ? *t : std::string();
  };
  const std::string a = text_of(PipelineKind::kA), b = text_of(PipelineKind::kB),
                    c = text_of(PipelineKind::kC), d = text_of(PipelineKind::kD),
                    m = text_of(PipelineKind::kM);
  const auto has = [](const std::string& text, const std::string& line) {
    return text.find("\n" + line + "\n") != std::string::npos;
  };
  EXPECT_TRUE(has(
      a, "table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:5"));
  EXPECT_TRUE(
      has(a, "table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=0,actions=drop"));
  EXPECT_TRUE(has(a, "table=2,priority=1,ip,nw_src=10.0.0.0/8,actions=softflow:conntrack:1"));
  EXPECT_TRUE(has(a, "table=2,priority=0,actions=softflow:conntrack:0"));
  EXPECT_TRUE(has(a, "table=2,priority=32,arp,actions=goto_table:5"));  // 30 ACL rules + 2
  EXPECT_TRUE(has(a, "table=5,priority=0,actions=in_port"));
  EXPECT_TRUE(has(
      b,
      "table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=softflow:aes:1"));
  EXPECT_TRUE(
      has(b, "table=0,priority=100,sf_stage=2,sf_action=aes,sf_metadata=1,actions=goto_table:3"));
  EXPECT_TRUE(has(b, "table=0,priority=100,sf_stage=2,sf_action=aes,sf_metadata=0,actions=drop"));
  EXPECT_TRUE(has(b,
                  "table=3,priority=100,ip,nw_dst=172.0.0.0/8,actions=set_field:10.172.0.0/"
                  "255.255.0.0->nw_dst,goto_table:5"));
  EXPECT_TRUE(has(c,
                  "table=0,priority=110,sf_stage=1,sf_action=conntrack,sf_metadata=1,ip,nw_src=10.0.0.0/8,"
                  "actions=softflow:balancer:0"));
  EXPECT_TRUE(has(c, "table=0,priority=100,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:5"));
  EXPECT_TRUE(has(c,
                  "table=0,priority=100,sf_stage=2,sf_action=balancer,sf_metadata=7,ip,actions=mod_"
                  "dl_dst:02:be:00:00:00:07,mod_nw_dst:192.168.100.17,goto_table:4"));
  for (int s = 0; s < 3; ++s)
    EXPECT_TRUE(has(d, "table=0,priority=100,sf_stage=" + std::to_string(s) +
                           ",ip,actions=softflow:noop:" + std::to_string(s)));
  EXPECT_TRUE(has(d, "table=0,priority=100,sf_stage=3,ip,actions=goto_table:1"));
  EXPECT_TRUE(has(m, "table=0,priority=100,sf_stage=0,ip,actions=softflow:memload:5"));
  EXPECT_TRUE(has(m, "table=0,priority=100,sf_stage=1,sf_action=memload,actions=goto_table:1"));
}

TEST(PipelineRules, FixedOutputPortAndClientCidr) {
  PipelineOptions o = small(PipelineKind::kA, 4);
  o.output_port = 7;
  o.client_cidr = "192.168.0.0/16";
  auto text = pipeline_flows(o);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(text->find("in_port"), std::string::npos);
  EXPECT_NE(text->find("table=5,priority=0,actions=output:7\n"), std::string::npos);
  EXPECT_NE(
      text->find("table=2,priority=1,ip,nw_src=192.168.0.0/16,actions=softflow:conntrack:1\n"),
      std::string::npos);
  EXPECT_TRUE(parse_flows(*text)) << "parses";
}

// An ACL from ClassBench rules: a seeded, order-keeping sample (or the first
// N), each rule's expansions at one priority, earlier rules higher.
TEST(PipelineRules, AclFromClassBenchRules) {
  const std::vector<AclRule> source = generate_acl(200, 77);
  PipelineOptions o = small(PipelineKind::kA, 5);
  o.acl_source = source;
  o.acl_source_name = "test.rules";
  o.acl_rules = 25;

  o.acl_first = true;
  const std::vector<AclRule> first(source.begin(), source.begin() + 25);
  std::vector<FlowRule> rules = rules_of(o);
  size_t acl_flows = 0;
  for (const FlowRule& r : rules) acl_flows += r.table == T::kAcl;
  EXPECT_EQ(acl_flows, expanded(first) + 3);
  // Rule i's matches have priority 25 + 1 - i: check the first rule's.
  auto first_matches = acl_matches(source[0]);
  ASSERT_TRUE(first_matches);
  size_t at_top = 0;
  for (const FlowRule& r : rules) at_top += r.table == T::kAcl && r.priority == 26;
  EXPECT_EQ(at_top, first_matches->size());

  o.acl_first = false;
  auto text = pipeline_flows(o);
  ASSERT_TRUE(text) << text.error();
  EXPECT_NE(text->find("ACL: test.rules (200 rules; a seeded sample of 25"), std::string::npos);
  rules = rules_of(o);
  acl_flows = 0;
  for (const FlowRule& r : rules) acl_flows += r.table == T::kAcl;
  const uint64_t different_seed = 6;
  PipelineOptions o2 = o;
  o2.seed = different_seed;
  EXPECT_NE(*pipeline_flows(o2), *text);
  EXPECT_EQ(priorities(rules, T::kAcl).size(), 25u + 3);
}

// pipeline_d() (sf-bench's and sf-demo's) is Pipeline D's flow text.
TEST(PipelineRules, PipelineDFunctionMatchesTheText) {
  for (int k = 0; k <= 8; ++k) {
    PipelineOptions o;
    o.kind = PipelineKind::kD;
    o.seed = 7;
    o.stages = k;
    o.l3_rules = 64;
    o.output_port = 2;
    EXPECT_EQ(pipeline_d(k, 7), rules_of(o)) << k;
  }
}

// ---- a Switch running the pipelines ---------------------------------------------------

constexpr uint32_t kClient = 0x0a010203;  // 10.1.2.3
constexpr uint32_t kServer = 0xac100506;  // 172.16.5.6
constexpr uint32_t kClientPort = 1, kServerPort = 2;

struct Ipv4Tcp {
  uint32_t src = 0, dst = 0;
  uint16_t flags = 0;
  uint64_t dl_dst = 0;
  bool ok = false;
};

Ipv4Tcp read_tcp(const std::vector<uint8_t>& bytes) {
  FramePool pool(1);
  Packet p;
  Ipv4Tcp out;
  if (!pool.load(p, bytes, 0)) return out;
  parse_packet(p);
  out.ok = p.parse_flags == kParseOk && get_field_uint(p.key, Field::kNwProto) == 6;
  out.src = static_cast<uint32_t>(get_field_uint(p.key, Field::kNwSrc));
  out.dst = static_cast<uint32_t>(get_field_uint(p.key, Field::kNwDst));
  out.flags = static_cast<uint16_t>(get_field_uint(p.key, Field::kTcpFlags));
  out.dl_dst = get_field_uint(p.key, Field::kDlDst);
  pool.release(p);
  return out;
}

std::vector<uint8_t> tcp_frame(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                               uint16_t flags, uint32_t seq, uint32_t ack) {
  return PacketBuilder()
      .eth(mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"))
      .ipv4(src, dst, 64)
      .tcp(sport, dport, flags, seq, ack, 65535)
      .build();
}

// SYN (in on the client's port), SYN-ACK (on the server's), ACK.
std::vector<Frame> handshake(uint16_t client_port) {
  return {
      test::frame(kClientPort, tcp_frame(kClient, kServer, client_port, 80, kTcpSyn, 1000, 0),
                  1000),
      test::frame(kServerPort,
                  tcp_frame(kServer, kClient, 80, client_port, kTcpSyn | kTcpAck, 5000, 1001),
                  2000),
      test::frame(kClientPort, tcp_frame(kClient, kServer, client_port, 80, kTcpAck, 1001, 5001),
                  3000),
  };
}

// The services, small: memload's block is 1 GiB by default.
nlohmann::json service_config() { return {{"memload", {{"size", 1 << 20}}}}; }

class PipelineSwitch : public ::testing::TestWithParam<std::tuple<PipelineKind, bool>> {
 protected:
  PipelineKind kind() const { return std::get<0>(GetParam()); }
  bool coalesce() const { return std::get<1>(GetParam()); }
};

// A client's SYN (in on port 1) and the server's SYN-ACK (in on port 2)
// each leave by the port they came in on, with what the pipeline rewrites.
TEST_P(PipelineSwitch, ForwardsAHandshakeBackOutTheInputPort) {
  test::SwitchHarness h(coalesce(), {kClientPort, kServerPort}, {}, service_config());
  PipelineOptions o;
  o.kind = kind();
  o.seed = test_seed(11);
  o.stages = 4;
  ASSERT_TRUE(h.add(rules_of(o)));

  // One frame at a time, so a failure names the packet.
  const std::vector<Frame> first = handshake(40000);
  const char* names[] = {"SYN", "SYN-ACK", "ACK"};
  size_t sent = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    h.run(std::vector<Frame>{first[i]});
    ASSERT_EQ(test::total_sent(h.ports()), ++sent)
        << names[i] << " dropped: " << test::drops_string(h.stats());
    ASSERT_EQ(h.ports().sent(first[i].port).size(),
              first[i].port == kClientPort ? (sent + 1) / 2 : 1u)
        << names[i] << " left by the wrong port";
  }
  // A second connection's handshake in one batch: a service must see a
  // connection's packets in order even where they use different arguments
  // (conntrack:1 for the client's ACK, :0 for the server's SYN-ACK before it).
  h.run(handshake(40001));
  ASSERT_EQ(test::total_sent(h.ports()), 6u)
      << "a handshake in one batch: " << test::drops_string(h.stats());

  const Ipv4Tcp syn = read_tcp(h.ports().sent(kClientPort)[0].bytes);
  const Ipv4Tcp syn_ack = read_tcp(h.ports().sent(kServerPort)[0].bytes);
  ASSERT_TRUE(syn.ok && syn_ack.ok);
  EXPECT_EQ(syn.flags, kTcpSyn);
  EXPECT_EQ(syn_ack.flags, kTcpSyn | kTcpAck);
  switch (kind()) {
    case PipelineKind::kB:  // NAT: O.a.b.c -> 10.O.b.c
      EXPECT_EQ(syn.dst, 0x0aac0506u);
      EXPECT_EQ(syn_ack.dst, 0x0a0a0203u);
      break;
    case PipelineKind::kC: {  // the client's SYN to a backend; the reply as it is
      const uint32_t backend = syn.dst;
      EXPECT_GE(backend, balancer_backend_ip(0));
      EXPECT_LT(backend, balancer_backend_ip(kBalancerBuckets));
      EXPECT_EQ(syn_ack.dst, kClient);
      const int bucket = static_cast<int>(backend - balancer_backend_ip(0));
      EXPECT_EQ(syn.dl_dst, balancer_backend_mac(bucket));
      break;
    }
    default:
      EXPECT_EQ(syn.dst, kServer);
      EXPECT_EQ(syn_ack.dst, kClient);
      break;
  }
}

// The firewall pipelines drop a server's SYN to a client: no ACL rule allows
// it (checked against table 2 itself) and no connection exists.
using FirewallSwitch = PipelineSwitch;

TEST_P(FirewallSwitch, DropsAnUnsolicitedServerSyn) {
  test::SwitchHarness h(coalesce(), {kClientPort, kServerPort}, {}, service_config());
  PipelineOptions o;
  o.kind = kind();
  o.seed = test_seed(12);
  const std::vector<FlowRule> rules = rules_of(o);
  ASSERT_TRUE(h.add(rules));

  const std::vector<uint8_t> syn = tcp_frame(kServer, kClient, 80, 40001, kTcpSyn, 7000, 0);
  FramePool pool(1);
  Packet p;
  ASSERT_TRUE(pool.load(p, syn, kServerPort));
  parse_packet(p);
  for (const FlowRule& r : rules)
    ASSERT_FALSE(r.table == T::kAcl && r.priority > 0 && r.match.matches(p.key))
        << "ACL rule allows the server's SYN: " << print_flow(r);
  pool.release(p);

  h.run(std::vector<Frame>{test::frame(kServerPort, syn, 1000)});
  EXPECT_EQ(test::total_sent(h.ports()), 0u);
  EXPECT_EQ(h.stats().drops[static_cast<size_t>(DropReason::kActionDrop)], 1u)
      << test::drops_string(h.stats());
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<PipelineKind, bool>>& param_info) {
  return std::string(pipeline_name(std::get<0>(param_info.param))) +
         (std::get<1>(param_info.param) ? "_coalesce" : "_no_coalesce");
}

INSTANTIATE_TEST_SUITE_P(AllKinds, PipelineSwitch,
                         ::testing::Combine(::testing::ValuesIn(kAllKinds), ::testing::Bool()),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Firewalls, FirewallSwitch,
                         ::testing::Combine(::testing::Values(PipelineKind::kA, PipelineKind::kB,
                                                              PipelineKind::kC),
                                            ::testing::Bool()),
                         param_name);

// ---- sf-pipegen and gen-pipelines.sh --------------------------------------------------

test::CommandResult run(const std::string& cmd) { return test::run_command(cmd + " 2>&1"); }

const std::string kPipegen = std::string(SF_BINARY_DIR) + "/sf-pipegen";

class PipelineTool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kPipegen))
      GTEST_SKIP() << kPipegen << " is not built (build the sf-pipegen target)";
    dir_ = std::filesystem::temp_directory_path() /
           ("sf-pipegen-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
};

TEST_F(PipelineTool, WritesTheLibrarysTextWithItsCommandInTheHeader) {
  const test::CommandResult r = run(kPipegen + " --pipeline B --seed 9 --l2-rules 20 --acl-rules 10");
  ASSERT_EQ(r.status, 0) << r.output;
  PipelineOptions o;
  o.kind = PipelineKind::kB;
  o.seed = 9;
  o.l2_rules = 20;
  o.acl_rules = 10;
  o.header.push_back("command: sf-pipegen --pipeline B --seed 9 --l2-rules 20 --acl-rules 10");
  auto text = pipeline_flows(o);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(r.output, *text);

  const std::string out = (dir_ / "d.flows").string();
  const test::CommandResult d = run(kPipegen + " --pipeline d --stages 2 --output-port 3 --out " + out);
  ASSERT_EQ(d.status, 0) << d.output;
  std::ifstream in(out);
  std::stringstream file;
  file << in.rdbuf();
  auto rules = parse_flows(file.str());
  ASSERT_TRUE(rules) << rules.error();
  EXPECT_EQ(per_table(*rules).at(T::kIngress), 3u);

  // Where the file goes is not part of it: the same options, the same bytes.
  const std::string other = (dir_ / "d2.flows").string();
  ASSERT_EQ(run(kPipegen + " --out=" + other + " --pipeline d --stages 2 --output-port 3").status,
            0);
  std::ifstream in2(other);
  std::stringstream file2;
  file2 << in2.rdbuf();
  EXPECT_EQ(file2.str(), file.str());
}

TEST_F(PipelineTool, ClassBenchFileAndErrors) {
  const std::string acl = (dir_ / "acl.rules").string();
  std::ofstream(acl) << format_classbench(generate_acl(3, 1)[0]) << "\n"
                     << "@1.2.3.4/32 5.6.7.8/32 0 : 65535 1024 : 65535 0x06/0xFF 0x0000/0x0000\n";
  test::CommandResult r = run(kPipegen + " --pipeline A --acl " + acl + " --acl-first --acl-rules 5");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(
      r.output.find(
          "tcp,nw_src=1.2.3.4,nw_dst=5.6.7.8,tp_dst=1024/0xfc00,actions=softflow:conntrack:1"),
      std::string::npos);

  std::ofstream(acl, std::ios::app) << "@1.2.3.4/32 5.6.7.8/32 0 : 65535 1024 : 65535 0x06\n";
  r = run(kPipegen + " --pipeline A --acl " + acl);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find(acl + ": line 3: "), std::string::npos) << r.output;

  for (const char* bad :
       {"--pipeline E", "--pipeline A --output-port x", "--pipeline A --client 1.2.3",
        "--pipeline D --stages 99", "--pipeline A --acl-first"}) {
    r = run(kPipegen + " " + bad);
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_FALSE(r.output.empty()) << bad;
  }
}

TEST_F(PipelineTool, GenPipelinesScriptWritesEveryPipeline) {
  const std::string script = std::string(SF_SOURCE_DIR) + "/scripts/gen-pipelines.sh";
  const test::CommandResult r = run("SF_BUILD_DIR=" + std::string(SF_BINARY_DIR) + " " + script + " " +
                          dir_.string() + " 5 --l2-rules 10 --l3-rules 10 --acl-rules 10");
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<std::string> names = {"A", "B", "C", "M"};
  for (int k = 0; k <= 8; ++k) names.push_back("D" + std::to_string(k));
  for (const std::string& name : names) {
    const auto path = dir_ / ("pipeline-" + name + ".flows");
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_NE(text.str().find("seed=5"), std::string::npos) << name;
    auto rules = parse_flows(text.str());
    ASSERT_TRUE(rules) << name << ": " << rules.error();
    if (name[0] == 'D') {
      EXPECT_EQ(per_table(*rules).at(T::kIngress), static_cast<size_t>(name[1] - '0') + 1) << name;
    }
  }
}

}  // namespace
}  // namespace softflow

// Generated pipelines and traffic for the benchmarks, the demo and the tests
// (EVALUATION.md "Pipelines", paper §7.2).  Seeded: the same options give the
// same rules, byte for byte.
//
// The generators produce flow-file text (the flow syntax of DESIGN.md, the
// format `sfctl add-flows` and `sf-offline --flows` read); pipeline_rules()
// parses it.  Text is the primary form because `softflow:NAME:ARG` and
// `sf_action=NAME` only resolve once service NAME is linked in: a caller
// without the services can still write the files.
//
// Address plan, shared with the trace generator: clients in 10.0.0.0/8 open
// conversations (TCP, UDP, ICMP echo) to servers in 172.16.0.0/12; replies come
// back from the servers; frames carry any MACs.
//
// Tables (the same numbers in every pipeline; OpenFlow only jumps forward):
//   0  ingress: stage-0 L2 (dl_dst) rules, and the post-service dispatch on
//      sf_stage/sf_action/sf_metadata (every packet re-enters here after a
//      service)
//   1  L3: random IPv4 prefixes, priority = prefix length (longest wins)
//   2  ACL: the firewall's allow rules -> softflow:conntrack:1; default :0
//   3  NAT (B): stateless rewrite of the IPv4 destination into 10.0.0.0/8
//   4  backend L3 (C): routes to the load balancer's backends
//   5  output L2: random dl_dst rules -> output
//
//  A  0 (L2) -> 1 -> 2 -> conntrack -> 0 (pass) -> 5
//  B  A, but conntrack pass -> aes:1 -> 0 (aes ok) -> 3 (NAT) -> 5
//  C  A, but the clients' packets, once conntrack passes them -> balancer:0 ->
//     0 (bucket B: backend MAC/IP) -> 4 -> 5; the servers' replies -> 5
//  D  k x noop -> 0 -> 1 (L3, which outputs)
//  M  memload:N -> 0 -> 1 (L3, which outputs)
//
// Black box (paper Figure 5): the same A, B or C split over processes, each
// middlebox in a "VM" of its own (a softflowd with one port that sends every
// packet back where it came from) chained by a "hypervisor" softflowd that
// keeps the stateless L2/L3 part.  Hypervisor ports: 1 the uplink (traffic in
// and out), 2 the firewall VM, 3 the second middlebox VM (B: aes, C: balancer).
//   hypervisor  in 1: 0 (L2) -> 1 (L3) -> 2: output:2
//               in 2 (firewall passed): A -> 5; B -> output:3; C: clients ->
//               output:3, servers -> 5
//               in 3: B -> 3 (NAT) -> 5; C -> 4 (backend L3) -> 5;  5: output:1
//   firewall    2 (ACL) -> conntrack -> in_port or drop
//   aes         aes:1 -> in_port or drop
//   balancer    balancer:0 -> bucket's backend MAC/IP -> in_port
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sf_abi.h"
#include "softflow/acl.h"
#include "softflow/flow.h"
#include "softflow/ports.h"
#include "softflow/status.h"

namespace softflow {

enum class PipelineKind : uint8_t { kA, kB, kC, kD, kM };

// Which part of a black-box split to write (kWhole: the run-to-completion
// pipeline).
enum class BlackBoxRole : uint8_t { kWhole, kHypervisor, kFirewall, kAes, kBalancer };
inline constexpr uint32_t kBlackBoxUplink = 1;
inline constexpr uint32_t kBlackBoxFirewallPort = 2;
inline constexpr uint32_t kBlackBoxSecondPort = 3;
// "whole", "hypervisor", "firewall", "aes", "balancer".
const char* blackbox_role_name(BlackBoxRole role);
std::optional<BlackBoxRole> blackbox_role(std::string_view name);

// "A".."D", "M".
const char* pipeline_name(PipelineKind kind);
// Parses "A".."D", "M" (either case).
std::optional<PipelineKind> pipeline_kind(std::string_view name);

namespace pipeline_table {
inline constexpr uint8_t kIngress = 0;
inline constexpr uint8_t kL3 = 1;
inline constexpr uint8_t kAcl = 2;
inline constexpr uint8_t kNat = 3;
inline constexpr uint8_t kBackendL3 = 4;
inline constexpr uint8_t kOutputL2 = 5;
}  // namespace pipeline_table

// Pipeline C's balancer buckets and the backend each maps to.
inline constexpr int kBalancerBuckets = 8;
uint32_t balancer_backend_ip(int bucket);   // 192.168.100.(10 + bucket)
uint64_t balancer_backend_mac(int bucket);  // 02:be:00:00:00:0B, as a 48-bit integer

struct PipelineOptions {
  PipelineKind kind = PipelineKind::kA;
  uint64_t seed = 1;
  int l2_rules = 500;   // random dl_dst rules in table 0 (A-C) and in table 5
  int l3_rules = 500;   // random prefixes in table 1
  int acl_rules = 500;  // ACL (ClassBench) rules in table 2, before port-range expansion
  // ACL source: nullopt generates a ClassBench-style set (generate_acl); else
  // acl_rules of these are drawn, a seeded order-keeping sample unless
  // acl_first.  acl_source_name names it in the header.
  std::optional<std::vector<AclRule>> acl_source;
  std::string acl_source_name;
  bool acl_first = false;
  // The clients' network: allowed to open connections (the ACL rule just
  // above the default).
  std::string client_cidr = "10.0.0.0/8";
  int stages = 1;        // D: noop stages, 0..kMaxNoopStages
  uint32_t memload = 1;  // M: the memload argument (random reads per packet)
  // Where packets leave: nullopt = back out the port they came in on (the
  // paper's setup; action in_port), else output:PORT.
  std::optional<uint32_t> output_port;
  // A black-box part instead of the whole pipeline (A-C only; aes needs B,
  // balancer needs C).
  BlackBoxRole role = BlackBoxRole::kWhole;
  // Extra lines for the comment header (e.g. the command line).
  std::vector<std::string> header;
};

// A packet that would reach sf_stage SF_MAX_STAGES is dropped (loop bound).
inline constexpr int kMaxNoopStages = SF_MAX_STAGES - 1;

// The flow file: a comment header naming the generator, the seed and every
// option, then the rules by table.  Errors: bad options (counts, CIDR,
// stages), or an ACL rule that cannot be expressed.
Result<std::string> pipeline_flows(const PipelineOptions& options);
// pipeline_flows() parsed with parse_flows(): needs the pipeline's services
// registered (conntrack, aes, balancer, noop, memload as the kind requires).
Result<std::vector<FlowRule>> pipeline_rules(const PipelineOptions& options);

// Pipeline D with 'routes' L3 prefixes, output:out_port (pipeline_rules of
// kind D).  Throws std::logic_error if the noop service is not linked in.
std::vector<FlowRule> pipeline_d(int stages, uint64_t seed, int routes = 64, uint32_t out_port = 2);

struct TrafficSpec {
  uint64_t seed = 1;
  size_t flows = 10000;     // distinct UDP 5-tuples
  size_t packets = 100000;  // frames generated (flows drawn uniformly)
  size_t frame_size = 64;   // bytes, incl. Ethernet header, no FCS (min 60)
  uint32_t in_port = 1;
};
// IPv4/UDP frames from 10.0.0.0/8 to addresses inside 0.0.0.0/0, spread so
// that Pipeline D's routes are hit; timestamps 1 us apart.
std::vector<Frame> udp_traffic(const TrafficSpec& spec);

}  // namespace softflow

// Access-control lists for the firewall pipelines (EVALUATION.md, paper
// §7.2): a 5-tuple rule with prefixes and port ranges, read from ClassBench
// filter files or generated with the shape of ClassBench's acl1 seed, and
// turned into flow-syntax matches.  A port range becomes the minimal set of
// masked tp_src/tp_dst matches ("range-to-prefix expansion"); a rule with
// ranges on both ports becomes the cross product of both sets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/status.h"

namespace softflow {

struct AclRule {
  uint32_t src = 0;  // host order, host bits beyond src_len zero
  int src_len = 0;   // 0..32
  uint32_t dst = 0;
  int dst_len = 0;
  uint16_t sport_lo = 0, sport_hi = 65535;  // inclusive
  uint16_t dport_lo = 0, dport_hi = 65535;
  std::optional<uint8_t> proto;  // nullopt: any protocol

  bool operator==(const AclRule&) const = default;
};

// value/mask over 'bits'-bit numbers: matches x when (x & mask) == value.
struct MaskedValue {
  uint32_t value = 0;
  uint32_t mask = 0;
  bool operator==(const MaskedValue&) const = default;
};

// The fewest prefixes (aligned power-of-two blocks) whose union is exactly
// [lo, hi] among 'bits'-bit numbers (1 <= bits <= 16, lo <= hi < 2^bits),
// in increasing order.  E.g. 1024:65535 -> 1024/0xfc00, 2048/0xf800, ...
std::vector<MaskedValue> range_to_prefixes(uint32_t lo, uint32_t hi, int bits = 16);

// Parses ClassBench filter lines:
//   @SRC/LEN DST/LEN SPORT_LO : SPORT_HI DPORT_LO : DPORT_HI PROTO/MASK [FLAGS/MASK]
// Blank lines are skipped.  PROTO/MASK is 0xNN/0xFF (exact) or 0xNN/0x00
// (any).  FLAGS (ClassBench's extension field) cannot be expressed as a
// match and is ignored.  Address bits beyond the prefix length are cleared.
// A port range on a protocol other than TCP, UDP or "any" is an error (only
// TCP and UDP have ports).  Errors read "line N: what was wrong".
Result<std::vector<AclRule>> parse_classbench(std::string_view text);
// The same, from a file; errors are prefixed with the path.
Result<std::vector<AclRule>> read_classbench(const std::string& path);

// 'count' distinct rules with the shape of ClassBench's acl1 seed (see
// acl.cc for the statistics), deterministic in 'seed'.
std::vector<AclRule> generate_acl(size_t count, uint64_t seed);

// A seeded sample of min(n, rules.size()) rules that keeps their order (the
// paper's "randomly chosen subset"), deterministic in 'seed'.
std::vector<AclRule> sample_acl(const std::vector<AclRule>& rules, size_t n, uint64_t seed);

// The flow-syntax matches (without table, priority or actions) that together
// cover exactly the packets the rule matches, e.g.
//   "tcp,nw_src=10.1.0.0/16,nw_dst=172.16.0.5,tp_dst=1024/0xfc00"
// A rule for any protocol with a port range yields its matches once for tcp
// and once for udp (the only protocols with ports).  The matches of one rule
// are disjoint, so they can share a priority.
Result<std::vector<std::string>> acl_matches(const AclRule& rule);

// "@SRC/LEN\tDST/LEN\tLO : HI\tLO : HI\t0xNN/0xFF\t0x0000/0x0000" (the
// ClassBench line for a rule; parse_classbench reads it back).
std::string format_classbench(const AclRule& rule);

}  // namespace softflow

// The flow syntax of DESIGN.md's contract (a subset of ovs-ofctl(8) plus
// SoftFlow): parse and print rules.  print_flow() output re-parses to the
// same rule.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/flow.h"
#include "softflow/status.h"

namespace softflow {

struct FlowParseOptions {
  // Resolves a port name used in in_port=NAME or output:NAME; may be empty.
  std::function<std::optional<uint32_t>(std::string_view)> port_by_name;
  // Allow a line without actions= (for del-flows / dump-flows filters).
  bool match_only = false;
  // A check of each parsed rule against the switch it is for (e.g. that the
  // ports it names exist); its error is the parse error, with the line
  // number in parse_flows().  Not applied to match_only filters.
  std::function<Status(const FlowRule&)> check_rule;
};

// Parses one rule, e.g.
//   table=0,priority=100,sf_stage=0,tcp,nw_dst=10.0.0.3,tp_src=80,actions=softflow:conntrack:1
// Fields are separated by commas and/or spaces.  Tokens ovs-ofctl prints in
// dump-flows (cookie, duration, n_packets, n_bytes, idle_age, hard_age) are
// accepted and ignored, so dump output can be fed back.
// Errors name the offending token and its 1-based column:
//   "unknown field 'nw_dts' at column 23"
Result<FlowRule> parse_flow(std::string_view line, const FlowParseOptions& opts = {});

// parse_flow() plus which optional parts the line spelled out, for callers
// that give an absent part its own meaning (del-flows / dump-flows filters
// read a missing table= as "every table", which FlowRule cannot express).
struct ParsedFlowLine {
  FlowRule rule;
  bool has_table = false;
  bool has_priority = false;
  bool has_actions = false;
};
Result<ParsedFlowLine> parse_flow_line(std::string_view line, const FlowParseOptions& opts = {});

// Parses a file's worth of rules (one per line, '#' comments, blank lines).
// Errors are prefixed with "line N: ".  Nothing is returned on any error.
Result<std::vector<FlowRule>> parse_flows(std::string_view text, const FlowParseOptions& opts = {});

// "sf_stage=0,tcp,nw_dst=10.0.0.3,tp_src=80" (no table=, priority=, actions);
// "" for a match-everything.  Fields come in one canonical order, with the
// shorthands (tcp, ip, arp, ...) when dl_type/nw_proto allow.  Masks that the
// parser cannot produce (megaflow masks) print as name=0xVALUE/0xMASK.
std::string print_match(const Match& match);
// "softflow:conntrack:1", "output:2,dec_ttl", "drop" for an empty list.
std::string print_actions(const ActionList& actions);
// "table=0, priority=100,tcp,nw_dst=10.0.0.3 actions=output:2"
std::string print_flow(const FlowRule& rule);

}  // namespace softflow

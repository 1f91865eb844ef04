// libFuzzer target for the flow syntax: any line the parser accepts must
// print to text that parses back to the same rule and prints the same again.
// Both modes (rules with actions, and match-only filters) are exercised, with
// a port-name resolver so that in_port=NAME / output:NAME are reachable.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "softflow/flow_syntax.h"

namespace {

softflow::FlowParseOptions make_options(bool match_only) {
  softflow::FlowParseOptions opts;
  opts.match_only = match_only;
  opts.port_by_name = [](std::string_view name) -> std::optional<uint32_t> {
    if (name == "eth0") return 0;
    if (name == "eth1") return 1;
    if (name == "uplink") return 0xfffffff0;
    return std::nullopt;
  };
  return opts;
}

void check_round_trip(std::string_view line, const softflow::FlowParseOptions& opts) {
  auto rule = softflow::parse_flow(line, opts);
  if (!rule) return;
  const std::string text = softflow::print_flow(*rule);
  auto again = softflow::parse_flow(text, opts);
  if (!again) {
    std::fprintf(stderr, "input:   %.*s\nprinted: %s\nreparse failed: %s\n",
                 static_cast<int>(line.size()), line.data(), text.c_str(), again.error().c_str());
    std::abort();
  }
  if (!(*again == *rule) || softflow::print_flow(*again) != text) {
    std::fprintf(stderr, "input:   %.*s\nprinted: %s\nreprinted: %s\nround trip changed the rule\n",
                 static_cast<int>(line.size()), line.data(), text.c_str(),
                 softflow::print_flow(*again).c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const softflow::FlowParseOptions kRules = make_options(false);
  static const softflow::FlowParseOptions kFilters = make_options(true);
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_round_trip(input, kRules);
  check_round_trip(input, kFilters);
  // Multi-line input goes through the file parser too (comments, line numbers).
  auto rules = softflow::parse_flows(input, kRules);
  if (rules) {
    for (const softflow::FlowRule& r : *rules) check_round_trip(softflow::print_flow(r), kRules);
  }
  return 0;
}

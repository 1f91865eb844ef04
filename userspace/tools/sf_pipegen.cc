// sf-pipegen: writes the evaluation's pipelines (EVALUATION.md "Pipelines",
// paper §7.2) as flow files, seeded.
//
//   sf-pipegen --pipeline A|B|C|D|M [--seed S] [--stages K] [--memload N]
//              [--acl FILE [--acl-first]] [--acl-rules N] [--l2-rules N]
//              [--l3-rules N] [--client CIDR] [--output-port in_port|N]
//              [--out FILE]
//
// The file starts with a comment header naming the generator, the seed and
// the options; the same options always give the same file.  It is checked by
// parsing it with the services this binary links, so what it writes loads
// into softflowd, sf-offline and sf-bench.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

#include "softflow/acl.h"
#include "softflow/flow_syntax.h"
#include "softflow/pipelines.h"

namespace sf = softflow;

namespace {

int fail(const std::string& msg) {
  std::cerr << "sf-pipegen: " << msg << "\n";
  return 1;
}

// The options that shaped the file, for its header: the command line
// without --out, so the same options give the same bytes wherever they go.
std::string command_line(int argc, char** argv) {
  std::string line = "sf-pipegen";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--out") {
      ++i;
      continue;
    }
    if (arg.starts_with("--out=")) continue;
    line += " " + std::string(arg);
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write SoftFlow's evaluation pipelines (A, B, C, D, M) as seeded flow files"};
  std::string kind_name, acl_path, out_path, output_port = "in_port";
  sf::PipelineOptions o;
  app.add_option("--pipeline", kind_name,
                 "A (gateway firewall), B (A + AES + NAT), C (A + load balancer), D (noop "
                 "stages), M (memload)")
      ->required();
  app.add_option("--seed", o.seed, "random seed (same seed, same file)")->capture_default_str();
  app.add_option("--l2-rules", o.l2_rules,
                 "random dl_dst rules in the ingress and output L2 tables")
      ->capture_default_str();
  app.add_option("--l3-rules", o.l3_rules, "random IPv4 prefixes in the L3 table")
      ->capture_default_str();
  app.add_option("--acl-rules", o.acl_rules,
                 "ACL rules (ClassBench rules, before port-range expansion)")
      ->capture_default_str();
  app.add_option("--acl", acl_path,
                 "ClassBench filter file to draw the ACL from (default: a generated "
                 "ClassBench-style set); a seeded sample of --acl-rules kept in file order");
  app.add_flag("--acl-first", o.acl_first, "with --acl: the first --acl-rules rules, not a sample");
  app.add_option("--client", o.client_cidr, "clients' network, allowed to open connections")
      ->capture_default_str();
  app.add_option("--stages", o.stages, "D: noop stages")
      ->check(CLI::Range(0, sf::kMaxNoopStages))
      ->capture_default_str();
  app.add_option("--memload", o.memload, "M: random memory reads per packet")
      ->capture_default_str();
  app.add_option("--output-port", output_port,
                 "in_port (back out the input port, the paper's setup) or a port number")
      ->capture_default_str();
  std::string role_name = "whole";
  app.add_option("--blackbox", role_name,
                 "A-C split over processes (paper Figure 5): hypervisor (the stateless L2/L3 "
                 "part; ports 1 uplink, 2 firewall VM, 3 aes/balancer VM), firewall, aes (B), "
                 "balancer (C); whole = the run-to-completion pipeline")
      ->capture_default_str();
  app.add_option("--out", out_path, "output file (default: stdout)");
  CLI11_PARSE(app, argc, argv);

  const auto kind = sf::pipeline_kind(kind_name);
  if (!kind) return fail("unknown pipeline '" + kind_name + "' (A, B, C, D or M)");
  o.kind = *kind;
  const auto role = sf::blackbox_role(role_name);
  if (!role)
    return fail("unknown --blackbox role '" + role_name +
                "' (whole, hypervisor, firewall, aes or balancer)");
  o.role = *role;
  if (output_port != "in_port") {
    try {
      size_t used = 0;
      const unsigned long port = std::stoul(output_port, &used);
      if (used != output_port.size() || port > UINT32_MAX) throw std::out_of_range("port");
      o.output_port = static_cast<uint32_t>(port);
    } catch (const std::exception&) {
      return fail("--output-port must be in_port or a port number, not '" + output_port + "'");
    }
  }
  if (o.acl_first && acl_path.empty()) return fail("--acl-first needs --acl FILE");
  if (!acl_path.empty()) {
    auto rules = sf::read_classbench(acl_path);
    if (!rules) return fail(rules.error());
    o.acl_source = std::move(rules.value());
    o.acl_source_name = acl_path;
  }
  o.header.push_back("command: " + command_line(argc, argv));

  auto text = sf::pipeline_flows(o);
  if (!text) return fail(text.error());
  // What we write must load: the services are linked into this binary.
  if (auto parsed = sf::parse_flows(*text); !parsed)
    return fail("generated flows do not parse: " + parsed.error());

  if (out_path.empty()) {
    std::cout << *text;
    std::cout.flush();
    if (!std::cout) return fail("writing to stdout failed");
    return 0;
  }
  std::ofstream out(out_path, std::ios::trunc);
  if (!out) return fail(out_path + ": cannot open: " + std::strerror(errno));
  out << *text;
  out.close();
  if (!out) return fail(out_path + ": write failed");
  return 0;
}

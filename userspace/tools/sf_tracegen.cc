// sf-tracegen: writes the evaluation traces (T1-like, T2, T3; paper §7.1) as
// pcap files from a seed.
//
//   sf-tracegen --trace T1|T2|T3 [--scale F] [--seed S] [--rounds R]
//               [--out FILE.pcap] [--stats]
//
// The same (trace, scale, seed, rounds) always gives the same file.  See
// softflow/tracegen.h for what the traces contain.
#include <CLI/CLI.hpp>

#include <chrono>
#include <iostream>

#include "softflow/tracegen.h"

namespace sf = softflow;

int main(int argc, char** argv) {
  CLI::App app{"Generate the SoftFlow evaluation traces (T1-like, T2, T3) as pcap files"};
  std::string trace_name, out_path;
  sf::TraceSpec spec;
  bool print_stats = false;
  app.add_option("--trace", trace_name, "T1 (T1-like), T2 (T1 in 64-byte frames) or T3")
      ->required();
  app.add_option("--scale", spec.scale,
                 "size relative to the paper's trace (1.0: 4.6 M packets, 44 s)")
      ->capture_default_str();
  app.add_option("--seed", spec.seed, "random seed")->capture_default_str();
  app.add_option("--rounds", spec.rounds,
                 "T3: rounds of 256-packet bursts (default: max(1, round(12 * scale)))");
  app.add_option("--out", out_path, "pcap file to write (nanosecond timestamps)");
  app.add_flag("--stats", print_stats, "print a summary of the trace");
  CLI11_PARSE(app, argc, argv);

  const sf::Result<sf::TraceKind> kind = sf::parse_trace_kind(trace_name);
  if (!kind) {
    std::cerr << "sf-tracegen: " << kind.error() << "\n";
    return 1;
  }
  spec.kind = *kind;
  if (out_path.empty() && !print_stats) {
    std::cerr << "sf-tracegen: nothing to do: give --out FILE.pcap and/or --stats\n";
    return 1;
  }

  const auto started = std::chrono::steady_clock::now();
  const sf::Result<sf::TraceStats> stats =
      out_path.empty() ? sf::generate_trace(spec, [](uint64_t, std::span<const uint8_t>) {})
                       : sf::write_trace_pcap(spec, out_path);
  if (!stats) {
    std::cerr << "sf-tracegen: " << stats.error() << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (print_stats) {
    std::cout << sf::format_trace_stats(spec, *stats);
    std::cout << "generated in " << seconds << " s\n";
  }
  return 0;
}

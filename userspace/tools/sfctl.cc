// sfctl: talks to a running softflowd over its control socket.
//
//   sfctl [--socket PATH] [--json] [--strict] [--metadata STAGE=VALUE...] COMMAND ARGS...
//
// The subcommands, their arguments and help come from the daemon's command
// table (control_commands()), so this tool and the daemon cannot disagree.
// Exit status: 0 success, 1 the command failed (message on stderr), 2 usage.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>

#include "sf_abi.h"
#include "softflow/control.h"

namespace sf = softflow;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int fail(const std::string& message, int code = kExitFailure) {
  std::cerr << "sfctl: " << message << "\n";
  return code;
}

// The file add-flows sends: read here, since softflowd may not see our files
// (another mount namespace, a container).
sf::Result<std::string> read_input(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    if (std::cin.bad()) return sf::Status::error("cannot read stdin", EIO);
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return sf::Status::error(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return sf::Status::error(fmt::format("cannot read {}", path), EIO);
  return text;
}

// A whole string as an unsigned number: decimal, or hex with 0x.
std::optional<uint64_t> parse_number(std::string_view text) {
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    text.remove_prefix(2);
    base = 16;
  }
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// "--metadata 1=7" -> {1: 7}.
sf::Status parse_metadata(const std::vector<std::string>& specs, std::map<uint8_t, uint32_t>& out) {
  for (const std::string& spec : specs) {
    const std::string_view text = spec;
    const size_t eq = text.find('=');
    std::optional<uint64_t> stage, value;
    if (eq != std::string_view::npos) {
      stage = parse_number(text.substr(0, eq));
      value = parse_number(text.substr(eq + 1));
    }
    if (!stage || !value || *stage < 1 || *stage >= SF_MAX_STAGES || *value > UINT32_MAX)
      return sf::Status::error(
          fmt::format("--metadata {}: expected STAGE=VALUE with STAGE in 1-{} and VALUE a 32-bit "
                      "number",
                      spec, SF_MAX_STAGES - 1));
    out[static_cast<uint8_t>(*stage)] = static_cast<uint32_t>(*value);
  }
  return sf::Status::ok();
}

// "  add-flow FLOW     add a flow; ..." with the help wrapped to 'width'.
std::string commands_help(size_t width = 100) {
  constexpr size_t kIndent = 36;
  std::string out = "Commands:\n";
  for (const sf::CommandSpec& spec : sf::control_commands()) {
    std::string line = fmt::format("  {} {}", spec.name, spec.synopsis);
    line.resize(std::max(line.size() + 1, kIndent), ' ');
    if (line.size() > kIndent) {
      out += line + "\n";
      line.assign(kIndent, ' ');
    }
    std::istringstream words{std::string(spec.help)};
    std::string word;
    bool first = true;
    while (words >> word) {
      if (!first && line.size() + 1 + word.size() > width) {
        out += line + "\n";
        line.assign(kIndent, ' ');
        first = true;
      }
      if (!first) line += ' ';
      line += word;
      first = false;
    }
    out += line + "\n";
  }
  out +=
      "\nFlows and matches use the ovs-ofctl(8) flow syntax (see README); a flow may be given\n"
      "as one argument or split over several.";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Control a running softflowd."};
  app.name("sfctl");
  std::string socket_path = sf::kDefaultControlSocket;
  bool json = false;
  bool strict = false;
  std::vector<std::string> metadata_specs;
  double timeout_s = 0;
  app.add_option("--socket", socket_path, "softflowd's control socket")->capture_default_str();
  app.add_flag("--json", json, "print the result as JSON");
  app.add_flag("--strict", strict,
               "del-flows, mod-flows, dump-flows: match the flow's match and priority exactly");
  app.add_option("--metadata", metadata_specs,
                 "trace: assume stage STAGE sees sf_metadata=VALUE (repeatable)")
      ->type_name("STAGE=VALUE")
      ->delimiter(',');
  app.add_option("--timeout", timeout_s, "seconds to wait for softflowd (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.require_subcommand(0, 1);
  app.fallthrough();  // options are accepted after the command too
  app.footer(commands_help());

  const std::span<const sf::CommandSpec> commands = sf::control_commands();
  std::vector<std::vector<std::string>> command_args(commands.size());
  std::vector<CLI::App*> subcommands;
  for (size_t i = 0; i < commands.size(); ++i) {
    const sf::CommandSpec& spec = commands[i];
    CLI::App* sub = app.add_subcommand(std::string(spec.name), std::string(spec.help));
    sub->group("");  // listed by the footer, with their arguments
    if (spec.max_args > 0)
      sub->add_option("args", command_args[i], std::string(spec.synopsis))
          ->type_name(std::string(spec.synopsis));
    subcommands.push_back(sub);
  }
  // Words no subcommand takes come back in remaining(): an unknown command,
  // or arguments to a command that takes none (reported by check_arguments).
  app.allow_extras();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(fmt::format("{} (sfctl --help for usage)", e.what()), kExitUsage);
  }

  const std::vector<std::string> extras = app.remaining();
  size_t which = 0;
  while (which < subcommands.size() && !subcommands[which]->parsed()) ++which;
  if (which == subcommands.size()) {
    if (extras.empty()) return fail("no command given (sfctl --help lists them)", kExitUsage);
    if (extras[0].starts_with("-"))
      return fail(fmt::format("unknown option '{}' (sfctl --help for usage)", extras[0]),
                  kExitUsage);
    return fail(fmt::format("unknown command '{}' (sfctl --help lists the commands)", extras[0]),
                kExitUsage);
  }
  const sf::CommandSpec& spec = commands[which];
  for (const std::string& extra : extras)
    if (extra.starts_with("-") && extra != "-")
      return fail(fmt::format("unknown option '{}' (sfctl --help for usage)", extra), kExitUsage);

  sf::Request request;
  request.command = std::string(spec.name);
  request.args = command_args[which];
  request.args.insert(request.args.end(), extras.begin(), extras.end());
  request.options.json = json;
  request.options.strict = strict;
  if (sf::Status s = sf::check_arguments(spec, request.args.size()); !s)
    return fail(s.message(), kExitUsage);
  if (sf::Status s = parse_metadata(metadata_specs, request.options.metadata); !s)
    return fail(s.message(), kExitUsage);
  if (spec.reads_file) {
    auto input = read_input(request.args.at(0));
    if (!input) return fail(input.error());
    request.input = std::move(*input);
  }

  auto response = sf::control_request(
      socket_path, request, std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (!response) return fail(response.error());
  if (!response->ok()) return fail(response->error);
  if (json) {
    std::cout << response->result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    std::cout << response->output;
    if (!response->output.empty() && response->output.back() != '\n') std::cout << "\n";
  }
  std::cout.flush();
  return std::cout.good() ? 0 : fail("cannot write the output");
}

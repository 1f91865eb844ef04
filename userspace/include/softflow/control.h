// The control plane: the request/response protocol between sfctl and
// softflowd, the commands the daemon answers (one table, shared with sfctl's
// --help), the Unix-socket server the daemon runs and the client sfctl uses.
//
// Protocol: a Unix SOCK_STREAM socket, one request per connection.  The
// client sends one JSON object and '\n':
//   {"command": "dump-flows", "args": ["table=0"],
//    "options": {"json": false, "strict": false, "metadata": {"1": 7}},
//    "input": "<text the client read for the daemon, e.g. a flows file>"}
// and the server answers with one JSON object and '\n':
//   {"status": 0, "output": "<text for humans>", "result": <JSON>, "error": ""}
// status is 0 or an errno-like code; error says what was wrong and where.
// JSON escapes newlines inside strings, so '\n' always ends a message.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "softflow/flow_syntax.h"
#include "softflow/status.h"

namespace softflow {

class Switch;

inline constexpr char kDefaultControlSocket[] = "/run/softflow/softflowd.sock";
// Flows files travel inside the request, so the bound is generous; it stops a
// runaway client from making the daemon allocate without limit.
inline constexpr size_t kMaxControlRequestBytes = size_t{64} << 20;
// dump-flows / dump-megaflows of a full cache (200k megaflows) stay far below.
inline constexpr size_t kMaxControlResponseBytes = size_t{512} << 20;

// ---- messages ---------------------------------------------------------------------

struct RequestOptions {
  bool json = false;    // the client prints `result`, so `output` may be left empty
  bool strict = false;  // del-flows / mod-flows / dump-flows: match and priority exactly
  // trace: sf_metadata assumed on entry to stage N (N >= 1), i.e. what the
  // service of stage N-1 leaves; other transitions keep sf_metadata unchanged.
  std::map<uint8_t, uint32_t> metadata;
};

struct Request {
  std::string command;
  std::vector<std::string> args;
  RequestOptions options;
  std::string input;
};

struct Response {
  int status = 0;
  std::string output;
  nlohmann::json result;  // null when there is nothing structured to say
  std::string error;

  bool ok() const { return status == 0; }
  static Response success(std::string output, nlohmann::json result = nullptr);
  static Response failure(const Status& status);
};

// One line each, '\n' included.  Invalid UTF-8 in strings is replaced, never
// thrown about.
std::string encode_request(const Request& request);
std::string encode_response(const Response& response);
// Parses one message (with or without the trailing '\n'); never throws.
Result<Request> decode_request(std::string_view line);
Result<Response> decode_response(std::string_view line);

// ---- commands ---------------------------------------------------------------------

// What the daemon knows that the library does not.  Both are optional.
//  show(): {"ports": [{"name", "ofport", "ifindex", "queues", "xdp_mode",
//           "xdp_prog_id", "adopted", "rx_packets", "tx_packets", "tx_dropped"}],
//           "xdp": {"rx", "emc_hits", "megaflow_hits", "misses", "unparsed",
//                   "malformed", "not_port", "no_socket"},
//           "pmd_threads": N}
//  Every key is optional.  Port names there resolve in_port=NAME / output:NAME.
//  now_ns(): the clock the datapaths run on (megaflow "used" times); the
//  steady clock if absent.
//  offload(): the emulated NIC TCAM (softflowd --offload): {"capacity",
//  "stats": {...}, "nic": {...}, "entries": [{"index", "mark", "generation",
//  "hits", "recent", "datapath", "megaflow_id", "partial", "match",
//  "megaflow_match"}]}; absent when offload is off.
struct DaemonHooks {
  std::function<nlohmann::json()> show;
  std::function<uint64_t()> now_ns;
  std::function<nlohmann::json()> offload;
};

class Controller;
using CommandHandler = Response (*)(Controller& controller, const Request& request);

inline constexpr size_t kAnyArgs = SIZE_MAX;

struct CommandSpec {
  std::string_view name;
  std::string_view synopsis;  // "FLOW", "[MATCH]", ...
  std::string_view help;
  size_t min_args = 0;
  // Commands taking a flow or a match accept it split over several
  // arguments (the shell splits "priority=1 actions=drop"); they are
  // rejoined with spaces, which the flow syntax treats like commas.
  size_t max_args = 0;
  // The single argument names a file ('-': stdin) that the client reads and
  // sends as `input`: the daemon may live in another mount namespace.
  bool reads_file = false;
  CommandHandler handler = nullptr;
};

// The command table: what the daemon answers and what `sfctl --help` lists.
std::span<const CommandSpec> control_commands();
const CommandSpec* find_command(std::string_view name);
// "add-flows: expected 1 argument (FILE), got 0".
Status check_arguments(const CommandSpec& spec, size_t n_args);

class Controller {
 public:
  Controller(Switch& sw, DaemonHooks hooks);

  // Answers one request.  Never throws; errors become failure responses.
  Response handle(const Request& request);

  // For the command handlers.
  Switch& sw() { return sw_; }
  uint64_t now_ns() const;
  // hooks.show(), or {} without the hook.
  nlohmann::json daemon_facts() const;
  // hooks.offload(), or null when offload is off.
  nlohmann::json offload_facts() const;
  // Resolves port names through daemon_facts() (asked at most once per
  // request, and only when a name is used).
  FlowParseOptions parse_options(bool match_only) const;

 private:
  Switch& sw_;
  DaemonHooks hooks_;
};

// ---- server -----------------------------------------------------------------------

struct ControlServerOptions {
  // A connection must deliver its whole request (and take the whole
  // response) within this time, so a stuck client cannot hold up the daemon.
  std::chrono::milliseconds io_timeout{10'000};
  size_t max_request_bytes = kMaxControlRequestBytes;
  // Problems with single connections (timeouts, bad peers); stderr if empty.
  std::function<void(const std::string&)> log;
};

// Serves one Controller on a Unix socket from its own thread, one
// connection at a time.  Only root (and the daemon's own user) is answered.
class ControlServer {
 public:
  explicit ControlServer(ControlServerOptions options = {});
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket's directory (0700) if missing, refuses if a server
  // already answers on 'path', replaces a stale socket file, binds (0600) and
  // starts the accept thread.
  Status start(const std::string& path, Controller& controller);
  // Joins the thread; removes the socket file if it is still the one bound
  // here (a newer daemon's socket at the same path is left alone).
  void stop();

  bool running() const { return thread_.joinable(); }
  const std::string& path() const { return path_; }

 private:
  void run();
  void serve_connection(int fd);
  void log(const std::string& message) const;

  ControlServerOptions options_;
  Controller* controller_ = nullptr;
  std::string path_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the accept loop for stop()
  uint64_t socket_dev_ = 0;
  uint64_t socket_ino_ = 0;
  std::thread thread_;
};

// ---- client -----------------------------------------------------------------------

// Sends one request and waits for the answer ('timeout' zero: no limit).
// A transport problem is an error Result; a command's failure is a Response
// with non-zero status.
Result<Response> control_request(const std::string& path, const Request& request,
                                 std::chrono::milliseconds timeout = std::chrono::milliseconds{0});

}  // namespace softflow

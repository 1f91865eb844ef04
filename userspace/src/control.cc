// The control protocol's wire format, the daemon's socket server and the
// client sfctl uses.  The command handlers are in control_commands.cc.
#include "softflow/control.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "sf_abi.h"

namespace softflow {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Strings that are not UTF-8 (a flows file in Latin-1, a stray byte in a
// flow) must not make dump() throw: they are sent with U+FFFD instead.
std::string dump_line(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

Status protocol_error(const std::string& what) {
  return Status::error("malformed control message: " + what, EPROTO);
}

Result<Json> parse_object(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  Json j = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return protocol_error("not valid JSON");
  if (!j.is_object()) return protocol_error("not a JSON object");
  return j;
}

// A string member; absent is "", a wrong type is an error.
Status get_string(const Json& obj, const char* key, std::string& out, bool required = false) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return protocol_error(fmt::format("'{}' is missing", key));
    return Status::ok();
  }
  if (!it->is_string()) return protocol_error(fmt::format("'{}' must be a string", key));
  out = it->get<std::string>();
  return Status::ok();
}

Status get_bool(const Json& obj, const char* key, bool& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::ok();
  if (!it->is_boolean()) return protocol_error(fmt::format("'{}' must be true or false", key));
  out = it->get<bool>();
  return Status::ok();
}

Status decode_metadata(const Json& j, std::map<uint8_t, uint32_t>& out) {
  if (!j.is_object()) return protocol_error("'metadata' must be an object {\"STAGE\": VALUE}");
  for (const auto& [stage_text, value] : j.items()) {
    char* end = nullptr;
    errno = 0;
    const unsigned long stage = std::strtoul(stage_text.c_str(), &end, 10);
    if (stage_text.empty() || *end != '\0' || errno != 0 || stage < 1 || stage >= SF_MAX_STAGES)
      return Status::error(fmt::format("metadata: stage '{}' is not a number in 1-{}", stage_text,
                                       SF_MAX_STAGES - 1));
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > UINT32_MAX)
      return Status::error(
          fmt::format("metadata: value for stage {} is not a number in 0-{}", stage, UINT32_MAX));
    out[static_cast<uint8_t>(stage)] = static_cast<uint32_t>(value.get<int64_t>());
  }
  return Status::ok();
}

// ---- socket helpers ---------------------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Status::error("control socket path is empty");
  if (path.size() >= sizeof addr.sun_path)
    return Status::error(fmt::format("control socket path {} is too long ({} bytes, at most {})",
                                     path, path.size(), sizeof addr.sun_path - 1),
                         ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// Milliseconds left until 'deadline' for poll(); -1 (forever) without one.
int poll_timeout(std::optional<Clock::time_point> deadline) {
  if (!deadline) return -1;
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, INT32_MAX));
}

// Waits until fd is ready for 'events'; false on timeout.
bool wait_ready(int fd, short events, std::optional<Clock::time_point> deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, poll_timeout(deadline));
    if (n > 0) return true;  // ready, or an error/hangup the next call reports
    if (n == 0) return false;
    if (errno != EINTR) return true;
  }
}

// Sends all of 'data' on a non-blocking socket.  Returns 0, ETIMEDOUT, or
// the send() errno (EPIPE when the peer is gone).
int send_all(int fd, std::string_view data, std::optional<Clock::time_point> deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd, POLLOUT, deadline)) return ETIMEDOUT;
      continue;
    }
    return n < 0 ? errno : EPIPE;
  }
  return 0;
}

enum class ReadEnd { kLine, kEof, kTooLong, kTimeout, kError };

// Reads one '\n'-terminated message (the '\n' is not kept) of at most
// 'limit' bytes from a non-blocking socket.
ReadEnd read_line(int fd, std::string& out, size_t limit, std::optional<Clock::time_point> deadline,
                  int& error) {
  out.clear();
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      const char* newline = static_cast<const char*>(std::memchr(buf, '\n', n));
      const size_t take = newline ? static_cast<size_t>(newline - buf) : static_cast<size_t>(n);
      if (out.size() + take > limit) return ReadEnd::kTooLong;
      out.append(buf, take);
      if (newline) return ReadEnd::kLine;
      continue;
    }
    if (n == 0) return ReadEnd::kEof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd, POLLIN, deadline)) return ReadEnd::kTimeout;
      continue;
    }
    error = errno;
    return ReadEnd::kError;
  }
}

// Creates the missing directories of 'dir' with mode 0700: the socket
// directory holds nothing but the root-only control socket.
Status make_directories(const std::string& dir) {
  if (dir.empty()) return Status::ok();
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::error(fmt::format("cannot create {}: {}", prefix, std::strerror(errno)),
                           errno);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::error(fmt::format("{} is not a directory", dir), ENOTDIR);
  return Status::ok();
}

}  // namespace

// ---- messages ---------------------------------------------------------------------

Response Response::success(std::string output, nlohmann::json result) {
  Response r;
  r.output = std::move(output);
  r.result = std::move(result);
  return r;
}

Response Response::failure(const Status& status) {
  Response r;
  r.status = status.code() != 0 ? status.code() : EINVAL;
  r.error = status.message();
  return r;
}

std::string encode_request(const Request& request) {
  Json options = {{"json", request.options.json}, {"strict", request.options.strict}};
  if (!request.options.metadata.empty()) {
    Json metadata = Json::object();
    for (const auto& [stage, value] : request.options.metadata)
      metadata[std::to_string(stage)] = value;
    options["metadata"] = std::move(metadata);
  }
  Json j = {{"command", request.command},
            {"args", request.args},
            {"options", std::move(options)},
            {"input", request.input}};
  return dump_line(j);
}

std::string encode_response(const Response& response) {
  Json j = {{"status", response.status},
            {"output", response.output},
            {"result", response.result},
            {"error", response.error}};
  return dump_line(j);
}

Result<Request> decode_request(std::string_view line) {
  auto parsed = parse_object(line);
  if (!parsed) return parsed.status();
  const Json& j = *parsed;
  Request r;
  if (Status s = get_string(j, "command", r.command, /*required=*/true); !s) return s;
  if (auto it = j.find("args"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return protocol_error("'args' must be an array of strings");
    for (const Json& a : *it) {
      if (!a.is_string()) return protocol_error("'args' must be an array of strings");
      r.args.push_back(a.get<std::string>());
    }
  }
  if (auto it = j.find("options"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return protocol_error("'options' must be an object");
    if (Status s = get_bool(*it, "json", r.options.json); !s) return s;
    if (Status s = get_bool(*it, "strict", r.options.strict); !s) return s;
    if (auto m = it->find("metadata"); m != it->end() && !m->is_null())
      if (Status s = decode_metadata(*m, r.options.metadata); !s) return s;
  }
  if (Status s = get_string(j, "input", r.input); !s) return s;
  return r;
}

Result<Response> decode_response(std::string_view line) {
  auto parsed = parse_object(line);
  if (!parsed) return parsed.status();
  const Json& j = *parsed;
  Response r;
  auto status = j.find("status");
  if (status == j.end() || !status->is_number_integer())
    return protocol_error("'status' must be an integer");
  r.status = status->get<int>();
  if (Status s = get_string(j, "output", r.output); !s) return s;
  if (Status s = get_string(j, "error", r.error); !s) return s;
  if (auto it = j.find("result"); it != j.end()) r.result = *it;
  if (r.status != 0 && r.error.empty()) r.error = std::strerror(r.status);
  return r;
}

// ---- server -----------------------------------------------------------------------

ControlServer::ControlServer(ControlServerOptions options) : options_(std::move(options)) {}

ControlServer::~ControlServer() { stop(); }

void ControlServer::log(const std::string& message) const {
  if (options_.log)
    options_.log(message);
  else
    std::fprintf(stderr, "softflowd: control: %s\n", message.c_str());
}

Status ControlServer::start(const std::string& path, Controller& controller) {
  if (running()) return Status::error("control server already started on " + path_, EBUSY);
  auto addr = socket_address(path);
  if (!addr) return addr.status();
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0)
    if (Status s = make_directories(path.substr(0, slash)); !s) return s;

  // Another daemon may be serving this path: ask it.  A socket file nobody
  // answers on is left over from a daemon that died; replace it.  (Two
  // daemons starting at the same instant can still race between this check
  // and bind(); bind() then fails cleanly for the second.)
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::error(fmt::format("{} exists and is not a socket", path), EEXIST);
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.get() < 0)
      return Status::error(fmt::format("socket: {}", std::strerror(errno)), errno);
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0)
      return Status::error(fmt::format("softflowd already running on {}", path), EADDRINUSE);
    if (errno != ECONNREFUSED)
      return Status::error(
          fmt::format("cannot check for a running softflowd on {}: {}", path, std::strerror(errno)),
          errno);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return Status::error(
          fmt::format("cannot remove stale socket {}: {}", path, std::strerror(errno)), errno);
  }

  Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (listener.get() < 0)
    return Status::error(fmt::format("socket: {}", std::strerror(errno)), errno);
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0)
    return Status::error(fmt::format("cannot bind {}: {}", path, std::strerror(errno)), errno);
  // Restrict the file before listen(): nobody can connect until then.
  struct stat bound {};
  if (::chmod(path.c_str(), 0600) != 0 || ::stat(path.c_str(), &bound) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return Status::error(fmt::format("cannot set up {}: {}", path, std::strerror(err)), err);
  }
  if (::listen(listener.get(), 16) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return Status::error(fmt::format("cannot listen on {}: {}", path, std::strerror(err)), err);
  }
  Fd stop_event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (stop_event.get() < 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return Status::error(fmt::format("eventfd: {}", std::strerror(err)), err);
  }

  controller_ = &controller;
  path_ = path;
  socket_dev_ = bound.st_dev;
  socket_ino_ = bound.st_ino;
  listen_fd_ = listener.release();
  stop_fd_ = stop_event.release();
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void ControlServer::stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  // An eventfd write of 1 cannot block or fail short of overflow.
  [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  // Only our own socket: if another daemon replaced the file (after
  // deciding ours was stale), removing it would orphan that daemon.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_)
    ::unlink(path_.c_str());
  ::close(listen_fd_);
  ::close(stop_fd_);
  listen_fd_ = stop_fd_ = -1;
  controller_ = nullptr;
}

void ControlServer::run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log(fmt::format("poll: {}; control server stopped", std::strerror(errno)));
      return;
    }
    if (fds[1].revents) return;
    if (!fds[0].revents) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        continue;
      log(fmt::format("accept: {}", std::strerror(errno)));
      // Out of descriptors or memory: back off instead of spinning on a
      // listener that stays readable; stop() still wakes us.
      pollfd wait_stop{stop_fd_, POLLIN, 0};
      ::poll(&wait_stop, 1, 100);
      continue;
    }
    Fd connection(fd);
    try {
      serve_connection(connection.get());
    } catch (const std::exception& e) {
      // Out of memory for a request or response: drop this connection, keep serving.
      log(fmt::format("connection dropped: {}", e.what()));
    }
  }
}

void ControlServer::serve_connection(int fd) {
  const auto read_deadline = Clock::now() + options_.io_timeout;
  // The answer gets its own time: a long command (a big add-flows) must not
  // eat into it.
  auto reply = [&](const Response& response) {
    const int err = send_all(fd, encode_response(response), Clock::now() + options_.io_timeout);
    if (err != 0 && err != EPIPE && err != ECONNRESET)
      log(fmt::format("could not send a response: {}", std::strerror(err)));
  };

  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
    log(fmt::format("SO_PEERCRED: {}", std::strerror(errno)));
    return;
  }
  // The socket is 0600 in a 0700 directory; this also holds if someone
  // loosens those modes.  The daemon's own user is as privileged as it is.
  if (peer.uid != 0 && peer.uid != ::geteuid()) {
    reply(Response::failure(Status::error(
        fmt::format("permission denied: softflowd answers root only (peer uid {})", peer.uid),
        EPERM)));
    return;
  }

  std::string line;
  int read_error = 0;
  switch (read_line(fd, line, options_.max_request_bytes, read_deadline, read_error)) {
    case ReadEnd::kLine:
      break;
    case ReadEnd::kEof:
      if (line.empty()) return;  // a probe (another daemon checking the path)
      break;                     // a last line without '\n' is still a request
    case ReadEnd::kTooLong:
      reply(Response::failure(Status::error(
          fmt::format("request too large: more than {} bytes", options_.max_request_bytes),
          E2BIG)));
      return;
    case ReadEnd::kTimeout:
      log(fmt::format("pid {} sent no complete request within {} ms; connection closed", peer.pid,
                      options_.io_timeout.count()));
      return;
    case ReadEnd::kError:
      log(fmt::format("reading a request from pid {}: {}", peer.pid, std::strerror(read_error)));
      return;
  }

  Response response;
  auto request = decode_request(line);
  if (!request) {
    response = Response::failure(request.status());
  } else {
    try {
      response = controller_->handle(*request);
    } catch (const std::exception& e) {
      // handle() catches its own; this keeps the accept thread alive regardless.
      response = Response::failure(Status::error(std::string("internal error: ") + e.what(), EIO));
    }
  }
  reply(response);
}

// ---- client -----------------------------------------------------------------------

Result<Response> control_request(const std::string& path, const Request& request,
                                 std::chrono::milliseconds timeout) {
  std::optional<Clock::time_point> deadline;
  if (timeout.count() > 0) deadline = Clock::now() + timeout;
  const std::string message = encode_request(request);
  if (message.size() > kMaxControlRequestBytes)
    return Status::error(fmt::format("request too large: {} bytes (at most {})", message.size(),
                                     kMaxControlRequestBytes),
                         E2BIG);
  auto addr = socket_address(path);
  if (!addr) return addr.status();
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Status::error(fmt::format("socket: {}", std::strerror(errno)), errno);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    const int err = errno;
    return Status::error(
        fmt::format("cannot connect to softflowd at {}: {}", path, std::strerror(err)), err);
  }
  if (::fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0)
    return Status::error(fmt::format("fcntl: {}", std::strerror(errno)), errno);

  // If the daemon stops reading (it refused the request), the send fails
  // with EPIPE but its answer is waiting: read it either way.
  const int send_error = send_all(fd.get(), message, deadline);
  if (send_error == ETIMEDOUT)
    return Status::error(fmt::format("timed out sending to softflowd at {}", path), ETIMEDOUT);
  if (send_error == 0) ::shutdown(fd.get(), SHUT_WR);

  std::string line;
  int read_error = 0;
  switch (read_line(fd.get(), line, kMaxControlResponseBytes, deadline, read_error)) {
    case ReadEnd::kLine:
      break;
    case ReadEnd::kEof:
      if (line.empty())
        return Status::error(
            fmt::format("softflowd at {} closed the connection without answering", path), EPROTO);
      break;
    case ReadEnd::kTooLong:
      return Status::error(
          fmt::format("response from softflowd larger than {} bytes", kMaxControlResponseBytes),
          E2BIG);
    case ReadEnd::kTimeout:
      return Status::error(fmt::format("timed out waiting for softflowd at {}", path), ETIMEDOUT);
    case ReadEnd::kError: {
      const int err = send_error != 0 ? send_error : read_error;
      return Status::error(
          fmt::format("lost the connection to softflowd at {}: {}", path, std::strerror(err)), err);
    }
  }
  return decode_response(line);
}

}  // namespace softflow

// Error handling rule for SoftFlow (written down once, here):
//  - The packet path never throws and never allocates on error; it counts.
//  - Control-plane calls (flow parsing, flow mods, configuration) return a
//    Status / Result<T> carrying an errno-like code and a message that a user
//    can act on ("what was wrong and where").
//  - Constructors may throw std::runtime_error at start-up only.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace softflow {

class Status {
 public:
  Status() = default;
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  static Status error(std::string message, int code = EINVAL) {
    return Status(code, std::move(message));
  }

  bool is_ok() const { return code_ == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  int code_ = 0;
  std::string message_;
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }
  const std::string& error() const { return std::get<Status>(v_).message(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace softflow

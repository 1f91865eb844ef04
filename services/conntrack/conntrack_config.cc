// conntrack configuration: the JSON object under "conntrack" in the service
// configuration file.
//
//   {
//     "max_connections": 1000000,        // table bound (>= 1)
//     "tcp_midstream": "strict",         // or "loose"
//     "timeouts": {                      // seconds (> 0), any subset
//       "tcp_syn_sent": 30, "tcp_syn_recv": 30, "tcp_established": 86400,
//       "tcp_fin_wait": 900, "tcp_time_wait": 45, "tcp_closed": 30,
//       "udp_first": 60, "udp_single": 60, "udp_multiple": 30,
//       "icmp_first": 60, "icmp_reply": 30,
//       "other_first": 60, "other_multiple": 30
//     }
//   }
//
// Defaults follow Open vSwitch's userspace conntrack.  Unknown keys and bad
// values are errors (a typo must not silently leave a default in place).
#include <cmath>
#include <stdexcept>

#include "conntrack.h"

namespace softflow::conntrack {
namespace {

struct TimeoutDefault {
  TimeoutClass cls;
  std::string_view name;
  uint64_t seconds;
};

constexpr TimeoutDefault kTimeouts[] = {
    {TimeoutClass::kTcpSynSent, "tcp_syn_sent", 30},
    {TimeoutClass::kTcpSynRecv, "tcp_syn_recv", 30},
    {TimeoutClass::kTcpEstablished, "tcp_established", 24 * 3600},
    {TimeoutClass::kTcpFinWait, "tcp_fin_wait", 15 * 60},
    {TimeoutClass::kTcpTimeWait, "tcp_time_wait", 45},
    {TimeoutClass::kTcpClosed, "tcp_closed", 30},
    {TimeoutClass::kUdpFirst, "udp_first", 60},
    {TimeoutClass::kUdpSingle, "udp_single", 60},
    {TimeoutClass::kUdpMultiple, "udp_multiple", 30},
    {TimeoutClass::kIcmpFirst, "icmp_first", 60},
    {TimeoutClass::kIcmpReply, "icmp_reply", 30},
    {TimeoutClass::kOtherFirst, "other_first", 60},
    {TimeoutClass::kOtherMultiple, "other_multiple", 30},
};
static_assert(std::size(kTimeouts) == kTimeoutClasses);

// Longer than any sane timeout, short enough that now + timeout cannot wrap.
constexpr double kMaxTimeoutSeconds = 100.0 * 365 * 24 * 3600;

[[noreturn]] void bad(const std::string& what) { throw std::runtime_error("conntrack: " + what); }

}  // namespace

std::string_view timeout_name(TimeoutClass c) {
  for (const TimeoutDefault& t : kTimeouts)
    if (t.cls == c) return t.name;
  return "?";
}

std::array<uint64_t, kTimeoutClasses> Config::default_timeouts() {
  std::array<uint64_t, kTimeoutClasses> out{};
  for (const TimeoutDefault& t : kTimeouts) out[static_cast<size_t>(t.cls)] = t.seconds * kNsPerSec;
  return out;
}

Config Config::from_json(const nlohmann::json& json) {
  Config cfg;
  if (json.is_null()) return cfg;
  if (!json.is_object()) bad("configuration must be a JSON object, got " + json.dump());
  for (const auto& [key, value] : json.items()) {
    if (key == "max_connections") {
      // Parsed JSON gives non-negative integers unsigned; built ones may be signed.
      const bool positive = value.is_number_unsigned()  ? value.get<uint64_t>() > 0
                            : value.is_number_integer() ? value.get<int64_t>() > 0
                                                        : false;
      if (!positive) bad("'max_connections' must be a positive integer, got " + value.dump());
      cfg.max_connections = value.get<uint64_t>();
    } else if (key == "tcp_midstream") {
      if (value == "strict") {
        cfg.tcp_midstream = MidstreamPolicy::kStrict;
      } else if (value == "loose") {
        cfg.tcp_midstream = MidstreamPolicy::kLoose;
      } else {
        bad("'tcp_midstream' must be \"strict\" or \"loose\", got " + value.dump());
      }
    } else if (key == "timeouts") {
      if (!value.is_object()) bad("'timeouts' must be an object, got " + value.dump());
      for (const auto& [name, seconds] : value.items()) {
        const TimeoutDefault* entry = nullptr;
        for (const TimeoutDefault& t : kTimeouts)
          if (t.name == name) entry = &t;
        if (entry == nullptr) {
          std::string known;
          for (const TimeoutDefault& t : kTimeouts)
            known += (known.empty() ? "" : ", ") + std::string(t.name);
          bad("unknown timeout 'timeouts." + name + "' (known: " + known + ")");
        }
        if (!seconds.is_number() || !(seconds.get<double>() > 0) ||
            seconds.get<double>() > kMaxTimeoutSeconds)
          bad("'timeouts." + name + "' must be a positive number of seconds, got " +
              seconds.dump());
        cfg.timeout_ns[static_cast<size_t>(entry->cls)] =
            static_cast<uint64_t>(std::llround(seconds.get<double>() * 1e9));
      }
    } else {
      bad("unknown key '" + key + "' (known: max_connections, tcp_midstream, timeouts)");
    }
  }
  return cfg;
}

}  // namespace softflow::conntrack

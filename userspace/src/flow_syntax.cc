// Flow syntax: the ovs-ofctl(8) subset of DESIGN.md's contract.
//
// The parser makes one left-to-right pass over a line's tokens and writes
// each field straight into the rule's Match; prerequisites (tp_dst needs tcp
// or udp, ...) are checked only after every field is read, so field order
// does not matter, as in ovs-ofctl.  Every error quotes the offending text
// and its 1-based column.  The printer emits one canonical form, and that
// form re-parses to the same rule (tests and a fuzzer check it).
#include "softflow/flow_syntax.h"
#include "softflow/protocols.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "softflow/service.h"

namespace softflow {
namespace {

constexpr uint8_t kMaxTableId = kMaxTables - 1;  // 255 is OpenFlow's "all tables"
constexpr uint16_t kVlanVidMax = 0x0fff;
constexpr uint16_t kVlanMatchMask = SF_VLAN_PRESENT | kVlanVidMax;
constexpr uint16_t kVlanUntagged = 0xffff;  // dl_vlan=0xffff: frames without a tag
// nw_tos covers the DSCP bits only, never ECN (OVS's nw_tos does the same).
constexpr uint8_t kTosDscpMask = 0xfc;
// The TCP header has 12 flag bits; the 3 above ns are reserved and unnamed.
constexpr uint16_t kTcpFlagsAllBits = 0x0fff;
constexpr uint16_t kTcpFlagsNamedBits = 0x01ff;

// ---- text and errors --------------------------------------------------------

// A piece of the input with the 1-based column where it starts, so that an
// error about any part of it can say where that part is.
struct Located {
  std::string_view text;
  size_t column = 1;

  Located sub(size_t pos, size_t count = std::string_view::npos) const {
    return {text.substr(pos, count), column + pos};
  }
};

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

Status error_at(std::string_view what, size_t column) {
  return Status::error(std::string(what) + " at column " + std::to_string(column));
}

// "invalid IPv4 address '10.0.0.300' for nw_dst at column 30"
Status invalid(std::string_view what, const Located& text, std::string_view field,
               std::string_view expected = {}) {
  std::string msg = "invalid " + std::string(what) + " " + quoted(text.text) + " for " +
                    std::string(field) + " at column " + std::to_string(text.column);
  if (!expected.empty()) msg += " (expected " + std::string(expected) + ")";
  return Status::error(std::move(msg));
}

bool is_separator(char c) {
  return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

// Splits text into tokens at runs of commas and/or whitespace.
class Tokenizer {
 public:
  explicit Tokenizer(Located text) : text_(text) {}

  std::optional<Located> next() {
    const std::string_view s = text_.text;
    while (pos_ < s.size() && is_separator(s[pos_])) ++pos_;
    if (pos_ == s.size()) return std::nullopt;
    const size_t start = pos_;
    while (pos_ < s.size() && !is_separator(s[pos_])) ++pos_;
    return text_.sub(start, pos_ - start);
  }

 private:
  Located text_;
  size_t pos_ = 0;
};

// Splits "name=value" / "name:value" at the first delimiter.
struct KeyValue {
  Located key;
  std::optional<Located> value;
};
KeyValue split_key_value(const Located& token, char delimiter) {
  const size_t at = token.text.find(delimiter);
  if (at == std::string_view::npos) return {token, std::nullopt};
  return {token.sub(0, at), token.sub(at + 1)};
}

// ---- numbers and addresses --------------------------------------------------

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decimal, or hexadecimal after "0x" (what ovs-ofctl accepts).  Leading zeros
// stay decimal: unlike strtoul(..., 0), "010" is ten, never octal eight.
std::optional<uint64_t> parse_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    for (char c : s.substr(2)) {
      const int d = hex_digit(c);
      if (d < 0 || (v >> 60) != 0) return std::nullopt;
      v = (v << 4) | static_cast<uint64_t>(d);
    }
    return v;
  }
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::string range_text(uint64_t max) { return "0-" + std::to_string(max); }

Result<uint64_t> parse_bounded(const Located& text, uint64_t max, std::string_view field) {
  const auto v = parse_number(text.text);
  if (!v || *v > max) return invalid("value", text, field, range_text(max));
  return *v;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

using MacBytes = std::array<uint8_t, 6>;
using Ipv4Bytes = std::array<uint8_t, 4>;
using Ipv6Bytes = std::array<uint8_t, 16>;

// aa:bb:cc:dd:ee:ff, one or two hex digits per group.
std::optional<MacBytes> parse_mac(std::string_view s) {
  MacBytes mac{};
  size_t pos = 0;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i > 0) {
      if (pos >= s.size() || s[pos] != ':') return std::nullopt;
      ++pos;
    }
    int digits = 0;
    unsigned byte = 0;
    while (pos < s.size() && digits < 2 && hex_digit(s[pos]) >= 0) {
      byte = byte * 16 + static_cast<unsigned>(hex_digit(s[pos]));
      ++pos;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
    mac[i] = static_cast<uint8_t>(byte);
  }
  if (pos != s.size()) return std::nullopt;
  return mac;
}

// Strict dotted quad: four decimal parts 0-255, no leading zeros (which
// inet_aton would read as octal).
std::optional<Ipv4Bytes> parse_ipv4(std::string_view s) {
  Ipv4Bytes addr{};
  size_t pos = 0;
  for (size_t i = 0; i < addr.size(); ++i) {
    if (i > 0) {
      if (pos >= s.size() || s[pos] != '.') return std::nullopt;
      ++pos;
    }
    const size_t start = pos;
    unsigned part = 0;
    while (pos < s.size() && pos - start < 3 && s[pos] >= '0' && s[pos] <= '9')
      part = part * 10 + static_cast<unsigned>(s[pos++] - '0');
    const size_t digits = pos - start;
    if (digits == 0 || part > 255 || (digits > 1 && s[start] == '0')) return std::nullopt;
    addr[i] = static_cast<uint8_t>(part);
  }
  if (pos != s.size()) return std::nullopt;
  return addr;
}

std::optional<Ipv6Bytes> parse_ipv6(std::string_view s) {
  // inet_pton needs a NUL-terminated string; checking the characters first
  // also keeps an embedded NUL from cutting the text short unnoticed.
  char buf[INET6_ADDRSTRLEN];
  if (s.empty() || s.size() >= sizeof buf) return std::nullopt;
  for (char c : s)
    if (hex_digit(c) < 0 && c != ':' && c != '.') return std::nullopt;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  Ipv6Bytes addr{};
  if (inet_pton(AF_INET6, buf, addr.data()) != 1) return std::nullopt;
  return addr;
}

// Sets the first 'length' bits of mask[0..n).
void set_prefix_mask(size_t length, uint8_t* mask, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const size_t bits = length > 8 * i ? std::min<size_t>(length - 8 * i, 8) : 0;
    mask[i] = static_cast<uint8_t>(0xff00 >> bits);
  }
}

// The prefix length if mask is a run of leading one bits, else nothing.
std::optional<size_t> prefix_length(const uint8_t* mask, size_t n) {
  size_t length = 0;
  size_t i = 0;
  while (i < n && mask[i] == 0xff) {
    length += 8;
    ++i;
  }
  if (i == n) return length;
  const uint8_t partial = mask[i];
  const unsigned trailing = static_cast<uint8_t>(~partial);  // must be 0...01...1
  if ((trailing & (trailing + 1)) != 0) return std::nullopt;
  length += static_cast<size_t>(std::popcount(partial));
  for (++i; i < n; ++i)
    if (mask[i] != 0) return std::nullopt;
  return length;
}

bool all_ones(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0xff; });
}
bool all_zero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

enum class AddressKind : uint8_t { kMac, kIpv4, kIpv6 };

size_t address_size(AddressKind kind) {
  switch (kind) {
    case AddressKind::kMac:
      return 6;
    case AddressKind::kIpv4:
      return 4;
    case AddressKind::kIpv6:
      return 16;
  }
  return 0;
}

std::string format_address(AddressKind kind, const uint8_t* p) {
  char buf[INET6_ADDRSTRLEN];
  switch (kind) {
    case AddressKind::kMac:
      std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", p[0], p[1], p[2], p[3], p[4],
                    p[5]);
      break;
    case AddressKind::kIpv4:
      std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
      break;
    case AddressKind::kIpv6:
      if (inet_ntop(AF_INET6, p, buf, sizeof buf) == nullptr) return "?";
      break;
  }
  return buf;
}

// addr, addr/prefix when the mask is a prefix (IP only), else addr/mask.
std::string format_masked_address(AddressKind kind, const uint8_t* value, const uint8_t* mask) {
  const size_t n = address_size(kind);
  std::string out = format_address(kind, value);
  if (all_ones(mask, n)) return out;
  if (kind != AddressKind::kMac) {
    if (const auto length = prefix_length(mask, n)) return out + "/" + std::to_string(*length);
  }
  return out + "/" + format_address(kind, mask);
}

// ---- field values -------------------------------------------------------------

// A field's value and mask in the byte layout the field has in FlowKey.
struct FieldBytes {
  std::array<uint8_t, 16> value{};
  std::array<uint8_t, 16> mask{};
};

void uint_to_bytes(Field field, uint64_t v, uint8_t* out) {
  FlowKey tmp = zero_key();
  set_field_uint(tmp, field, v);
  std::memcpy(out, field_ptr(tmp, field), field_info(field).size);
}

uint64_t bytes_to_uint(Field field, const uint8_t* p) {
  FlowKey tmp = zero_key();
  std::memcpy(field_ptr(tmp, field), p, field_info(field).size);
  return get_field_uint(tmp, field);
}

FieldBytes uint_field_bytes(Field field, uint64_t value, uint64_t mask) {
  FieldBytes b;
  uint_to_bytes(field, value & mask, b.value.data());
  uint_to_bytes(field, mask, b.mask.data());
  return b;
}

enum class ValueKind : uint8_t {
  kNumber,    // decimal or 0x hex up to 'max'
  kPort,      // in_port: a number, or a name resolved by port_by_name
  kMac,       // aa:bb:cc:dd:ee:ff[/mask]
  kIpv4,      // a.b.c.d[/prefix or /a.b.c.d]
  kIpv6,      // IPv6 address[/prefix or /address]
  kVlan,      // dl_vlan: VID 0-4095, or 0xffff for untagged frames
  kTos,       // nw_tos: DSCP bits of the TOS byte (low 2 bits zero)
  kTcpFlags,  // +syn-ack flag syntax, or value[/mask]
  kService,   // a service name, or "none"
};

// What a field's match needs the rest of the match to pin down.
enum class Prereq : uint8_t {
  kNone,
  kIpOrArp,
  kIpv6,
  kIpOrIpv6,
  kIpIpv6OrArp,
  kTcpOrUdp,
  kIcmp,
  kTcp
};

std::string_view prereq_text(Prereq p) {
  switch (p) {
    case Prereq::kNone:
      return "";
    case Prereq::kIpOrArp:
      return "ip or arp";
    case Prereq::kIpv6:
      return "ipv6";
    case Prereq::kIpOrIpv6:
      return "ip or ipv6";
    case Prereq::kIpIpv6OrArp:
      return "ip, ipv6 or arp";
    case Prereq::kTcpOrUdp:
      return "tcp or udp";
    case Prereq::kIcmp:
      return "icmp or icmp6";
    case Prereq::kTcp:
      return "tcp";
  }
  return "";
}

struct FieldSyntax {
  std::string_view name;
  Field field;
  ValueKind kind;
  uint64_t max;   // kNumber: largest value (and mask)
  bool maskable;  // a match accepts name=value/mask
  Prereq prereq;
  bool settable;  // set_field:V->name is allowed
};

const std::array<FieldSyntax, 20> kMatchFields = {{
    {"in_port", Field::kInPort, ValueKind::kPort, 0xffffffff, false, Prereq::kNone, false},
    {"dl_src", Field::kDlSrc, ValueKind::kMac, 0, true, Prereq::kNone, true},
    {"dl_dst", Field::kDlDst, ValueKind::kMac, 0, true, Prereq::kNone, true},
    {"dl_type", Field::kDlType, ValueKind::kNumber, 0xffff, false, Prereq::kNone, false},
    {"dl_vlan", Field::kVlanTci, ValueKind::kVlan, 0, false, Prereq::kNone, false},
    {"vlan_tci", Field::kVlanTci, ValueKind::kNumber, 0xffff, true, Prereq::kNone, false},
    {"nw_src", Field::kNwSrc, ValueKind::kIpv4, 0, true, Prereq::kIpOrArp, true},
    {"nw_dst", Field::kNwDst, ValueKind::kIpv4, 0, true, Prereq::kIpOrArp, true},
    {"ipv6_src", Field::kIpv6Src, ValueKind::kIpv6, 0, true, Prereq::kIpv6, true},
    {"ipv6_dst", Field::kIpv6Dst, ValueKind::kIpv6, 0, true, Prereq::kIpv6, true},
    {"nw_proto", Field::kNwProto, ValueKind::kNumber, 0xff, false, Prereq::kIpIpv6OrArp, false},
    {"nw_tos", Field::kNwTos, ValueKind::kTos, 0xff, false, Prereq::kIpOrIpv6, true},
    {"tp_src", Field::kTpSrc, ValueKind::kNumber, 0xffff, true, Prereq::kTcpOrUdp, true},
    {"tp_dst", Field::kTpDst, ValueKind::kNumber, 0xffff, true, Prereq::kTcpOrUdp, true},
    {"icmp_type", Field::kTpSrc, ValueKind::kNumber, 0xff, false, Prereq::kIcmp, false},
    {"icmp_code", Field::kTpDst, ValueKind::kNumber, 0xff, false, Prereq::kIcmp, false},
    {"tcp_flags", Field::kTcpFlags, ValueKind::kTcpFlags, 0, true, Prereq::kTcp, false},
    {"sf_stage", Field::kSfStage, ValueKind::kNumber, 0xff, false, Prereq::kNone, false},
    {"sf_action", Field::kSfAction, ValueKind::kService, 0, false, Prereq::kNone, false},
    {"sf_metadata", Field::kSfMetadata, ValueKind::kNumber, 0xffffffff, true, Prereq::kNone, true},
}};

const FieldSyntax* find_field_syntax(std::string_view name) {
  for (const FieldSyntax& s : kMatchFields)
    if (s.name == name) return &s;
  return nullptr;
}

struct Shorthand {
  std::string_view name;
  uint16_t dl_type;
  int nw_proto;  // -1: dl_type only
};

const std::array<Shorthand, 9> kShorthands = {{
    {"ip", kEthTypeIpv4, -1},
    {"ipv6", kEthTypeIpv6, -1},
    {"arp", kEthTypeArp, -1},
    {"tcp", kEthTypeIpv4, kProtoTcp},
    {"udp", kEthTypeIpv4, kProtoUdp},
    {"icmp", kEthTypeIpv4, kProtoIcmp},
    {"tcp6", kEthTypeIpv6, kProtoTcp},
    {"udp6", kEthTypeIpv6, kProtoUdp},
    {"icmp6", kEthTypeIpv6, kProtoIcmpv6},
}};

const Shorthand* find_shorthand(std::string_view name) {
  for (const Shorthand& s : kShorthands)
    if (s.name == name) return &s;
  return nullptr;
}

struct TcpFlagName {
  std::string_view name;
  uint16_t bit;
};
const std::array<TcpFlagName, 9> kTcpFlagNames = {{
    {"fin", 0x001},
    {"syn", 0x002},
    {"rst", 0x004},
    {"psh", 0x008},
    {"ack", 0x010},
    {"urg", 0x020},
    {"ece", 0x040},
    {"cwr", 0x080},
    {"ns", 0x100},
}};

// "+syn-ack": each named flag must be set (+) or clear (-); the rest are wild.
Result<FieldBytes> parse_tcp_flag_names(const Located& text, std::string_view field) {
  uint16_t value = 0;
  uint16_t mask = 0;
  size_t pos = 0;
  const std::string_view s = text.text;
  while (pos < s.size()) {
    const char sign = s[pos];
    if (sign != '+' && sign != '-') return invalid("TCP flags", text, field, "+flag-flag...");
    size_t end = s.find_first_of("+-", pos + 1);
    if (end == std::string_view::npos) end = s.size();
    const Located name = text.sub(pos + 1, end - pos - 1);
    const auto it = std::find_if(kTcpFlagNames.begin(), kTcpFlagNames.end(),
                                 [&](const TcpFlagName& f) { return f.name == name.text; });
    if (it == kTcpFlagNames.end())
      return invalid("TCP flag", name, field, "fin, syn, rst, psh, ack, urg, ece, cwr or ns");
    if (mask & it->bit)
      return error_at("TCP flag " + quoted(name.text) + " given twice", name.column);
    mask |= it->bit;
    if (sign == '+') value |= it->bit;
    pos = end;
  }
  return uint_field_bytes(Field::kTcpFlags, value, mask);
}

// Value and optional "/mask" of the field described by 'syntax', as in
// "nw_dst=10.0.0.0/8" or "set_field:0x1/0xff->sf_metadata".  'field' is the
// name errors use (the action name for mod_nw_src:..., for example).
Result<FieldBytes> parse_field_value(const FieldSyntax& syntax, std::string_view field,
                                     const Located& text, bool allow_mask,
                                     const FlowParseOptions& opts) {
  const Field f = syntax.field;
  switch (syntax.kind) {
    case ValueKind::kPort: {
      if (const auto n = parse_number(text.text)) {
        if (*n > syntax.max) return invalid("port", text, field, range_text(syntax.max));
        return uint_field_bytes(f, *n, syntax.max);
      }
      std::optional<uint32_t> port;
      if (opts.port_by_name) port = opts.port_by_name(text.text);
      if (!port)
        return error_at("unknown port " + quoted(text.text) + " for " + std::string(field),
                        text.column);
      return uint_field_bytes(f, *port, syntax.max);
    }
    case ValueKind::kService: {
      if (text.text == "none") return uint_field_bytes(f, SF_ACTION_NONE, 0xff);
      const auto id = ServiceRegistry::instance().id_of(text.text);
      if (!id)
        return error_at("unknown service " + quoted(text.text) + " for " + std::string(field),
                        text.column);
      return uint_field_bytes(f, *id, 0xff);
    }
    case ValueKind::kVlan: {
      const auto vid = parse_number(text.text);
      if (vid && *vid <= kVlanVidMax)
        return uint_field_bytes(f, *vid | SF_VLAN_PRESENT, kVlanMatchMask);
      if (vid && *vid == kVlanUntagged) return uint_field_bytes(f, 0, 0xffff);
      return invalid("VLAN", text, field, "0-4095, or 0xffff for untagged frames");
    }
    default:
      break;
  }

  // The remaining kinds take an optional "/mask".
  const size_t slash = text.text.find('/');
  const Located value = text.sub(0, slash);
  std::optional<Located> mask;
  if (slash != std::string_view::npos) {
    if (!allow_mask)
      return error_at("mask not allowed for " + std::string(field), text.column + slash);
    mask = text.sub(slash + 1);
  }

  switch (syntax.kind) {
    case ValueKind::kNumber: {
      auto v = parse_bounded(value, syntax.max, field);
      if (!v) return v.status();
      uint64_t m = UINT64_MAX;  // the whole field, even where it is wider than max
      if (mask) {
        auto parsed = parse_bounded(*mask, syntax.max, field);
        if (!parsed) return parsed.status();
        m = *parsed;
      }
      return uint_field_bytes(f, *v, m);
    }
    case ValueKind::kTos: {
      const auto v = parse_number(value.text);
      if (!v || *v > 0xff || (*v & ~kTosDscpMask) != 0)
        return invalid("value", value, field,
                       "a multiple of 4 in 0-252; the ECN bits are not matched");
      uint64_t m = kTosDscpMask;
      if (mask) {
        const auto parsed = parse_number(mask->text);
        if (!parsed || *parsed > 0xff || (*parsed & ~kTosDscpMask) != 0)
          return invalid("mask", *mask, field, "a mask within 0xfc");
        m = *parsed;
      }
      return uint_field_bytes(f, *v, m);
    }
    case ValueKind::kTcpFlags: {
      if (!value.text.empty() && (value.text[0] == '+' || value.text[0] == '-')) {
        if (mask)
          return error_at("mask not allowed with +flag syntax for " + std::string(field),
                          text.column + slash);
        return parse_tcp_flag_names(value, field);
      }
      const auto v = parse_number(value.text);
      if (!v || *v > kTcpFlagsAllBits)
        return invalid("value", value, field, "+flag-flag..., or a number 0-0xfff");
      uint64_t m = kTcpFlagsAllBits;
      if (mask) {
        const auto parsed = parse_number(mask->text);
        if (!parsed || *parsed > kTcpFlagsAllBits) return invalid("mask", *mask, field, "0-0xfff");
        m = *parsed;
      }
      return uint_field_bytes(f, *v, m);
    }
    case ValueKind::kMac: {
      FieldBytes b;
      const auto addr = parse_mac(value.text);
      if (!addr) return invalid("MAC address", value, field);
      MacBytes m{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
      if (mask) {
        const auto parsed = parse_mac(mask->text);
        if (!parsed) return invalid("MAC mask", *mask, field);
        m = *parsed;
      }
      for (size_t i = 0; i < m.size(); ++i) {
        b.value[i] = (*addr)[i] & m[i];
        b.mask[i] = m[i];
      }
      return b;
    }
    case ValueKind::kIpv4:
    case ValueKind::kIpv6: {
      const bool v4 = syntax.kind == ValueKind::kIpv4;
      const size_t n = v4 ? 4 : 16;
      const std::string_view family = v4 ? "IPv4" : "IPv6";
      FieldBytes b;
      if (v4) {
        const auto addr = parse_ipv4(value.text);
        if (!addr) return invalid(std::string(family) + " address", value, field);
        std::copy(addr->begin(), addr->end(), b.value.begin());
      } else {
        const auto addr = parse_ipv6(value.text);
        if (!addr) return invalid(std::string(family) + " address", value, field);
        std::copy(addr->begin(), addr->end(), b.value.begin());
      }
      set_prefix_mask(8 * n, b.mask.data(), n);
      if (mask) {
        // "/24" is a prefix length; "/255.255.0.0" or "/ffff::" an address mask.
        const bool address_mask = mask->text.find(v4 ? '.' : ':') != std::string_view::npos;
        if (address_mask) {
          if (v4) {
            const auto m = parse_ipv4(mask->text);
            if (!m) return invalid(std::string(family) + " mask", *mask, field);
            std::copy(m->begin(), m->end(), b.mask.begin());
          } else {
            const auto m = parse_ipv6(mask->text);
            if (!m) return invalid(std::string(family) + " mask", *mask, field);
            std::copy(m->begin(), m->end(), b.mask.begin());
          }
        } else {
          const auto length = parse_number(mask->text);
          if (!length || *length > 8 * n)
            return invalid("prefix length", *mask, field, range_text(8 * n));
          set_prefix_mask(*length, b.mask.data(), n);
        }
      }
      for (size_t i = 0; i < n; ++i) b.value[i] &= b.mask[i];
      return b;
    }
    default:
      break;
  }
  return Status::error("internal error: unhandled value kind for " + std::string(field));
}

// ---- the parser --------------------------------------------------------------

// dump-flows prints these; they are checked for shape and ignored.
bool is_counter_token(std::string_view name) {
  return name == "cookie" || name == "n_packets" || name == "n_bytes" || name == "idle_age" ||
         name == "hard_age";
}

// "1.234s", as ovs-ofctl prints duration=.
bool is_duration(std::string_view s) {
  if (s.size() < 2 || s.back() != 's') return false;
  s.remove_suffix(1);
  const size_t dot = s.find('.');
  const std::string_view whole = s.substr(0, dot);
  const std::string_view fraction = dot == std::string_view::npos ? "x" : s.substr(dot + 1);
  auto digits = [](std::string_view d) {
    return !d.empty() &&
           std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(whole) && (dot == std::string_view::npos || digits(fraction));
}

// Where a field landed in the key: ipv6_src shares its bytes with nw_src, so
// both count as one slot when looking for a field given twice.
Field key_slot(Field f) {
  if (f == Field::kIpv6Src) return Field::kNwSrc;
  if (f == Field::kIpv6Dst) return Field::kNwDst;
  return f;
}

class RuleParser {
 public:
  RuleParser(std::string_view line, const FlowParseOptions& opts) : line_{line, 1}, opts_(opts) {}

  Result<ParsedFlowLine> parse() {
    Tokenizer tokens(line_);
    std::optional<Located> actions;
    while (const auto token = tokens.next()) {
      if (token->text.starts_with("actions=")) {
        // actions= takes the rest of the line, separators included.
        const size_t offset = token->column - line_.column;
        actions = line_.sub(offset + std::string_view("actions=").size());
        break;
      }
      if (Status s = parse_token(*token); !s) return s;
    }
    if (Status s = check_prerequisites(); !s) return s;
    if (actions) {
      auto list = parse_actions(*actions);
      if (!list) return list.status();
      out_.rule.actions = std::move(*list);
      out_.has_actions = true;
    } else if (!opts_.match_only) {
      return Status::error("missing actions= (every rule needs actions, e.g. actions=drop)");
    }
    return std::move(out_);
  }

 private:
  // Who set a key slot, to explain a field given twice.
  struct Setter {
    std::string_view name;
    size_t column;
    bool shorthand;
  };
  struct GivenField {
    const FieldSyntax* syntax;
    size_t column;
  };

  Status parse_token(const Located& token) {
    const KeyValue kv = split_key_value(token, '=');
    const std::string_view name = kv.key.text;
    if (name.empty()) return error_at("missing field name in " + quoted(token.text), token.column);

    if (const Shorthand* shorthand = find_shorthand(name)) {
      if (kv.value) return error_at(quoted(name) + " takes no value", token.column);
      return apply_shorthand(*shorthand, token.column);
    }

    const FieldSyntax* field = find_field_syntax(name);
    const bool known = field || name == "table" || name == "priority" || name == "duration" ||
                       is_counter_token(name) || name == "actions";
    if (!known) return error_at("unknown field " + quoted(name), token.column);
    if (!kv.value || kv.value->text.empty())
      return error_at(
          "missing value for " + std::string(name) + " (write " + std::string(name) + "=VALUE)",
          token.column);
    const Located& value = *kv.value;

    if (name == "table" || name == "priority") {
      const bool is_table = name == "table";
      std::optional<size_t>& seen = is_table ? table_column_ : priority_column_;
      if (seen) return given_twice(name, token.column, *seen);
      seen = token.column;
      auto v = parse_bounded(value, is_table ? kMaxTableId : 0xffff, name);
      if (!v) return v.status();
      if (is_table) {
        out_.rule.table = static_cast<uint8_t>(*v);
        out_.has_table = true;
      } else {
        out_.rule.priority = static_cast<uint16_t>(*v);
        out_.has_priority = true;
      }
      return Status::ok();
    }
    if (name == "duration") {
      if (!is_duration(value.text)) return invalid("value", value, name, "seconds such as 1.234s");
      return Status::ok();
    }
    if (is_counter_token(name)) {
      // cookie may carry a mask in filters (cookie=0x1/0xff).
      const size_t slash = name == "cookie" ? value.text.find('/') : std::string_view::npos;
      const Located number = value.sub(0, slash);
      if (!parse_number(number.text)) return invalid("value", number, name, "a number");
      if (slash != std::string_view::npos && !parse_number(value.text.substr(slash + 1)))
        return invalid("value", value.sub(slash + 1), name, "a number");
      return Status::ok();
    }
    if (name == "actions") return Status::error("internal error: actions= not split off");

    auto bytes = parse_field_value(*field, name, value, field->maskable, opts_);
    if (!bytes) return bytes.status();
    if (Status s = set_field(field->field, *bytes, name, token.column, false); !s) return s;
    given_.push_back({field, token.column});
    return Status::ok();
  }

  Status apply_shorthand(const Shorthand& shorthand, size_t column) {
    if (Status s =
            set_field(Field::kDlType, uint_field_bytes(Field::kDlType, shorthand.dl_type, 0xffff),
                      shorthand.name, column, true);
        !s)
      return s;
    if (shorthand.nw_proto < 0) return Status::ok();
    return set_field(
        Field::kNwProto,
        uint_field_bytes(Field::kNwProto, static_cast<uint64_t>(shorthand.nw_proto), 0xff),
        shorthand.name, column, true);
  }

  // A field may be given once; a shorthand may repeat what is already there
  // ("ip,tcp", "tcp,nw_proto=6") but not contradict it ("tcp,udp").
  Status set_field(Field f, const FieldBytes& bytes, std::string_view name, size_t column,
                   bool shorthand) {
    std::optional<Setter>& setter = setters_[static_cast<size_t>(key_slot(f))];
    if (setter) {
      const size_t n = field_info(f).size;
      const bool same =
          std::memcmp(field_ptr(out_.rule.match.value, f), bytes.value.data(), n) == 0 &&
          std::memcmp(field_ptr(out_.rule.match.mask, f), bytes.mask.data(), n) == 0;
      if (!same || (!shorthand && !setter->shorthand)) {
        if (setter->name == name) return given_twice(name, column, setter->column);
        return Status::error(quoted(name) + " at column " + std::to_string(column) +
                             " conflicts with " + quoted(setter->name) + " at column " +
                             std::to_string(setter->column));
      }
      return Status::ok();
    }
    setter = Setter{name, column, shorthand};
    out_.rule.match.set(f, bytes.value.data(), bytes.mask.data());
    return Status::ok();
  }

  static Status given_twice(std::string_view name, size_t column, size_t first_column) {
    return Status::error(std::string(name) + " given twice at column " + std::to_string(column) +
                         " (first at column " + std::to_string(first_column) + ")");
  }

  bool exact(Field f, uint64_t v) const {
    const Match& m = out_.rule.match;
    const uint64_t full =
        field_info(f).size >= 8 ? UINT64_MAX : (1ULL << (8 * field_info(f).size)) - 1;
    return get_field_uint(m.mask, f) == full && get_field_uint(m.value, f) == v;
  }

  bool satisfied(Prereq p) const {
    const bool ip = exact(Field::kDlType, kEthTypeIpv4);
    const bool ipv6 = exact(Field::kDlType, kEthTypeIpv6);
    const bool arp = exact(Field::kDlType, kEthTypeArp);
    switch (p) {
      case Prereq::kNone:
        return true;
      case Prereq::kIpOrArp:
        return ip || arp;
      case Prereq::kIpv6:
        return ipv6;
      case Prereq::kIpOrIpv6:
        return ip || ipv6;
      case Prereq::kIpIpv6OrArp:
        return ip || ipv6 || arp;
      case Prereq::kTcpOrUdp:
        return (ip || ipv6) &&
               (exact(Field::kNwProto, kProtoTcp) || exact(Field::kNwProto, kProtoUdp));
      case Prereq::kIcmp:
        return (ip && exact(Field::kNwProto, kProtoIcmp)) ||
               (ipv6 && exact(Field::kNwProto, kProtoIcmpv6));
      case Prereq::kTcp:
        return (ip || ipv6) && exact(Field::kNwProto, kProtoTcp);
    }
    return false;
  }

  Status check_prerequisites() const {
    for (const GivenField& g : given_) {
      if (satisfied(g.syntax->prereq)) continue;
      return Status::error(std::string(g.syntax->name) + " requires " +
                           std::string(prereq_text(g.syntax->prereq)) + " (at column " +
                           std::to_string(g.column) + ")");
    }
    return Status::ok();
  }

  Result<uint32_t> parse_port(const Located& text, std::string_view action) const {
    if (const auto n = parse_number(text.text)) {
      if (*n > UINT32_MAX) return invalid("port", text, action, range_text(UINT32_MAX));
      return static_cast<uint32_t>(*n);
    }
    std::optional<uint32_t> port;
    if (opts_.port_by_name) port = opts_.port_by_name(text.text);
    if (!port)
      return error_at("unknown port " + quoted(text.text) + " for " + std::string(action),
                      text.column);
    return *port;
  }

  Result<Action> set_field_action(std::string_view field_name, const Located& value,
                                  std::string_view action_name, bool mod_syntax,
                                  size_t column) const {
    const FieldSyntax* field = find_field_syntax(field_name);
    if (!field || !field->settable)
      return error_at("set_field cannot set " + quoted(field_name), column);
    auto bytes = parse_field_value(*field, action_name, value, !mod_syntax, opts_);
    if (!bytes) return bytes.status();
    Action a;
    a.type = ActionType::kSetField;
    a.field = field->field;
    a.mod_syntax = mod_syntax;
    a.value = bytes->value;
    a.mask = bytes->mask;
    return a;
  }

  Result<Action> parse_action(const Located& token) const {
    const std::string_view t = token.text;
    if (t == "in_port") return Action::output_in_port();
    if (t == "dec_ttl") return Action::dec_ttl();
    if (parse_number(t)) {  // a bare port number is output:N, as in ovs-ofctl
      auto port = parse_port(token, "output");
      if (!port) return port.status();
      return Action::output(*port);
    }
    const KeyValue kv = split_key_value(token, ':');
    const std::string_view name = kv.key.text;
    const bool known = name == "output" || name == "goto_table" || name == "set_field" ||
                       name == "softflow" || name == "mod_dl_src" || name == "mod_dl_dst" ||
                       name == "mod_nw_src" || name == "mod_nw_dst" || name == "mod_tp_src" ||
                       name == "mod_tp_dst";
    if (!known) return error_at("unknown action " + quoted(t), token.column);
    if (!kv.value || kv.value->text.empty())
      return error_at("missing argument for " + std::string(name) + " (write " + std::string(name) +
                          ":ARGUMENT)",
                      token.column);
    const Located& arg = *kv.value;

    if (name == "output") {
      auto port = parse_port(arg, name);
      if (!port) return port.status();
      return Action::output(*port);
    }
    if (name == "goto_table") {
      auto table = parse_bounded(arg, kMaxTableId, name);
      if (!table) return table.status();
      if (*table <= out_.rule.table)
        return error_at(std::string(t) + " must name a table after table " +
                            std::to_string(out_.rule.table) + " (OpenFlow only jumps forward)",
                        token.column);
      return Action::goto_table(static_cast<uint8_t>(*table));
    }
    if (name == "softflow") {
      const size_t colon = arg.text.find(':');
      if (colon == std::string_view::npos || colon + 1 == arg.text.size())
        return error_at("softflow action needs NAME:ARG, not " + quoted(t), token.column);
      const Located service = arg.sub(0, colon);
      const auto id = ServiceRegistry::instance().id_of(service.text);
      if (!id)
        return error_at("unknown service " + quoted(service.text) + " for softflow",
                        service.column);
      auto argument = parse_bounded(arg.sub(colon + 1), UINT32_MAX, "softflow argument");
      if (!argument) return argument.status();
      return Action::softflow(*id, static_cast<uint32_t>(*argument));
    }
    if (name == "set_field") {
      const size_t arrow = arg.text.find("->");
      if (arrow == std::string_view::npos)
        return error_at("set_field needs VALUE->FIELD, not " + quoted(t), token.column);
      const Located target = arg.sub(arrow + 2);
      return set_field_action(target.text, arg.sub(0, arrow), name, false, target.column);
    }
    // mod_dl_src:MAC and friends: a full-width set of the named field.
    return set_field_action(name.substr(std::string_view("mod_").size()), arg, name, true,
                            token.column);
  }

  Result<ActionList> parse_actions(const Located& text) const {
    Tokenizer tokens(text);
    ActionList list;
    std::optional<Located> drop;
    std::optional<Located> last_only;  // softflow or goto_table: nothing may follow
    bool any = false;
    while (const auto token = tokens.next()) {
      if (last_only) {
        const std::string_view which =
            last_only->text.starts_with("softflow") ? "softflow" : "goto_table";
        return Status::error(
            std::string(which) + " action must be the last action: " + quoted(token->text) +
            " at column " + std::to_string(token->column) + " follows " + quoted(last_only->text));
      }
      if (drop)
        return error_at("drop must be the only action, but " + quoted(token->text) + " follows it",
                        token->column);
      if (token->text == "drop") {
        if (any) return error_at("drop must be the only action", token->column);
        drop = *token;
        any = true;
        continue;
      }
      any = true;
      auto action = parse_action(*token);
      if (!action) return action.status();
      if (action->type == ActionType::kSoftflow || action->type == ActionType::kGotoTable)
        last_only = *token;
      list.push_back(*action);
    }
    if (!any)
      return error_at("empty actions= (write actions=drop to drop)",
                      text.column - std::string_view("actions=").size());
    return list;
  }

  Located line_;
  const FlowParseOptions& opts_;
  ParsedFlowLine out_;
  std::optional<size_t> table_column_;
  std::optional<size_t> priority_column_;
  std::array<std::optional<Setter>, kFieldCount> setters_{};
  std::vector<GivenField> given_;
};

// ---- the printer -----------------------------------------------------------------

bool prints_in_hex(Field f) {
  return f == Field::kDlType || f == Field::kVlanTci || f == Field::kTcpFlags ||
         f == Field::kNwFrag;
}

// A value with its mask in the syntax the parser reads back: addresses in
// their own notation, integers in decimal when exact, else 0xVALUE/0xMASK.
std::string format_field_value(Field f, const uint8_t* value, const uint8_t* mask) {
  switch (f) {
    case Field::kDlSrc:
    case Field::kDlDst:
      return format_masked_address(AddressKind::kMac, value, mask);
    case Field::kNwSrc:
    case Field::kNwDst:
      return format_masked_address(AddressKind::kIpv4, value, mask);
    case Field::kIpv6Src:
    case Field::kIpv6Dst:
      return format_masked_address(AddressKind::kIpv6, value, mask);
    default:
      break;
  }
  const uint64_t v = bytes_to_uint(f, value);
  const uint64_t m = bytes_to_uint(f, mask);
  const bool exact = f == Field::kNwTos ? m == kTosDscpMask : all_ones(mask, field_info(f).size);
  if (exact) return prints_in_hex(f) ? hex(v) : std::to_string(v);
  return hex(v) + "/" + hex(m);
}

class MatchPrinter {
 public:
  explicit MatchPrinter(const Match& match) : match_(match) {}

  std::string print() {
    print_uint(Field::kSfStage);
    print_sf_action();
    print_uint(Field::kSfMetadata);
    const bool nw_proto_printed = print_protocol();
    print_uint(Field::kInPort);
    print_vlan();
    print_uint(Field::kDlSrc);
    print_uint(Field::kDlDst);
    print_addresses();
    if (!nw_proto_printed) print_uint(Field::kNwProto);
    print_uint(Field::kNwTos);
    print_uint(Field::kNwFrag);
    print_transport();
    print_tcp_flags();
    return out_;
  }

 private:
  bool has(Field f) const { return !all_zero(field_ptr(match_.mask, f), field_info(f).size); }
  bool exact(Field f) const { return all_ones(field_ptr(match_.mask, f), field_info(f).size); }
  uint64_t value(Field f) const { return get_field_uint(match_.value, f); }
  bool is(Field f, uint64_t v) const { return exact(f) && value(f) == v; }

  void add(std::string_view text) {
    if (!out_.empty()) out_ += ',';
    out_ += text;
  }
  void add(std::string_view name, const std::string& value_text) {
    add(std::string(name) + "=" + value_text);
  }
  void print_field(std::string_view name, Field f) {
    if (has(f))
      add(name, format_field_value(f, field_ptr(match_.value, f), field_ptr(match_.mask, f)));
  }
  void print_uint(Field f) { print_field(field_info(f).name, f); }

  void print_sf_action() {
    if (!exact(Field::kSfAction)) return print_uint(Field::kSfAction);
    const auto id = static_cast<uint8_t>(value(Field::kSfAction));
    const std::string_view name = ServiceRegistry::instance().name_of(id);
    if (id == SF_ACTION_NONE)
      add("sf_action=none");
    else if (!name.empty())
      add("sf_action", std::string(name));
    else
      add("sf_action", std::to_string(id));  // an id no registered service has
  }

  // The shorthand (tcp, ip, arp, ...) or dl_type; true if it covered nw_proto.
  bool print_protocol() {
    if (!exact(Field::kDlType)) {
      print_uint(Field::kDlType);
      return false;
    }
    const uint64_t dl_type = value(Field::kDlType);
    const bool proto_exact = exact(Field::kNwProto);
    const uint64_t proto = value(Field::kNwProto);
    for (const Shorthand& s : kShorthands) {
      if (s.dl_type != dl_type || s.nw_proto < 0) continue;
      if (proto_exact && proto == static_cast<uint64_t>(s.nw_proto)) {
        add(s.name);
        return true;
      }
    }
    for (const Shorthand& s : kShorthands) {
      if (s.dl_type == dl_type && s.nw_proto < 0) {
        add(s.name);
        return false;
      }
    }
    print_uint(Field::kDlType);
    return false;
  }

  void print_vlan() {
    if (!has(Field::kVlanTci)) return;
    const uint64_t mask = get_field_uint(match_.mask, Field::kVlanTci);
    const uint64_t tci = value(Field::kVlanTci);
    if (mask == kVlanMatchMask && (tci & SF_VLAN_PRESENT))
      add("dl_vlan", std::to_string(tci & kVlanVidMax));
    else if (mask == 0xffff && tci == 0)
      add("dl_vlan=0xffff");
    else
      print_uint(Field::kVlanTci);
  }

  // nw_src/nw_dst use the first 4 bytes of the address slots, ipv6_src/dst all
  // 16; IPv6 is printed when dl_type says so or the mask reaches past 4 bytes.
  void print_addresses() {
    const auto wider_than_ipv4 = [&](Field f) {
      return !all_zero(field_ptr(match_.mask, f) + 4, 12);
    };
    const bool ipv6 = is(Field::kDlType, kEthTypeIpv6) || wider_than_ipv4(Field::kIpv6Src) ||
                      wider_than_ipv4(Field::kIpv6Dst);
    if (ipv6) {
      print_uint(Field::kIpv6Src);
      print_uint(Field::kIpv6Dst);
    } else {
      print_uint(Field::kNwSrc);
      print_uint(Field::kNwDst);
    }
  }

  void print_transport() {
    const bool icmp = (is(Field::kDlType, kEthTypeIpv4) && is(Field::kNwProto, kProtoIcmp)) ||
                      (is(Field::kDlType, kEthTypeIpv6) && is(Field::kNwProto, kProtoIcmpv6));
    const auto print_port = [&](Field f, std::string_view icmp_name) {
      if (icmp && exact(f) && value(f) <= 0xff)
        add(icmp_name, std::to_string(value(f)));
      else
        print_uint(f);
    };
    print_port(Field::kTpSrc, "icmp_type");
    print_port(Field::kTpDst, "icmp_code");
  }

  void print_tcp_flags() {
    if (!has(Field::kTcpFlags)) return;
    const uint64_t mask = get_field_uint(match_.mask, Field::kTcpFlags);
    if ((mask & ~uint64_t{kTcpFlagsNamedBits}) != 0) return print_uint(Field::kTcpFlags);
    // Flags that must be set first, then those that must be clear.
    const uint64_t flags = value(Field::kTcpFlags);
    std::string text;
    for (const bool set : {true, false}) {
      for (const TcpFlagName& f : kTcpFlagNames) {
        if (!(mask & f.bit) || ((flags & f.bit) != 0) != set) continue;
        text += set ? '+' : '-';
        text += f.name;
      }
    }
    add("tcp_flags", text);
  }

  const Match& match_;
  std::string out_;
};

std::string print_action(const Action& a) {
  switch (a.type) {
    case ActionType::kOutput:
      return "output:" + std::to_string(a.port);
    case ActionType::kOutputInPort:
      return "in_port";
    case ActionType::kGotoTable:
      return "goto_table:" + std::to_string(a.table);
    case ActionType::kDecTtl:
      return "dec_ttl";
    case ActionType::kSoftflow: {
      const std::string_view name = ServiceRegistry::instance().name_of(a.service);
      return "softflow:" + (name.empty() ? std::to_string(a.service) : std::string(name)) + ":" +
             std::to_string(a.sf_argument);
    }
    case ActionType::kSetField: {
      if (a.field >= Field::kCount) return "set_field:?";
      const std::string_view name = field_info(a.field).name;
      const bool has_mod_form = a.field == Field::kDlSrc || a.field == Field::kDlDst ||
                                a.field == Field::kNwSrc || a.field == Field::kNwDst ||
                                a.field == Field::kTpSrc || a.field == Field::kTpDst;
      const std::string value = format_field_value(a.field, a.value.data(), a.mask.data());
      if (a.mod_syntax && has_mod_form && all_ones(a.mask.data(), field_info(a.field).size))
        return "mod_" + std::string(name) + ":" + value;
      return "set_field:" + value + "->" + std::string(name);
    }
  }
  return "?";
}

}  // namespace

Result<ParsedFlowLine> parse_flow_line(std::string_view line, const FlowParseOptions& opts) {
  auto parsed = RuleParser(line, opts).parse();
  if (parsed && opts.check_rule && !opts.match_only)
    if (Status s = opts.check_rule(parsed->rule); !s) return s;
  return parsed;
}

Result<FlowRule> parse_flow(std::string_view line, const FlowParseOptions& opts) {
  auto parsed = parse_flow_line(line, opts);
  if (!parsed) return parsed.status();
  return std::move(parsed->rule);
}

Result<std::vector<FlowRule>> parse_flows(std::string_view text, const FlowParseOptions& opts) {
  std::vector<FlowRule> rules;
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    // '#' appears in no field or action, so it always starts a comment.
    line = line.substr(0, line.find('#'));
    if (std::all_of(line.begin(), line.end(), is_separator)) continue;
    auto rule = parse_flow(line, opts);
    if (!rule)
      return Status(rule.status().code(),
                    "line " + std::to_string(line_number) + ": " + rule.error());
    rules.push_back(std::move(*rule));
  }
  return rules;
}

std::string print_match(const Match& match) { return MatchPrinter(match).print(); }

std::string print_actions(const ActionList& actions) {
  if (actions.empty()) return "drop";
  std::string out;
  for (const Action& a : actions) {
    if (!out.empty()) out += ',';
    out += print_action(a);
  }
  return out;
}

std::string print_flow(const FlowRule& rule) {
  std::string out =
      "table=" + std::to_string(rule.table) + ", priority=" + std::to_string(rule.priority);
  const std::string match = print_match(rule.match);
  if (!match.empty()) out += "," + match;
  return out + " actions=" + print_actions(rule.actions);
}

}  // namespace softflow

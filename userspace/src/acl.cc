#include "softflow/acl.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

namespace softflow {

namespace {

constexpr uint32_t prefix_mask(int len) {
  return len <= 0 ? 0u : len >= 32 ? ~0u : ~0u << (32 - len);
}

std::string ipv4_text(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xff) + "." +
         std::to_string((a >> 8) & 0xff) + "." + std::to_string(a & 0xff);
}

std::string hex(uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*X", digits, v);
  return buf;
}

// ---- ClassBench filter lines ---------------------------------------------------

// A cursor over one line; every error names what was expected and where.
class LineScanner {
 public:
  explicit LineScanner(std::string_view line) : line_(line) {}

  void skip_space() {
    while (pos_ < line_.size() && std::isspace(static_cast<unsigned char>(line_[pos_]))) ++pos_;
  }
  bool at_end() {
    skip_space();
    return pos_ == line_.size();
  }
  Status expect(char c, std::string_view what) {
    skip_space();
    if (pos_ < line_.size() && line_[pos_] == c) {
      ++pos_;
      return Status::ok();
    }
    return error("expected " + std::string(what));
  }
  // A decimal number up to 'max'.
  Result<uint32_t> number(uint32_t max, std::string_view what) {
    skip_space();
    const size_t start = pos_;
    uint64_t v = 0;
    while (pos_ < line_.size() && std::isdigit(static_cast<unsigned char>(line_[pos_]))) {
      v = v * 10 + static_cast<uint64_t>(line_[pos_] - '0');
      if (v > max) return error(std::string(what) + " above " + std::to_string(max), start);
      ++pos_;
    }
    if (pos_ == start) return error("expected " + std::string(what), start);
    return static_cast<uint32_t>(v);
  }
  // 0xNN (hex digits after 0x), up to 'max'.
  Result<uint32_t> hex_number(uint32_t max, std::string_view what) {
    skip_space();
    const size_t start = pos_;
    if (line_.substr(pos_, 2) != "0x" && line_.substr(pos_, 2) != "0X")
      return error("expected " + std::string(what) + " as 0x...", start);
    pos_ += 2;
    uint64_t v = 0;
    const size_t digits = pos_;
    while (pos_ < line_.size() && std::isxdigit(static_cast<unsigned char>(line_[pos_]))) {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(line_[pos_])));
      v = v * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
      if (v > max) return error(std::string(what) + " above " + hex(max, 2), start);
      ++pos_;
    }
    if (pos_ == digits) return error("expected " + std::string(what) + " as 0x...", start);
    return static_cast<uint32_t>(v);
  }
  // a.b.c.d/len; host bits beyond len are cleared.
  Status prefix(std::string_view what, uint32_t& addr, int& len) {
    addr = 0;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) {
        if (Status s = expect('.', std::string(what) + " address a.b.c.d"); !s) return s;
      }
      auto octet = number(255, std::string(what) + " address octet");
      if (!octet) return octet.status();
      addr = addr << 8 | *octet;
    }
    if (Status s = expect('/', std::string(what) + " prefix length (/LEN)"); !s) return s;
    auto l = number(32, std::string(what) + " prefix length");
    if (!l) return l.status();
    len = static_cast<int>(*l);
    addr &= prefix_mask(len);
    return Status::ok();
  }
  Status range(std::string_view what, uint16_t& lo, uint16_t& hi) {
    auto a = number(65535, std::string(what) + " port");
    if (!a) return a.status();
    if (Status s = expect(':', "':' in the " + std::string(what) + " port range LO : HI"); !s)
      return s;
    auto b = number(65535, std::string(what) + " port");
    if (!b) return b.status();
    if (*a > *b)
      return error(std::string(what) + " port range " + std::to_string(*a) + " : " +
                   std::to_string(*b) + " is empty (LO > HI)");
    lo = static_cast<uint16_t>(*a);
    hi = static_cast<uint16_t>(*b);
    return Status::ok();
  }
  Status error(const std::string& what) const { return error(what, pos_); }
  Status error(const std::string& what, size_t at) const {
    std::string near(line_.substr(at, 16));
    return Status::error(what + " at column " + std::to_string(at + 1) +
                         (near.empty() ? " (end of line)" : " near '" + near + "'"));
  }

 private:
  std::string_view line_;
  size_t pos_ = 0;
};

Result<AclRule> parse_classbench_line(std::string_view line) {
  LineScanner in(line);
  AclRule r;
  if (Status s = in.expect('@', "'@' starting a ClassBench filter"); !s) return s;
  if (Status s = in.prefix("source", r.src, r.src_len); !s) return s;
  if (Status s = in.prefix("destination", r.dst, r.dst_len); !s) return s;
  if (Status s = in.range("source", r.sport_lo, r.sport_hi); !s) return s;
  if (Status s = in.range("destination", r.dport_lo, r.dport_hi); !s) return s;
  auto proto = in.hex_number(0xff, "protocol");
  if (!proto) return proto.status();
  if (Status s = in.expect('/', "protocol mask (0xNN/0xFF or 0xNN/0x00)"); !s) return s;
  auto proto_mask = in.hex_number(0xff, "protocol mask");
  if (!proto_mask) return proto_mask.status();
  if (*proto_mask == 0xff) {
    r.proto = static_cast<uint8_t>(*proto);
  } else if (*proto_mask != 0) {
    return in.error("protocol mask must be 0xFF (exact) or 0x00 (any), not " + hex(*proto_mask, 2));
  }
  // The optional flags field: ClassBench's extension, not a header field we
  // can match, so it is read (to reject garbage) and dropped.
  if (!in.at_end()) {
    auto flags = in.hex_number(0xffff, "flags");
    if (!flags) return flags.status();
    if (Status s = in.expect('/', "flags mask (0xNNNN/0xNNNN)"); !s) return s;
    auto flags_mask = in.hex_number(0xffff, "flags mask");
    if (!flags_mask) return flags_mask.status();
  }
  if (!in.at_end()) return in.error("unexpected text after the filter");
  const bool ports_any =
      r.sport_lo == 0 && r.sport_hi == 65535 && r.dport_lo == 0 && r.dport_hi == 65535;
  if (r.proto && *r.proto != 6 && *r.proto != 17 && !ports_any)
    return Status::error("port ranges on protocol " + std::to_string(*r.proto) +
                         " (only TCP and UDP have ports)");
  return r;
}

// ---- the ClassBench-style generator ------------------------------------------------

// Draws an index in [0, weights.size()) with the given integer weights.
size_t weighted(std::mt19937_64& rng, std::initializer_list<unsigned> weights) {
  unsigned total = 0;
  for (unsigned w : weights) total += w;
  unsigned x = static_cast<unsigned>(rng() % total);
  size_t i = 0;
  for (unsigned w : weights) {
    if (x < w) return i;
    x -= w;
    ++i;
  }
  return weights.size() - 1;
}

// Skewed pick: the square of a uniform draw favours low indices, giving a
// few address pairs many rules and many pairs a few (acl1 has 110 distinct
// pairs for 2,572 rules, the busiest with 88).
size_t skewed_index(std::mt19937_64& rng, size_t n) {
  const double x = static_cast<double>(rng() >> 11) / static_cast<double>(1ULL << 53);
  return std::min(n - 1, static_cast<size_t>(x * x * static_cast<double>(n)));
}

int draw_source_len(std::mt19937_64& rng) {
  // acl1: /32 76 %, /23 10 %, /31 9 %, /30 4 %, a few /8 and /0.
  static constexpr int kLens[] = {32, 23, 31, 30, 8, 0};
  return kLens[weighted(rng, {760, 100, 90, 44, 3, 3})];
}

int draw_destination_len(std::mt19937_64& rng) {
  // acl1: /32 73 %, /22 10 %, /30 7 %, /31 5 %, /24-/28 1 %, and short
  // prefixes (/1../16, /0) 3 %.
  switch (weighted(rng, {727, 104, 70, 54, 13, 28, 4})) {
    case 0:
      return 32;
    case 1:
      return 22;
    case 2:
      return 30;
    case 3:
      return 31;
    case 4:
      return 24 + static_cast<int>(rng() % 5);
    case 5:
      return 1 + static_cast<int>(rng() % 16);
    default:
      return 0;
  }
}

struct AddressPair {
  uint32_t src;
  int src_len;
  uint32_t dst;
  int dst_len;
};

// Sources come from one protected site /16 (acl1: 99 % from one /16);
// destinations from a handful of /16 networks, some much busier than others.
std::vector<AddressPair> draw_address_pairs(std::mt19937_64& rng, size_t count) {
  // The site's /16 lies in the traces' client network (10.0.0.0/8) and the
  // protected /16s in their server network (172.16.0.0/12), so the rules meet
  // the generated traffic (see pipelines.h's address plan).
  const uint32_t site = 0x0a000000u | (static_cast<uint32_t>(rng()) & 0x00ff0000u);
  std::vector<uint32_t> networks(3 + count / 400);
  for (uint32_t& n : networks) n = 0xac100000u | (static_cast<uint32_t>(rng()) & 0x000f0000u);
  std::vector<AddressPair> pairs(std::max<size_t>(1, count / 23));
  for (AddressPair& p : pairs) {
    p.src_len = draw_source_len(rng);
    p.src = (site | static_cast<uint32_t>(rng() & 0xffff)) & prefix_mask(p.src_len);
    p.dst_len = draw_destination_len(rng);
    const uint32_t net = networks[skewed_index(rng, networks.size())];
    p.dst = (net | static_cast<uint32_t>(rng() & 0xffff)) & prefix_mask(p.dst_len);
  }
  return pairs;
}

// Destination ports: 72 % one exact port (half well-known services, half
// registered ports as in acl1's 1521, 1724, 5555, 14753 ...), 10 % any,
// 18 % a range: mostly narrow blocks such as 1300:1350 or 61600:61609, some
// open-ended ones such as 1024:65535.
void draw_destination_ports(std::mt19937_64& rng, AclRule& r) {
  static constexpr uint16_t kServices[] = {
      20,  21,  22,  23,  25,  53,   80,   110,  123,  135,  137,  139,  143,  161,  389,  443,
      445, 465, 514, 993, 995, 1433, 1434, 1521, 1526, 1723, 3306, 3389, 5060, 5432, 8080, 8443};
  switch (weighted(rng, {36, 36, 10, 14, 4})) {
    case 0:
      r.dport_lo = r.dport_hi = kServices[rng() % std::size(kServices)];
      break;
    case 1:
      r.dport_lo = r.dport_hi = static_cast<uint16_t>(1024 + rng() % (49152 - 1024));
      break;
    case 2:
      r.dport_lo = 0;
      r.dport_hi = 65535;
      break;
    case 3: {
      static constexpr uint16_t kWidths[] = {10, 11, 20, 40, 50, 51, 100, 101};
      r.dport_lo = static_cast<uint16_t>(1000 + 10 * (rng() % 6200));  // 1000 .. 62990
      r.dport_hi = static_cast<uint16_t>(r.dport_lo + kWidths[rng() % std::size(kWidths)] - 1);
      break;
    }
    default: {
      static constexpr uint16_t kStarts[] = {1024, 1025, 2049, 5001, 10000, 32768};
      r.dport_lo = kStarts[rng() % std::size(kStarts)];
      r.dport_hi = 65535;
      break;
    }
  }
}

AclRule draw_rule(std::mt19937_64& rng, const std::vector<AddressPair>& pairs) {
  const AddressPair& p = pairs[skewed_index(rng, pairs.size())];
  AclRule r;
  r.src = p.src;
  r.src_len = p.src_len;
  r.dst = p.dst;
  r.dst_len = p.dst_len;
  // acl1: TCP 91.5 %, UDP 4.9 %, ICMP 1.6 %, any 2 %.
  switch (weighted(rng, {915, 49, 16, 20})) {
    case 0:
      r.proto = 6;
      break;
    case 1:
      r.proto = 17;
      break;
    case 2:
      r.proto = 1;
      break;
    default:
      r.proto = std::nullopt;
      break;
  }
  if (r.proto == 6 || r.proto == 17) {
    draw_destination_ports(rng, r);
    // Source ports are almost always any; now and then the ephemeral range.
    if (rng() % 50 == 0) r.sport_lo = 1024;
  }
  return r;
}

auto rule_tuple(const AclRule& r) {
  return std::make_tuple(r.src, r.src_len, r.dst, r.dst_len, r.sport_lo, r.sport_hi, r.dport_lo,
                         r.dport_hi, r.proto.has_value(), r.proto.value_or(0));
}

std::string port_match(std::string_view field, const MaskedValue& p) {
  if (p.mask == 0) return "";
  std::string out = "," + std::string(field) + "=" + std::to_string(p.value);
  if (p.mask != 0xffff) {
    char mask[8];
    std::snprintf(mask, sizeof mask, "0x%04x", p.mask);
    out += "/" + std::string(mask);
  }
  return out;
}

std::string prefix_match(std::string_view field, uint32_t addr, int len) {
  if (len == 0) return "";
  std::string out = "," + std::string(field) + "=" + ipv4_text(addr);
  if (len < 32) out += "/" + std::to_string(len);
  return out;
}

}  // namespace

std::vector<MaskedValue> range_to_prefixes(uint32_t lo, uint32_t hi, int bits) {
  std::vector<MaskedValue> out;
  if (bits < 1 || bits > 16) return out;
  const uint64_t limit = 1ULL << bits;
  if (lo > hi || hi >= limit) return out;
  // Greedy from the low end: the largest block that starts at 'next' (is
  // aligned to its size there) and ends at or before hi.  Each block is a
  // maximal aligned block inside the range, which makes the cover minimal.
  uint64_t next = lo;
  while (next <= hi) {
    uint64_t size = 1;
    while (size < limit && next % (2 * size) == 0 && next + 2 * size - 1 <= hi) size *= 2;
    out.push_back({static_cast<uint32_t>(next), static_cast<uint32_t>((limit - 1) & ~(size - 1))});
    next += size;
  }
  return out;
}

Result<std::vector<AclRule>> parse_classbench(std::string_view text) {
  std::vector<AclRule> rules;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto rule = parse_classbench_line(line);
    if (!rule) return Status::error("line " + std::to_string(line_no) + ": " + rule.error());
    rules.push_back(*rule);
  }
  return rules;
}

Result<std::vector<AclRule>> read_classbench(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(path + ": cannot open: " + std::strerror(errno), EIO);
  std::stringstream text;
  text << in.rdbuf();
  auto rules = parse_classbench(text.str());
  if (!rules) return Status::error(path + ": " + rules.error());
  if (rules->empty()) return Status::error(path + ": no ClassBench filters in the file");
  return rules;
}

std::vector<AclRule> generate_acl(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<AddressPair> pairs = draw_address_pairs(rng, count);
  std::vector<AclRule> rules;
  std::set<decltype(rule_tuple(AclRule{}))> seen;
  // Duplicates are redrawn; the address pairs alone allow far more distinct
  // rules than asked for (pairs x ports), so this ends quickly.
  while (rules.size() < count) {
    AclRule r = draw_rule(rng, pairs);
    if (seen.insert(rule_tuple(r)).second) rules.push_back(r);
  }
  return rules;
}

std::vector<AclRule> sample_acl(const std::vector<AclRule>& rules, size_t n, uint64_t seed) {
  if (n >= rules.size()) return rules;
  // Selection sampling (Knuth's algorithm S): each rule is kept with
  // probability (still needed) / (still left), which keeps file order.
  std::mt19937_64 rng(seed);
  std::vector<AclRule> out;
  out.reserve(n);
  for (size_t i = 0; i < rules.size() && out.size() < n; ++i) {
    const size_t left = rules.size() - i;
    if (rng() % left < n - out.size()) out.push_back(rules[i]);
  }
  return out;
}

Result<std::vector<std::string>> acl_matches(const AclRule& rule) {
  const bool ports_any =
      rule.sport_lo == 0 && rule.sport_hi == 65535 && rule.dport_lo == 0 && rule.dport_hi == 65535;
  std::vector<std::string> protos;
  if (!rule.proto) {
    if (ports_any)
      protos = {"ip"};
    else
      protos = {"tcp", "udp"};
  } else if (*rule.proto == 6) {
    protos = {"tcp"};
  } else if (*rule.proto == 17) {
    protos = {"udp"};
  } else if (!ports_any) {
    return Status::error("port ranges on protocol " + std::to_string(*rule.proto) +
                         " (only TCP and UDP have ports)");
  } else if (*rule.proto == 1) {
    protos = {"icmp"};
  } else {
    protos = {"ip,nw_proto=" + std::to_string(*rule.proto)};
  }
  if (rule.src_len < 0 || rule.src_len > 32 || rule.dst_len < 0 || rule.dst_len > 32)
    return Status::error("prefix length outside 0..32");
  const std::string addresses =
      prefix_match("nw_src", rule.src & prefix_mask(rule.src_len), rule.src_len) +
      prefix_match("nw_dst", rule.dst & prefix_mask(rule.dst_len), rule.dst_len);
  const std::vector<MaskedValue> sports = range_to_prefixes(rule.sport_lo, rule.sport_hi);
  const std::vector<MaskedValue> dports = range_to_prefixes(rule.dport_lo, rule.dport_hi);
  if (sports.empty() || dports.empty()) return Status::error("empty port range (LO > HI)");
  std::vector<std::string> out;
  for (const std::string& proto : protos) {
    if (proto != "tcp" && proto != "udp") {
      out.push_back(proto + addresses);
      continue;
    }
    for (const MaskedValue& s : sports)
      for (const MaskedValue& d : dports)
        out.push_back(proto + addresses + port_match("tp_src", s) + port_match("tp_dst", d));
  }
  return out;
}

std::string format_classbench(const AclRule& rule) {
  return "@" + ipv4_text(rule.src) + "/" + std::to_string(rule.src_len) + "\t" +
         ipv4_text(rule.dst) + "/" + std::to_string(rule.dst_len) + "\t" +
         std::to_string(rule.sport_lo) + " : " + std::to_string(rule.sport_hi) + "\t" +
         std::to_string(rule.dport_lo) + " : " + std::to_string(rule.dport_hi) + "\t" +
         (rule.proto ? hex(*rule.proto, 2) + "/0xFF" : std::string("0x00/0x00")) +
         "\t0x0000/0x0000";
}

}  // namespace softflow

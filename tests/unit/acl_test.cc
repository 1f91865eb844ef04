// ACLs (softflow/acl.h): range-to-prefix expansion checked against brute
// force, the ClassBench converter on hand-written lines and on the real acl1
// file, and the ClassBench-style generator's determinism and shape.
#include "softflow/acl.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "softflow/flow_syntax.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::test_seed;

// ---- range -> prefixes --------------------------------------------------------------

// The fewest prefixes that cover [lo, hi] exactly, by brute force: every
// prefix inside the range lies in exactly one maximal one (whose parent
// sticks out of the range), the maximal ones are disjoint and cover the
// range, and any exact cover needs at least one prefix per maximal one.
size_t brute_force_minimum(uint32_t lo, uint32_t hi, int bits) {
  size_t count = 0;
  for (int len = 0; len <= bits; ++len) {
    const uint64_t size = 1ULL << (bits - len);
    for (uint64_t start = 0; start < (1ULL << bits); start += size) {
      const bool inside = start >= lo && start + size - 1 <= hi;
      if (!inside) continue;
      const uint64_t parent_size = size * 2;
      const uint64_t parent = start - start % parent_size;
      const bool parent_inside = len > 0 && parent >= lo && parent + parent_size - 1 <= hi;
      if (!parent_inside) ++count;
    }
  }
  return count;
}

// Each element is a prefix of the 'bits'-bit space (high-bit mask, value
// within it) and every number is matched by exactly one element iff it is
// in [lo, hi] (checked number by number).
::testing::AssertionResult covers_exactly(const std::vector<MaskedValue>& prefixes, uint32_t lo,
                                          uint32_t hi, int bits) {
  const uint32_t full = (1u << bits) - 1;
  for (const MaskedValue& p : prefixes) {
    const uint32_t host = full & ~p.mask;
    if ((p.mask & ~full) != 0 || (host & (host + 1)) != 0 || (p.value & host) != 0)
      return ::testing::AssertionFailure()
             << "not a prefix: value " << p.value << " mask " << p.mask;
  }
  for (uint32_t x = 0; x <= full; ++x) {
    int hits = 0;
    for (const MaskedValue& p : prefixes) hits += (x & p.mask) == p.value;
    const int want = x >= lo && x <= hi ? 1 : 0;
    if (hits != want)
      return ::testing::AssertionFailure() << "[" << lo << ", " << hi << "]: " << x
                                           << " matched by " << hits << " prefixes, want " << want;
  }
  return ::testing::AssertionSuccess();
}

TEST(AclRangeToPrefixes, EveryRangeOfSixBitNumbers) {
  constexpr int kBits = 6;
  for (uint32_t lo = 0; lo < (1u << kBits); ++lo) {
    for (uint32_t hi = lo; hi < (1u << kBits); ++hi) {
      const std::vector<MaskedValue> p = range_to_prefixes(lo, hi, kBits);
      ASSERT_TRUE(covers_exactly(p, lo, hi, kBits));
      ASSERT_EQ(p.size(), brute_force_minimum(lo, hi, kBits)) << lo << ":" << hi;
    }
  }
}

TEST(AclRangeToPrefixes, ClassicSixteenBitRanges) {
  const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0, 65535},   {1024, 65535},  {1025, 65535}, {1, 65534}, {0, 1023},  {80, 80},
      {1300, 1350}, {61600, 61609}, {5001, 65535}, {1, 65535}, {0, 65534}, {32768, 32768}};
  for (const auto& [lo, hi] : ranges) {
    const std::vector<MaskedValue> p = range_to_prefixes(lo, hi);
    EXPECT_TRUE(covers_exactly(p, lo, hi, 16));
    EXPECT_EQ(p.size(), brute_force_minimum(lo, hi, 16)) << lo << ":" << hi;
  }
}

TEST(AclRangeToPrefixes, RandomSixteenBitRangesAreMinimalAndContiguous) {
  std::mt19937_64 rng(test_seed(41));
  for (int i = 0; i < 100; ++i) {
    uint32_t lo = static_cast<uint32_t>(rng() % 65536), hi = static_cast<uint32_t>(rng() % 65536);
    if (lo > hi) std::swap(lo, hi);
    const std::vector<MaskedValue> p = range_to_prefixes(lo, hi);
    ASSERT_FALSE(p.empty());
    // Blocks in increasing order, each starting where the last ended.
    uint64_t next = lo;
    for (const MaskedValue& m : p) {
      ASSERT_EQ(m.value, next) << lo << ":" << hi;
      next += (~m.mask & 0xffffu) + 1ULL;
    }
    ASSERT_EQ(next, uint64_t{hi} + 1) << lo << ":" << hi;
    ASSERT_EQ(p.size(), brute_force_minimum(lo, hi, 16)) << lo << ":" << hi;
  }
}

TEST(AclRangeToPrefixes, RejectsEmptyAndOutOfRange) {
  EXPECT_TRUE(range_to_prefixes(5, 4).empty());
  EXPECT_TRUE(range_to_prefixes(0, 64, 6).empty());
  EXPECT_TRUE(range_to_prefixes(0, 1, 17).empty());
}

// ---- ClassBench files -----------------------------------------------------------------

TEST(AclClassBench, ParsesHandWrittenLines) {
  const std::string text =
      "@27.195.96.7/32\t107.130.16.1/32\t0 : 65535\t4646 : 4646\t0x06/0xFF\t0x0000/0x0200\t\n"
      "\n"
      "@10.1.2.3/23 0.0.0.0/0 1024 : 65535 1300:1350 0x11/0xFF\n"  // no flags, host bits
      "@0.0.0.0/0\t192.168.1.0/24\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\r\n"
      "@1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0000/0x0000\n";
  auto rules = parse_classbench(text);
  ASSERT_TRUE(rules) << rules.error();
  ASSERT_EQ(rules->size(), 4u);

  const AclRule& a = (*rules)[0];
  EXPECT_EQ(a.src, 0x1bc36007u);
  EXPECT_EQ(a.src_len, 32);
  EXPECT_EQ(a.dst, 0x6b821001u);
  EXPECT_EQ(a.dst_len, 32);
  EXPECT_EQ(a.sport_lo, 0);
  EXPECT_EQ(a.sport_hi, 65535);
  EXPECT_EQ(a.dport_lo, 4646);
  EXPECT_EQ(a.dport_hi, 4646);
  EXPECT_EQ(a.proto, std::optional<uint8_t>(6));

  const AclRule& b = (*rules)[1];
  EXPECT_EQ(b.src, 0x0a010200u) << "host bits beyond /23 are cleared";
  EXPECT_EQ(b.src_len, 23);
  EXPECT_EQ(b.dst_len, 0);
  EXPECT_EQ(b.sport_lo, 1024);
  EXPECT_EQ(b.dport_lo, 1300);
  EXPECT_EQ(b.dport_hi, 1350);
  EXPECT_EQ(b.proto, std::optional<uint8_t>(17));

  EXPECT_FALSE((*rules)[2].proto.has_value()) << "0x00/0x00 is any protocol";
  EXPECT_EQ((*rules)[3].proto, std::optional<uint8_t>(1));

  // format_classbench writes what parse_classbench reads.
  for (const AclRule& r : *rules) {
    auto again = parse_classbench(format_classbench(r));
    ASSERT_TRUE(again) << again.error();
    ASSERT_EQ(again->size(), 1u);
    EXPECT_EQ(again->front(), r) << format_classbench(r);
  }
}

TEST(AclClassBench, BadLinesNameTheLineAndTheProblem) {
  const std::string good = "@1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF 0x0000/0x0000\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF", "'@'"},
      {"@1.2.3.256/32 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF", "octet"},
      {"@1.2.3.4/33 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF", "prefix length"},
      {"@1.2.3.4 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF", "prefix length"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65535 90 : 80 0x06/0xFF", "empty"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65536 80 : 80 0x06/0xFF", "above 65535"},
      {"@1.2.3.4/32 5.6.7.8/32 0 65535 80 : 80 0x06/0xFF", "':'"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 0x06/0x0F", "protocol mask"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 6/0xFF", "0x"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 0x01/0xFF", "only TCP and UDP"},
      {"@1.2.3.4/32 5.6.7.8/32 0 : 65535 80 : 80 0x06/0xFF 0x0000/0x0000 junk", "unexpected"},
  };
  for (const auto& [line, want] : cases) {
    auto rules = parse_classbench(good + "\n" + line + "\n" + good);
    ASSERT_FALSE(rules) << line;
    EXPECT_EQ(rules.error().rfind("line 3: ", 0), 0u) << rules.error();
    EXPECT_NE(rules.error().find(want), std::string::npos) << rules.error();
  }
}

TEST(AclClassBench, ReadingAMissingFileSaysWhich) {
  auto rules = read_classbench("/nonexistent/acl.rules");
  ASSERT_FALSE(rules);
  EXPECT_NE(rules.error().find("/nonexistent/acl.rules"), std::string::npos) << rules.error();
}

// ---- ACL rules as flow matches ---------------------------------------------------------

FlowKey five_tuple(uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport) {
  return test::key({{Field::kDlType, 0x0800},
                    {Field::kNwProto, proto},
                    {Field::kNwSrc, src},
                    {Field::kNwDst, dst},
                    {Field::kTpSrc, sport},
                    {Field::kTpDst, dport}});
}

bool acl_rule_matches(const AclRule& r, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport,
                      uint16_t dport) {
  const auto in_prefix = [](uint32_t a, uint32_t p, int len) {
    return len == 0 || ((a ^ p) >> (32 - len)) == 0;
  };
  return (!r.proto || *r.proto == proto) && in_prefix(src, r.src, r.src_len) &&
         in_prefix(dst, r.dst, r.dst_len) && sport >= r.sport_lo && sport <= r.sport_hi &&
         dport >= r.dport_lo && dport <= r.dport_hi;
}

std::vector<Match> parsed_matches(const AclRule& r) {
  std::vector<Match> out;
  auto texts = acl_matches(r);
  EXPECT_TRUE(texts) << texts.error();
  if (!texts) return out;
  FlowParseOptions opts;
  opts.match_only = true;
  for (const std::string& t : *texts) {
    auto rule = parse_flow(t, opts);
    EXPECT_TRUE(rule) << t << ": " << rule.error();
    if (rule) out.push_back(rule->match);
  }
  return out;
}

// The flow matches of a rule with ranges on both ports match exactly the
// packets the rule does, each at most once (so they can share a priority).
TEST(AclMatches, CrossProductOfBothPortRangesIsExact) {
  AclRule r;
  r.src = 0x0a010000;
  r.src_len = 16;
  r.dst = 0xac100005;
  r.dst_len = 32;
  r.sport_lo = 1000;
  r.sport_hi = 1030;
  r.dport_lo = 1024;
  r.dport_hi = 65535;
  r.proto = 6;
  const std::vector<Match> matches = parsed_matches(r);
  EXPECT_EQ(matches.size(),
            range_to_prefixes(1000, 1030).size() * range_to_prefixes(1024, 65535).size());
  std::mt19937_64 rng(test_seed(43));
  for (int i = 0; i < 20000; ++i) {
    const uint8_t proto = rng() % 4 ? 6 : 17;
    const uint32_t src = rng() % 2 ? 0x0a010000u | static_cast<uint32_t>(rng() & 0xffff)
                                   : static_cast<uint32_t>(rng());
    const uint32_t dst = rng() % 4 ? 0xac100005u : static_cast<uint32_t>(rng());
    const uint16_t sport = static_cast<uint16_t>(rng() % 2 ? 990 + rng() % 50 : rng());
    const uint16_t dport = static_cast<uint16_t>(rng() % 2 ? 1000 + rng() % 50 : rng());
    const FlowKey k = five_tuple(proto, src, dst, sport, dport);
    const size_t hits = static_cast<size_t>(std::count_if(
        matches.begin(), matches.end(), [&](const Match& m) { return m.matches(k); }));
    ASSERT_EQ(hits, acl_rule_matches(r, proto, src, dst, sport, dport) ? 1u : 0u)
        << "proto " << int(proto) << " " << src << ":" << sport << " -> " << dst << ":" << dport;
  }
}

TEST(AclMatches, ProtocolsAndWildcards) {
  AclRule any;  // everything
  auto m = acl_matches(any);
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, std::vector<std::string>{"ip"});

  AclRule any_ports = any;  // any protocol, but a port: TCP and UDP only
  any_ports.dport_lo = any_ports.dport_hi = 53;
  m = acl_matches(any_ports);
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, (std::vector<std::string>{"tcp,tp_dst=53", "udp,tp_dst=53"}));

  AclRule icmp;
  icmp.proto = 1;
  icmp.dst = 0x01020304;
  icmp.dst_len = 32;
  m = acl_matches(icmp);
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, std::vector<std::string>{"icmp,nw_dst=1.2.3.4"});

  AclRule gre;
  gre.proto = 47;
  m = acl_matches(gre);
  ASSERT_TRUE(m) << m.error();
  EXPECT_EQ(*m, std::vector<std::string>{"ip,nw_proto=47"});

  gre.dport_lo = gre.dport_hi = 80;
  EXPECT_FALSE(acl_matches(gre)) << "a port range on GRE cannot be expressed";
}

// The real ClassBench acl1 set: every line converts, each rule's matches
// parse in the flow syntax, and they agree with the rule on random packets
// drawn near it.
TEST(AclClassBench, RealAcl1File) {
  const std::string path = "/work/shared/data/classbench-acl1.rules";
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << path << " is absent (benchmark data, not part of the repository)";
  std::ifstream in(path);
  size_t lines = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find('@') != std::string::npos) ++lines;

  auto rules = read_classbench(path);
  ASSERT_TRUE(rules) << rules.error();
  EXPECT_EQ(rules->size(), lines);

  std::mt19937_64 rng(test_seed(47));
  size_t expanded = 0;
  for (const AclRule& r : *rules) {
    const std::vector<Match> matches = parsed_matches(r);
    ASSERT_FALSE(matches.empty()) << format_classbench(r);
    expanded += matches.size();
    const bool ports_any =
        r.sport_lo == 0 && r.sport_hi == 65535 && r.dport_lo == 0 && r.dport_hi == 65535;
    const size_t port_prefixes = range_to_prefixes(r.sport_lo, r.sport_hi).size() *
                                 range_to_prefixes(r.dport_lo, r.dport_hi).size();
    const size_t want = r.proto == 6 || r.proto == 17 ? port_prefixes
                        : !r.proto && !ports_any      ? 2 * port_prefixes  // tcp and udp
                                                      : 1;
    ASSERT_EQ(matches.size(), want) << format_classbench(r);
    for (int i = 0; i < 20; ++i) {
      const uint8_t proto =
          r.proto && rng() % 4 ? *r.proto : std::array<uint8_t, 3>{1, 6, 17}[rng() % 3];
      // Inside the rule's prefix most of the time, anywhere now and then.
      const auto near = [&](uint32_t p, int len) -> uint32_t {
        if (len == 0 || rng() % 5 == 0) return static_cast<uint32_t>(rng());
        const uint32_t host_mask = len == 32 ? 0 : ~0u >> len;
        return p | (static_cast<uint32_t>(rng()) & host_mask);
      };
      const uint32_t src = near(r.src, r.src_len), dst = near(r.dst, r.dst_len);
      const uint16_t sport = static_cast<uint16_t>(rng());
      const uint16_t dport = static_cast<uint16_t>(
          rng() % 2 ? r.dport_lo + rng() % (r.dport_hi - r.dport_lo + 1ULL) : rng());
      const FlowKey k = five_tuple(proto, src, dst, proto == 1 ? 0 : sport, proto == 1 ? 0 : dport);
      const bool want_hit =
          acl_rule_matches(r, proto, src, dst, proto == 1 ? 0 : sport, proto == 1 ? 0 : dport);
      const size_t hits = static_cast<size_t>(std::count_if(
          matches.begin(), matches.end(), [&](const Match& m) { return m.matches(k); }));
      ASSERT_EQ(hits, want_hit ? 1u : 0u) << format_classbench(r);
    }
  }
  EXPECT_GE(expanded, rules->size());
  std::cout << "acl1: " << rules->size() << " rules -> " << expanded << " flow matches\n";
}

// ---- the ClassBench-style generator -------------------------------------------------------

TEST(AclGenerator, DeterministicPerSeedAndDistinctRules) {
  const uint64_t seed = test_seed(5);
  const std::vector<AclRule> a = generate_acl(1000, seed);
  EXPECT_EQ(a, generate_acl(1000, seed));
  EXPECT_NE(a, generate_acl(1000, seed + 1));
  ASSERT_EQ(a.size(), 1000u);
  std::set<std::string> distinct;
  for (const AclRule& r : a) distinct.insert(format_classbench(r));
  EXPECT_EQ(distinct.size(), a.size());
  // A smaller set is not a prefix of a larger one, but it is well-formed.
  EXPECT_EQ(generate_acl(0, seed).size(), 0u);
  EXPECT_EQ(generate_acl(1, seed).size(), 1u);
}

// The shape of acl1 (measured on the real file, see acl.cc): loose bounds
// around each share, so the test checks the shape, not the exact draw.
TEST(AclGenerator, HasTheShapeOfAcl1) {
  const std::vector<AclRule> rules = generate_acl(3000, test_seed(7));
  size_t tcp = 0, udp = 0, dst32 = 0, src32 = 0, exact_dport = 0, ported = 0, sport_any = 0,
         range_dport = 0;
  std::set<std::pair<uint32_t, uint32_t>> pairs;
  for (const AclRule& r : rules) {
    tcp += r.proto == 6;
    udp += r.proto == 17;
    dst32 += r.dst_len == 32;
    src32 += r.src_len == 32;
    pairs.insert({r.src, r.dst});
    if (r.proto == 6 || r.proto == 17) {
      ++ported;
      exact_dport += r.dport_lo == r.dport_hi;
      range_dport += r.dport_lo != r.dport_hi && !(r.dport_lo == 0 && r.dport_hi == 65535);
      sport_any += r.sport_lo == 0 && r.sport_hi == 65535;
    }
    // Every rule converts and its matches parse.
    ASSERT_FALSE(parsed_matches(r).empty()) << format_classbench(r);
    // And it round-trips through the ClassBench format.
    auto again = parse_classbench(format_classbench(r));
    ASSERT_TRUE(again) << again.error();
    ASSERT_EQ(again->front(), r);
  }
  const double n = static_cast<double>(rules.size());
  EXPECT_GT(tcp / n, 0.85);
  EXPECT_GT(udp / n, 0.02);
  EXPECT_GT(dst32 / n, 0.6);
  EXPECT_GT(src32 / n, 0.6);
  EXPECT_LT(dst32 / n, 0.9) << "some destinations must be shorter prefixes";
  EXPECT_GT(exact_dport / static_cast<double>(ported), 0.6);
  EXPECT_GT(range_dport / static_cast<double>(ported), 0.1);
  EXPECT_GT(sport_any / static_cast<double>(ported), 0.9);
  // Many rules per address pair, as in acl1 (2,572 rules over 110 pairs).
  EXPECT_LT(pairs.size(), rules.size() / 10);
}

TEST(AclSample, KeepsOrderAndIsSeeded) {
  const std::vector<AclRule> all = generate_acl(400, 3);
  const std::vector<AclRule> s = sample_acl(all, 100, 11);
  ASSERT_EQ(s.size(), 100u);
  EXPECT_EQ(s, sample_acl(all, 100, 11));
  EXPECT_NE(s, sample_acl(all, 100, 12));
  // In the order of the source.
  size_t at = 0;
  for (const AclRule& r : s) {
    while (at < all.size() && !(all[at] == r)) ++at;
    ASSERT_LT(at, all.size()) << "sample out of order or not from the source";
    ++at;
  }
  EXPECT_EQ(sample_acl(all, 1000, 11), all);
}

}  // namespace
}  // namespace softflow

// Megaflow correctness (DESIGN.md "Megaflow correctness"): for any rule set
// and any packet, the cached result equals a fresh slow-path translation.
//
// Random multi-table rule sets (random priorities with duplicates; exact,
// prefix and arbitrary bit masks on many fields; output, in_port,
// set_field, dec_ttl, goto_table, softflow and drop actions) and random keys
// drawn from the rules' own values with random bit flips.  Two checks:
//   1. every key that matches the megaflow (key & wildcards, wildcards) of
//      another key translates to the same actions along the same path;
//   2. a MegaflowCache filled by "lookup, on miss xlate + install" always
//      returns the actions a fresh xlate gives.
// Seeded; SF_TEST_SEED replays a run (see test_util.h).
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "softflow/flow_syntax.h"
#include "softflow/megaflow.h"
#include "softflow/openflow.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::kAll;

// Fields the random rules match on.
constexpr Field kMatchFields[] = {Field::kDlDst,  Field::kDlSrc,   Field::kNwSrc,   Field::kNwDst,
                                  Field::kTpSrc,  Field::kTpDst,   Field::kDlType,  Field::kNwProto,
                                  Field::kInPort, Field::kSfStage, Field::kSfAction, Field::kSfMetadata};
// Fields the random keys vary (a superset: xlate also consults nw_frag).
constexpr Field kKeyFields[] = {Field::kDlDst,   Field::kDlSrc,   Field::kNwSrc,    Field::kNwDst,
                                Field::kTpSrc,   Field::kTpDst,   Field::kDlType,   Field::kNwProto,
                                Field::kInPort,  Field::kSfStage, Field::kSfAction, Field::kSfMetadata,
                                Field::kNwFrag,  Field::kNwTos,   Field::kVlanTci};

uint64_t width_mask(Field f) {
  const unsigned bits = field_info(f).size * 8u;
  return bits >= 64 ? kAll : (1ULL << bits) - 1;
}
unsigned width_bits(Field f) { return std::min(64u, field_info(f).size * 8u); }

// A small per-rule-set universe of values per field, so rules overlap and
// keys hit them.
struct Pools {
  std::vector<uint64_t> values[kFieldCount];
  std::vector<uint32_t> ports;
};

Pools make_pools(std::mt19937_64& rng) {
  Pools p;
  auto& v = p.values;
  for (Field f : kKeyFields) {
    const int n = 2 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) v[static_cast<size_t>(f)].push_back(rng() & width_mask(f));
  }
  v[size_t(Field::kDlType)] = {0x0800, 0x86dd, 0x0806, rng() & 0xffff};
  v[size_t(Field::kNwProto)] = {6, 17, 1, 58, rng() & 0xff};
  v[size_t(Field::kSfStage)] = {0, 1, 2, 3};
  v[size_t(Field::kSfAction)] = {0, test::service_id("noop"), test::service_id("counter"), 7};
  v[size_t(Field::kSfMetadata)].push_back(0);
  v[size_t(Field::kNwFrag)] = {0, SF_FRAG_ANY, SF_FRAG_ANY | SF_FRAG_LATER};
  v[size_t(Field::kInPort)] = {1, 2, 3};
  // Addresses sharing prefixes.
  const uint64_t base = rng() & 0xffffffff;
  for (uint64_t d : {0ULL, 1ULL, 0x100ULL, 0x10000ULL}) {
    v[size_t(Field::kNwDst)].push_back((base + d) & 0xffffffff);
    v[size_t(Field::kNwSrc)].push_back((base ^ (d << 3)) & 0xffffffff);
  }
  p.ports = {1, 2, 3, 4, 5};
  return p;
}

uint64_t pool_value(std::mt19937_64& rng, const Pools& p, Field f) {
  const auto& v = p.values[static_cast<size_t>(f)];
  if (v.empty() || rng() % 10 == 0) return rng() & width_mask(f);
  return v[rng() % v.size()];
}

// Exact, prefix (from the most significant bit), or arbitrary bits.
uint64_t random_field_mask(std::mt19937_64& rng, Field f) {
  const unsigned bits = width_bits(f);
  switch (rng() % 5) {
    case 0:
    case 1: return width_mask(f);
    case 2: {
      const unsigned len = 1 + static_cast<unsigned>(rng() % bits);
      return len >= 64 ? kAll : (width_mask(f) & ~((1ULL << (bits - len)) - 1));
    }
    case 3: return rng() & rng() & width_mask(f);  // sparse bits
    default: return rng() & width_mask(f);
  }
}

Action random_set_field(std::mt19937_64& rng, const Pools& p) {
  constexpr Field kSettable[] = {Field::kNwDst, Field::kTpDst, Field::kDlDst, Field::kSfMetadata,
                                 Field::kNwSrc, Field::kTpSrc};
  const Field f = kSettable[rng() % std::size(kSettable)];
  const uint64_t v = pool_value(rng, p, f);
  if (rng() % 4 == 0) return test::set_field_masked(f, v, random_field_mask(rng, f));
  return Action::set_field(f, v);
}

std::vector<FlowRule> random_rule_set(std::mt19937_64& rng, const Pools& p) {
  const uint8_t noop = test::service_id("noop");
  const int n_tables = 3 + static_cast<int>(rng() % 4);  // 3..6
  // Tables are not necessarily contiguous: goto_table skips some.
  std::vector<uint8_t> table_ids;
  uint8_t next = 0;
  for (int t = 0; t < n_tables; ++t) {
    table_ids.push_back(next);
    next = static_cast<uint8_t>(next + 1 + (rng() % 3 == 0 ? rng() % 4 : 0));
  }
  const bool narrow_priorities = rng() % 2;
  std::vector<FlowRule> rules;
  for (int ti = 0; ti < n_tables; ++ti) {
    const int n_rules = 5 + static_cast<int>(rng() % 56);  // 5..60
    for (int i = 0; i < n_rules; ++i) {
      FlowRule r;
      r.table = table_ids[ti];
      r.priority = static_cast<uint16_t>(narrow_priorities ? rng() % 8 : rng() % 1000);
      const int n_fields = static_cast<int>(rng() % 5);  // 0..4
      for (int k = 0; k < n_fields; ++k) {
        const Field f = kMatchFields[rng() % std::size(kMatchFields)];
        uint64_t value = pool_value(rng, p, f);
        if (rng() % 6 == 0) value ^= 1ULL << (rng() % width_bits(f));
        r.match.set_uint(f, value, random_field_mask(rng, f));
      }
      const int n_actions = static_cast<int>(rng() % 4);
      for (int a = 0; a < n_actions; ++a) {
        switch (rng() % 8) {
          case 0:
          case 1:
          case 2: r.actions.push_back(Action::output(p.ports[rng() % p.ports.size()])); break;
          case 3: r.actions.push_back(Action::output_in_port()); break;
          case 4: r.actions.push_back(Action::dec_ttl()); break;
          default: r.actions.push_back(random_set_field(rng, p)); break;
        }
      }
      const int end = static_cast<int>(rng() % 10);
      if (end < 5 && ti + 1 < n_tables) {
        const int target = ti + 1 + static_cast<int>(rng() % (n_tables - ti - 1));
        r.actions.push_back(Action::goto_table(table_ids[target]));
      } else if (end < 7) {
        r.actions.push_back(Action::softflow(noop, static_cast<uint32_t>(rng() % 4)));
      } else if (end < 8) {
        r.actions.clear();  // drop
      }
      rules.push_back(std::move(r));
    }
  }
  return rules;
}

FlowKey random_key(std::mt19937_64& rng, const Pools& p, const std::vector<FlowRule>& rules) {
  FlowKey k = zero_key();
  for (Field f : kKeyFields) set_field_uint(k, f, pool_value(rng, p, f));
  if (rng() % 3 == 0) {  // IPv6-like address slots
    for (int w = 1; w < 4; ++w) {
      k.nw_src[w] = static_cast<uint32_t>(rng());
      k.nw_dst[w] = static_cast<uint32_t>(rng());
    }
  }
  // Aim at a rule: take its match values.
  if (!rules.empty() && rng() % 4 != 0) {
    const Match& m = rules[rng() % rules.size()].match;
    for (size_t w = 0; w < kKeyWords; ++w)
      key_words(k)[w] = (key_words(k)[w] & ~key_words(m.mask)[w]) | key_words(m.value)[w];
  }
  // And miss it by a bit, sometimes.
  const int flips = static_cast<int>(rng() % 3);
  for (int i = 0; i < flips; ++i) {
    const Field f = kKeyFields[rng() % std::size(kKeyFields)];
    set_field_uint(k, f, get_field_uint(k, f) ^ (1ULL << (rng() % width_bits(f))));
  }
  return k;
}

// Key bits that may legitimately appear in a megaflow mask: any rule's
// mask, plus what actions depend on (in_port for output, dl_type/nw_proto/
// nw_frag for set_field and dec_ttl applicability).
FlowKey allowed_mask(const std::vector<FlowRule>& rules) {
  FlowKey m = zero_key();
  for (const FlowRule& r : rules) key_or_into(m, r.match.mask);
  for (Field f : {Field::kInPort, Field::kDlType, Field::kNwProto, Field::kNwFrag})
    key_or_into(m, field_mask(f));
  return m;
}

std::vector<uint64_t> path_of(const XlateResult& r) {
  std::vector<uint64_t> p;
  for (const XlateStep& s : r.steps) p.push_back(s.rule_id);
  return p;
}

std::string dump_rules(const std::vector<FlowRule>& rules) {
  std::string out;
  for (const FlowRule& r : rules) out += "  " + print_flow(r) + "\n";
  return out;
}

struct Probe {
  FlowKey key;
  XlateResult result;
};

struct CaseStats {
  uint64_t cases = 0;
  uint64_t keys = 0;
  uint64_t covered_checks = 0;     // a key inside another key's megaflow, compared
  uint64_t cache_hits_checked = 0;  // cache hits compared against xlate
  uint64_t cache_misses = 0;
};

// Runs one random rule set; returns false after reporting the first failure.
bool run_case(uint64_t case_seed, int n_probes, CaseStats& st) {
  std::mt19937_64 rng(case_seed);
  const Pools pools = make_pools(rng);
  const std::vector<FlowRule> rules = random_rule_set(rng, pools);
  OpenFlowTables tables;
  for (const FlowRule& r : rules) {
    Status s = tables.add_flow(r);
    if (!s) {
      ADD_FAILURE() << "case seed " << case_seed << ": add_flow: " << s.message();
      return false;
    }
  }
  const FlowKey allowed = allowed_mask(rules);
  auto context = [&]() {
    return "case seed " + std::to_string(case_seed) + " (" + std::to_string(rules.size()) +
           " rules)\n" + dump_rules(test::current_rules(tables));
  };

  std::vector<Probe> probes;
  probes.reserve(n_probes);
  for (int i = 0; i < n_probes; ++i) {
    FlowKey k;
    const int kind = static_cast<int>(rng() % 4);
    if (probes.empty() || kind == 0) {
      k = random_key(rng, pools, rules);
    } else {
      const Probe& base = probes[rng() % probes.size()];
      k = base.key;
      if (kind == 1 || kind == 2) {
        // Flip bits the megaflow of 'base' wildcards: must stay inside it.
        const int flips = 1 + static_cast<int>(rng() % 8);
        for (int j = 0; j < flips; ++j) {
          const size_t w = rng() % kKeyWords;
          const uint64_t free_bits = ~key_words(base.result.wildcards)[w];
          const uint64_t bit = 1ULL << (rng() % 64);
          if (free_bits & bit) key_words(k)[w] ^= bit;
        }
        std::memset(k.pad, 0, sizeof k.pad);
      } else {
        // Flip a bit it does not wildcard: a neighbouring megaflow.
        const size_t w = rng() % kKeyWords;
        const uint64_t bits = key_words(base.result.wildcards)[w];
        if (bits) {
          uint64_t bit;
          do bit = 1ULL << (rng() % 64);
          while (!(bits & bit));
          key_words(k)[w] ^= bit;
        }
      }
    }
    probes.push_back({k, tables.xlate(k)});
    const Probe& p = probes.back();
    ++st.keys;
    if (!key_is_subset(p.result.wildcards, allowed)) {
      ADD_FAILURE() << "megaflow mask has bits no rule or action depends on\n  key  "
                    << test::hex_key(p.key) << "\n  mask " << test::hex_key(p.result.wildcards)
                    << "\n  allowed " << test::hex_key(allowed) << "\n" << context();
      return false;
    }
    if (p.result.ends_in_service() && p.result.actions.size() > 1) {
      for (size_t a = 0; a + 1 < p.result.actions.size(); ++a)
        if (p.result.actions[a].type == ActionType::kSoftflow) {
          ADD_FAILURE() << "softflow action not last\n" << context();
          return false;
        }
    }
  }

  // Check 1: every probe inside another probe's megaflow gets its result.
  for (const Probe& mf : probes) {
    const FlowKey value = key_and(mf.key, mf.result.wildcards);
    for (const Probe& p : probes) {
      if (!key_matches(p.key, value, mf.result.wildcards)) continue;
      ++st.covered_checks;
      if (p.result.actions != mf.result.actions || p.result.drop_reason != mf.result.drop_reason ||
          path_of(p.result) != path_of(mf.result)) {
        ADD_FAILURE() << "a key inside a megaflow translates differently\n"
                      << "  megaflow key  " << test::hex_key(mf.key) << "\n"
                      << "  megaflow mask " << test::hex_key(mf.result.wildcards) << "\n"
                      << "  megaflow actions " << test::describe_actions(mf.result.actions)
                      << " drop=" << drop_reason_name(mf.result.drop_reason) << "\n"
                      << "  other key     " << test::hex_key(p.key) << "\n"
                      << "  other actions " << test::describe_actions(p.result.actions)
                      << " drop=" << drop_reason_name(p.result.drop_reason) << "\n"
                      << context();
        return false;
      }
    }
  }

  // Check 2: the cache, filled on misses, agrees with xlate on every hit.
  MegaflowCache cache(MegaflowCacheConfig{.emc_entries = 64});
  for (int i = 0; i < 2 * n_probes; ++i) {
    const Probe& p = probes[rng() % probes.size()];
    MegaflowLookupStats ls;
    Megaflow* mf = cache.lookup(p.key, key_hash(p.key), ls);
    if (mf == nullptr) {
      ++st.cache_misses;
      const XlateResult xr = tables.xlate(p.key);
      MegaflowSegment seg;
      seg.actions = xr.actions;
      seg.drop_reason = xr.drop_reason;
      if (cache.install(p.key, xr.wildcards, {seg}, 0) == nullptr) {
        ADD_FAILURE() << "install failed";
        return false;
      }
      continue;
    }
    ++st.cache_hits_checked;
    if (mf->segments.at(0).actions != p.result.actions ||
        mf->segments.at(0).drop_reason != p.result.drop_reason) {
      ADD_FAILURE() << "cached result differs from a fresh xlate\n"
                    << "  key " << test::hex_key(p.key) << "\n"
                    << "  megaflow key  " << test::hex_key(mf->key) << "\n"
                    << "  megaflow mask " << test::hex_key(mf->mask) << "\n"
                    << "  cached " << test::describe_actions(mf->segments[0].actions) << "\n"
                    << "  fresh  " << test::describe_actions(p.result.actions) << "\n"
                    << context();
      return false;
    }
  }
  ++st.cases;
  return true;
}

void run_many(uint64_t default_seed, int n_cases, int n_probes) {
  const uint64_t seed = test::test_seed(default_seed);
  std::mt19937_64 seeder(seed);
  CaseStats st;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < n_cases; ++c) {
    const uint64_t case_seed = seeder();
    if (!run_case(case_seed, n_probes, st)) {
      ADD_FAILURE() << "failed in case " << c << " of run seed " << seed;
      return;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[   INFO   ] " << st.cases << " rule sets, " << st.keys << " keys, "
            << st.covered_checks << " in-megaflow comparisons, " << st.cache_hits_checked
            << " cache hits checked (" << st.cache_misses << " misses) in " << secs << " s"
            << std::endl;
  // The checks must not be vacuous: many keys fell inside other keys'
  // megaflows (besides their own), and the cache was hit.
  EXPECT_EQ(st.cases, static_cast<uint64_t>(n_cases));
  EXPECT_GT(st.covered_checks, st.keys * 2);
  EXPECT_GT(st.cache_hits_checked, st.cache_misses);
}

TEST(MegaflowEquivalence, RandomRuleSetsCachedEqualsFreshXlate) {
  run_many(/*default_seed=*/20240601, /*n_cases=*/1500, /*n_probes=*/160);
}

// Fewer, larger probe sets per rule set: deeper coverage of one rule set's
// megaflow space (overlapping megaflows, EMC replacement).
TEST(MegaflowEquivalence, DeepProbingOfFewRuleSets) {
  run_many(/*default_seed=*/77, /*n_cases=*/60, /*n_probes=*/1200);
}

// A hand-made set where the mask must carry a rejection proof through a
// set_field and a goto: the xlate of a key, then a key differing only in a
// bit the rejected rule looks at (which must not share the megaflow).
TEST(MegaflowEquivalence, RejectionAfterRewriteIsInMask) {
  using test::match;
  using test::rule;
  OpenFlowTables t;
  ASSERT_TRUE(t.add_flow(rule(0, 10, Match{}, {Action::set_field(Field::kTpDst, 80), Action::goto_table(1)})));
  // Rejected on tp_src (packet bits) and on tp_dst (written bits).
  ASSERT_TRUE(t.add_flow(rule(1, 30, match({{Field::kTpSrc, 7}}), {Action::output(1)})));
  ASSERT_TRUE(t.add_flow(rule(1, 20, match({{Field::kTpDst, 81}}), {Action::output(2)})));
  ASSERT_TRUE(t.add_flow(rule(1, 10, Match{}, {Action::output(3)})));
  const FlowKey k = test::key({{Field::kDlType, 0x0800}, {Field::kNwProto, 6}, {Field::kTpSrc, 6},
                               {Field::kTpDst, 81}});
  const XlateResult r = t.xlate(k);
  ASSERT_EQ(r.actions.back(), Action::output(3));
  // tp_dst was rewritten to 80 before table 1: its packet value is irrelevant.
  EXPECT_EQ(get_field_uint(r.wildcards, Field::kTpDst), 0u);
  EXPECT_NE(get_field_uint(r.wildcards, Field::kTpSrc) & 1u, 0u);  // 6 vs 7 differ in bit 0
  FlowKey k7 = k;
  set_field_uint(k7, Field::kTpSrc, 7);
  EXPECT_FALSE(key_matches(k7, key_and(k, r.wildcards), r.wildcards));
  EXPECT_EQ(t.xlate(k7).actions.back(), Action::output(1));
}

}  // namespace
}  // namespace softflow

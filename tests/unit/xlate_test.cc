// The slow path: OpenFlowTables::xlate and the flow-mod semantics, on
// hand-made multi-table rule sets with exact expected actions and masks.
#include <gtest/gtest.h>

#include "softflow/openflow.h"
#include "test_util.h"

namespace softflow {
namespace {

using test::kAll;
using test::key;
using test::match;
using test::prefix_mask;
using test::rule;

constexpr uint32_t kIp1 = 0x0a000001;  // 10.0.0.1
constexpr uint32_t kIp2 = 0x0a000002;

FlowKey tcp_key(uint32_t in_port, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport) {
  return key({{Field::kInPort, in_port},
              {Field::kDlType, 0x0800},
              {Field::kNwProto, 6},
              {Field::kNwSrc, src},
              {Field::kNwDst, dst},
              {Field::kTpSrc, sport},
              {Field::kTpDst, dport},
              {Field::kDlSrc, 0x020000000001},
              {Field::kDlDst, 0x020000000002}});
}

// Bits of field f inside a mask key.
uint64_t field_bits(const FlowKey& mask, Field f) { return get_field_uint(mask, f); }

void add(OpenFlowTables& t, const FlowRule& r) {
  Status s = t.add_flow(r);
  ASSERT_TRUE(s) << s.message();
}

TEST(Xlate, HigherPriorityWins) {
  OpenFlowTables t;
  add(t, rule(0, 10, match({{Field::kNwDst, kIp1}}), {Action::output(1)}));
  add(t, rule(0, 20, match({{Field::kDlType, 0x0800}}), {Action::output(2)}));
  add(t, rule(0, 15, match({{Field::kNwProto, 6}}), {Action::output(3)}));
  XlateResult r = t.xlate(tcp_key(9, kIp2, kIp1, 1000, 80));
  EXPECT_EQ(r.actions, ActionList{Action::output(2)});
  EXPECT_EQ(r.drop_reason, DropReason::kNone);
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].table, 0);
  EXPECT_EQ(t.find(r.steps[0].rule_id)->flow.priority, 20);
  // Not IPv4: the priority-15 rule (nw_proto=6) is next.
  FlowKey k = tcp_key(9, kIp2, kIp1, 1000, 80);
  k.dl_type = htons(0x86dd);
  EXPECT_EQ(t.xlate(k).actions, ActionList{Action::output(3)});
}

TEST(Xlate, EqualPriorityEarlierInsertedWins) {
  for (int order = 0; order < 2; ++order) {
    OpenFlowTables t;
    const FlowRule a = rule(0, 50, match({{Field::kNwDst, kIp1}}), {Action::output(1)});
    const FlowRule b = rule(0, 50, match({{Field::kTpDst, 80}}), {Action::output(2)});
    add(t, order == 0 ? a : b);
    add(t, order == 0 ? b : a);
    const XlateResult r = t.xlate(tcp_key(9, kIp2, kIp1, 1000, 80));
    EXPECT_EQ(r.actions, ActionList{Action::output(order == 0 ? 1 : 2)}) << "order " << order;
    // rules() lists lookup order: the first inserted first.
    ASSERT_EQ(t.rules(0).size(), 2u);
    EXPECT_EQ(t.rules(0)[0]->flow, order == 0 ? a : b);
  }
}

TEST(Xlate, MaskedMatches) {
  OpenFlowTables t;
  add(t, rule(0, 40, match({{Field::kDlDst, 0x010000000000, 0x010000000000}}), {Action::output(4)}));
  add(t, rule(0, 30, match({{Field::kNwDst, 0x0a000000, prefix_mask(8)}}), {Action::output(1)}));
  add(t, rule(0, 20, match({{Field::kTpDst, 0x1f00, 0xff00}}), {Action::output(2)}));
  add(t, rule(0, 10, match({{Field::kNwSrc, 0x00000005, 0x0000000f}}), {Action::output(3)}));
  add(t, rule(0, 0, Match{}, {}));

  EXPECT_EQ(t.xlate(tcp_key(9, kIp2, 0x0a7f7f7f, 1, 1)).actions, ActionList{Action::output(1)});
  EXPECT_EQ(t.xlate(tcp_key(9, kIp2, 0x0b000001, 1, 0x1fab)).actions, ActionList{Action::output(2)});
  EXPECT_EQ(t.xlate(tcp_key(9, 0xc0a80015, 0x0b000001, 1, 0x2fab)).actions,
            ActionList{Action::output(3)});
  FlowKey multicast = tcp_key(9, kIp2, 0x0b000001, 1, 1);
  multicast.dl_dst[0] = 0x03;  // group bit set
  EXPECT_EQ(t.xlate(multicast).actions, ActionList{Action::output(4)});
  const XlateResult none = t.xlate(tcp_key(9, 0xc0a80016, 0x0b000001, 1, 0x2fab));
  EXPECT_TRUE(none.actions.empty());
  EXPECT_EQ(none.drop_reason, DropReason::kActionDrop);
}

TEST(Xlate, GotoTableChain) {
  OpenFlowTables t;
  add(t, rule(0, 10, match({{Field::kDlType, 0x0800}}),
              {Action::set_field(Field::kDlSrc, 0x02aaaaaaaaaa), Action::goto_table(2)}));
  add(t, rule(2, 10, match({{Field::kNwProto, 6}}), {Action::output(7), Action::goto_table(5)}));
  add(t, rule(5, 10, match({{Field::kTpDst, 80}}), {Action::output(8)}));
  add(t, rule(5, 5, Match{}, {Action::output(9)}));
  const XlateResult r = t.xlate(tcp_key(1, kIp1, kIp2, 1000, 80));
  EXPECT_EQ(r.actions, (ActionList{Action::set_field(Field::kDlSrc, 0x02aaaaaaaaaa),
                                   Action::output(7), Action::output(8)}));
  ASSERT_EQ(r.steps.size(), 3u);
  EXPECT_EQ(r.steps[0].table, 0);
  EXPECT_EQ(r.steps[1].table, 2);
  EXPECT_EQ(r.steps[2].table, 5);
  for (const XlateStep& s : r.steps) EXPECT_NE(s.rule_id, 0u);
  EXPECT_EQ(get_field_uint(r.final_key, Field::kDlSrc), 0x02aaaaaaaaaaULL);
  EXPECT_EQ(r.drop_reason, DropReason::kNone);

  // goto_table must point forward, and be the last action.
  EXPECT_FALSE(t.add_flow(rule(3, 1, Match{}, {Action::goto_table(3)})));
  EXPECT_FALSE(t.add_flow(rule(3, 1, Match{}, {Action::goto_table(1)})));
  EXPECT_FALSE(t.add_flow(rule(3, 1, Match{}, {Action::goto_table(4), Action::output(1)})));
}

TEST(Xlate, TableMissDropsWithEmptyActions) {
  OpenFlowTables t;
  const XlateResult empty = t.xlate(tcp_key(1, kIp1, kIp2, 1, 2));
  EXPECT_TRUE(empty.actions.empty());
  EXPECT_EQ(empty.drop_reason, DropReason::kTableMiss);
  ASSERT_EQ(empty.steps.size(), 1u);
  EXPECT_EQ(empty.steps[0].rule_id, 0u);

  add(t, rule(0, 10, match({{Field::kDlType, 0x0800}}),
              {Action::set_field(Field::kTpDst, 99), Action::goto_table(1)}));
  add(t, rule(1, 10, match({{Field::kNwProto, 17}}), {Action::output(3)}));
  // Miss in table 1 after a rewrite in table 0: nothing is output and the
  // drop is a table miss.  (The rewrite of the dropped packet may stay in
  // the list: it is dead but harmless, so only outputs/services are checked.)
  const XlateResult miss = t.xlate(tcp_key(1, kIp1, kIp2, 1, 2));
  for (const Action& a : miss.actions)
    EXPECT_EQ(a.type, ActionType::kSetField) << test::describe_actions(miss.actions);
  EXPECT_EQ(miss.drop_reason, DropReason::kTableMiss);
  ASSERT_EQ(miss.steps.size(), 2u);
  EXPECT_EQ(miss.steps[1].table, 1);
  EXPECT_EQ(miss.steps[1].rule_id, 0u);

  // A miss after an output is not a drop.
  OpenFlowTables t2;
  add(t2, rule(0, 10, Match{}, {Action::output(2), Action::goto_table(1)}));
  const XlateResult partial = t2.xlate(tcp_key(1, kIp1, kIp2, 1, 2));
  EXPECT_EQ(partial.actions, ActionList{Action::output(2)});
  EXPECT_EQ(partial.drop_reason, DropReason::kNone);
}

TEST(Xlate, OutputToIngressPortIsSkippedButInPortActionKept) {
  OpenFlowTables t;
  add(t, rule(0, 10, Match{}, {Action::output(3), Action::output(4), Action::output_in_port()}));
  const XlateResult r = t.xlate(tcp_key(3, kIp1, kIp2, 1, 2));
  EXPECT_EQ(r.actions, (ActionList{Action::output(4), Action::output_in_port()}));
  // Whether output:3 is skipped depends on in_port: it is in the mask.
  EXPECT_EQ(field_bits(r.wildcards, Field::kInPort), 0xffffffffu);
  const XlateResult other = t.xlate(tcp_key(5, kIp1, kIp2, 1, 2));
  EXPECT_EQ(other.actions,
            (ActionList{Action::output(3), Action::output(4), Action::output_in_port()}));

  // Only the ingress port: nothing left, an action drop.
  OpenFlowTables t2;
  add(t2, rule(0, 10, Match{}, {Action::output(3)}));
  const XlateResult dropped = t2.xlate(tcp_key(3, kIp1, kIp2, 1, 2));
  EXPECT_TRUE(dropped.actions.empty());
  EXPECT_EQ(dropped.drop_reason, DropReason::kActionDrop);
}

TEST(Xlate, SetFieldChangesWhatLaterTablesSee) {
  OpenFlowTables t;
  add(t, rule(0, 10, match({{Field::kDlType, 0x0800}}),
              {Action::set_field(Field::kNwDst, 0x0a000009), Action::goto_table(1)}));
  add(t, rule(1, 20, match({{Field::kDlType, 0x0800}, {Field::kNwDst, 0x0a000009}}),
              {Action::output(1)}));
  add(t, rule(1, 10, Match{}, {Action::output(2)}));
  for (uint32_t dst : {0x0a000005u, 0x0a000009u, 0xc0a80001u}) {
    const XlateResult r = t.xlate(tcp_key(7, kIp1, dst, 1, 2));
    EXPECT_EQ(r.actions, (ActionList{Action::set_field(Field::kNwDst, 0x0a000009), Action::output(1)}))
        << std::hex << dst;
    // The later match on nw_dst looked at the rewritten value: those bits
    // are written (constant), not consulted from the packet.
    EXPECT_EQ(field_bits(r.written, Field::kNwDst), 0xffffffffu);
    EXPECT_EQ(field_bits(r.wildcards, Field::kNwDst), 0u) << test::hex_key(r.wildcards);
    EXPECT_EQ(field_bits(r.wildcards, Field::kDlType), 0xffffu);
    EXPECT_EQ(get_field_uint(r.final_key, Field::kNwDst), 0x0a000009u);
  }
  // A masked rewrite: only the written bits are constant; the others are
  // still the packet's and must be consulted by the later match.
  OpenFlowTables m;
  add(m, rule(0, 10, Match{},
              {test::set_field_masked(Field::kSfMetadata, 0x50, 0xf0), Action::goto_table(1)}));
  add(m, rule(1, 20, match({{Field::kSfMetadata, 0x53, 0xff}}), {Action::output(1)}));
  add(m, rule(1, 10, Match{}, {Action::output(2)}));
  FlowKey k = tcp_key(7, kIp1, kIp2, 1, 2);
  k.sf_metadata = 0x13;
  const XlateResult r = m.xlate(k);
  EXPECT_EQ(r.actions.back(), Action::output(1));
  EXPECT_EQ(field_bits(r.written, Field::kSfMetadata), 0xf0u);
  EXPECT_EQ(field_bits(r.wildcards, Field::kSfMetadata) & 0x0f, 0x0fu);
  EXPECT_EQ(field_bits(r.wildcards, Field::kSfMetadata) & 0xf0, 0u);
  k.sf_metadata = 0x14;
  EXPECT_EQ(m.xlate(k).actions.back(), Action::output(2));
}

TEST(Xlate, SetFieldOnAbsentHeaderIsNotEmitted) {
  OpenFlowTables t;
  add(t, rule(0, 10, Match{}, {Action::set_field(Field::kTpDst, 99), Action::output(1)}));
  FlowKey icmp = key({{Field::kDlType, 0x0800}, {Field::kNwProto, 1}});
  const XlateResult r = t.xlate(icmp);
  EXPECT_EQ(r.actions, ActionList{Action::output(1)});
  EXPECT_EQ(field_bits(r.written, Field::kTpDst), 0u);
  EXPECT_EQ(field_bits(r.wildcards, Field::kNwProto), 0xffu);
  FlowKey udp = key({{Field::kDlType, 0x0800}, {Field::kNwProto, 17}});
  EXPECT_EQ(t.xlate(udp).actions.size(), 2u);
}

TEST(Xlate, WildcardsCoverMatchedRuleAndRejectionsButNotUnrelatedFields) {
  OpenFlowTables t;
  // Higher priority, rejected on tp_dst.
  add(t, rule(0, 100, match({{Field::kDlType, 0x0800}, {Field::kNwProto, 6}, {Field::kTpDst, 80}}),
              {Action::output(1)}));
  // Higher priority, rejected on nw_src (a /24 prefix).
  add(t, rule(0, 90, match({{Field::kNwSrc, 0xc0a80100, prefix_mask(24)}}), {Action::output(2)}));
  // Matches.
  add(t, rule(0, 50, match({{Field::kNwSrc, 0x0a000000, prefix_mask(8)}}), {Action::output(3)}));
  // Lower priority, never consulted.
  add(t, rule(0, 10, match({{Field::kNwDst, kIp2}, {Field::kTpSrc, 5}}), {Action::output(4)}));

  const FlowKey k = tcp_key(1, 0x0a010203, 0x0b0b0b0b, 1234, 443);
  const XlateResult r = t.xlate(k);
  ASSERT_EQ(r.actions, ActionList{Action::output(3)});
  const FlowKey& wc = r.wildcards;
  // The matched rule's whole mask.
  EXPECT_EQ(field_bits(wc, Field::kNwSrc) & prefix_mask(8), prefix_mask(8));
  // Each rejected higher-priority rule: some bit where the key differs from it.
  const auto rules = t.rules(0);
  for (int i = 0; i < 2; ++i) {
    const Match& m = rules[i]->flow.match;
    bool proven = false;
    const auto* kb = reinterpret_cast<const uint8_t*>(&k);
    const auto* vb = reinterpret_cast<const uint8_t*>(&m.value);
    const auto* mb = reinterpret_cast<const uint8_t*>(&m.mask);
    const auto* wb = reinterpret_cast<const uint8_t*>(&wc);
    for (size_t b = 0; b < sizeof(FlowKey); ++b) proven |= ((kb[b] & mb[b]) ^ vb[b]) & wb[b];
    EXPECT_TRUE(proven) << "rejection of rule " << i << " not in the mask: " << test::hex_key(wc);
  }
  // output:N depends on in_port (never back out the ingress port).
  EXPECT_EQ(field_bits(wc, Field::kInPort), 0xffffffffu);
  // Unrelated fields stay wildcarded.
  for (Field f : {Field::kNwDst, Field::kDlSrc, Field::kDlDst, Field::kTpSrc, Field::kSfMetadata,
                  Field::kSfStage, Field::kSfAction, Field::kVlanTci, Field::kTcpFlags,
                  Field::kNwTos, Field::kNwFrag})
    EXPECT_EQ(field_bits(wc, f), 0u) << field_info(f).name << ": " << test::hex_key(wc);
  for (int w = 1; w < 4; ++w) EXPECT_EQ(wc.nw_src[w], 0u) << "IPv6 part of nw_src";
  // Every key agreeing on the mask is translated the same way.
  FlowKey other = k;
  other.nw_dst[0] = 0x01020304;
  other.tp_src = htons(7);
  other.dl_src[5] ^= 0xff;
  ASSERT_TRUE(key_matches(other, key_and(k, wc), wc));
  EXPECT_EQ(t.xlate(other).actions, r.actions);
}

TEST(Xlate, SoftflowActionEndsTheList) {
  OpenFlowTables t;
  const uint8_t noop = test::service_id("noop");
  add(t, rule(0, 10, Match{}, {Action::set_field(Field::kSfMetadata, 5), Action::goto_table(1)}));
  add(t, rule(1, 10, Match{}, {Action::output(2), Action::softflow(noop, 7)}));
  const XlateResult r = t.xlate(tcp_key(1, kIp1, kIp2, 1, 2));
  ASSERT_EQ(r.actions.size(), 3u);
  EXPECT_EQ(r.actions.back(), Action::softflow(noop, 7));
  EXPECT_TRUE(r.ends_in_service());
  EXPECT_EQ(r.drop_reason, DropReason::kNone);
  EXPECT_EQ(r.final_key.sf_metadata, 5u);
  // A service alone (no output) is not a drop either.
  OpenFlowTables t2;
  add(t2, rule(0, 10, Match{}, {Action::softflow(noop, 1)}));
  const XlateResult s = t2.xlate(tcp_key(1, kIp1, kIp2, 1, 2));
  EXPECT_TRUE(s.ends_in_service());
  EXPECT_EQ(s.drop_reason, DropReason::kNone);

  // Nothing may follow a softflow action; unknown services are refused.
  EXPECT_FALSE(t.add_flow(rule(0, 1, Match{}, {Action::softflow(noop, 1), Action::output(1)})));
  EXPECT_FALSE(t.add_flow(rule(0, 1, Match{}, {Action::softflow(noop, 1), Action::goto_table(2)})));
  EXPECT_FALSE(t.add_flow(rule(0, 1, Match{}, {Action::softflow(250, 1)})));
  EXPECT_FALSE(t.add_flow(rule(0, 1, Match{}, {Action::softflow(0, 1)})));
  EXPECT_EQ(t.rule_count(), 2u);
}

TEST(Xlate, SoftflowMetadataIsMatchable) {
  OpenFlowTables t;
  const uint8_t noop = test::service_id("noop");
  add(t, rule(0, 10, match({{Field::kSfStage, 0}}), {Action::softflow(noop, 0)}));
  add(t, rule(0, 10, match({{Field::kSfStage, 1}, {Field::kSfAction, noop}, {Field::kSfMetadata, 2, 0xf}}),
              {Action::output(5)}));
  add(t, rule(0, 5, match({{Field::kSfStage, 1}}), {Action::output(6)}));
  FlowKey k = tcp_key(1, kIp1, kIp2, 1, 2);
  EXPECT_EQ(t.xlate(k).actions, ActionList{Action::softflow(noop, 0)});
  k.sf_stage = 1;
  k.sf_action = noop;
  k.sf_metadata = 0x12;
  EXPECT_EQ(t.xlate(k).actions, ActionList{Action::output(5)});
  k.sf_metadata = 0x13;
  EXPECT_EQ(t.xlate(k).actions, ActionList{Action::output(6)});
}

std::vector<FlowRule> del_fixture() {
  return {
      rule(0, 10, match({{Field::kNwDst, kIp1}}), {Action::output(1)}),
      rule(0, 20, match({{Field::kNwDst, 0x0a000000, prefix_mask(24)}}), {Action::output(2)}),
      rule(0, 30, match({{Field::kNwProto, 6}, {Field::kNwDst, kIp1}}), {Action::output(3)}),
      rule(0, 40, match({{Field::kNwDst, 0x0a000000, prefix_mask(16)}}), {Action::output(4)}),
      rule(0, 50, match({{Field::kTpDst, 80}}), {Action::output(5)}),
      rule(1, 10, match({{Field::kNwDst, kIp1}}), {Action::output(6)}),
  };
}

TEST(Xlate, DelFlowsNonStrictDeletesRulesAtLeastAsSpecific) {
  OpenFlowTables t;
  for (const FlowRule& r : del_fixture()) add(t, r);
  const uint64_t v0 = t.version();
  // nw_dst=10.0.0.0/24 in table 0: the /24 itself, 10.0.0.1 and
  // tcp,10.0.0.1 go; the /16 (wider) and tp_dst=80 (unrelated) stay; table 1
  // is not searched.
  EXPECT_EQ(t.del_flows(match({{Field::kNwDst, 0x0a000000, prefix_mask(24)}}), 0), 3u);
  EXPECT_GT(t.version(), v0);
  std::vector<uint16_t> left;
  for (const auto* r : t.rules(0)) left.push_back(r->flow.priority);
  EXPECT_EQ(left, (std::vector<uint16_t>{50, 40}));
  EXPECT_EQ(t.rules(1).size(), 1u);
  // Nothing selected: no version change.
  const uint64_t v1 = t.version();
  EXPECT_EQ(t.del_flows(match({{Field::kNwDst, 0x0b000000, prefix_mask(8)}}), std::nullopt), 0u);
  EXPECT_EQ(t.version(), v1);
  // Match-all over all tables deletes everything.
  EXPECT_EQ(t.del_flows(Match{}, std::nullopt), 3u);
  EXPECT_EQ(t.rule_count(), 0u);
  EXPECT_EQ(t.xlate(tcp_key(1, kIp1, kIp1, 1, 80)).drop_reason, DropReason::kTableMiss);
}

TEST(Xlate, DelFlowsStrictNeedsSameMatchAndPriority) {
  OpenFlowTables t;
  for (const FlowRule& r : del_fixture()) add(t, r);
  const Match m = match({{Field::kNwDst, kIp1}});
  EXPECT_EQ(t.del_flows(m, 0, /*strict=*/true, /*priority=*/11), 0u);
  EXPECT_EQ(t.del_flows(match({{Field::kNwDst, 0x0a000000, prefix_mask(8)}}), 0, true, 10), 0u);
  EXPECT_EQ(t.rule_count(), 6u);
  // Strict in all tables: both nw_dst=10.0.0.1 priority-10 rules.
  EXPECT_EQ(t.del_flows(m, std::nullopt, true, 10), 2u);
  EXPECT_EQ(t.rule_count(), 4u);
  for (const auto* r : t.rules()) EXPECT_FALSE(r->flow.priority == 10 && r->flow.match == m);
  // The tcp,10.0.0.1 rule is more specific but not equal: still there.
  EXPECT_EQ(t.xlate(tcp_key(1, kIp2, kIp1, 1, 2)).actions, ActionList{Action::output(4)});
}

TEST(Xlate, AddWithSameTablePriorityAndMatchReplaces) {
  OpenFlowTables t;
  const Match m = match({{Field::kNwDst, kIp1}});
  add(t, rule(0, 10, m, {Action::output(1)}));
  const uint64_t old_id = t.rules(0)[0]->id;
  t.credit(old_id, 5, 500);
  EXPECT_EQ(t.find(old_id)->n_packets, 5u);
  add(t, rule(0, 10, m, {Action::output(2)}));
  ASSERT_EQ(t.rule_count(), 1u);
  const auto* r = t.rules(0)[0];
  EXPECT_NE(r->id, old_id);
  EXPECT_EQ(t.find(old_id), nullptr);
  EXPECT_EQ(r->n_packets, 0u);  // counters reset
  EXPECT_EQ(t.xlate(tcp_key(1, kIp2, kIp1, 1, 2)).actions, ActionList{Action::output(2)});
  // Different priority, table or match: a new rule.
  add(t, rule(0, 11, m, {Action::output(3)}));
  add(t, rule(1, 10, m, {Action::output(4)}));
  add(t, rule(0, 10, match({{Field::kNwDst, kIp1}, {Field::kNwProto, 6}}), {Action::output(5)}));
  EXPECT_EQ(t.rule_count(), 4u);
  EXPECT_EQ(t.xlate(tcp_key(1, kIp2, kIp1, 1, 2)).actions, ActionList{Action::output(3)});
}

TEST(Xlate, ModFlowsReplacesActionsOfSelectedRules) {
  OpenFlowTables t;
  for (const FlowRule& r : del_fixture()) add(t, r);
  const uint64_t v0 = t.version();
  EXPECT_EQ(t.mod_flows(match({{Field::kNwDst, 0x0a000000, prefix_mask(16)}}), 0,
                        {Action::output(9)}),
            4u);
  EXPECT_GT(t.version(), v0);
  EXPECT_EQ(t.xlate(tcp_key(1, kIp2, kIp1, 1, 2)).actions, ActionList{Action::output(9)});
  EXPECT_EQ(t.rules(1)[0]->flow.actions, ActionList{Action::output(6)});
  EXPECT_EQ(t.rule_count(), 6u);
  EXPECT_EQ(t.mod_flows(match({{Field::kTpDst, 80}}), 0, {}, /*strict=*/true, 50), 1u);
  EXPECT_TRUE(t.xlate(tcp_key(1, kIp2, kIp1, 1, 80)).actions.empty());
}

}  // namespace
}  // namespace softflow

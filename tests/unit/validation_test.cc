// Regression tests for flow-mod validation and megaflow printing (found in
// review): invalid action lists must never reach the tables.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "softflow/openflow.h"
#include "softflow/ports.h"
#include "softflow/service.h"
#include "softflow/switch.h"

namespace softflow {
namespace {

FlowRule simple(uint8_t table, Action a) {
  FlowRule r;
  r.table = table;
  r.actions.push_back(a);
  return r;
}

TEST(Validation, ModFlowsRejectsBackwardGotoAndChangesNothing) {
  OpenFlowTables t;
  ASSERT_TRUE(t.add_flow(simple(0, Action::goto_table(1))));
  ASSERT_TRUE(t.add_flow(simple(1, Action::output(2))));
  Status err;
  // goto_table:1 from table 1 would loop xlate forever.
  EXPECT_EQ(t.mod_flows(Match{}, 1, {Action::goto_table(1)}, false, kDefaultPriority, &err), 0u);
  EXPECT_NE(err.message().find("goto_table"), std::string::npos) << err.message();
  const FlowKey k = zero_key();
  XlateResult xr = t.xlate(k);
  ASSERT_EQ(xr.actions.size(), 1u);
  EXPECT_EQ(xr.actions[0], Action::output(2));
  // Applied to all tables, valid for one rule and not the other: all or nothing.
  EXPECT_EQ(t.mod_flows(Match{}, std::nullopt, {Action::goto_table(1)}), 0u);
  EXPECT_EQ(t.rules()[0]->flow.actions[0], Action::goto_table(1));
  EXPECT_EQ(t.rules()[1]->flow.actions[0], Action::output(2));
}

TEST(Validation, ModFlowsRejectsActionsAfterSoftflow) {
  const uint8_t noop = ServiceRegistry::instance().id_of("noop").value();
  OpenFlowTables t;
  ASSERT_TRUE(t.add_flow(simple(0, Action::output(2))));
  Status err;
  EXPECT_EQ(t.mod_flows(Match{}, 0, {Action::softflow(noop, 0), Action::output(3)}, false,
                        kDefaultPriority, &err),
            0u);
  EXPECT_NE(err.message().find("last action"), std::string::npos) << err.message();
  EXPECT_EQ(t.mod_flows(Match{}, 0, {Action::softflow(noop, 0)}), 1u);
}

TEST(Validation, SetFieldOnlyOnRewritableFields) {
  const uint8_t noop = ServiceRegistry::instance().id_of("noop").value();
  for (Field f : {Field::kSfStage, Field::kSfAction, Field::kInPort, Field::kDlType, Field::kNwProto,
                  Field::kVlanTci, Field::kTcpFlags, Field::kNwFrag}) {
    FlowRule r;
    r.actions = {Action::set_field(f, 0), Action::softflow(noop, 0)};
    Status s = validate_rule(r);
    EXPECT_FALSE(s) << field_info(f).name;
    EXPECT_NE(s.message().find(std::string(field_info(f).name)), std::string::npos) << s.message();
  }
  FlowRule tos;
  tos.actions = {Action::set_field(Field::kNwTos, 0xff)};  // would write ECN bits
  EXPECT_FALSE(validate_rule(tos));
  tos.actions[0].mask[0] = 0xfc;
  tos.actions[0].value[0] = 0xfc;
  EXPECT_TRUE(validate_rule(tos));
  FlowRule ok;
  ok.actions = {Action::set_field(Field::kSfMetadata, 7), Action::set_field(Field::kTpDst, 80)};
  EXPECT_TRUE(validate_rule(ok));
}

TEST(Validation, MegaflowPrintsEachFieldOnce) {
  Megaflow mf;
  mf.key = zero_key();
  mf.mask = zero_key();
  mf.key.dl_type = htons(0x0800);
  mf.mask.dl_type = 0xffff;
  mf.key.nw_frag = SF_FRAG_ANY;
  mf.mask.nw_frag = 0x03;
  const std::string s = print_megaflow(mf, 0);
  const size_t first = s.find("nw_frag");
  ASSERT_NE(first, std::string::npos) << s;
  EXPECT_EQ(s.find("nw_frag", first + 1), std::string::npos) << s;
}

TEST(Validation, RunFramesReportsOversizedFrames) {
  auto sw = Switch::create({}).value();
  ASSERT_TRUE(sw->add_flow(simple(0, Action::output(2))));
  MemoryPorts ports({1, 2});
  sw->datapath().set_sink(&ports);
  FramePool pool(8);
  std::vector<Frame> frames(2);
  frames[0] = Frame{1, 0, std::vector<uint8_t>(64, 0xab)};
  frames[1] = Frame{1, 0, std::vector<uint8_t>(FramePool::kFrameSize, 0xab)};  // too big
  EXPECT_EQ(run_frames(sw->datapath(), frames, pool), 1u);
  EXPECT_EQ(ports.sent(2).size(), 1u);
  EXPECT_EQ(pool.available(), pool.capacity());
}

}  // namespace
}  // namespace softflow

#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstddef>

#include "softflow/flow.h"
#include "softflow/flow_key.h"

namespace softflow {
namespace {

TEST(FlowKey, AbiLayoutMatchesBpfSide) {
  EXPECT_EQ(sizeof(FlowKey), 72u);
  EXPECT_EQ(offsetof(FlowKey, in_port), 0u);
  EXPECT_EQ(offsetof(FlowKey, sf_metadata), 4u);
  EXPECT_EQ(offsetof(FlowKey, sf_stage), 8u);
  EXPECT_EQ(offsetof(FlowKey, sf_action), 9u);
  EXPECT_EQ(offsetof(FlowKey, vlan_tci), 12u);
  EXPECT_EQ(offsetof(FlowKey, nw_proto), 14u);
  EXPECT_EQ(offsetof(FlowKey, dl_src), 22u);
  EXPECT_EQ(offsetof(FlowKey, tp_dst), 30u);
  EXPECT_EQ(offsetof(FlowKey, nw_frag), 66u);
}

TEST(FlowKey, MaskedHashIgnoresWildcardedBits) {
  FlowKey a = zero_key(), b = zero_key();
  a.nw_src[0] = 0x0100000a;
  b.nw_src[0] = 0x0200000a;
  FlowKey m = zero_key();
  m.nw_dst[0] = 0xffffffff;
  EXPECT_EQ(masked_key_hash(a, m), masked_key_hash(b, m));
  EXPECT_NE(key_hash(a), key_hash(b));
  m.nw_src[0] = 0xffffffff;
  EXPECT_NE(masked_key_hash(a, m), masked_key_hash(b, m));
}

TEST(FlowKey, FieldUintRoundTripsInBothByteOrders) {
  FlowKey k = zero_key();
  set_field_uint(k, Field::kTpDst, 80);
  EXPECT_EQ(k.tp_dst, htons(80));
  EXPECT_EQ(get_field_uint(k, Field::kTpDst), 80u);
  set_field_uint(k, Field::kSfMetadata, 0x12345678);
  EXPECT_EQ(k.sf_metadata, 0x12345678u);
  set_field_uint(k, Field::kDlDst, 0x0a0b0c0d0e0fULL);
  EXPECT_EQ(k.dl_dst[0], 0x0a);
  EXPECT_EQ(k.dl_dst[5], 0x0f);
  EXPECT_EQ(get_field_uint(k, Field::kDlDst), 0x0a0b0c0d0e0fULL);
  // Most significant byte of a host-order field is its last byte.
  EXPECT_EQ(field_significant_byte(Field::kSfMetadata, 0), offsetof(FlowKey, sf_metadata) + 3);
  EXPECT_EQ(field_significant_byte(Field::kNwDst, 0), offsetof(FlowKey, nw_dst));
}

TEST(Match, CoversIsSubsetOfPackets) {
  Match wide, narrow;
  wide.set_uint(Field::kDlType, 0x0800, 0xffff);
  narrow = wide;
  narrow.set_uint(Field::kNwProto, 6, 0xff);
  EXPECT_TRUE(wide.covers(narrow));
  EXPECT_FALSE(narrow.covers(wide));
  Match other;
  other.set_uint(Field::kDlType, 0x86dd, 0xffff);
  EXPECT_FALSE(wide.covers(other));
}

}  // namespace
}  // namespace softflow

#include "softflow/flow_key.h"

#include <cstddef>

namespace softflow {
namespace {

#define SF_FIELD(F, NAME, MEMBER, SIZE, HOST)                                           \
  FieldInfo {                                                                           \
    Field::F, NAME, static_cast<uint16_t>(offsetof(FlowKey, MEMBER)), SIZE, HOST \
  }

const std::array<FieldInfo, kFieldCount> kFields = {{
    SF_FIELD(kInPort, "in_port", in_port, 4, true),
    SF_FIELD(kSfMetadata, "sf_metadata", sf_metadata, 4, true),
    SF_FIELD(kSfStage, "sf_stage", sf_stage, 1, true),
    SF_FIELD(kSfAction, "sf_action", sf_action, 1, true),
    SF_FIELD(kDlType, "dl_type", dl_type, 2, false),
    SF_FIELD(kVlanTci, "vlan_tci", vlan_tci, 2, false),
    SF_FIELD(kNwProto, "nw_proto", nw_proto, 1, false),
    SF_FIELD(kNwTos, "nw_tos", nw_tos, 1, false),
    SF_FIELD(kDlDst, "dl_dst", dl_dst, 6, false),
    SF_FIELD(kDlSrc, "dl_src", dl_src, 6, false),
    SF_FIELD(kTpSrc, "tp_src", tp_src, 2, false),
    SF_FIELD(kTpDst, "tp_dst", tp_dst, 2, false),
    SF_FIELD(kNwSrc, "nw_src", nw_src, 4, false),
    SF_FIELD(kNwDst, "nw_dst", nw_dst, 4, false),
    SF_FIELD(kIpv6Src, "ipv6_src", nw_src, 16, false),
    SF_FIELD(kIpv6Dst, "ipv6_dst", nw_dst, 16, false),
    SF_FIELD(kTcpFlags, "tcp_flags", tcp_flags, 2, false),
    SF_FIELD(kNwFrag, "nw_frag", nw_frag, 1, true),
}};
#undef SF_FIELD

const std::array<Field, kFieldCount> kPreference = {
    Field::kSfStage, Field::kSfAction, Field::kDlType,  Field::kNwProto, Field::kInPort,
    Field::kSfMetadata, Field::kVlanTci, Field::kNwFrag, Field::kNwTos,  Field::kDlDst,
    Field::kDlSrc,   Field::kNwDst,    Field::kNwSrc,   Field::kIpv6Dst, Field::kIpv6Src,
    Field::kTpDst,   Field::kTpSrc,    Field::kTcpFlags,
};

bool check_table() {
  for (size_t i = 0; i < kFieldCount; ++i)
    if (static_cast<size_t>(kFields[i].field) != i) return false;
  return true;
}
const bool kTableOk = check_table();

}  // namespace

const FieldInfo& field_info(Field f) { return kFields[static_cast<size_t>(f)]; }

std::span<const Field> fields_by_wildcard_preference() {
  (void)kTableOk;
  return kPreference;
}

uint64_t get_field_uint(const FlowKey& k, Field f) {
  const FieldInfo& fi = field_info(f);
  const uint8_t* p = field_ptr(k, f);
  if (fi.host_order) {
    uint64_t v = 0;
    std::memcpy(&v, p, fi.size);  // little-endian host
    return v;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < fi.size && i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

void set_field_uint(FlowKey& k, Field f, uint64_t v) {
  const FieldInfo& fi = field_info(f);
  uint8_t* p = field_ptr(k, f);
  if (fi.host_order) {
    std::memcpy(p, &v, fi.size);
    return;
  }
  for (size_t i = fi.size; i-- > 0;) {
    p[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
}

FlowKey field_mask(Field f) {
  FlowKey m = zero_key();
  std::memset(field_ptr(m, f), 0xff, field_info(f).size);
  return m;
}

size_t field_significant_byte(Field f, size_t i) {
  const FieldInfo& fi = field_info(f);
  return fi.host_order ? fi.offset + fi.size - 1 - i : fi.offset + i;
}

}  // namespace softflow

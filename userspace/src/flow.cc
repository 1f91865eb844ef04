#include "softflow/flow.h"

namespace softflow {

Action Action::set_field(Field f, uint64_t v) {
  Action a;
  a.type = ActionType::kSetField;
  a.field = f;
  FlowKey tmp = zero_key();
  set_field_uint(tmp, f, v);
  const FieldInfo& fi = field_info(f);
  std::memcpy(a.value.data(), field_ptr(tmp, f), fi.size);
  std::memset(a.mask.data(), 0xff, fi.size);
  return a;
}

void apply_set_field(FlowKey& key, const Action& a) {
  uint8_t* p = field_ptr(key, a.field);
  const size_t n = field_info(a.field).size;
  for (size_t i = 0; i < n; ++i)
    p[i] = static_cast<uint8_t>((p[i] & ~a.mask[i]) | (a.value[i] & a.mask[i]));
}

FlowKey set_field_written_mask(const Action& a) {
  FlowKey m = zero_key();
  std::memcpy(field_ptr(m, a.field), a.mask.data(), field_info(a.field).size);
  return m;
}

void Match::set(Field f, const uint8_t* v, const uint8_t* m) {
  uint8_t* pv = field_ptr(value, f);
  uint8_t* pm = field_ptr(mask, f);
  const size_t n = field_info(f).size;
  for (size_t i = 0; i < n; ++i) {
    pm[i] = m[i];
    pv[i] = static_cast<uint8_t>(v[i] & m[i]);
  }
}

void Match::set_uint(Field f, uint64_t v, uint64_t m) {
  FlowKey tv = zero_key();
  FlowKey tm = zero_key();
  set_field_uint(tv, f, v);
  set_field_uint(tm, f, m);
  set(f, field_ptr(tv, f), field_ptr(tm, f));
}

bool Match::covers(const Match& other) const {
  // Every bit this match constrains, other constrains to the same value.
  if (!key_is_subset(mask, other.mask)) return false;
  return key_equal(key_and(other.value, mask), value);
}

}  // namespace softflow

// The flow key (defined in bpf/include/sf_abi.h, shared with XDP) and the
// operations the classifiers need: word-wise masking, hashing, and a table of
// field descriptors used by the flow syntax, xlate's wildcard tracking and
// `sfctl trace`.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "sf_abi.h"

namespace softflow {

using FlowKey = ::sf_flow_key;
inline constexpr size_t kKeyWords = SF_FLOW_KEY_WORDS;
static_assert(sizeof(FlowKey) == kKeyWords * 8);
static_assert(alignof(FlowKey) == 8);

inline const sf_word_t* key_words(const FlowKey& k) {
  return reinterpret_cast<const sf_word_t*>(&k);
}
inline sf_word_t* key_words(FlowKey& k) { return reinterpret_cast<sf_word_t*>(&k); }

inline FlowKey zero_key() {
  FlowKey k;
  std::memset(&k, 0, sizeof k);
  return k;
}

inline bool key_equal(const FlowKey& a, const FlowKey& b) {
  const sf_word_t* x = key_words(a);
  const sf_word_t* y = key_words(b);
  uint64_t diff = 0;
  for (size_t i = 0; i < kKeyWords; ++i) diff |= x[i] ^ y[i];
  return diff == 0;
}

inline bool key_is_zero(const FlowKey& a) {
  const sf_word_t* x = key_words(a);
  uint64_t any = 0;
  for (size_t i = 0; i < kKeyWords; ++i) any |= x[i];
  return any == 0;
}

// (key & mask) == value, where value is already masked.
inline bool key_matches(const FlowKey& key, const FlowKey& value, const FlowKey& mask) {
  const sf_word_t* k = key_words(key);
  const sf_word_t* v = key_words(value);
  const sf_word_t* m = key_words(mask);
  uint64_t diff = 0;
  for (size_t i = 0; i < kKeyWords; ++i) diff |= (k[i] & m[i]) ^ v[i];
  return diff == 0;
}

inline FlowKey key_and(const FlowKey& a, const FlowKey& b) {
  FlowKey r;
  for (size_t i = 0; i < kKeyWords; ++i) key_words(r)[i] = key_words(a)[i] & key_words(b)[i];
  return r;
}
inline FlowKey key_or(const FlowKey& a, const FlowKey& b) {
  FlowKey r;
  for (size_t i = 0; i < kKeyWords; ++i) key_words(r)[i] = key_words(a)[i] | key_words(b)[i];
  return r;
}
inline FlowKey key_and_not(const FlowKey& a, const FlowKey& b) {
  FlowKey r;
  for (size_t i = 0; i < kKeyWords; ++i) key_words(r)[i] = key_words(a)[i] & ~key_words(b)[i];
  return r;
}
inline void key_or_into(FlowKey& dst, const FlowKey& src) {
  for (size_t i = 0; i < kKeyWords; ++i) key_words(dst)[i] |= key_words(src)[i];
}
// Every bit set in a is also set in b.
inline bool key_is_subset(const FlowKey& a, const FlowKey& b) {
  uint64_t extra = 0;
  for (size_t i = 0; i < kKeyWords; ++i) extra |= key_words(a)[i] & ~key_words(b)[i];
  return extra == 0;
}

inline uint32_t key_hash(const FlowKey& k) { return sf_hash_words(key_words(k), nullptr); }
inline uint32_t masked_key_hash(const FlowKey& k, const FlowKey& mask) {
  return sf_hash_words(key_words(k), key_words(mask));
}

struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const { return key_hash(k); }
};
struct FlowKeyEqual {
  bool operator()(const FlowKey& a, const FlowKey& b) const { return key_equal(a, b); }
};

// ---- field descriptors ----------------------------------------------------

enum class Field : uint8_t {
  kInPort,
  kSfMetadata,
  kSfStage,
  kSfAction,
  kDlType,
  kVlanTci,
  kNwProto,
  kNwTos,
  kDlDst,
  kDlSrc,
  kTpSrc,
  kTpDst,
  kNwSrc,  // IPv4 (first 4 bytes of the address slot)
  kNwDst,
  kIpv6Src,  // all 16 bytes
  kIpv6Dst,
  kTcpFlags,
  kNwFrag,
  kCount
};
inline constexpr size_t kFieldCount = static_cast<size_t>(Field::kCount);

struct FieldInfo {
  Field field;
  std::string_view name;  // flow-syntax name (the first one, if several)
  uint16_t offset;        // byte offset in FlowKey
  uint8_t size;           // bytes
  bool host_order;        // stored in host byte order (not from the wire)
};

const FieldInfo& field_info(Field f);
// All fields, in the order xlate prefers to un-wildcard them: fields with few
// distinct values first, so megaflow masks stay few and wide.
std::span<const Field> fields_by_wildcard_preference();

// Raw bytes of a field inside a key (size field_info(f).size).
inline uint8_t* field_ptr(FlowKey& k, Field f) {
  return reinterpret_cast<uint8_t*>(&k) + field_info(f).offset;
}
inline const uint8_t* field_ptr(const FlowKey& k, Field f) {
  return reinterpret_cast<const uint8_t*>(&k) + field_info(f).offset;
}

// Field value as an integer in host order (fields of at most 8 bytes).
uint64_t get_field_uint(const FlowKey& k, Field f);
void set_field_uint(FlowKey& k, Field f, uint64_t v);

// A key with all bits of field f set (a mask).
FlowKey field_mask(Field f);

// Bytes of field f in order of significance (most significant first) are
// needed for prefix-style wildcarding; this returns the byte index inside
// the key of the i-th most significant byte of f.
size_t field_significant_byte(Field f, size_t i);

}  // namespace softflow

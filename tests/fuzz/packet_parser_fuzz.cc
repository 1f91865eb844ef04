// libFuzzer target for the packet parser and the header rewrites.
//
// For any input frame: parsing keeps its invariants (offsets inside the
// frame, whole headers behind them, no L4 fields without an L4 header), and
// after a few set_field / dec_ttl actions on headers the packet has, the key
// still equals what re-parsing the bytes gives and the incrementally updated
// checksums equal recomputed ones.  Any violation aborts.
//
// The frame lives in a FramePool frame like every datapath packet; its
// headroom and tailroom are poisoned under AddressSanitizer so that reading
// outside [data, data + len) is caught even though the buffer is larger.
//
// Seeds: tests/fuzz/corpus/packet_parser/.
#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "softflow/flow.h"
#include "softflow/packet_ops.h"
#include "softflow/parse.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define SF_FUZZ_POISON(addr, size) ASAN_POISON_MEMORY_REGION(addr, size)
#define SF_FUZZ_UNPOISON(addr, size) ASAN_UNPOISON_MEMORY_REGION(addr, size)
#endif
#endif
#ifndef SF_FUZZ_POISON
#define SF_FUZZ_POISON(addr, size) ((void)(addr), (void)(size))
#define SF_FUZZ_UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

namespace softflow {
namespace {

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "packet_parser_fuzz: invariant violated: %s\n", what);
  std::abort();
}

void check_invariants(const Packet& pkt) {
  const FlowKey& k = pkt.key;
  const bool has_l3 = pkt.l3_ofs != kNoOffset;
  const bool has_l4 = pkt.l4_ofs != kNoOffset;
  check(pkt.l2_ofs == 0, "l2_ofs == 0");
  check((pkt.parse_flags & ~kParseMalformed) == 0, "known parse flags only");
  check(!has_l3 || pkt.l3_ofs < pkt.len, "l3_ofs < len");
  check(!has_l4 || pkt.l4_ofs < pkt.len, "l4_ofs < len");
  check(pkt.payload_ofs == kNoOffset || pkt.payload_ofs <= pkt.len, "payload_ofs <= len");
  check(has_l4 == (pkt.payload_ofs != kNoOffset), "payload_ofs set iff l4_ofs set");
  check(!has_l4 || (has_l3 && pkt.l3_ofs < pkt.l4_ofs && pkt.l4_ofs < pkt.payload_ofs),
        "l3 < l4 < payload");
  check(pkt.len >= 14 || (pkt.parse_flags & kParseTruncatedL2), "runt flagged");
  for (uint8_t b : k.pad) check(b == 0, "key padding zero");
  if (has_l3) {
    const uint32_t room = pkt.len - pkt.l3_ofs;
    const uint8_t* l3 = pkt.data + pkt.l3_ofs;
    switch (ntohs(k.dl_type)) {
      case 0x0800:
        check(room >= 20 && (l3[0] & 0x0f) * 4u <= room && (l3[0] >> 4) == 4, "whole IPv4 header");
        break;
      case 0x86dd:
        check(room >= 40 && (l3[0] >> 4) == 6, "whole IPv6 header");
        break;
      case 0x0806:
        check(room >= 28, "whole ARP header");
        break;
      default:
        check(false, "l3_ofs only for IPv4/IPv6/ARP");
    }
  } else {
    check(
        k.nw_proto == 0 && k.nw_tos == 0 && k.nw_frag == 0 && k.nw_src[0] == 0 && k.nw_dst[0] == 0,
        "no L3 fields without l3_ofs");
  }
  if (has_l4) {
    check(!(k.nw_frag & SF_FRAG_LATER), "no L4 in a later fragment");
    const uint8_t* l4 = pkt.data + pkt.l4_ofs;
    if (k.nw_proto == 6) {
      check((l4[12] >> 4) >= 5 && pkt.payload_ofs == pkt.l4_ofs + (l4[12] >> 4) * 4u,
            "TCP header length");
    } else {
      check(pkt.payload_ofs == pkt.l4_ofs + 8u, "UDP/ICMP header length");
    }
  } else {
    check(k.tp_src == 0 && k.tp_dst == 0 && k.tcp_flags == 0, "no L4 fields without l4_ofs");
  }
}

// A set-field action with value and mask taken from the input's tail, so the
// fuzzer steers them too.
class ActionSource {
 public:
  ActionSource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  Action set(Field f) {
    Action a;
    a.type = ActionType::kSetField;
    a.field = f;
    for (size_t i = 0; i < field_info(f).size; ++i) {
      a.mask[i] = next();
      a.value[i] = next() & a.mask[i];
    }
    if (f == Field::kNwTos) a.mask[0] &= 0xfc;  // flow syntax allows DSCP only
    a.value[0] &= a.mask[0];
    return a;
  }

 private:
  uint8_t next() { return size_ == 0 ? 0xff : data_[pos_++ % size_]; }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

void apply_actions(Packet& pkt, ActionSource& source) {
  const uint16_t dl_type = ntohs(pkt.key.dl_type);
  // Only headers the packet has: on others set_field changes the key alone
  // (it follows xlate), and the key/bytes comparison below would not hold.
  packet_set_field(pkt, source.set(Field::kSfMetadata));
  if (pkt.len >= 14) packet_set_field(pkt, source.set(Field::kDlSrc));
  if (pkt.l3_ofs != kNoOffset) {
    if (dl_type == 0x86dd) {
      packet_set_field(pkt, source.set(Field::kIpv6Src));
      packet_set_field(pkt, source.set(Field::kIpv6Dst));
    } else {
      packet_set_field(pkt, source.set(Field::kNwDst));
      packet_set_field(pkt, source.set(Field::kNwSrc));
    }
    if (dl_type != 0x0806) {
      packet_set_field(pkt, source.set(Field::kNwTos));
      packet_dec_ttl(pkt);
    }
  }
  if (pkt.l4_ofs != kNoOffset && (pkt.key.nw_proto == 6 || pkt.key.nw_proto == 17)) {
    packet_set_field(pkt, source.set(Field::kTpSrc));
    packet_set_field(pkt, source.set(Field::kTpDst));
  }
}

FramePool& pool() {
  static FramePool frames(1);
  return frames;
}

}  // namespace
}  // namespace softflow

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace softflow;
  const size_t frame_len = std::min<size_t>(size, FramePool::kFrameSize - FramePool::kHeadroom);
  Packet pkt;
  if (!pool().load(pkt, std::span<const uint8_t>(data, frame_len), /*in_port=*/1)) std::abort();
  SF_FUZZ_POISON(pkt.data - pkt.headroom, pkt.headroom);
  SF_FUZZ_POISON(pkt.data + pkt.len, pkt.tailroom);

  pkt.key.sf_metadata = 0x5f;
  parse_packet(pkt);
  check_invariants(pkt);
  check(pkt.key.in_port == 1 && pkt.key.sf_metadata == 0x5f, "metadata kept");

  // Start from right checksums, so that the incremental updates can be held
  // to a recomputation.
  packet_fix_checksums(pkt);
  ActionSource source(data, size);
  apply_actions(pkt, source);

  std::vector<uint8_t> bytes(pkt.data, pkt.data + pkt.len);
  Packet reparsed = pkt;
  reparsed.data = bytes.data();
  parse_packet(reparsed);
  check_invariants(reparsed);
  check(key_equal(reparsed.key, pkt.key), "key equals the re-parsed bytes after actions");
  check(reparsed.parse_flags == pkt.parse_flags && reparsed.l3_ofs == pkt.l3_ofs &&
            reparsed.l4_ofs == pkt.l4_ofs && reparsed.payload_ofs == pkt.payload_ofs,
        "actions do not change the packet's structure");
  packet_fix_checksums(reparsed);
  check(pkt.len == 0 || std::memcmp(bytes.data(), pkt.data, pkt.len) == 0,
        "incremental checksums equal recomputed ones");

  SF_FUZZ_UNPOISON(pkt.data - pkt.headroom, pkt.headroom);
  SF_FUZZ_UNPOISON(pkt.data + pkt.len, pkt.tailroom);
  pool().release(pkt);
  return 0;
}

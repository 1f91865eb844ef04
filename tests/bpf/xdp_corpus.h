// The fixture table of frames the XDP parser is tested on: well-formed
// shapes from PacketBuilder and malformed ones patched from them, each with
// the verdict and the metadata (parse flags, header offsets, a few key
// fields) expected from the program.  The expectations are written out by
// hand, so a mistake shared by the XDP and the userspace parser still shows.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "softflow/packet.h"

namespace softflow::bpf_test {

inline constexpr uint16_t kNone = kNoOffset;

struct ParseCase {
  std::string description;
  std::vector<uint8_t> frame;
  uint32_t verdict;  // XDP_* (XDP_PASS: the tests bind no AF_XDP socket)
  uint16_t parse_flags;
  uint16_t l3_ofs;
  uint16_t l4_ofs;
  uint16_t payload_ofs;
  std::optional<uint8_t> nw_proto = std::nullopt;  // checked when set
  std::optional<uint8_t> nw_frag = std::nullopt;
};

std::vector<ParseCase> parse_corpus();

}  // namespace softflow::bpf_test

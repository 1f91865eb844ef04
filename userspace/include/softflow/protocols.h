// Protocol numbers used across parsing, header rewrites, flow syntax, xlate
// and the packet builder (defined once here).
#pragma once

#include <cstdint>

namespace softflow {

constexpr uint16_t kEthTypeIpv4 = 0x0800;
constexpr uint16_t kEthTypeArp = 0x0806;
constexpr uint16_t kEthTypeIpv6 = 0x86dd;
constexpr uint16_t kEthTypeVlan = 0x8100;  // 802.1Q C-tag
constexpr uint16_t kEthTypeQinQ = 0x88a8;  // 802.1ad S-tag

constexpr uint8_t kProtoHopByHop = 0;
constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoRouting = 43;
constexpr uint8_t kProtoFragment = 44;
constexpr uint8_t kProtoAh = 51;
constexpr uint8_t kProtoIcmpv6 = 58;
constexpr uint8_t kProtoNoNextHeader = 59;
constexpr uint8_t kProtoDestOpts = 60;

}  // namespace softflow

// One-line human descriptions of packets and keys (demo, trace, logs).
#pragma once

#include <string>

#include "softflow/flow_key.h"

namespace softflow {

// "00:00:00:00:00:01 > 00:00:00:00:00:02 ipv4 10.0.0.1:1234 > 10.1.0.5:80 udp"
std::string describe_key(const FlowKey& key);
std::string format_mac(const uint8_t mac[6]);
std::string format_ipv4(uint32_t be_addr);
std::string format_ipv6(const uint32_t be_addr[4]);

}  // namespace softflow

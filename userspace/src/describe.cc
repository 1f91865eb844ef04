#include "softflow/describe.h"

#include <arpa/inet.h>
#include <fmt/format.h>

namespace softflow {

std::string format_mac(const uint8_t m[6]) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4],
                     m[5]);
}

std::string format_ipv4(uint32_t be_addr) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &be_addr, buf, sizeof buf);
  return buf;
}

std::string format_ipv6(const uint32_t be_addr[4]) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, be_addr, buf, sizeof buf);
  return buf;
}

std::string describe_key(const FlowKey& k) {
  std::string out = format_mac(k.dl_src) + " > " + format_mac(k.dl_dst);
  if (k.vlan_tci) out += fmt::format(" vlan {}", ntohs(k.vlan_tci) & 0x0fff);
  const uint16_t type = ntohs(k.dl_type);
  const char* l4 = k.nw_proto == 6    ? "tcp"
                   : k.nw_proto == 17 ? "udp"
                   : k.nw_proto == 1  ? "icmp"
                   : k.nw_proto == 58 ? "icmp6"
                                      : nullptr;
  const bool ports = (k.nw_proto == 6 || k.nw_proto == 17) && !(k.nw_frag & SF_FRAG_LATER);
  auto endpoint = [&](const std::string& addr, uint16_t be_port) {
    return ports ? fmt::format("{}:{}", addr, ntohs(be_port)) : addr;
  };
  if (type == 0x0800 || type == 0x86dd) {
    const bool v4 = type == 0x0800;
    const std::string src = v4 ? format_ipv4(k.nw_src[0]) : format_ipv6(k.nw_src);
    const std::string dst = v4 ? format_ipv4(k.nw_dst[0]) : format_ipv6(k.nw_dst);
    out += fmt::format(" {} {} > {}", v4 ? "ipv4" : "ipv6", endpoint(src, k.tp_src),
                       endpoint(dst, k.tp_dst));
    if (l4) out += fmt::format(" {}", l4);
    else out += fmt::format(" proto {}", k.nw_proto);
    if (k.nw_proto == 1 || k.nw_proto == 58)
      out += fmt::format(" type {} code {}", ntohs(k.tp_src), ntohs(k.tp_dst));
    if (k.nw_frag) out += (k.nw_frag & SF_FRAG_LATER) ? " frag(later)" : " frag(first)";
  } else if (type == 0x0806) {
    out += fmt::format(" arp op {} {} > {}", k.nw_proto, format_ipv4(k.nw_src[0]),
                       format_ipv4(k.nw_dst[0]));
  } else {
    out += fmt::format(" dl_type {:#06x}", type);
  }
  if (k.sf_stage || k.sf_action || k.sf_metadata)
    out += fmt::format(" [sf_stage={} sf_action={} sf_metadata={}]", k.sf_stage, k.sf_action,
                       k.sf_metadata);
  return out;
}

}  // namespace softflow

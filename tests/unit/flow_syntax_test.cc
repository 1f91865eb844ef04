// Flow syntax: valid lines land in the right key bits, invalid lines say what
// and where, and print -> parse is the identity on everything the parser
// produces (checked on fixed lines and on seeded random rules).
#include "softflow/flow_syntax.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "softflow/service.h"

namespace softflow {
namespace {

uint8_t service_id(std::string_view name) {
  const auto id = ServiceRegistry::instance().id_of(name);
  EXPECT_TRUE(id.has_value()) << "service " << name << " is not linked into the test binary";
  return id.value_or(0);
}

FlowParseOptions options_with_ports() {
  FlowParseOptions opts;
  opts.port_by_name = [](std::string_view name) -> std::optional<uint32_t> {
    if (name == "eth1") return 1;
    if (name == "eth2") return 2;
    if (name == "uplink") return 100;
    return std::nullopt;
  };
  return opts;
}

__be32 ipv4(const char* text) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, text, &a), 1) << text;
  return a.s_addr;
}

void ipv6(const char* text, __be32 out[4]) { EXPECT_EQ(inet_pton(AF_INET6, text, out), 1) << text; }

// Byte-level description of the fields where two matches differ.
std::string match_diff(const Match& got, const Match& want) {
  std::string out;
  for (size_t i = 0; i < kFieldCount; ++i) {
    const auto f = static_cast<Field>(i);
    const size_t n = field_info(f).size;
    const auto bytes = [n](const uint8_t* p) {
      std::string s;
      char buf[4];
      for (size_t j = 0; j < n; ++j) {
        std::snprintf(buf, sizeof buf, "%02x", p[j]);
        s += buf;
      }
      return s;
    };
    const std::string gv = bytes(field_ptr(got.value, f)), gm = bytes(field_ptr(got.mask, f));
    const std::string wv = bytes(field_ptr(want.value, f)), wm = bytes(field_ptr(want.mask, f));
    if (gv != wv || gm != wm)
      out += "\n  " + std::string(field_info(f).name) + ": got " + gv + "/" + gm + ", want " + wv +
             "/" + wm;
  }
  return out;
}

// ---- valid lines -------------------------------------------------------------

void set_ip(FlowKey& v, FlowKey& m) {
  v.dl_type = htons(0x0800);
  m.dl_type = 0xffff;
}
void set_ipv6(FlowKey& v, FlowKey& m) {
  v.dl_type = htons(0x86dd);
  m.dl_type = 0xffff;
}
void set_proto(FlowKey& v, FlowKey& m, uint8_t proto) {
  v.nw_proto = proto;
  m.nw_proto = 0xff;
}
void set_tcp(FlowKey& v, FlowKey& m) {
  set_ip(v, m);
  set_proto(v, m, 6);
}

struct MatchCase {
  std::string line;
  // Fills the expected match (value already masked).
  std::function<void(FlowKey& value, FlowKey& mask)> expect;
};

const std::vector<MatchCase>& match_cases() {
  static const std::vector<MatchCase> cases = {
      {"actions=drop", [](FlowKey&, FlowKey&) {}},
      {"in_port=5,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.in_port = 5;
         m.in_port = 0xffffffff;
       }},
      {"in_port=uplink,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.in_port = 100;
         m.in_port = 0xffffffff;
       }},
      {"in_port=0xffffffff,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.in_port = 0xffffffff;
         m.in_port = 0xffffffff;
       }},
      {"dl_src=AA:bb:0:1:2:3,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         const uint8_t mac[6] = {0xaa, 0xbb, 0x00, 0x01, 0x02, 0x03};
         std::memcpy(v.dl_src, mac, 6);
         std::memset(m.dl_src, 0xff, 6);
       }},
      {"dl_dst=01:00:5e:01:02:03/01:00:00:00:00:00,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.dl_dst[0] = 0x01;
         m.dl_dst[0] = 0x01;
       }},
      {"dl_type=0x88cc,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.dl_type = htons(0x88cc);
         m.dl_type = 0xffff;
       }},
      {"dl_type=2054,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.dl_type = htons(0x0806);
         m.dl_type = 0xffff;
       }},
      {"dl_vlan=100,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.vlan_tci = htons(0x1064);
         m.vlan_tci = htons(0x1fff);
       }},
      {"dl_vlan=0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.vlan_tci = htons(SF_VLAN_PRESENT);
         m.vlan_tci = htons(0x1fff);
       }},
      {"dl_vlan=0xffff,actions=drop", [](FlowKey&, FlowKey& m) { m.vlan_tci = 0xffff; }},
      {"vlan_tci=0x3064/0xf000,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.vlan_tci = htons(0x3000);
         m.vlan_tci = htons(0xf000);
       }},
      {"ip,actions=drop", set_ip},
      {"ipv6,actions=drop", set_ipv6},
      {"arp,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.dl_type = htons(0x0806);
         m.dl_type = 0xffff;
       }},
      {"tcp,actions=drop", set_tcp},
      {"udp,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         set_proto(v, m, 17);
       }},
      {"icmp,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         set_proto(v, m, 1);
       }},
      {"tcp6,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 6);
       }},
      {"udp6,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 17);
       }},
      {"icmp6,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 58);
       }},
      // Redundant spellings of the same protocol are fine.
      {"ip,tcp,nw_proto=6,dl_type=0x0800,actions=drop", set_tcp},
      {"ip,nw_src=10.1.2.3/16,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         v.nw_src[0] = ipv4("10.1.0.0");
         m.nw_src[0] = ipv4("255.255.0.0");
       }},
      {"ip,nw_dst=10.1.2.3/255.0.255.0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         v.nw_dst[0] = ipv4("10.0.2.0");
         m.nw_dst[0] = ipv4("255.0.255.0");
       }},
      {"ip,nw_src=1.2.3.4/32,nw_dst=0.0.0.0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         v.nw_src[0] = ipv4("1.2.3.4");
         m.nw_src[0] = 0xffffffff;
         m.nw_dst[0] = 0xffffffff;
       }},
      {"ip,nw_src=1.2.3.4/0,actions=drop", set_ip},
      {"arp,nw_src=192.168.0.1,nw_proto=2,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.dl_type = htons(0x0806);
         m.dl_type = 0xffff;
         v.nw_src[0] = ipv4("192.168.0.1");
         m.nw_src[0] = 0xffffffff;
         set_proto(v, m, 2);
       }},
      {"ipv6,ipv6_src=2001:db8::1,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         ipv6("2001:db8::1", v.nw_src);
         std::memset(m.nw_src, 0xff, 16);
       }},
      {"ipv6,ipv6_dst=2001:db8:ffff::/36,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         ipv6("2001:db8:f000::", v.nw_dst);
         ipv6("ffff:ffff:f000::", m.nw_dst);
       }},
      {"ipv6,ipv6_src=2001:db8::1:0/ffff::ffff:0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         ipv6("2001::1:0", v.nw_src);
         ipv6("ffff::ffff:0", m.nw_src);
       }},
      {"ip,nw_proto=47,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         set_proto(v, m, 47);
       }},
      {"ip,nw_tos=184,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         v.nw_tos = 184;
         m.nw_tos = 0xfc;
       }},
      {"tcp,tp_src=80,tp_dst=0x1234/0xf000,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tp_src = htons(80);
         m.tp_src = 0xffff;
         v.tp_dst = htons(0x1000);
         m.tp_dst = htons(0xf000);
       }},
      {"udp6,tp_dst=53,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 17);
         v.tp_dst = htons(53);
         m.tp_dst = 0xffff;
       }},
      {"icmp,icmp_type=8,icmp_code=0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         set_proto(v, m, 1);
         v.tp_src = htons(8);
         m.tp_src = 0xffff;
         m.tp_dst = 0xffff;
       }},
      {"icmp6,icmp_type=135,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 58);
         v.tp_src = htons(135);
         m.tp_src = 0xffff;
       }},
      {"tcp,tcp_flags=+syn-ack,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tcp_flags = htons(0x002);
         m.tcp_flags = htons(0x012);
       }},
      {"tcp,tcp_flags=-rst+ns,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tcp_flags = htons(0x100);
         m.tcp_flags = htons(0x104);
       }},
      {"tcp,tcp_flags=0x012/0x0ff,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tcp_flags = htons(0x012);
         m.tcp_flags = htons(0x0ff);
       }},
      {"tcp6,tcp_flags=0x002,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ipv6(v, m);
         set_proto(v, m, 6);
         v.tcp_flags = htons(0x002);
         m.tcp_flags = htons(0xfff);
       }},
      {"sf_stage=2,sf_action=noop,sf_metadata=1,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         v.sf_stage = 2;
         m.sf_stage = 0xff;
         v.sf_action = service_id("noop");
         m.sf_action = 0xff;
         v.sf_metadata = 1;
         m.sf_metadata = 0xffffffff;
       }},
      {"sf_action=none,sf_metadata=0x1234/0xf0,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         m.sf_action = 0xff;
         v.sf_metadata = 0x30;
         m.sf_metadata = 0xf0;
       }},
      // Prerequisites may come after the fields that need them.
      {"nw_dst=1.2.3.4,ip,actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_ip(v, m);
         v.nw_dst[0] = ipv4("1.2.3.4");
         m.nw_dst[0] = 0xffffffff;
       }},
      {"tp_dst=22 tcp actions=drop",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tp_dst = htons(22);
         m.tp_dst = 0xffff;
       }},
      // Any mix of commas and whitespace separates; leading zeros stay decimal.
      {" \t,tcp ,, tp_src=010\t, actions=drop ",
       [](FlowKey& v, FlowKey& m) {
         set_tcp(v, m);
         v.tp_src = htons(10);
         m.tp_src = 0xffff;
       }},
      // dump-flows output goes straight back in.
      {"cookie=0x0, duration=12.345s, table=0, n_packets=10, n_bytes=600, idle_age=5, hard_age=70, "
       "priority=100,tcp actions=output:2",
       set_tcp},
  };
  return cases;
}

TEST(FlowSyntax, ValidMatchesSetTheRightKeyBits) {
  const FlowParseOptions opts = options_with_ports();
  for (const MatchCase& c : match_cases()) {
    SCOPED_TRACE(c.line);
    auto rule = parse_flow(c.line, opts);
    ASSERT_TRUE(rule) << rule.error();
    Match want;
    c.expect(want.value, want.mask);
    EXPECT_TRUE(rule->match == want) << match_diff(rule->match, want);
  }
}

TEST(FlowSyntax, DesignExample) {
  auto rule = parse_flow(
      "table=0,priority=100,sf_stage=0,tcp,nw_dst=10.0.0.3,tp_src=80,actions=softflow:noop:1");
  ASSERT_TRUE(rule) << rule.error();
  EXPECT_EQ(rule->table, 0);
  EXPECT_EQ(rule->priority, 100);
  EXPECT_EQ(rule->match.value.sf_stage, 0);
  EXPECT_EQ(rule->match.mask.sf_stage, 0xff);
  EXPECT_EQ(rule->match.value.dl_type, htons(0x0800));
  EXPECT_EQ(rule->match.value.nw_proto, 6);
  EXPECT_EQ(rule->match.value.nw_dst[0], ipv4("10.0.0.3"));
  EXPECT_EQ(rule->match.mask.nw_dst[0], 0xffffffffu);
  EXPECT_EQ(rule->match.value.tp_src, htons(80));
  EXPECT_EQ(rule->match.mask.tp_src, 0xffff);
  ASSERT_EQ(rule->actions.size(), 1u);
  EXPECT_EQ(rule->actions[0], Action::softflow(service_id("noop"), 1));
  EXPECT_EQ(
      print_flow(*rule),
      "table=0, priority=100,sf_stage=0,tcp,nw_dst=10.0.0.3,tp_src=80 actions=softflow:noop:1");
}

TEST(FlowSyntax, TableAndPriorityDefaults) {
  auto rule = parse_flow("actions=drop");
  ASSERT_TRUE(rule) << rule.error();
  EXPECT_EQ(rule->table, 0);
  EXPECT_EQ(rule->priority, kDefaultPriority);
  EXPECT_TRUE(rule->actions.empty());

  rule = parse_flow("table=254 priority=0 actions=drop");
  ASSERT_TRUE(rule) << rule.error();
  EXPECT_EQ(rule->table, 254);
  EXPECT_EQ(rule->priority, 0);
  EXPECT_EQ(print_flow(*rule), "table=254, priority=0 actions=drop");

  rule = parse_flow("priority=65535,table=0x10,actions=drop");
  ASSERT_TRUE(rule) << rule.error();
  EXPECT_EQ(rule->table, 16);
  EXPECT_EQ(rule->priority, 65535);
}

Action mod(Field f, uint64_t v) {
  Action a = Action::set_field(f, v);
  a.mod_syntax = true;
  return a;
}

TEST(FlowSyntax, Actions) {
  const FlowParseOptions opts = options_with_ports();
  struct ActionCase {
    std::string line;
    ActionList want;
  };
  Action tos = Action::set_field(Field::kNwTos, 184);
  tos.mask[0] = 0xfc;
  Action masked_metadata = Action::set_field(Field::kSfMetadata, 0x5);
  const uint32_t metadata_mask = 0xff;  // sf_metadata is a host-order field
  std::memcpy(masked_metadata.mask.data(), &metadata_mask, 4);
  Action prefix = Action::set_field(Field::kNwSrc, 0x0a000000);
  prefix.mask = {0xff, 0, 0, 0};
  Action v6 = Action::set_field(Field::kIpv6Src, 0);
  ipv6("2001:db8::1", reinterpret_cast<__be32*>(v6.value.data()));

  const std::vector<ActionCase> cases = {
      {"actions=output:1,in_port,dec_ttl,2,output:eth2",
       {Action::output(1), Action::output_in_port(), Action::dec_ttl(), Action::output(2),
        Action::output(2)}},
      {"actions=goto_table:1", {Action::goto_table(1)}},
      {"table=5,actions=output:1 goto_table:254", {Action::output(1), Action::goto_table(254)}},
      {"actions=output:1,softflow:counter:0xffffffff",
       {Action::output(1), Action::softflow(service_id("counter"), 0xffffffff)}},
      {"actions=mod_dl_src:00:11:22:33:44:55,mod_dl_dst:aa:bb:cc:dd:ee:ff,mod_nw_src:1.2.3.4,"
       "mod_nw_dst:10.0.0.1,mod_tp_src:1,mod_tp_dst:0xffff",
       {mod(Field::kDlSrc, 0x001122334455), mod(Field::kDlDst, 0xaabbccddeeff),
        mod(Field::kNwSrc, 0x01020304), mod(Field::kNwDst, 0x0a000001), mod(Field::kTpSrc, 1),
        mod(Field::kTpDst, 0xffff)}},
      {"actions=set_field:10.0.0.1->nw_dst,set_field:0x5/0xff->sf_metadata,set_field:184->nw_tos,"
       "set_field:10.9.9.9/8->nw_src,set_field:2001:db8::1->ipv6_src,set_field:80->tp_dst,"
       "set_field:aa:bb:cc:dd:ee:ff->dl_src",
       {Action::set_field(Field::kNwDst, 0x0a000001), masked_metadata, tos, prefix, v6,
        Action::set_field(Field::kTpDst, 80), Action::set_field(Field::kDlSrc, 0xaabbccddeeff)}},
  };
  for (const ActionCase& c : cases) {
    SCOPED_TRACE(c.line);
    auto rule = parse_flow(c.line, opts);
    ASSERT_TRUE(rule) << rule.error();
    ASSERT_EQ(rule->actions.size(), c.want.size());
    for (size_t i = 0; i < c.want.size(); ++i)
      EXPECT_TRUE(rule->actions[i] == c.want[i])
          << "action " << i << ": " << print_actions({rule->actions[i]});
  }
}

// ---- invalid lines -------------------------------------------------------------

struct ErrorCase {
  std::string line;
  std::string message;  // expected exactly, or as a prefix when it ends in "..."
};

const std::vector<ErrorCase>& error_cases() {
  static const std::vector<ErrorCase> cases = {
      {"table=0,priority=100,nw_dts=10.0.0.3,actions=drop", "unknown field 'nw_dts' at column 22"},
      {"ip,nw_dst=10.0.0.300,actions=drop",
       "invalid IPv4 address '10.0.0.300' for nw_dst at column 11"},
      {"ip,nw_src=010.0.0.1,actions=drop",
       "invalid IPv4 address '010.0.0.1' for nw_src at column 11"},
      {"ip,nw_src=10.0.0.0/33,actions=drop",
       "invalid prefix length '33' for nw_src at column 20 (expected 0-32)"},
      {"ip,nw_src=10.0.0.0/255.0.0.256,actions=drop",
       "invalid IPv4 mask '255.0.0.256' for nw_src at column 20"},
      {"ipv6,ipv6_src=2001:db8::g,actions=drop",
       "invalid IPv6 address '2001:db8::g' for ipv6_src at column 15"},
      {"ipv6,ipv6_dst=::1/129,actions=drop",
       "invalid prefix length '129' for ipv6_dst at column 19 (expected 0-128)"},
      {"tp_dst=80,actions=drop", "tp_dst requires tcp or udp (at column 1)"},
      {"ip,tp_dst=80,actions=drop", "tp_dst requires tcp or udp (at column 4)"},
      {"icmp,tp_src=80,actions=drop", "tp_src requires tcp or udp (at column 6)"},
      {"nw_src=1.2.3.4,actions=drop", "nw_src requires ip or arp (at column 1)"},
      {"ipv6,nw_dst=1.2.3.4,actions=drop", "nw_dst requires ip or arp (at column 6)"},
      {"ip,ipv6_src=::1,actions=drop", "ipv6_src requires ipv6 (at column 4)"},
      {"nw_proto=6,actions=drop", "nw_proto requires ip, ipv6 or arp (at column 1)"},
      {"arp,nw_tos=4,actions=drop", "nw_tos requires ip or ipv6 (at column 5)"},
      {"tcp,icmp_type=8,actions=drop", "icmp_type requires icmp or icmp6 (at column 5)"},
      {"icmp,icmp_code=1,icmp6,actions=drop",
       "'icmp6' at column 18 conflicts with 'icmp' at column 1"},
      {"udp,tcp_flags=+syn,actions=drop", "tcp_flags requires tcp (at column 5)"},
      {"tcp,tp_dst=80,tp_dst=81,actions=drop",
       "tp_dst given twice at column 15 (first at column 5)"},
      {"tcp,tp_dst=80,tp_dst=80,actions=drop",
       "tp_dst given twice at column 15 (first at column 5)"},
      {"tcp,udp,actions=drop", "'udp' at column 5 conflicts with 'tcp' at column 1"},
      {"tcp,nw_proto=17,actions=drop", "'nw_proto' at column 5 conflicts with 'tcp' at column 1"},
      {"ip,dl_type=0x86dd,actions=drop", "'dl_type' at column 4 conflicts with 'ip' at column 1"},
      {"vlan_tci=0x1000,dl_vlan=5,actions=drop",
       "'dl_vlan' at column 17 conflicts with 'vlan_tci' at column 1"},
      {"ip,nw_src=1.1.1.1,nw_src=1.1.1.1,actions=drop",
       "nw_src given twice at column 19 (first at column 4)"},
      {"table=1,table=2,actions=drop", "table given twice at column 9 (first at column 1)"},
      {"priority=1 priority=1 actions=drop",
       "priority given twice at column 12 (first at column 1)"},
      {"table=255,actions=drop", "invalid value '255' for table at column 7 (expected 0-254)"},
      {"priority=65536,actions=drop",
       "invalid value '65536' for priority at column 10 (expected 0-65535)"},
      {"priority=-1,actions=drop",
       "invalid value '-1' for priority at column 10 (expected 0-65535)"},
      {"sf_stage=256,actions=drop",
       "invalid value '256' for sf_stage at column 10 (expected 0-255)"},
      {"sf_metadata=0x100000000,actions=drop",
       "invalid value '0x100000000' for sf_metadata at column 13 (expected 0-4294967295)"},
      {"tcp,tp_src=65536,actions=drop",
       "invalid value '65536' for tp_src at column 12 (expected 0-65535)"},
      {"tcp,tp_src=1/0x10000,actions=drop",
       "invalid value '0x10000' for tp_src at column 14 (expected 0-65535)"},
      {"icmp,icmp_type=256,actions=drop",
       "invalid value '256' for icmp_type at column 16 (expected 0-255)"},
      {"dl_type=0x10000,actions=drop",
       "invalid value '0x10000' for dl_type at column 9 (expected 0-65535)"},
      {"dl_src=00:11:22:33:44,actions=drop",
       "invalid MAC address '00:11:22:33:44' for dl_src at column 8"},
      {"dl_src=00:11:22:33:44:555,actions=drop",
       "invalid MAC address '00:11:22:33:44:555' for dl_src at column 8"},
      {"dl_dst=00:11:22:33:44:55/ff,actions=drop", "invalid MAC mask 'ff' for dl_dst at column 26"},
      {"dl_vlan=4096,actions=drop",
       "invalid VLAN '4096' for dl_vlan at column 9 (expected 0-4095, or 0xffff for untagged "
       "frames)"},
      {"dl_vlan=5/0xfff,actions=drop", "invalid VLAN '5/0xfff' for dl_vlan at column 9..."},
      {"ip,nw_tos=3,actions=drop", "invalid value '3' for nw_tos at column 11..."},
      {"ip,nw_tos=4/0xfc,actions=drop", "mask not allowed for nw_tos at column 12"},
      {"ip,nw_proto=6/0xff,actions=drop", "mask not allowed for nw_proto at column 14"},
      {"in_port=1/1,actions=drop", "unknown port '1/1' for in_port at column 9"},
      {"in_port=eth9,actions=drop", "unknown port 'eth9' for in_port at column 9"},
      {"tcp,tcp_flags=+syn+foo,actions=drop",
       "invalid TCP flag 'foo' for tcp_flags at column 20 (expected fin, syn, rst, psh, ack, urg, "
       "ece, cwr or ns)"},
      {"tcp,tcp_flags=+syn-syn,actions=drop", "TCP flag 'syn' given twice at column 20"},
      {"tcp,tcp_flags=+,actions=drop", "invalid TCP flag '' for tcp_flags at column 16..."},
      {"tcp,tcp_flags=syn,actions=drop", "invalid value 'syn' for tcp_flags at column 15..."},
      {"tcp,tcp_flags=0x1000,actions=drop", "invalid value '0x1000' for tcp_flags at column 15..."},
      {"tcp,tcp_flags=+syn/0x2,actions=drop",
       "mask not allowed with +flag syntax for tcp_flags at column 19"},
      {"sf_action=nosuch,actions=drop", "unknown service 'nosuch' for sf_action at column 11"},
      {"sf_action=1,actions=drop", "unknown service '1' for sf_action at column 11"},
      {"tcp=1,actions=drop", "'tcp' takes no value at column 1"},
      {"ip nw_dst actions=drop", "missing value for nw_dst (write nw_dst=VALUE) at column 4"},
      {"ip nw_dst= actions=drop", "missing value for nw_dst (write nw_dst=VALUE) at column 4"},
      {"=5,actions=drop", "missing field name in '=5' at column 1"},
      {"duration=abc,actions=drop",
       "invalid value 'abc' for duration at column 10 (expected seconds such as 1.234s)"},
      {"duration=1.s,actions=drop", "invalid value '1.s' for duration at column 10..."},
      {"n_packets=x,actions=drop",
       "invalid value 'x' for n_packets at column 11 (expected a number)"},
      {"cookie=0x1/zz,actions=drop",
       "invalid value 'zz' for cookie at column 12 (expected a number)"},
      {"tcp", "missing actions= (every rule needs actions, e.g. actions=drop)"},
      {"", "missing actions=..."},
      {"tcp,actions=", "empty actions= (write actions=drop to drop) at column 5"},
      {"tcp,actions= , ", "empty actions= (write actions=drop to drop) at column 5"},
      {"actions=output:1,drop", "drop must be the only action at column 18"},
      {"actions=drop,output:1",
       "drop must be the only action, but 'output:1' follows it at column 14"},
      {"actions=drop,drop", "drop must be the only action, but 'drop' follows it at column 14"},
      {"actions=softflow:noop:1,output:2",
       "softflow action must be the last action: 'output:2' at column 25 follows "
       "'softflow:noop:1'"},
      {"actions=softflow:noop:1,softflow:noop:2",
       "softflow action must be the last action: 'softflow:noop:2' at column 25 follows "
       "'softflow:noop:1'"},
      {"actions=goto_table:1,output:2",
       "goto_table action must be the last action: 'output:2' at column 22 follows 'goto_table:1'"},
      {"table=3,actions=goto_table:3",
       "goto_table:3 must name a table after table 3 (OpenFlow only jumps forward) at column 17"},
      {"actions=goto_table:255",
       "invalid value '255' for goto_table at column 20 (expected 0-254)"},
      {"actions=softflow:nosuch:1", "unknown service 'nosuch' for softflow at column 18"},
      {"actions=softflow:noop", "softflow action needs NAME:ARG, not 'softflow:noop' at column 9"},
      {"actions=softflow:noop:",
       "softflow action needs NAME:ARG, not 'softflow:noop:' at column 9"},
      {"actions=softflow:noop:4294967296",
       "invalid value '4294967296' for softflow argument at column 23 (expected 0-4294967295)"},
      {"actions=output:eth9", "unknown port 'eth9' for output at column 16"},
      {"actions=output:4294967296",
       "invalid port '4294967296' for output at column 16 (expected 0-4294967295)"},
      {"actions=4294967296",
       "invalid port '4294967296' for output at column 9 (expected 0-4294967295)"},
      {"actions=output", "missing argument for output (write output:ARGUMENT) at column 9"},
      {"actions=output:", "missing argument for output (write output:ARGUMENT) at column 9"},
      {"actions=outptu:2", "unknown action 'outptu:2' at column 9"},
      {"actions=set_field:1->in_port", "set_field cannot set 'in_port' at column 22"},
      {"actions=set_field:1->nw_dts", "set_field cannot set 'nw_dts' at column 22"},
      {"actions=set_field:1", "set_field needs VALUE->FIELD, not 'set_field:1' at column 9"},
      {"actions=set_field:1.2.3->nw_dst",
       "invalid IPv4 address '1.2.3' for set_field at column 19"},
      {"actions=set_field:3->nw_tos", "invalid value '3' for set_field at column 19..."},
      {"actions=set_field:4/0xff->nw_tos",
       "invalid mask '0xff' for set_field at column 21 (expected a mask within 0xfc)"},
      {"actions=mod_nw_src:1.2.3.4/8", "mask not allowed for mod_nw_src at column 27"},
      {"actions=mod_tp_dst:65536",
       "invalid value '65536' for mod_tp_dst at column 20 (expected 0-65535)"},
      {"actions=mod_dl_dst:zz", "invalid MAC address 'zz' for mod_dl_dst at column 20"},
      {"ip,nw_dst=1.2.3.4 # comment,actions=drop", "unknown field '#' at column 19"},
  };
  return cases;
}

TEST(FlowSyntax, InvalidLinesNameTokenAndColumn) {
  const FlowParseOptions opts = options_with_ports();
  for (const ErrorCase& c : error_cases()) {
    SCOPED_TRACE(c.line);
    auto rule = parse_flow(c.line, opts);
    ASSERT_FALSE(rule) << "parsed as: " << print_flow(*rule);
    EXPECT_EQ(rule.status().code(), EINVAL);
    const std::string& msg = rule.error();
    if (c.message.ends_with("...")) {
      const std::string prefix = c.message.substr(0, c.message.size() - 3);
      EXPECT_TRUE(msg.starts_with(prefix)) << "got:  " << msg << "\nwant: " << c.message;
    } else {
      EXPECT_EQ(msg, c.message);
    }
  }
}

TEST(FlowSyntax, ColumnsPointIntoTheLine) {
  // The quoted token sits exactly at the reported column.
  const std::string line = "table=1 priority=5 tcp tp_dst=80 nw_dst=10.0.0.300 actions=drop";
  auto rule = parse_flow(line);
  ASSERT_FALSE(rule);
  const std::string& msg = rule.error();
  const size_t at = msg.find(" at column ");
  ASSERT_NE(at, std::string::npos) << msg;
  const size_t column = std::stoul(msg.substr(at + 11));
  EXPECT_EQ(line.substr(column - 1, 10), "10.0.0.300") << msg;
}

// ---- match_only and parse_flow_line -----------------------------------------------

TEST(FlowSyntax, MatchOnlyAllowsMissingActions) {
  FlowParseOptions opts;
  opts.match_only = true;
  auto line = parse_flow_line("tcp,tp_dst=80", opts);
  ASSERT_TRUE(line) << line.error();
  EXPECT_FALSE(line->has_table);
  EXPECT_FALSE(line->has_priority);
  EXPECT_FALSE(line->has_actions);
  EXPECT_EQ(print_match(line->rule.match), "tcp,tp_dst=80");

  line = parse_flow_line("table=0", opts);
  ASSERT_TRUE(line) << line.error();
  EXPECT_TRUE(line->has_table);
  EXPECT_TRUE(key_is_zero(line->rule.match.mask));

  line = parse_flow_line("", opts);
  ASSERT_TRUE(line) << line.error();
  EXPECT_TRUE(key_is_zero(line->rule.match.mask));

  // Actions may still be given, and are still checked.
  line = parse_flow_line("priority=3,actions=output:1", opts);
  ASSERT_TRUE(line) << line.error();
  EXPECT_TRUE(line->has_priority);
  EXPECT_TRUE(line->has_actions);
  EXPECT_FALSE(parse_flow_line("actions=bogus", opts));

  EXPECT_FALSE(parse_flow("tcp,tp_dst=80"));
}

// ---- printing -------------------------------------------------------------------

TEST(FlowSyntax, PrintsCanonicalForms) {
  const FlowParseOptions opts = options_with_ports();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"actions=drop", "table=0, priority=32768 actions=drop"},
      {"priority=0,actions=drop", "table=0, priority=0 actions=drop"},
      {"tp_dst=80,nw_src=10.1.2.3/16,in_port=eth1,dl_src=AA:BB:CC:00:00:01,tcp,sf_stage=1,table=2,"
       "actions=output:uplink",
       "table=2, "
       "priority=32768,sf_stage=1,tcp,in_port=1,dl_src=aa:bb:cc:00:00:01,nw_src=10.1.0.0/16,"
       "tp_dst=80 actions=output:100"},
      {"dl_type=0x0800,nw_proto=17,actions=drop", "table=0, priority=32768,udp actions=drop"},
      {"dl_type=0x86dd,nw_proto=58,actions=drop", "table=0, priority=32768,icmp6 actions=drop"},
      {"ipv6,nw_proto=1,actions=drop", "table=0, priority=32768,ipv6,nw_proto=1 actions=drop"},
      {"arp,nw_proto=1,actions=drop", "table=0, priority=32768,arp,nw_proto=1 actions=drop"},
      {"dl_type=0x88cc,actions=drop", "table=0, priority=32768,dl_type=0x88cc actions=drop"},
      {"ip,nw_dst=10.1.2.3/255.0.255.0,nw_src=1.2.3.4/32,actions=drop",
       "table=0, priority=32768,ip,nw_src=1.2.3.4,nw_dst=10.0.2.0/255.0.255.0 actions=drop"},
      {"ip,nw_src=1.2.3.4/0,actions=drop", "table=0, priority=32768,ip actions=drop"},
      {"ipv6,ipv6_src=2001:DB8:0:0::1/64,ipv6_dst=::1,actions=drop",
       "table=0, priority=32768,ipv6,ipv6_src=2001:db8::/64,ipv6_dst=::1 actions=drop"},
      {"ipv6,ipv6_src=2001:db8::1:0/ffff::ffff:0,actions=drop",
       "table=0, priority=32768,ipv6,ipv6_src=2001::1:0/ffff::ffff:0 actions=drop"},
      {"dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop",
       "table=0, priority=32768,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop"},
      {"dl_vlan=100,actions=drop", "table=0, priority=32768,dl_vlan=100 actions=drop"},
      {"dl_vlan=0xffff,actions=drop", "table=0, priority=32768,dl_vlan=0xffff actions=drop"},
      {"vlan_tci=0x1064/0x1fff,actions=drop", "table=0, priority=32768,dl_vlan=100 actions=drop"},
      {"vlan_tci=0x3064/0xf000,actions=drop",
       "table=0, priority=32768,vlan_tci=0x3000/0xf000 actions=drop"},
      {"ip,nw_tos=0xb8,actions=drop", "table=0, priority=32768,ip,nw_tos=184 actions=drop"},
      {"tcp,tp_src=0x50,tp_dst=0x1234/0xff00,actions=drop",
       "table=0, priority=32768,tcp,tp_src=80,tp_dst=0x1200/0xff00 actions=drop"},
      {"icmp,icmp_code=3,icmp_type=3,actions=drop",
       "table=0, priority=32768,icmp,icmp_type=3,icmp_code=3 actions=drop"},
      {"tcp,tcp_flags=-ack+syn,actions=drop",
       "table=0, priority=32768,tcp,tcp_flags=+syn-ack actions=drop"},
      {"tcp,tcp_flags=0x012/0x0ff,actions=drop",
       "table=0, priority=32768,tcp,tcp_flags=+syn+ack-fin-rst-psh-urg-ece-cwr actions=drop"},
      {"tcp,tcp_flags=0x002,actions=drop",
       "table=0, priority=32768,tcp,tcp_flags=0x2/0xfff actions=drop"},
      {"sf_metadata=0x10/0xf0,sf_action=counter,actions=drop",
       "table=0, priority=32768,sf_action=counter,sf_metadata=0x10/0xf0 actions=drop"},
      {"sf_action=none,sf_metadata=0x10,actions=drop",
       "table=0, priority=32768,sf_action=none,sf_metadata=16 actions=drop"},
      {"actions=2 , in_port dec_ttl,goto_table:0x3",
       "table=0, priority=32768 actions=output:2,in_port,dec_ttl,goto_table:3"},
      {"actions=mod_dl_src:0:1:2:3:4:5,mod_nw_dst:1.2.3.4,mod_tp_src:0x10,softflow:noop:0x10",
       "table=0, priority=32768 "
       "actions=mod_dl_src:00:01:02:03:04:05,mod_nw_dst:1.2.3.4,mod_tp_src:16,"
       "softflow:noop:16"},
      {"actions=set_field:10.0.0.1/8->nw_dst,set_field:0x1/0x1->sf_metadata,set_field:0x80->tp_src,"
       "set_field:8/0x0c->nw_tos,set_field:aa:bb:cc:dd:ee:ff/"
       "ff:ff:ff:00:00:00->dl_dst,set_field:::1->ipv6_dst",
       "table=0, priority=32768 "
       "actions=set_field:10.0.0.0/8->nw_dst,set_field:0x1/0x1->sf_metadata,"
       "set_field:128->tp_src,set_field:0x8/0xc->nw_tos,set_field:aa:bb:cc:00:00:00/"
       "ff:ff:ff:00:00:00->dl_dst,"
       "set_field:::1->ipv6_dst"},
  };
  for (const auto& [line, want] : cases) {
    SCOPED_TRACE(line);
    auto rule = parse_flow(line, opts);
    ASSERT_TRUE(rule) << rule.error();
    EXPECT_EQ(print_flow(*rule), want);
  }
}

TEST(FlowSyntax, PrintsMasksTheParserCannotProduce) {
  // Megaflow masks can cut any field anywhere; they still print readably.
  Match m;
  m.set_uint(Field::kInPort, 0x300, 0xff00);
  m.set_uint(Field::kDlType, 0x0800, 0xff00);
  m.set_uint(Field::kNwFrag, 1, 3);
  EXPECT_EQ(print_match(m), "dl_type=0x800/0xff00,in_port=0x300/0xff00,nw_frag=0x1/0x3");

  // Without dl_type, a mask reaching past the first 4 bytes means IPv6.
  Match v6;
  const std::array<uint8_t, 16> v6_value{0x20, 0x01};
  const std::array<uint8_t, 16> v6_mask{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  v6.set(Field::kIpv6Src, v6_value.data(), v6_mask.data());
  EXPECT_EQ(print_match(v6), "ipv6_src=2001::/64");
  Match v4;
  v4.set(Field::kNwSrc, v6_value.data(), v6_mask.data());
  EXPECT_EQ(print_match(v4), "nw_src=32.1.0.0");

  EXPECT_EQ(print_actions({}), "drop");
  Action unnamed = Action::softflow(200, 5);
  EXPECT_EQ(print_actions({unnamed}), "softflow:200:5");
}

TEST(FlowSyntax, RoundTripsEveryValidLine) {
  const FlowParseOptions opts = options_with_ports();
  std::vector<std::string> lines;
  for (const MatchCase& c : match_cases()) lines.push_back(c.line);
  lines.push_back("actions=output:1,in_port,dec_ttl,2,output:eth2");
  lines.push_back("table=5,actions=output:1 goto_table:254");
  lines.push_back(
      "actions=set_field:10.0.0.1/8->nw_dst,set_field:0x1/0x1->sf_metadata,set_field:8/"
      "0x0c->nw_tos");
  lines.push_back(
      "actions=mod_dl_src:0:1:2:3:4:5,mod_nw_dst:1.2.3.4,mod_tp_src:0x10,softflow:noop:0x10");
  for (const std::string& line : lines) {
    SCOPED_TRACE(line);
    auto rule = parse_flow(line, opts);
    ASSERT_TRUE(rule) << rule.error();
    const std::string text = print_flow(*rule);
    auto again = parse_flow(text);
    ASSERT_TRUE(again) << text << ": " << again.error();
    EXPECT_TRUE(*again == *rule) << text << match_diff(again->match, rule->match);
    EXPECT_EQ(print_flow(*again), text);
  }
}

// ---- random round trip -----------------------------------------------------------

// Writes random valid rules in varied spellings (field order, separators,
// decimal/hex, shorthand or explicit dl_type/nw_proto, masks of every form).
class RandomRuleWriter {
 public:
  explicit RandomRuleWriter(uint64_t seed) : rng_(seed) {}

  std::string next() {
    std::vector<std::string> fields;
    int table = -1;
    if (chance(70)) {
      table = static_cast<int>(below(255));
      fields.push_back("table=" + number(static_cast<uint64_t>(table)));
    }
    if (chance(60)) fields.push_back("priority=" + number(below(65536)));
    add_protocol_and_l3_l4(fields);
    if (chance(30)) fields.push_back("in_port=" + number(below(1ULL << 32)));
    if (chance(25)) fields.push_back("dl_src=" + masked_mac());
    if (chance(25)) fields.push_back("dl_dst=" + masked_mac());
    if (chance(20)) {
      switch (below(3)) {
        case 0:
          fields.push_back("dl_vlan=" + number(below(4096)));
          break;
        case 1:
          fields.push_back("dl_vlan=0xffff");
          break;
        default:
          fields.push_back("vlan_tci=" + number(below(65536)) + "/" + number(below(65536)));
          break;
      }
    }
    if (chance(40)) fields.push_back("sf_stage=" + number(below(256)));
    if (chance(30)) {
      static const char* const kNames[] = {"none", "noop", "counter"};
      fields.push_back(std::string("sf_action=") + kNames[below(3)]);
    }
    if (chance(30)) fields.push_back("sf_metadata=" + masked_number(1ULL << 32));
    std::shuffle(fields.begin(), fields.end(), rng_);

    std::string line;
    for (const std::string& f : fields) line += f + separator();
    return line + "actions=" + actions(table < 0 ? 0 : table);
  }

 private:
  uint64_t below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return below(100) < static_cast<uint64_t>(percent); }

  std::string number(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, chance(50) ? "%llu" : "0x%llx",
                  static_cast<unsigned long long>(v));
    return buf;
  }
  std::string masked_number(uint64_t limit) {
    std::string s = number(below(limit));
    if (chance(40)) s += "/" + number(below(limit));
    return s;
  }
  std::string separator() {
    static const char* const kSeparators[] = {",", " ", ", ", "\t", " ,, "};
    return kSeparators[below(5)];
  }
  std::string mac() {
    char buf[32];
    std::snprintf(buf, sizeof buf,
                  chance(50) ? "%02x:%02x:%02x:%02x:%02x:%02x" : "%X:%X:%X:%X:%X:%X",
                  unsigned(below(256)), unsigned(below(256)), unsigned(below(256)),
                  unsigned(below(256)), unsigned(below(256)), unsigned(below(256)));
    return buf;
  }
  std::string masked_mac() { return chance(30) ? mac() + "/" + mac() : mac(); }
  std::string ipv4() {
    return std::to_string(below(256)) + "." + std::to_string(below(256)) + "." +
           std::to_string(below(256)) + "." + std::to_string(below(256));
  }
  std::string masked_ipv4() {
    switch (below(3)) {
      case 0:
        return ipv4();
      case 1:
        return ipv4() + "/" + std::to_string(below(33));
      default:
        return ipv4() + "/" + ipv4();
    }
  }
  std::string ipv6() {
    uint8_t bytes[16];
    for (uint8_t& b : bytes) b = chance(40) ? 0 : static_cast<uint8_t>(below(256));
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, bytes, buf, sizeof buf);
    return buf;
  }
  std::string masked_ipv6() {
    switch (below(3)) {
      case 0:
        return ipv6();
      case 1:
        return ipv6() + "/" + std::to_string(below(129));
      default:
        return ipv6() + "/" + ipv6();
    }
  }
  std::string tcp_flags() {
    if (chance(50)) return number(below(0x1000)) + (chance(50) ? "/" + number(below(0x1000)) : "");
    static const char* const kFlags[] = {"fin", "syn", "rst", "psh", "ack",
                                         "urg", "ece", "cwr", "ns"};
    std::vector<int> order = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    std::shuffle(order.begin(), order.end(), rng_);
    std::string s;
    const size_t n = 1 + below(9);
    for (size_t i = 0; i < n; ++i) s += std::string(chance(50) ? "+" : "-") + kFlags[order[i]];
    return s;
  }

  void add_protocol_and_l3_l4(std::vector<std::string>& fields) {
    struct Protocol {
      const char* shorthand;  // nullptr: only dl_type= can say it
      uint16_t dl_type;
      int nw_proto;
    };
    static const Protocol kProtocols[] = {
        {nullptr, 0, -1},     {"ip", 0x0800, -1},    {"ipv6", 0x86dd, -1},  {"arp", 0x0806, -1},
        {"tcp", 0x0800, 6},   {"udp", 0x0800, 17},   {"icmp", 0x0800, 1},   {"tcp6", 0x86dd, 6},
        {"udp6", 0x86dd, 17}, {"icmp6", 0x86dd, 58}, {nullptr, 0x88cc, -1},
    };
    const Protocol& p = kProtocols[below(std::size(kProtocols))];
    if (p.dl_type == 0) return;
    int proto = p.nw_proto;
    if (p.shorthand && chance(70)) {
      fields.push_back(p.shorthand);
    } else {
      fields.push_back("dl_type=" + number(p.dl_type));
      if (proto >= 0) fields.push_back("nw_proto=" + number(static_cast<uint64_t>(proto)));
    }
    const bool ip = p.dl_type == 0x0800, ip6 = p.dl_type == 0x86dd, arp = p.dl_type == 0x0806;
    if (proto < 0 && (ip || ip6 || arp) && chance(30)) {
      proto = static_cast<int>(below(256));
      fields.push_back("nw_proto=" + number(static_cast<uint64_t>(proto)));
    }
    if (ip || arp) {
      if (chance(40)) fields.push_back("nw_src=" + masked_ipv4());
      if (chance(40)) fields.push_back("nw_dst=" + masked_ipv4());
    }
    if (ip6) {
      if (chance(40)) fields.push_back("ipv6_src=" + masked_ipv6());
      if (chance(40)) fields.push_back("ipv6_dst=" + masked_ipv6());
    }
    if ((ip || ip6) && chance(20)) fields.push_back("nw_tos=" + number(below(64) * 4));
    if ((ip || ip6) && (proto == 6 || proto == 17)) {
      if (chance(50)) fields.push_back("tp_src=" + masked_number(65536));
      if (chance(50)) fields.push_back("tp_dst=" + masked_number(65536));
    }
    if ((ip && proto == 1) || (ip6 && proto == 58)) {
      if (chance(50)) fields.push_back("icmp_type=" + number(below(256)));
      if (chance(50)) fields.push_back("icmp_code=" + number(below(256)));
    }
    if ((ip || ip6) && proto == 6 && chance(30)) fields.push_back("tcp_flags=" + tcp_flags());
  }

  std::string actions(int table) {
    if (chance(10)) return "drop";
    std::vector<std::string> list;
    const size_t n = below(5);
    for (size_t i = 0; i < n; ++i) {
      switch (below(11)) {
        case 0:
          list.push_back("output:" + number(below(1ULL << 32)));
          break;
        case 1:
          list.push_back(std::to_string(below(1000)));
          break;
        case 2:
          list.push_back("in_port");
          break;
        case 3:
          list.push_back("dec_ttl");
          break;
        case 4:
          list.push_back(std::string(chance(50) ? "mod_dl_src:" : "mod_dl_dst:") + mac());
          break;
        case 5:
          list.push_back(std::string(chance(50) ? "mod_nw_src:" : "mod_nw_dst:") + ipv4());
          break;
        case 6:
          list.push_back(std::string(chance(50) ? "mod_tp_src:" : "mod_tp_dst:") +
                         number(below(65536)));
          break;
        case 7:
          list.push_back("set_field:" + masked_ipv4() + (chance(50) ? "->nw_src" : "->nw_dst"));
          break;
        case 8:
          list.push_back("set_field:" + masked_ipv6() + (chance(50) ? "->ipv6_src" : "->ipv6_dst"));
          break;
        case 9:
          list.push_back("set_field:" + masked_mac() + (chance(50) ? "->dl_src" : "->dl_dst"));
          break;
        default:
          switch (below(3)) {
            case 0:
              list.push_back("set_field:" + masked_number(65536) +
                             (chance(50) ? "->tp_src" : "->tp_dst"));
              break;
            case 1:
              list.push_back("set_field:" + masked_number(1ULL << 32) + "->sf_metadata");
              break;
            default:
              list.push_back("set_field:" + number(below(64) * 4) +
                             (chance(50) ? "/" + number(below(64) * 4) : "") + "->nw_tos");
              break;
          }
      }
    }
    if (chance(30))
      list.push_back(std::string("softflow:") + (chance(50) ? "noop:" : "counter:") +
                     number(below(1ULL << 32)));
    else if (table < 254 && chance(20))
      list.push_back("goto_table:" + number(static_cast<uint64_t>(table) + 1 + below(254 - table)));
    if (list.empty()) return "drop";
    std::string out;
    for (const std::string& a : list) out += (out.empty() ? "" : (chance(50) ? "," : ", ")) + a;
    return out;
  }

  std::mt19937_64 rng_;
};

uint64_t test_seed() {
  if (const char* env = std::getenv("SF_TEST_SEED")) return std::strtoull(env, nullptr, 0);
  return std::random_device{}();
}

TEST(FlowSyntax, RandomRulesRoundTrip) {
  const uint64_t seed = test_seed();
  std::cout << "[ SEED     ] FlowSyntax.RandomRulesRoundTrip seed=" << seed
            << " (replay with SF_TEST_SEED=" << seed << ")\n";
  RecordProperty("seed", std::to_string(seed));
  RandomRuleWriter writer(seed);
  for (int i = 0; i < 2000; ++i) {
    const std::string line = writer.next();
    auto rule = parse_flow(line);
    ASSERT_TRUE(rule) << "seed " << seed << ", rule " << i << ": " << line << "\n  "
                      << rule.error();
    const std::string text = print_flow(*rule);
    auto again = parse_flow(text);
    ASSERT_TRUE(again) << "seed " << seed << ": " << line << "\n  printed " << text << "\n  "
                       << again.error();
    ASSERT_TRUE(*again == *rule) << "seed " << seed << ": " << line << "\n  printed " << text
                                 << match_diff(again->match, rule->match);
    ASSERT_EQ(print_flow(*again), text) << "seed " << seed << ": " << line;
  }
}

// ---- parse_flows ------------------------------------------------------------------

TEST(FlowSyntax, ParseFlowsSkipsCommentsAndBlankLines) {
  const std::string text =
      "# a rule file\n"
      "\n"
      "table=0,priority=10,ip,actions=output:1   # trailing comment\r\n"
      "   \t\n"
      "   # indented comment\n"
      "tcp,tp_dst=80,actions=output:2\n"
      "actions=drop";  // no final newline
  auto rules = parse_flows(text);
  ASSERT_TRUE(rules) << rules.error();
  ASSERT_EQ(rules->size(), 3u);
  EXPECT_EQ(print_flow((*rules)[0]), "table=0, priority=10,ip actions=output:1");
  EXPECT_EQ(print_flow((*rules)[1]), "table=0, priority=32768,tcp,tp_dst=80 actions=output:2");
  EXPECT_EQ(print_flow((*rules)[2]), "table=0, priority=32768 actions=drop");

  auto empty = parse_flows("# nothing\n\n");
  ASSERT_TRUE(empty) << empty.error();
  EXPECT_TRUE(empty->empty());
}

TEST(FlowSyntax, ParseFlowsReportsTheBadLineAndReturnsNothing) {
  const std::string text =
      "# rules\n"
      "ip,actions=output:1\n"
      "tcp,tp_dts=80,actions=output:2  # typo\n"
      "udp,actions=output:3\n";
  auto rules = parse_flows(text);
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error(), "line 3: unknown field 'tp_dts' at column 5");

  rules = parse_flows("ip,actions=output:1\nip,tp_dst=1,actions=drop\n");
  ASSERT_FALSE(rules);
  EXPECT_EQ(rules.error(), "line 2: tp_dst requires tcp or udp (at column 4)");
}

}  // namespace
}  // namespace softflow

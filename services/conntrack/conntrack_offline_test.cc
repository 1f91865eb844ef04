// conntrack through the whole datapath: pcaps written here, run through the
// built sf-offline binary on a stateful-firewall flow file like the paper's
// Figure 4, with coalescing on and off.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "softflow/packet_builder.h"
#include "../../tests/unit/test_util.h"
#include "softflow/ports.h"

namespace softflow {
namespace {

namespace fs = std::filesystem;

// Client on port 1, server on port 2.  Stage 0: ARP bypasses the firewall;
// the client may open TCP to the server's port 80, UDP and ICMP; everything
// else only as part of a tracked connection.  Stage 1: Figure 4's two
// post-conntrack rules.  Table 1: a two-port patch panel.
constexpr const char* kFirewallFlows = R"(# stateful firewall (paper, Figure 4)
table=0,priority=300,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:1
table=0,priority=300,sf_stage=1,sf_action=conntrack,sf_metadata=0,actions=drop
table=0,priority=200,sf_stage=0,arp,actions=goto_table:1
table=0,priority=100,sf_stage=0,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=softflow:conntrack:1
table=0,priority=100,sf_stage=0,udp,nw_src=10.0.0.1,actions=softflow:conntrack:1
table=0,priority=100,sf_stage=0,icmp,nw_src=10.0.0.1,actions=softflow:conntrack:1
table=0,priority=0,sf_stage=0,actions=softflow:conntrack:0
table=1,priority=10,in_port=1,actions=output:2
table=1,priority=10,in_port=2,actions=output:1
)";

test::CommandResult run_offline(const std::string& args) {
  return test::run_command(std::string(SF_BINARY_DIR) + "/sf-offline " + args + " 2>&1");
}

std::vector<Frame> read_pcap(const std::string& path) { return test::read_pcap_frames(path); }

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The "coalesced=N" counter sf-offline prints, or -1.
long coalesced(const std::string& output) {
  std::smatch m;
  if (!std::regex_search(output, m, std::regex("coalesced=([0-9]+)"))) return -1;
  return std::stol(m[1]);
}

const MacAddr kClientMac = mac("02:00:00:00:00:01");
const MacAddr kServerMac = mac("02:00:00:00:00:02");
const uint32_t kClient = ipv4_addr("10.0.0.1");
const uint32_t kServer = ipv4_addr("10.0.0.2");

PacketBuilder from_client() {
  PacketBuilder b;
  b.eth(kClientMac, kServerMac).ipv4(kClient, kServer);
  return b;
}
PacketBuilder from_server() {
  PacketBuilder b;
  b.eth(kServerMac, kClientMac).ipv4(kServer, kClient);
  return b;
}

// Frames in on ports 1 and 2 with increasing timestamps, and what must come
// out: a frame that passes leaves on the other port, unchanged.
struct Traffic {
  std::vector<Frame> in[3];
  std::vector<Frame> expected_out[3];
  uint64_t ts = 1'000'000'000;

  void add(uint32_t port, std::vector<uint8_t> bytes, bool passes) {
    ts += 10'000;
    Frame f;
    f.port = port;
    f.timestamp_ns = ts;
    f.bytes = std::move(bytes);
    if (passes) expected_out[port == 1 ? 2 : 1].push_back(f);
    in[port].push_back(std::move(f));
  }
  void client(std::vector<uint8_t> bytes, bool passes = true) { add(1, std::move(bytes), passes); }
  void server(std::vector<uint8_t> bytes, bool passes = true) { add(2, std::move(bytes), passes); }
};

class ConntrackOffline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sf-conntrack-offline-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(path("flows.txt")) << kFirewallFlows;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes the inputs and runs sf-offline into DIR/out-NAME.
  test::CommandResult run(const Traffic& t, const std::string& name, const std::string& extra) {
    EXPECT_TRUE(write_pcap(path("client.pcap"), t.in[1]));
    EXPECT_TRUE(write_pcap(path("server.pcap"), t.in[2]));
    return run_offline("--flows " + path("flows.txt") + " --in 1=" + path("client.pcap") +
                       " --in 2=" + path("server.pcap") + " --out " + path("out-" + name) + " " +
                       extra);
  }

  // Exactly the expected frames (bytes and timestamps, in order) on each port.
  void expect_outputs(const Traffic& t, const std::string& name) {
    for (uint32_t port : {1u, 2u}) {
      SCOPED_TRACE("port " + std::to_string(port));
      const std::vector<Frame> got =
          read_pcap(path("out-" + name + "/port-" + std::to_string(port) + ".pcap"));
      const std::vector<Frame>& want = t.expected_out[port];
      for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        EXPECT_EQ(got[i].bytes, want[i].bytes) << "frame " << i;
        EXPECT_EQ(got[i].timestamp_ns, want[i].timestamp_ns) << "frame " << i;
      }
      EXPECT_EQ(got.size(), want.size());
    }
  }

  fs::path dir_;
};

// A TCP conversation both ways (handshake, 20 exchanges, FIN close) with an
// out-of-window segment in the middle, UDP queries and answers, pings, ARP,
// a refused connection from the server back to the client and unsolicited
// server UDP.  Every frame is accounted for.
TEST_F(ConntrackOffline, FirewallPassesExactlyTheTrackedTraffic) {
  Traffic t;
  t.client(from_client().arp(1, kClientMac, kClient, MacAddr{}, kServer).build());
  t.server(from_server().arp(2, kServerMac, kServer, kClientMac, kClient).build());

  auto ctcp = [](uint16_t flags, uint32_t seq, uint32_t ack, const std::string& data = "") {
    return from_client().tcp(40000, 80, flags, seq, ack, 65535).payload(data).build();
  };
  auto stcp = [](uint16_t flags, uint32_t seq, uint32_t ack, const std::string& data = "") {
    return from_server().tcp(80, 40000, flags, seq, ack, 65535).payload(data).build();
  };
  uint32_t cseq = 1000, sseq = 5000;
  t.client(ctcp(kTcpSyn, cseq, 0));
  t.server(stcp(kTcpSyn | kTcpAck, sseq, cseq + 1));
  ++cseq;
  ++sseq;
  t.client(ctcp(kTcpAck, cseq, sseq));
  for (int i = 0; i < 20; ++i) {
    const std::string request = "request " + std::to_string(i) + std::string(90, 'q');
    t.client(ctcp(kTcpPsh | kTcpAck, cseq, sseq, request));
    cseq += static_cast<uint32_t>(request.size());
    const std::string response = "response " + std::to_string(i) + std::string(300, 'r');
    t.server(stcp(kTcpPsh | kTcpAck, sseq, cseq, response));
    sseq += static_cast<uint32_t>(response.size());
    t.client(ctcp(kTcpAck, cseq, sseq));
    if (i == 10) {
      // Far outside the server's window: allowed by the ACL, refused by conntrack.
      t.client(ctcp(kTcpPsh | kTcpAck, cseq + 10'000'000, sseq, "injected"), false);
      t.server(stcp(kTcpRst, sseq + 20'000'000, 0), false);  // a blind reset
    }
    if (i % 4 == 0) {
      // UDP query and answer; a ping and its reply.
      const uint16_t qport = static_cast<uint16_t>(5300 + i);
      t.client(from_client().udp(qport, 53).payload("query").build());
      t.server(from_server().udp(53, qport).payload("answer").build());
      const uint32_t echo = 0x00090000u | static_cast<uint32_t>(i);
      t.client(from_client().icmp(8, 0, echo).payload("ping").build());
      t.server(from_server().icmp(0, 0, echo).payload("ping").build());
    }
    if (i == 5) {
      // The server tries to open a connection to the client: refused, as is
      // its retransmission, and so is unsolicited UDP.
      t.server(from_server().tcp(2222, 22, kTcpSyn, 9000, 0).build(), false);
      t.server(from_server().tcp(2222, 22, kTcpSyn, 9000, 0).build(), false);
      t.server(from_server().udp(9999, 9999).payload("unsolicited").build(), false);
      t.server(from_server().icmp(8, 0, 0x00420001).payload("ping").build(), false);
    }
  }
  t.client(ctcp(kTcpFin | kTcpAck, cseq, sseq));
  ++cseq;
  t.server(stcp(kTcpFin | kTcpAck, sseq, cseq));
  ++sseq;
  t.client(ctcp(kTcpAck, cseq, sseq));
  ASSERT_GT(t.in[1].size() + t.in[2].size(), 90u);

  const test::CommandResult on = run(t, "on", "");
  ASSERT_EQ(on.status, 0) << on.output;
  const test::CommandResult off = run(t, "off", "--no-coalesce");
  ASSERT_EQ(off.status, 0) << off.output;
  {
    SCOPED_TRACE("coalescing on");
    expect_outputs(t, "on");
  }
  {
    SCOPED_TRACE("coalescing off");
    expect_outputs(t, "off");
  }
  for (const char* port : {"/port-1.pcap", "/port-2.pcap"})
    EXPECT_EQ(file_bytes(path(std::string("out-on") + port)),
              file_bytes(path(std::string("out-off") + port)))
        << port << " differs between coalescing on and off";
  EXPECT_GT(coalesced(on.output), 0) << on.output;
  EXPECT_EQ(coalesced(off.output), 0) << off.output;
}

// The conntrack section of --service-config reaches the service: with room
// for one connection, the second UDP flow is refused (and its answers too).
TEST_F(ConntrackOffline, ServiceConfigTakesEffect) {
  Traffic t;
  for (int i = 0; i < 3; ++i) {
    t.client(from_client().udp(1111, 53).payload("first flow").build(), true);
    t.client(from_client().udp(2222, 53).payload("second flow").build(), false);
    t.server(from_server().udp(53, 1111).payload("answer 1").build(), true);
    t.server(from_server().udp(53, 2222).payload("answer 2").build(), false);
  }
  std::ofstream(path("services.json")) << R"({"conntrack": {"max_connections": 1}})";
  const test::CommandResult r = run(t, "limited", "--service-config " + path("services.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_outputs(t, "limited");

  // Without the limit both flows pass.
  Traffic open_t;
  for (const Frame& f : t.in[1]) open_t.client(f.bytes, true);
  for (const Frame& f : t.in[2]) open_t.server(f.bytes, true);
  const test::CommandResult r2 = run(open_t, "open", "");
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_EQ(read_pcap(path("out-open/port-2.pcap")).size(), 6u);

  // A bad conntrack section stops sf-offline with a message naming the key.
  std::ofstream(path("bad.json"))
      << R"({"conntrack": {"max_connections": 1, "tcp_midstreem": "loose"}})";
  const test::CommandResult bad = run(t, "bad", "--service-config " + path("bad.json"));
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("tcp_midstreem"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace softflow

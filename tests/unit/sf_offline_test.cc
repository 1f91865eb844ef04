// End-to-end tests of the sf-offline binary: pcaps in, pcaps out.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "softflow/packet_builder.h"
#include "softflow/ports.h"
#include "test_util.h"

namespace softflow {
namespace {

namespace fs = std::filesystem;

test::CommandResult run(const std::string& args) {
  return test::run_command(std::string(SF_BINARY_DIR) + "/sf-offline " + args + " 2>&1");
}

std::vector<Frame> read_all(const std::string& path) { return test::read_pcap_frames(path); }

class SfOffline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sf-offline-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write_text(const std::string& name, const std::string& text) const {
    std::ofstream(path(name)) << text;
  }
  fs::path dir_;
};

Frame udp_frame(uint32_t port, uint64_t ts, uint32_t src, uint32_t dst, uint16_t sport,
                uint16_t dport, const std::string& payload) {
  Frame f;
  f.port = port;
  f.timestamp_ns = ts;
  f.bytes = PacketBuilder().ipv4(src, dst).udp(sport, dport).payload(payload).build();
  return f;
}

TEST_F(SfOffline, MergesInputsByTimestampAndWritesPerPort) {
  // Port 1 sends to 10.0.0.2 (-> port 2), port 2 sends to 10.0.0.1 (-> port 1),
  // through one noop stage; interleaved timestamps across the two files.
  std::vector<Frame> in1, in2;
  for (int i = 0; i < 20; ++i) {
    in1.push_back(udp_frame(1, 1000 + 20 * i, 0x0a000001, 0x0a000002, 1000, 80, "a" + std::to_string(i)));
    in2.push_back(udp_frame(2, 1010 + 20 * i, 0x0a000002, 0x0a000001, 80, 1000, "b" + std::to_string(i)));
  }
  ASSERT_TRUE(write_pcap(path("in1.pcap"), in1));
  ASSERT_TRUE(write_pcap(path("in2.pcap"), in2));
  write_text("flows.txt",
             "# two-host switch with a noop stage\n"
             "table=0,priority=10,sf_stage=0,ip,actions=softflow:noop:1\n"
             "table=0,priority=10,sf_stage=1,sf_action=noop,ip,actions=goto_table:1\n"
             "table=1,priority=10,ip,nw_dst=10.0.0.2,actions=output:2   # to host 2\n"
             "table=1,priority=10,ip,nw_dst=10.0.0.1,actions=output:1\n");
  for (const char* mode : {"", "--no-coalesce"}) {
    const std::string out = path(std::string("out") + mode);
    test::CommandResult r = run("--flows " + path("flows.txt") + " --in 1=" + path("in1.pcap") + " --in 2=" +
                      path("in2.pcap") + " --out " + out + " " + mode);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("megaflow lookups per packet"), std::string::npos) << r.output;
    auto p1 = read_all(out + "/port-1.pcap");
    auto p2 = read_all(out + "/port-2.pcap");
    ASSERT_EQ(p2.size(), in1.size());
    ASSERT_EQ(p1.size(), in2.size());
    for (size_t i = 0; i < in1.size(); ++i) {
      EXPECT_EQ(p2[i].bytes, in1[i].bytes) << "port 2 frame " << i;
      EXPECT_EQ(p2[i].timestamp_ns, in1[i].timestamp_ns);
      EXPECT_EQ(p1[i].bytes, in2[i].bytes) << "port 1 frame " << i;
    }
  }
  // Coalescing: one lookup per packet once warm, so fewer than 2 on average.
  test::CommandResult on = run("--flows " + path("flows.txt") + " --in 1=" + path("in1.pcap") + " --out " +
                     path("o3"));
  test::CommandResult off = run("--flows " + path("flows.txt") + " --in 1=" + path("in1.pcap") + " --out " +
                      path("o4") + " --no-coalesce");
  EXPECT_NE(on.output.find("megaflow lookups per packet: 1.000"), std::string::npos) << on.output;
  EXPECT_NE(off.output.find("megaflow lookups per packet: 2.000"), std::string::npos) << off.output;
}

TEST_F(SfOffline, BadFlowLineFailsWithLineAndToken) {
  std::vector<Frame> in = {udp_frame(1, 1, 1, 2, 3, 4, "x")};
  ASSERT_TRUE(write_pcap(path("in.pcap"), in));
  write_text("flows.txt", "table=0,ip,actions=output:2\n\ntable=0,ip,nw_dts=1.2.3.4,actions=drop\n");
  test::CommandResult r = run("--flows " + path("flows.txt") + " --in 1=" + path("in.pcap") + " --out " + path("o"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("line 3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nw_dts"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("o/port-2.pcap")));
}

TEST_F(SfOffline, BadInputsFailClearly) {
  write_text("flows.txt", "table=0,actions=drop\n");
  write_text("garbage.pcap", "this is not a pcap file at all");
  test::CommandResult r = run("--flows " + path("flows.txt") + " --in 1=" + path("garbage.pcap") + " --out " + path("o"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("garbage.pcap"), std::string::npos) << r.output;

  ASSERT_TRUE(write_pcap(path("good.pcap"), std::vector<Frame>{udp_frame(1, 1, 1, 2, 3, 4, "x")}));
  r = run("--flows " + path("missing.txt") + " --in 1=" + path("good.pcap") + " --out " + path("o"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("missing.txt"), std::string::npos) << r.output;

  r = run("--flows " + path("flows.txt") + " --in x=" + path("garbage.pcap") + " --out " + path("o"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("PORT=FILE"), std::string::npos) << r.output;
}

TEST_F(SfOffline, MalformedPacketsAreCountedAndForwardedByWhatParsed) {
  std::vector<Frame> in;
  in.push_back(udp_frame(1, 1, 0x0a000001, 0x0a000002, 1, 2, "ok"));
  Frame truncated = udp_frame(1, 2, 0x0a000001, 0x0a000002, 1, 2, "cut");
  truncated.bytes.resize(14 + 10);  // IPv4 header cut short
  in.push_back(truncated);
  Frame runt;
  runt.port = 1;
  runt.timestamp_ns = 3;
  runt.bytes = {0x01, 0x02, 0x03};  // not even an Ethernet header
  in.push_back(runt);
  ASSERT_TRUE(write_pcap(path("in.pcap"), in));
  // Everything goes to port 2, IPv4 or not.
  write_text("flows.txt", "table=0,priority=1,actions=output:2\n");
  test::CommandResult r = run("--flows " + path("flows.txt") + " --in 1=" + path("in.pcap") + " --out " + path("o"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("malformed packets (forwarded by what parsed): 2"), std::string::npos)
      << r.output;
  auto out = read_all(path("o/port-2.pcap"));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].bytes, truncated.bytes);
  EXPECT_EQ(out[2].bytes, runt.bytes);
}

}  // namespace
}  // namespace softflow

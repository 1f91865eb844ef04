// The control plane end to end, in one process: a Switch, a Controller with
// fake daemon hooks and a ControlServer on a temporary socket, driven through
// the real client (and, at the end, through the sfctl binary).
#include "softflow/control.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "softflow/flow_syntax.h"
#include "softflow/parse.h"
#include "test_util.h"

namespace softflow {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using test::SwitchHarness;
using test::udp4;

// A connection tracker stand-in for ct-dump / ct-flush: it has a table only
// when configured with {"tracks": true}, so every other switch in this binary
// (which also gets an instance) still has no service that tracks connections.
class TestConnectionTable final : public Service {
 public:
  explicit TestConnectionTable(const Json& config) : tracks_(config.value("tracks", false)) {}
  void process(std::span<Packet* const>, uint32_t) override {}
  std::optional<Json> dump_connections() const override {
    if (!tracks_) return std::nullopt;
    Json table = Json::array();
    for (size_t i = 0; i < connections_; ++i)
      table.push_back(
          fmt::format("udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport={},dport=53)", 1000 + i));
    return table;
  }
  std::optional<size_t> flush_connections() override {
    if (!tracks_) return std::nullopt;
    return std::exchange(connections_, 0);
  }

 private:
  bool tracks_;
  size_t connections_ = 2;
};
SF_REGISTER_SERVICE(test_conntable, TestConnectionTable, "test only: a fixed connection table");

Json fake_daemon_facts() {
  return {{"ports",
           {{{"name", "p1"},
             {"ofport", 1},
             {"ifindex", 11},
             {"queues", 2},
             {"xdp_mode", "native"},
             {"xdp_prog_id", 77},
             {"adopted", false},
             {"rx_packets", 5},
             {"tx_packets", 6},
             {"tx_dropped", 0}},
            {{"name", "p2"}, {"ofport", 2}, {"xdp_mode", "generic"}, {"adopted", true}},
            {{"name", "p3"}, {"ofport", 3}},
            {{"name", "p4"}, {"ofport", 4}}}},
          {"xdp",
           {{"rx", 40},
            {"emc_hits", 31},
            {"megaflow_hits", 4},
            {"misses", 3},
            {"unparsed", 1},
            {"malformed", 1},
            {"not_port", 0},
            {"no_socket", 0}}},
          {"pmd_threads", 3}};
}

Frame udp_frame(uint32_t port, uint32_t src, uint32_t dst, uint16_t dport = 80) {
  return test::frame(port, udp4(src, dst, 1000, dport));
}

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override { Init(/*service_config=*/{}); }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // (Re)creates the switch, controller and server.
  void Init(Json service_config, ControlServerOptions server_options = {}) {
    server_.reset();
    if (dir_.empty()) {
      char tmpl[] = "/tmp/sf-control-XXXXXX";
      ASSERT_NE(mkdtemp(tmpl), nullptr);
      dir_ = tmpl;
    }
    // A directory that does not exist yet: start() creates it.
    path_ = dir_ + "/run/softflowd.sock";
    harness_ = std::make_unique<SwitchHarness>(true, std::set<uint32_t>{1, 2, 3, 4},
                                               MegaflowCacheConfig{}, service_config);
    DaemonHooks hooks;
    hooks.show = [this] {
      ++show_calls_;
      return fake_daemon_facts();
    };
    hooks.now_ns = [] { return uint64_t{5'000'000'000}; };
    controller_ = std::make_unique<Controller>(harness_->sw(), hooks);
    server_ = std::make_unique<ControlServer>(std::move(server_options));
    Status s = server_->start(path_, *controller_);
    ASSERT_TRUE(s) << s.message();
  }

  Response call(const std::string& command, std::vector<std::string> args = {},
                RequestOptions options = {}, std::string input = "") {
    Request r;
    r.command = command;
    r.args = std::move(args);
    r.options = std::move(options);
    r.input = std::move(input);
    auto response = control_request(path_, r, std::chrono::seconds(30));
    EXPECT_TRUE(response) << response.error();
    return response ? *response : Response::failure(response.status());
  }
  Response call_json(const std::string& command, std::vector<std::string> args = {}) {
    RequestOptions o;
    o.json = true;
    return call(command, std::move(args), o);
  }
  Response call_strict(const std::string& command, std::vector<std::string> args) {
    RequestOptions o;
    o.strict = true;
    return call(command, std::move(args), o);
  }
  std::string dump() {
    Response r = call("dump-flows");
    EXPECT_TRUE(r.ok()) << r.error;
    return r.output;
  }

  // Through Switch::process, the PMD threads' locked entry point.  'tweak'
  // can set what the XDP program would have put in the metadata.
  void process(const std::vector<Frame>& frames, uint64_t now_ns = 1'000'000'000,
               const std::function<void(Packet&)>& tweak = {}) {
    FramePool pool(frames.size() + 1);
    std::vector<Packet> packets(frames.size());
    std::vector<Packet*> batch;
    for (size_t i = 0; i < frames.size(); ++i) {
      ASSERT_TRUE(pool.load(packets[i], frames[i].bytes, frames[i].port, now_ns));
      parse_packet(packets[i]);
      if (tweak) tweak(packets[i]);
      batch.push_back(&packets[i]);
    }
    harness_->sw().process(0, batch, now_ns);
    for (Packet& p : packets) pool.release(p);
  }

  Switch& sw() { return harness_->sw(); }

  std::string dir_;
  std::string path_;
  std::unique_ptr<SwitchHarness> harness_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControlServer> server_;
  std::atomic<int> show_calls_{0};
};

// ---- protocol ---------------------------------------------------------------------

TEST(ControlProtocol, RequestAndResponseRoundTrip) {
  Request r;
  r.command = "trace";
  r.args = {"in_port=1,ip", "nw_dst=10.0.0.1"};
  r.options.json = true;
  r.options.metadata = {{1, 7}, {3, 0xffffffff}};
  r.input = "line one\nline \"two\"\n";
  const std::string wire = encode_request(r);
  ASSERT_EQ(wire.find('\n'), wire.size() - 1) << "one line: " << wire;
  auto back = decode_request(wire);
  ASSERT_TRUE(back) << back.error();
  EXPECT_EQ(back->command, r.command);
  EXPECT_EQ(back->args, r.args);
  EXPECT_TRUE(back->options.json);
  EXPECT_FALSE(back->options.strict);
  EXPECT_EQ(back->options.metadata, r.options.metadata);
  EXPECT_EQ(back->input, r.input);

  Response resp = Response::success("text\n", {{"n", 3}});
  auto rb = decode_response(encode_response(resp));
  ASSERT_TRUE(rb) << rb.error();
  EXPECT_EQ(rb->status, 0);
  EXPECT_EQ(rb->output, "text\n");
  EXPECT_EQ(rb->result["n"], 3);
  Response err = Response::failure(Status::error("bad thing", ENOENT));
  rb = decode_response(encode_response(err));
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->status, ENOENT);
  EXPECT_EQ(rb->error, "bad thing");
}

TEST(ControlProtocol, BadMessagesAreErrorsNotExceptions) {
  for (const char* bad : {"", "not json", "[1,2]", "{\"args\": []}", "{\"command\": 3}",
                          "{\"command\": \"show\", \"args\": [1]}",
                          "{\"command\": \"show\", \"options\": {\"json\": \"yes\"}}",
                          "{\"command\": \"trace\", \"options\": {\"metadata\": {\"0\": 1}}}",
                          "{\"command\": \"trace\", \"options\": {\"metadata\": {\"1\": -1}}}",
                          "{\"command\": \"trace\", \"options\": {\"metadata\": {\"x\": 1}}}"}) {
    auto r = decode_request(bad);
    EXPECT_FALSE(r) << bad;
  }
  // Not UTF-8: replaced on the way out rather than thrown about.
  Request r;
  r.command = "add-flows";
  r.input = std::string("table=0 \xff\xfe actions=drop\n");
  EXPECT_TRUE(decode_request(encode_request(r)));
}

TEST(ControlCommands, TableIsConsistent) {
  std::set<std::string_view> names;
  for (const CommandSpec& spec : control_commands()) {
    EXPECT_TRUE(names.insert(spec.name).second) << spec.name;
    EXPECT_NE(spec.handler, nullptr) << spec.name;
    EXPECT_FALSE(spec.help.empty()) << spec.name;
    EXPECT_LE(spec.min_args, spec.max_args) << spec.name;
    EXPECT_EQ(find_command(spec.name), &spec);
  }
  for (const char* required :
       {"add-flow", "add-flows", "del-flows", "mod-flows", "dump-flows", "dump-megaflows", "show",
        "trace", "list-services", "ct-dump", "ct-flush"})
    EXPECT_TRUE(names.count(required)) << required;
  EXPECT_EQ(find_command("nope"), nullptr);
}

// ---- flows ------------------------------------------------------------------------

TEST_F(ControlTest, AddFlowThenDumpFlows) {
  Response r = call("add-flow", {"table=0,priority=100,ip,nw_dst=10.0.0.2,actions=output:2"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output, "");
  // Split by the shell: rejoined.
  r = call("add-flow", {"table=0", "priority=90", "ip", "actions=output:3"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(dump(),
            " table=0, n_packets=0, n_bytes=0, priority=100,ip,nw_dst=10.0.0.2 actions=output:2\n"
            " table=0, n_packets=0, n_bytes=0, priority=90,ip actions=output:3\n");
  EXPECT_EQ(dump(), sw().dump_flows());

  Response j = call_json("dump-flows");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j.output, "");
  ASSERT_TRUE(j.result.is_array());
  ASSERT_EQ(j.result.size(), 2u);
  EXPECT_EQ(j.result[0]["priority"], 100);
  EXPECT_EQ(j.result[0]["match"], "ip,nw_dst=10.0.0.2");
  EXPECT_EQ(j.result[0]["actions"], "output:2");
  EXPECT_EQ(j.result[0]["n_packets"], 0);
}

TEST_F(ControlTest, PortNamesResolveThroughTheDaemonHook) {
  int before = show_calls_;
  ASSERT_TRUE(call("dump-flows", {"ip"}).ok());
  EXPECT_EQ(show_calls_, before) << "a filter without port names needs no daemon facts";
  Response r = call("add-flow", {"table=0,priority=5,in_port=p1,actions=output:p2,output:p3"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(show_calls_, before + 1) << "asked once per request";
  EXPECT_NE(dump().find("priority=5,in_port=1 actions=output:2,output:3"), std::string::npos)
      << dump();
  r = call("add-flow", {"table=0,in_port=nosuchport,actions=drop"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("nosuchport"), std::string::npos) << r.error;
}

TEST_F(ControlTest, RulesForPortsTheSwitchLacksAreRefused) {
  // Like softflowd's check of its flows file at start.
  Response r = call("add-flow", {"table=0,ip,actions=output:9"});
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error, "output:9 is not a port of this switch");
  r = call("add-flows", {"f"}, {},
           "table=0,ip,actions=output:2\ntable=0,in_port=7,actions=output:1\n");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("line 2: in_port=7 is not a port of this switch"), std::string::npos)
      << r.error;
  r = call("mod-flows", {"ip,actions=output:8"});
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(sw().tables().rule_count(), 0u);
  // Filters may name any port.
  EXPECT_TRUE(call("del-flows", {"in_port=7"}).ok());
  // Without a port list from the daemon, nothing to check against.
  Controller bare(sw(), DaemonHooks{});
  Request req;
  req.command = "add-flow";
  req.args = {"table=0,ip,actions=output:9"};
  EXPECT_TRUE(bare.handle(req).ok());
}

TEST_F(ControlTest, MalformedFlowNamesTheTokenAndChangesNothing) {
  ASSERT_TRUE(call("add-flow", {"table=0,priority=10,ip,actions=output:2"}).ok());
  const std::string before = dump();
  Response r = call("add-flow", {"table=0,ip,nw_dts=10.0.0.1,actions=output:1"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.error.find("nw_dts"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("column"), std::string::npos) << r.error;
  // Semantically invalid: a service that does not exist.
  r = call("add-flow", {"table=0,ip,actions=softflow:nosuchservice:1"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("nosuchservice"), std::string::npos) << r.error;
  EXPECT_EQ(dump(), before);
  EXPECT_EQ(sw().tables().rule_count(), 1u);
}

TEST_F(ControlTest, AddFlowsIsAllOrNothingAndNamesTheLine) {
  ASSERT_TRUE(call("add-flow", {"table=0,priority=1,actions=drop"}).ok());
  const std::string before = dump();
  const std::string bad_syntax =
      "# routes\n"
      "table=0,priority=10,ip,nw_dst=10.0.0.2,actions=output:2\n"
      "table=0,priority=10,ip,nw_dts=10.0.0.1,actions=output:1\n"
      "table=0,priority=10,arp,actions=output:3\n";
  Response r = call("add-flows", {"flows.txt"}, {}, bad_syntax);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("line 3"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("nw_dts"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("flows.txt"), std::string::npos) << r.error;
  EXPECT_EQ(dump(), before);

  // Valid syntax, invalid rule (goto_table must go forward): also by line.
  const std::string bad_rule =
      "table=0,priority=10,ip,actions=goto_table:1\n"
      "\n"
      "table=1,priority=10,ip,actions=output:2\n"
      "table=1,priority=5,actions=goto_table:0\n";
  r = call("add-flows", {"-"}, {}, bad_rule);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("line 4"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("stdin"), std::string::npos) << r.error;
  EXPECT_EQ(dump(), before);

  r = call_json("add-flows", {"-"});
  ASSERT_TRUE(r.ok()) << r.error;  // empty input: nothing to add
  EXPECT_EQ(r.result["added"], 0);
}

TEST_F(ControlTest, DumpFlowsOutputFeedsBackIntoAddFlows) {
  const std::string flows =
      "table=0,priority=100,sf_stage=0,ip,actions=softflow:noop:4\n"
      "table=0,priority=100,sf_stage=1,sf_action=noop,ip,actions=goto_table:1\n"
      "table=0,priority=1,actions=drop   # everything else\n"
      "table=1,priority=10,ip,nw_dst=10.0.0.2,actions=mod_dl_dst:02:00:00:00:00:09,dec_ttl,output:"
      "2\n"
      "table=1,priority=20,tcp,tp_dst=80/0xfff0,actions=set_field:7->sf_metadata,output:3\n"
      "table=1,priority=5,in_port=1,dl_vlan=10,actions=in_port\n";
  Response r = call("add-flows", {"flows.txt"}, {}, flows);
  ASSERT_TRUE(r.ok()) << r.error;
  process({udp_frame(1, 0x0a000001, 0x0a000002), udp_frame(1, 0x0a000001, 0x0a000002)});
  const std::string first = dump();
  EXPECT_NE(first.find("n_packets=2"), std::string::npos) << first;

  Response j1 = call_json("dump-flows");
  ASSERT_TRUE(call("del-flows").ok());
  EXPECT_EQ(dump(), "");
  r = call("add-flows", {"dump.txt"}, {}, first);
  ASSERT_TRUE(r.ok()) << r.error << "\n" << first;
  Response j2 = call_json("dump-flows");
  ASSERT_EQ(j1.result.size(), 6u);
  ASSERT_EQ(j2.result.size(), j1.result.size());
  for (size_t i = 0; i < j1.result.size(); ++i)
    EXPECT_EQ(j2.result[i]["flow"], j1.result[i]["flow"]) << i;
}

TEST_F(ControlTest, DelFlowsByMatchAndStrict) {
  ASSERT_TRUE(call("add-flows", {"f"}, {},
                   "table=0,priority=100,ip,nw_dst=10.0.0.2,actions=output:2\n"
                   "table=0,priority=200,ip,nw_dst=10.0.0.2,actions=output:3\n"
                   "table=0,priority=100,ip,nw_dst=10.0.0.3,actions=output:3\n"
                   "table=0,priority=100,arp,actions=output:4\n"
                   "table=1,priority=100,ip,nw_dst=10.0.0.2,actions=output:1\n")
                  .ok());
  // Strict: only the rule with exactly this match and priority.
  Response r = call_strict("del-flows", {"table=0,priority=200,ip,nw_dst=10.0.0.2"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(sw().tables().rule_count(), 4u);
  EXPECT_EQ(dump().find("priority=200"), std::string::npos) << dump();
  // Strict with a priority no rule has: nothing.
  RequestOptions strict_json;
  strict_json.strict = true;
  strict_json.json = true;
  r = call("del-flows", {"table=0,priority=300,ip,nw_dst=10.0.0.2"}, strict_json);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.result["deleted"], 0);
  // Non-strict: every rule at least as specific, in the given table only.
  r = call_json("del-flows", {"table=0,ip"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.result["deleted"], 2);
  EXPECT_EQ(dump(),
            " table=0, n_packets=0, n_bytes=0, priority=100,arp actions=output:4\n"
            " table=1, n_packets=0, n_bytes=0, priority=100,ip,nw_dst=10.0.0.2 actions=output:1\n");
  r = call("del-flows", {"ip,actions=drop"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("not actions"), std::string::npos) << r.error;
  r = call_json("del-flows");
  EXPECT_EQ(r.result["deleted"], 2);
  EXPECT_EQ(dump(), "");
}

TEST_F(ControlTest, DelFlowsReturnsAfterRevalidation) {
  ASSERT_TRUE(call("add-flow", {"table=0,ip,actions=output:2"}).ok());
  process({udp_frame(1, 0x0a000001, 0x0a000002)});
  Response before = call("dump-megaflows");
  EXPECT_NE(before.output.find("actions=output:2"), std::string::npos) << before.output;
  ASSERT_TRUE(call("del-flows", {"ip"}).ok());
  // The megaflow no longer forwards: the answer came after revalidation.
  Response after = call_json("dump-megaflows");
  for (const Json& mf : after.result) EXPECT_EQ(mf["segments"][0]["actions"], "drop") << mf.dump();
  harness_->ports().clear();
  process({udp_frame(1, 0x0a000001, 0x0a000002)});
  EXPECT_EQ(test::total_sent(harness_->ports()), 0u);
}

TEST_F(ControlTest, ModFlows) {
  ASSERT_TRUE(call("add-flow", {"table=0,priority=100,ip,nw_dst=10.0.0.2,actions=output:2"}).ok());
  ASSERT_TRUE(call("add-flow", {"table=0,priority=100,arp,actions=output:2"}).ok());
  Response r = call_json("mod-flows", {"ip,actions=output:3"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.result["modified"], 1);
  EXPECT_NE(dump().find("nw_dst=10.0.0.2 actions=output:3"), std::string::npos) << dump();
  EXPECT_NE(dump().find("arp actions=output:2"), std::string::npos) << dump();
  r = call("mod-flows", {"ip"});
  EXPECT_FALSE(r.ok()) << "mod-flows needs actions";
}

TEST_F(ControlTest, DumpFlowsFiltersByTableAndMatch) {
  ASSERT_TRUE(call("add-flows", {"f"}, {},
                   "table=0,priority=10,ip,nw_dst=10.0.0.2,actions=goto_table:1\n"
                   "table=0,priority=5,arp,actions=output:4\n"
                   "table=1,priority=10,ip,nw_dst=10.0.0.2,actions=output:2\n")
                  .ok());
  Response r = call("dump-flows", {"table=1"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output,
            " table=1, n_packets=0, n_bytes=0, priority=10,ip,nw_dst=10.0.0.2 actions=output:2\n");
  r = call("dump-flows", {"arp"});
  EXPECT_EQ(r.output, " table=0, n_packets=0, n_bytes=0, priority=5,arp actions=output:4\n");
  r = call("dump-flows", {"ip,nw_dst=10.0.0.2"});
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  r = call_strict("dump-flows", {"table=0,priority=10,ip,nw_dst=10.0.0.2"});
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = call("dump-flows", {"table=0,nw_dts=1.2.3.4"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("nw_dts"), std::string::npos);
}

// ---- show, megaflows, services ----------------------------------------------------

TEST_F(ControlTest, ShowReportsCountersTextAndJson) {
  ASSERT_TRUE(call("add-flow", {"table=0,priority=10,ip,nw_dst=10.0.0.2,actions=output:2"}).ok());
  // A port that is gone (sfctl refuses to name it; the switch's API does not).
  ASSERT_TRUE(
      sw().add_flow(*parse_flow("table=0,priority=10,ip,nw_dst=10.0.0.9,actions=output:9")));
  process({udp_frame(1, 0x0a000001, 0x0a000002)});  // upcall
  process({udp_frame(1, 0x0a000001, 0x0a000002)});  // userspace classifier hit
  process({udp_frame(1, 0x0a000001, 0x0a000005)});  // table miss
  process({udp_frame(1, 0x0a000001, 0x0a000009)});  // no such port
  // Two packets the XDP program resolved to the first megaflow.
  uint32_t id = 0, generation = 0;
  sw().exclusive([&] {
    sw().datapath().megaflows().for_each([&](const Megaflow& mf) {
      if (mf.segments[0].actions == ActionList{Action::output(2)}) {
        id = mf.id;
        generation = mf.generation;
      }
    });
  });
  ASSERT_NE(generation, 0u);
  process({udp_frame(1, 0x0a000001, 0x0a000002), udp_frame(1, 0x0a000001, 0x0a000002)},
          2'000'000'000, [&](Packet& p) {
            p.megaflow_id = id;
            p.megaflow_generation = generation;
            p.xdp_result = SF_XDP_EMC_HIT;
          });
  const DatapathStats st = sw().total_stats();
  ASSERT_EQ(st.rx_packets, 6u);
  ASSERT_EQ(st.xdp_emc_resolved, 2u);

  Response r = call("show");
  ASSERT_TRUE(r.ok()) << r.error;
  const std::string& text = r.output;
  for (const char* want :
       {"1(p1): ifindex=11, queues=2, xdp=native, prog_id=77, adopted=no, rx_packets=5",
        "2(p2): xdp=generic, adopted=yes", "pmd_threads: 3", "flows: 2",
        "megaflows: 3 (limit 200000, idle timeout 10 s), coalescing on", "rx_packets=6",
        "resolved in XDP: 2 (33.3% of rx_packets; NIC hint 0, emc 2, megaflow 0)",
        "classified by NIC hint: 0 (0.0% of rx_packets); in software:",
        "resolved in userspace: 1 (emc 0, megaflow 1)", "slow-path upcalls: 3", "xdp_stale: 0",
        "megaflow_limit_hits: 0", "malformed: 0", "table_miss=1", "no_such_port=1",
        "xdp program: rx=40, emc_hits=31, megaflow_hits=4, misses=3"})
    EXPECT_NE(text.find(want), std::string::npos) << "missing '" << want << "' in:\n" << text;

  Response j = call_json("show");
  ASSERT_TRUE(j.ok()) << j.error;
  const Json& res = j.result;
  EXPECT_EQ(res["counters"]["rx_packets"], 6);
  EXPECT_EQ(res["counters"]["upcalls"], 3);
  EXPECT_EQ(res["counters"]["xdp_emc_resolved"], 2);
  EXPECT_EQ(res["resolved"]["xdp"], 2);
  EXPECT_NEAR(res["resolved"]["xdp_percent_of_rx"].get<double>(), 100.0 / 3, 0.01);
  EXPECT_EQ(res["resolved"]["userspace"], 1);
  EXPECT_EQ(res["drops"]["table_miss"], 1);
  EXPECT_EQ(res["drops"]["no_such_port"], 1);
  EXPECT_EQ(res["megaflows"]["count"], 3);
  EXPECT_EQ(res["megaflows"]["limit"], 200000);
  EXPECT_EQ(res["xdp"]["emc_hits"], 31);
  EXPECT_EQ(res["ports"][0]["name"], "p1");
  EXPECT_EQ(res["pmd_threads"], 3);
}

TEST_F(ControlTest, ShowWithoutDaemonHooks) {
  Controller bare(sw(), DaemonHooks{});
  Request req;
  req.command = "show";
  Response r = bare.handle(req);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_NE(r.output.find("ports: none"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("xdp program"), std::string::npos) << r.output;
}

TEST_F(ControlTest, DumpMegaflows) {
  ASSERT_TRUE(call("add-flow", {"table=0,ip,nw_dst=10.0.0.2,actions=output:2"}).ok());
  process({udp_frame(1, 0x0a000001, 0x0a000002)});  // builds the megaflow
  process({udp_frame(1, 0x0a000001, 0x0a000002)});  // and runs through it
  Response r = call("dump-megaflows");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output, sw().dump_megaflows(5'000'000'000));
  EXPECT_NE(r.output.find("used=4.000s"), std::string::npos) << "the hook's clock: " << r.output;
  Response j = call_json("dump-megaflows");
  ASSERT_EQ(j.result.size(), 1u);
  EXPECT_EQ(j.result[0]["n_packets"], 1);
  EXPECT_EQ(j.result[0]["segments"][0]["actions"], "output:2");
  EXPECT_NE(j.result[0]["match"].get<std::string>().find("nw_dst=10.0.0.2"), std::string::npos);
}

TEST_F(ControlTest, ListServices) {
  ASSERT_TRUE(call("add-flow", {"table=0,sf_stage=0,ip,actions=softflow:counter:9"}).ok());
  process({udp_frame(1, 0x0a000001, 0x0a000002)});
  Response r = call("list-services");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_NE(r.output.find("noop: does nothing; always coalescable"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("counter: counts packets"), std::string::npos) << r.output;
  Response j = call_json("list-services");
  bool found = false;
  for (const Json& s : j.result) {
    if (s["name"] != "counter") continue;
    found = true;
    EXPECT_EQ(s["id"], test::service_id("counter"));
    EXPECT_EQ(s["stats"]["9"]["packets"], 1) << s.dump();
  }
  EXPECT_TRUE(found) << j.result.dump();
}

TEST_F(ControlTest, ConnectionTrackingThroughConntrack) {
  // The paper's Figure 4 firewall: port 1 may open TCP to port 80.
  ASSERT_TRUE(call("add-flows", {"f"}, {},
                   "table=0,priority=300,sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=goto_table:1\n"
                   "table=0,priority=100,sf_stage=0,in_port=1,tcp,tp_dst=80,actions=softflow:conntrack:1\n"
                   "table=0,priority=0,sf_stage=0,actions=softflow:conntrack:0\n"
                   "table=1,priority=10,in_port=1,actions=output:2\n"
                   "table=1,priority=10,in_port=2,actions=output:1\n")
                  .ok());
  Response r = call("ct-dump");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output, "");
  const uint32_t a = ipv4_addr("10.0.0.1"), b = ipv4_addr("10.0.0.2");
  process({test::frame(1, PacketBuilder().ipv4(a, b).tcp(40000, 80, kTcpSyn, 1000, 0).build()),
           test::frame(2, PacketBuilder().ipv4(b, a).tcp(80, 40000, kTcpSyn | kTcpAck, 5000, 1001).build()),
           test::frame(1, PacketBuilder().ipv4(a, b).tcp(40000, 80, kTcpAck, 1001, 5001).build())});
  r = call("ct-dump");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output,
            "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),"
            "reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=40000),state=ESTABLISHED,"
            "timeout=86400,packets=2/1,bytes=108/54\n");
  r = call_json("ct-dump");
  ASSERT_EQ(r.result["conntrack"].size(), 1u) << r.result.dump();
  EXPECT_EQ(r.result["conntrack"][0]["state"], "ESTABLISHED");
  r = call_json("ct-flush");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.result["flushed"], 1);
  EXPECT_EQ(call("ct-dump").output, "");
}

// Several services tracking: one line per connection, prefixed by the
// service's name; a service's own text lines are printed as they are.
TEST_F(ControlTest, ConnectionTrackingWithSeveralServices) {
  Init({{"test_conntable", {{"tracks", true}}}});
  Response r = call("ct-dump");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output,
            "test_conntable: udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1000,dport=53)\n"
            "test_conntable: udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1001,dport=53)\n");
  r = call_json("ct-dump");
  EXPECT_EQ(r.result["test_conntable"].size(), 2u);
  EXPECT_EQ(r.result["conntrack"].size(), 0u);
  r = call_json("ct-flush");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.result["flushed"], 2);
  EXPECT_EQ(r.result["services"]["conntrack"], 0);
  r = call("ct-dump");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.output, "");
}

TEST_F(ControlTest, TraceThroughTheServer) {
  ASSERT_TRUE(call("add-flows", {"f"}, {},
                   "table=0,priority=10,sf_stage=0,ip,actions=softflow:noop:0\n"
                   "table=0,priority=10,sf_stage=1,sf_action=noop,ip,actions=output:2\n"
                   "table=0,priority=20,sf_stage=1,sf_metadata=5,ip,actions=output:3\n")
                  .ok());
  Response r = call("trace", {"in_port=p1,ip,nw_dst=10.0.0.2"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_NE(r.output.find("stage 1:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Datapath actions: softflow:noop:0,output:2"), std::string::npos)
      << r.output;
  RequestOptions o;
  o.metadata[1] = 5;
  r = call("trace", {"in_port=1,ip,nw_dst=10.0.0.2"}, o);
  EXPECT_NE(r.output.find("Datapath actions: softflow:noop:0,output:3"), std::string::npos)
      << r.output;
  r = call("trace", {"in_port=1,ip,actions=drop"});
  EXPECT_FALSE(r.ok());
  r = call("trace", {"in_port=1,ip,nw_dts=1.2.3.4"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("nw_dts"), std::string::npos);
}

TEST_F(ControlTest, UnknownCommandAndWrongArgumentCount) {
  Response r = call("frobnicate");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("unknown command 'frobnicate'"), std::string::npos) << r.error;
  r = call("show", {"extra"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("show takes no arguments"), std::string::npos) << r.error;
  r = call("add-flows", {});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("expected 1 argument (FILE), got 0"), std::string::npos) << r.error;
  r = call("add-flow", {});
  EXPECT_NE(r.error.find("add-flow: missing FLOW"), std::string::npos) << r.error;
}

// ---- the server -------------------------------------------------------------------

TEST_F(ControlTest, SocketIsPrivate) {
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u) << "a directory start() created";
}

TEST_F(ControlTest, SecondServerOnTheSamePathIsRefused) {
  Controller other(sw(), {});
  ControlServer second;
  Status s = second.start(path_, other);
  EXPECT_FALSE(s);
  EXPECT_EQ(s.message(), "softflowd already running on " + path_);
  EXPECT_FALSE(second.running());
  // The first one is untouched.
  EXPECT_TRUE(call("show").ok());
}

TEST_F(ControlTest, StaleSocketIsReplacedAndStopRemovesOnlyItsOwn) {
  server_->stop();
  EXPECT_FALSE(fs::exists(path_)) << "stop() removes its socket";
  // A socket file nobody listens on, as a killed daemon leaves behind.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  ASSERT_TRUE(fs::exists(path_));
  Status s = server_->start(path_, *controller_);
  ASSERT_TRUE(s) << s.message();
  EXPECT_TRUE(call("show").ok());

  // Something else now owns the path: stop() must leave it alone.
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  std::ofstream(path_) << "not ours";
  server_->stop();
  EXPECT_TRUE(fs::exists(path_));
  // And a non-socket file at the path is not taken over.
  s = server_->start(path_, *controller_);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("not a socket"), std::string::npos) << s.message();
}

TEST_F(ControlTest, OversizeRequestIsRejected) {
  ControlServerOptions small;
  small.max_request_bytes = 4096;
  Init({}, small);
  std::string flows;
  while (flows.size() < 64 * 1024) flows += "table=0,priority=1,ip,actions=output:2\n";
  Response r = call("add-flows", {"big"}, {}, flows);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status, E2BIG);
  EXPECT_NE(r.error.find("request too large"), std::string::npos) << r.error;
  EXPECT_EQ(sw().tables().rule_count(), 0u);
  EXPECT_TRUE(call("show").ok()) << "the server keeps serving";
}

int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string raw_read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  return out;
}

TEST_F(ControlTest, StuckClientTimesOutAndGarbageIsAnswered) {
  ControlServerOptions quick;
  quick.io_timeout = std::chrono::milliseconds(200);
  std::vector<std::string> logged;
  std::mutex log_mutex;
  quick.log = [&](const std::string& m) {
    std::lock_guard lock(log_mutex);
    logged.push_back(m);
  };
  Init({}, quick);
  const int stuck = raw_connect(path_);
  ASSERT_GE(stuck, 0);
  ASSERT_EQ(::write(stuck, "{\"comm", 6), 6);  // and then nothing
  const auto t0 = std::chrono::steady_clock::now();
  Response r = call("show");
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(r.ok()) << r.error;
  EXPECT_LT(waited, std::chrono::seconds(5));
  ::close(stuck);
  {
    std::lock_guard lock(log_mutex);
    ASSERT_EQ(logged.size(), 1u);
    EXPECT_NE(logged[0].find("no complete request"), std::string::npos) << logged[0];
  }

  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "hello\n", 6), 6);
  auto answer = decode_response(raw_read_all(fd));
  ::close(fd);
  ASSERT_TRUE(answer) << answer.error();
  EXPECT_EQ(answer->status, EPROTO);
  EXPECT_NE(answer->error.find("not valid JSON"), std::string::npos) << answer->error;
}

TEST_F(ControlTest, NonRootPeerIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to another user";
  // Open the path up, so that only the credential check stands in the way.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ + "/run").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  Request req;
  req.command = "show";
  const std::string wire = encode_request(req);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe calls after fork() in a threaded process.
    ::close(pipe_fds[0]);
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
    // The server may answer and close before reading: no SIGPIPE.
    (void)::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL);
    char buf[1024];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
      if (::write(pipe_fds[1], buf, n) != n) ::_exit(5);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  const std::string answer_text = raw_read_all(pipe_fds[0]);
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto answer = decode_response(answer_text);
  ASSERT_TRUE(answer) << answer.error() << ": " << answer_text;
  EXPECT_EQ(answer->status, EPERM);
  EXPECT_NE(answer->error.find("permission denied"), std::string::npos) << answer->error;
}

TEST_F(ControlTest, ClientSaysWhenTheDaemonIsNotRunning) {
  const std::string missing = dir_ + "/nothing-here.sock";
  Request req;
  req.command = "show";
  auto r = control_request(missing, req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), "cannot connect to softflowd at " + missing + ": No such file or directory");
}

// The PMD thread keeps forwarding while commands change the tables under it.
TEST_F(ControlTest, CommandsWhilePacketsFlow) {
  ASSERT_TRUE(call("add-flow", {"table=0,priority=1,ip,actions=output:2"}).ok());
  std::atomic<bool> done{false};
  std::thread pmd([&] {
    const std::vector<Frame> frames = {udp_frame(1, 0x0a000001, 0x0a000002),
                                       udp_frame(1, 0x0a000001, 0x0a000003)};
    uint64_t now = 1;
    while (!done) {
      process(frames, now);
      now += 1000;
    }
  });
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(
        call("add-flow",
             {fmt::format("table=0,priority=10,ip,nw_dst=10.0.0.{},actions=output:3", i % 5)})
            .ok());
    EXPECT_TRUE(call("dump-flows").ok());
    EXPECT_TRUE(call("show").ok());
    EXPECT_TRUE(call("trace", {"in_port=1,ip,nw_dst=10.0.0.2"}).ok());
    EXPECT_TRUE(call("del-flows", {"table=0,priority=10,ip,nw_dst=10.0.0.4"}).ok());
  }
  done = true;
  pmd.join();
  EXPECT_GT(sw().total_stats().rx_packets, 0u);
}

// ---- the sfctl binary -------------------------------------------------------------

struct ToolRun {
  int status = -1;
  std::string out;
  std::string err;
};

ToolRun run_sfctl(const std::string& dir, const std::string& args,
                  const std::string& stdin_file = "/dev/null") {
  const std::string err_file = dir + "/sfctl.stderr";
  const std::string cmd =
      std::string(SF_BINARY_DIR) + "/sfctl " + args + " <" + stdin_file + " 2>" + err_file;
  const test::CommandResult run = test::run_command(cmd);
  ToolRun r;
  r.status = run.status;
  r.out = run.output;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

TEST_F(ControlTest, SfctlBinary) {
  ASSERT_TRUE(fs::exists(std::string(SF_BINARY_DIR) + "/sfctl")) << "build the sfctl target";
  const std::string sock = "--socket " + path_ + " ";

  ToolRun r = run_sfctl(dir_, sock + "add-flow 'table=0,priority=7,ip,actions=output:2'");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");

  r = run_sfctl(dir_, sock + "add-flow 'table=0,ip,nw_dts=10.0.0.1,actions=drop'");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("sfctl: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("nw_dts"), std::string::npos) << r.err;

  r = run_sfctl(dir_, sock + "dump-flows");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, " table=0, n_packets=0, n_bytes=0, priority=7,ip actions=output:2\n");

  r = run_sfctl(dir_, sock + "--json dump-flows");
  ASSERT_EQ(r.status, 0) << r.err;
  Json j = Json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  ASSERT_TRUE(j.is_array());
  EXPECT_EQ(j[0]["priority"], 7);
  r = run_sfctl(dir_, sock + "show --json");  // options after the command too
  ASSERT_EQ(r.status, 0) << r.err;
  j = Json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["xdp"]["rx"], 40);

  // add-flows reads the file itself (and stdin for '-').
  std::ofstream(dir_ + "/bad.flows")
      << "table=0,ip,actions=drop\n\ntable=0,ip,nw_dts=1.2.3.4,actions=drop\n";
  r = run_sfctl(dir_, sock + "add-flows " + dir_ + "/bad.flows");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
  std::ofstream(dir_ + "/good.flows") << "table=0,priority=9,arp,actions=output:3\n";
  r = run_sfctl(dir_, sock + "add-flows -", dir_ + "/good.flows");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(sw().tables().rule_count(), 2u);
  r = run_sfctl(dir_, sock + "add-flows " + dir_ + "/missing.flows");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.flows"), std::string::npos) << r.err;

  r = run_sfctl(dir_, sock + "--metadata 1=5 trace in_port=1,ip");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("Datapath actions: output:2"), std::string::npos) << r.out;

  // Usage errors: exit 2, nothing sent.
  for (const char* usage :
       {"frobnicate", "show extra", "add-flows", "--metadata 0=1 trace ip", "--bogus show", ""}) {
    r = run_sfctl(dir_, sock + usage);
    EXPECT_EQ(r.status, 2) << usage << ": " << r.err;
    EXPECT_EQ(r.err.rfind("sfctl: ", 0), 0u) << usage << ": " << r.err;
  }
  r = run_sfctl(dir_, "--help");
  EXPECT_EQ(r.status, 0);
  for (const CommandSpec& spec : control_commands())
    EXPECT_NE(r.out.find(std::string(spec.name)), std::string::npos) << spec.name;

  r = run_sfctl(dir_, "--socket " + dir_ + "/none.sock show");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("cannot connect to softflowd at " + dir_ + "/none.sock"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace softflow

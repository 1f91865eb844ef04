// Unit tests of the conntrack service: packets built with PacketBuilder,
// parsed by parse_packet, fed straight to the service made by the registry.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "softflow/flow_key.h"
#include "softflow/packet_builder.h"
#include "softflow/parse.h"
#include "softflow/service.h"

namespace softflow {
namespace {

using nlohmann::json;

constexpr uint64_t kSec = 1'000'000'000ULL;

std::unique_ptr<Service> make_conntrack(const json& config = json::object()) {
  const std::optional<uint8_t> id = ServiceRegistry::instance().id_of("conntrack");
  if (!id) {
    ADD_FAILURE() << "conntrack is not registered";
    return nullptr;
  }
  return ServiceRegistry::instance().create(*id, config);
}

// Runs frames through the service as one batch with one argument; returns
// each packet's verdict.  Checks the service contract on every packet:
// bytes and key untouched except sf_metadata, which is 0 or 1, and
// sf_coalesce set exactly when the packet passes.
std::vector<bool> run_batch(Service& svc, const std::vector<std::vector<uint8_t>>& frames,
                            uint32_t arg, uint64_t ts) {
  std::vector<std::vector<uint8_t>> bufs = frames;
  std::vector<Packet> pkts(frames.size());
  std::vector<Packet*> batch;
  std::vector<FlowKey> before;
  for (size_t i = 0; i < frames.size(); ++i) {
    Packet& p = pkts[i];
    p.data = bufs[i].data();
    p.len = static_cast<uint32_t>(bufs[i].size());
    p.key = zero_key();
    p.key.sf_metadata = 7;  // whatever came before; the service must overwrite it
    p.key.sf_stage = 0;
    p.key.in_port = 1;
    parse_packet(p);
    p.timestamp_ns = ts;
    p.sf_argument = arg;
    before.push_back(p.key);
    batch.push_back(&p);
  }
  svc.process(batch, arg);
  std::vector<bool> out;
  for (size_t i = 0; i < frames.size(); ++i) {
    const Packet& p = pkts[i];
    EXPECT_EQ(bufs[i], frames[i]) << "conntrack changed the bytes of packet " << i;
    FlowKey k = p.key;
    k.sf_metadata = before[i].sf_metadata;
    EXPECT_TRUE(key_equal(k, before[i])) << "conntrack changed key fields of packet " << i;
    EXPECT_TRUE(p.key.sf_metadata == 0 || p.key.sf_metadata == 1) << p.key.sf_metadata;
    EXPECT_EQ(p.sf_coalesce, p.key.sf_metadata == 1) << "packet " << i;
    out.push_back(p.key.sf_metadata == 1);
  }
  return out;
}

bool pass(Service& svc, const std::vector<uint8_t>& frame, uint32_t arg, uint64_t ts = kSec) {
  return run_batch(svc, {frame}, arg, ts)[0];
}

uint64_t stat(const Service& svc, const std::string& name) {
  const json s = svc.stats();
  if (!s.contains(name)) {
    ADD_FAILURE() << "no counter '" << name << "' in " << s.dump();
    return ~0ULL;
  }
  return s.at(name).get<uint64_t>();
}

json dump(const Service& svc) {
  std::optional<json> d = svc.dump_connections();
  EXPECT_TRUE(d.has_value());
  return d ? *d : json::array();
}

// The only connection in the table (fails if there is not exactly one).
json only_connection(const Service& svc) {
  const json d = dump(svc);
  EXPECT_EQ(d.size(), 1u) << d.dump();
  return d.size() == 1 ? d[0] : json::object();
}

// Window scale option: NOP, kind 3, length 3, shift.
std::vector<uint8_t> wscale(uint8_t shift) { return {1, 3, 3, shift}; }

// A TCP conversation between a client and a server, IPv4 or IPv6.
struct TcpFlow {
  bool ipv6 = false;
  uint32_t client4 = ipv4_addr("10.0.0.1");
  uint32_t server4 = ipv4_addr("10.0.0.2");
  Ipv6Addr client6 = ipv6_addr("2001:db8::1");
  Ipv6Addr server6 = ipv6_addr("2001:db8::2");
  uint16_t cport = 40000;
  uint16_t sport = 80;

  std::vector<uint8_t> frame(bool from_client, uint16_t flags, uint32_t seq, uint32_t ack,
                             uint16_t window, std::string_view payload,
                             const std::vector<uint8_t>& options) const {
    PacketBuilder b;
    if (ipv6)
      b.ipv6(from_client ? client6 : server6, from_client ? server6 : client6);
    else
      b.ipv4(from_client ? client4 : server4, from_client ? server4 : client4);
    b.tcp(from_client ? cport : sport, from_client ? sport : cport, flags, seq, ack, window);
    if (!options.empty()) b.tcp_options(options);
    if (!payload.empty()) b.payload(payload);
    return b.build();
  }
  std::vector<uint8_t> c(uint16_t flags, uint32_t seq, uint32_t ack, std::string_view payload = "",
                         uint16_t window = 65535, const std::vector<uint8_t>& options = {}) const {
    return frame(true, flags, seq, ack, window, payload, options);
  }
  std::vector<uint8_t> s(uint16_t flags, uint32_t seq, uint32_t ack, std::string_view payload = "",
                         uint16_t window = 65535, const std::vector<uint8_t>& options = {}) const {
    return frame(false, flags, seq, ack, window, payload, options);
  }
  std::string client() const { return ipv6 ? "2001:db8::1" : "10.0.0.1"; }
  std::string server() const { return ipv6 ? "2001:db8::2" : "10.0.0.2"; }
};

constexpr uint16_t kSynAck = kTcpSyn | kTcpAck;
constexpr uint16_t kPshAck = kTcpPsh | kTcpAck;
constexpr uint16_t kFinAck = kTcpFin | kTcpAck;
constexpr uint16_t kRstAck = kTcpRst | kTcpAck;

// Client ISN 1000, server ISN 5000; the client is allowed (arg 1), the
// server's answers go through arg 0.
::testing::AssertionResult handshake(Service& svc, const TcpFlow& f, uint64_t ts = kSec) {
  if (!pass(svc, f.c(kTcpSyn, 1000, 0), 1, ts)) return ::testing::AssertionFailure() << "SYN";
  if (!pass(svc, f.s(kSynAck, 5000, 1001), 0, ts))
    return ::testing::AssertionFailure() << "SYN-ACK";
  if (!pass(svc, f.c(kTcpAck, 1001, 5001), 1, ts)) return ::testing::AssertionFailure() << "ACK";
  return ::testing::AssertionSuccess();
}

// ---- TCP, for IPv4 and IPv6 ---------------------------------------------------------

class ConntrackTcp : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    flow_.ipv6 = GetParam();
    svc_ = make_conntrack();
    ASSERT_NE(svc_, nullptr);
  }
  Service& svc() { return *svc_; }
  TcpFlow flow_;
  std::unique_ptr<Service> svc_;
};

TEST_P(ConntrackTcp, HandshakeAndDataBothWays) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1));
  EXPECT_EQ(only_connection(svc())["state"], "SYN_SENT");
  ASSERT_TRUE(pass(svc(), f.s(kSynAck, 5000, 1001), 0));
  EXPECT_EQ(only_connection(svc())["state"], "SYN_RECV");
  ASSERT_TRUE(pass(svc(), f.c(kTcpAck, 1001, 5001), 1));
  EXPECT_EQ(only_connection(svc())["state"], "ESTABLISHED");

  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, "GET / HTTP/1.0\r\n\r\n"), 1));
  EXPECT_TRUE(pass(svc(), f.s(kPshAck, 5001, 1019, "HTTP/1.0 200 OK\r\n\r\nhello"), 0));
  EXPECT_TRUE(pass(svc(), f.c(kTcpAck, 1019, 5025), 1));
  // The client's later packets may also come through arg 0 (existing connection).
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1019, 5025, "more"), 0));

  const json c = only_connection(svc());
  EXPECT_EQ(c["proto"], "tcp");
  EXPECT_EQ(c["src"], f.client());
  EXPECT_EQ(c["dst"], f.server());
  EXPECT_EQ(c["sport"], 40000);
  EXPECT_EQ(c["dport"], 80);
  EXPECT_EQ(c["orig"]["packets"], 5);
  EXPECT_EQ(c["reply"]["packets"], 2);
  EXPECT_EQ(stat(svc(), "created"), 1u);
  EXPECT_EQ(stat(svc(), "passed"), 7u);
  EXPECT_EQ(stat(svc(), "dropped"), 0u);
}

TEST_P(ConntrackTcp, DataBeforeTheHandshakeCompletesIsRefused) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1));
  EXPECT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1)) << "a retransmitted SYN passes";
  EXPECT_FALSE(pass(svc(), f.c(kPshAck, 1001, 5001, "early"), 1)) << "nothing to acknowledge yet";
  EXPECT_FALSE(pass(svc(), f.s(kPshAck, 5001, 1001, "early"), 0)) << "server data before SYN-ACK";
  EXPECT_FALSE(pass(svc(), f.s(kSynAck, 5000, 4242), 0)) << "SYN-ACK acknowledging the wrong seq";
  EXPECT_TRUE(pass(svc(), f.s(kSynAck, 5000, 1001), 0));
}

TEST_P(ConntrackTcp, FinCloseThenPortReuse) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(handshake(svc(), f));
  ASSERT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, "data"), 1));
  ASSERT_TRUE(pass(svc(), f.c(kFinAck, 1005, 5001), 1));
  EXPECT_EQ(only_connection(svc())["state"], "FIN_WAIT");
  ASSERT_TRUE(pass(svc(), f.s(kTcpAck, 5001, 1006), 0));
  EXPECT_EQ(only_connection(svc())["state"], "FIN_WAIT");
  ASSERT_TRUE(pass(svc(), f.s(kFinAck, 5001, 1006), 0));
  EXPECT_EQ(only_connection(svc())["state"], "LAST_ACK");
  ASSERT_TRUE(pass(svc(), f.c(kTcpAck, 1006, 5002), 1));
  json c = only_connection(svc());
  EXPECT_EQ(c["state"], "TIME_WAIT");
  EXPECT_EQ(c["timeout_s"], 45);

  // Port reuse: a new SYN (new ISN) on the same 5-tuple opens a new connection.
  EXPECT_TRUE(pass(svc(), f.c(kTcpSyn, 900000, 0), 1));
  c = only_connection(svc());
  EXPECT_EQ(c["state"], "SYN_SENT");
  EXPECT_EQ(c["orig"]["packets"], 1);
  EXPECT_EQ(stat(svc(), "reopened"), 1u);
  EXPECT_EQ(stat(svc(), "created"), 2u);
  EXPECT_TRUE(pass(svc(), f.s(kSynAck, 77, 900001), 0));
  EXPECT_TRUE(pass(svc(), f.c(kTcpAck, 900001, 78), 1));
  EXPECT_EQ(only_connection(svc())["state"], "ESTABLISHED");
}

TEST_P(ConntrackTcp, ServerClosesFirst) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(handshake(svc(), f));
  ASSERT_TRUE(pass(svc(), f.s(kFinAck, 5001, 1001), 0));
  EXPECT_EQ(only_connection(svc())["state"], "CLOSE_WAIT");
  EXPECT_EQ(only_connection(svc())["timeout_s"], 15 * 60);
  ASSERT_TRUE(pass(svc(), f.c(kFinAck, 1001, 5002), 1));
  EXPECT_EQ(only_connection(svc())["state"], "LAST_ACK");
  ASSERT_TRUE(pass(svc(), f.s(kTcpAck, 5002, 1002), 0));
  EXPECT_EQ(only_connection(svc())["state"], "TIME_WAIT");
}

TEST_P(ConntrackTcp, RstClosesThenPortReuse) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(handshake(svc(), f));
  ASSERT_TRUE(pass(svc(), f.s(kRstAck, 5001, 1001), 0));
  json c = only_connection(svc());
  EXPECT_EQ(c["state"], "CLOSED");
  EXPECT_EQ(c["timeout_s"], 30);
  // A SYN through arg 0 may not reopen it; through arg 1 it may.
  EXPECT_FALSE(pass(svc(), f.c(kTcpSyn, 424242, 0), 0));
  EXPECT_TRUE(pass(svc(), f.c(kTcpSyn, 424242, 0), 1));
  EXPECT_EQ(only_connection(svc())["state"], "SYN_SENT");
  EXPECT_EQ(stat(svc(), "reopened"), 1u);
}

TEST_P(ConntrackTcp, RstAnsweringASynClosesTheAttempt) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1));
  EXPECT_FALSE(pass(svc(), f.s(kRstAck, 0, 999), 0)) << "does not acknowledge the SYN";
  EXPECT_TRUE(pass(svc(), f.s(kRstAck, 0, 1001), 0));
  EXPECT_EQ(only_connection(svc())["state"], "CLOSED");
}

// The example: SYN seq 1000, SYN-ACK seq 5000 ack 1001 window 256
// (no scaling), then client data at seq 101001: far beyond the 256 bytes
// the server allowed.
TEST_P(ConntrackTcp, DataOutsideTheWindowIsDropped) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1));
  ASSERT_TRUE(pass(svc(), f.s(kSynAck, 5000, 1001, "", 256), 0));
  EXPECT_FALSE(pass(svc(), f.c(kPshAck, 101001, 5001, "data"), 1));
  EXPECT_EQ(stat(svc(), "out_of_window"), 1u);
  // In-window data still passes, up to the 256 bytes granted and no more.
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, std::string(256, 'x')), 1));
  EXPECT_FALSE(pass(svc(), f.c(kPshAck, 1257, 5001, "y"), 1));
  // The server acknowledges and opens its window: now it fits.
  EXPECT_TRUE(pass(svc(), f.s(kTcpAck, 5001, 1257, "", 256), 0));
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1257, 5001, "y"), 1));
  EXPECT_EQ(stat(svc(), "out_of_window"), 2u);
}

TEST_P(ConntrackTcp, AckOfUnsentDataIsDropped) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(handshake(svc(), f));
  EXPECT_FALSE(pass(svc(), f.c(kTcpAck, 1001, 5001 + 100000), 1));
  EXPECT_FALSE(pass(svc(), f.c(kTcpAck, 1001, 5001 - 1000000), 1));
  EXPECT_TRUE(pass(svc(), f.c(kTcpAck, 1001, 5001), 1));
  EXPECT_EQ(stat(svc(), "out_of_window"), 2u);
}

TEST_P(ConntrackTcp, RstFarOutsideTheWindowDoesNotClose) {
  const TcpFlow& f = flow_;
  ASSERT_TRUE(handshake(svc(), f));
  EXPECT_FALSE(pass(svc(), f.s(kRstAck, 5001 + 50'000'000, 1001), 0));
  EXPECT_FALSE(pass(svc(), f.s(kTcpRst, 5001 - 50'000'000, 0), 0));
  EXPECT_EQ(only_connection(svc())["state"], "ESTABLISHED");
  EXPECT_EQ(stat(svc(), "out_of_window"), 2u);
  // Still open both ways.
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, "still here"), 1));
  EXPECT_TRUE(pass(svc(), f.s(kPshAck, 5001, 1011, "me too"), 0));
  // An in-window RST closes it.
  EXPECT_TRUE(pass(svc(), f.s(kTcpRst, 5007, 0), 0));
  EXPECT_EQ(only_connection(svc())["state"], "CLOSED");
}

TEST_P(ConntrackTcp, SynAckAckAndDataForUnknownConnectionsAreRefused) {
  const TcpFlow& f = flow_;
  for (uint32_t arg : {0u, 1u}) {
    EXPECT_FALSE(pass(svc(), f.s(kSynAck, 5000, 1001), arg));
    EXPECT_FALSE(pass(svc(), f.c(kTcpAck, 1001, 5001), arg));
    EXPECT_FALSE(pass(svc(), f.c(kPshAck, 1001, 5001, "data"), arg));
    EXPECT_FALSE(pass(svc(), f.c(kFinAck, 1001, 5001), arg));
    EXPECT_FALSE(pass(svc(), f.c(kRstAck, 1001, 5001), arg));
  }
  EXPECT_FALSE(pass(svc(), f.c(kTcpSyn, 1000, 0), 0)) << "a SYN through arg 0 opens nothing";
  EXPECT_EQ(dump(svc()).size(), 0u);
  EXPECT_EQ(stat(svc(), "refused_no_connection"), 11u);
  EXPECT_EQ(stat(svc(), "created"), 0u);
}

// Only the client side is allowed (arg 1 for client -> server:80); the
// server's SYN towards the client comes through arg 0 and must not open.
TEST_P(ConntrackTcp, ReverseInitiatedConnectionIsRefused) {
  const TcpFlow& f = flow_;
  EXPECT_FALSE(pass(svc(), f.s(kTcpSyn, 5000, 0), 0));
  EXPECT_FALSE(pass(svc(), f.c(kSynAck, 1000, 5001), 1)) << "the client cannot complete it either";
  EXPECT_EQ(dump(svc()).size(), 0u);
  // The allowed direction still works on the same 5-tuple.
  EXPECT_TRUE(handshake(svc(), f));
}

TEST_P(ConntrackTcp, InvalidFlagCombinationsAreRefused) {
  const TcpFlow& f = flow_;
  const std::vector<std::pair<std::string, uint16_t>> bad = {
      {"SYN+FIN", kTcpSyn | kTcpFin},
      {"SYN+RST", kTcpSyn | kTcpRst},
      {"SYN+ACK+FIN", kTcpSyn | kTcpAck | kTcpFin},
      {"no flags", 0},
      {"FIN without ACK", kTcpFin},
      {"PSH without ACK", kTcpPsh},
      {"URG without ACK", kTcpUrg},
      {"FIN+PSH+URG (xmas)", kTcpFin | kTcpPsh | kTcpUrg},
      {"RST+FIN without ACK", kTcpRst | kTcpFin},
  };
  // As the first packet of a connection: nothing is created.
  for (const auto& [name, flags] : bad) EXPECT_FALSE(pass(svc(), f.c(flags, 1000, 0), 1)) << name;
  EXPECT_EQ(dump(svc()).size(), 0u);
  // Inside an established connection, with otherwise fine numbers.
  ASSERT_TRUE(handshake(svc(), f));
  for (const auto& [name, flags] : bad)
    EXPECT_FALSE(pass(svc(), f.c(flags, 1001, 5001), 1)) << name;
  EXPECT_EQ(only_connection(svc())["state"], "ESTABLISHED");
  EXPECT_EQ(stat(svc(), "invalid_tcp_flags"), 2 * bad.size());
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, "ok"), 1));
}

// Client and server both offer window scaling (shift 7); the server then
// advertises a raw window of 1000, i.e. 128000 bytes.  A segment 60000 bytes
// ahead fits only if the scale is honoured.
TEST_P(ConntrackTcp, WindowScalingOnlyWhenBothOffer) {
  for (const bool server_offers : {true, false}) {
    SCOPED_TRACE(server_offers ? "both offer" : "only the client offers");
    svc_ = make_conntrack();
    const TcpFlow& f = flow_;
    const std::vector<uint8_t> server_opt = server_offers ? wscale(7) : std::vector<uint8_t>{};
    ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0, "", 65535, wscale(7)), 1));
    ASSERT_TRUE(pass(svc(), f.s(kSynAck, 5000, 1001, "", 1000, server_opt), 0));
    ASSERT_TRUE(pass(svc(), f.c(kTcpAck, 1001, 5001, "", 1000), 1));
    ASSERT_TRUE(pass(svc(), f.s(kTcpAck, 5001, 1001, "", 1000), 0));
    EXPECT_EQ(pass(svc(), f.c(kPshAck, 1001 + 60000, 5001, "beyond 1000, within 128000"), 1),
              server_offers);
    // Within the unscaled window it passes either way.
    EXPECT_TRUE(pass(svc(), f.c(kPshAck, 1001, 5001, "near"), 1));
  }
}

// Retransmissions up to one window back pass; older ones do not.
TEST_P(ConntrackTcp, RetransmissionWithinOneWindowPasses) {
  const TcpFlow& f = flow_;
  // The server's window is 1000 bytes throughout.
  ASSERT_TRUE(pass(svc(), f.c(kTcpSyn, 1000, 0), 1));
  ASSERT_TRUE(pass(svc(), f.s(kSynAck, 5000, 1001, "", 1000), 0));
  ASSERT_TRUE(pass(svc(), f.c(kTcpAck, 1001, 5001), 1));
  const std::string chunk(400, 'd');
  uint32_t seq = 1001;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pass(svc(), f.c(kPshAck, seq, 5001, chunk), 1)) << i;
    seq += 400;
    ASSERT_TRUE(pass(svc(), f.s(kTcpAck, 5001, seq, "", 1000), 0)) << i;
  }
  // seq is now 3001: the last segment (2601) is within one window back ...
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 2601, 5001, chunk), 1));
  EXPECT_TRUE(pass(svc(), f.c(kPshAck, 2201, 5001, chunk), 1));
  // ... the first one (1001, 2000 bytes back) is not.
  EXPECT_FALSE(pass(svc(), f.c(kPshAck, 1001, 5001, chunk), 1));
  EXPECT_EQ(stat(svc(), "out_of_window"), 1u);
  EXPECT_EQ(only_connection(svc())["state"], "ESTABLISHED");
}

TEST_P(ConntrackTcp, EstablishedExpiresAfterItsTimeout) {
  const TcpFlow& f = flow_;
  const uint64_t t0 = 10 * kSec;
  ASSERT_TRUE(handshake(svc(), f, t0));
  EXPECT_EQ(only_connection(svc())["timeout_s"], 24 * 3600);
  const uint64_t t1 = t0 + 24 * 3600 * kSec - kSec;
  EXPECT_TRUE(pass(svc(), f.s(kPshAck, 5001, 1001, "late but alive"), 0, t1));
  const uint64_t t2 = t1 + 24 * 3600 * kSec + kSec;
  EXPECT_FALSE(pass(svc(), f.s(kPshAck, 5015, 1001, "too late"), 0, t2));
  EXPECT_FALSE(pass(svc(), f.c(kPshAck, 1001, 5015, "too late"), 1, t2)) << "strict: no pick-up";
  EXPECT_EQ(dump(svc()).size(), 0u);
  // Other traffic lets the sweep find and free it.
  for (int i = 0; i < 100 && stat(svc(), "connections") > 0; ++i)
    EXPECT_FALSE(pass(svc(), f.s(kPshAck, 5015, 1001, "x"), 0, t2));
  EXPECT_EQ(stat(svc(), "connections"), 0u) << "the sweep reclaimed it";
  EXPECT_EQ(stat(svc(), "expired"), 1u);
}

TEST_P(ConntrackTcp, TimeWaitExpires) {
  const TcpFlow& f = flow_;
  const uint64_t t0 = 100 * kSec;
  ASSERT_TRUE(handshake(svc(), f, t0));
  ASSERT_TRUE(pass(svc(), f.c(kFinAck, 1001, 5001), 1, t0));
  ASSERT_TRUE(pass(svc(), f.s(kFinAck, 5001, 1002), 0, t0));
  ASSERT_TRUE(pass(svc(), f.c(kTcpAck, 1002, 5002), 1, t0));
  ASSERT_EQ(only_connection(svc())["state"], "TIME_WAIT");
  // A retransmitted last ACK inside TIME_WAIT passes (and restarts the timer).
  EXPECT_TRUE(pass(svc(), f.c(kTcpAck, 1002, 5002), 0, t0 + 44 * kSec));
  EXPECT_FALSE(pass(svc(), f.c(kTcpAck, 1002, 5002), 0, t0 + 90 * kSec));
  EXPECT_EQ(dump(svc()).size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Conntrack, ConntrackTcp, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "Ipv6" : "Ipv4";
                         });

// ---- loose mid-stream pick-up -------------------------------------------------------

TEST(ConntrackMidstream, LoosePolicyPicksUpAllowedPackets) {
  auto strict = make_conntrack();
  auto loose = make_conntrack({{"tcp_midstream", "loose"}});
  ASSERT_NE(loose, nullptr);
  TcpFlow f;
  const auto data = f.c(kPshAck, 777000, 99000, "mid-stream");
  EXPECT_FALSE(pass(*strict, data, 1));
  EXPECT_FALSE(pass(*loose, data, 0)) << "arg 0 never creates";
  EXPECT_FALSE(pass(*loose, f.s(kSynAck, 99000, 777000), 1)) << "a SYN-ACK is not picked up";
  EXPECT_FALSE(pass(*loose, f.c(kRstAck, 777000, 99000), 1)) << "nor an RST";
  ASSERT_TRUE(pass(*loose, data, 1));
  EXPECT_EQ(only_connection(*loose)["state"], "ESTABLISHED");
  EXPECT_TRUE(pass(*loose, f.c(kPshAck, 777010, 99000, "more"), 1));
  EXPECT_TRUE(pass(*loose, f.s(kPshAck, 99000, 777014, "reply"), 0));
  EXPECT_TRUE(pass(*loose, f.c(kTcpAck, 777014, 99005), 0));
  // Once both sides are known the windows are checked again.
  EXPECT_FALSE(pass(*loose, f.c(kTcpAck, 777014, 99005 + 1000000), 0));
  EXPECT_FALSE(pass(*loose, f.s(kTcpRst, 99005 + 0x70000000u, 0), 0));
  EXPECT_EQ(only_connection(*loose)["state"], "ESTABLISHED");
  EXPECT_EQ(stat(*loose, "created"), 1u);
}

// ---- UDP and other protocols ------------------------------------------------------------

std::vector<uint8_t> udp4(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                          std::string_view payload = "udp") {
  return PacketBuilder()
      .ipv4(ipv4_addr(src), ipv4_addr(dst))
      .udp(sport, dport)
      .payload(payload)
      .build();
}
std::vector<uint8_t> udp6(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                          std::string_view payload = "udp") {
  return PacketBuilder()
      .ipv6(ipv6_addr(src), ipv6_addr(dst))
      .udp(sport, dport)
      .payload(payload)
      .build();
}

TEST(ConntrackUdp, ReplyPassesOthersDoNot) {
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    auto svc = make_conntrack();
    const char* a = v6 ? "2001:db8::a" : "10.0.0.1";
    const char* b = v6 ? "2001:db8::b" : "10.0.0.2";
    const char* c = v6 ? "2001:db8::c" : "10.0.0.3";
    auto udp = [v6](const char* s, const char* d, uint16_t sp, uint16_t dp,
                    std::string_view payload = "udp") {
      return v6 ? udp6(s, d, sp, dp, payload) : udp4(s, d, sp, dp, payload);
    };
    EXPECT_FALSE(pass(*svc, udp(b, a, 53, 5353), 0)) << "no connection yet";
    ASSERT_TRUE(pass(*svc, udp(a, b, 5353, 53, "query"), 1));
    EXPECT_EQ(only_connection(*svc)["state"], "FIRST");
    EXPECT_EQ(only_connection(*svc)["timeout_s"], 60);
    EXPECT_TRUE(pass(*svc, udp(a, b, 5353, 53, "again"), 0));
    EXPECT_EQ(only_connection(*svc)["state"], "SINGLE");
    EXPECT_TRUE(pass(*svc, udp(b, a, 53, 5353, "answer"), 0));
    EXPECT_FALSE(pass(*svc, udp(c, a, 53, 5353), 0)) << "another host";
    EXPECT_FALSE(pass(*svc, udp(b, a, 54, 5353), 0)) << "another port";
    const json conn = only_connection(*svc);
    EXPECT_EQ(conn["proto"], "udp");
    EXPECT_EQ(conn["src"], a);
    EXPECT_EQ(conn["dst"], b);
    EXPECT_EQ(conn["sport"], 5353);
    EXPECT_EQ(conn["dport"], 53);
    EXPECT_EQ(conn["state"], "MULTIPLE");
    EXPECT_EQ(conn["timeout_s"], 30);
    EXPECT_EQ(conn["orig"]["packets"], 2);
    EXPECT_EQ(conn["reply"]["packets"], 1);
    EXPECT_EQ(stat(*svc, "refused_no_connection"), 3u);
  }
}

// One flow seen one way only (udp_first, 60 s) and one seen both ways
// (udp_multiple, 30 s): 40 s later only the first is still there.
TEST(ConntrackUdp, FirstOutlivesMultiple) {
  auto svc = make_conntrack();
  const uint64_t t0 = 5 * kSec;
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", 1000, 2000), 1, t0));
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.3", 1000, 2000), 1, t0));
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.3", "10.0.0.1", 2000, 1000), 0, t0));
  const uint64_t t1 = t0 + 40 * kSec;
  EXPECT_TRUE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 2000, 1000), 0, t1)) << "first: 60 s";
  EXPECT_FALSE(pass(*svc, udp4("10.0.0.3", "10.0.0.1", 2000, 1000), 0, t1)) << "multiple: 30 s";
}

TEST(ConntrackUdp, ConfiguredTimeoutsApply) {
  auto svc = make_conntrack({{"timeouts", {{"udp_first", 2}, {"udp_multiple", 0.5}}}});
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", 1, 2), 1, 10 * kSec));
  EXPECT_EQ(only_connection(*svc)["timeout_s"], 2);
  EXPECT_TRUE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 2, 1), 0, 11 * kSec));
  EXPECT_TRUE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 2, 1), 0, 11 * kSec + kSec / 4));
  EXPECT_FALSE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 2, 1), 0, 12 * kSec));
}

TEST(ConntrackOther, OtherProtocolsAreTrackedByAddressPair) {
  auto svc = make_conntrack();
  auto gre = [](const char* s, const char* d) {
    return PacketBuilder().ipv4(ipv4_addr(s), ipv4_addr(d)).ip_proto(47).payload("gre").build();
  };
  EXPECT_FALSE(pass(*svc, gre("10.0.0.2", "10.0.0.1"), 0));
  ASSERT_TRUE(pass(*svc, gre("10.0.0.1", "10.0.0.2"), 1));
  EXPECT_TRUE(pass(*svc, gre("10.0.0.2", "10.0.0.1"), 0));
  const json c = only_connection(*svc);
  EXPECT_EQ(c["proto"], "47");
  EXPECT_EQ(c["state"], "MULTIPLE");
  EXPECT_EQ(c["timeout_s"], 30);
}

// ---- ICMP ---------------------------------------------------------------------------------

std::vector<uint8_t> echo4(const char* src, const char* dst, bool request, uint16_t id,
                           uint16_t seq) {
  return PacketBuilder()
      .ipv4(ipv4_addr(src), ipv4_addr(dst))
      .icmp(request ? 8 : 0, 0, static_cast<uint32_t>(id) << 16 | seq)
      .payload("ping")
      .build();
}
std::vector<uint8_t> echo6(const char* src, const char* dst, bool request, uint16_t id,
                           uint16_t seq) {
  return PacketBuilder()
      .ipv6(ipv6_addr(src), ipv6_addr(dst))
      .icmpv6(request ? 128 : 129, 0, static_cast<uint32_t>(id) << 16 | seq)
      .payload("ping")
      .build();
}

TEST(ConntrackIcmp, EchoRequestAndReply) {
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "ICMPv6" : "ICMP");
    auto svc = make_conntrack();
    auto echo = v6 ? echo6 : echo4;
    const char* a = v6 ? "2001:db8::a" : "10.0.0.1";
    const char* b = v6 ? "2001:db8::b" : "10.0.0.2";
    EXPECT_FALSE(pass(*svc, echo(b, a, false, 7, 1), 0)) << "reply without a request";
    EXPECT_FALSE(pass(*svc, echo(b, a, false, 7, 1), 1)) << "even when allowed";
    EXPECT_FALSE(pass(*svc, echo(a, b, true, 7, 1), 0)) << "a request through arg 0";
    ASSERT_TRUE(pass(*svc, echo(a, b, true, 7, 1), 1));
    EXPECT_EQ(only_connection(*svc)["state"], "REQUESTED");
    EXPECT_EQ(only_connection(*svc)["timeout_s"], 60);
    EXPECT_TRUE(pass(*svc, echo(b, a, false, 7, 1), 0));
    EXPECT_FALSE(pass(*svc, echo(b, a, false, 8, 1), 0)) << "another id";
    EXPECT_FALSE(pass(*svc, echo(b, a, true, 7, 1), 0)) << "b pinging a is another exchange";
    EXPECT_TRUE(pass(*svc, echo(a, b, true, 7, 2), 0)) << "next request of the same exchange";
    const json c = only_connection(*svc);
    EXPECT_EQ(c["proto"], v6 ? "icmpv6" : "icmp");
    EXPECT_EQ(c["src"], a);
    EXPECT_EQ(c["dst"], b);
    EXPECT_EQ(c["id"], 7);
    EXPECT_EQ(c["state"], "REPLIED");
    EXPECT_EQ(c["timeout_s"], 30);
    EXPECT_EQ(c["orig"]["packets"], 2);
    EXPECT_EQ(c["reply"]["packets"], 1);
  }
}

// The IP header and first 8 L4 bytes of 'frame' (what an ICMP error quotes),
// or 'keep' bytes of it.
std::vector<uint8_t> quote(const std::vector<uint8_t>& frame, size_t keep) {
  return std::vector<uint8_t>(frame.begin() + 14,
                              frame.begin() + 14 + std::min(keep, frame.size() - 14));
}
std::vector<uint8_t> icmp4_error(const char* src, const char* dst, uint8_t type, uint8_t code,
                                 const std::vector<uint8_t>& quoted) {
  return PacketBuilder()
      .ipv4(ipv4_addr(src), ipv4_addr(dst))
      .icmp(type, code, 0)
      .payload(quoted)
      .build();
}
std::vector<uint8_t> icmp6_error(const char* src, const char* dst, uint8_t type, uint8_t code,
                                 const std::vector<uint8_t>& quoted) {
  return PacketBuilder()
      .ipv6(ipv6_addr(src), ipv6_addr(dst))
      .icmpv6(type, code, 0)
      .payload(quoted)
      .build();
}

TEST(ConntrackIcmp, PortUnreachableQuotingATrackedUdpFlowIsRelated) {
  auto svc = make_conntrack();
  const auto query = udp4("10.0.0.1", "10.0.0.2", 5353, 53, "query");
  ASSERT_TRUE(pass(*svc, query, 1));
  // From the server, or from a router on the way: both are related.
  EXPECT_TRUE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, quote(query, 28)), 0));
  EXPECT_TRUE(pass(*svc, icmp4_error("192.0.2.1", "10.0.0.1", 11, 0, quote(query, 28)), 0));
  // Whole quoted datagram: fine too.
  EXPECT_TRUE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, quote(query, 9999)), 0));
  // The reply direction of the flow, quoted in an error sent to the server.
  const auto answer = udp4("10.0.0.2", "10.0.0.1", 53, 5353, "answer");
  ASSERT_TRUE(pass(*svc, answer, 0));
  EXPECT_TRUE(pass(*svc, icmp4_error("10.0.0.1", "10.0.0.2", 3, 3, quote(answer, 28)), 0));
  EXPECT_EQ(stat(*svc, "related"), 4u);

  // Quoting an unknown flow, sent to the wrong host, or not an error at all.
  const auto other = udp4("10.0.0.1", "10.0.0.2", 5354, 53, "query");
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, quote(other, 28)), 0));
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.9", 3, 3, quote(query, 28)), 0));
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 5, 0, quote(query, 28)), 0))
      << "redirects are not related errors";
  EXPECT_EQ(stat(*svc, "related"), 4u);
}

TEST(ConntrackIcmp, TruncatedOrLyingQuotesAreRefusedSafely) {
  auto svc = make_conntrack();
  const auto query = udp4("10.0.0.1", "10.0.0.2", 5353, 53, "query");
  ASSERT_TRUE(pass(*svc, query, 1));
  for (size_t keep = 0; keep < 28; ++keep)
    EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, quote(query, keep)), 0))
        << keep;
  // An IHL claiming 60 bytes in a 28-byte quote; a bad version; a quoted
  // later fragment.
  std::vector<uint8_t> q = quote(query, 28);
  q[0] = 0x4f;
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, q), 0));
  q = quote(query, 28);
  q[0] = 0x65;
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, q), 0));
  q = quote(query, 28);
  q[7] = 0x10;
  EXPECT_FALSE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, q), 0));
  EXPECT_EQ(stat(*svc, "related"), 0u);
  // An ICMP error cut inside its own header is malformed.
  auto cut = icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, quote(query, 28));
  cut.resize(14 + 20 + 4);
  EXPECT_FALSE(pass(*svc, cut, 0));
}

TEST(ConntrackIcmp, ErrorsQuotingTcpAndEchoAreRelated) {
  auto svc = make_conntrack();
  TcpFlow f;
  const auto syn = f.c(kTcpSyn, 1000, 0);
  ASSERT_TRUE(pass(*svc, syn, 1));
  EXPECT_TRUE(pass(*svc, icmp4_error("10.0.0.2", "10.0.0.1", 3, 1, quote(syn, 28)), 0));
  const auto ping = echo4("10.0.0.1", "10.0.0.7", true, 99, 1);
  ASSERT_TRUE(pass(*svc, ping, 1));
  EXPECT_TRUE(pass(*svc, icmp4_error("192.0.2.1", "10.0.0.1", 11, 0, quote(ping, 28)), 0));
  const auto unknown_ping = echo4("10.0.0.1", "10.0.0.7", true, 100, 1);
  EXPECT_FALSE(pass(*svc, icmp4_error("192.0.2.1", "10.0.0.1", 11, 0, quote(unknown_ping, 28)), 0));
}

TEST(ConntrackIcmp, Icmpv6ErrorQuotingATrackedFlowIsRelated) {
  auto svc = make_conntrack();
  const auto query = udp6("2001:db8::a", "2001:db8::b", 5353, 53, "query");
  ASSERT_TRUE(pass(*svc, query, 1));
  EXPECT_TRUE(pass(*svc, icmp6_error("2001:db8::b", "2001:db8::a", 1, 4, quote(query, 48)), 0));
  EXPECT_TRUE(pass(*svc, icmp6_error("2001:db8::99", "2001:db8::a", 3, 0, quote(query, 48)), 0));
  EXPECT_TRUE(pass(*svc, icmp6_error("2001:db8::99", "2001:db8::a", 2, 0, quote(query, 9999)), 0));
  const auto other = udp6("2001:db8::a", "2001:db8::b", 5353, 54, "query");
  EXPECT_FALSE(pass(*svc, icmp6_error("2001:db8::b", "2001:db8::a", 1, 4, quote(other, 48)), 0));
  for (size_t keep = 0; keep < 48; ++keep)
    EXPECT_FALSE(pass(*svc, icmp6_error("2001:db8::b", "2001:db8::a", 1, 4, quote(query, keep)), 0))
        << keep;
  // A quoted packet with an extension header before UDP.
  const auto with_ext = PacketBuilder()
                            .ipv6(ipv6_addr("2001:db8::a"), ipv6_addr("2001:db8::b"))
                            .ipv6_dest_options(16)
                            .udp(5353, 53)
                            .payload("query")
                            .build();
  ASSERT_TRUE(pass(*svc, with_ext, 0)) << "the same flow";
  EXPECT_TRUE(pass(*svc, icmp6_error("2001:db8::b", "2001:db8::a", 1, 4, quote(with_ext, 64)), 0));
  EXPECT_FALSE(pass(*svc, icmp6_error("2001:db8::b", "2001:db8::a", 1, 4, quote(with_ext, 60)), 0))
      << "cut inside the quoted UDP header";
  EXPECT_EQ(stat(*svc, "related"), 4u);
}

// ---- what cannot be tracked ----------------------------------------------------------------

TEST(ConntrackInvalid, NonIpMalformedAndFragments) {
  auto svc = make_conntrack();
  const auto arp =
      PacketBuilder()
          .arp(1, mac("02:00:00:00:00:01"), ipv4_addr("10.0.0.1"), MacAddr{}, ipv4_addr("10.0.0.2"))
          .build();
  EXPECT_FALSE(pass(*svc, arp, 1));
  auto truncated = udp4("10.0.0.1", "10.0.0.2", 1, 2);
  truncated.resize(14 + 20 + 4);  // UDP header cut short
  EXPECT_FALSE(pass(*svc, truncated, 1));
  EXPECT_FALSE(pass(*svc, std::vector<uint8_t>{1, 2, 3}, 1));
  EXPECT_EQ(stat(*svc, "invalid"), 3u);

  const auto later = PacketBuilder()
                         .ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("10.0.0.2"))
                         .ipv4_fragment(10, false)
                         .ip_proto(17)
                         .payload("rest of a datagram")
                         .build();
  EXPECT_FALSE(pass(*svc, later, 1));
  const auto later6 = PacketBuilder()
                          .ipv6(ipv6_addr("2001:db8::a"), ipv6_addr("2001:db8::b"))
                          .ipv6_fragment(10, false)
                          .ip_proto(17)
                          .payload("rest of a datagram")
                          .build();
  EXPECT_FALSE(pass(*svc, later6, 1));
  EXPECT_EQ(stat(*svc, "fragments"), 2u);
  EXPECT_EQ(dump(*svc).size(), 0u);
}

// ---- the table -------------------------------------------------------------------------------

TEST(ConntrackTable, FullTableRefusesNewConnectionsOnly) {
  auto svc = make_conntrack({{"max_connections", 4}});
  ASSERT_NE(svc, nullptr);
  const uint64_t t0 = kSec;
  std::vector<std::vector<uint8_t>> first;
  for (uint16_t i = 0; i < 5; ++i) first.push_back(udp4("10.0.0.1", "10.0.0.2", 1000 + i, 53));
  const std::vector<bool> v = run_batch(*svc, first, 1, t0);
  EXPECT_EQ(v, (std::vector<bool>{true, true, true, true, false}));
  EXPECT_EQ(stat(*svc, "refused_full"), 1u);
  EXPECT_EQ(stat(*svc, "connections"), 4u);
  // The existing ones keep working, both ways; the fifth keeps being refused.
  for (uint16_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", 1000 + i, 53), 1, t0 + kSec)) << i;
    EXPECT_TRUE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 53, 1000 + i), 0, t0 + kSec)) << i;
  }
  EXPECT_FALSE(pass(*svc, first[4], 1, t0 + kSec));
  EXPECT_FALSE(pass(*svc, udp4("10.0.0.2", "10.0.0.1", 53, 1004), 0, t0 + kSec));
  EXPECT_EQ(stat(*svc, "refused_full"), 2u);
  EXPECT_EQ(stat(*svc, "connections"), 4u);
  // Once they expire (udp_multiple: 30 s), new connections are admitted.
  const uint64_t t1 = t0 + kSec + 31 * kSec;
  for (uint16_t i = 10; i < 14; ++i)
    EXPECT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", 1000 + i, 53), 1, t1)) << i;
  EXPECT_FALSE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", 2000, 53), 1, t1));
  EXPECT_EQ(stat(*svc, "connections"), 4u);
  EXPECT_EQ(stat(*svc, "expired"), 4u);
  EXPECT_EQ(stat(*svc, "refused_full"), 3u);
}

TEST(ConntrackTable, ExpiredConnectionsAreReclaimedByTheSweep) {
  auto svc = make_conntrack();
  for (uint16_t i = 0; i < 1000; ++i)
    ASSERT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.2", i, 53), 1, kSec));
  EXPECT_EQ(stat(*svc, "connections"), 1000u);
  // Later traffic on one flow alone returns the memory of the others, a
  // bounded amount per batch.
  const uint64_t later = 100 * kSec;
  int calls = 0;
  for (; calls < 1000 && stat(*svc, "connections") > 1; ++calls)
    pass(*svc, udp4("10.0.0.5", "10.0.0.6", 7, 7), 1, later);
  // One packet per call: 12 steps each; 1000 connections and 128 shards.
  EXPECT_LE(calls, 200);
  EXPECT_EQ(stat(*svc, "connections"), 1u);
  EXPECT_EQ(stat(*svc, "expired"), 1000u);
}

TEST(ConntrackTable, DumpAndFlush) {
  auto svc = make_conntrack();
  TcpFlow f;
  const uint64_t t = 1000 * kSec;
  ASSERT_TRUE(handshake(*svc, f, t));
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.1", "10.0.0.3", 5000, 6000, "12345"), 1, t));
  ASSERT_TRUE(pass(*svc, echo4("10.0.0.1", "10.0.0.4", true, 3, 1), 1, t));
  ASSERT_TRUE(pass(*svc, echo4("10.0.0.4", "10.0.0.1", false, 3, 1), 0, t));

  std::map<std::string, json> by_proto;
  for (const json& c : dump(*svc)) by_proto[c["proto"].get<std::string>()] = c;
  ASSERT_EQ(by_proto.size(), 3u);
  const auto tcp_syn_len = f.c(kTcpSyn, 1000, 0).size();
  const auto tcp_ack_len = f.c(kTcpAck, 1001, 5001).size();
  const auto tcp_synack_len = f.s(kSynAck, 5000, 1001).size();
  EXPECT_EQ(by_proto["tcp"], (json{{"proto", "tcp"},
                                   {"src", "10.0.0.1"},
                                   {"dst", "10.0.0.2"},
                                   {"sport", 40000},
                                   {"dport", 80},
                                   {"state", "ESTABLISHED"},
                                   {"timeout_s", 86400},
                                   {"orig", {{"packets", 2}, {"bytes", tcp_syn_len + tcp_ack_len}}},
                                   {"reply", {{"packets", 1}, {"bytes", tcp_synack_len}}}}));
  const auto udp_len = udp4("10.0.0.1", "10.0.0.3", 5000, 6000, "12345").size();
  EXPECT_EQ(by_proto["udp"], (json{{"proto", "udp"},
                                   {"src", "10.0.0.1"},
                                   {"dst", "10.0.0.3"},
                                   {"sport", 5000},
                                   {"dport", 6000},
                                   {"state", "FIRST"},
                                   {"timeout_s", 60},
                                   {"orig", {{"packets", 1}, {"bytes", udp_len}}},
                                   {"reply", {{"packets", 0}, {"bytes", 0}}}}));
  EXPECT_EQ(by_proto["icmp"]["id"], 3);
  EXPECT_EQ(by_proto["icmp"]["state"], "REPLIED");
  EXPECT_EQ(by_proto["icmp"]["dst"], "10.0.0.4");

  // The remaining timeout counts from the newest packet time seen.
  ASSERT_TRUE(pass(*svc, udp4("10.0.0.9", "10.0.0.8", 1, 1), 1, t + 20 * kSec));
  for (const json& c : dump(*svc)) {
    if (c["proto"] == "udp" && c["dport"] == 6000) {
      EXPECT_EQ(c["timeout_s"], 40);
    }
  }

  const std::optional<size_t> flushed = svc->flush_connections();
  ASSERT_TRUE(flushed.has_value());
  EXPECT_EQ(*flushed, 4u);
  EXPECT_EQ(dump(*svc).size(), 0u);
  EXPECT_EQ(stat(*svc, "connections"), 0u);
  // Flushed connections are gone: their replies no longer pass.
  EXPECT_FALSE(pass(*svc, udp4("10.0.0.3", "10.0.0.1", 6000, 5000), 0, t + 20 * kSec));
  EXPECT_FALSE(pass(*svc, f.s(kPshAck, 5001, 1001, "x"), 0, t + 20 * kSec));
}

// Four threads, each with its own connections, plus shared UDP flows every
// thread uses in both directions.  Run under ASan/UBSan (and TSan) too.
TEST(ConntrackThreads, ConcurrentThreadsKeepCountsExact) {
  auto svc = make_conntrack();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 300;
  constexpr int kShared = 8;
  constexpr int kSharedRounds = 50;
  auto shared_orig = [](int i) {
    return udp4("10.8.0.1", "10.8.0.2", static_cast<uint16_t>(7000 + i), 53);
  };
  auto shared_reply = [](int i) {
    return udp4("10.8.0.2", "10.8.0.1", 53, static_cast<uint16_t>(7000 + i));
  };
  for (int i = 0; i < kShared; ++i) ASSERT_TRUE(pass(*svc, shared_orig(i), 1));

  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      TcpFlow f;
      f.client4 = ipv4_addr("10.1.0.0") + static_cast<uint32_t>(t);
      std::vector<std::vector<uint8_t>> orig, reply;
      for (int i = 0; i < kShared; ++i) {
        orig.push_back(shared_orig(i));
        reply.push_back(shared_reply(i));
      }
      for (int i = 0; i < kPerThread; ++i) {
        f.cport = static_cast<uint16_t>(10000 + i);
        // A batch of one packet per connection step, and now and then the shared flows.
        if (!pass(*svc, f.c(kTcpSyn, 1000, 0), 1)) ++failures[t];
        if (!pass(*svc, f.s(kSynAck, 5000, 1001), 0)) ++failures[t];
        if (!pass(*svc, f.c(kPshAck, 1001, 5001, "hello"), 1)) ++failures[t];
        if (!pass(*svc, f.s(kPshAck, 5001, 1006, "world"), 0)) ++failures[t];
        const auto u =
            udp4("10.2.0.0", "10.3.0.0", static_cast<uint16_t>(t), static_cast<uint16_t>(i));
        if (!pass(*svc, u, 1)) ++failures[t];
        if (i < kSharedRounds) {
          for (bool ok : run_batch(*svc, orig, 1, kSec)) failures[t] += !ok;
          for (bool ok : run_batch(*svc, reply, 0, kSec)) failures[t] += !ok;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;

  const uint64_t conns = kShared + kThreads * kPerThread * 2;
  EXPECT_EQ(stat(*svc, "connections"), conns);
  EXPECT_EQ(stat(*svc, "created"), conns);
  EXPECT_EQ(stat(*svc, "dropped"), 0u);
  EXPECT_EQ(stat(*svc, "passed"),
            kShared + kThreads * (kPerThread * 5 + kSharedRounds * 2 * kShared));
  const json d = dump(*svc);
  EXPECT_EQ(d.size(), conns);
  size_t shared_seen = 0;
  for (const json& c : d) {
    if (c["src"] != "10.8.0.1") continue;
    ++shared_seen;
    EXPECT_EQ(c["orig"]["packets"], 1 + kThreads * kSharedRounds) << c.dump();
    EXPECT_EQ(c["reply"]["packets"], kThreads * kSharedRounds) << c.dump();
  }
  EXPECT_EQ(shared_seen, static_cast<size_t>(kShared));
}

// ---- configuration ------------------------------------------------------------------------

TEST(ConntrackConfig, BadConfigurationNamesTheKey) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"max_conections", 5}}, "max_conections"},
      {{{"max_connections", 0}}, "max_connections"},
      {{{"max_connections", -3}}, "max_connections"},
      {{{"max_connections", "many"}}, "max_connections"},
      {{{"tcp_midstream", "sloppy"}}, "tcp_midstream"},
      {{{"timeouts", 5}}, "timeouts"},
      {{{"timeouts", {{"tcp_establised", 5}}}}, "tcp_establised"},
      {{{"timeouts", {{"udp_first", 0}}}}, "udp_first"},
      {{{"timeouts", {{"icmp_reply", "soon"}}}}, "icmp_reply"},
  };
  const uint8_t id = *ServiceRegistry::instance().id_of("conntrack");
  for (const auto& [cfg, word] : cases) {
    try {
      ServiceRegistry::instance().create(id, cfg);
      ADD_FAILURE() << "accepted " << cfg.dump();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  }
  // A switch refuses to start with it, naming the service.
  auto set = ServiceSet::create({{"conntrack", {{"max_connections", 0}}}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().find("conntrack"), std::string::npos) << set.error();
}

TEST(ConntrackConfig, EveryTimeoutCanBeSet) {
  json timeouts = json::object();
  for (const char* name : {"tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait",
                           "tcp_time_wait", "tcp_closed", "udp_first", "udp_single", "udp_multiple",
                           "icmp_first", "icmp_reply", "other_first", "other_multiple"})
    timeouts[name] = 7;
  auto svc = make_conntrack(
      {{"max_connections", 10}, {"tcp_midstream", "strict"}, {"timeouts", timeouts}});
  ASSERT_NE(svc, nullptr);
  TcpFlow f;
  ASSERT_TRUE(handshake(*svc, f));
  EXPECT_EQ(only_connection(*svc)["timeout_s"], 7);
  EXPECT_EQ(stat(*svc, "max_connections"), 10u);
}

}  // namespace
}  // namespace softflow

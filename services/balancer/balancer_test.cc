// Tests of the balancer service (paper §4.2): stickiness both ways,
// least-loaded choice, even byte shares, IPv6, ICMP, non-IP, idle expiry,
// the connection bound, threads, configuration, and a switch pipeline.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <cstring>
#include <thread>
#include <vector>

#include "../../tests/unit/test_util.h"
#include "softflow/parse.h"

namespace softflow {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

std::unique_ptr<Service> make_balancer(const nlohmann::json& config = nlohmann::json::object()) {
  return ServiceRegistry::instance().create(test::service_id("balancer"), config);
}

// The balancer reads only the key, the length and the timestamp, so most
// tests build packets as bare keys (no frame bytes).
Packet ipv4_packet(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto,
                   uint32_t len, uint64_t ts = 0) {
  Packet p;
  p.key = zero_key();
  p.key.dl_type = htons(0x0800);
  p.key.nw_proto = proto;
  p.key.nw_src[0] = htonl(src);
  p.key.nw_dst[0] = htonl(dst);
  p.key.tp_src = htons(sport);
  p.key.tp_dst = htons(dport);
  p.len = len;
  p.timestamp_ns = ts;
  return p;
}

Packet tcp_packet(uint32_t conn, bool reverse, uint32_t len, uint64_t ts = 0) {
  const uint32_t client = 0x0a000000 + conn, server = 0xc0a80001;
  const uint16_t cport = static_cast<uint16_t>(1024 + conn % 50000), sport = 80;
  return reverse ? ipv4_packet(server, client, sport, cport, 6, len, ts)
                 : ipv4_packet(client, server, cport, sport, 6, len, ts);
}

Packet ipv6_packet(const Ipv6Addr& src, const Ipv6Addr& dst, uint16_t sport, uint16_t dport,
                   uint8_t proto, uint32_t len) {
  Packet p;
  p.key = zero_key();
  p.key.dl_type = htons(0x86dd);
  p.key.nw_proto = proto;
  std::memcpy(p.key.nw_src, src.data(), 16);
  std::memcpy(p.key.nw_dst, dst.data(), 16);
  p.key.tp_src = htons(sport);
  p.key.tp_dst = htons(dport);
  p.len = len;
  return p;
}

// Runs packets through the service in batches of up to kMaxBatch; returns
// each packet's bucket and checks that none was marked coalescable.
std::vector<uint32_t> run(Service& s, std::vector<Packet>& packets) {
  std::vector<uint32_t> buckets;
  for (size_t i = 0; i < packets.size(); i += kMaxBatch) {
    std::vector<Packet*> batch;
    for (size_t j = i; j < std::min(packets.size(), i + kMaxBatch); ++j) {
      packets[j].sf_coalesce = true;  // the service must clear it
      batch.push_back(&packets[j]);
    }
    s.process(batch, 0);
  }
  for (const Packet& p : packets) {
    EXPECT_FALSE(p.sf_coalesce);
    buckets.push_back(p.key.sf_metadata);
  }
  return buckets;
}

uint32_t run_one(Service& s, Packet p) {
  std::vector<Packet> v{p};
  return run(s, v)[0];
}

uint64_t bucket_stat(const Service& s, size_t bucket, const char* what) {
  return s.stats().at("buckets").at(bucket).at(what).get<uint64_t>();
}
uint64_t stat_of(const Service& s, const char* what) { return s.stats().at(what).get<uint64_t>(); }

// The bucket a correct balancer picks for a new connection: lowest bytes,
// ties to the lowest index.
uint32_t least_loaded(const std::vector<uint64_t>& loads) {
  return static_cast<uint32_t>(std::min_element(loads.begin(), loads.end()) - loads.begin());
}

TEST(Balancer, RegisteredAndNeverCoalesces) {
  ASSERT_NE(test::service_id("balancer"), 0);
  auto lb = make_balancer();
  ASSERT_NE(lb, nullptr);
  std::vector<Packet> packets;
  for (uint32_t c = 0; c < 40; ++c) packets.push_back(tcp_packet(c, c % 2, 100));
  run(*lb, packets);  // checks sf_coalesce is false for every packet
  EXPECT_EQ(lb->stats().at("buckets").size(), 8u);
}

// Forward and reverse packets of 100 connections stay in the bucket first
// chosen, while random packet sizes keep changing which bucket is least loaded.
TEST(Balancer, StickyInBothDirections) {
  const uint64_t seed = test::test_seed(4201);
  std::mt19937_64 rng(seed);
  auto lb = make_balancer();
  std::vector<uint32_t> first(100);
  for (uint32_t c = 0; c < 100; ++c)
    first[c] = run_one(*lb, tcp_packet(c, false, 60 + static_cast<uint32_t>(rng() % 1400)));
  std::set<uint32_t> used(first.begin(), first.end());
  EXPECT_EQ(used.size(), 8u) << "100 new connections should use every bucket";

  std::set<uint32_t> least_loaded_seen;
  for (int round = 0; round < 50; ++round) {
    std::vector<Packet> packets;
    std::vector<uint32_t> conns;
    // A large packet on a connection of the least-loaded bucket, so that the
    // least-loaded bucket keeps moving and a "new" decision would differ.
    std::vector<uint64_t> loads(8);
    for (size_t b = 0; b < 8; ++b) loads[b] = bucket_stat(*lb, b, "bytes");
    const uint32_t lightest = least_loaded(loads);
    least_loaded_seen.insert(lightest);
    const uint32_t heavy = static_cast<uint32_t>(std::find(first.begin(), first.end(), lightest) -
                                                 first.begin());
    conns.push_back(heavy);
    packets.push_back(tcp_packet(heavy, rng() % 2, 9000));
    for (int i = 0; i < 64; ++i) {
      const uint32_t c = static_cast<uint32_t>(rng() % 100);
      conns.push_back(c);
      packets.push_back(tcp_packet(c, rng() % 2, 60 + static_cast<uint32_t>(rng() % 1400)));
    }
    const std::vector<uint32_t> got = run(*lb, packets);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], first[conns[i]]) << "connection " << conns[i] << " round " << round;
  }
  EXPECT_GE(least_loaded_seen.size(), 4u) << "loads never changed order: the test proves little";
  EXPECT_EQ(stat_of(*lb, "live_connections"), 100u);
  uint64_t assigned = 0;
  for (size_t b = 0; b < 8; ++b) assigned += bucket_stat(*lb, b, "connections");
  EXPECT_EQ(assigned, 100u);
}

// Known byte loads: each new connection goes to the lowest-byte bucket (ties
// to the lowest index), and every packet's length is added to its bucket.
TEST(Balancer, NewConnectionGoesToLeastLoadedBucket) {
  auto lb = make_balancer();
  const std::vector<uint32_t> sizes = {500, 100, 800, 300, 700, 200, 600, 400};
  for (uint32_t c = 0; c < 8; ++c)  // all tie at 0 bytes before each: lowest free index
    EXPECT_EQ(run_one(*lb, tcp_packet(c, false, sizes[c])), c);
  for (size_t b = 0; b < 8; ++b) EXPECT_EQ(bucket_stat(*lb, b, "bytes"), sizes[b]);

  EXPECT_EQ(run_one(*lb, tcp_packet(8, false, 1000)), 1u);  // 100 -> 1100
  EXPECT_EQ(run_one(*lb, tcp_packet(9, false, 50)), 5u);    // 200 -> 250
  EXPECT_EQ(run_one(*lb, tcp_packet(10, false, 100)), 5u);  // 250 -> 350 (still the lowest)
  EXPECT_EQ(run_one(*lb, tcp_packet(3, true, 600)), 3u);    // existing: 300 -> 900
  EXPECT_EQ(run_one(*lb, tcp_packet(11, false, 50)), 5u);   // 350 -> 400, ties bucket 7
  EXPECT_EQ(run_one(*lb, tcp_packet(12, false, 10)), 5u);   // tie 400/400: lowest index
  EXPECT_EQ(run_one(*lb, tcp_packet(13, false, 10)), 7u);   // 410 vs 400
  EXPECT_EQ(bucket_stat(*lb, 5, "bytes"), 410u);
  EXPECT_EQ(bucket_stat(*lb, 5, "packets"), 5u);
  EXPECT_EQ(bucket_stat(*lb, 5, "connections"), 5u);
  EXPECT_EQ(bucket_stat(*lb, 3, "packets"), 2u);
  EXPECT_EQ(bucket_stat(*lb, 3, "connections"), 1u);
}

// 10,000 connections of 10 packets x 1000 bytes, packets interleaved in a
// seeded random order and in random directions: each bucket carries its
// eighth of the bytes within 5 %.
TEST(Balancer, EqualConnectionsShareBytesEvenly) {
  const uint64_t seed = test::test_seed(4202);
  std::mt19937_64 rng(seed);
  constexpr uint32_t kConns = 10'000, kPerConn = 10, kLen = 1000;
  std::vector<uint32_t> order;
  for (uint32_t c = 0; c < kConns; ++c)
    for (uint32_t i = 0; i < kPerConn; ++i) order.push_back(c);
  std::shuffle(order.begin(), order.end(), rng);

  auto lb = make_balancer();
  std::vector<Packet> packets;
  for (uint32_t c : order) packets.push_back(tcp_packet(c, rng() % 2, kLen));
  const std::vector<uint32_t> got = run(*lb, packets);

  std::vector<int64_t> bucket_of(kConns, -1);
  std::vector<uint64_t> bytes(8);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LT(got[i], 8u);
    if (bucket_of[order[i]] < 0) bucket_of[order[i]] = got[i];
    ASSERT_EQ(bucket_of[order[i]], got[i]) << "connection " << order[i] << " moved";
    bytes[got[i]] += kLen;
  }
  const double total = double(kConns) * kPerConn * kLen;
  for (size_t b = 0; b < 8; ++b) {
    EXPECT_EQ(bucket_stat(*lb, b, "bytes"), bytes[b]);
    const double share = double(bytes[b]) / total;
    EXPECT_NEAR(share, 1.0 / 8, 0.05 / 8) << "bucket " << b << " bytes " << bytes[b];
  }
}

TEST(Balancer, Ipv6ConnectionsAreTrackedByTheFullAddresses) {
  auto lb = make_balancer();
  const Ipv6Addr client = test::v6(1, 1), server = test::v6(2, 2);
  Ipv6Addr other_client = client;
  other_client[12] ^= 0x40;  // differs only in a byte an IPv4-sized key would ignore

  EXPECT_EQ(run_one(*lb, ipv6_packet(client, server, 4000, 443, 6, 1500)), 0u);
  EXPECT_EQ(run_one(*lb, ipv6_packet(other_client, server, 4000, 443, 6, 1500)), 1u);
  // The reverse of each stays put although bucket 2 is now least loaded.
  EXPECT_EQ(run_one(*lb, ipv6_packet(server, client, 443, 4000, 6, 100)), 0u);
  EXPECT_EQ(run_one(*lb, ipv6_packet(server, other_client, 443, 4000, 6, 100)), 1u);
  // An IPv4 packet whose address words equal the IPv6 ones' first words is a
  // different connection.
  Packet v4 = ipv6_packet(client, server, 4000, 443, 6, 100);
  v4.key.dl_type = htons(0x0800);
  EXPECT_EQ(run_one(*lb, v4), 2u);
  EXPECT_EQ(stat_of(*lb, "live_connections"), 3u);
}

// All ICMP between two hosts (echo, reply, errors; either direction) is one
// connection; ICMPv6 likewise; a different host pair is another.
TEST(Balancer, IcmpIsOneConnectionPerHostPair) {
  auto lb = make_balancer();
  const uint32_t a = 0x0a000001, b = 0x0a000002, c = 0x0a000003;
  // The key holds ICMP type/code in tp_src/tp_dst.
  EXPECT_EQ(run_one(*lb, ipv4_packet(a, b, 8, 0, 1, 1000)), 0u);   // echo request
  EXPECT_EQ(run_one(*lb, ipv4_packet(b, a, 0, 0, 1, 1000)), 0u);   // echo reply
  EXPECT_EQ(run_one(*lb, ipv4_packet(b, a, 3, 3, 1, 1000)), 0u);   // port unreachable
  EXPECT_EQ(run_one(*lb, ipv4_packet(a, c, 8, 0, 1, 1000)), 1u);   // another pair
  EXPECT_EQ(run_one(*lb, ipv4_packet(a, b, 6, 0, 17, 10)), 2u);    // UDP: another protocol
  const Ipv6Addr x = test::v6(1), y = test::v6(2);
  EXPECT_EQ(run_one(*lb, ipv6_packet(x, y, 128, 0, 58, 1000)), 3u);  // echo request
  EXPECT_EQ(run_one(*lb, ipv6_packet(y, x, 129, 0, 58, 1000)), 3u);  // echo reply
  EXPECT_EQ(stat_of(*lb, "live_connections"), 4u);
}

// The key layout as the real parser fills it: frames built, parsed, balanced.
TEST(Balancer, ParsedFramesStickBothWays) {
  auto lb = make_balancer();
  const uint32_t a = ipv4_addr("10.1.0.1"), b = ipv4_addr("10.2.0.2");
  const Ipv6Addr x = test::v6(7), y = test::v6(9);
  struct Case {
    std::vector<uint8_t> forward, reverse;
  };
  const std::vector<Case> cases = {
      {PacketBuilder().ipv4(a, b).tcp(40000, 80, kTcpSyn).payload(std::string(900, 'x')).build(),
       PacketBuilder().ipv4(b, a).tcp(80, 40000, kTcpSyn | kTcpAck).build()},
      {PacketBuilder().ipv6(x, y).udp(5000, 53).payload(std::string(900, 'y')).build(),
       PacketBuilder().ipv6(y, x).udp(53, 5000).build()},
      {PacketBuilder().ipv4(a, b).icmp(8, 0, 0x00010001).payload(std::string(900, 'z')).build(),
       PacketBuilder().ipv4(b, a).icmp(0, 0, 0x00010001).build()},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<uint8_t> fwd = cases[i].forward, rev = cases[i].reverse;
    Packet p, q;
    p.data = fwd.data(), p.len = static_cast<uint32_t>(fwd.size());
    q.data = rev.data(), q.len = static_cast<uint32_t>(rev.size());
    ASSERT_EQ(parse_packet(p), kParseOk);
    ASSERT_EQ(parse_packet(q), kParseOk);
    EXPECT_EQ(run_one(*lb, p), i) << "case " << i;
    EXPECT_EQ(run_one(*lb, q), i) << "case " << i << " reverse";
  }
  EXPECT_EQ(stat_of(*lb, "live_connections"), cases.size());
}

// Non-IP packets are balanced one by one and not tracked.
TEST(Balancer, NonIpPacketsGoToTheLeastLoadedBucketUntracked) {
  auto lb = make_balancer({{"buckets", 3}});
  Packet arp;
  arp.key = zero_key();
  arp.key.dl_type = htons(0x0806);
  arp.len = 60;
  std::vector<uint64_t> loads(3);
  for (int i = 0; i < 12; ++i) {
    const uint32_t expected = least_loaded(loads);
    EXPECT_EQ(run_one(*lb, arp), expected) << "packet " << i;
    loads[expected] += arp.len;
  }
  EXPECT_EQ(stat_of(*lb, "non_ip_packets"), 12u);
  EXPECT_EQ(stat_of(*lb, "live_connections"), 0u);
  for (size_t b = 0; b < 3; ++b) EXPECT_EQ(bucket_stat(*lb, b, "packets"), 4u);
}

// A connection idle for longer than idle_timeout_s (by packet timestamps) is
// balanced again as new; one that is not, stays.
TEST(Balancer, IdleConnectionIsRebalancedAsNew) {
  auto lb = make_balancer({{"idle_timeout_s", 1}});
  EXPECT_EQ(run_one(*lb, tcp_packet(1, false, 1000, 1 * kSecond)), 0u);
  EXPECT_EQ(run_one(*lb, tcp_packet(2, false, 10, 1 * kSecond)), 1u);
  // 0.9 s and then 0.99 s of idleness: still the same connection.
  EXPECT_EQ(run_one(*lb, tcp_packet(1, true, 1000, 1'900'000'000)), 0u);
  EXPECT_EQ(run_one(*lb, tcp_packet(1, false, 1000, 2'890'000'000)), 0u);
  EXPECT_EQ(stat_of(*lb, "expired"), 0u);
  // 1.1 s idle: re-balanced to the least-loaded bucket (2, empty), and it
  // sticks there from then on, in both directions.
  EXPECT_EQ(run_one(*lb, tcp_packet(1, true, 500, 3'990'000'000)), 2u);
  EXPECT_EQ(run_one(*lb, tcp_packet(1, false, 500, 4 * kSecond)), 2u);
  EXPECT_EQ(stat_of(*lb, "expired"), 1u);
  EXPECT_EQ(bucket_stat(*lb, 2, "connections"), 1u);
}

// Idle connections are reclaimed by the sweep inside process(), even when no
// packet of theirs comes back: after enough batches the table is empty.
TEST(Balancer, SweepReclaimsIdleConnections) {
  auto lb = make_balancer({{"idle_timeout_s", 2}});
  std::vector<Packet> packets;
  for (uint32_t c = 0; c < 500; ++c) packets.push_back(tcp_packet(c, false, 100, 1 * kSecond));
  run(*lb, packets);
  ASSERT_EQ(stat_of(*lb, "live_connections"), 500u);
  // Traffic of one live connection keeps calling process() as time goes by.
  // Before the timeout nothing goes.
  for (int i = 0; i < 500; ++i) run_one(*lb, tcp_packet(9999, false, 100, 2 * kSecond));
  EXPECT_EQ(stat_of(*lb, "live_connections"), 501u);
  size_t batches = 0;
  while (stat_of(*lb, "live_connections") > 1 && batches < 100'000) {
    // The others are idle 2.1 s > 2 s; connection 9999 only 1.1 s.
    run_one(*lb, tcp_packet(9999, false, 100, 3'100'000'000 + batches));
    ++batches;
  }
  EXPECT_EQ(stat_of(*lb, "live_connections"), 1u) << "after " << batches << " batches";
  EXPECT_EQ(stat_of(*lb, "expired"), 500u);
  // Bounded work per batch: no single batch swept everything.
  EXPECT_GT(batches, 1u);
  // A swept connection that comes back is new again, and sticky again.
  const uint32_t b = run_one(*lb, tcp_packet(7, false, 100, 11 * kSecond));
  EXPECT_EQ(run_one(*lb, tcp_packet(7, true, 100, 11 * kSecond)), b);
}

// At max_connections, a new connection still gets the least-loaded bucket
// but is not remembered: its next packet is balanced afresh.  Tracked ones
// keep working; freed places are reused after expiry.
TEST(Balancer, MaxConnectionsBoundsTheTable) {
  auto lb = make_balancer({{"max_connections", 10}, {"idle_timeout_s", 5}});
  std::vector<uint64_t> loads(8);
  std::vector<uint32_t> first(20);
  for (uint32_t c = 0; c < 20; ++c) {
    const uint32_t size = 100 + 37 * c;
    const uint32_t expected = least_loaded(loads);
    first[c] = run_one(*lb, tcp_packet(c, false, size, kSecond));
    EXPECT_EQ(first[c], expected) << "connection " << c;
    loads[first[c]] += size;
  }
  EXPECT_EQ(stat_of(*lb, "live_connections"), 10u);
  EXPECT_EQ(stat_of(*lb, "untracked"), 10u);
  for (uint32_t round = 0; round < 3; ++round) {
    for (uint32_t c = 0; c < 20; ++c) {
      const uint32_t size = 1000 + 101 * c;
      const uint32_t got = run_one(*lb, tcp_packet(c, round % 2, size, kSecond));
      if (c < 10)
        EXPECT_EQ(got, first[c]) << "tracked connection " << c << " moved";
      else
        EXPECT_EQ(got, least_loaded(loads)) << "untracked connection " << c;
      loads[got] += size;
    }
  }
  EXPECT_EQ(stat_of(*lb, "live_connections"), 10u);
  EXPECT_EQ(stat_of(*lb, "untracked"), 10u + 3 * 10u);
  // After the first ten expire (lookup finds them idle), new ones fit again.
  for (uint32_t c = 100; c < 110; ++c) run_one(*lb, tcp_packet(c, false, 100, 20 * kSecond));
  EXPECT_LE(stat_of(*lb, "live_connections"), 10u);
  size_t guard = 0;
  while (stat_of(*lb, "live_connections") > 0 && guard++ < 10'000) {
    Packet arp;
    arp.key = zero_key();
    arp.key.dl_type = htons(0x0806);
    arp.len = 60;
    arp.timestamp_ns = 60 * kSecond;
    run_one(*lb, arp);  // non-IP traffic still drives the sweep
  }
  EXPECT_EQ(stat_of(*lb, "live_connections"), 0u);
  const uint64_t untracked = stat_of(*lb, "untracked");
  for (uint32_t c = 200; c < 210; ++c) run_one(*lb, tcp_packet(c, false, 100, 61 * kSecond));
  EXPECT_EQ(stat_of(*lb, "live_connections"), 10u);
  EXPECT_EQ(stat_of(*lb, "untracked"), untracked);
}

// Four threads send the same 400 connections (two threads forward, two in
// reverse) in their own random orders: every packet of a connection gets the
// same bucket, and byte/packet/connection totals add up exactly.
TEST(Balancer, ThreadsAgreeAndTotalsAddUp) {
  const uint64_t seed = test::test_seed(4203);
  constexpr uint32_t kConns = 400, kPacketsPerThread = 20'000, kThreads = 4;
  auto lb = make_balancer();
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> seen(kThreads);  // (conn, bucket)
  std::vector<uint64_t> bytes_sent(kThreads);
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      std::vector<Packet> batch;
      std::vector<uint32_t> conns;
      for (uint32_t i = 0; i < kPacketsPerThread; ++i) {
        const uint32_t c = static_cast<uint32_t>(rng() % kConns);
        const uint32_t len = 64 + static_cast<uint32_t>(rng() % 1400);
        batch.push_back(tcp_packet(c, t % 2, len));
        conns.push_back(c);
        bytes_sent[t] += len;
        if (batch.size() == kMaxBatch || i + 1 == kPacketsPerThread) {
          std::vector<Packet*> ptrs;
          for (Packet& p : batch) ptrs.push_back(&p);
          lb->process(ptrs, 0);
          for (size_t j = 0; j < batch.size(); ++j) {
            seen[t].emplace_back(conns[j], batch[j].key.sf_metadata);
            if (batch[j].sf_coalesce) seen[t].emplace_back(conns[j], 999);  // flags a failure
          }
          batch.clear();
          conns.clear();
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();

  std::vector<int64_t> bucket_of(kConns, -1);
  for (const auto& per_thread : seen)
    for (const auto& [c, b] : per_thread) {
      ASSERT_LT(b, 8u) << "bad bucket or sf_coalesce set";
      if (bucket_of[c] < 0) bucket_of[c] = b;
      ASSERT_EQ(bucket_of[c], b) << "connection " << c << " split across buckets";
    }
  uint64_t bytes = 0, packets = 0, connections = 0;
  for (size_t b = 0; b < 8; ++b) {
    bytes += bucket_stat(*lb, b, "bytes");
    packets += bucket_stat(*lb, b, "packets");
    connections += bucket_stat(*lb, b, "connections");
  }
  EXPECT_EQ(bytes, std::accumulate(bytes_sent.begin(), bytes_sent.end(), uint64_t{0}));
  EXPECT_EQ(packets, uint64_t{kThreads} * kPacketsPerThread);
  EXPECT_EQ(connections, kConns);
  EXPECT_EQ(stat_of(*lb, "live_connections"), kConns);
  EXPECT_EQ(stat_of(*lb, "untracked"), 0u);
}

TEST(Balancer, BucketsIsConfigurable) {
  for (uint32_t n : {1u, 5u, 64u}) {
    auto lb = make_balancer({{"buckets", n}});
    ASSERT_EQ(lb->stats().at("buckets").size(), n);
    std::set<uint32_t> used;
    for (uint32_t c = 0; c < 3 * n; ++c) {
      const uint32_t b = run_one(*lb, tcp_packet(c, false, 100));
      EXPECT_LT(b, n);
      used.insert(b);
    }
    EXPECT_EQ(used.size(), n);
  }
}

TEST(Balancer, ConfigErrorsNameTheKey) {
  const auto expect_error = [](const nlohmann::json& config, const std::string& needle) {
    try {
      make_balancer(config);
      ADD_FAILURE() << "no error for " << config.dump();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << config.dump() << ": " << e.what();
    }
  };
  expect_error({{"bucket", 8}}, "'bucket'");
  expect_error({{"buckets", 0}}, "'buckets'");
  expect_error({{"buckets", 65}}, "65");
  expect_error({{"buckets", -1}}, "'buckets'");
  expect_error({{"buckets", "8"}}, "'buckets'");
  expect_error({{"buckets", 8.5}}, "'buckets'");
  expect_error({{"idle_timeout_s", 0}}, "'idle_timeout_s'");
  expect_error({{"idle_timeout_s", -3}}, "'idle_timeout_s'");
  expect_error({{"idle_timeout_s", "60"}}, "'idle_timeout_s'");
  expect_error({{"max_connections", 0}}, "'max_connections'");
  expect_error({{"max_connections", true}}, "'max_connections'");
  EXPECT_NO_THROW(make_balancer({{"buckets", 64}, {"idle_timeout_s", 0.5},
                                 {"max_connections", 1}}));
  // Through the switch's service configuration, the error names the service.
  auto set = ServiceSet::create({{"balancer", {{"buckets", 100}}}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().find("balancer"), std::string::npos) << set.error();
  EXPECT_NE(set.error().find("buckets"), std::string::npos) << set.error();
}

// In a switch: stage 0 balances, stage 1 sends bucket b out of port b+1.
// Every packet of a connection, both ways, leaves by one port; all ports get
// traffic; coalescing on and off give the same output.
TEST(Balancer, PipelineKeepsConnectionsOnOneBackend) {
  const uint8_t balancer = test::service_id("balancer");
  std::vector<FlowRule> rules = {
      test::rule(0, 100, test::match({{Field::kSfStage, 0}}), {Action::softflow(balancer, 0)})};
  for (uint32_t b = 0; b < 4; ++b)
    rules.push_back(test::rule(0, 100, test::match({{Field::kSfStage, 1}, {Field::kSfMetadata, b}}),
                               {Action::output(b + 1)}));
  const uint64_t seed = test::test_seed(4204);
  std::mt19937_64 rng(seed);
  std::vector<Frame> frames;
  std::map<std::vector<uint8_t>, uint32_t> conn_of;  // frame bytes -> connection
  for (uint32_t i = 0; i < 600; ++i) {
    const uint32_t c = static_cast<uint32_t>(rng() % 60);
    const bool reverse = rng() % 2;
    const uint32_t client = 0x0a000100 + c, server = 0x0a000001;
    const uint16_t cport = static_cast<uint16_t>(30000 + c);
    const std::string payload = "c" + std::to_string(c) + "#" + std::to_string(i) +
                                std::string(rng() % 500, '.');
    std::vector<uint8_t> bytes = reverse ? test::tcp4(server, client, 80, cport, payload)
                                         : test::tcp4(client, server, cport, 80, payload);
    conn_of[bytes] = c;
    frames.push_back(test::frame(reverse ? 6 : 5, std::move(bytes), 1000 + i));
  }
  const nlohmann::json config = {{"balancer", {{"buckets", 4}}}};
  std::vector<std::unique_ptr<test::SwitchHarness>> runs;
  for (bool coalesce : {false, true}) {
    runs.push_back(std::make_unique<test::SwitchHarness>(
        coalesce, std::set<uint32_t>{1, 2, 3, 4, 5, 6}, MegaflowCacheConfig{}, config));
    test::SwitchHarness& h = *runs.back();
    ASSERT_TRUE(h.add(rules));
    h.run(frames);
    EXPECT_EQ(test::total_sent(h.ports()), frames.size()) << test::drops_string(h.stats());
    std::map<uint32_t, uint32_t> port_of;
    for (uint32_t port = 1; port <= 4; ++port) {
      EXPECT_FALSE(h.ports().sent(port).empty()) << "port " << port << " unused";
      for (const Frame& f : h.ports().sent(port)) {
        ASSERT_TRUE(conn_of.count(f.bytes)) << "frame changed";
        const uint32_t c = conn_of[f.bytes];
        const auto [it, inserted] = port_of.emplace(c, port);
        EXPECT_EQ(it->second, port) << "connection " << c << " on two backends";
      }
    }
  }
  EXPECT_TRUE(test::same_output(runs[0]->ports(), runs[1]->ports()));
}

}  // namespace
}  // namespace softflow

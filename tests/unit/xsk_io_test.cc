// The pure logic of the traffic tools (xsk_io.h): the symmetric flow hash
// that spreads sf-pktgen's connections over queues, and the token bucket
// that paces it.
#include "softflow/xsk_io.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "softflow/packet_builder.h"
#include "softflow/tracegen.h"

namespace softflow {
namespace {

std::vector<uint8_t> tcp_frame(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                               bool swap_macs = false) {
  MacAddr a = mac("02:00:00:00:00:01"), b = mac("02:00:00:00:00:02");
  if (swap_macs) std::swap(a, b);
  return PacketBuilder().eth(a, b).ipv4(ipv4_addr(src), ipv4_addr(dst)).tcp(sport, dport).build();
}

TEST(FlowHashTest, BothDirectionsOfAConnectionHashAlike) {
  const auto forward = tcp_frame("10.0.0.1", "172.16.0.9", 40000, 80);
  const auto reverse = tcp_frame("172.16.0.9", "10.0.0.1", 80, 40000, true);
  EXPECT_EQ(symmetric_flow_hash(forward), symmetric_flow_hash(reverse));
  for (uint32_t n : {2u, 3u, 8u}) EXPECT_EQ(flow_queue(forward, n), flow_queue(reverse, n));
}

TEST(FlowHashTest, IPv6AndUdpAreSymmetricToo) {
  const auto forward = PacketBuilder()
                           .ipv6(ipv6_addr("2001:db8::1"), ipv6_addr("2001:db8::2"))
                           .udp(5000, 53)
                           .build();
  const auto reverse = PacketBuilder()
                           .ipv6(ipv6_addr("2001:db8::2"), ipv6_addr("2001:db8::1"))
                           .udp(53, 5000)
                           .build();
  EXPECT_EQ(symmetric_flow_hash(forward), symmetric_flow_hash(reverse));
}

TEST(FlowHashTest, PortsProtocolAndAddressesAllCount) {
  const uint32_t base = symmetric_flow_hash(tcp_frame("10.0.0.1", "172.16.0.9", 40000, 80));
  EXPECT_NE(base, symmetric_flow_hash(tcp_frame("10.0.0.1", "172.16.0.9", 40001, 80)));
  EXPECT_NE(base, symmetric_flow_hash(tcp_frame("10.0.0.2", "172.16.0.9", 40000, 80)));
  // Swapping only the ports (not the addresses) is another connection.
  EXPECT_NE(base, symmetric_flow_hash(tcp_frame("10.0.0.1", "172.16.0.9", 80, 40000)));
  const auto udp =
      PacketBuilder().ipv4(ipv4_addr("10.0.0.1"), ipv4_addr("172.16.0.9")).udp(40000, 80).build();
  EXPECT_NE(base, symmetric_flow_hash(udp));
}

TEST(FlowHashTest, ConnectionsSpreadEvenlyOverQueues) {
  constexpr uint32_t kQueues = 4, kFlows = 4000;
  std::vector<uint32_t> per_queue(kQueues);
  for (uint32_t i = 0; i < kFlows; ++i)
    ++per_queue[flow_queue(
        tcp_frame("10.0.0.1", "172.16.0.9", static_cast<uint16_t>(1024 + i), 443), kQueues)];
  for (uint32_t n : per_queue) {
    EXPECT_GT(n, kFlows / kQueues * 85 / 100);
    EXPECT_LT(n, kFlows / kQueues * 115 / 100);
  }
}

TEST(FlowHashTest, NonIpAndTruncatedFramesDoNotCrash) {
  const auto arp =
      PacketBuilder()
          .arp(1, mac("02:00:00:00:00:01"), ipv4_addr("10.0.0.1"), MacAddr{}, ipv4_addr("10.0.0.2"))
          .build();
  EXPECT_LT(flow_queue(arp, 4), 4u);
  const auto tcp = tcp_frame("10.0.0.1", "172.16.0.9", 40000, 80);
  for (size_t len = 0; len < tcp.size(); ++len)
    EXPECT_LT(flow_queue(std::span(tcp).first(len), 3), 3u);
}

TEST(FlowHashTest, EveryReplayOfAConnectionStaysOnOneQueue) {
  // sf-pktgen hashes the trace once; the replay rewrite must not split a
  // conversation.  The rewrite is consistent in both directions, so the
  // rewritten conversation also hashes alike both ways.
  auto forward = tcp_frame("10.0.0.1", "172.16.0.9", 40000, 80);
  auto reverse = tcp_frame("172.16.0.9", "10.0.0.1", 80, 40000, true);
  for (uint32_t replay = 1; replay < 20; ++replay) {
    auto f = forward, r = reverse;
    rewrite_l4_ports(f, replay);
    rewrite_l4_ports(r, replay);
    EXPECT_EQ(symmetric_flow_hash(f), symmetric_flow_hash(r)) << "replay " << replay;
  }
}

constexpr uint64_t kSecond = 1'000'000'000ULL;

TEST(TokenBucketTest, UnlimitedGrantsEverything) {
  TokenBucket bucket(0, 64);
  bucket.start(0);
  EXPECT_TRUE(bucket.unlimited());
  EXPECT_EQ(bucket.take(0, 64), 64u);
  EXPECT_EQ(bucket.wait_ns(), 0u);
}

TEST(TokenBucketTest, StartsEmptyAndAccruesAtTheRate) {
  TokenBucket bucket(1000, 64);  // one per millisecond
  bucket.start(5 * kSecond);
  EXPECT_EQ(bucket.take(5 * kSecond, 64), 0u);
  EXPECT_EQ(bucket.wait_ns(), 1'000'000u);
  EXPECT_EQ(bucket.take(5 * kSecond + 999'999, 64), 0u);
  EXPECT_EQ(bucket.take(5 * kSecond + 1'000'000, 64), 1u);
  EXPECT_EQ(bucket.take(5 * kSecond + 10'500'000, 64), 9u);  // 9.5 accrued
  EXPECT_EQ(bucket.take(5 * kSecond + 11'000'000, 64), 1u);  // the half carried over
}

TEST(TokenBucketTest, LongRunRateIsExactWhenPolledOften) {
  // Polled every 3.7 us at rates across the range sf-pktgen promises, the
  // grants add up to the rate within 0.1 %.
  for (double rate : {10'000.0, 50'000.0, 400'000.0, 2'000'000.0}) {
    TokenBucket bucket(rate, 64);
    bucket.start(0);
    uint64_t granted = 0;
    for (uint64_t t = 0; t <= 2 * kSecond; t += 3700) granted += bucket.take(t, 64);
    EXPECT_NEAR(static_cast<double>(granted), 2 * rate, 2 * rate * 0.001) << "rate " << rate;
  }
}

TEST(TokenBucketTest, GrantsAtMostMaxPerCall) {
  TokenBucket bucket(1e6, 1000);
  bucket.start(0);
  EXPECT_EQ(bucket.take(kSecond, 64), 64u);
  EXPECT_EQ(bucket.take(kSecond, 2000), 936u);  // the rest of the burst
}

TEST(TokenBucketTest, AStallIsNotMadeUpBeyondTheBurst) {
  TokenBucket bucket(100'000, 100);
  bucket.start(0);
  EXPECT_EQ(bucket.take(kSecond, 1'000'000), 100u);  // a second of stall: 100, not 100k
  EXPECT_EQ(bucket.take(kSecond, 1'000'000), 0u);
}

}  // namespace
}  // namespace softflow

// Tests of the aes service: the cipher against NIST SP 800-38A, the packet
// transform (lengths, checksums, padding, failures leave packets alone),
// encrypt -> decrypt round trips through two switches with coalescing on and
// off, every truncation of a frame, and concurrent use by several threads.
#include "aes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/unit/test_util.h"
#include "softflow/flow_syntax.h"
#include "softflow/packet_builder.h"
#include "softflow/parse.h"
#include "softflow/ports.h"
#include "softflow/service.h"
#include "softflow/switch.h"

namespace softflow {
namespace {

using test::service_id;

std::vector<uint8_t> from_hex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

aes::Block block_from_hex(std::string_view hex) {
  const std::vector<uint8_t> v = from_hex(hex);
  aes::Block b{};
  std::copy(v.begin(), v.end(), b.begin());
  return b;
}

// ---- NIST SP 800-38A, F.2.1 and F.2.2 (CBC-AES128) --------------------------------

const char* const kNistKey = "2b7e151628aed2a6abf7158809cf4f3c";
const char* const kNistIv = "000102030405060708090a0b0c0d0e0f";
const char* const kNistPlain =
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710";
const char* const kNistCipher =
    "7649abac8119b246cee98e9b12e9197d"
    "5086cb9b507219ee95db113a917678b2"
    "73bed6b8e3c1743b7116e69e22229516"
    "3ff1caa1681fac09120eca307586e1a7";

TEST(AesCipher, NistCbcAes128Encrypt) {  // F.2.1
  const std::vector<uint8_t> plain = from_hex(kNistPlain);
  std::vector<uint8_t> out(plain.size());
  ASSERT_TRUE(aes::aes128_cbc(block_from_hex(kNistKey), block_from_hex(kNistIv), plain, out, true));
  EXPECT_EQ(out, from_hex(kNistCipher));
}

TEST(AesCipher, NistCbcAes128Decrypt) {  // F.2.2
  const std::vector<uint8_t> cipher = from_hex(kNistCipher);
  std::vector<uint8_t> out(cipher.size());
  ASSERT_TRUE(
      aes::aes128_cbc(block_from_hex(kNistKey), block_from_hex(kNistIv), cipher, out, false));
  EXPECT_EQ(out, from_hex(kNistPlain));
}

TEST(AesCipher, DefaultKeyIsTheNistKey) { EXPECT_EQ(aes::kDefaultKey, block_from_hex(kNistKey)); }

TEST(AesCipher, InPlaceAndIvResetPerCall) {
  // The service reuses one context per thread and only resets the IV: two
  // calls must not chain into each other.
  aes::CbcCipher cipher;
  ASSERT_TRUE(cipher.init(block_from_hex(kNistKey), true));
  const aes::Block iv = block_from_hex(kNistIv);
  for (int round = 0; round < 3; ++round) {
    std::vector<uint8_t> data = from_hex(kNistPlain);
    ASSERT_TRUE(cipher.crypt(iv.data(), data.data(), data.data(), data.size()));
    EXPECT_EQ(data, from_hex(kNistCipher)) << "round " << round;
  }
  std::vector<uint8_t> odd(15);
  EXPECT_FALSE(cipher.crypt(iv.data(), odd.data(), odd.data(), odd.size()));
  aes::CbcCipher uninitialised;
  EXPECT_FALSE(uninitialised.crypt(iv.data(), odd.data(), odd.data(), 0));
}

// ---- frame inspection written for the tests (independent of the service) -----------

struct Layout {
  size_t l3 = 0, l4 = 0, payload = 0, end = 0;
  bool ipv4 = false;
  uint8_t proto = 0;
};

uint16_t be16(const std::vector<uint8_t>& f, size_t ofs) {
  return static_cast<uint16_t>(f.at(ofs) << 8 | f.at(ofs + 1));
}

// Ethernet (+ one VLAN tag), IPv4 or IPv6 (+ hop-by-hop/routing/destination
// options), TCP or UDP.  Only for the well-formed frames the tests build.
std::optional<Layout> inspect(const std::vector<uint8_t>& f) {
  Layout l;
  size_t ofs = 12;
  uint16_t type = be16(f, ofs);
  if (type == 0x8100) {
    ofs += 4;
    type = be16(f, ofs);
  }
  l.l3 = ofs + 2;
  size_t cur;
  if (type == 0x0800) {
    l.ipv4 = true;
    l.proto = f.at(l.l3 + 9);
    l.end = l.l3 + be16(f, l.l3 + 2);
    cur = l.l3 + (f.at(l.l3) & 0x0f) * 4u;
  } else if (type == 0x86dd) {
    l.end = l.l3 + 40 + be16(f, l.l3 + 4);
    uint8_t next = f.at(l.l3 + 6);
    cur = l.l3 + 40;
    while (next == 0 || next == 43 || next == 60) {
      next = f.at(cur);
      cur += (f.at(cur + 1) + 1u) * 8;
    }
    l.proto = next;
  } else {
    return std::nullopt;
  }
  l.l4 = cur;
  if (l.proto == 6)
    l.payload = cur + (f.at(cur + 12) >> 4) * 4u;
  else if (l.proto == 17)
    l.payload = cur + 8;
  else
    return std::nullopt;
  return l;
}

using test::add_words;
using test::fold;

// The IPv4 header checksum and the TCP/UDP checksum verify (a UDP checksum
// of 0 means "none" and passes), and the length fields agree with the frame.
::testing::AssertionResult headers_valid(const std::vector<uint8_t>& f) {
  const std::optional<Layout> l = inspect(f);
  if (!l) return ::testing::AssertionFailure() << "not TCP/UDP over IP";
  if (l->end > f.size()) return ::testing::AssertionFailure() << "datagram longer than frame";
  uint32_t pseudo;
  const size_t l4_len = l->end - l->l4;
  if (l->ipv4) {
    const size_t ihl = (f[l->l3] & 0x0f) * 4u;
    if (fold(add_words(0, &f[l->l3], ihl)) != 0xffff)
      return ::testing::AssertionFailure() << "bad IPv4 header checksum";
    pseudo = add_words(0, &f[l->l3 + 12], 8);
  } else {
    pseudo = add_words(0, &f[l->l3 + 8], 32);
  }
  pseudo += l->proto + static_cast<uint32_t>(l4_len);
  if (l->proto == 17) {
    if (be16(f, l->l4 + 4) != l4_len)
      return ::testing::AssertionFailure()
             << "UDP length " << be16(f, l->l4 + 4) << " != " << l4_len;
    if (be16(f, l->l4 + 6) == 0) return ::testing::AssertionSuccess();
  }
  if (fold(add_words(pseudo, &f[l->l4], l4_len)) != 0xffff)
    return ::testing::AssertionFailure() << "bad L4 checksum";
  return ::testing::AssertionSuccess();
}

// The header bytes with the fields transcoding may change (IPv4 total length
// and checksum, IPv6 payload length, UDP length, L4 checksum) zeroed.
std::vector<uint8_t> invariant_headers(const std::vector<uint8_t>& f, const Layout& l) {
  std::vector<uint8_t> h(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(l.payload));
  auto zero = [&h](size_t ofs) { h.at(ofs) = h.at(ofs + 1) = 0; };
  if (l.ipv4) {
    zero(l.l3 + 2);
    zero(l.l3 + 10);
  } else {
    zero(l.l3 + 4);
  }
  if (l.proto == 17) {
    zero(l.l4 + 4);
    zero(l.l4 + 6);
  } else {
    zero(l.l4 + 16);
  }
  return h;
}

// ---- test frames -------------------------------------------------------------------

struct TestFrame {
  std::string name;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<TestFrame> round_trip_frames(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TestFrame> out;
  const uint32_t a4 = ipv4_addr("10.0.0.1"), b4 = ipv4_addr("10.0.0.2");
  const Ipv6Addr a6 = ipv6_addr("2001:db8::1"), b6 = ipv6_addr("2001:db8::2");
  uint32_t seq = 1000;
  for (size_t n : {0, 1, 15, 16, 17, 1400}) {
    const std::vector<uint8_t> payload = random_bytes(rng, n);
    const std::string len = std::to_string(n);
    out.push_back(
        {"udp4/" + len, PacketBuilder().ipv4(a4, b4).udp(5000, 53).payload(payload).build()});
    out.push_back({"tcp4/" + len, PacketBuilder()
                                      .ipv4(a4, b4)
                                      .tcp(40000, 80, kTcpAck | kTcpPsh, seq += 1400, 77)
                                      .payload(payload)
                                      .build()});
    out.push_back(
        {"udp6/" + len, PacketBuilder().ipv6(a6, b6).udp(5000, 53).payload(payload).build()});
    out.push_back({"tcp6/" + len, PacketBuilder()
                                      .ipv6(a6, b6)
                                      .tcp(40000, 443, kTcpAck, seq += 1400, 5)
                                      .payload(payload)
                                      .build()});
  }
  // 60-byte minimum frames with zero padding: ciphertext still under 60
  // bytes (UDP 5 B -> 16 B), and grown past 60 (TCP 1 B, UDP 17 B).
  out.push_back({"udp4/5 padded to 60",
                 PacketBuilder().ipv4(a4, b4).udp(5000, 53).payload("hello").pad_to(60).build()});
  out.push_back(
      {"tcp4/1 padded to 60",
       PacketBuilder().ipv4(a4, b4).tcp(40000, 80, kTcpAck, 9, 9).payload("x").pad_to(60).build()});
  out.push_back({"udp4/17 padded to 60", PacketBuilder()
                                             .ipv4(a4, b4)
                                             .udp(5000, 53)
                                             .payload(random_bytes(rng, 17))
                                             .pad_to(60)
                                             .build()});
  // UDP without a checksum (IPv4 and IPv6).
  out.push_back({"udp4/no checksum", PacketBuilder()
                                         .ipv4(a4, b4)
                                         .udp(7, 7)
                                         .udp_no_checksum()
                                         .payload(random_bytes(rng, 33))
                                         .build()});
  out.push_back({"udp6/no checksum", PacketBuilder()
                                         .ipv6(a6, b6)
                                         .udp(7, 7)
                                         .udp_no_checksum()
                                         .payload(random_bytes(rng, 9))
                                         .build()});
  // Options, extension headers and a VLAN tag move the payload around.
  const uint8_t ip_options[] = {0x94, 0x04, 0x00, 0x00};                           // router alert
  const uint8_t tcp_options[] = {0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02};  // MSS, SACK ok
  out.push_back({"tcp4/options", PacketBuilder()
                                     .ipv4(a4, b4)
                                     .ipv4_options(ip_options)
                                     .tcp(1, 2, kTcpAck, 12345, 1)
                                     .tcp_options(tcp_options)
                                     .payload(random_bytes(rng, 100))
                                     .build()});
  out.push_back({"udp6/extension headers", PacketBuilder()
                                               .ipv6(a6, b6)
                                               .ipv6_hop_by_hop(8)
                                               .ipv6_dest_options(16)
                                               .udp(3, 4)
                                               .payload(random_bytes(rng, 50))
                                               .build()});
  out.push_back(
      {"vlan/udp4",
       PacketBuilder().vlan(10).ipv4(a4, b4).udp(9, 9).payload(random_bytes(rng, 31)).build()});
  // Not transcoded: ICMP and a first IPv4 fragment pass through unchanged.
  out.push_back(
      {"icmp4", PacketBuilder().ipv4(a4, b4).icmp(8, 0, 0x10001).payload("ping").build()});
  out.push_back({"udp4 fragment", PacketBuilder()
                                      .ipv4(a4, b4)
                                      .ipv4_fragment(0, true)
                                      .udp(5000, 53)
                                      .payload(random_bytes(rng, 40))
                                      .build()});
  return out;
}

// A frame is transcoded iff it is unfragmented TCP/UDP with a payload.
bool transcodable(const std::vector<uint8_t>& f) {
  const std::optional<Layout> l = inspect(f);
  if (!l || l->payload == l->end) return false;
  if (l->ipv4 && (be16(f, l->l3 + 6) & 0x3fff) != 0) return false;  // fragment
  return true;
}

// Checks an encrypted frame against its plaintext original.
void expect_valid_ciphertext(const std::vector<uint8_t>& plain,
                             const std::vector<uint8_t>& cipher) {
  const Layout p = inspect(plain).value();
  const std::optional<Layout> c = inspect(cipher);
  ASSERT_TRUE(c);
  const size_t n = p.end - p.payload;
  const size_t ct = c->end - c->payload;
  EXPECT_EQ(c->payload, p.payload);
  EXPECT_EQ(ct % 16, 0u);
  EXPECT_EQ(ct, (n / 16 + 1) * 16);
  EXPECT_TRUE(headers_valid(cipher));
  EXPECT_EQ(invariant_headers(cipher, *c), invariant_headers(plain, p));
  if (p.proto == 17) {
    EXPECT_EQ(be16(cipher, c->l4 + 6) == 0, be16(plain, p.l4 + 6) == 0);
  }
  // The ciphertext is not the PKCS#7-padded plaintext.
  std::vector<uint8_t> padded(plain.begin() + static_cast<std::ptrdiff_t>(p.payload),
                              plain.begin() + static_cast<std::ptrdiff_t>(p.end));
  padded.resize(ct, static_cast<uint8_t>(ct - n));
  EXPECT_FALSE(std::equal(padded.begin(), padded.end(),
                          cipher.begin() + static_cast<std::ptrdiff_t>(c->payload)));
  // Frame length: the padding rule of aes.cc.
  const bool was_padded = plain.size() > p.end;
  EXPECT_EQ(cipher.size(), was_padded ? std::max<size_t>(60, c->end + 1) : c->end);
  for (size_t i = c->end; i < cipher.size(); ++i) EXPECT_EQ(cipher[i], 0) << "padding byte " << i;
}

// ---- round trip through two switches --------------------------------------------------

std::unique_ptr<Switch> make_switch(bool coalesce, uint32_t argument,
                                    const nlohmann::json& service_config) {
  SwitchConfig cfg;
  cfg.datapath.coalesce = coalesce;
  cfg.service_config = service_config;
  auto created = Switch::create(cfg);
  if (!created) throw std::runtime_error("Switch::create: " + created.error());
  const std::string text = "table=0,sf_stage=0,actions=softflow:aes:" + std::to_string(argument) +
                           "\n"
                           "table=0,sf_stage=1,sf_action=aes,sf_metadata=1,actions=output:2\n";
  auto rules = parse_flows(text);
  if (!rules) throw std::runtime_error("parse_flows: " + rules.error());
  Status s = created.value()->add_flows(*rules);
  if (!s) throw std::runtime_error("add_flows: " + s.message());
  return std::move(created.value());
}

struct RoundTripCase {
  bool coalesce;
  const char* config;  // JSON service configuration
};
void PrintTo(const RoundTripCase& c, std::ostream* os) {
  *os << (c.coalesce ? "coalescing on, " : "coalescing off, ") << c.config;
}

class AesRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(AesRoundTrip, EncryptThenDecryptRestoresEveryFrame) {
  const RoundTripCase& tc = GetParam();
  const nlohmann::json config = nlohmann::json::parse(tc.config);
  const std::vector<TestFrame> originals = round_trip_frames(test::test_seed(4242));
  std::vector<Frame> input;
  // Twice, so later packets of each megaflow take the cached (and, with
  // coalescing, the coalesced) path.
  for (int pass = 0; pass < 2; ++pass)
    for (const TestFrame& tf : originals)
      input.push_back(test::frame(1, tf.bytes, 1000 + input.size()));

  FramePool pool(2 * kMaxBatch);
  std::unique_ptr<Switch> encryptor = make_switch(tc.coalesce, 1, config);
  std::unique_ptr<Switch> decryptor = make_switch(tc.coalesce, 2, config);
  MemoryPorts encrypted_out({1, 2}), decrypted_out({1, 2});
  encryptor->datapath().set_sink(&encrypted_out);
  decryptor->datapath().set_sink(&decrypted_out);

  EXPECT_EQ(run_frames(encryptor->datapath(), input, pool), 0u);
  const std::vector<Frame>& middle = encrypted_out.sent(2);
  ASSERT_EQ(middle.size(), input.size()) << test::drops_string(encryptor->total_stats());
  std::vector<Frame> second;
  for (const Frame& f : middle) second.push_back(test::frame(1, f.bytes, f.timestamp_ns));
  EXPECT_EQ(run_frames(decryptor->datapath(), second, pool), 0u);
  const std::vector<Frame>& final_frames = decrypted_out.sent(2);
  ASSERT_EQ(final_frames.size(), input.size()) << test::drops_string(decryptor->total_stats());

  size_t transcoded = 0;
  uint64_t ciphertext_bytes = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string& name = originals[i % originals.size()].name;
    SCOPED_TRACE("frame " + std::to_string(i) + " (" + name + ")");
    const std::vector<uint8_t>& original = input[i].bytes;
    EXPECT_EQ(final_frames[i].bytes, original)
        << "\n  got      " << test::hex_bytes(final_frames[i].bytes) << "\n  expected "
        << test::hex_bytes(original);
    if (transcodable(original)) {
      ++transcoded;
      expect_valid_ciphertext(original, middle[i].bytes);
      if (const std::optional<Layout> c = inspect(middle[i].bytes))
        ciphertext_bytes += c->end - c->payload;
    } else {
      EXPECT_EQ(middle[i].bytes, original) << "passed through unchanged";
    }
  }
  const nlohmann::json enc = encryptor->services().stats().at("aes");
  const nlohmann::json dec = decryptor->services().stats().at("aes");
  EXPECT_EQ(enc.at("encrypted").get<uint64_t>(), transcoded);
  EXPECT_EQ(dec.at("decrypted").get<uint64_t>(), transcoded);
  EXPECT_EQ(enc.at("skipped").get<uint64_t>(), input.size() - transcoded);
  EXPECT_EQ(dec.at("bad_padding").get<uint64_t>(), 0u);
  EXPECT_EQ(enc.at("bytes").get<uint64_t>(), ciphertext_bytes);
  EXPECT_EQ(dec.at("bytes").get<uint64_t>(), ciphertext_bytes);
  EXPECT_EQ(enc.at("default_key").get<bool>(),
            !config.contains("aes") || !config["aes"].contains("key"));
  if (tc.coalesce) {
    EXPECT_GT(encryptor->total_stats().coalesced, 0u);
    EXPECT_GT(decryptor->total_stats().coalesced, 0u);
  } else {
    EXPECT_EQ(encryptor->total_stats().coalesced, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Aes, AesRoundTrip,
    ::testing::Values(RoundTripCase{true, "{}"}, RoundTripCase{false, "{}"},
                      RoundTripCase{
                          true,
                          R"({"aes": {"key": "000102030405060708090A0B0C0D0E0F", "iv": "flow"}})"},
                      RoundTripCase{false, R"({"aes": {"key": "000102030405060708090a0b0c0d0e0f",
                                          "iv": "f0e0d0c0b0a090807060504030201000"}})"}),
    [](const ::testing::TestParamInfo<RoundTripCase>& param) {
      return std::string(param.param.coalesce ? "Coalesce" : "NoCoalesce") + "_" +
             std::to_string(param.index);
    });

// ---- the service on single packets ------------------------------------------------------

class AesServiceTest : public ::testing::Test {
 protected:
  std::unique_ptr<Service> make(const nlohmann::json& config = nlohmann::json::object()) {
    return ServiceRegistry::instance().create(service_id("aes"), config);
  }
  // Loads and parses 'frame' into a pool buffer.
  Packet load(const std::vector<uint8_t>& frame) {
    Packet p;
    EXPECT_TRUE(pool_.load(p, frame, 1));
    parse_packet(p);
    loaded_.push_back(p);
    return p;
  }
  // Runs one packet through the service; returns sf_metadata.
  static uint32_t run(Service& svc, Packet& p, uint32_t argument) {
    Packet* batch[] = {&p};
    p.sf_argument = argument;
    p.sf_coalesce = false;
    p.key.sf_metadata = 0xdead;
    svc.process(batch, argument);
    EXPECT_EQ(p.sf_coalesce, p.key.sf_metadata == 1);
    return p.key.sf_metadata;
  }
  static std::vector<uint8_t> bytes(const Packet& p) { return {p.data, p.data + p.len}; }
  static uint64_t stat(const Service& svc, const char* name) {
    return svc.stats().at(name).get<uint64_t>();
  }
  void TearDown() override {
    for (Packet& p : loaded_) pool_.release(p);
  }

  FramePool pool_{64};
  std::vector<Packet> loaded_;
};

TEST_F(AesServiceTest, NistVectorThroughThePacketPath) {
  // Fixed IV = the NIST IV, default key = the NIST key: the first four
  // ciphertext blocks of a 64-byte payload are F.2.1's, then a full block
  // of PKCS#7 padding.
  auto svc = make({{"iv", kNistIv}});
  Packet p = load(PacketBuilder().ipv4(1, 2).udp(1, 2).payload(from_hex(kNistPlain)).build());
  ASSERT_EQ(run(*svc, p, 1), 1u);
  const std::vector<uint8_t> out = bytes(p);
  const std::vector<uint8_t> expected = from_hex(kNistCipher);
  ASSERT_EQ(out.size(), 14u + 20 + 8 + 80);
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), out.begin() + 42));
  EXPECT_TRUE(headers_valid(out));
  EXPECT_EQ(svc->stats().at("iv"), "fixed");
  EXPECT_EQ(svc->stats().at("default_key"), true);
}

TEST_F(AesServiceTest, UdpChecksumComputedAsZeroIsSentAsAllOnes) {
  // With a fixed IV the ciphertext does not depend on the ports, so the
  // source port can be chosen to make the encrypted packet's checksum sum
  // come out as 0xffff: port = the checksum it gets with port 0.
  auto svc = make({{"iv", "00000000000000000000000000000001"}});
  const std::string payload = "a payload of some length";
  auto frame_with_port = [&](uint16_t port) {
    return PacketBuilder().ipv6(test::v6(1), test::v6(2)).udp(port, 53).payload(payload).build();
  };
  constexpr size_t kChecksum = 14 + 40 + 6;
  Packet probe = load(frame_with_port(0));
  ASSERT_EQ(run(*svc, probe, 1), 1u);
  const uint16_t port = be16(bytes(probe), kChecksum);
  const std::vector<uint8_t> original = frame_with_port(port);
  ASSERT_NE(be16(original, kChecksum), 0);
  Packet p = load(original);
  ASSERT_EQ(run(*svc, p, 1), 1u);
  EXPECT_EQ(be16(bytes(p), kChecksum), 0xffff);
  EXPECT_TRUE(headers_valid(bytes(p)));
  ASSERT_EQ(run(*svc, p, 2), 1u);
  EXPECT_EQ(bytes(p), original);
}

TEST_F(AesServiceTest, TailroomIsCheckedAndKeptConsistent) {
  auto svc = make();
  const std::vector<uint8_t> frame = PacketBuilder().ipv4(1, 2).udp(1, 2).payload("12345").build();
  // 5 bytes grow to 16: 11 bytes of tailroom are needed.
  for (uint32_t tailroom : {0u, 10u}) {
    Packet p = load(frame);
    p.tailroom = tailroom;
    EXPECT_EQ(run(*svc, p, 1), 0u) << "tailroom " << tailroom;
    EXPECT_EQ(bytes(p), frame);
    EXPECT_EQ(p.tailroom, tailroom);
  }
  EXPECT_EQ(stat(*svc, "no_room"), 2u);
  Packet p = load(frame);
  p.tailroom = 11;
  ASSERT_EQ(run(*svc, p, 1), 1u);
  EXPECT_EQ(p.len, frame.size() + 11);
  EXPECT_EQ(p.tailroom, 0u);
  ASSERT_EQ(run(*svc, p, 2), 1u);
  EXPECT_EQ(bytes(p), frame);
  EXPECT_EQ(p.tailroom, 11u);
}

TEST_F(AesServiceTest, EthernetPaddingIsDroppedWhenGrowing) {
  // A frame ending in 22 bytes of trailer after its datagram (at 100): the
  // trailer goes, and only the one-byte "was padded" marker follows the
  // grown datagram.
  auto svc = make();
  std::vector<uint8_t> frame =
      PacketBuilder().ipv4(1, 2).udp(1, 2).payload(std::string(58, 'a')).pad_to(122).build();
  Packet p = load(frame);
  ASSERT_EQ(run(*svc, p, 1), 1u);
  EXPECT_EQ(p.len, 42u + 64 + 1);  // headers, ciphertext, marker
  EXPECT_TRUE(headers_valid(bytes(p)));
  ASSERT_EQ(run(*svc, p, 2), 1u);
  // Decrypted: the datagram is the original's; the trailer is not kept.
  std::vector<uint8_t> expected(frame.begin(), frame.begin() + 100);
  expected.push_back(0);
  EXPECT_EQ(bytes(p), expected);
}

TEST_F(AesServiceTest, CorruptedCiphertextIsLeftAlone) {
  auto svc = make();
  const std::vector<uint8_t> frame =
      PacketBuilder().ipv4(1, 2).tcp(1, 2, kTcpAck, 5, 6).payload(std::string(17, 'z')).build();
  Packet p = load(frame);
  ASSERT_EQ(run(*svc, p, 1), 1u);
  ASSERT_EQ(p.len, frame.size() + 15);
  // 17 bytes: the last plaintext block ends in padding byte 15.  Flipping the
  // previous ciphertext block's last byte by 15 turns it into 0 (CBC).
  p.data[p.len - 17] ^= 15;
  const std::vector<uint8_t> corrupted = bytes(p);
  EXPECT_EQ(run(*svc, p, 2), 0u);
  EXPECT_EQ(bytes(p), corrupted);
  EXPECT_EQ(stat(*svc, "bad_padding"), 1u);
}

TEST_F(AesServiceTest, BadPaddingVariantsAreLeftAlone) {
  // A fixed IV lets the test build ciphertexts with chosen plaintext padding.
  const aes::Block iv = block_from_hex("00112233445566778899aabbccddeeff");
  auto svc = make({{"iv", "00112233445566778899aabbccddeeff"}});
  auto with_plain_block = [&](std::vector<uint8_t> last_block) {
    std::vector<uint8_t> cipher(16);
    EXPECT_TRUE(aes::aes128_cbc(aes::kDefaultKey, iv, last_block, cipher, true));
    return PacketBuilder().ipv4(1, 2).udp(1, 2).payload(cipher).build();
  };
  std::vector<std::vector<uint8_t>> frames;
  std::vector<uint8_t> blk(16, 'p');
  blk[15] = 0;  // pad 0
  frames.push_back(with_plain_block(blk));
  blk[15] = 17;  // pad > 16
  frames.push_back(with_plain_block(blk));
  blk[15] = 3;  // pad 3, but the byte before is not 3
  blk[14] = 3;
  frames.push_back(with_plain_block(blk));
  frames.push_back(
      PacketBuilder().ipv4(1, 2).udp(1, 2).payload(std::string(20, 'c')).build());  // not whole
                                                                                    // blocks
  for (const auto& f : frames) {
    Packet p = load(f);
    EXPECT_EQ(run(*svc, p, 2), 0u);
    EXPECT_EQ(bytes(p), f);
  }
  EXPECT_EQ(stat(*svc, "bad_padding"), frames.size());
  // And a good one: pad 3 done right.
  blk[13] = 3;
  Packet p = load(with_plain_block(blk));
  EXPECT_EQ(run(*svc, p, 2), 1u);
  EXPECT_EQ(p.len, 42u + 13);
}

TEST_F(AesServiceTest, UnknownArgumentsAreCountedAndLeaveThePacket) {
  auto svc = make();
  const std::vector<uint8_t> frame = PacketBuilder().ipv4(1, 2).udp(1, 2).payload("abc").build();
  for (uint32_t arg : {0u, 3u, 0xffffffffu}) {
    Packet p = load(frame);
    EXPECT_EQ(run(*svc, p, arg), 0u) << arg;
    EXPECT_EQ(bytes(p), frame);
  }
  EXPECT_EQ(stat(*svc, "bad_argument"), 3u);
}

TEST_F(AesServiceTest, MalformedPacketsAreLeftAlone) {
  auto svc = make();
  std::vector<std::vector<uint8_t>> frames;
  // UDP length shorter than the IP payload says.
  std::vector<uint8_t> f = PacketBuilder().ipv4(1, 2).udp(1, 2).payload("0123456789").build();
  f[14 + 20 + 5] -= 2;
  frames.push_back(f);
  // IPv4 total length longer than the frame.
  f = PacketBuilder().ipv4(1, 2).tcp(1, 2).payload("0123456789").build();
  f[14 + 3] += 4;
  frames.push_back(f);
  // TCP data offset below 5.
  f = PacketBuilder().ipv4(1, 2).tcp(1, 2).payload("0123456789").build();
  f[14 + 20 + 12] = 0x40;
  frames.push_back(f);
  for (const auto& frame : frames) {
    for (uint32_t arg : {1u, 2u}) {
      Packet p = load(frame);
      EXPECT_EQ(run(*svc, p, arg), 0u);
      EXPECT_EQ(bytes(p), frame);
    }
  }
  EXPECT_EQ(stat(*svc, "malformed"), 2 * frames.size());
}

TEST_F(AesServiceTest, EveryTruncationIsSafe) {
  // Every prefix of plaintext and ciphertext frames, both directions: no
  // out-of-bounds access (ASan), and a packet that is not done is unchanged.
  auto svc = make();
  std::vector<std::vector<uint8_t>> frames;
  for (const TestFrame& tf : round_trip_frames(7))
    if (tf.bytes.size() < 300) frames.push_back(tf.bytes);
  const size_t n_plain = frames.size();
  for (size_t i = 0; i < n_plain; ++i) {
    Packet p = load(frames[i]);
    if (run(*svc, p, 1) == 1) frames.push_back(bytes(p));
  }
  for (const auto& frame : frames) {
    for (size_t len = 0; len <= frame.size(); ++len) {
      const std::vector<uint8_t> prefix(frame.begin(),
                                        frame.begin() + static_cast<std::ptrdiff_t>(len));
      for (uint32_t arg : {1u, 2u}) {
        Packet p;
        ASSERT_TRUE(pool_.load(p, prefix, 1));
        parse_packet(p);
        const uint32_t capacity = p.len + p.tailroom;
        if (run(*svc, p, arg) == 0) {
          EXPECT_EQ(bytes(p), prefix) << "len " << len << " arg " << arg;
        }
        EXPECT_EQ(p.len + p.tailroom, capacity);
        pool_.release(p);
      }
    }
  }
  EXPECT_GT(stat(*svc, "malformed"), 0u);
}

TEST_F(AesServiceTest, IvSchemes) {
  const std::string payload(32, 'q');
  auto seg = [&](uint32_t seq, uint16_t sport) {
    return PacketBuilder().ipv4(1, 2).tcp(sport, 80, kTcpAck, seq, 1).payload(payload).build();
  };
  auto ciphertext = [&](Service& svc, const std::vector<uint8_t>& frame) {
    Packet p = load(frame);
    EXPECT_EQ(run(svc, p, 1), 1u);
    return std::vector<uint8_t>(p.data + 54, p.data + p.len);
  };
  // Per-flow IV: the sequence number and the ports change the ciphertext;
  // the same segment encrypts the same way.
  auto flow = make();
  EXPECT_EQ(flow->stats().at("iv"), "flow");
  EXPECT_EQ(ciphertext(*flow, seg(1, 1000)), ciphertext(*flow, seg(1, 1000)));
  EXPECT_NE(ciphertext(*flow, seg(1, 1000)), ciphertext(*flow, seg(2, 1000)));
  EXPECT_NE(ciphertext(*flow, seg(1, 1000)), ciphertext(*flow, seg(1, 1001)));
  // Fixed IV: only the payload matters.
  auto fixed = make({{"iv", "0f0e0d0c0b0a09080706050403020100"}});
  EXPECT_EQ(ciphertext(*fixed, seg(1, 1000)), ciphertext(*fixed, seg(2, 1001)));
  // Another key, another ciphertext.
  auto keyed = make({{"key", "ffeeddccbbaa99887766554433221100"}});
  EXPECT_EQ(keyed->stats().at("default_key"), false);
  EXPECT_NE(ciphertext(*keyed, seg(1, 1000)), ciphertext(*flow, seg(1, 1000)));
}

TEST_F(AesServiceTest, PassThroughCases) {
  auto svc = make();
  const std::vector<std::vector<uint8_t>> frames = {
      PacketBuilder().ipv4(1, 2).tcp(1, 2, kTcpSyn).build(),                       // no payload
      PacketBuilder().ipv4(1, 2).icmp(8, 0).payload("ping").build(),               // not TCP/UDP
      PacketBuilder().arp(1, MacAddr{2, 0, 0, 0, 0, 1}, 1, MacAddr{}, 2).build(),  // not IP
      PacketBuilder()
          .ipv6(test::v6(1), test::v6(2))
          .ipv6_fragment(0, true)
          .udp(1, 2)
          .payload("12345678")
          .build(),
  };
  for (const auto& frame : frames) {
    for (uint32_t arg : {1u, 2u}) {
      Packet p = load(frame);
      EXPECT_EQ(run(*svc, p, arg), 1u);
      EXPECT_EQ(bytes(p), frame);
    }
  }
  EXPECT_EQ(stat(*svc, "skipped"), 2 * frames.size());
  EXPECT_EQ(stat(*svc, "encrypted") + stat(*svc, "decrypted"), 0u);
}

TEST(AesConfig, RejectsUnknownKeysAndBadValues) {
  const uint8_t id = service_id("aes");
  auto error_of = [id](const nlohmann::json& config) -> std::string {
    try {
      ServiceRegistry::instance().create(id, config);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of({{"keys", "00"}}).find("'keys'"), std::string::npos);
  const std::string short_key = error_of({{"key", "0011"}});
  EXPECT_NE(short_key.find("'key'"), std::string::npos) << short_key;
  EXPECT_EQ(short_key.find("0011"), std::string::npos) << "the key is not echoed: " << short_key;
  EXPECT_NE(error_of({{"key", "zz0102030405060708090a0b0c0d0e0f"}}).find("'key'"),
            std::string::npos);
  EXPECT_NE(error_of({{"key", 42}}).find("'key'"), std::string::npos);
  const std::string bad_iv = error_of({{"iv", "random"}});
  EXPECT_NE(bad_iv.find("'iv'"), std::string::npos) << bad_iv;
  EXPECT_NE(bad_iv.find("random"), std::string::npos) << bad_iv;
  EXPECT_NE(error_of(nlohmann::json::array()), "");
  EXPECT_EQ(error_of({{"key", "000102030405060708090a0b0c0d0e0f"}, {"iv", "flow"}}), "");
  // Through the switch configuration, the error names the service.
  auto set = ServiceSet::create({{"aes", {{"colour", "blue"}}}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().find("colour"), std::string::npos) << set.error();
}

// ---- threads ----------------------------------------------------------------------------

TEST(AesThreads, ConcurrentEncryptionMatchesOneThread) {
  // One instance shared by four threads (each gets its own EVP contexts):
  // every thread's output equals the single-threaded reference.
  auto svc = ServiceRegistry::instance().create(service_id("aes"), nlohmann::json::object());
  std::mt19937_64 rng(test::test_seed(99));
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 96; ++i) {
    const std::vector<uint8_t> payload = random_bytes(rng, 1 + rng() % 1200);
    const uint16_t sport = static_cast<uint16_t>(1000 + rng() % 16);
    frames.push_back(i % 2 ? PacketBuilder()
                                 .ipv4(1, 2)
                                 .tcp(sport, 80, kTcpAck, static_cast<uint32_t>(rng()))
                                 .payload(payload)
                                 .build()
                           : PacketBuilder()
                                 .ipv6(test::v6(1), test::v6(2))
                                 .udp(sport, 53)
                                 .payload(payload)
                                 .build());
  }
  // Processes all frames in batches of kMaxBatch with 'argument'.
  auto transcode_all = [&svc](const std::vector<std::vector<uint8_t>>& in, uint32_t argument) {
    FramePool pool(kMaxBatch);
    std::vector<std::vector<uint8_t>> out;
    for (size_t i = 0; i < in.size(); i += kMaxBatch) {
      std::array<Packet, kMaxBatch> packets;
      std::array<Packet*, kMaxBatch> batch;
      const size_t n = std::min(kMaxBatch, in.size() - i);
      for (size_t k = 0; k < n; ++k) {
        pool.load(packets[k], in[i + k], 1);
        parse_packet(packets[k]);
        batch[k] = &packets[k];
      }
      svc->process({batch.data(), n}, argument);
      for (size_t k = 0; k < n; ++k) {
        out.emplace_back(packets[k].data, packets[k].data + packets[k].len);
        pool.release(packets[k]);
      }
    }
    return out;
  };
  const auto reference = transcode_all(frames, 1);
  EXPECT_EQ(transcode_all(reference, 2), frames);

  constexpr int kThreads = 4;
  constexpr int kRounds = 20;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const auto encrypted = transcode_all(frames, 1);
        if (encrypted != reference) ++mismatches[t];
        if (transcode_all(encrypted, 2) != frames) ++mismatches[t];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  EXPECT_EQ(svc->stats().at("encrypted").get<uint64_t>(), (1 + kThreads * kRounds) * frames.size());
  EXPECT_EQ(svc->stats().at("errors").get<uint64_t>(), 0u);
}

}  // namespace
}  // namespace softflow

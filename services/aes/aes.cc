// aes (paper §7.2, Pipeline B): a payload transcoder.  AES-128-CBC over the
// TCP/UDP payload with OpenSSL's EVP API; `softflow:aes:1` encrypts,
// `softflow:aes:2` decrypts.  It is a benchmark transcoder that costs what
// IPsec-style payload encryption costs, NOT a secure protocol: there is no
// integrity protection, the IV scheme below is deterministic, and the
// default key is public.
//
// What a packet becomes:
//  - The payload (from payload_ofs to the end of the IP datagram as the IPv4
//    total length / IPv6 payload length says) is replaced by its CBC
//    encryption with PKCS#7 padding, so it grows by 1-16 bytes; decryption
//    checks the padding and shrinks it back.  IPv4 total length, IPv6 payload
//    length, UDP length, the IPv4 header checksum and the TCP/UDP checksum
//    are updated incrementally (RFC 1624), so a wrong checksum stays wrong
//    (a switch must not launder corruption), a UDP checksum of 0 ("none")
//    stays 0, and decrypt(encrypt(x)) restores every byte.
//  - Ethernet padding: the output frame is padded iff the input frame was
//    (carried bytes after the IP datagram).  A padded output is zero-filled
//    to 60 bytes, or carries one zero byte after the datagram when that
//    already reaches 60, so that "was padded" survives the trip and a
//    60-byte minimum frame whose ciphertext outgrew 60 bytes is restored to
//    60 bytes.  An unpadded input (veth carries runts) stays unpadded.  So
//    decrypt(encrypt(frame)) == frame for every unpadded frame and every
//    zero-padded minimum frame; other trailers (an FCS, padding beyond 60
//    bytes, non-zero padding) are not preserved.
//  - The flow key is unchanged (only payload, lengths and checksums change),
//    so a packet that was transcoded, or passed through untouched, may be
//    coalesced.
//
// sf_metadata: 1 = done or passed through on purpose (empty payload, not
// TCP/UDP, an IP fragment: its L4 checksum covers bytes this frame does not
// have), 0 = not done, packet unchanged (no room to grow, bad ciphertext or
// padding, a malformed packet, an unknown argument).  An OpenSSL error also
// gives 0; if it strikes during the payload pass the payload may be garbled
// (flows should drop what has metadata 0).
//
// IV scheme ("iv": "flow", the default): IV = AES-CBC-MAC_key over three
// blocks made of fields that transcoding does not change, so the decryptor
// derives the same IV: source and destination address (16 bytes each, IPv4
// in the first 4), then the ports, the IP protocol, the IP version and, for
// TCP, the sequence number.  Every TCP segment gets its own IV; all packets
// of a UDP flow share one.  A middlebox that rewrites any of these fields
// (e.g. Pipeline B's NAT) must run after encryption and be undone before
// decryption.  "iv": "<32 hex digits>" uses one fixed IV for every packet.
//
// Between an encryptor and its decryptor a TCP segment carries more bytes
// than its sequence numbers account for; only the decrypted stream is
// consistent again.
//
// stats(): encrypted, decrypted, bytes (ciphertext bytes through AES),
// skipped, malformed, no_room, bad_padding, errors, bad_argument, iv ("flow"
// or "fixed"), default_key (the public test key is in use).
//
// Configuration (the object under "aes"):
//   key  32 hex digits, the AES-128 key.  Default: aes::kDefaultKey (the NIST
//        SP 800-38A test key; stats() says default_key: true).
//   iv   "flow" (default) or 32 hex digits.
//
// Threads: each thread keeps its own EVP contexts for each service instance
// (a small thread_local cache keyed by an instance serial number), with the
// key schedule set once; per packet only the IV is reset.  Counters are
// summed per batch and added atomically once per batch.
#include "aes.h"

#include <arpa/inet.h>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "softflow/packet_ops.h"
#include "softflow/protocols.h"
#include "softflow/service.h"

namespace softflow {
namespace aes {

CbcCipher::~CbcCipher() { EVP_CIPHER_CTX_free(ctx_); }

CbcCipher& CbcCipher::operator=(CbcCipher&& other) noexcept {
  if (this != &other) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

bool CbcCipher::init(const Block& key, bool encrypt) {
  if (ctx_ == nullptr) ctx_ = EVP_CIPHER_CTX_new();
  if (ctx_ != nullptr &&
      EVP_CipherInit_ex(ctx_, EVP_aes_128_cbc(), nullptr, key.data(), nullptr, encrypt ? 1 : 0) ==
          1 &&
      EVP_CIPHER_CTX_set_padding(ctx_, 0) == 1)
    return true;
  EVP_CIPHER_CTX_free(ctx_);
  ctx_ = nullptr;
  return false;
}

bool CbcCipher::crypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len) {
  if (ctx_ == nullptr || len % kBlockSize != 0 || len > static_cast<size_t>(INT32_MAX))
    return false;
  // Null cipher and key keep the key schedule; -1 keeps the direction.
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, -1) != 1) return false;
  int written = 0;
  if (EVP_CipherUpdate(ctx_, out, &written, in, static_cast<int>(len)) != 1) return false;
  // Without padding and with whole blocks, Update has produced everything.
  return static_cast<size_t>(written) == len;
}

bool aes128_cbc(const Block& key, const Block& iv, std::span<const uint8_t> in,
                std::span<uint8_t> out, bool encrypt) {
  if (in.size() != out.size()) return false;
  CbcCipher cipher;
  return cipher.init(key, encrypt) && cipher.crypt(iv.data(), in.data(), out.data(), in.size());
}

}  // namespace aes

namespace {

constexpr uint32_t kEthMinFrame = 60;  // without FCS
constexpr uint32_t kIpv4TotalLenOffset = 2;
constexpr uint32_t kIpv4ChecksumOffset = 10;
constexpr uint32_t kIpv4SrcOffset = 12;
constexpr uint32_t kIpv6PayloadLenOffset = 4;
constexpr uint32_t kIpv6SrcOffset = 8;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kTcpSeqOffset = 4;
constexpr uint32_t kTcpChecksumOffset = 16;
constexpr uint32_t kUdpLenOffset = 4;
constexpr uint32_t kUdpChecksumOffset = 6;
constexpr uint32_t kMaxLength16 = 0xffff;  // IPv4 total, IPv6 payload, UDP length

constexpr uint32_t kArgEncrypt = 1;
constexpr uint32_t kArgDecrypt = 2;

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline uint32_t negate16(uint32_t v) { return ~v & 0xffff; }  // one's complement -v

// RFC 1624 eqn. 3 for a 16-bit field at 'field' covered by the checksum at
// 'checksum' that changes from old_value to new_value.
void update_checksum16(uint8_t* checksum, uint16_t old_value, uint16_t new_value) {
  const uint32_t sum = negate16(load_be16(checksum)) + negate16(old_value) + new_value;
  store_be16(checksum, checksum_fold(sum));
}

// ---- configuration ---------------------------------------------------------------

struct AesConfig {
  aes::Block key = aes::kDefaultKey;
  std::optional<aes::Block> fixed_iv;  // nullopt: the per-flow IV scheme
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 32 hex digits -> 16 bytes.  'secret' keeps the value out of the message
// (it names what is wrong with it instead).
aes::Block parse_hex_block(const char* name, const nlohmann::json& value, bool secret) {
  const std::string shown = secret ? std::string("(value withheld)") : value.dump();
  if (!value.is_string())
    throw std::runtime_error(std::string("aes: '") + name +
                             "' must be a string of 32 hex digits, got " + shown);
  const std::string& text = value.get_ref<const std::string&>();
  aes::Block out{};
  bool ok = text.size() == 2 * aes::kBlockSize;
  for (size_t i = 0; ok && i < aes::kBlockSize; ++i) {
    const int hi = hex_digit(text[2 * i]);
    const int lo = hex_digit(text[2 * i + 1]);
    ok = hi >= 0 && lo >= 0;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (!ok)
    throw std::runtime_error(std::string("aes: '") + name + "' must be 32 hex digits, got " +
                             shown + " (" + std::to_string(text.size()) + " characters)");
  return out;
}

AesConfig parse_config(const nlohmann::json& config) {
  AesConfig out;
  if (config.is_null()) return out;
  if (!config.is_object()) throw std::runtime_error("aes: configuration must be a JSON object");
  for (const auto& [name, value] : config.items()) {
    if (name == "key") {
      out.key = parse_hex_block("key", value, /*secret=*/true);
    } else if (name == "iv") {
      if (value.is_string() && value.get_ref<const std::string&>() == "flow")
        out.fixed_iv.reset();
      else
        out.fixed_iv = parse_hex_block("iv", value, /*secret=*/false);
    } else {
      throw std::runtime_error("aes: unknown configuration key '" + name + "' (known: key, iv)");
    }
  }
  return out;
}

// ---- per-thread cipher contexts ------------------------------------------------------

struct CipherPair {
  uint64_t owner = 0;  // service instance serial; 0 = free
  aes::CbcCipher encrypt;
  aes::CbcCipher decrypt;
};

// A few slots per thread: a thread serves one or two aes instances in
// practice.  Owners are serial numbers, never reused, so a slot left by a
// destroyed instance can never be taken for a new one with another key; it
// is recycled round-robin (or freed at thread exit).  Allocation happens
// only when a thread first meets an instance.
class ThreadCiphers {
 public:
  CipherPair* get(uint64_t owner, const aes::Block& key) {
    for (CipherPair& slot : slots_)
      if (slot.owner == owner) return &slot;
    CipherPair& slot = slots_[next_victim_];
    next_victim_ = (next_victim_ + 1) % slots_.size();
    slot.owner = 0;
    if (!slot.encrypt.init(key, /*encrypt=*/true) || !slot.decrypt.init(key, /*encrypt=*/false))
      return nullptr;
    slot.owner = owner;
    return &slot;
  }

 private:
  std::array<CipherPair, 8> slots_;
  size_t next_victim_ = 0;
};

thread_local ThreadCiphers t_ciphers;
std::atomic<uint64_t> g_next_instance_serial{1};

// ---- the service -----------------------------------------------------------------------

enum class Outcome : uint8_t {
  kEncrypted,
  kDecrypted,
  kSkipped,     // passed through on purpose (metadata 1)
  kMalformed,   // parse flags, lying lengths
  kNoRoom,      // no tailroom, or a length field would overflow
  kBadPadding,  // ciphertext not whole blocks, or bad PKCS#7 padding
  kError,       // OpenSSL failed
  kBadArgument,
  kCount
};

// Where the transcoded bytes are in a TCP/UDP packet.
struct Layout {
  uint32_t l3;
  uint32_t l4;
  uint32_t payload;
  uint32_t end;  // end of the IP datagram
  bool ipv4;
  bool udp;
  bool padded;  // the frame carries bytes after the datagram
};

class AesService final : public Service {
 public:
  explicit AesService(const nlohmann::json& config)
      : config_(parse_config(config)), serial_(g_next_instance_serial.fetch_add(1)) {}

  void process(std::span<Packet* const> batch, uint32_t sf_argument) override {
    std::array<uint64_t, static_cast<size_t>(Outcome::kCount)> outcomes{};
    uint64_t bytes = 0;
    CipherPair* ciphers = nullptr;
    if (sf_argument == kArgEncrypt || sf_argument == kArgDecrypt)
      ciphers = t_ciphers.get(serial_, config_.key);
    for (Packet* p : batch) {
      Outcome outcome;
      if (sf_argument != kArgEncrypt && sf_argument != kArgDecrypt)
        outcome = Outcome::kBadArgument;
      else if (ciphers == nullptr)
        outcome = Outcome::kError;
      else
        outcome = transcode(*p, *ciphers, sf_argument == kArgEncrypt, bytes);
      ++outcomes[static_cast<size_t>(outcome)];
      const bool ok = outcome == Outcome::kEncrypted || outcome == Outcome::kDecrypted ||
                      outcome == Outcome::kSkipped;
      p->key.sf_metadata = ok ? 1 : 0;
      p->sf_coalesce = ok;
    }
    for (size_t i = 0; i < outcomes.size(); ++i)
      if (outcomes[i] != 0) counters_[i].fetch_add(outcomes[i], std::memory_order_relaxed);
    if (bytes != 0) bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }

  nlohmann::json stats() const override {
    auto get = [this](Outcome o) {
      return counters_[static_cast<size_t>(o)].load(std::memory_order_relaxed);
    };
    return {{"encrypted", get(Outcome::kEncrypted)},
            {"decrypted", get(Outcome::kDecrypted)},
            {"bytes", bytes_.load(std::memory_order_relaxed)},
            {"skipped", get(Outcome::kSkipped)},
            {"malformed", get(Outcome::kMalformed)},
            {"no_room", get(Outcome::kNoRoom)},
            {"bad_padding", get(Outcome::kBadPadding)},
            {"errors", get(Outcome::kError)},
            {"bad_argument", get(Outcome::kBadArgument)},
            {"iv", config_.fixed_iv ? "fixed" : "flow"},
            {"default_key", config_.key == aes::kDefaultKey}};
  }

 private:
  // Finds the payload of a TCP/UDP packet, or says why there is nothing to
  // transcode.  Reads only bytes the parser vouched for (parse.cc: a set
  // offset means the whole header is inside the frame) and re-checks the
  // bounds it relies on anyway.
  static std::optional<Outcome> locate(const Packet& p, Layout& out) {
    if (p.parse_flags & kParseMalformed) return Outcome::kMalformed;
    if (!p.has_l3()) return Outcome::kSkipped;
    const uint16_t ether_type = ntohs(p.key.dl_type);
    if (ether_type != kEthTypeIpv4 && ether_type != kEthTypeIpv6) return Outcome::kSkipped;
    if (p.key.nw_frag != 0) return Outcome::kSkipped;
    if (!p.has_l4() || (p.key.nw_proto != kProtoTcp && p.key.nw_proto != kProtoUdp))
      return Outcome::kSkipped;
    out.l3 = p.l3_ofs;
    out.l4 = p.l4_ofs;
    out.payload = p.payload_ofs;
    out.ipv4 = ether_type == kEthTypeIpv4;
    out.udp = p.key.nw_proto == kProtoUdp;
    const uint8_t* ip = p.data + out.l3;
    out.end = out.ipv4 ? out.l3 + load_be16(ip + kIpv4TotalLenOffset)
                       : out.l3 + kIpv6HeaderLen + load_be16(ip + kIpv6PayloadLenOffset);
    if (out.payload == kNoOffset || out.l4 >= out.payload || out.payload > out.end ||
        out.end > p.len)
      return Outcome::kMalformed;
    // The UDP length must agree with the IP length, or one of them would be
    // wrong after the payload changes size.
    if (out.udp && load_be16(p.data + out.l4 + kUdpLenOffset) != out.end - out.l4)
      return Outcome::kMalformed;
    out.padded = p.len > out.end;
    if (out.payload == out.end) return Outcome::kSkipped;  // nothing to transcode
    return std::nullopt;
  }

  // The frame length for a datagram that now ends at 'end' (see the file
  // comment on Ethernet padding).
  static uint32_t frame_length(const Layout& l, uint32_t end) {
    return l.padded ? std::max(kEthMinFrame, end + 1) : end;
  }

  // The fixed IV, or the per-flow one: a CBC-MAC over fields that
  // transcoding leaves alone.
  bool packet_iv(const Packet& p, const Layout& l, aes::CbcCipher& encrypt, aes::Block& iv) const {
    if (config_.fixed_iv) {
      iv = *config_.fixed_iv;
      return true;
    }
    uint8_t message[3 * aes::kBlockSize] = {};
    const uint8_t* ip = p.data + l.l3;
    const uint8_t* l4 = p.data + l.l4;
    if (l.ipv4) {
      std::memcpy(message, ip + kIpv4SrcOffset, 4);
      std::memcpy(message + 16, ip + kIpv4SrcOffset + 4, 4);
    } else {
      std::memcpy(message, ip + kIpv6SrcOffset, 16);
      std::memcpy(message + 16, ip + kIpv6SrcOffset + 16, 16);
    }
    std::memcpy(message + 32, l4, 4);  // source and destination port
    message[36] = p.key.nw_proto;
    message[37] = l.ipv4 ? 4 : 6;
    if (!l.udp) std::memcpy(message + 40, l4 + kTcpSeqOffset, 4);
    static constexpr aes::Block kZero{};
    if (!encrypt.crypt(kZero.data(), message, message, sizeof message)) return false;
    std::memcpy(iv.data(), message + 2 * aes::kBlockSize, aes::kBlockSize);
    return true;
  }

  Outcome transcode(Packet& p, CipherPair& ciphers, bool encrypting, uint64_t& bytes) const {
    Layout l;
    if (std::optional<Outcome> early = locate(p, l)) return *early;
    aes::Block iv;
    if (!packet_iv(p, l, ciphers.encrypt, iv)) return Outcome::kError;
    uint8_t* payload = p.data + l.payload;
    const uint32_t old_size = l.end - l.payload;

    uint32_t new_size;
    if (encrypting) {
      new_size = (old_size / aes::kBlockSize + 1) * aes::kBlockSize;
    } else {
      if (old_size % aes::kBlockSize != 0) return Outcome::kBadPadding;
      // Decrypt the last block alone first (its CBC input is the previous
      // ciphertext block, or the IV) to check the padding before the packet
      // is touched.
      const uint8_t* last = payload + old_size - aes::kBlockSize;
      const uint8_t* chain = old_size == aes::kBlockSize ? iv.data() : last - aes::kBlockSize;
      aes::Block plain;
      if (!ciphers.decrypt.crypt(chain, last, plain.data(), aes::kBlockSize))
        return Outcome::kError;
      const uint8_t pad = plain[aes::kBlockSize - 1];
      if (pad == 0 || pad > aes::kBlockSize) return Outcome::kBadPadding;
      for (size_t i = aes::kBlockSize - pad; i < aes::kBlockSize; ++i)
        if (plain[i] != pad) return Outcome::kBadPadding;
      new_size = old_size - pad;
    }
    const uint32_t new_end = l.payload + new_size;
    const uint32_t new_len = frame_length(l, new_end);
    const uint32_t ip_len = l.ipv4 ? new_end - l.l3 : new_end - l.l3 - kIpv6HeaderLen;
    if (new_len > p.len + p.tailroom || ip_len > kMaxLength16 || new_end - l.l4 > kMaxLength16)
      return Outcome::kNoRoom;

    const uint32_t old_sum = checksum_partial(payload, old_size, 0);
    if (encrypting) {
      // PKCS#7: n bytes of value n (the room was checked above).
      const uint8_t pad = static_cast<uint8_t>(new_size - old_size);
      std::memset(payload + old_size, pad, pad);
      if (!ciphers.encrypt.crypt(iv.data(), payload, payload, new_size)) return Outcome::kError;
    } else {
      if (!ciphers.decrypt.crypt(iv.data(), payload, payload, old_size)) return Outcome::kError;
    }
    const uint32_t new_sum = checksum_partial(payload, new_size, 0);
    fix_headers(p, l, new_end, old_sum, new_sum);

    if (new_len > new_end) std::memset(p.data + new_end, 0, new_len - new_end);
    p.tailroom = p.len + p.tailroom - new_len;
    p.len = new_len;
    bytes += encrypting ? new_size : old_size;
    return encrypting ? Outcome::kEncrypted : Outcome::kDecrypted;
  }

  // Lengths and checksums for a payload that changed from 'old_sum' (its
  // one's complement sum) ending at l.end to 'new_sum' ending at new_end.
  static void fix_headers(Packet& p, const Layout& l, uint32_t new_end, uint32_t old_sum,
                          uint32_t new_sum) {
    uint8_t* ip = p.data + l.l3;
    uint8_t* l4 = p.data + l.l4;
    const uint16_t old_l4_len = static_cast<uint16_t>(l.end - l.l4);
    const uint16_t new_l4_len = static_cast<uint16_t>(new_end - l.l4);
    if (l.ipv4) {
      const uint16_t old_total = load_be16(ip + kIpv4TotalLenOffset);
      const uint16_t new_total = static_cast<uint16_t>(new_end - l.l3);
      store_be16(ip + kIpv4TotalLenOffset, new_total);
      update_checksum16(ip + kIpv4ChecksumOffset, old_total, new_total);
    } else {
      store_be16(ip + kIpv6PayloadLenOffset,
                 static_cast<uint16_t>(new_end - l.l3 - kIpv6HeaderLen));
    }
    uint8_t* checksum = l4 + (l.udp ? kUdpChecksumOffset : kTcpChecksumOffset);
    if (l.udp) store_be16(l4 + kUdpLenOffset, new_l4_len);
    if (l.udp && load_be16(checksum) == 0) return;  // "no checksum" stays so
    // The L4 length appears in the pseudo-header and, for UDP, once more in
    // the header; the payload's sum is replaced.  (IPv6's 32-bit
    // pseudo-header length has a zero upper half: lengths stay <= 0xffff.)
    uint32_t sum = negate16(load_be16(checksum)) + negate16(old_l4_len) + new_l4_len +
                   negate16(old_sum) + new_sum;
    if (l.udp) sum += negate16(old_l4_len) + new_l4_len;
    uint16_t result = checksum_fold(sum);
    if (l.udp && result == 0) result = 0xffff;  // a computed 0 is sent as all ones (RFC 768)
    store_be16(checksum, result);
  }

  const AesConfig config_;
  const uint64_t serial_;
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Outcome::kCount)> counters_{};
  std::atomic<uint64_t> bytes_{0};
};

}  // namespace
SF_REGISTER_SERVICE(aes, AesService, "AES-128-CBC payload transcoder (1 encrypts, 2 decrypts)");
}  // namespace softflow

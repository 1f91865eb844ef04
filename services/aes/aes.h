// The aes service's cipher (paper §7.2, Pipeline B): AES-128-CBC through
// OpenSSL's EVP API, without padding (the service adds PKCS#7 itself so that
// it can check it before touching a packet).  Exposed so the NIST known-answer
// tests run the same routine the service runs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace softflow::aes {

inline constexpr size_t kBlockSize = 16;
using Block = std::array<uint8_t, kBlockSize>;  // a key, an IV or one AES block

// The key used when the configuration names none: the AES-128 key of NIST
// SP 800-38A, appendix F (2b7e1516 28aed2a6 abf71588 09cf4f3c).  A test key,
// public by design; stats() reports default_key: true while it is in use.
inline constexpr Block kDefaultKey = {0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
                                      0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c};

// One EVP context with its key schedule for one direction.  The key is set
// once (init); each call of crypt() only resets the IV, which OpenSSL does
// without allocating.  Not thread-safe: one per thread.
class CbcCipher {
 public:
  CbcCipher() = default;
  ~CbcCipher();
  CbcCipher(const CbcCipher&) = delete;
  CbcCipher& operator=(const CbcCipher&) = delete;
  CbcCipher(CbcCipher&& other) noexcept : ctx_(other.ctx_) { other.ctx_ = nullptr; }
  CbcCipher& operator=(CbcCipher&& other) noexcept;

  // Allocates the context and expands the key.  False on an OpenSSL error
  // (the cipher is then unusable).
  bool init(const Block& key, bool encrypt);
  bool ready() const { return ctx_ != nullptr; }
  // CBC over len bytes (a multiple of kBlockSize) starting from 'iv'; 'in'
  // and 'out' may be the same buffer (not otherwise overlapping).  False on
  // an OpenSSL error or a bad length.
  bool crypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len);

 private:
  EVP_CIPHER_CTX* ctx_ = nullptr;
};

// One-shot AES-128-CBC without padding (in.size() == out.size(), a multiple
// of 16), for tests and tools: builds a CbcCipher and calls crypt().
bool aes128_cbc(const Block& key, const Block& iv, std::span<const uint8_t> in,
                std::span<uint8_t> out, bool encrypt);

}  // namespace softflow::aes

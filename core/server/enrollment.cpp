// Token handling and the enrollment decision (see enrollment.hpp).
#include "core/server/enrollment.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <stdexcept>

namespace torii::server {

namespace pb = ::torii::control::v1;

namespace {
void random_bytes(uint8_t* p, size_t n) {
  if (RAND_bytes(p, int(n)) != 1) throw std::runtime_error("RAND_bytes failed");
}
}  // namespace

std::string generate_token() {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t raw[32];
  random_bytes(raw, sizeof raw);
  std::string out = "tt1_";
  // base64url without padding, 6 bits per character.
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      out.push_back(kAlphabet[(acc >> (bits - 6)) & 63]);
      bits -= 6;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

store::TokenHash hash_token(const std::string& token) {
  store::TokenHash h{};
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), h.data());
  return h;
}

bool hashes_equal(const store::TokenHash& a, const store::TokenHash& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string generate_device_id() {
  uint8_t raw[6];
  random_bytes(raw, sizeof raw);
  static const char* kHex = "0123456789abcdef";
  std::string id = "dev-";
  for (uint8_t b : raw) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

EnrollResult enroll(store::Store& store, CertIssuer& issuer, UnixMs now,
                    const std::string& device_id, const std::string& token,
                    const std::vector<uint8_t>& csr_der) {
  EnrollResult r;
  auto refuse = [&](pb::ErrorCode code, std::string kind, std::string message, std::string detail) {
    r.ok = false;
    r.code = code;
    r.audit_kind = std::move(kind);
    r.message = std::move(message);
    r.audit_detail = std::move(detail);
    return r;
  };
  const auto presented = hash_token(token);
  const auto device = store.get_device(device_id);
  const auto stored = store.get_token(device_id);
  // An unknown device and a wrong token look the same to the caller: no oracle for device IDs.
  if (!device || !stored || !hashes_equal(stored->hash, presented))
    return refuse(pb::ERROR_CODE_BAD_TOKEN, "enroll.bad_token",
                  "enrollment refused: the token is not valid for device '" + device_id +
                      "'; check the ID and token printed by `torii device add`",
                  device ? "wrong token" : "unknown device ID");
  if (device->state == store::DeviceState::revoked)
    return refuse(pb::ERROR_CODE_REVOKED, "enroll.revoked",
                  "enrollment refused: device '" + device_id + "' is revoked", "device revoked");
  if (stored->used_at)
    return refuse(pb::ERROR_CODE_BAD_TOKEN, "enroll.token_used",
                  "enrollment refused: this token was already used (tokens are single-use); ask "
                  "the administrator for a new device entry",
                  "token already used");
  if (stored->expires_at <= now)
    return refuse(pb::ERROR_CODE_BAD_TOKEN, "enroll.token_expired",
                  "enrollment refused: this token has expired; ask the administrator for a new "
                  "one",
                  "token expired");
  try {
    r.issued = issuer.issue(csr_der, device_id, device->group, now);
  } catch (const std::invalid_argument& e) {
    return refuse(pb::ERROR_CODE_BAD_CSR, "enroll.bad_csr",
                  std::string("enrollment refused: certificate request rejected: ") + e.what(),
                  e.what());
  }
  if (!store.complete_enrollment(device_id, presented, now, r.issued.serial_hex, r.issued.not_after,
                                 r.issued.cert_der))
    return refuse(pb::ERROR_CODE_BAD_TOKEN, "enroll.token_used",
                  "enrollment refused: this token was already used (tokens are single-use)",
                  "token consumed concurrently");
  r.ok = true;
  r.group = device->group;
  r.audit_kind = "enroll.ok";
  r.audit_detail = "certificate serial " + r.issued.serial_hex;
  return r;
}

}  // namespace torii::server

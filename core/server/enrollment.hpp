// Enrollment (A1): a device proves knowledge of a one-time token and receives a certificate for
// the key it generated itself. Token rules: random, shown once, stored only as SHA-256,
// single-use, expiring; comparisons in constant time. Runs against the Store interface and a
// CertIssuer so it is tested without OpenSSL certificates or SQLite.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/store/store.hpp"
#include "torii/control.pb.h"

namespace torii::server {

// "tt1_" + 43 base64url characters (32 random bytes).
std::string generate_token();
store::TokenHash hash_token(const std::string& token);
bool hashes_equal(const store::TokenHash& a, const store::TokenHash& b);  // constant time
// Random device ID for `torii device add` without an ID: "dev-" + 12 hex digits.
std::string generate_device_id();

struct Issued {
  std::vector<uint8_t> cert_der;
  std::vector<uint8_t> ca_der;
  std::string serial_hex;
  UnixMs not_after = 0;
};

class CertIssuer {
 public:
  virtual ~CertIssuer() = default;
  // Throws std::invalid_argument with the reason for an unusable CSR.
  virtual Issued issue(const std::vector<uint8_t>& csr_der, const std::string& device_id,
                       const std::string& group, UnixMs now) = 0;
};

struct EnrollResult {
  bool ok = false;
  ::torii::control::v1::ErrorCode code = ::torii::control::v1::ERROR_CODE_UNSPECIFIED;
  std::string message;     // for the device: says what is wrong and what to do
  std::string audit_kind;  // "enroll.ok", "enroll.bad_token", "enroll.token_used", ...
  std::string audit_detail;
  std::string group;
  Issued issued;
};

EnrollResult enroll(store::Store& store, CertIssuer& issuer, UnixMs now,
                    const std::string& device_id, const std::string& token,
                    const std::vector<uint8_t>& csr_der);

}  // namespace torii::server

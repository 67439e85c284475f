// torii's PKI on OpenSSL 3: the local CA (ECDSA P-256), server and device certificates, CSRs,
// fingerprints and the identity a device certificate carries (A1, A2). No network I/O here;
// the CA persists itself as PEM files in the server's data directory.
#pragma once
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.hpp"

namespace torii::pki {

class PkiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

using Fingerprint = std::array<uint8_t, 32>;

// SHA-256 of the DER certificate.
Fingerprint fingerprint(const X509* cert);
// Lowercase hex, no separators (64 chars).
std::string fingerprint_hex(const Fingerprint& fp);
// Accepts 64 hex digits, upper or lower case, with or without ':' between bytes.
std::optional<Fingerprint> parse_fingerprint(std::string_view text);

std::vector<uint8_t> to_der(const X509* cert);
std::string to_pem(const X509* cert);
X509Ptr cert_from_der(const uint8_t* data, size_t len);  // nullptr on error
X509Ptr cert_from_pem(std::string_view pem);             // nullptr on error
std::string private_key_to_pem(const EVP_PKEY* key);
PkeyPtr private_key_from_pem(std::string_view pem);  // nullptr on error
PkeyPtr generate_p256_key();

// Device IDs: 1-64 chars of [A-Za-z0-9._-], not starting with '.' or '-'.
bool valid_device_id(std::string_view id);
// Group names follow the same rule.
inline bool valid_group_name(std::string_view n) {
  return valid_device_id(n);
}

// PKCS#10 request for a device key; subject CN = device_id. Signed with the key.
std::vector<uint8_t> make_csr(EVP_PKEY* key, const std::string& device_id);

// What a torii device certificate says about its holder.
struct DeviceIdentity {
  std::string device_id;   // CN, also SAN URI torii:device:<id>
  std::string group;       // OU
  std::string serial_hex;  // lowercase hex
  UnixMs not_before = 0;
  UnixMs not_after = 0;
};
// Reads the identity from a certificate issued by issue_device_cert; nullopt if it is not one
// (no CN, no OU, missing clientAuth EKU, ...). Does not check the chain or validity period.
std::optional<DeviceIdentity> device_identity(const X509* cert);

struct IssuedCertificate {
  X509Ptr cert;
  std::string serial_hex;
  UnixMs not_after = 0;
};

// The local certificate authority. Files in `dir`: ca.crt (0644), ca.key (0600),
// server.crt (0644), server.key (0600).
class CertificateAuthority {
 public:
  // Loads the CA from dir, or creates it (and the server certificate) on first start.
  // `created` tells which happened. Throws PkiError with a clear message on unreadable or
  // inconsistent files (never silently replaces an existing CA).
  static CertificateAuthority open(const std::filesystem::path& dir, bool* created = nullptr);

  const X509* cert() const { return cert_.get(); }
  Fingerprint ca_fingerprint() const { return fingerprint(cert_.get()); }
  const X509* server_cert() const { return server_cert_.get(); }
  EVP_PKEY* server_key() const { return server_key_.get(); }
  const std::filesystem::path& dir() const { return dir_; }

  // Verifies the CSR's self-signature, that its public key is EC P-256 (or Ed25519), and
  // issues a device certificate: CN=device_id, OU=group, SAN URI torii:device:<id>,
  // EKU clientAuth, KU digitalSignature, random 128-bit serial, validity [now-5min, now+validity].
  // The CSR's subject is ignored: the ID comes from the enrollment, not from the device.
  // Throws PkiError("bad CSR: ...") on an invalid request.
  IssuedCertificate issue_device_cert(const std::vector<uint8_t>& csr_der,
                                      const std::string& device_id, const std::string& group,
                                      UnixMs now, Duration validity) const;

  // Thread-safe: issuing uses only const state.
 private:
  std::filesystem::path dir_;
  X509Ptr cert_;
  PkeyPtr key_;
  X509Ptr server_cert_;
  PkeyPtr server_key_;
};

// Verifies `leaf` against the single trusted `ca` (chain of length 2) at time `now` with the
// given purpose; returns "" on success or the OpenSSL reason.
std::string verify_against(const X509* ca, X509* leaf, UnixMs now);

}  // namespace torii::pki

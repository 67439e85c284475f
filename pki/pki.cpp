// torii's local CA on OpenSSL 3 EVP/X509: key and certificate generation, CSR checking, device
// certificate issuing and the identity a device certificate carries (A1, A2).
#include "pki/pki.hpp"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <climits>
#include <cstring>
#include <ctime>

#include "pki/file_io.hpp"
#include "pki/key_store.hpp"

namespace torii::pki {

namespace {

namespace fs = std::filesystem;

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using Asn1IntPtr = std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;

struct GeneralNamesFree {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct EkuFree {
  void operator()(EXTENDED_KEY_USAGE* p) const { EXTENDED_KEY_USAGE_free(p); }
};
struct BasicConstraintsFree {
  void operator()(BASIC_CONSTRAINTS* p) const { BASIC_CONSTRAINTS_free(p); }
};

constexpr int64_t kDay = int64_t{24} * 60 * 60;
constexpr int64_t kClockSkew =
    int64_t{5} * 60;  // tolerated for devices whose clock runs a bit behind
constexpr int64_t kCaLifetime = 3652 * kDay;
constexpr int64_t kServerLifetime = 730 * kDay;
constexpr int64_t kServerRenewBefore = 30 * kDay;
constexpr const char* kDeviceUriPrefix = "torii:device:";

// The most recent OpenSSL error, for messages; also empties the thread's error queue so stale
// errors do not leak into later calls.
std::string ssl_error() {
  unsigned long e = ERR_get_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out = buf;
  } else {
    out = "unknown OpenSSL error";
  }
  ERR_clear_error();
  return out;
}

[[noreturn]] void fail(const std::string& what) {
  throw PkiError(what + ": " + ssl_error());
}

std::string bio_to_string(BIO* bio) {
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio, &mem);
  if (mem == nullptr || mem->data == nullptr) return {};
  return std::string(mem->data, mem->length);
}

int64_t unix_now() {
  return static_cast<int64_t>(std::time(nullptr));
}

std::optional<int64_t> asn1_time_to_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

std::string serial_to_hex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) fail("cannot read serial number");
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) fail("cannot format serial number");
  std::string out(hex);
  OPENSSL_free(hex);
  for (auto& c : out)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// A random, positive, non-zero 128-bit serial (RFC 5280 4.1.2.2; unpredictable serials also
// defeat chosen-prefix collision attacks on the signature).
Asn1IntPtr random_serial() {
  unsigned char bytes[16];
  BnPtr bn;
  do {
    if (RAND_bytes(bytes, sizeof bytes) != 1) fail("RAND_bytes");
    bn.reset(BN_bin2bn(bytes, sizeof bytes, nullptr));
    if (!bn) fail("BN_bin2bn");
  } while (BN_is_zero(bn.get()));
  Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!serial) fail("BN_to_ASN1_INTEGER");
  return serial;
}

std::string random_hex(size_t nbytes) {
  std::vector<unsigned char> b(nbytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) fail("RAND_bytes");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (auto c : b) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

void add_name_entry(X509_NAME* name, const char* field, const std::string& value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.c_str()),
                                 static_cast<int>(value.size()), -1, 0) != 1)
    fail(std::string("cannot set ") + field);
}

// Adds one extension from its OpenSSL config-string form. `value` never contains user input
// that was not validated first (device IDs and group names are restricted to [A-Za-z0-9._-]).
void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) fail(std::string("cannot build extension ") + OBJ_nid2sn(nid));
  if (X509_add_ext(cert, ext.get(), -1) != 1) fail("X509_add_ext");
}

void set_validity(X509* cert, int64_t not_before, int64_t not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(cert), static_cast<time_t>(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), static_cast<time_t>(not_after)) == nullptr)
    fail("cannot set validity");
}

// The parts every certificate we issue shares: v3, random serial, issuer, subject, validity, key.
X509Ptr new_cert(const X509_NAME* issuer, const X509_NAME* subject, EVP_PKEY* pub,
                 int64_t not_before, int64_t not_after) {
  X509Ptr cert(X509_new());
  if (!cert) fail("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) fail("X509_set_version");
  auto serial = random_serial();
  if (X509_set_serialNumber(cert.get(), serial.get()) != 1) fail("X509_set_serialNumber");
  if (X509_set_issuer_name(cert.get(), issuer) != 1) fail("X509_set_issuer_name");
  if (X509_set_subject_name(cert.get(), subject) != 1) fail("X509_set_subject_name");
  set_validity(cert.get(), not_before, not_after);
  if (X509_set_pubkey(cert.get(), pub) != 1) fail("X509_set_pubkey");
  return cert;
}

void sign_cert(X509* cert, EVP_PKEY* ca_key) {
  if (X509_sign(cert, ca_key, EVP_sha256()) <= 0) fail("cannot sign certificate");
}

X509Ptr make_ca_cert(EVP_PKEY* key, int64_t now) {
  using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
  NamePtr name(X509_NAME_new());
  if (!name) fail("X509_NAME_new");
  // The random suffix keeps two installations' CAs apart in trust stores and logs.
  add_name_entry(name.get(), "CN", "torii CA " + random_hex(4));
  auto cert = new_cert(name.get(), name.get(), key, now - kClockSkew, now + kCaLifetime);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  sign_cert(cert.get(), key);
  return cert;
}

X509Ptr make_server_cert(X509* ca, EVP_PKEY* ca_key, EVP_PKEY* server_key, int64_t now) {
  using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
  NamePtr name(X509_NAME_new());
  if (!name) fail("X509_NAME_new");
  add_name_entry(name.get(), "CN", "toriid");
  auto cert = new_cert(X509_get_subject_name(ca), name.get(), server_key, now - kClockSkew,
                       now + kServerLifetime);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca, cert.get(), nullptr, nullptr, 0);
  add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  add_ext(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
  add_ext(cert.get(), &ctx, NID_subject_alt_name, "DNS:toriid");
  add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  sign_cert(cert.get(), ca_key);
  return cert;
}

using detail::read_file;
using detail::SecretText;

X509Ptr load_cert_file(const fs::path& path) {
  auto cert = cert_from_pem(read_file(path, false));
  if (!cert) throw PkiError("cannot parse certificate " + path.string());
  return cert;
}

PkeyPtr load_key_file(const fs::path& path) {
  SecretText pem{read_file(path, true)};
  auto key = private_key_from_pem(pem.text);
  if (!key) throw PkiError("cannot parse private key " + path.string());
  return key;
}

void write_key_file(const fs::path& path, const EVP_PKEY* key) {
  SecretText pem{private_key_to_pem(key)};
  write_file_atomic(path, pem.text, 0600);
}

bool key_matches(const X509* cert, const EVP_PKEY* key) {
  const EVP_PKEY* pub = X509_get0_pubkey(cert);
  return pub != nullptr && EVP_PKEY_eq(pub, key) == 1;
}

// True if `server` is a usable server certificate of `ca` with `key`, valid for at least
// kServerRenewBefore.
bool server_cert_usable(X509* ca, X509* server, EVP_PKEY* key, int64_t now) {
  if (!key_matches(server, key)) return false;
  EVP_PKEY* ca_pub = X509_get0_pubkey(ca);
  if (ca_pub == nullptr || X509_verify(server, ca_pub) != 1) {
    ERR_clear_error();
    return false;
  }
  auto not_after = asn1_time_to_unix(X509_get0_notAfter(server));
  return not_after && *not_after > now + kServerRenewBefore;
}

// exists() that reports an error (permission denied, I/O) instead of folding it into "no such
// file": an unreadable CA must never look like a missing one that may be created afresh.
bool file_exists(const fs::path& p) {
  std::error_code ec;
  bool found = fs::exists(p, ec);
  if (ec) throw PkiError("cannot access " + p.string() + ": " + ec.message());
  return found;
}

bool is_p256_or_ed25519(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return true;
  if (!EVP_PKEY_is_a(key, "EC")) return false;
  char group[64] = {};
  size_t len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1) {
    ERR_clear_error();
    return false;
  }
  return std::string_view(group, len) == "prime256v1" || std::string_view(group, len) == "P-256";
}

// The single entry of `nid` in `name` as UTF-8; nullopt if absent, repeated or not text.
std::optional<std::string> single_name_entry(const X509_NAME* name, int nid) {
  int idx = X509_NAME_get_index_by_NID(name, nid, -1);
  if (idx < 0 || X509_NAME_get_index_by_NID(name, nid, idx) >= 0) return std::nullopt;
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace

Fingerprint fingerprint(const X509* cert) {
  Fingerprint fp{};
  unsigned int len = 0;
  if (cert == nullptr || X509_digest(cert, EVP_sha256(), fp.data(), &len) != 1 || len != fp.size())
    fail("cannot compute certificate fingerprint");
  return fp;
}

std::string fingerprint_hex(const Fingerprint& fp) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(fp.size() * 2);
  for (auto b : fp) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

std::optional<Fingerprint> parse_fingerprint(std::string_view text) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  // Either 64 hex digits, or 32 pairs separated by single ':' (the form openssl prints).
  const bool colons = text.size() == 32 * 3 - 1;
  if (!colons && text.size() != 64) return std::nullopt;
  Fingerprint fp{};
  size_t pos = 0;
  for (size_t i = 0; i < fp.size(); ++i) {
    if (colons && i > 0) {
      if (text[pos] != ':') return std::nullopt;
      ++pos;
    }
    int hi = nibble(text[pos]);
    int lo = nibble(text[pos + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    fp[i] = static_cast<uint8_t>(hi << 4 | lo);
    pos += 2;
  }
  return fp;
}

std::vector<uint8_t> to_der(const X509* cert) {
  int len = i2d_X509(cert, nullptr);
  if (len <= 0) fail("cannot encode certificate");
  std::vector<uint8_t> out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_X509(cert, &p) != len) fail("cannot encode certificate");
  return out;
}

std::string to_pem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) fail("cannot encode certificate");
  return bio_to_string(bio.get());
}

X509Ptr cert_from_der(const uint8_t* data, size_t len) {
  if (data == nullptr || len == 0 || len > static_cast<size_t>(LONG_MAX)) return nullptr;
  const unsigned char* p = data;
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(len)));
  // Trailing bytes mean the input was not exactly one certificate.
  if (!cert || p != data + len) {
    ERR_clear_error();
    return nullptr;
  }
  return cert;
}

X509Ptr cert_from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) ERR_clear_error();
  return cert;
}

std::string private_key_to_pem(const EVP_PKEY* key) {
  // Secure-memory BIO: the PEM is wiped from its buffer when the BIO is freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("cannot encode private key");
  return bio_to_string(bio.get());
}

PkeyPtr private_key_from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  // An explicit "no passphrase" callback: the default one would prompt on the terminal for an
  // encrypted key, which a daemon must never do.
  auto no_passphrase = [](char*, int, int, void*) -> int { return -1; };
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) ERR_clear_error();
  return key;
}

PkeyPtr generate_p256_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) fail("cannot generate P-256 key");
  return key;
}

bool valid_device_id(std::string_view id) {
  if (id.empty() || id.size() > 64 || id.front() == '.' || id.front() == '-') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::vector<uint8_t> make_csr(EVP_PKEY* key, const std::string& device_id) {
  ReqPtr req(X509_REQ_new());
  if (!req) fail("X509_REQ_new");
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) fail("X509_REQ_set_version");
  add_name_entry(X509_REQ_get_subject_name(req.get()), "CN", device_id);
  if (X509_REQ_set_pubkey(req.get(), key) != 1) fail("X509_REQ_set_pubkey");
  // Ed25519 signs the message itself and takes no separate digest.
  const EVP_MD* md = EVP_PKEY_is_a(key, "ED25519") ? nullptr : EVP_sha256();
  if (X509_REQ_sign(req.get(), key, md) <= 0) fail("cannot sign CSR");
  int len = i2d_X509_REQ(req.get(), nullptr);
  if (len <= 0) fail("cannot encode CSR");
  std::vector<uint8_t> out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_X509_REQ(req.get(), &p) != len) fail("cannot encode CSR");
  return out;
}

std::optional<DeviceIdentity> device_identity(const X509* cert) {
  if (cert == nullptr) return std::nullopt;
  const X509_NAME* subject = X509_get_subject_name(cert);
  auto cn = single_name_entry(subject, NID_commonName);
  auto ou = single_name_entry(subject, NID_organizationalUnitName);
  if (!cn || !ou || !valid_device_id(*cn) || !valid_group_name(*ou)) return std::nullopt;

  // Parsed from the extensions directly (not X509_get_extended_key_usage), so nothing is
  // cached into the const certificate.
  int crit = 0;
  std::unique_ptr<BASIC_CONSTRAINTS, BasicConstraintsFree> bc(static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(cert, NID_basic_constraints, &crit, nullptr)));
  if (bc && bc->ca) return std::nullopt;  // a CA certificate is not a device

  std::unique_ptr<EXTENDED_KEY_USAGE, EkuFree> eku(
      static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, &crit, nullptr)));
  bool client_auth = false;
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku.get()); ++i)
    if (OBJ_obj2nid(sk_ASN1_OBJECT_value(eku.get(), i)) == NID_client_auth) client_auth = true;
  if (!client_auth) {
    ERR_clear_error();
    return std::nullopt;
  }

  std::unique_ptr<GENERAL_NAMES, GeneralNamesFree> sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, nullptr)));
  const std::string expected = kDeviceUriPrefix + *cn;
  bool uri_ok = false;
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    std::string_view value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                           static_cast<size_t>(ASN1_STRING_length(uri)));
    if (value.substr(0, std::strlen(kDeviceUriPrefix)) != kDeviceUriPrefix) continue;
    // Two different device URIs would make the identity ambiguous.
    if (value != expected) return std::nullopt;
    uri_ok = true;
  }
  ERR_clear_error();
  if (!uri_ok) return std::nullopt;

  auto not_before = asn1_time_to_unix(X509_get0_notBefore(cert));
  auto not_after = asn1_time_to_unix(X509_get0_notAfter(cert));
  if (!not_before || !not_after) return std::nullopt;

  DeviceIdentity id;
  id.device_id = *cn;
  id.group = *ou;
  id.serial_hex = serial_to_hex(X509_get0_serialNumber(cert));
  id.not_before = *not_before * 1000;
  id.not_after = *not_after * 1000;
  return id;
}

CertificateAuthority CertificateAuthority::open(const fs::path& dir, bool* created) {
  std::error_code ec;
  if (!file_exists(dir)) {
    fs::create_directories(dir, ec);
    if (ec) throw PkiError("cannot create " + dir.string() + ": " + ec.message());
    // Only a directory we create is restricted; an existing one is the operator's choice.
    fs::permissions(dir, fs::perms::owner_all, ec);
  }
  const fs::path ca_crt = dir / "ca.crt", ca_key = dir / "ca.key";
  const fs::path srv_crt = dir / "server.crt", srv_key = dir / "server.key";
  const bool has_crt = file_exists(ca_crt), has_key = file_exists(ca_key);
  const int64_t now = unix_now();

  CertificateAuthority ca;
  ca.dir_ = dir;
  if (has_crt && has_key) {
    ca.cert_ = load_cert_file(ca_crt);
    ca.key_ = load_key_file(ca_key);
    if (!key_matches(ca.cert_.get(), ca.key_.get()))
      throw PkiError(ca_key.string() + " does not match " + ca_crt.string() +
                     "; restore the matching pair (the CA is never replaced automatically)");
    if (X509_check_ca(ca.cert_.get()) == 0)
      throw PkiError(ca_crt.string() + " is not a CA certificate");
    if (created) *created = false;
  } else if (has_crt || has_key) {
    const fs::path& missing = has_crt ? ca_key : ca_crt;
    const fs::path& present = has_crt ? ca_crt : ca_key;
    throw PkiError("incomplete CA in " + dir.string() + ": " + present.string() + " exists but " +
                   missing.string() +
                   " is missing; restore it from a backup (a new CA would invalidate every "
                   "enrolled device)");
  } else {
    // No CA but a server certificate: the CA was most likely deleted by mistake. Creating a
    // new one would silently orphan every enrolled device, so ask the operator instead.
    if (file_exists(srv_crt) || file_exists(srv_key))
      throw PkiError("incomplete CA in " + dir.string() + ": " + ca_crt.string() + " and " +
                     ca_key.string() + " are missing but server certificate files exist; " +
                     "restore the CA, or remove server.crt and server.key to create a new CA");
    ca.key_ = generate_p256_key();
    ca.cert_ = make_ca_cert(ca.key_.get(), now);
    // Key first: a crash in between leaves ca.key without ca.crt, which open() reports
    // rather than replaces.
    write_key_file(ca_key, ca.key_.get());
    write_file_atomic(ca_crt, to_pem(ca.cert_.get()), 0644);
    if (created) *created = true;
  }
  // Fill OpenSSL's cached extension data now, single-threaded, so concurrent issuing (AKI from
  // the CA's SKI) only ever reads the CA certificate.
  X509_check_purpose(ca.cert_.get(), -1, 0);

  // The server certificate is derived state: re-issued whenever it is missing, broken, from
  // another CA or close to expiry.
  if (file_exists(srv_crt) && file_exists(srv_key)) {
    auto crt = load_cert_file(srv_crt);
    auto key = load_key_file(srv_key);
    if (server_cert_usable(ca.cert_.get(), crt.get(), key.get(), now)) {
      ca.server_cert_ = std::move(crt);
      ca.server_key_ = std::move(key);
    }
  }
  if (!ca.server_cert_) {
    ca.server_key_ = generate_p256_key();
    ca.server_cert_ = make_server_cert(ca.cert_.get(), ca.key_.get(), ca.server_key_.get(), now);
    // Key first: a crash in between leaves a mismatched pair, which the check above replaces.
    write_key_file(srv_key, ca.server_key_.get());
    write_file_atomic(srv_crt, to_pem(ca.server_cert_.get()), 0644);
  }
  return ca;
}

IssuedCertificate CertificateAuthority::issue_device_cert(const std::vector<uint8_t>& csr_der,
                                                          const std::string& device_id,
                                                          const std::string& group, UnixMs now,
                                                          Duration validity) const {
  if (!valid_device_id(device_id))
    throw PkiError(
        "invalid device ID: 1-64 characters of [A-Za-z0-9._-], not starting with . or -");
  if (!valid_group_name(group))
    throw PkiError(
        "invalid group name: 1-64 characters of [A-Za-z0-9._-], not starting with . or -");
  if (validity.count() <= 0) throw PkiError("invalid certificate validity");
  if (csr_der.empty() || csr_der.size() > size_t{64} * 1024) throw PkiError("bad CSR: wrong size");

  const unsigned char* p = csr_der.data();
  ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size())));
  if (!req || p != csr_der.data() + csr_der.size()) {
    ERR_clear_error();
    throw PkiError("bad CSR: not a DER PKCS#10 request");
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr) {
    ERR_clear_error();
    throw PkiError("bad CSR: unreadable public key");
  }
  if (!is_p256_or_ed25519(pub)) throw PkiError("bad CSR: key must be EC P-256 or Ed25519");
  // Rejects points not on the curve and similar malformed keys before they go into a cert.
  PkeyCtxPtr pctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub, nullptr));
  if (!pctx || EVP_PKEY_public_check(pctx.get()) != 1) {
    ERR_clear_error();
    throw PkiError("bad CSR: invalid public key");
  }
  // Proof of possession: the device holds the private key of the key it asks us to certify.
  if (X509_REQ_verify(req.get(), pub) != 1) {
    ERR_clear_error();
    throw PkiError("bad CSR: signature does not verify");
  }

  using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
  NamePtr subject(X509_NAME_new());
  if (!subject) fail("X509_NAME_new");
  add_name_entry(subject.get(), "OU", group);
  add_name_entry(subject.get(), "CN", device_id);

  const int64_t now_s = now / 1000;
  const int64_t not_after =
      now_s + std::chrono::duration_cast<std::chrono::seconds>(validity).count();
  auto cert = new_cert(X509_get_subject_name(cert_.get()), subject.get(), pub, now_s - kClockSkew,
                       not_after);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert_.get(), cert.get(), nullptr, nullptr, 0);
  add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  add_ext(cert.get(), &ctx, NID_ext_key_usage, "clientAuth");
  add_ext(cert.get(), &ctx, NID_subject_alt_name,
          std::string("URI:") + kDeviceUriPrefix + device_id);
  add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  sign_cert(cert.get(), key_.get());

  IssuedCertificate out;
  out.serial_hex = serial_to_hex(X509_get0_serialNumber(cert.get()));
  auto na = asn1_time_to_unix(X509_get0_notAfter(cert.get()));
  out.not_after = na ? *na * 1000 : not_after * 1000;
  out.cert = std::move(cert);
  return out;
}

std::string verify_against(const X509* ca, X509* leaf, UnixMs now) {
  if (ca == nullptr || leaf == nullptr) return "no certificate";
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx) fail("cannot create X509 store");
  // X509_STORE_add_cert only takes a reference (up-ref), it does not modify the CA.
  if (X509_STORE_add_cert(store.get(), const_cast<X509*>(ca)) != 1) fail("X509_STORE_add_cert");
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr) != 1) fail("X509_STORE_CTX_init");
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(now / 1000));  // sets USE_CHECK_TIME
  X509_VERIFY_PARAM_set_depth(param, 0);  // leaf directly under the trusted CA
  int ok = X509_verify_cert(ctx.get());
  std::string result;
  if (ok != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    result = err != X509_V_OK ? X509_verify_cert_error_string(err) : "verification failed";
  }
  ERR_clear_error();
  return result;
}

}  // namespace torii::pki

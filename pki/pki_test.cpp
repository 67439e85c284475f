// Tests of the local CA: files and their modes, reopening, refusal of broken CA directories,
// device certificate issuing from CSRs, identity extraction, chain checks and fingerprints.
#include "pki/pki.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "pki/key_store.hpp"

namespace torii::pki {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "torii-pki-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

unsigned file_mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

UnixMs wall_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

template <typename T>
struct ExtFree;
template <>
struct ExtFree<EXTENDED_KEY_USAGE> {
  void operator()(EXTENDED_KEY_USAGE* p) const { EXTENDED_KEY_USAGE_free(p); }
};
template <>
struct ExtFree<BASIC_CONSTRAINTS> {
  void operator()(BASIC_CONSTRAINTS* p) const { BASIC_CONSTRAINTS_free(p); }
};
template <>
struct ExtFree<GENERAL_NAMES> {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
template <>
struct ExtFree<ASN1_BIT_STRING> {
  void operator()(ASN1_BIT_STRING* p) const { ASN1_BIT_STRING_free(p); }
};
template <>
struct ExtFree<AUTHORITY_KEYID> {
  void operator()(AUTHORITY_KEYID* p) const { AUTHORITY_KEYID_free(p); }
};

// Decodes extension `nid`; `critical` receives its criticality (-1 if absent).
template <typename T>
std::unique_ptr<T, ExtFree<T>> ext(const X509* cert, int nid, int* critical = nullptr) {
  int crit = -1;
  auto* p = static_cast<T*>(X509_get_ext_d2i(cert, nid, &crit, nullptr));
  if (critical) *critical = crit;
  return std::unique_ptr<T, ExtFree<T>>(p);
}

std::vector<int> eku_nids(const X509* cert) {
  std::vector<int> out;
  auto eku = ext<EXTENDED_KEY_USAGE>(cert, NID_ext_key_usage);
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku.get()); ++i)
    out.push_back(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku.get(), i)));
  return out;
}

std::string subject_entry(const X509* cert, int nid) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), nid, buf, sizeof buf);
  return buf;
}

int64_t seconds_until(const ASN1_TIME* t) {
  int days = 0, secs = 0;
  EXPECT_EQ(ASN1_TIME_diff(&days, &secs, nullptr, t), 1);
  return int64_t(days) * 86400 + secs;
}

TEST(PkiCa, CreatesFilesWithModesAndReopensSameCa) {
  TempDir tmp;
  bool created = false;
  auto ca = CertificateAuthority::open(tmp.path() / "pki", &created);
  EXPECT_TRUE(created);
  const fs::path dir = tmp.path() / "pki";
  EXPECT_EQ(file_mode(dir / "ca.key"), 0600u);
  EXPECT_EQ(file_mode(dir / "server.key"), 0600u);
  EXPECT_EQ(file_mode(dir / "ca.crt"), 0644u);
  EXPECT_EQ(file_mode(dir / "server.crt"), 0644u);
  EXPECT_EQ(file_mode(dir), 0700u);
  // No temp files left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 4);

  bool created2 = true;
  auto again = CertificateAuthority::open(dir, &created2);
  EXPECT_FALSE(created2);
  EXPECT_EQ(again.ca_fingerprint(), ca.ca_fingerprint());
  EXPECT_EQ(fingerprint(again.server_cert()), fingerprint(ca.server_cert()));
  EXPECT_EQ(EVP_PKEY_eq(again.server_key(), ca.server_key()), 1);
  EXPECT_EQ(again.dir(), dir);
}

TEST(PkiCa, CaCertificateProfile) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  const X509* c = ca.cert();
  std::string cn = subject_entry(c, NID_commonName);
  ASSERT_EQ(cn.size(), std::string("torii CA ").size() + 8);
  EXPECT_EQ(cn.substr(0, 9), "torii CA ");
  EXPECT_EQ(cn.find_first_not_of("0123456789abcdef", 9), std::string::npos);
  EXPECT_EQ(X509_get_version(c), X509_VERSION_3);

  int crit = 0;
  auto bc = ext<BASIC_CONSTRAINTS>(c, NID_basic_constraints, &crit);
  ASSERT_TRUE(bc);
  EXPECT_EQ(crit, 1);
  EXPECT_TRUE(bc->ca);
  ASSERT_NE(bc->pathlen, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(bc->pathlen), 0);

  auto ku = ext<ASN1_BIT_STRING>(c, NID_key_usage, &crit);
  ASSERT_TRUE(ku);
  EXPECT_EQ(crit, 1);
  EXPECT_TRUE(ASN1_BIT_STRING_get_bit(ku.get(), 5));   // keyCertSign
  EXPECT_TRUE(ASN1_BIT_STRING_get_bit(ku.get(), 6));   // cRLSign
  EXPECT_FALSE(ASN1_BIT_STRING_get_bit(ku.get(), 0));  // digitalSignature

  X509* mc = const_cast<X509*>(c);
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(mc);
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(mc);
  ASSERT_NE(ski, nullptr);
  ASSERT_NE(aki, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(ski, aki), 0);

  EXPECT_EQ(X509_get_signature_nid(c), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_verify(mc, X509_get0_pubkey(c)), 1);
  EXPECT_TRUE(EVP_PKEY_is_a(X509_get0_pubkey(c), "EC"));

  const int64_t ten_years = 3650LL * 86400;
  EXPECT_GT(seconds_until(X509_get0_notAfter(c)), ten_years - 86400);
  EXPECT_LT(seconds_until(X509_get0_notAfter(c)), ten_years + 5LL * 86400);

  auto id = device_identity(c);
  EXPECT_FALSE(id.has_value());
  auto serial = X509_get0_serialNumber(c);
  EXPECT_NE(ASN1_STRING_type(serial), V_ASN1_NEG_INTEGER);
  EXPECT_GE(ASN1_STRING_length(serial), 8);
}

TEST(PkiCa, ServerCertificateProfile) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  const X509* s = ca.server_cert();
  EXPECT_EQ(subject_entry(s, NID_commonName), "toriid");
  EXPECT_EQ(eku_nids(s), std::vector<int>{NID_server_auth});
  auto sans = ext<GENERAL_NAMES>(s, NID_subject_alt_name);
  ASSERT_TRUE(sans);
  ASSERT_EQ(sk_GENERAL_NAME_num(sans.get()), 1);
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), 0);
  ASSERT_EQ(gn->type, GEN_DNS);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName))),
            "toriid");
  EXPECT_EQ(X509_verify(const_cast<X509*>(s), X509_get0_pubkey(ca.cert())), 1);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(s), ca.server_key()), 1);
  const int64_t two_years = 730LL * 86400;
  EXPECT_GT(seconds_until(X509_get0_notAfter(s)), two_years - 86400);
  EXPECT_LT(seconds_until(X509_get0_notAfter(s)), two_years + 86400);
  EXPECT_FALSE(device_identity(s).has_value());
}

TEST(PkiCa, RefusesIncompleteCa) {
  TempDir tmp;
  const fs::path& dir = tmp.path();
  auto ca = CertificateAuthority::open(dir);
  std::string key_pem, crt_pem;
  {
    std::ifstream k(dir / "ca.key"), c(dir / "ca.crt");
    key_pem.assign(std::istreambuf_iterator<char>(k), {});
    crt_pem.assign(std::istreambuf_iterator<char>(c), {});
  }

  fs::remove(dir / "ca.crt");
  try {
    CertificateAuthority::open(dir);
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_NE(std::string(e.what()).find("ca.crt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  // Nothing was replaced: the key is still the old one and no certificate was made.
  EXPECT_FALSE(fs::exists(dir / "ca.crt"));

  write_file_atomic(dir / "ca.crt", crt_pem, 0644);
  fs::remove(dir / "ca.key");
  try {
    CertificateAuthority::open(dir);
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_NE(std::string(e.what()).find("ca.key"), std::string::npos) << e.what();
  }

  // Both CA files gone but server files present: still refused, not silently replaced.
  fs::remove(dir / "ca.crt");
  EXPECT_THROW(CertificateAuthority::open(dir), PkiError);
  EXPECT_FALSE(fs::exists(dir / "ca.key"));

  write_file_atomic(dir / "ca.key", key_pem, 0600);
  write_file_atomic(dir / "ca.crt", crt_pem, 0644);
  auto back = CertificateAuthority::open(dir);
  EXPECT_EQ(back.ca_fingerprint(), ca.ca_fingerprint());
}

TEST(PkiCa, RefusesKeyNotMatchingCertificate) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  auto other = generate_p256_key();
  write_file_atomic(tmp.path() / "ca.key", private_key_to_pem(other.get()), 0600);
  try {
    CertificateAuthority::open(tmp.path());
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match"), std::string::npos) << e.what();
  }
}

TEST(PkiCa, RefusesCaKeyReadableByOthers) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  const fs::path key = tmp.path() / "ca.key";
  for (unsigned mode : {0640u, 0604u, 0644u, 0660u}) {
    ASSERT_EQ(::chmod(key.c_str(), mode), 0);
    try {
      CertificateAuthority::open(tmp.path());
      FAIL() << "expected PkiError for mode " << std::oct << mode;
    } catch (const PkiError& e) {
      EXPECT_NE(std::string(e.what()).find("chmod 600 " + key.string()), std::string::npos)
          << e.what();
    }
  }
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  EXPECT_NO_THROW(CertificateAuthority::open(tmp.path()));
}

TEST(PkiCa, ReissuesMissingServerCertificate) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  auto old_fp = fingerprint(ca.server_cert());
  fs::remove(tmp.path() / "server.crt");
  auto again = CertificateAuthority::open(tmp.path());
  EXPECT_EQ(again.ca_fingerprint(), ca.ca_fingerprint());
  EXPECT_NE(fingerprint(again.server_cert()), old_fp);
  EXPECT_TRUE(fs::exists(tmp.path() / "server.crt"));
  EXPECT_EQ(file_mode(tmp.path() / "server.key"), 0600u);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(again.server_cert()), again.server_key()), 1);
}

TEST(PkiCa, ReissuesServerCertificateCloseToExpiry) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  // A server certificate by the same CA that expires in 10 days, forged with the CA's key.
  auto ca_key = FileKeyStore(tmp.path() / "ca.key").load();
  X509Ptr soon(X509_dup(const_cast<X509*>(ca.server_cert())));
  ASSERT_TRUE(X509_time_adj_ex(X509_getm_notAfter(soon.get()), 10, 0, nullptr));
  ASSERT_GT(X509_sign(soon.get(), ca_key.get(), EVP_sha256()), 0);
  write_file_atomic(tmp.path() / "server.crt", to_pem(soon.get()), 0644);

  auto again = CertificateAuthority::open(tmp.path());
  EXPECT_NE(fingerprint(again.server_cert()), fingerprint(soon.get()));
  EXPECT_GT(seconds_until(X509_get0_notAfter(again.server_cert())), 700LL * 86400);

  // And one that is still good for long enough is kept.
  auto third = CertificateAuthority::open(tmp.path());
  EXPECT_EQ(fingerprint(third.server_cert()), fingerprint(again.server_cert()));
}

class PkiIssue : public ::testing::Test {
 protected:
  TempDir tmp_;
  CertificateAuthority ca_ = CertificateAuthority::open(tmp_.path());
  UnixMs now_ = wall_now_ms();
};

TEST_F(PkiIssue, DeviceCertificateFromCsr) {
  auto key = generate_p256_key();
  // The CSR asks for another name: ignored, the ID comes from the enrollment.
  auto csr = make_csr(key.get(), "someone-else");
  auto issued = ca_.issue_device_cert(csr, "dev-01", "lab", now_, 24h * 365);
  ASSERT_TRUE(issued.cert);
  X509* c = issued.cert.get();

  auto id = device_identity(c);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->device_id, "dev-01");
  EXPECT_EQ(id->group, "lab");
  EXPECT_EQ(id->serial_hex, issued.serial_hex);
  EXPECT_EQ(id->not_before, (now_ / 1000 - 300) * 1000);
  EXPECT_EQ(id->not_after, (now_ / 1000 + 365LL * 86400) * 1000);
  EXPECT_EQ(issued.not_after, id->not_after);
  EXPECT_EQ(issued.serial_hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_GE(issued.serial_hex.size(), 16u);

  EXPECT_EQ(subject_entry(c, NID_commonName), "dev-01");
  EXPECT_EQ(subject_entry(c, NID_organizationalUnitName), "lab");
  EXPECT_EQ(eku_nids(c), std::vector<int>{NID_client_auth});
  int crit = 0;
  auto ku = ext<ASN1_BIT_STRING>(c, NID_key_usage, &crit);
  ASSERT_TRUE(ku);
  EXPECT_EQ(crit, 1);
  EXPECT_TRUE(ASN1_BIT_STRING_get_bit(ku.get(), 0));
  EXPECT_FALSE(ASN1_BIT_STRING_get_bit(ku.get(), 5));
  auto bc = ext<BASIC_CONSTRAINTS>(c, NID_basic_constraints, &crit);
  ASSERT_TRUE(bc);
  EXPECT_FALSE(bc->ca);
  auto sans = ext<GENERAL_NAMES>(c, NID_subject_alt_name);
  ASSERT_TRUE(sans);
  ASSERT_EQ(sk_GENERAL_NAME_num(sans.get()), 1);
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), 0);
  ASSERT_EQ(gn->type, GEN_URI);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(
                ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier))),
            "torii:device:dev-01");
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(c),
                                  X509_get0_subject_key_id(const_cast<X509*>(ca_.cert()))),
            0);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(c), key.get()), 1);

  EXPECT_EQ(verify_against(ca_.cert(), c, now_), "");
  EXPECT_EQ(verify_against(ca_.cert(), c, now_ + 364LL * 86400 * 1000), "");
  EXPECT_EQ(verify_against(ca_.cert(), c, now_ + 366LL * 86400 * 1000), "certificate has expired");
  EXPECT_EQ(verify_against(ca_.cert(), c, now_ - 3600LL * 1000), "certificate is not yet valid");

  TempDir other_dir;
  auto other = CertificateAuthority::open(other_dir.path());
  EXPECT_NE(verify_against(other.cert(), c, now_), "");
  // A server certificate is not valid for the client purpose.
  EXPECT_NE(verify_against(ca_.cert(), const_cast<X509*>(ca_.server_cert()), now_), "");

  // DER round trip keeps the identity.
  auto der = to_der(c);
  auto back = cert_from_der(der.data(), der.size());
  ASSERT_TRUE(back);
  EXPECT_EQ(fingerprint(back.get()), fingerprint(c));
  auto pem_back = cert_from_pem(to_pem(c));
  ASSERT_TRUE(pem_back);
  EXPECT_EQ(fingerprint(pem_back.get()), fingerprint(c));
}

TEST_F(PkiIssue, Ed25519CsrAccepted) {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  ASSERT_TRUE(key);
  auto issued = ca_.issue_device_cert(make_csr(key.get(), "x"), "ed-1", "g", now_, 1h);
  auto id = device_identity(issued.cert.get());
  ASSERT_TRUE(id);
  EXPECT_EQ(id->device_id, "ed-1");
  EXPECT_EQ(verify_against(ca_.cert(), issued.cert.get(), now_), "");
}

TEST_F(PkiIssue, CorruptedCsrSignatureRejected) {
  auto key = generate_p256_key();
  auto csr = make_csr(key.get(), "dev");
  // Last byte: inside the signature's s value, so the DER stays well-formed.
  auto bad_sig = csr;
  bad_sig.back() ^= 0x01;
  try {
    ca_.issue_device_cert(bad_sig, "dev", "g", now_, 1h);
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_EQ(std::string(e.what()), "bad CSR: signature does not verify");
  }
  // A byte of the signed subject ("dev" -> "dew").
  auto bad_body = csr;
  auto pos =
      std::search(bad_body.begin(), bad_body.end(), std::begin("dev"), std::begin("dev") + 3);
  ASSERT_NE(pos, bad_body.end());
  pos[2] = 'w';
  EXPECT_THROW(ca_.issue_device_cert(bad_body, "dev", "g", now_, 1h), PkiError);
}

TEST_F(PkiIssue, MalformedCsrRejected) {
  auto key = generate_p256_key();
  auto csr = make_csr(key.get(), "dev");
  std::vector<uint8_t> truncated(csr.begin(), csr.begin() + std::ptrdiff_t(csr.size() / 2));
  auto trailing = csr;
  trailing.push_back(0);
  for (const auto& bad : {std::vector<uint8_t>{}, std::vector<uint8_t>{0x30, 0x00}, truncated,
                          trailing, std::vector<uint8_t>(100, 0xff)}) {
    try {
      ca_.issue_device_cert(bad, "dev", "g", now_, 1h);
      FAIL() << "expected PkiError";
    } catch (const PkiError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("bad CSR: ", 0), 0u) << e.what();
    }
  }
}

TEST_F(PkiIssue, OnlyP256AndEd25519Keys) {
  PkeyPtr rsa(EVP_RSA_gen(2048));
  ASSERT_TRUE(rsa);
  try {
    ca_.issue_device_cert(make_csr(rsa.get(), "dev"), "dev", "g", now_, 1h);
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_NE(std::string(e.what()).find("P-256"), std::string::npos) << e.what();
  }
  PkeyPtr p384(EVP_EC_gen("P-384"));
  ASSERT_TRUE(p384);
  EXPECT_THROW(ca_.issue_device_cert(make_csr(p384.get(), "dev"), "dev", "g", now_, 1h), PkiError);
}

TEST_F(PkiIssue, InvalidIdsRejected) {
  auto key = generate_p256_key();
  auto csr = make_csr(key.get(), "dev");
  for (const std::string& bad :
       std::vector<std::string>{"", ".hidden", "-opt", "a b", "a/b", "a,b", "dev\n", "é",
                                std::string(65, 'a'), std::string("a\0b", 3)}) {
    EXPECT_FALSE(valid_device_id(bad)) << bad;
    EXPECT_THROW(ca_.issue_device_cert(csr, bad, "g", now_, 1h), PkiError) << bad;
    EXPECT_THROW(ca_.issue_device_cert(csr, "dev", bad, now_, 1h), PkiError) << bad;
  }
  for (const std::string& good :
       std::vector<std::string>{"a", "0", "dev-01", "A.b_c-d", "_x", std::string(64, 'z')}) {
    EXPECT_TRUE(valid_device_id(good)) << good;
    EXPECT_TRUE(valid_group_name(good)) << good;
    EXPECT_NO_THROW(ca_.issue_device_cert(csr, good, good, now_, 1h)) << good;
  }
}

TEST_F(PkiIssue, ConcurrentIssuing) {
  auto key = generate_p256_key();
  auto csr = make_csr(key.get(), "dev");
  constexpr int kThreads = 4, kEach = 25;
  std::vector<std::vector<IssuedCertificate>> results(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        results[t].push_back(ca_.issue_device_cert(
            csr, "dev-" + std::to_string(t) + "-" + std::to_string(i), "g", now_, 1h));
    });
  for (auto& th : threads) th.join();
  std::set<std::string> serials;
  for (auto& r : results)
    for (auto& ic : r) {
      serials.insert(ic.serial_hex);
      EXPECT_EQ(verify_against(ca_.cert(), ic.cert.get(), now_), "");
    }
  EXPECT_EQ(serials.size(), size_t(kThreads * kEach));
}

TEST(PkiFingerprint, IsSha256OfDer) {
  TempDir tmp;
  auto ca = CertificateAuthority::open(tmp.path());
  auto der = to_der(ca.cert());
  Fingerprint expected{};
  unsigned len = 0;
  ASSERT_EQ(EVP_Digest(der.data(), der.size(), expected.data(), &len, EVP_sha256(), nullptr), 1);
  EXPECT_EQ(ca.ca_fingerprint(), expected);
  EXPECT_EQ(fingerprint_hex(expected).size(), 64u);
}

TEST(PkiFingerprint, Parse) {
  Fingerprint fp{};
  for (size_t i = 0; i < fp.size(); ++i) fp[i] = uint8_t(i * 37 + 11);
  std::string hex = fingerprint_hex(fp);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  std::string upper = hex;
  for (auto& c : upper) c = char(std::toupper(c));
  std::string colons;
  for (size_t i = 0; i < 64; i += 2) {
    if (i) colons += ':';
    colons += upper.substr(i, 2);
  }
  EXPECT_EQ(parse_fingerprint(hex), fp);
  EXPECT_EQ(parse_fingerprint(upper), fp);
  EXPECT_EQ(parse_fingerprint(colons), fp);

  EXPECT_FALSE(parse_fingerprint(""));
  EXPECT_FALSE(parse_fingerprint(hex.substr(1)));
  EXPECT_FALSE(parse_fingerprint(hex + "0"));
  EXPECT_FALSE(parse_fingerprint(" " + hex.substr(1)));
  EXPECT_FALSE(parse_fingerprint(hex.substr(0, 63) + "g"));
  EXPECT_FALSE(parse_fingerprint("AB:CD"));
  std::string bad_sep = colons;
  bad_sep[2] = '-';
  EXPECT_FALSE(parse_fingerprint(bad_sep));
  std::string shifted = colons;  // separators in the wrong places
  std::swap(shifted[2], shifted[3]);
  EXPECT_FALSE(parse_fingerprint(shifted));
  EXPECT_FALSE(parse_fingerprint(colons + ":"));
  EXPECT_FALSE(parse_fingerprint("sha256:" + hex));
}

TEST(PkiEncoding, BadInputsGiveNull) {
  EXPECT_FALSE(cert_from_der(nullptr, 0));
  const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
  EXPECT_FALSE(cert_from_der(junk, sizeof junk));
  EXPECT_FALSE(cert_from_pem("not a certificate"));
  EXPECT_FALSE(
      private_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));

  auto key = generate_p256_key();
  auto pem = private_key_to_pem(key.get());
  auto back = private_key_from_pem(pem);
  ASSERT_TRUE(back);
  EXPECT_EQ(EVP_PKEY_eq(back.get(), key.get()), 1);

  // An encrypted key is refused rather than prompting for a passphrase on the terminal.
  BIO* bio = BIO_new(BIO_s_mem());
  char pass[] = "secret";
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, key.get(), EVP_aes_256_cbc(),
                                     reinterpret_cast<unsigned char*>(pass), 6, nullptr, nullptr),
            1);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string enc(data, size_t(n));
  BIO_free(bio);
  EXPECT_FALSE(private_key_from_pem(enc));
}

}  // namespace
}  // namespace torii::pki

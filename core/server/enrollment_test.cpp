// Enrollment decisions (A1): single-use, expiring, hashed tokens; no device-ID oracle.
#include "core/server/enrollment.hpp"

#include <gtest/gtest.h>

#include "store/memory_store.hpp"

namespace torii::server {
namespace {

namespace pb = ::torii::control::v1;

class FakeIssuer : public CertIssuer {
 public:
  Issued issue(const std::vector<uint8_t>& csr, const std::string& id, const std::string& group,
               UnixMs now) override {
    if (csr.empty()) throw std::invalid_argument("empty request");
    ++issued;
    return Issued{{9, 9}, {8}, "serial-" + id, now + 1000};
  }
  int issued = 0;
};

class EnrollmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store.create_group({"g1", 0});
    token = generate_token();
    store::Device d;
    d.id = "cam1";
    d.group = "g1";
    store.add_device(d, {"cam1", hash_token(token), 10'000, std::nullopt});
  }
  store::MemoryStore store;
  FakeIssuer issuer;
  std::string token;
  const std::vector<uint8_t> csr{1, 2, 3};
};

TEST_F(EnrollmentTest, TokensAreRandomAndOnlyTheirHashIsKept) {
  EXPECT_EQ(token.rfind("tt1_", 0), 0u);
  EXPECT_EQ(token.size(), 4u + 43u);
  EXPECT_NE(generate_token(), token);
  EXPECT_TRUE(hashes_equal(store.get_token("cam1")->hash, hash_token(token)));
  EXPECT_FALSE(hashes_equal(hash_token(token), hash_token(token + "x")));
}

TEST_F(EnrollmentTest, GoodTokenIssuesOnceThenIsUsed) {
  auto r = enroll(store, issuer, 500, "cam1", token, csr);
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.group, "g1");
  EXPECT_EQ(r.audit_kind, "enroll.ok");
  EXPECT_EQ(store.get_device("cam1")->state, store::DeviceState::active);
  EXPECT_EQ(store.get_device("cam1")->cert_serial, "serial-cam1");
  auto again = enroll(store, issuer, 600, "cam1", token, csr);
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.code, pb::ERROR_CODE_BAD_TOKEN);
  EXPECT_EQ(again.audit_kind, "enroll.token_used");
  EXPECT_EQ(issuer.issued, 1);
}

TEST_F(EnrollmentTest, RefusalsIssueNothing) {
  struct Case {
    const char* name;
    std::string id;
    std::string tok;
    UnixMs now;
    std::vector<uint8_t> csr;
    pb::ErrorCode code;
    const char* kind;
  };
  std::vector<Case> cases = {
      {"wrong token", "cam1", "tt1_wrong", 500, csr, pb::ERROR_CODE_BAD_TOKEN, "enroll.bad_token"},
      {"unknown device", "ghost", token, 500, csr, pb::ERROR_CODE_BAD_TOKEN, "enroll.bad_token"},
      {"expired", "cam1", token, 10'000, csr, pb::ERROR_CODE_BAD_TOKEN, "enroll.token_expired"},
      {"bad csr", "cam1", token, 500, {}, pb::ERROR_CODE_BAD_CSR, "enroll.bad_csr"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = enroll(store, issuer, c.now, c.id, c.tok, c.csr);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.code, c.code);
    EXPECT_EQ(r.audit_kind, c.kind);
    EXPECT_FALSE(r.message.empty());
    EXPECT_EQ(r.message.find(token), std::string::npos);  // the secret is never echoed
  }
  EXPECT_EQ(issuer.issued, 0);
  EXPECT_EQ(store.get_device("cam1")->state, store::DeviceState::pending);
  EXPECT_FALSE(store.get_token("cam1")->used_at);
  // Wrong token and unknown device read the same to the caller (no ID oracle).
  auto ghost = enroll(store, issuer, 500, "ghost", token, csr).message;
  auto wrong = enroll(store, issuer, 500, "cam1", "tt1_x", csr).message;
  ghost.replace(ghost.find("ghost"), 5, "cam1");
  EXPECT_EQ(ghost, wrong);
}

TEST_F(EnrollmentTest, RevokedDeviceCannotEnroll) {
  store.revoke_device("cam1", 100);
  auto r = enroll(store, issuer, 500, "cam1", token, csr);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, pb::ERROR_CODE_REVOKED);
  EXPECT_EQ(issuer.issued, 0);
}

}  // namespace
}  // namespace torii::server

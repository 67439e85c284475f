// Tests of the device key file (created 0600, never overwritten, refused when others can read
// it) and of atomic file writing.
#include "pki/key_store.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

namespace torii::pki {
namespace {

namespace fs = std::filesystem;

class KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "torii-keys-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  unsigned mode(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 0777;
  }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  size_t entries() {
    return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  fs::path dir_;
};

TEST_F(KeyStoreTest, GenerateCreatesPrivateFileAndLoads) {
  FileKeyStore ks(dir_ / "device.key");
  EXPECT_FALSE(ks.has_key());
  EXPECT_EQ(ks.describe(), "file:" + (dir_ / "device.key").string());
  ks.generate();
  EXPECT_TRUE(ks.has_key());
  EXPECT_EQ(mode(dir_ / "device.key"), 0600u);
  EXPECT_EQ(entries(), 1u);  // no temp file left behind

  auto key = ks.load();
  ASSERT_TRUE(key);
  EXPECT_TRUE(EVP_PKEY_is_a(key.get(), "EC"));
  char group[32] = {};
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key.get(), group, sizeof group, &len), 1);
  EXPECT_EQ(std::string(group, len), "prime256v1");
  auto again = ks.load();
  EXPECT_EQ(EVP_PKEY_eq(key.get(), again.get()), 1);
  // Usable for a CSR (what the agent does with it).
  EXPECT_FALSE(make_csr(key.get(), "dev-1").empty());
}

TEST_F(KeyStoreTest, GenerateNeverOverwrites) {
  FileKeyStore ks(dir_ / "device.key");
  ks.generate();
  std::string before = read(dir_ / "device.key");
  EXPECT_THROW(ks.generate(), PkiError);
  EXPECT_EQ(read(dir_ / "device.key"), before);
  EXPECT_EQ(entries(), 1u);
}

TEST_F(KeyStoreTest, GenerateIgnoresPermissiveUmask) {
  mode_t old = ::umask(0);
  FileKeyStore ks(dir_ / "sub" / "device.key");
  ks.generate();
  ::umask(old);
  EXPECT_EQ(mode(dir_ / "sub" / "device.key"), 0600u);
  EXPECT_EQ(mode(dir_ / "sub"), 0700u);
}

TEST_F(KeyStoreTest, RefusesKeyReadableByOthers) {
  const fs::path p = dir_ / "device.key";
  FileKeyStore ks(p);
  ks.generate();
  ASSERT_EQ(::chmod(p.c_str(), 0644), 0);
  try {
    ks.load();
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_EQ(std::string(e.what()),
              "key file " + p.string() + " is readable by others; chmod 600 " + p.string());
  }
  ASSERT_EQ(::chmod(p.c_str(), 0640), 0);
  EXPECT_THROW(ks.load(), PkiError);
  ASSERT_EQ(::chmod(p.c_str(), 0400), 0);
  EXPECT_NO_THROW(ks.load());
}

TEST_F(KeyStoreTest, MissingOrBrokenKey) {
  FileKeyStore ks(dir_ / "none.key");
  try {
    ks.load();
    FAIL() << "expected PkiError";
  } catch (const PkiError& e) {
    EXPECT_NE(std::string(e.what()).find("no device key"), std::string::npos) << e.what();
  }
  write_file_atomic(dir_ / "junk.key", "not a key", 0600);
  EXPECT_THROW(FileKeyStore(dir_ / "junk.key").load(), PkiError);
}

TEST_F(KeyStoreTest, WriteFileAtomicModesAndReplace) {
  const fs::path p = dir_ / "f.txt";
  mode_t old = ::umask(077);
  write_file_atomic(p, "one", 0644);
  ::umask(old);
  EXPECT_EQ(mode(p), 0644u);  // exact mode, whatever the umask
  EXPECT_EQ(read(p), "one");
  write_file_atomic(p, "two", 0600);
  EXPECT_EQ(mode(p), 0600u);
  EXPECT_EQ(read(p), "two");
  write_file_atomic(p, "", 0600);
  EXPECT_EQ(read(p), "");
  EXPECT_EQ(entries(), 1u);
  EXPECT_THROW(write_file_atomic(dir_ / "no" / "such" / "dir", "x", 0600), PkiError);
}

}  // namespace
}  // namespace torii::pki

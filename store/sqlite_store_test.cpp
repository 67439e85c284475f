// Runs the Store conformance suite against SqliteStore, plus what only a file-backed store has:
// persistence across reopen, file mode, WAL, schema versioning and open errors.
#include "store/sqlite_store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <fstream>

#include "store/store_conformance.hpp"

namespace torii::store::conformance {

namespace fs = std::filesystem;

struct SqliteFactory {
  static std::unique_ptr<Store> make(const fs::path& dir) {
    return SqliteStore::open(dir / "torii.db");
  }
  static std::vector<uint8_t> cert_der(Store& s, const std::string& id) {
    return dynamic_cast<SqliteStore&>(s).cert_der(id);
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(SqliteStore, StoreConformance, SqliteFactory);

namespace {

// The first column of the first row of `sql`, read through a separate connection.
std::string raw_query(const fs::path& db_file, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

unsigned file_mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  ScopedTempDir dir_;
  fs::path db_ = dir_.path() / "torii.db";
};

TEST_F(SqliteStoreTest, ReopenFindsEverything) {
  DeviceAttributes attrs;
  attrs.nat_type = "full-cone";
  attrs.local_addresses = {"192.168.0.5", "fd00::5"};
  attrs.os_version = "Linux";
  std::vector<uint8_t> der(300);
  for (size_t i = 0; i < der.size(); ++i) der[i] = uint8_t(i);
  int64_t last_seq = 0;
  {
    auto s = SqliteStore::open(db_);
    s->create_group(Group{"lab", 10});
    Device d;
    d.id = "dev-1";
    d.group = "lab";
    d.created_at = 20;
    s->add_device(d, EnrollmentToken{"dev-1", hash_of(1), 1000, std::nullopt});
    d.id = "dev-2";
    s->add_device(d, EnrollmentToken{"dev-2", hash_of(2), 1000, std::nullopt});
    ASSERT_TRUE(s->complete_enrollment("dev-1", hash_of(1), 500, "abcd", 9000, der));
    s->update_attributes("dev-1", attrs);
    s->update_presence({Presence{"dev-1", 700, 33}});
    s->revoke_device("dev-2", 800);
    s->append_audit(AuditEvent{0, 1, "enroll.ok", "dev-1", "198.51.100.1:1", "ok"});
    last_seq = s->append_audit(AuditEvent{0, 2, "device.revoke", "dev-2", "admin", ""});
  }
  auto s = SqliteStore::open(db_);
  ASSERT_EQ(s->list_groups().size(), 1u);
  EXPECT_EQ(s->get_group("lab")->created_at, 10);
  auto d1 = s->get_device("dev-1");
  ASSERT_TRUE(d1);
  EXPECT_EQ(d1->state, DeviceState::active);
  EXPECT_EQ(d1->enrolled_at, 500);
  EXPECT_EQ(d1->cert_serial, "abcd");
  EXPECT_EQ(d1->cert_not_after, 9000);
  EXPECT_EQ(d1->attributes, attrs);
  EXPECT_EQ(d1->last_seen, 700);
  EXPECT_EQ(d1->rtt_ms, 33u);
  EXPECT_EQ(s->cert_der("dev-1"), der);
  EXPECT_EQ(s->get_token("dev-1")->used_at, 500);
  EXPECT_EQ(s->get_device("dev-2")->state, DeviceState::revoked);
  EXPECT_EQ(s->get_device("dev-2")->revoked_at, 800);
  // The used token stays used after a restart.
  EXPECT_FALSE(s->complete_enrollment("dev-1", hash_of(1), 600, "x", 1, {}));
  auto audit = s->tail_audit(10);
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[1].seq, last_seq);
  EXPECT_EQ(audit[1].source, "admin");
  EXPECT_GT(s->append_audit(AuditEvent{0, 3, "x", "", "", ""}), last_seq);
}

TEST_F(SqliteStoreTest, FileIsPrivateAndInWalMode) {
  mode_t old = ::umask(0);
  {
    auto s = SqliteStore::open(db_);
    s->create_group(Group{"g", 1});  // forces the -wal file into existence
    EXPECT_EQ(file_mode(db_), 0600u);
    fs::path wal = db_;
    wal += "-wal";
    if (fs::exists(wal)) {
      EXPECT_EQ(file_mode(wal), 0600u);
    }
    EXPECT_EQ(s->path(), db_);
  }
  ::umask(old);
  EXPECT_EQ(file_mode(db_), 0600u);
  EXPECT_EQ(raw_query(db_, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_query(db_, "PRAGMA user_version"), std::to_string(SqliteStore::kSchemaVersion));
}

TEST_F(SqliteStoreTest, OpenErrorsNameThePath) {
  fs::path missing_dir = dir_.path() / "no" / "such" / "dir" / "torii.db";
  try {
    SqliteStore::open(missing_dir);
    FAIL() << "expected StoreError";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::io);
    EXPECT_NE(std::string(e.what()).find(missing_dir.string()), std::string::npos) << e.what();
  }
  std::ofstream(db_, std::ios::binary) << std::string(4096, 'x');
  try {
    SqliteStore::open(db_);
    FAIL() << "expected StoreError";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::io);
    EXPECT_NE(std::string(e.what()).find(db_.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a database"), std::string::npos) << e.what();
  }
}

TEST_F(SqliteStoreTest, RefusesNewerSchema) {
  SqliteStore::open(db_).reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  try {
    SqliteStore::open(db_);
    FAIL() << "expected StoreError";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::io);
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
}

TEST_F(SqliteStoreTest, ForeignKeysEnforced) {
  auto s = SqliteStore::open(db_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
  // Our connection has them on; prove the schema declares them by turning them on here too.
  sqlite3_exec(db, "PRAGMA foreign_keys = ON", nullptr, nullptr, nullptr);
  EXPECT_NE(sqlite3_exec(db,
                         "INSERT INTO devices (id, group_name, state, created_at) "
                         "VALUES ('x', 'missing', 'pending', 1)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  EXPECT_EQ(raw_query(db_, "SELECT count(*) FROM devices"), "0");
}

}  // namespace

}  // namespace torii::store::conformance

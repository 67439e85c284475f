// SQLite implementation of Store. SQL is kept portable (plain types, no JSON, RETURNING, bound
// parameters) so a PostgreSQL store can reuse it; SQLite-only bits are marked where they occur.
#include "store/sqlite_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>

#include "store/address_list.hpp"

namespace torii::store {

namespace {

namespace fs = std::filesystem;

// Each entry upgrades the schema from version i to i+1 (index i). Only append: a released
// migration never changes. Types map to PostgreSQL as BIGINT -> BIGINT, BLOB -> BYTEA,
// INTEGER PRIMARY KEY -> BIGINT GENERATED ALWAYS AS IDENTITY.
constexpr const char* kMigrations[] = {
    // 1: initial schema.
    R"sql(
CREATE TABLE groups (
  name        TEXT PRIMARY KEY,
  created_at  BIGINT NOT NULL
);
CREATE TABLE devices (
  id                TEXT PRIMARY KEY,
  group_name        TEXT NOT NULL REFERENCES groups(name),
  state             TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
  created_at        BIGINT NOT NULL,
  enrolled_at       BIGINT,
  revoked_at        BIGINT,
  cert_serial       TEXT NOT NULL DEFAULT '',
  cert_not_after    BIGINT,
  cert_der          BLOB,
  nat_type          TEXT NOT NULL DEFAULT '',
  nat_mapping       TEXT NOT NULL DEFAULT '',
  nat_filtering     TEXT NOT NULL DEFAULT '',
  public_endpoint   TEXT NOT NULL DEFAULT '',
  local_addresses   TEXT NOT NULL DEFAULT '',
  agent_version     TEXT NOT NULL DEFAULT '',
  firmware_version  TEXT NOT NULL DEFAULT '',
  os_version        TEXT NOT NULL DEFAULT '',
  last_seen         BIGINT,
  rtt_ms            BIGINT
);
CREATE INDEX devices_group_name ON devices(group_name);
CREATE TABLE enrollment_tokens (
  device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
  token_hash  BLOB NOT NULL,
  expires_at  BIGINT NOT NULL,
  used_at     BIGINT
);
CREATE TABLE audit (
  seq        INTEGER PRIMARY KEY,
  time       BIGINT NOT NULL,
  kind       TEXT NOT NULL,
  device_id  TEXT NOT NULL DEFAULT '',
  source     TEXT NOT NULL DEFAULT '',
  detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_device_id ON audit(device_id);
)sql",
    // 2: overlay addresses (A9). Each device gets a stable index; its overlay IPv4/IPv6 addresses
    // are the deployment's prefixes plus that index (core/server/overlay.hpp). Existing devices
    // are numbered in creation order.
    R"sql(
ALTER TABLE devices ADD COLUMN overlay_index BIGINT NOT NULL DEFAULT 0;
UPDATE devices SET overlay_index = (SELECT COUNT(*) FROM devices d2
  WHERE d2.created_at < devices.created_at
     OR (d2.created_at = devices.created_at AND d2.id <= devices.id));
CREATE UNIQUE INDEX devices_overlay_index ON devices(overlay_index);
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion);

constexpr const char* kDeviceColumns =
    "id, group_name, state, created_at, enrolled_at, revoked_at, cert_serial, cert_not_after, "
    "nat_type, nat_mapping, nat_filtering, public_endpoint, local_addresses, agent_version, "
    "firmware_version, os_version, last_seen, rtt_ms, overlay_index";

std::string open_error(const fs::path& path, const std::string& what) {
  return "cannot open database " + path.string() + ": " + what;
}

// Runs a fixed statement (DDL or pragma text from this file, no values) outside the cache.
void exec(sqlite3* db, const fs::path& path, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw StoreError(StoreError::Kind::io, open_error(path, msg));
  }
}

// The first column of the first row of a fixed query, as text.
std::string query_text(sqlite3* db, const fs::path& path, const char* sql) {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
  if (rc != SQLITE_OK) throw StoreError(StoreError::Kind::io, open_error(path, sqlite3_errmsg(db)));
  rc = sqlite3_step(st);
  std::string out;
  if (rc == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    if (t) out = reinterpret_cast<const char*>(t);
  }
  std::string msg = sqlite3_errmsg(db);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    throw StoreError(StoreError::Kind::io, open_error(path, msg));
  return out;
}

// Brings the schema to kSchemaVersion in one write transaction, so two processes opening a new
// file at once cannot both create the tables.
void migrate(sqlite3* db, const fs::path& path) {
  exec(db, path, "BEGIN IMMEDIATE");  // SQLite: take the write lock now (PostgreSQL: BEGIN)
  try {
    int version = std::stoi(query_text(db, path, "PRAGMA user_version"));
    if (version > SqliteStore::kSchemaVersion)
      throw StoreError(
          StoreError::Kind::io,
          open_error(path, "schema version " + std::to_string(version) +
                               " is newer than this build supports (" +
                               std::to_string(SqliteStore::kSchemaVersion) + "); upgrade torii"));
    for (; version < SqliteStore::kSchemaVersion; ++version) exec(db, path, kMigrations[version]);
    // PRAGMA takes no bound parameters; the value is this build's constant, not input.
    std::string set_version = "PRAGMA user_version = " + std::to_string(version);
    exec(db, path, set_version.c_str());
    exec(db, path, "COMMIT");
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

DeviceState parse_state(const std::string& s) {
  if (s == "pending") return DeviceState::pending;
  if (s == "active") return DeviceState::active;
  if (s == "revoked") return DeviceState::revoked;
  throw StoreError(StoreError::Kind::io, "database holds an unknown device state");
}

StoreError::Kind kind_of(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return StoreError::Kind::conflict;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return StoreError::Kind::not_found;
    default:
      return (rc & 0xff) == SQLITE_CONSTRAINT ? StoreError::Kind::invalid : StoreError::Kind::io;
  }
}

int64_t clamp_limit(size_t limit) {
  return limit > size_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                             : int64_t(limit);
}

}  // namespace

// A borrowed cached statement: values are bound by index, and it is reset (and its bindings
// cleared) when it goes out of scope so the next user starts clean.
class SqliteStmt {
 public:
  SqliteStmt(const SqliteStore& store, sqlite3_stmt* st) : store_(store), st_(st) {}
  ~SqliteStmt() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;

  SqliteStmt& bind(int i, int64_t v) { return check(sqlite3_bind_int64(st_, i, v)); }
  SqliteStmt& bind(int i, const std::string& v) {
    return check(sqlite3_bind_text(st_, i, v.data(), int(v.size()), SQLITE_TRANSIENT));
  }
  SqliteStmt& bind(int i, const uint8_t* data, size_t n) {
    // A zero-length blob with a null pointer would bind NULL; bind an empty blob instead.
    if (n == 0) return check(sqlite3_bind_zeroblob(st_, i, 0));
    return check(sqlite3_bind_blob(st_, i, data, int(n), SQLITE_TRANSIENT));
  }
  template <typename T>
  SqliteStmt& bind(int i, const std::optional<T>& v) {
    if (!v) return check(sqlite3_bind_null(st_, i));
    return bind(i, int64_t(*v));
  }

  // True for a row, false when done; throws on error (constraint violations by their kind).
  bool step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    store_.fail(rc, "statement failed");
  }
  void run() {
    while (step()) {
    }
  }

  int64_t i64(int col) const { return sqlite3_column_int64(st_, col); }
  std::optional<int64_t> opt_i64(int col) const {
    if (sqlite3_column_type(st_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(st_, col);
  }
  std::string text(int col) const {
    const unsigned char* t = sqlite3_column_text(st_, col);
    int n = sqlite3_column_bytes(st_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), size_t(n)) : std::string();
  }
  std::vector<uint8_t> blob(int col) const {
    const auto* b = static_cast<const uint8_t*>(sqlite3_column_blob(st_, col));
    int n = sqlite3_column_bytes(st_, col);
    return b ? std::vector<uint8_t>(b, b + n) : std::vector<uint8_t>();
  }

 private:
  SqliteStmt& check(int rc) {
    if (rc != SQLITE_OK) store_.fail(rc, "bind failed");
    return *this;
  }
  const SqliteStore& store_;
  sqlite3_stmt* st_;
};

// A write transaction that rolls back unless commit() was reached, so an exception part-way
// leaves the database as it was.
class SqliteTxn {
 public:
  explicit SqliteTxn(SqliteStore& s) : store_(s) {
    // SQLite: IMMEDIATE takes the write lock up front instead of failing on upgrade later
    // (PostgreSQL: plain BEGIN).
    SqliteStmt(store_, store_.prepare("BEGIN IMMEDIATE")).run();
  }
  void commit() {
    SqliteStmt(store_, store_.prepare("COMMIT")).run();
    done_ = true;
  }
  ~SqliteTxn() {
    if (!done_) sqlite3_exec(store_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  SqliteTxn(const SqliteTxn&) = delete;
  SqliteTxn& operator=(const SqliteTxn&) = delete;

 private:
  SqliteStore& store_;
  bool done_ = false;
};

namespace {

Device read_device(const SqliteStmt& s) {
  Device d;
  d.id = s.text(0);
  d.group = s.text(1);
  d.state = parse_state(s.text(2));
  d.created_at = s.i64(3);
  d.enrolled_at = s.opt_i64(4);
  d.revoked_at = s.opt_i64(5);
  d.cert_serial = s.text(6);
  d.cert_not_after = s.opt_i64(7);
  d.attributes.nat_type = s.text(8);
  d.attributes.nat_mapping = s.text(9);
  d.attributes.nat_filtering = s.text(10);
  d.attributes.public_endpoint = s.text(11);
  d.attributes.local_addresses = detail::split_addresses(s.text(12));
  d.attributes.agent_version = s.text(13);
  d.attributes.firmware_version = s.text(14);
  d.attributes.os_version = s.text(15);
  d.last_seen = s.opt_i64(16);
  if (auto rtt = s.opt_i64(17)) d.rtt_ms = uint32_t(*rtt);
  d.overlay_index = uint32_t(s.i64(18));
  return d;
}

AuditEvent read_audit(const SqliteStmt& s) {
  AuditEvent e;
  e.seq = s.i64(0);
  e.time = s.i64(1);
  e.kind = s.text(2);
  e.device_id = s.text(3);
  e.source = s.text(4);
  e.detail = s.text(5);
  return e;
}

const std::string kSelectDevice = std::string("SELECT ") + kDeviceColumns + " FROM devices";
const std::string kGetDevice = kSelectDevice + " WHERE id = ?";
const std::string kGetDeviceByOverlay = kSelectDevice + " WHERE overlay_index = ?";
const std::string kListDevices = kSelectDevice + " ORDER BY id";

}  // namespace

std::unique_ptr<SqliteStore> SqliteStore::open(const fs::path& db_file) {
  // Create the file ourselves so it is 0600 from the start; SQLite would use 0644 & ~umask, and
  // gives its -wal and -shm files the database file's mode.
  int fd = ::open(db_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    int rc = ::fchmod(fd, 0600);
    int e = errno;
    ::close(fd);
    if (rc != 0) throw StoreError(StoreError::Kind::io, open_error(db_file, std::strerror(e)));
    // Make the new directory entry durable too, not just what SQLite later writes into it.
    fs::path dir = db_file.parent_path().empty() ? fs::path(".") : db_file.parent_path();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  } else if (errno != EEXIST) {
    throw StoreError(StoreError::Kind::io, open_error(db_file, std::strerror(errno)));
  }

  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    throw StoreError(StoreError::Kind::io, open_error(db_file, msg));
  }
  // Owned by the store from here on, so any failure below closes the connection.
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, db_file));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  // Refuse SQL that could corrupt the file on purpose (writable_schema and the like).
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  exec(db, db_file, "PRAGMA foreign_keys = ON");
  // WAL: readers do not block the writer; with synchronous=FULL every commit is fsync'd before
  // it is acknowledged, so nothing accepted is lost on a crash or power cut.
  std::string mode = query_text(db, db_file, "PRAGMA journal_mode = WAL");
  if (mode != "wal")
    throw StoreError(StoreError::Kind::io,
                     open_error(db_file, "cannot enable WAL (journal mode " + mode + ")"));
  exec(db, db_file, "PRAGMA synchronous = FULL");
  if (query_text(db, db_file, "PRAGMA foreign_keys") != "1")
    throw StoreError(StoreError::Kind::io, open_error(db_file, "foreign keys unavailable"));
  migrate(db, db_file);
  return store;
}

SqliteStore::SqliteStore(sqlite3* db, fs::path path) : db_(db), path_(std::move(path)) {}

SqliteStore::~SqliteStore() {
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  sqlite3_close_v2(db_);
}

sqlite3_stmt* SqliteStore::prepare(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  if (rc != SQLITE_OK) fail(rc, "prepare failed");
  stmts_.emplace(sql, st);
  return st;
}

void SqliteStore::fail(int rc, const std::string& what) const {
  // SQLite's message names the constraint or I/O problem; it never contains bound values.
  throw StoreError(kind_of(rc), path_.string() + ": " + what + ": " + sqlite3_errmsg(db_));
}

void SqliteStore::create_group(const Group& g) {
  if (g.name.empty()) throw StoreError(StoreError::Kind::invalid, "group name is empty");
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("INSERT INTO groups (name, created_at) VALUES (?, ?)"));
  s.bind(1, g.name).bind(2, int64_t(g.created_at));
  try {
    s.run();
  } catch (const StoreError& e) {
    if (e.kind() == StoreError::Kind::conflict)
      throw StoreError(StoreError::Kind::conflict, "group " + g.name + " exists");
    throw;
  }
}

std::vector<Group> SqliteStore::list_groups() {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT name, created_at FROM groups ORDER BY name"));
  std::vector<Group> out;
  while (s.step()) out.push_back(Group{s.text(0), s.i64(1)});
  return out;
}

std::optional<Group> SqliteStore::get_group(const std::string& name) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT name, created_at FROM groups WHERE name = ?"));
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return Group{s.text(0), s.i64(1)};
}

void SqliteStore::add_device(const Device& d, const EnrollmentToken& t) {
  if (d.id.empty()) throw StoreError(StoreError::Kind::invalid, "device ID is empty");
  if (!t.device_id.empty() && t.device_id != d.id)
    throw StoreError(StoreError::Kind::invalid, "token is for another device");
  detail::check_local_addresses(d.attributes.local_addresses);
  std::lock_guard lock(mu_);
  SqliteTxn txn(*this);
  {
    SqliteStmt s(*this, prepare("SELECT 1 FROM groups WHERE name = ?"));
    s.bind(1, d.group);
    if (!s.step()) throw StoreError(StoreError::Kind::not_found, "no group " + d.group);
  }
  {
    SqliteStmt s(*this, prepare("SELECT 1 FROM devices WHERE id = ?"));
    s.bind(1, d.id);
    if (s.step()) throw StoreError(StoreError::Kind::conflict, "device " + d.id + " exists");
  }
  {
    SqliteStmt s(*this, prepare("INSERT INTO devices (id, group_name, state, created_at, "
                                "nat_type, nat_mapping, nat_filtering, public_endpoint, "
                                "local_addresses, agent_version, firmware_version, os_version, "
                                "overlay_index) "
                                "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                                "(SELECT COALESCE(MAX(overlay_index), 0) + 1 FROM devices))"));
    const auto& a = d.attributes;
    s.bind(1, d.id).bind(2, d.group).bind(3, int64_t(d.created_at));
    s.bind(4, a.nat_type).bind(5, a.nat_mapping).bind(6, a.nat_filtering);
    s.bind(7, a.public_endpoint).bind(8, detail::join_addresses(a.local_addresses));
    s.bind(9, a.agent_version).bind(10, a.firmware_version).bind(11, a.os_version);
    s.run();
  }
  {
    SqliteStmt s(*this, prepare("INSERT INTO enrollment_tokens (device_id, token_hash, "
                                "expires_at, used_at) VALUES (?, ?, ?, NULL)"));
    s.bind(1, d.id).bind(2, t.hash.data(), t.hash.size()).bind(3, int64_t(t.expires_at));
    s.run();
  }
  txn.commit();
}

std::optional<Device> SqliteStore::get_device(const std::string& id) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare(kGetDevice.c_str()));
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_device(s);
}

std::optional<Device> SqliteStore::get_device_by_overlay(uint32_t index) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare(kGetDeviceByOverlay.c_str()));
  s.bind(1, int64_t(index));
  if (!s.step()) return std::nullopt;
  return read_device(s);
}

std::vector<Device> SqliteStore::list_devices() {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare(kListDevices.c_str()));
  std::vector<Device> out;
  while (s.step()) out.push_back(read_device(s));
  return out;
}

std::optional<EnrollmentToken> SqliteStore::get_token(const std::string& device_id) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT device_id, token_hash, expires_at, used_at "
                              "FROM enrollment_tokens WHERE device_id = ?"));
  s.bind(1, device_id);
  if (!s.step()) return std::nullopt;
  EnrollmentToken t;
  t.device_id = s.text(0);
  auto hash = s.blob(1);
  if (hash.size() != t.hash.size())
    throw StoreError(StoreError::Kind::io, path_.string() + ": corrupt token hash");
  std::copy(hash.begin(), hash.end(), t.hash.begin());
  t.expires_at = s.i64(2);
  t.used_at = s.opt_i64(3);
  return t;
}

bool SqliteStore::complete_enrollment(const std::string& device_id, const TokenHash& hash,
                                      UnixMs now, const std::string& cert_serial,
                                      UnixMs cert_not_after, const std::vector<uint8_t>& cert_der) {
  std::lock_guard lock(mu_);
  SqliteTxn txn(*this);
  // The conditional UPDATE is the check: it matches only an unused, unexpired token with this
  // hash of a pending device, so of two concurrent enrollments exactly one sees changes() == 1.
  // (The hash is compared in SQL; that is fine because it is the token, not its hash, that is
  // secret.)
  {
    SqliteStmt s(*this, prepare("UPDATE enrollment_tokens SET used_at = ? "
                                "WHERE device_id = ? AND used_at IS NULL AND expires_at > ? "
                                "AND token_hash = ? AND EXISTS (SELECT 1 FROM devices "
                                "WHERE devices.id = enrollment_tokens.device_id "
                                "AND devices.state = 'pending')"));
    s.bind(1, int64_t(now)).bind(2, device_id).bind(3, int64_t(now));
    s.bind(4, hash.data(), hash.size());
    s.run();
    if (sqlite3_changes(db_) != 1) return false;  // txn rolls back
  }
  {
    SqliteStmt s(*this, prepare("UPDATE devices SET state = 'active', enrolled_at = ?, "
                                "cert_serial = ?, cert_not_after = ?, cert_der = ? "
                                "WHERE id = ? AND state = 'pending'"));
    s.bind(1, int64_t(now)).bind(2, cert_serial).bind(3, int64_t(cert_not_after));
    s.bind(4, cert_der.data(), cert_der.size()).bind(5, device_id);
    s.run();
    if (sqlite3_changes(db_) != 1) return false;
  }
  txn.commit();
  return true;
}

void SqliteStore::revoke_device(const std::string& id, UnixMs now) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("UPDATE devices SET state = 'revoked', "
                              "revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"));
  s.bind(1, int64_t(now)).bind(2, id);
  s.run();
  if (sqlite3_changes(db_) == 0) throw StoreError(StoreError::Kind::not_found, "no device " + id);
}

void SqliteStore::update_attributes(const std::string& id, const DeviceAttributes& a) {
  detail::check_local_addresses(a.local_addresses);
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("UPDATE devices SET nat_type = ?, nat_mapping = ?, "
                              "nat_filtering = ?, public_endpoint = ?, local_addresses = ?, "
                              "agent_version = ?, firmware_version = ?, os_version = ? "
                              "WHERE id = ?"));
  s.bind(1, a.nat_type).bind(2, a.nat_mapping).bind(3, a.nat_filtering);
  s.bind(4, a.public_endpoint).bind(5, detail::join_addresses(a.local_addresses));
  s.bind(6, a.agent_version).bind(7, a.firmware_version).bind(8, a.os_version).bind(9, id);
  s.run();
  if (sqlite3_changes(db_) == 0) throw StoreError(StoreError::Kind::not_found, "no device " + id);
}

void SqliteStore::update_presence(const std::vector<Presence>& batch) {
  if (batch.empty()) return;
  std::lock_guard lock(mu_);
  // One transaction, so one fsync for the whole batch instead of one per device.
  SqliteTxn txn(*this);
  for (const auto& p : batch) {
    SqliteStmt s(*this, prepare("UPDATE devices SET last_seen = ?, rtt_ms = COALESCE(?, rtt_ms) "
                                "WHERE id = ?"));
    s.bind(1, int64_t(p.last_seen)).bind(2, p.rtt_ms).bind(3, p.device_id);
    s.run();
  }
  txn.commit();
}

std::vector<uint8_t> SqliteStore::cert_der(const std::string& id) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT cert_der FROM devices WHERE id = ?"));
  s.bind(1, id);
  if (!s.step()) return {};
  return s.blob(0);
}

int64_t SqliteStore::append_audit(const AuditEvent& e) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("INSERT INTO audit (time, kind, device_id, source, detail) "
                              "VALUES (?, ?, ?, ?, ?) RETURNING seq"));
  s.bind(1, int64_t(e.time)).bind(2, e.kind).bind(3, e.device_id).bind(4, e.source);
  s.bind(5, e.detail);
  if (!s.step()) fail(SQLITE_ERROR, "audit insert returned no sequence number");
  int64_t seq = s.i64(0);
  // Finish the statement so the autocommit transaction commits before we acknowledge.
  s.run();
  return seq;
}

void SqliteStore::append_audit_batch(const std::vector<AuditEvent>& events) {
  if (events.empty()) return;
  std::lock_guard lock(mu_);
  // One transaction: one fsync for the batch, and either all events are recorded or none.
  SqliteTxn txn(*this);
  for (const auto& e : events) {
    SqliteStmt s(*this, prepare("INSERT INTO audit (time, kind, device_id, source, detail) "
                                "VALUES (?, ?, ?, ?, ?)"));
    s.bind(1, int64_t(e.time)).bind(2, e.kind).bind(3, e.device_id).bind(4, e.source);
    s.bind(5, e.detail);
    s.run();
  }
  txn.commit();
}

std::vector<AuditEvent> SqliteStore::list_audit(int64_t after_seq, size_t limit) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT seq, time, kind, device_id, source, detail FROM audit "
                              "WHERE seq > ? ORDER BY seq LIMIT ?"));
  s.bind(1, after_seq).bind(2, clamp_limit(limit));
  std::vector<AuditEvent> out;
  while (s.step()) out.push_back(read_audit(s));
  return out;
}

std::vector<AuditEvent> SqliteStore::tail_audit(size_t limit) {
  std::lock_guard lock(mu_);
  SqliteStmt s(*this, prepare("SELECT seq, time, kind, device_id, source, detail FROM "
                              "(SELECT seq, time, kind, device_id, source, detail FROM audit "
                              "ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"));
  s.bind(1, clamp_limit(limit));
  std::vector<AuditEvent> out;
  while (s.step()) out.push_back(read_audit(s));
  return out;
}

}  // namespace torii::store

// The core's Store on one SQLite file: WAL journal, fsync on every commit (synchronous=FULL) so
// an acknowledged write survives a crash, schema versioned with PRAGMA user_version.
#pragma once
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/store/store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace torii::store {

// Thread-safe: one connection behind a mutex (the server calls it from several threads; SQLite
// serialises writers anyway). Semantics beyond core/store/store.hpp, shared with MemoryStore and
// checked by store/store_conformance.hpp:
//  - add_device stores the device as pending with the given id, group, created_at and
//    attributes; the token's device_id must be empty or equal to the device's id (else invalid).
//  - complete_enrollment also requires the device to be pending, so a revoked device's unused
//    token cannot bring it back.
//  - revoke_device keeps the first revocation time when called again.
//  - update_attributes throws StoreError(not_found) for an unknown ID; local addresses must be
//    non-empty and contain no '\n' (else invalid).
//  - update_presence skips unknown IDs; an entry without rtt_ms keeps the previous value.
class SqliteStore final : public Store {
 public:
  static constexpr int kSchemaVersion = 2;

  // Opens db_file, creating it (mode 0600) and its schema if missing, migrating an older schema.
  // Throws StoreError(io) naming the path and SQLite's message when that fails, or when the file
  // was written by a newer torii.
  static std::unique_ptr<SqliteStore> open(const std::filesystem::path& db_file);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  void create_group(const Group& g) override;
  std::vector<Group> list_groups() override;
  std::optional<Group> get_group(const std::string& name) override;

  void add_device(const Device& d, const EnrollmentToken& t) override;
  std::optional<Device> get_device(const std::string& id) override;
  std::optional<Device> get_device_by_overlay(uint32_t index) override;
  std::vector<Device> list_devices() override;

  std::optional<EnrollmentToken> get_token(const std::string& device_id) override;
  bool complete_enrollment(const std::string& device_id, const TokenHash& hash, UnixMs now,
                           const std::string& cert_serial, UnixMs cert_not_after,
                           const std::vector<uint8_t>& cert_der) override;
  void revoke_device(const std::string& id, UnixMs now) override;
  void update_attributes(const std::string& id, const DeviceAttributes& a) override;
  void update_presence(const std::vector<Presence>& batch) override;

  int64_t append_audit(const AuditEvent& e) override;
  void append_audit_batch(const std::vector<AuditEvent>& events) override;
  std::vector<AuditEvent> list_audit(int64_t after_seq, size_t limit) override;
  std::vector<AuditEvent> tail_audit(size_t limit) override;

  // The certificate stored by complete_enrollment (not part of Device); empty if none.
  std::vector<uint8_t> cert_der(const std::string& id);
  const std::filesystem::path& path() const { return path_; }

 private:
  friend class SqliteStmt;
  friend class SqliteTxn;
  SqliteStore(sqlite3* db, std::filesystem::path path);
  // A cached prepared statement for `sql` (a string literal of this file, never built from
  // values: every value is bound).
  sqlite3_stmt* prepare(const char* sql);
  [[noreturn]] void fail(int rc, const std::string& what) const;

  std::mutex mu_;
  sqlite3* db_;
  std::filesystem::path path_;
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;
};

}  // namespace torii::store

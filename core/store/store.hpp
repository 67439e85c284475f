// The persistent state the server core needs, as an interface the core owns (style.md 4).
// SQLite implements it today (store/sqlite_store.*); PostgreSQL will implement the same
// interface and pass the same conformance suite (store/store_conformance.hpp). Keep SQL portable.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/time.hpp"

namespace torii::store {

class StoreError : public std::runtime_error {
 public:
  enum class Kind { conflict, not_found, invalid, io };
  StoreError(Kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

struct Group {
  std::string name;
  UnixMs created_at = 0;
};

enum class DeviceState { pending, active, revoked };
const char* to_string(DeviceState s);

// What the device reported in phase 2 (A3). Behaviours use the strings of
// core/stun/nat_behaviour names: "no-nat", "endpoint-independent", "address-dependent",
// "address-and-port-dependent", "udp-blocked", "unknown".
struct DeviceAttributes {
  std::string nat_type;  // summary: "none", "full-cone", "restricted-cone", ... "unknown"
  std::string nat_mapping;
  std::string nat_filtering;
  std::string public_endpoint;
  std::vector<std::string> local_addresses;
  std::string agent_version;
  std::string firmware_version;
  std::string os_version;
  friend bool operator==(const DeviceAttributes&, const DeviceAttributes&) = default;
};

struct Device {
  std::string id;
  std::string group;
  DeviceState state = DeviceState::pending;
  UnixMs created_at = 0;
  std::optional<UnixMs> enrolled_at;
  std::optional<UnixMs> revoked_at;
  std::string cert_serial;  // lowercase hex of the current certificate's serial; "" if none
  std::optional<UnixMs> cert_not_after;
  DeviceAttributes attributes;
  std::optional<UnixMs> last_seen;
  std::optional<uint32_t> rtt_ms;
  // A9: stable overlay index, assigned by add_device (1, 2, ... never reused while the device
  // exists); the overlay addresses are the deployment's prefixes plus this index.
  uint32_t overlay_index = 0;
};

using TokenHash = std::array<uint8_t, 32>;  // SHA-256 of the token text; the token is never stored

struct EnrollmentToken {
  std::string device_id;
  TokenHash hash{};
  UnixMs expires_at = 0;
  std::optional<UnixMs> used_at;
};

struct Presence {
  std::string device_id;
  UnixMs last_seen = 0;
  std::optional<uint32_t> rtt_ms;
};

struct AuditEvent {
  int64_t seq = 0;  // assigned by the store, increasing
  UnixMs time = 0;
  std::string kind;  // e.g. "enroll.ok", "enroll.bad_token", "session.open", "device.revoke"
  std::string device_id;
  std::string source;  // peer address or "admin"
  std::string detail;  // human-readable; never a secret
};

class Store {
 public:
  virtual ~Store() = default;

  // Groups. create_group throws StoreError(conflict) if the name exists.
  virtual void create_group(const Group& g) = 0;
  virtual std::vector<Group> list_groups() = 0;
  virtual std::optional<Group> get_group(const std::string& name) = 0;

  // Adds a pending device and its enrollment token in one transaction, assigning the next free
  // overlay index (d.overlay_index is ignored). Throws
  // StoreError(conflict) if the ID exists, StoreError(not_found) if the group does not.
  virtual void add_device(const Device& d, const EnrollmentToken& t) = 0;
  virtual std::optional<Device> get_device(const std::string& id) = 0;
  virtual std::vector<Device> list_devices() = 0;  // ordered by id
  virtual std::optional<Device> get_device_by_overlay(uint32_t index) = 0;

  virtual std::optional<EnrollmentToken> get_token(const std::string& device_id) = 0;
  // In one transaction: if the device's token has this hash, is unused and expires after `now`,
  // marks it used at `now`, stores the certificate and makes the device active; returns true.
  // Otherwise changes nothing and returns false (so a token is consumed at most once, even by
  // two concurrent enrollments).
  virtual bool complete_enrollment(const std::string& device_id, const TokenHash& hash, UnixMs now,
                                   const std::string& cert_serial, UnixMs cert_not_after,
                                   const std::vector<uint8_t>& cert_der) = 0;
  // Marks the device revoked. Throws StoreError(not_found) for an unknown ID.
  virtual void revoke_device(const std::string& id, UnixMs now) = 0;
  virtual void update_attributes(const std::string& id, const DeviceAttributes& a) = 0;
  // Batched last-seen/RTT updates (written periodically, not per ECHO).
  virtual void update_presence(const std::vector<Presence>& batch) = 0;

  // Appends and returns the assigned sequence number.
  virtual int64_t append_audit(const AuditEvent& e) = 0;
  // Appends several events; implementations should commit them in one transaction.
  virtual void append_audit_batch(const std::vector<AuditEvent>& events) {
    for (const auto& e : events) append_audit(e);
  }
  // Events with seq > after_seq, oldest first, at most `limit`.
  virtual std::vector<AuditEvent> list_audit(int64_t after_seq, size_t limit) = 0;
  // The newest `limit` events, oldest first.
  virtual std::vector<AuditEvent> tail_audit(size_t limit) = 0;
};

}  // namespace torii::store

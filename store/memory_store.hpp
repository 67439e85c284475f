// An in-memory Store for unit tests of the server core: same semantics as SqliteStore (checked
// by the same conformance suite), nothing persisted.
#pragma once
#include <map>
#include <mutex>
#include <vector>

#include "core/store/store.hpp"

namespace torii::store {

// Thread-safe (one mutex). See SqliteStore for the semantics beyond core/store/store.hpp.
class MemoryStore final : public Store {
 public:
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

 private:
  std::mutex mu_;
  std::map<std::string, Group> groups_;    // ordered: list_groups is by name
  std::map<std::string, Device> devices_;  // ordered: list_devices is by id
  std::map<std::string, EnrollmentToken> tokens_;
  std::map<std::string, std::vector<uint8_t>> certs_;
  std::vector<AuditEvent> audit_;  // seq = index + 1
};

}  // namespace torii::store

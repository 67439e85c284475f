// MemoryStore: maps under one mutex, mirroring SqliteStore's checks and their order so both
// throw the same StoreError kinds for the same calls.
#include "store/memory_store.hpp"

#include <algorithm>

#include "store/address_list.hpp"

namespace torii::store {

namespace {

// Constant-time, like a comparison of secrets should be, though the hash alone is not one.
bool same_hash(const TokenHash& a, const TokenHash& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

void MemoryStore::create_group(const Group& g) {
  if (g.name.empty()) throw StoreError(StoreError::Kind::invalid, "group name is empty");
  std::lock_guard lock(mu_);
  if (!groups_.emplace(g.name, g).second)
    throw StoreError(StoreError::Kind::conflict, "group " + g.name + " exists");
}

std::vector<Group> MemoryStore::list_groups() {
  std::lock_guard lock(mu_);
  std::vector<Group> out;
  for (const auto& [name, g] : groups_) out.push_back(g);
  return out;
}

std::optional<Group> MemoryStore::get_group(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = groups_.find(name);
  if (it == groups_.end()) return std::nullopt;
  return it->second;
}

void MemoryStore::add_device(const Device& d, const EnrollmentToken& t) {
  if (d.id.empty()) throw StoreError(StoreError::Kind::invalid, "device ID is empty");
  if (!t.device_id.empty() && t.device_id != d.id)
    throw StoreError(StoreError::Kind::invalid, "token is for another device");
  detail::check_local_addresses(d.attributes.local_addresses);
  std::lock_guard lock(mu_);
  if (!groups_.count(d.group)) throw StoreError(StoreError::Kind::not_found, "no group " + d.group);
  if (devices_.count(d.id))
    throw StoreError(StoreError::Kind::conflict, "device " + d.id + " exists");
  Device stored;
  stored.id = d.id;
  stored.group = d.group;
  stored.state = DeviceState::pending;
  stored.created_at = d.created_at;
  stored.attributes = d.attributes;
  uint32_t top = 0;
  for (const auto& [id, other] : devices_) top = std::max(top, other.overlay_index);
  stored.overlay_index = top + 1;
  devices_.emplace(d.id, stored);
  EnrollmentToken token;
  token.device_id = d.id;
  token.hash = t.hash;
  token.expires_at = t.expires_at;
  tokens_[d.id] = token;
}

std::optional<Device> MemoryStore::get_device(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return std::nullopt;
  return it->second;
}

std::optional<Device> MemoryStore::get_device_by_overlay(uint32_t index) {
  std::lock_guard lock(mu_);
  for (const auto& [id, d] : devices_)
    if (d.overlay_index == index) return d;
  return std::nullopt;
}

std::vector<Device> MemoryStore::list_devices() {
  std::lock_guard lock(mu_);
  std::vector<Device> out;
  for (const auto& [id, d] : devices_) out.push_back(d);
  return out;
}

std::optional<EnrollmentToken> MemoryStore::get_token(const std::string& device_id) {
  std::lock_guard lock(mu_);
  auto it = tokens_.find(device_id);
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

bool MemoryStore::complete_enrollment(const std::string& device_id, const TokenHash& hash,
                                      UnixMs now, const std::string& cert_serial,
                                      UnixMs cert_not_after, const std::vector<uint8_t>& cert_der) {
  std::lock_guard lock(mu_);
  auto t = tokens_.find(device_id);
  auto d = devices_.find(device_id);
  if (t == tokens_.end() || d == devices_.end()) return false;
  EnrollmentToken& token = t->second;
  Device& dev = d->second;
  if (token.used_at || token.expires_at <= now || !same_hash(token.hash, hash) ||
      dev.state != DeviceState::pending)
    return false;
  token.used_at = now;
  dev.state = DeviceState::active;
  dev.enrolled_at = now;
  dev.cert_serial = cert_serial;
  dev.cert_not_after = cert_not_after;
  certs_[device_id] = cert_der;
  return true;
}

void MemoryStore::revoke_device(const std::string& id, UnixMs now) {
  std::lock_guard lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) throw StoreError(StoreError::Kind::not_found, "no device " + id);
  it->second.state = DeviceState::revoked;
  if (!it->second.revoked_at) it->second.revoked_at = now;
}

void MemoryStore::update_attributes(const std::string& id, const DeviceAttributes& a) {
  detail::check_local_addresses(a.local_addresses);
  std::lock_guard lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) throw StoreError(StoreError::Kind::not_found, "no device " + id);
  it->second.attributes = a;
}

void MemoryStore::update_presence(const std::vector<Presence>& batch) {
  std::lock_guard lock(mu_);
  for (const auto& p : batch) {
    auto it = devices_.find(p.device_id);
    if (it == devices_.end()) continue;  // deleted meanwhile: nothing to record
    it->second.last_seen = p.last_seen;
    if (p.rtt_ms) it->second.rtt_ms = p.rtt_ms;
  }
}

int64_t MemoryStore::append_audit(const AuditEvent& e) {
  std::lock_guard lock(mu_);
  AuditEvent stored = e;
  stored.seq = int64_t(audit_.size()) + 1;
  audit_.push_back(stored);
  return stored.seq;
}

void MemoryStore::append_audit_batch(const std::vector<AuditEvent>& events) {
  std::lock_guard lock(mu_);
  for (const auto& e : events) {
    audit_.push_back(e);
    audit_.back().seq = int64_t(audit_.size());
  }
}

std::vector<AuditEvent> MemoryStore::list_audit(int64_t after_seq, size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<AuditEvent> out;
  size_t start = after_seq < 0 ? 0 : size_t(std::min<int64_t>(after_seq, int64_t(audit_.size())));
  for (size_t i = start; i < audit_.size() && out.size() < limit; ++i) out.push_back(audit_[i]);
  return out;
}

std::vector<AuditEvent> MemoryStore::tail_audit(size_t limit) {
  std::lock_guard lock(mu_);
  size_t start = audit_.size() > limit ? audit_.size() - limit : 0;
  return std::vector<AuditEvent>(audit_.begin() + std::ptrdiff_t(start), audit_.end());
}

std::vector<uint8_t> MemoryStore::cert_der(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = certs_.find(id);
  return it == certs_.end() ? std::vector<uint8_t>() : it->second;
}

}  // namespace torii::store

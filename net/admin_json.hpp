// JSON shapes of the admin API, shared by the server (net/admin_api.*) and the `torii` CLI so
// both sides agree on field names. Times are ISO-8601 UTC strings ("2026-11-22T01:02:03.456Z").
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "core/store/store.hpp"
#include "core/time.hpp"
#include "net/admin_backend.hpp"

namespace torii::net {

// "2026-11-22T01:02:03.456Z". Computed arithmetically (no gmtime/TZ), so it is thread-safe and
// works for any UnixMs, including negative ones.
std::string iso8601_utc(UnixMs ms);

// {name, created_at}
nlohmann::json group_to_json(const store::Group& g);

// {id, group, state, online, nat_type, nat_mapping, nat_filtering, public_endpoint,
//  local_addresses[], agent_version, firmware_version, os_version, last_seen, last_seen_ms,
//  rtt_ms, created_at, enrolled_at, revoked_at, cert_serial, cert_not_after, connected_since,
//  session_source}. Optional times and rtt_ms are null when absent; string fields are always
// strings ("" when unknown).
nlohmann::json device_view_to_json(const DeviceView& v);

// {seq, time, time_ms, kind, device_id, source, detail}
nlohmann::json audit_event_to_json(const store::AuditEvent& e);

// {id, group, token, expires_at, expires_at_ms, enroll_command}
nlohmann::json new_device_to_json(const NewDevice& d);

}  // namespace torii::net

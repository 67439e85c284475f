// Conversions from admin records to the admin API's JSON (see admin_json.hpp for the shapes).
#include "net/admin_json.hpp"

#include <cstdio>
#include <optional>

namespace torii::net {

namespace {

// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

// Floor division, so times before 1970 still land on the right day and millisecond.
int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

nlohmann::json time_or_null(const std::optional<UnixMs>& t) {
  if (!t) return nullptr;
  return iso8601_utc(*t);
}

nlohmann::json ms_or_null(const std::optional<UnixMs>& t) {
  if (!t) return nullptr;
  return *t;
}

}  // namespace

std::string iso8601_utc(UnixMs ms) {
  const int64_t days = floor_div(ms, 86400000);
  const int64_t in_day = ms - days * 86400000;
  int64_t y = 0;
  unsigned mo = 0, d = 0;
  civil_from_days(days, y, mo, d);
  const int64_t h = in_day / 3600000;
  const int64_t mi = in_day / 60000 % 60;
  const int64_t s = in_day / 1000 % 60;
  const int64_t frac = in_day % 1000;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                static_cast<long long>(y), mo, d, static_cast<long long>(h),
                static_cast<long long>(mi), static_cast<long long>(s),
                static_cast<long long>(frac));
  return buf;
}

nlohmann::json group_to_json(const store::Group& g) {
  return {{"name", g.name}, {"created_at", iso8601_utc(g.created_at)}};
}

nlohmann::json device_view_to_json(const DeviceView& v) {
  const store::Device& d = v.device;
  const store::DeviceAttributes& a = d.attributes;
  nlohmann::json j;
  j["id"] = d.id;
  j["group"] = d.group;
  j["state"] = store::to_string(d.state);
  j["online"] = v.online;
  j["nat_type"] = a.nat_type;
  j["nat_mapping"] = a.nat_mapping;
  j["nat_filtering"] = a.nat_filtering;
  j["public_endpoint"] = a.public_endpoint;
  j["local_addresses"] = a.local_addresses;
  j["agent_version"] = a.agent_version;
  j["firmware_version"] = a.firmware_version;
  j["os_version"] = a.os_version;
  j["last_seen"] = time_or_null(d.last_seen);
  j["last_seen_ms"] = ms_or_null(d.last_seen);
  j["rtt_ms"] = d.rtt_ms ? nlohmann::json(*d.rtt_ms) : nlohmann::json(nullptr);
  j["created_at"] = iso8601_utc(d.created_at);
  j["enrolled_at"] = time_or_null(d.enrolled_at);
  j["revoked_at"] = time_or_null(d.revoked_at);
  j["cert_serial"] = d.cert_serial;
  j["cert_not_after"] = time_or_null(d.cert_not_after);
  j["connected_since"] = time_or_null(v.connected_since);
  j["session_source"] = v.session_source;
  j["overlay_ipv4"] = v.overlay_ipv4;
  j["overlay_ipv6"] = v.overlay_ipv6;
  j["tunnels"] = nlohmann::json::array();
  for (const auto& [id, peer, method] : v.tunnels)
    j["tunnels"].push_back({{"tunnel_id", id}, {"peer", peer}, {"method", method}});
  return j;
}

nlohmann::json audit_event_to_json(const store::AuditEvent& e) {
  nlohmann::json j;
  j["seq"] = e.seq;
  j["time"] = iso8601_utc(e.time);
  j["time_ms"] = e.time;
  j["kind"] = e.kind;
  j["device_id"] = e.device_id;
  j["source"] = e.source;
  j["detail"] = e.detail;
  return j;
}

nlohmann::json new_device_to_json(const NewDevice& d) {
  return {{"id", d.id},
          {"group", d.group},
          {"token", d.token},
          {"expires_at", iso8601_utc(d.expires_at)},
          {"expires_at_ms", d.expires_at},
          {"enroll_command", d.enroll_command}};
}

}  // namespace torii::net

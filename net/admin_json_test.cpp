// The admin API's JSON shapes: ISO-8601 formatting and null handling for absent values.
#include "net/admin_json.hpp"

#include <gtest/gtest.h>

namespace torii::net {
namespace {

TEST(AdminJson, Iso8601Utc) {
  EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(iso8601_utc(1795309323456), "2026-11-22T01:02:03.456Z");
  EXPECT_EQ(iso8601_utc(951782400000), "2000-02-29T00:00:00.000Z");  // leap day
  EXPECT_EQ(iso8601_utc(253402300799999), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(iso8601_utc(-1), "1969-12-31T23:59:59.999Z");
}

TEST(AdminJson, DeviceWithNothingKnownHasNullsNotZeros) {
  DeviceView v;
  v.device.id = "d1";
  v.device.group = "g";
  v.device.state = store::DeviceState::revoked;
  v.device.revoked_at = 1000;
  const auto j = device_view_to_json(v);
  EXPECT_EQ(j["state"], "revoked");
  EXPECT_EQ(j["revoked_at"], "1970-01-01T00:00:01.000Z");
  for (const char* k : {"last_seen", "last_seen_ms", "rtt_ms", "enrolled_at", "cert_not_after",
                        "connected_since"}) {
    EXPECT_TRUE(j[k].is_null()) << k;
  }
  EXPECT_EQ(j["session_source"], "");
  EXPECT_EQ(j["online"], false);
  EXPECT_EQ(j.size(), 25u);  // + overlay_ipv4, overlay_ipv6, tunnels
}

TEST(AdminJson, GroupAuditAndNewDevice) {
  EXPECT_EQ(group_to_json({"cams", 0}),
            (nlohmann::json{{"name", "cams"}, {"created_at", "1970-01-01T00:00:00.000Z"}}));
  store::AuditEvent e{3, 5, "enroll.ok", "d1", "10.0.0.2:5000", "enrolled"};
  const auto a = audit_event_to_json(e);
  EXPECT_EQ(a["seq"], 3);
  EXPECT_EQ(a["time"], "1970-01-01T00:00:00.005Z");
  EXPECT_EQ(a["time_ms"], 5);
  EXPECT_EQ(a["source"], "10.0.0.2:5000");
  NewDevice d{"d1", "g", "tok", 60000, "torii-agent enroll ..."};
  const auto n = new_device_to_json(d);
  EXPECT_EQ(n["token"], "tok");
  EXPECT_EQ(n["expires_at"], "1970-01-01T00:01:00.000Z");
  EXPECT_EQ(n["enroll_command"], "torii-agent enroll ...");
}

}  // namespace
}  // namespace torii::net

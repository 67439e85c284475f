// `torii device add|list|show|revoke|disconnect`: device lifecycle from the operator's side.
#include <iostream>
#include <memory>

#include "apps/torii/common.hpp"

namespace torii::cli {

namespace {

std::string yes_no(const nlohmann::json& j, const char* key) {
  return j.value(key, false) ? "yes" : "no";
}

std::string rtt_text(const nlohmann::json& d) {
  const auto& rtt = d.at("rtt_ms");
  return rtt.is_number() ? rtt.dump() + " ms" : "-";
}

std::string last_seen_text(const nlohmann::json& d, int64_t now) {
  const auto& ms = d.at("last_seen_ms");
  return ms.is_number() ? relative_time(ms.get<int64_t>(), now) : "never";
}

// An ISO time followed by how long ago it was, e.g. "2026-11-22T01:02:03.456Z (5m ago)".
std::string time_with_age(const nlohmann::json& d, const char* iso_key, int64_t ms, int64_t now) {
  return text_or_dash(d, iso_key) + " (" + relative_time(ms, now) + ")";
}

void print_device(const nlohmann::json& d) {
  const int64_t now = now_ms();
  auto row = [](const char* label, const std::string& value) {
    std::cout << label << std::string(18 - std::string(label).size(), ' ') << value << "\n";
  };
  row("ID:", text_or_dash(d, "id"));
  row("Group:", text_or_dash(d, "group"));
  row("State:", text_or_dash(d, "state"));
  std::string online = yes_no(d, "online");
  if (d.value("online", false)) {
    online += " (since " + text_or_dash(d, "connected_since") + ", from " +
              text_or_dash(d, "session_source") + ")";
  }
  row("Online:", online);
  row("NAT:", text_or_dash(d, "nat_type") + " (mapping " + text_or_dash(d, "nat_mapping") +
                  ", filtering " + text_or_dash(d, "nat_filtering") + ")");
  row("Public endpoint:", text_or_dash(d, "public_endpoint"));
  row("Overlay:", text_or_dash(d, "overlay_ipv4") + ", " + text_or_dash(d, "overlay_ipv6"));
  std::string tunnels;
  for (const auto& t : d.value("tunnels", nlohmann::json::array()))
    tunnels +=
        (tunnels.empty() ? "" : ", ") + t.value("peer", "?") + " (" + t.value("method", "?") + ")";
  row("Tunnels:", tunnels.empty() ? "-" : tunnels);
  std::string local;
  for (const auto& a : d.value("local_addresses", nlohmann::json::array())) {
    local += (local.empty() ? "" : ", ") + a.get<std::string>();
  }
  row("Local addresses:", local.empty() ? "-" : local);
  row("RTT:", rtt_text(d));
  const auto& seen = d.at("last_seen_ms");
  row("Last seen:",
      seen.is_number() ? time_with_age(d, "last_seen", seen.get<int64_t>(), now) : "never");
  row("Agent version:", text_or_dash(d, "agent_version"));
  row("Firmware:", text_or_dash(d, "firmware_version"));
  row("OS:", text_or_dash(d, "os_version"));
  row("Created:", text_or_dash(d, "created_at"));
  row("Enrolled:", text_or_dash(d, "enrolled_at"));
  row("Revoked:", text_or_dash(d, "revoked_at"));
  row("Certificate:", d.value("cert_serial", "").empty()
                          ? "-"
                          : "serial " + text_or_dash(d, "cert_serial") + ", valid until " +
                                text_or_dash(d, "cert_not_after"));
}

struct AddOptions {
  std::string id;
  std::string group;
  std::string ttl;
  bool json = false;
};

struct IdOptions {
  std::string id;
  bool json = false;
};

}  // namespace

void register_device_commands(CLI::App& cmd, const Globals& g, Action& action) {
  cmd.require_subcommand(1);

  auto add = std::make_shared<AddOptions>();
  CLI::App* a = cmd.add_subcommand(
      "add", "Register a device and print its one-time enrollment token and command");
  a->add_option("id", add->id, "Device ID (default: the server generates one)");
  a->add_option("-g,--group", add->group, "Group the device belongs to")->required();
  a->add_option("--ttl", add->ttl, "Token lifetime: 90s, 30m, 24h, 7d (default: server's, 24h)")
      ->check(duration_validator());
  a->add_flag("--json", add->json, "Print {id, group, token, expires_at, enroll_command} as JSON");
  a->callback([&g, &action, add] {
    action = [&g, add] {
      nlohmann::json body = {{"group", add->group}};
      if (!add->id.empty()) body["id"] = add->id;
      if (!add->ttl.empty()) body["ttl_seconds"] = *parse_duration_seconds(add->ttl);
      const auto j = call_api(g, "POST", "/v1/devices", body);
      if (add->json) {
        print_json(j);
        return;
      }
      std::cout << "Device ID:  " << text_or_dash(j, "id") << "\n"
                << "Group:      " << text_or_dash(j, "group") << "\n"
                << "Token:      " << text_or_dash(j, "token") << "\n"
                << "Expires:    " << text_or_dash(j, "expires_at");
      if (j.contains("expires_at_ms") && j["expires_at_ms"].is_number()) {
        std::cout << " (" << relative_time(j["expires_at_ms"].get<int64_t>(), now_ms()) << ")";
      }
      std::cout << "\n\nThe token is shown only once and works once. To enroll, run on the "
                   "device:\n\n  "
                << text_or_dash(j, "enroll_command") << "\n";
    };
  });

  auto list_json = std::make_shared<bool>(false);
  CLI::App* l = cmd.add_subcommand("list", "List devices with their state, NAT and presence");
  l->add_flag("--json", *list_json, "Print {\"devices\": [...]} as JSON");
  l->callback([&g, &action, list_json] {
    action = [&g, list_json] {
      const auto j = call_api(g, "GET", "/v1/devices");
      if (*list_json) {
        print_json(j);
        return;
      }
      const auto& devices = j.at("devices");
      if (devices.empty()) {
        std::cout << "No devices yet. Add one with: torii device add --group NAME\n";
        return;
      }
      const int64_t now = now_ms();
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : devices) {
        rows.push_back({text_or_dash(d, "id"), text_or_dash(d, "group"), text_or_dash(d, "state"),
                        yes_no(d, "online"), text_or_dash(d, "overlay_ipv4"),
                        text_or_dash(d, "nat_type"), text_or_dash(d, "public_endpoint"),
                        rtt_text(d), last_seen_text(d, now), text_or_dash(d, "agent_version")});
      }
      print_table({"ID", "GROUP", "STATE", "ONLINE", "OVERLAY", "NAT", "PUBLIC ENDPOINT", "RTT",
                   "LAST SEEN", "AGENT"},
                  rows);
    };
  });

  auto show = std::make_shared<IdOptions>();
  CLI::App* s = cmd.add_subcommand("show", "Show everything known about one device");
  s->add_option("id", show->id, "Device ID")->required();
  s->add_flag("--json", show->json, "Print the device as JSON");
  s->callback([&g, &action, show] {
    action = [&g, show] {
      const auto j = call_api(g, "GET", "/v1/devices/" + url_segment(show->id));
      if (show->json) {
        print_json(j);
      } else {
        print_device(j);
      }
    };
  });

  auto revoke = std::make_shared<IdOptions>();
  CLI::App* r = cmd.add_subcommand(
      "revoke", "Revoke a device: its certificate is refused from now on and any session ends");
  r->add_option("id", revoke->id, "Device ID")->required();
  r->callback([&g, &action, revoke] {
    action = [&g, revoke] {
      call_api(g, "POST", "/v1/devices/" + url_segment(revoke->id) + "/revoke");
      std::cout << "Revoked device " << revoke->id << "\n";
    };
  });

  auto disconnect = std::make_shared<IdOptions>();
  CLI::App* d = cmd.add_subcommand(
      "disconnect", "Close a device's live session (it may reconnect; use revoke to block it)");
  d->add_option("id", disconnect->id, "Device ID")->required();
  d->callback([&g, &action, disconnect] {
    action = [&g, disconnect] {
      call_api(g, "POST", "/v1/devices/" + url_segment(disconnect->id) + "/disconnect");
      std::cout << "Disconnected device " << disconnect->id << "\n";
    };
  });
}

}  // namespace torii::cli

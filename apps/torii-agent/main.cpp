// torii-agent — runs on each device: enrolls with toriid (A1), keeps the server session with
// mutual TLS, attributes, ECHO keepalive and reconnect backoff (A2-A5), peer-to-peer tunnels on a
// TUN interface (A6-A11). Listens on no network port.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <google/protobuf/stubs/logging.h>
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "net/agent.hpp"

using namespace torii;

namespace {

Duration parse_duration(const std::string& text) {
  if (text.empty()) throw CLI::ValidationError("duration", "empty");
  size_t pos = 0;
  double v = std::stod(text, &pos);
  const std::string unit = text.substr(pos);
  double ms;
  if (unit == "ms")
    ms = v;
  else if (unit == "s" || unit.empty())
    ms = v * 1000;
  else if (unit == "m")
    ms = v * 60000;
  else if (unit == "h")
    ms = v * 3600000;
  else
    throw CLI::ValidationError("duration", "'" + text + "': use e.g. 500ms, 25s, 2m");
  return Duration(int64_t(ms));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "torii-agent — torii device agent (enrollment, server session, keepalive, peer-to-peer "
      "tunnels)"};
  app.set_version_flag("--version", std::string("torii-agent ") + TORII_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  // enroll
  net::EnrollOptions eo;
  std::string e_state = "/var/lib/torii-agent";
  auto* enroll = app.add_subcommand("enroll", "Enroll this device with toriid (one-time token)");
  enroll->add_option("--server", eo.server, "toriid control address HOST:PORT")->required();
  enroll
      ->add_option("--ca-sha256", eo.ca_sha256,
                   "SHA-256 fingerprint of toriid's CA (hex, colons optional)")
      ->required();
  enroll->add_option("--id", eo.device_id, "Device ID given by `torii device add`")->required();
  enroll->add_option("--token", eo.token, "One-time enrollment token")->required();
  enroll->add_option("--state-dir", e_state, "Where the key and certificate are kept")
      ->capture_default_str();

  // run
  net::RunOptions ro;
  std::string r_state = "/var/lib/torii-agent";
  std::string keepalive = "25s";
  bool no_nat = false;
  auto* run = app.add_subcommand("run", "Keep the session with toriid (until SIGTERM)");
  run->add_option("--state-dir", r_state, "State directory of `enroll`")->capture_default_str();
  run->add_option("--keepalive", keepalive, "Idle interval before an ECHO (A4), e.g. 25s")
      ->capture_default_str();
  run->add_option("--firmware-version", ro.firmware_version, "Reported to the server")
      ->capture_default_str();
  run->add_flag("--no-nat-discovery", no_nat, "Skip STUN NAT discovery");
  bool no_tunnel = false;
  run->add_flag("--no-tunnel", no_tunnel,
                "No peer-to-peer tunnels (no TUN interface, no tunnel socket)");
  run->add_option("--tunnel-port", ro.tunnel.port, "UDP port of the tunnel socket (0: any)")
      ->capture_default_str();
  run->add_option("--tun-name", ro.tunnel.tun_name, "Name of the overlay interface")
      ->capture_default_str();
  run->add_option("--mtu", ro.tunnel.mtu, "Overlay interface MTU")
      ->check(CLI::Range(576, 9000))
      ->capture_default_str();
  bool no_offload = false;
  run->add_flag("--no-offload", no_offload,
                "Do not use TUN TSO/GRO or UDP GSO/GRO (one packet per system call on the TUN "
                "device; for kernels or drivers where they misbehave)");

  // connect / disconnect (A10)
  std::string c_state = "/var/lib/torii-agent", c_peer;
  auto* connect = app.add_subcommand("connect", "Open the tunnel to a peer device now");
  connect->add_option("peer", c_peer, "Peer device ID")->required();
  connect->add_option("--state-dir", c_state, "State directory of the running agent")
      ->capture_default_str();
  bool c_wait = false;
  connect->add_flag("--wait", c_wait, "Wait (up to 20 s) until the tunnel is up");
  std::string d_state = "/var/lib/torii-agent", d_peer;
  auto* disconnect = app.add_subcommand("disconnect", "Close the tunnel to a peer device");
  disconnect->add_option("peer", d_peer, "Peer device ID")->required();
  disconnect->add_option("--state-dir", d_state, "State directory of the running agent")
      ->capture_default_str();

  // status
  std::string s_state = "/var/lib/torii-agent";
  bool s_json = false;
  auto* status = app.add_subcommand("status", "Show the server session and the tunnels");
  status->add_option("--state-dir", s_state, "State directory")->capture_default_str();
  status->add_flag("--json", s_json, "JSON output");

  CLI11_PARSE(app, argc, argv);
  // Malformed strings from a peer would make libprotobuf write to stderr for every message: the
  // decoder already refuses them (counted as malformed), so its own logging only adds noise.
  google::protobuf::SetLogHandler(nullptr);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  ::signal(SIGPIPE, SIG_IGN);

  try {
    if (*enroll) {
      eo.paths.dir = e_state;
      const std::string group = net::enroll(eo);
      std::cout << "enrolled device " << eo.device_id << " (group " << group << ") into " << e_state
                << "\nnext: torii-agent run --state-dir " << e_state << "\n";
      return 0;
    }
    if (*run) {
      ro.paths.dir = r_state;
      ro.keepalive = parse_duration(keepalive);
      if (ro.keepalive < limits::kMinKeepaliveInterval ||
          ro.keepalive > limits::kMaxKeepaliveInterval)
        throw std::runtime_error("--keepalive must be between 200ms and 600s");
      ro.discover_nat = !no_nat;
      ro.tunnel.enabled = !no_tunnel;
      ro.tunnel.offload = !no_offload;
      const int code = net::run_agent(ro);
      if (code == net::kExitRevoked)
        std::cerr << "torii-agent: this device has been revoked by the administrator\n";
      else if (code == net::kExitRefused)
        std::cerr << "torii-agent: the server refused this device (see the log above)\n";
      return code;
    }
    if (*connect || *disconnect) {
      const bool open = bool(*connect);
      net::AgentPaths p{open ? c_state : d_state};
      const std::string peer = open ? c_peer : d_peer;
      const std::string answer =
          net::agent_command(p, std::string(open ? "connect " : "disconnect ") + peer);
      if (answer.rfind("ok", 0) != 0) {
        std::cerr << "torii-agent: "
                  << (answer.rfind("error: ", 0) == 0 ? answer.substr(7) : answer) << "\n";
        return 1;
      }
      if (open && c_wait) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (std::chrono::steady_clock::now() < deadline) {
          const std::string st = net::agent_command(p, "status");
          auto j = nlohmann::json::parse(st.substr(3), nullptr, false);
          for (const auto& e : j.value("peers", nlohmann::json::array())) {
            if (e.value("id", "") != peer) continue;
            if (e.value("state", "") == "up") {
              std::cout << "tunnel to " << peer << " is up (" << e.value("path", "") << ", "
                        << e.value("endpoint", "") << ")\n";
              return 0;
            }
            if (e.value("state", "") == "failed") {
              std::cerr << "torii-agent: no tunnel to " << peer << ": " << e.value("error", "")
                        << "\n";
              return 1;
            }
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        std::cerr << "torii-agent: the tunnel to " << peer << " did not come up within 20 s; "
                  << "see the agent's log\n";
        return 1;
      }
      std::cout << (open ? "opening the tunnel to " : "closed the tunnel to ") << peer << "\n";
      return 0;
    }
    if (*status) {
      net::AgentPaths p{s_state};
      // The running agent answers with its live state; status.json is the fallback (stopped,
      // revoked, or another user without access to the socket).
      std::optional<nlohmann::json> st;
      try {
        const std::string live = net::agent_command(p, "status");
        if (live.rfind("ok ", 0) == 0) {
          auto j = nlohmann::json::parse(live.substr(3), nullptr, false);
          if (!j.is_discarded()) st = std::move(j);
        }
      } catch (const std::exception&) {
      }
      if (!st) st = net::load_status(p);
      if (!st) {
        std::cerr << "torii-agent: no status in " << s_state
                  << " (has `torii-agent run --state-dir " << s_state << "` been started?)\n";
        return 1;
      }
      auto& j = *st;
      const int pid = j.value("pid", 0);
      const bool running = pid > 0 && ::kill(pid, 0) == 0;
      j["running"] = running;
      if (!running && j.value("state", "") != "revoked" && j.value("state", "") != "refused")
        j["state"] = "stopped";
      if (s_json) {
        std::cout << j.dump(2) << "\n";
        return 0;
      }
      auto str = [&](const char* k) {
        if (!j.contains(k) || j[k].is_null()) return std::string("-");
        return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
      };
      std::cout << "device       " << str("device_id") << " (group " << str("group") << ")\n"
                << "server       " << str("server") << "\n"
                << "session      " << str("state") << " since " << str("since")
                << (running ? "" : " (agent not running)") << "\n"
                << "rtt          " << str("rtt_ms") << " ms\n"
                << "nat          " << str("nat_type") << " (mapping " << str("nat_mapping")
                << ", filtering " << str("nat_filtering") << ")\n"
                << "public       " << str("public_endpoint") << "\n"
                << "reconnects   " << str("reconnects") << "\n";
      if (!str("last_error").empty() && str("last_error") != "-" && str("last_error") != "\"\"")
        std::cout << "last event   " << str("last_error") << "\n";
      if (j.contains("overlay_ipv4"))
        std::cout << "overlay      " << str("overlay_ipv4")
                  << (j.value("overlay_ipv6", "").empty() ? "" : ", " + str("overlay_ipv6"))
                  << " on " << str("interface") << "\n";
      if (j.contains("tunnel_offload") && j["tunnel_offload"].is_object()) {
        const auto& o = j["tunnel_offload"];
        auto on = [&](const char* k) { return o.value(k, false) ? "on" : "off"; };
        std::cout << "offload      TUN TSO/GRO " << on("tun") << ", UDP GSO " << on("udp_gso")
                  << ", UDP GRO " << on("udp_gro") << "\n";
      }
      const auto peers = j.value("peers", nlohmann::json::array());
      if (!peers.empty()) {
        std::printf("\n%-20s %-16s %-11s %-7s %-22s %7s %12s %12s\n", "PEER", "OVERLAY", "STATE",
                    "PATH", "ENDPOINT", "RTT", "RX", "TX");
        for (const auto& e : peers) {
          const auto rtt = e.value("rtt_ms", nlohmann::json());
          std::printf("%-20s %-16s %-11s %-7s %-22s %7s %12llu %12llu\n", e.value("id", "").c_str(),
                      e.value("overlay_ipv4", "").c_str(), e.value("state", "").c_str(),
                      e.value("path", "").c_str(), e.value("endpoint", "").c_str(),
                      rtt.is_number() ? (std::to_string(rtt.get<int>()) + "ms").c_str() : "-",
                      (unsigned long long)e.value("rx_bytes", uint64_t(0)),
                      (unsigned long long)e.value("tx_bytes", uint64_t(0)));
        }
      }
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "torii-agent: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// The agent's state directory: what enrollment leaves there and what `run` reports for
// `status`. Layout: device.key (0600, FileKeyStore), device.crt, ca.crt, agent.json (identity
// and server), status.json (live session state, rewritten atomically). The agent listens on
// nothing (A11), so status goes through this file rather than a socket.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace torii::net {

struct AgentIdentity {
  std::string device_id;
  std::string group;
  std::string server;     // HOST:PORT
  std::string ca_sha256;  // hex
};

struct AgentPaths {
  std::filesystem::path dir;
  std::filesystem::path key() const { return dir / "device.key"; }
  std::filesystem::path cert() const { return dir / "device.crt"; }
  std::filesystem::path ca() const { return dir / "ca.crt"; }
  std::filesystem::path identity() const { return dir / "agent.json"; }
  std::filesystem::path status() const { return dir / "status.json"; }
  std::filesystem::path socket() const { return dir / "agent.sock"; }
};

void save_identity(const AgentPaths& p, const AgentIdentity& id);
// Throws std::runtime_error saying what is missing and how to fix it (run enroll first).
AgentIdentity load_identity(const AgentPaths& p);

void save_status(const AgentPaths& p, const nlohmann::json& status);
std::optional<nlohmann::json> load_status(const AgentPaths& p);

// Splits "host:port" / "[v6]:port"; throws std::invalid_argument on a bad form.
std::pair<std::string, uint16_t> split_host_port(const std::string& text);

}  // namespace torii::net

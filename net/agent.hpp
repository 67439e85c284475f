// The device agent's network side: enrollment (A1) and the server session loop (A2-A5) with
// jittered reconnect backoff, on one Asio thread. Protocol decisions are the core's
// (core/session/agent_session); this file owns sockets, TLS, timers, STUN and state files.
#pragma once
#include <boost/asio.hpp>
#include <optional>
#include <string>

#include "core/session/limits.hpp"
#include "net/agent_files.hpp"
#include "net/tunnel_host.hpp"

namespace torii::net {

struct EnrollOptions {
  std::string server;     // HOST:PORT
  std::string ca_sha256;  // pin, with or without colons
  std::string device_id;
  std::string token;
  AgentPaths paths;
};

// Throws std::runtime_error with a message for the operator on any failure; on success the
// state directory holds device.key, device.crt, ca.crt and agent.json. Returns the group.
std::string enroll(const EnrollOptions& opts);

struct RunOptions {
  AgentPaths paths;
  Duration keepalive = limits::kDefaultKeepaliveInterval;
  std::string firmware_version = "unknown";
  bool discover_nat = true;
  TunnelOptions tunnel;  // A6-A11 peer-to-peer tunnels
};

// `torii-agent connect/disconnect/status` talk to the running agent over a Unix socket in the
// state directory (0600, owner only; the agent listens on nothing reachable from the network).
// Returns the agent's one-line answer ("ok ..." or "error: ..."); throws if it is not running.
std::string agent_command(const AgentPaths& paths, const std::string& command);

// Exit codes of run(): 0 stopped by signal, 3 revoked, 4 refused by the server (fix needed).
enum AgentExit { kExitStopped = 0, kExitRevoked = 3, kExitRefused = 4 };
int run_agent(const RunOptions& opts);

// Non-loopback addresses of the host's interfaces that are up (A3 attribute).
std::vector<std::string> local_addresses();
std::string os_description();

}  // namespace torii::net

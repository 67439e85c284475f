// Agent state-directory files (see agent_files.hpp).
#include "net/agent_files.hpp"

#include <charconv>
#include <fstream>
#include <stdexcept>

#include "pki/key_store.hpp"

namespace torii::net {

void save_identity(const AgentPaths& p, const AgentIdentity& id) {
  nlohmann::json j{{"device_id", id.device_id},
                   {"group", id.group},
                   {"server", id.server},
                   {"ca_sha256", id.ca_sha256}};
  pki::write_file_atomic(p.identity(), j.dump(2) + "\n", 0600);
}

AgentIdentity load_identity(const AgentPaths& p) {
  std::ifstream in(p.identity());
  if (!in)
    throw std::runtime_error("no enrollment in " + p.dir.string() +
                             " (missing agent.json): run `torii-agent enroll` first");
  nlohmann::json j;
  try {
    in >> j;
    AgentIdentity id{j.at("device_id").get<std::string>(), j.value("group", ""),
                     j.at("server").get<std::string>(), j.value("ca_sha256", "")};
    return id;
  } catch (const std::exception& e) {
    throw std::runtime_error(p.identity().string() + " is damaged (" + e.what() +
                             "); enroll again into a fresh --state-dir");
  }
}

// status.json is a snapshot for `torii-agent status` when the agent does not answer on its
// socket. It is rewritten whenever the status changes: about once a second while tunnels carry
// traffic (their byte counters change) and on every status query. Atomic for readers, but not
// durable: two fsyncs per write would block the agent's one I/O thread (and with it the
// tunnels' data path) until the disk answers and wear a device's flash every second (issue 4).
// Losing the latest snapshot in a power cut is harmless: the running agent rewrites it.
void save_status(const AgentPaths& p, const nlohmann::json& status) {
  pki::write_file_atomic(p.status(), status.dump(2) + "\n", 0644, /*durable=*/false);
}

std::optional<nlohmann::json> load_status(const AgentPaths& p) {
  std::ifstream in(p.status());
  if (!in) return std::nullopt;
  try {
    nlohmann::json j;
    in >> j;
    return j;
  } catch (...) {
    return std::nullopt;
  }
}

std::pair<std::string, uint16_t> split_host_port(const std::string& text) {
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 2 > text.size() || text[close + 1] != ':')
      throw std::invalid_argument("'" + text + "' is not HOST:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw std::invalid_argument("'" + text + "' is not HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (ec != std::errc() || ptr != port.data() + port.size() || v == 0 || v > 65535)
    throw std::invalid_argument("'" + text + "': port must be 1-65535");
  return {host, uint16_t(v)};
}

}  // namespace torii::net

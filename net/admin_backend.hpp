// What the admin API (net/admin_api.*) asks of the running server. toriid implements it over
// the Store and the server core; tests implement it with a fake. Errors are AdminError with an
// HTTP status and a message for the operator.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/store/store.hpp"
#include "core/time.hpp"

namespace torii::net {

class AdminError : public std::runtime_error {
 public:
  AdminError(int http_status, const std::string& message)
      : std::runtime_error(message), status_(http_status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct NewDevice {
  std::string id;
  std::string group;
  std::string token;  // shown once; the server keeps only its hash
  UnixMs expires_at = 0;
  std::string enroll_command;  // exact `torii-agent enroll ...` line to run on the device
};

// A device as the operator sees it: stored record plus live session state.
struct DeviceView {
  store::Device device;
  bool online = false;
  std::optional<UnixMs> connected_since;
  std::string session_source;              // peer address of the live session, "" if offline
  std::string overlay_ipv4, overlay_ipv6;  // A9
  std::vector<std::tuple<uint64_t, std::string, std::string>> tunnels;  // id, peer, method
};

class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual store::Group create_group(const std::string& name) = 0;  // 409 if exists
  virtual std::vector<store::Group> list_groups() = 0;
  // id empty: the server generates one. ttl: token lifetime (default 24 h).
  virtual NewDevice add_device(const std::string& id, const std::string& group,
                               std::optional<Duration> ttl) = 0;  // 404 group, 409 id
  virtual std::vector<DeviceView> list_devices() = 0;
  virtual DeviceView get_device(const std::string& id) = 0;   // 404
  virtual void revoke_device(const std::string& id) = 0;      // 404
  virtual void disconnect_device(const std::string& id) = 0;  // 404, 409 offline
  virtual std::vector<store::AuditEvent> audit(size_t limit, int64_t after_seq) = 0;
  virtual std::string metrics_text() = 0;  // Prometheus text exposition format
};

}  // namespace torii::net

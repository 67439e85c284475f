// toriid's AdminBackend: administrative operations over the Store and the live control server,
// each audit-logged with source "admin".
#pragma once
#include <functional>
#include <string>

#include "net/admin_backend.hpp"
#include "net/audit_log.hpp"
#include "net/control_server.hpp"
#include "net/stun_server.hpp"

namespace torii::net {

struct ServerAdminOptions {
  std::string advertise;       // HOST:PORT of the control port as devices reach it
  std::string ca_fingerprint;  // hex
  Duration token_ttl = limits::kDefaultTokenTtl;
};

class ServerAdmin final : public AdminBackend {
 public:
  ServerAdmin(store::Store& store, ControlServer& control, AuditLog& audit, ServerAdminOptions opts)
      : store_(store), control_(control), audit_(audit), opts_(std::move(opts)) {}
  void set_stun(const StunServer* stun) { stun_ = stun; }
  void set_relay(const class RelayServer* relay) { relay_ = relay; }
  void set_unauthorized_counter(std::function<uint64_t()> f) { unauthorized_ = std::move(f); }

  store::Group create_group(const std::string& name) override;
  std::vector<store::Group> list_groups() override;
  NewDevice add_device(const std::string& id, const std::string& group,
                       std::optional<Duration> ttl) override;
  std::vector<DeviceView> list_devices() override;
  DeviceView get_device(const std::string& id) override;
  void revoke_device(const std::string& id) override;
  void disconnect_device(const std::string& id) override;
  std::vector<store::AuditEvent> audit(size_t limit, int64_t after_seq) override;
  std::string metrics_text() override;

 private:
  DeviceView view(store::Device d);
  void log(const std::string& kind, const std::string& device_id, const std::string& detail);
  store::Store& store_;
  ControlServer& control_;
  AuditLog& audit_;
  ServerAdminOptions opts_;
  const StunServer* stun_ = nullptr;
  const class RelayServer* relay_ = nullptr;
  std::function<uint64_t()> unauthorized_;
};

}  // namespace torii::net

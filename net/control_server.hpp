// toriid's control-plane adapter: accepts TLS 1.3 connections, feeds the I/O-free ServerCore
// and executes its Actions (send, close with close_notify, audit, enroll, save attributes).
// Threads: the io_context may run on several threads; each connection is confined to a strand;
// the core is guarded by one mutex and never held across I/O.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "core/server/server_core.hpp"
#include "net/audit_log.hpp"
#include "net/tls.hpp"

namespace torii::net {

struct ControlServerOptions {
  Endpoint listen;
  server::ServerConfig core;
  int backlog = 4096;
};

class ControlServer {
 public:
  ControlServer(asio::io_context& io, store::Store& store, const pki::CertificateAuthority& ca,
                server::CertIssuer& issuer, AuditLog& audit, ControlServerOptions opts);
  ~ControlServer();

  void start();  // binds; throws std::runtime_error naming the address on failure
  // Sends Close + close_notify to every session and stops accepting; returns at once.
  void shutdown();
  Endpoint local_endpoint() const;

  void revoke(const std::string& device_id);
  // The UDP relay that RelayOpen/RelayClose actions drive (A6); may stay unset.
  void set_relay(class RelayServer* relay) { relay_ = relay; }
  const server::OverlayPlan& overlay() const { return core_.config().overlay; }
  std::vector<std::tuple<uint64_t, std::string, p2p::Method>> tunnels_of(const std::string& id);
  bool disconnect(const std::string& device_id);
  std::optional<server::SessionInfo> session_of(const std::string& device_id);
  server::Metrics metrics();
  size_t sessions();
  size_t connections() const { return connections_.load(); }
  uint64_t handshakes_ok() const { return handshakes_ok_.load(); }
  void flush_presence();

  static server::Now now();

 private:
  struct Conn;
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(std::shared_ptr<Conn> c);
  asio::awaitable<void> write_loop(std::shared_ptr<Conn> c);
  asio::awaitable<void> timer_loop();
  void execute(server::Actions& actions);
  void deliver(server::SessionId sid, std::vector<uint8_t> frame, bool close);
  void run_enrollment(std::shared_ptr<Conn> c, server::action::Enroll e);

  asio::io_context& io_;
  store::Store& store_;
  const pki::CertificateAuthority& ca_;
  server::CertIssuer& issuer_;
  AuditLog& audit_;
  ControlServerOptions opts_;
  SslCtxPtr ctx_;
  tcp::acceptor acceptor_;
  class RelayServer* relay_ = nullptr;
  std::mutex core_mu_;
  server::ServerCore core_;
  std::mutex conns_mu_;
  std::unordered_map<server::SessionId, std::weak_ptr<Conn>> conns_;
  std::atomic<size_t> connections_{0};
  std::atomic<uint64_t> handshakes_ok_{0};
  std::atomic<bool> stopping_{false};
  // A session ended: persist presence at the next timer tick rather than after the periodic
  // interval, so an offline device does not show a stale or missing last_seen (A4).
  std::atomic<bool> presence_urgent_{false};
};

}  // namespace torii::net

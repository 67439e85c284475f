// The admin HTTP/1.1 API that `torii` (the CLI) and Prometheus talk to: JSON routes under /v1
// guarded by a bearer token, plus an unauthenticated GET /metrics. Serves AdminBackend.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "net/admin_backend.hpp"

namespace torii::net {

// Routes (all JSON; errors are {"error": "..."}):
//   POST /v1/groups                     {"name"}                          -> 201 group
//   GET  /v1/groups                                                       -> {"groups": [...]}
//   POST /v1/devices                    {"id"?, "group", "ttl_seconds"?}  -> 201 new device
//   GET  /v1/devices                                                      -> {"devices": [...]}
//   GET  /v1/devices/{id}                                                 -> device
//   POST /v1/devices/{id}/revoke                                          -> {"revoked": id}
//   POST /v1/devices/{id}/disconnect                                      -> {"disconnected": id}
//   GET  /v1/audit?limit=N&after=SEQ                                      -> {"events": [...]}
//   GET  /metrics   (no token: a Prometheus scrape; backend.metrics_text() verbatim)
// limit defaults to 100 (1..1000). Without `after`, the backend is asked with after_seq = -1,
// meaning "the newest `limit` events"; with it, events with seq > after, oldest first.
//
// All handlers, and so all backend calls, run on one strand: the backend is never called
// concurrently by the API even if several threads run the io_context.
class AdminApi {
 public:
  static constexpr size_t kMaxBodyBytes = 64 * 1024;
  static constexpr int kReadTimeoutSeconds = 10;  // per request: headers and body
  static constexpr size_t kMaxConnections = 64;

  // listen_spec: "ADDR:PORT" ("127.0.0.1:7444", "[::1]:7444", port 0 = any free port) or
  // "unix:/path" (socket file created mode 0600; a stale socket file is replaced). admin_token
  // must not be empty (throws std::invalid_argument). The backend must outlive this object.
  AdminApi(boost::asio::io_context& io, std::string listen_spec, std::string admin_token,
           AdminBackend& backend);
  ~AdminApi();  // stops if still running; call it while the io_context is not running our handlers
  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;

  // Binds and starts accepting (the accept loop runs when the io_context runs). Throws
  // std::runtime_error, e.g. "cannot listen on 127.0.0.1:7444 for the admin API: Address
  // already in use". Call once.
  void start();
  // Closes the listener and every open connection (their coroutines end with operation_aborted)
  // and removes the unix socket file. Safe from any thread: it runs on the API's strand,
  // immediately when called from it, otherwise as soon as the io_context runs it. Idempotent.
  void stop();

  // What clients should use to connect, valid after start(): "127.0.0.1:54321" (the real port
  // when 0 was asked for), "[::1]:7444" or "unix:/path". toriid writes it to DIR/api.endpoint.
  std::string bound_endpoint() const;
  uint16_t port() const;  // bound TCP port; 0 for a unix socket or before start()

  // Requests rejected with 401 since construction; thread-safe. The backend exports it in its
  // metrics (toriid: torii_admin_unauthorized_total), so /metrics does not add it again.
  uint64_t unauthorized_count() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // shared with the connection coroutines, which may outlive us
};

}  // namespace torii::net

// Administrative operations of toriid (see server_admin.hpp).
#include "net/server_admin.hpp"

#include "net/relay_server.hpp"

#include <fmt/format.h>

#include "core/server/enrollment.hpp"
#include "pki/pki.hpp"

namespace torii::net {

namespace {
UnixMs wall_now() {
  return ControlServer::now().wall;
}
}  // namespace

void ServerAdmin::log(const std::string& kind, const std::string& device_id,
                      const std::string& detail) {
  store::AuditEvent ev;
  ev.time = wall_now();
  ev.kind = kind;
  ev.device_id = device_id;
  ev.source = "admin";
  ev.detail = detail;
  audit_.append(std::move(ev));
}

store::Group ServerAdmin::create_group(const std::string& name) {
  if (!pki::valid_group_name(name))
    throw AdminError(400,
                     "invalid group name '" + name +
                         "': use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . or -)");
  store::Group g{name, wall_now()};
  try {
    store_.create_group(g);
  } catch (const store::StoreError& e) {
    if (e.kind() == store::StoreError::Kind::conflict)
      throw AdminError(409, "group '" + name + "' already exists");
    throw;
  }
  log("group.create", "", "group " + name);
  return g;
}

std::vector<store::Group> ServerAdmin::list_groups() {
  return store_.list_groups();
}

NewDevice ServerAdmin::add_device(const std::string& id_in, const std::string& group,
                                  std::optional<Duration> ttl) {
  const std::string id = id_in.empty() ? server::generate_device_id() : id_in;
  if (!pki::valid_device_id(id))
    throw AdminError(400,
                     "invalid device ID '" + id +
                         "': use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . or -)");
  if (!store_.get_group(group))
    throw AdminError(
        404, "no group '" + group + "': create it first with `torii group create " + group + "`");
  const Duration life = ttl.value_or(opts_.token_ttl);
  if (life < std::chrono::seconds(60) || life > std::chrono::hours(24 * 30))
    throw AdminError(400, "token lifetime must be between 60 s and 30 days");
  const UnixMs now = wall_now();
  NewDevice nd;
  nd.id = id;
  nd.group = group;
  nd.token = server::generate_token();
  nd.expires_at = now + life.count();
  store::Device d;
  d.id = id;
  d.group = group;
  d.state = store::DeviceState::pending;
  d.created_at = now;
  store::EnrollmentToken t{id, server::hash_token(nd.token), nd.expires_at, std::nullopt};
  try {
    store_.add_device(d, t);
  } catch (const store::StoreError& e) {
    if (e.kind() == store::StoreError::Kind::conflict)
      throw AdminError(409, "device '" + id + "' already exists");
    if (e.kind() == store::StoreError::Kind::not_found)
      throw AdminError(404, "no group '" + group + "'");
    throw;
  }
  nd.enroll_command = fmt::format(
      "torii-agent enroll --server {} --ca-sha256 {} --id {} --token {} --state-dir "
      "/var/lib/torii-agent",
      opts_.advertise, opts_.ca_fingerprint, id, nd.token);
  log("device.add", id,
      "group " + group + ", enrollment token valid " + std::to_string(life.count() / 1000) + " s");
  return nd;
}

DeviceView ServerAdmin::view(store::Device d) {
  DeviceView v;
  if (auto s = control_.session_of(d.id)) {
    v.online = true;
    v.connected_since = s->connected_since;
    v.session_source = s->source.to_string();
    // Live values are fresher than the periodically flushed ones in the store.
    d.last_seen = s->last_seen;
    if (s->rtt_ms) d.rtt_ms = s->rtt_ms;
  }
  const auto& plan = control_.overlay();
  if (auto a = plan.ipv4_of(d.overlay_index)) v.overlay_ipv4 = a->address_string();
  if (auto a = plan.ipv6_of(d.overlay_index)) v.overlay_ipv6 = a->address_string();
  for (const auto& [id, peer, method] : control_.tunnels_of(d.id))
    v.tunnels.emplace_back(id, peer, p2p::to_string(method));
  v.device = std::move(d);
  return v;
}

std::vector<DeviceView> ServerAdmin::list_devices() {
  std::vector<DeviceView> out;
  for (auto& d : store_.list_devices()) out.push_back(view(std::move(d)));
  return out;
}

DeviceView ServerAdmin::get_device(const std::string& id) {
  auto d = store_.get_device(id);
  if (!d) throw AdminError(404, "no device '" + id + "'");
  return view(std::move(*d));
}

void ServerAdmin::revoke_device(const std::string& id) {
  auto d = store_.get_device(id);
  if (!d) throw AdminError(404, "no device '" + id + "'");
  if (d->state == store::DeviceState::revoked)
    throw AdminError(409, "device '" + id + "' is already revoked");
  store_.revoke_device(id, wall_now());  // first, so a reconnect in between is refused
  control_.revoke(id);
  log("device.revoke", id, "certificate serial " + (d->cert_serial.empty() ? "-" : d->cert_serial));
}

void ServerAdmin::disconnect_device(const std::string& id) {
  if (!store_.get_device(id)) throw AdminError(404, "no device '" + id + "'");
  if (!control_.disconnect(id)) throw AdminError(409, "device '" + id + "' is not online");
  log("device.disconnect", id, "session closed by administrator");
}

std::vector<store::AuditEvent> ServerAdmin::audit(size_t limit, int64_t after_seq) {
  audit_.flush();  // what the operator just did is in the answer
  if (limit == 0 || limit > 10000) limit = 10000;
  if (after_seq > 0) return store_.list_audit(after_seq, limit);
  return store_.tail_audit(limit);
}

std::string ServerAdmin::metrics_text() {
  const auto m = control_.metrics();
  std::string o;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& body) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}", name, help, name, type, body);
  };
  auto line = [](const char* name, uint64_t v, const std::string& labels = "") {
    return fmt::format("{}{} {}\n", name, labels, v);
  };
  metric("torii_sessions_active", "gauge", "Authenticated device sessions currently open.",
         line("torii_sessions_active", control_.sessions()));
  metric("torii_connections_active", "gauge", "TCP connections on the control port.",
         line("torii_connections_active", control_.connections()));
  metric("torii_sessions_opened_total", "counter", "Device sessions authenticated (phase 2).",
         line("torii_sessions_opened_total", m.sessions_opened));
  metric("torii_sessions_closed_total", "counter", "Device sessions ended.",
         line("torii_sessions_closed_total", m.sessions_closed));
  metric("torii_tls_handshakes_total", "counter", "TLS 1.3 handshakes on the control port.",
         line("torii_tls_handshakes_total", control_.handshakes_ok(), "{result=\"ok\"}") +
             line("torii_tls_handshakes_total", m.tls_handshake_failures, "{result=\"failed\"}"));
  metric("torii_auth_failures_total", "counter",
         "Refused authentications and enrollments (bad token, certificate, ID...).",
         line("torii_auth_failures_total", m.auth_failures));
  metric("torii_auth_lockouts_total", "counter", "Lockouts started by the failure limiter (D1).",
         line("torii_auth_lockouts_total", m.lockouts));
  metric("torii_connections_rejected_total", "counter",
         "Connections refused because the source was locked out.",
         line("torii_connections_rejected_total", m.rejected_locked));
  metric("torii_messages_total", "counter", "Control messages.",
         line("torii_messages_total", m.messages_in, "{direction=\"in\"}") +
             line("torii_messages_total", m.messages_out, "{direction=\"out\"}"));
  metric("torii_messages_malformed_total", "counter", "Malformed or unexpected control messages.",
         line("torii_messages_malformed_total", m.malformed));
  metric("torii_enrollments_total", "counter", "Enrollment attempts.",
         line("torii_enrollments_total", m.enroll_ok, "{result=\"ok\"}") +
             line("torii_enrollments_total", m.enroll_failed, "{result=\"refused\"}"));
  metric("torii_echoes_total", "counter", "ECHO keepalives received (A4).",
         line("torii_echoes_total", m.echoes));
  metric("torii_offline_timeouts_total", "counter", "Devices marked offline after missed ECHOs.",
         line("torii_offline_timeouts_total", m.offline_timeouts));
  metric("torii_revocations_total", "counter", "Devices revoked.",
         line("torii_revocations_total", m.revocations));
  metric("torii_peer_requests_total", "counter", "Tunnel requests by outcome (A6).",
         line("torii_peer_requests_total", m.peer_requests, "{outcome=\"received\"}") +
             line("torii_peer_requests_total", m.peer_refused, "{outcome=\"refused\"}") +
             line("torii_peer_requests_total", m.peer_timeouts, "{outcome=\"timeout\"}") +
             line("torii_peer_requests_total", m.peer_rate_limited, "{outcome=\"rate_limited\"}"));
  metric("torii_tunnels_brokered", "gauge", "Open tunnels the server brokered.",
         line("torii_tunnels_brokered", m.tunnels_open));
  metric("torii_relay_tls_packets_total", "counter",
         "Tunnel packets relayed inside TLS sessions (last-resort relay).",
         line("torii_relay_tls_packets_total", m.relay_tls_packets) +
             line("torii_relay_tls_packets_total", m.relay_tls_dropped, "{outcome=\"dropped\"}"));
  if (relay_) {
    const auto r = relay_->stats();
    metric("torii_relay_udp_packets_total", "counter", "UDP tunnel relay datagrams by outcome.",
           line("torii_relay_udp_packets_total", r.forwarded, "{outcome=\"forwarded\"}") +
               line("torii_relay_udp_packets_total", r.binds, "{outcome=\"bind\"}") +
               line("torii_relay_udp_packets_total",
                    r.dropped_unbound + r.dropped_unauth + r.dropped_malformed + r.dropped_stale,
                    "{outcome=\"dropped\"}"));
    metric("torii_relay_udp_bytes_total", "counter", "Bytes of forwarded UDP relay datagrams.",
           line("torii_relay_udp_bytes_total", r.forwarded_bytes));
    const auto io = relay_->io_stats();
    metric("torii_relay_udp_syscalls_total", "counter",
           "recvmmsg / sendmmsg calls of the UDP relay (datagrams per call: the batching).",
           line("torii_relay_udp_syscalls_total", io.recv_calls, "{op=\"recvmmsg\"}") +
               line("torii_relay_udp_syscalls_total", io.send_calls, "{op=\"sendmmsg\"}"));
    metric("torii_relay_udp_io_datagrams_total", "counter",
           "UDP relay datagrams: received (after GRO splitting), sent in GSO runs, refused by "
           "the kernel, too large for a receive slot.",
           line("torii_relay_udp_io_datagrams_total", io.datagrams_in, "{io=\"received\"}") +
               line("torii_relay_udp_io_datagrams_total", io.gso_sends, "{io=\"sent_gso\"}") +
               line("torii_relay_udp_io_datagrams_total", io.send_errors, "{io=\"send_error\"}") +
               line("torii_relay_udp_io_datagrams_total", io.truncated, "{io=\"truncated\"}"));
  }
  if (stun_) {
    const auto s = stun_->stats();
    metric("torii_stun_requests_total", "counter", "STUN datagrams received.",
           line("torii_stun_requests_total", s.requests));
    metric("torii_stun_responses_total", "counter", "STUN responses sent.",
           line("torii_stun_responses_total", s.answered));
    metric("torii_stun_dropped_total", "counter",
           "STUN datagrams dropped (malformed or not a request).",
           line("torii_stun_dropped_total", s.dropped));
  }
  if (unauthorized_)
    metric("torii_admin_unauthorized_total", "counter", "Admin API requests refused (bad token).",
           line("torii_admin_unauthorized_total", unauthorized_()));
  return o;
}

}  // namespace torii::net

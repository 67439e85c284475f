// Server protocol core: session phases 2-4 (A3-A5), enrollment gating (A1), D1 limits.
#include "core/server/server_core.hpp"

#include <algorithm>

#include "core/control/frame.hpp"

namespace torii::server {

namespace pb = ::torii::control::v1;
using control::make_frame;

stun::NatBehaviour from_wire(pb::NatBehaviour b) {
  switch (b) {
    case pb::NAT_BEHAVIOUR_NO_NAT:
      return stun::NatBehaviour::no_nat;
    case pb::NAT_BEHAVIOUR_ENDPOINT_INDEPENDENT:
      return stun::NatBehaviour::endpoint_independent;
    case pb::NAT_BEHAVIOUR_ADDRESS_DEPENDENT:
      return stun::NatBehaviour::address_dependent;
    case pb::NAT_BEHAVIOUR_ADDRESS_AND_PORT_DEPENDENT:
      return stun::NatBehaviour::address_and_port_dependent;
    case pb::NAT_BEHAVIOUR_UDP_BLOCKED:
      return stun::NatBehaviour::udp_blocked;
    default:
      return stun::NatBehaviour::unknown;
  }
}

pb::NatBehaviour to_wire(stun::NatBehaviour b) {
  switch (b) {
    case stun::NatBehaviour::no_nat:
      return pb::NAT_BEHAVIOUR_NO_NAT;
    case stun::NatBehaviour::endpoint_independent:
      return pb::NAT_BEHAVIOUR_ENDPOINT_INDEPENDENT;
    case stun::NatBehaviour::address_dependent:
      return pb::NAT_BEHAVIOUR_ADDRESS_DEPENDENT;
    case stun::NatBehaviour::address_and_port_dependent:
      return pb::NAT_BEHAVIOUR_ADDRESS_AND_PORT_DEPENDENT;
    case stun::NatBehaviour::udp_blocked:
      return pb::NAT_BEHAVIOUR_UDP_BLOCKED;
    default:
      return pb::NAT_BEHAVIOUR_UNKNOWN;
  }
}

ServerCore::Session* ServerCore::find(SessionId sid) {
  auto it = sessions_.find(sid);
  return it == sessions_.end() ? nullptr : &it->second;
}

void ServerCore::set_deadline(Session& s, Instant t) {
  clear_deadline(s);
  s.deadline = t;
  deadlines_.emplace(t, s.id);
}

void ServerCore::clear_deadline(Session& s) {
  if (s.deadline != Instant{}) deadlines_.erase({s.deadline, s.id});
  s.deadline = Instant{};
}

void ServerCore::send(Session& s, std::vector<uint8_t> frame, Actions& out) {
  ++metrics_.messages_out;
  out.push_back(action::Send{s.id, std::move(frame)});
}

void ServerCore::send_error(Session& s, pb::ErrorCode code, const std::string& msg, Actions& out) {
  send(s, make_frame([&](pb::Envelope& e) {
         e.mutable_error()->set_code(code);
         e.mutable_error()->set_message(msg);
       }),
       out);
}

void ServerCore::send_close(Session& s, pb::CloseReason reason, const std::string& detail,
                            Actions& out) {
  send(s, make_frame([&](pb::Envelope& e) {
         e.mutable_close()->set_reason(reason);
         e.mutable_close()->set_detail(detail);
       }),
       out);
}

void ServerCore::audit(const Now& now, std::string kind, const std::string& device_id,
                       const Endpoint& source, std::string detail, Actions& out) {
  store::AuditEvent ev;
  ev.time = now.wall;
  ev.kind = std::move(kind);
  ev.device_id = device_id;
  ev.source = source.to_string();
  ev.detail = std::move(detail);
  out.push_back(action::Audit{std::move(ev)});
}

// Leaves the online table at once (so revocation or replacement is immediate) and asks the
// host to close; the session record goes when the host reports on_closed.
void ServerCore::begin_close(const Now& now, Session& s, Actions& out) {
  if (s.state == State::closing) return;
  if (s.state == State::established && !s.device_id.empty()) {
    auto it = online_.find(s.device_id);
    if (it != online_.end() && it->second == s.id) online_.erase(it);
    dirty_presence_[s.device_id] = store::Presence{s.device_id, s.last_seen, s.rtt_ms};
  }
  s.state = State::closing;
  // The host must report on_closed within the write timeout; if it does not, tick drops it.
  set_deadline(s, now.mono + limits::kWriteTimeout);
  out.push_back(action::Close{s.id});
}

void ServerCore::auth_failure(const Now& now, Session& s, const std::string& device_id,
                              pb::ErrorCode code, const std::string& kind,
                              const std::string& message, const std::string& detail, Actions& out) {
  ++metrics_.auth_failures;
  audit(now, kind, device_id, s.source, detail, out);
  const std::string src = s.source.address_string();
  if (per_source_.record_failure(src, now.mono)) {
    ++metrics_.lockouts;
    audit(now, "abuse.lockout", device_id, s.source,
          "source address " + src + " locked out for " +
              std::to_string(cfg_.per_source.lockout.count() / 1000) + " s after " +
              std::to_string(cfg_.per_source.max_failures) + " failed authentications",
          out);
  }
  if (!device_id.empty() && per_device_.record_failure(device_id, now.mono)) {
    ++metrics_.lockouts;
    audit(now, "abuse.lockout", device_id, s.source,
          "device ID locked out for " + std::to_string(cfg_.per_device.lockout.count() / 1000) +
              " s after " + std::to_string(cfg_.per_device.max_failures) +
              " failed authentications",
          out);
  }
  send_error(s, code, message, out);
  begin_close(now, s, out);
}

bool ServerCore::admit(const Now& now, const Endpoint& source) {
  if (per_source_.locked(source.address_string(), now.mono)) {
    ++metrics_.rejected_locked;
    return false;
  }
  return true;
}

void ServerCore::on_handshake_failed(const Now& now, const Endpoint& source,
                                     const std::string& reason, Actions& out) {
  ++metrics_.tls_handshake_failures;
  // Garbage on the port is not an authentication attempt, but it is counted against the source
  // so a flood gets locked out; the audit entry is written only when the lockout starts.
  const std::string src = source.address_string();
  if (per_source_.record_failure(src, now.mono)) {
    ++metrics_.lockouts;
    audit(now, "abuse.lockout", "", source,
          "source address " + src +
              " locked out after repeated failed TLS handshakes (last: " + reason + ")",
          out);
  }
}

SessionId ServerCore::on_open(const Now& now, const Endpoint& source, ClientCert cert,
                              Actions& out) {
  Session s;
  s.id = next_id_++;
  s.source = source;
  s.cert = std::move(cert);
  s.opened_wall = now.wall;
  s.last_seen = now.wall;
  auto [it, _] = sessions_.emplace(s.id, std::move(s));
  set_deadline(it->second, now.mono + cfg_.first_message_timeout);
  return it->first;
}

void ServerCore::on_stream_corrupt(const Now& now, SessionId sid, Actions& out) {
  Session* s = find(sid);
  if (!s || s->state == State::closing) return;
  ++metrics_.malformed;
  send_error(*s, pb::ERROR_CODE_BAD_MESSAGE, "frame exceeds the size limit", out);
  begin_close(now, *s, out);
}

void ServerCore::on_frame(const Now& now, SessionId sid, std::string_view payload, Actions& out) {
  Session* s = find(sid);
  if (!s || s->state == State::closing) return;
  ++metrics_.messages_in;
  pb::Envelope env;
  const auto err = control::decode_envelope(reinterpret_cast<const uint8_t*>(payload.data()),
                                            payload.size(), env);
  if (err != control::DecodeError::none) {
    ++metrics_.malformed;
    send_error(*s,
               err == control::DecodeError::unsupported_version ? pb::ERROR_CODE_UNSUPPORTED_VERSION
                                                                : pb::ERROR_CODE_BAD_MESSAGE,
               control::to_string(err), out);
    begin_close(now, *s, out);
    return;
  }
  switch (s->state) {
    case State::awaiting_first:
      if (env.has_hello()) return on_hello(now, *s, env.hello(), out);
      if (env.has_enroll_request()) return on_enroll_request(now, *s, env.enroll_request(), out);
      ++metrics_.malformed;
      send_error(*s, pb::ERROR_CODE_BAD_MESSAGE, "expected Hello or EnrollRequest", out);
      return begin_close(now, *s, out);
    case State::enrolling:
      ++metrics_.malformed;
      send_error(*s, pb::ERROR_CODE_BAD_MESSAGE, "enrollment in progress", out);
      return begin_close(now, *s, out);
    case State::established:
      return on_established_message(now, *s, env, out);
    case State::closing:
      return;
  }
}

void ServerCore::on_enroll_request(const Now& now, Session& s, const pb::EnrollRequest& r,
                                   Actions& out) {
  if (s.cert.present) {
    ++metrics_.malformed;
    send_error(s, pb::ERROR_CODE_BAD_MESSAGE, "already enrolled: connect without a certificate",
               out);
    return begin_close(now, s, out);
  }
  if (per_device_.locked(r.device_id(), now.mono)) {
    ++metrics_.enroll_failed;
    audit(now, "enroll.rate_limited", r.device_id(), s.source, "device ID locked out", out);
    send_error(s, pb::ERROR_CODE_RATE_LIMITED,
               "too many failed attempts for this device ID; try again later", out);
    return begin_close(now, s, out);
  }
  s.state = State::enrolling;
  s.device_id = r.device_id();  // claimed, not authenticated: only used to audit the result
  // The host reports within its own time; keep a deadline so a lost result cannot leak the session.
  set_deadline(s, now.mono + cfg_.first_message_timeout);
  out.push_back(action::Enroll{s.id, r.device_id(), r.token(),
                               std::vector<uint8_t>(r.csr_der().begin(), r.csr_der().end())});
}

void ServerCore::on_enroll_result(const Now& now, SessionId sid, const EnrollResult& r,
                                  Actions& out) {
  Session* s = find(sid);
  if (!s || s->state != State::enrolling) return;
  if (!r.ok) {
    ++metrics_.enroll_failed;
    auth_failure(now, *s, s->device_id, r.code, r.audit_kind, r.message, r.audit_detail, out);
    return;
  }
  ++metrics_.enroll_ok;
  per_device_.forget(s->device_id);
  audit(now, r.audit_kind, s->device_id, s->source, r.audit_detail, out);
  send(*s, make_frame([&](pb::Envelope& e) {
    auto* resp = e.mutable_enroll_response();
    resp->set_certificate_der(r.issued.cert_der.data(), r.issued.cert_der.size());
    resp->set_ca_der(r.issued.ca_der.data(), r.issued.ca_der.size());
    resp->set_group(r.group);
  }),
       out);
  s->device_id.clear();
  begin_close(now, *s, out);
}

void ServerCore::on_hello(const Now& now, Session& s, const pb::Hello& h, Actions& out) {
  // Phase 2 (A3): the device is who its certificate says, and the certificate is current.
  const std::string& claimed = h.device_id();
  if (!s.cert.present)
    return auth_failure(now, s, claimed, pb::ERROR_CODE_NOT_AUTHENTICATED, "auth.no_certificate",
                        "no client certificate: enroll first (torii-agent enroll)",
                        "Hello without client certificate", out);
  if (!s.cert.verify_error.empty())
    return auth_failure(
        now, s, s.cert.device_id, pb::ERROR_CODE_NOT_AUTHENTICATED, "auth.bad_certificate",
        "client certificate refused: " + s.cert.verify_error,
        "certificate claiming '" + s.cert.device_id + "' refused: " + s.cert.verify_error, out);
  if (per_device_.locked(s.cert.device_id, now.mono)) {
    ++metrics_.auth_failures;
    audit(now, "auth.rate_limited", s.cert.device_id, s.source, "device ID locked out", out);
    send_error(s, pb::ERROR_CODE_RATE_LIMITED,
               "too many failed attempts for this device; try again later", out);
    return begin_close(now, s, out);
  }
  if (claimed != s.cert.device_id)
    return auth_failure(
        now, s, s.cert.device_id, pb::ERROR_CODE_WRONG_DEVICE_ID, "auth.wrong_device_id",
        "device ID '" + claimed + "' does not match the certificate ('" + s.cert.device_id + "')",
        "Hello claimed '" + claimed + "'", out);
  const auto dev = store_.get_device(claimed);
  if (!dev)
    return auth_failure(now, s, claimed, pb::ERROR_CODE_UNKNOWN_DEVICE, "auth.unknown_device",
                        "device '" + claimed + "' is not registered", "unknown device", out);
  if (dev->state == store::DeviceState::revoked)
    return auth_failure(now, s, claimed, pb::ERROR_CODE_REVOKED, "auth.revoked",
                        "device '" + claimed + "' has been revoked", "revoked device", out);
  if (dev->state != store::DeviceState::active || dev->cert_serial != s.cert.serial_hex ||
      dev->group != s.cert.group)
    return auth_failure(now, s, claimed, pb::ERROR_CODE_NOT_AUTHENTICATED, "auth.stale_certificate",
                        "this certificate is no longer the device's current one",
                        "certificate serial " + s.cert.serial_hex + " is not current", out);

  // A newer session of the same device replaces the old one (e.g. the device rebooted and the
  // old TCP connection has not timed out yet).
  if (auto it = online_.find(claimed); it != online_.end()) {
    if (Session* old = find(it->second)) {
      send_close(*old, pb::CLOSE_REASON_REPLACED, "a newer session of this device connected", out);
      audit(now, "session.replaced", claimed, old->source, "replaced by a new session", out);
      begin_close(now, *old, out);
    }
  }
  per_device_.forget(claimed);
  Duration interval(h.keepalive_interval_ms());
  interval = std::clamp(interval == Duration{} ? limits::kDefaultKeepaliveInterval : interval,
                        limits::kMinKeepaliveInterval, limits::kMaxKeepaliveInterval);
  s.offline_after = interval * cfg_.missed_echoes + cfg_.offline_grace;
  s.state = State::established;
  s.device_id = claimed;
  online_[claimed] = s.id;
  ++metrics_.sessions_opened;
  touch(now, s);
  send(s, make_frame([&](pb::Envelope& e) {
         auto* w = e.mutable_welcome();
         w->set_group(dev->group);
         w->set_stun_port(cfg_.stun_port);
         w->set_offline_after_ms(uint32_t(s.offline_after.count()));
         w->set_server_time_ms(uint64_t(now.wall));
         if (auto a = cfg_.overlay.ipv4_of(dev->overlay_index)) {
           w->set_overlay_ipv4(a->address_string());
           w->set_overlay_ipv4_prefix(uint32_t(cfg_.overlay.ipv4_prefix));
         }
         if (auto a = cfg_.overlay.ipv6_of(dev->overlay_index)) {
           w->set_overlay_ipv6(a->address_string());
           w->set_overlay_ipv6_prefix(uint32_t(cfg_.overlay.ipv6_prefix));
         }
         w->set_relay_port(cfg_.relay_port);
       }),
       out);
  audit(now, "session.open", claimed, s.source,
        "agent " + h.versions().agent() + ", keepalive " + std::to_string(interval.count()) + " ms",
        out);
  // Versions and local addresses from Hello are attributes too (A3).
  store::DeviceAttributes attrs = dev->attributes;
  attrs.agent_version = h.versions().agent();
  attrs.firmware_version = h.versions().firmware();
  attrs.os_version = h.versions().os();
  if (h.local_addresses_size() > 0)
    attrs.local_addresses.assign(h.local_addresses().begin(), h.local_addresses().end());
  if (!(attrs == dev->attributes)) out.push_back(action::SaveAttributes{claimed, attrs});
}

void ServerCore::touch(const Now& now, Session& s) {
  s.last_seen = now.wall;
  set_deadline(s, now.mono + s.offline_after);
  dirty_presence_[s.device_id] = store::Presence{s.device_id, s.last_seen, s.rtt_ms};
}

void ServerCore::on_established_message(const Now& now, Session& s, const pb::Envelope& env,
                                        Actions& out) {
  touch(now, s);
  switch (env.body_case()) {
    case pb::Envelope::kEcho: {
      ++metrics_.echoes;
      if (env.echo().last_rtt_ms() > 0) s.rtt_ms = env.echo().last_rtt_ms();
      dirty_presence_[s.device_id].rtt_ms = s.rtt_ms;
      send(s,
           make_frame([&](pb::Envelope& e) { e.mutable_echo_reply()->set_seq(env.echo().seq()); }),
           out);
      return;
    }
    case pb::Envelope::kAttributes: {
      const auto& a = env.attributes();
      if (a.rtt_ms() > 0) s.rtt_ms = a.rtt_ms();
      dirty_presence_[s.device_id].rtt_ms = s.rtt_ms;
      auto dev = store_.get_device(s.device_id);
      store::DeviceAttributes attrs = dev ? dev->attributes : store::DeviceAttributes{};
      // One vocabulary for NAT behaviour: the STUN probe's (core/stun/nat_probe.hpp).
      stun::NatReport rep;
      rep.mapping = from_wire(a.mapping());
      rep.filtering = from_wire(a.filtering());
      attrs.nat_mapping = stun::to_string(rep.mapping);
      attrs.nat_filtering = stun::to_string(rep.filtering);
      attrs.nat_type = stun::nat_type_summary(rep);
      attrs.public_endpoint = a.public_endpoint();
      if (a.local_addresses_size() > 0)
        attrs.local_addresses.assign(a.local_addresses().begin(), a.local_addresses().end());
      if (a.has_versions()) {
        attrs.agent_version = a.versions().agent();
        attrs.firmware_version = a.versions().firmware();
        attrs.os_version = a.versions().os();
      }
      if (!dev || !(attrs == dev->attributes))
        out.push_back(action::SaveAttributes{s.device_id, attrs});
      send(s, make_frame([](pb::Envelope& e) { e.mutable_attributes_ack(); }), out);
      return;
    }
    case pb::Envelope::kPeerRequest:
      return on_peer_request(now, s, env.peer_request(), out);
    case pb::Envelope::kPeerConfirm:
      return on_peer_confirm(now, s, env.peer_confirm(), out);
    case pb::Envelope::kPeerClose:
      return on_peer_close(now, s, env.peer_close(), out);
    case pb::Envelope::kRelayData:
      return on_relay_data(now, s, env.relay_data(), out);
    case pb::Envelope::kClose:
      // The device announces its close; its close_notify follows and on_closed records it.
      audit(now, "session.close_requested", s.device_id, s.source,
            "device closing: " + std::string(pb::CloseReason_Name(env.close().reason())) +
                (env.close().detail().empty() ? "" : " (" + env.close().detail() + ")"),
            out);
      return;
    default:
      ++metrics_.malformed;
      send_error(s, pb::ERROR_CODE_BAD_MESSAGE, "unexpected message in an established session",
                 out);
      return begin_close(now, s, out);
  }
}

void ServerCore::on_closed(const Now& now, SessionId sid, CloseKind kind, Actions& out) {
  Session* s = find(sid);
  if (!s) return;
  if (s->state == State::established) {
    // The device closed (A5) or the connection broke.
    const char* how = kind == CloseKind::close_notify ? "closed by the device (TLS close_notify)"
                      : kind == CloseKind::eof        ? "connection closed without close_notify"
                                                      : "connection error";
    audit(now, "session.close", s->device_id, s->source, how, out);
    auto it = online_.find(s->device_id);
    if (it != online_.end() && it->second == sid) {
      online_.erase(it);
      request_buckets_.erase(s->device_id);
    }
    dirty_presence_[s->device_id] = store::Presence{s->device_id, s->last_seen, s->rtt_ms};
    ++metrics_.sessions_closed;
  } else if (s->state == State::closing && !s->device_id.empty()) {
    ++metrics_.sessions_closed;
  }
  clear_deadline(*s);
  sessions_.erase(sid);
}

void ServerCore::revoke(const Now& now, const std::string& device_id, Actions& out) {
  ++metrics_.revocations;
  // Every tunnel to the device goes too: its peers are told now (A11).
  drop_tunnels_of(now, device_id, "peer revoked", out);
  auto it = online_.find(device_id);
  if (it == online_.end()) return;
  if (Session* s = find(it->second)) {
    send_close(*s, pb::CLOSE_REASON_REVOKED, "this device has been revoked", out);
    audit(now, "session.close", device_id, s->source, "closed by the server: device revoked", out);
    begin_close(now, *s, out);
  }
}

bool ServerCore::disconnect(const Now& now, const std::string& device_id, Actions& out) {
  auto it = online_.find(device_id);
  if (it == online_.end()) return false;
  if (Session* s = find(it->second)) {
    send_close(*s, pb::CLOSE_REASON_ADMIN, "closed by an administrator", out);
    audit(now, "session.close", device_id, s->source, "closed by the server (administrator)", out);
    begin_close(now, *s, out);
  }
  return true;
}

void ServerCore::shutdown(const Now& now, Actions& out) {
  std::vector<SessionId> ids;
  for (auto& [id, s] : sessions_) ids.push_back(id);
  for (SessionId id : ids) {
    Session* s = find(id);
    if (!s || s->state == State::closing) continue;
    if (s->state == State::established) {
      send_close(*s, pb::CLOSE_REASON_SHUTDOWN, "server shutting down", out);
      audit(now, "session.close", s->device_id, s->source, "closed by the server: shutdown", out);
    }
    begin_close(now, *s, out);
  }
}

std::optional<Instant> ServerCore::tick(const Now& now, Actions& out) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now.mono) {
    const SessionId sid = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    Session* s = find(sid);
    if (!s) continue;
    s->deadline = Instant{};
    switch (s->state) {
      case State::awaiting_first:
      case State::enrolling:
        ++metrics_.malformed;
        begin_close(now, *s, out);
        break;
      case State::established:
        // A4: nothing (no ECHO) for offline_after: the device is offline.
        ++metrics_.offline_timeouts;
        audit(now, "session.offline", s->device_id, s->source,
              "no message for " + std::to_string(s->offline_after.count()) +
                  " ms (missed ECHOs); marked offline",
              out);
        send_close(*s, pb::CLOSE_REASON_TIMEOUT, "keepalive timeout", out);
        begin_close(now, *s, out);
        break;
      case State::closing:
        // The host never confirmed the close; forget the session anyway.
        sessions_.erase(sid);
        break;
    }
  }
  auto next_tunnel = tick_tunnels(now, out);
  std::optional<Instant> next;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (next_tunnel && (!next || *next_tunnel < *next)) next = next_tunnel;
  return next;
}

std::optional<SessionInfo> ServerCore::session_of(const std::string& device_id) const {
  auto it = online_.find(device_id);
  if (it == online_.end()) return std::nullopt;
  auto s = sessions_.find(it->second);
  if (s == sessions_.end()) return std::nullopt;
  return SessionInfo{s->second.id, s->second.source, s->second.opened_wall, s->second.last_seen,
                     s->second.rtt_ms};
}

std::vector<store::Presence> ServerCore::drain_presence() {
  std::vector<store::Presence> v;
  v.reserve(dirty_presence_.size());
  for (auto& [id, p] : dirty_presence_) v.push_back(p);
  dirty_presence_.clear();
  return v;
}

}  // namespace torii::server

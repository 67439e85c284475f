// Peer-to-peer signaling in the server core (A6, A11): the seed's four messages — peer connection
// request (source -> server), connection instruction (server -> destination), peer connection
// confirmation (destination -> server), peer connection response (server -> source) — the group
// check, the connection method, relay authorisation, and teardown on revocation.
#include <openssl/rand.h>

#include <algorithm>

#include "core/control/frame.hpp"
#include "core/server/server_core.hpp"

namespace torii::server {

namespace pb = ::torii::control::v1;
using control::make_frame;

namespace {

pb::ConnectMethod to_wire(p2p::Method m) {
  switch (m) {
    case p2p::Method::direct:
      return pb::CONNECT_METHOD_DIRECT;
    case p2p::Method::hole_punch:
      return pb::CONNECT_METHOD_HOLE_PUNCH;
    case p2p::Method::port_prediction:
      return pb::CONNECT_METHOD_PORT_PREDICTION;
    case p2p::Method::relay:
      return pb::CONNECT_METHOD_RELAY;
  }
  return pb::CONNECT_METHOD_UNSPECIFIED;
}

stun::NatBehaviour behaviour_from_string(const std::string& s) {
  for (auto b : {stun::NatBehaviour::no_nat, stun::NatBehaviour::endpoint_independent,
                 stun::NatBehaviour::address_dependent,
                 stun::NatBehaviour::address_and_port_dependent, stun::NatBehaviour::udp_blocked})
    if (s == stun::to_string(b)) return b;
  return stun::NatBehaviour::unknown;
}

p2p::NatView nat_view(const store::Device& d) {
  p2p::NatView v;
  v.mapping = behaviour_from_string(d.attributes.nat_mapping);
  v.filtering = behaviour_from_string(d.attributes.nat_filtering);
  v.public_endpoint = Endpoint::parse(d.attributes.public_endpoint);
  return v;
}

bool dependent_mapping(const p2p::NatView& v) {
  return v.mapping == stun::NatBehaviour::address_dependent ||
         v.mapping == stun::NatBehaviour::address_and_port_dependent;
}

template <typename List>
std::vector<std::string> valid_candidates(const List& in) {
  std::vector<std::string> out;
  for (const auto& c : in)
    if (auto e = Endpoint::parse(c); e && e->port != 0) out.push_back(e->to_string());
  return out;
}

std::array<uint8_t, 32> random_key() {
  std::array<uint8_t, 32> k{};
  if (RAND_bytes(k.data(), int(k.size())) != 1) throw std::runtime_error("RAND_bytes failed");
  return k;
}

}  // namespace

ServerCore::Session* ServerCore::online_session(const std::string& device_id) {
  auto it = online_.find(device_id);
  if (it == online_.end()) return nullptr;
  Session* s = find(it->second);
  return s && s->state == State::established ? s : nullptr;
}

void ServerCore::refuse_peer(const Now& now, Session& s, uint64_t request_id, pb::ErrorCode code,
                             const std::string& message, const std::string& peer, Actions& out) {
  ++metrics_.peer_refused;
  audit(now, "peer.refused", s.device_id, s.source, "request to '" + peer + "' refused: " + message,
        out);
  send(s, make_frame([&](pb::Envelope& e) {
         auto* r = e.mutable_peer_response();
         r->set_request_id(request_id);
         r->set_ok(false);
         r->set_code(code);
         r->set_message(message);
       }),
       out);
}

void ServerCore::fill_offer(const Tunnel& t, bool for_src, const store::Device& peer,
                            pb::TunnelOffer& o) const {
  o.set_tunnel_id(t.id);
  o.set_method(to_wire(t.method));
  auto* p = o.mutable_peer();
  p->set_device_id(peer.id);
  if (auto a = cfg_.overlay.ipv4_of(peer.overlay_index)) p->set_overlay_ipv4(a->address_string());
  if (auto a = cfg_.overlay.ipv6_of(peer.overlay_index)) p->set_overlay_ipv6(a->address_string());
  p->set_cert_serial(peer.cert_serial);
  o.set_punch_key(t.punch_key.data(), t.punch_key.size());
  if (cfg_.relay_port) o.set_relay_port(cfg_.relay_port);
  o.set_relay_key(t.relay_key.data(), t.relay_key.size());
  if (for_src ? t.predict_for_src : t.predict_for_dst)
    o.set_predict_ports(limits::kDefaultPredictPorts);
}

bool ServerCore::take_request_token(const Now& now, const std::string& device_id,
                                    bool& first_refusal) {
  auto [it, fresh] = request_buckets_.try_emplace(device_id);
  RequestBucket& b = it->second;
  if (fresh) b.refilled = now.mono;
  const auto refill = uint64_t((now.mono - b.refilled) / limits::kPeerRequestInterval);
  if (refill > 0) {
    b.tokens = uint32_t(std::min<uint64_t>(limits::kPeerRequestBurst, b.tokens + refill));
    b.refilled += refill * limits::kPeerRequestInterval;
  }
  if (b.tokens > 0) {
    --b.tokens;
    b.audited = false;
    return true;
  }
  first_refusal = !b.audited;
  b.audited = true;
  return false;
}

void ServerCore::on_peer_request(const Now& now, Session& s, const pb::PeerRequest& r,
                                 Actions& out) {
  ++metrics_.peer_requests;
  // D1: requests beyond the device's rate are refused; only the first of a burst is audited.
  if (bool first = false; !take_request_token(now, s.device_id, first)) {
    ++metrics_.peer_rate_limited;
    if (first)
      audit(now, "peer.rate_limited", s.device_id, s.source,
            "tunnel requests above " + std::to_string(limits::kPeerRequestBurst) + " per burst",
            out);
    send(s, make_frame([&](pb::Envelope& e) {
           auto* resp = e.mutable_peer_response();
           resp->set_request_id(r.request_id());
           resp->set_ok(false);
           resp->set_code(pb::ERROR_CODE_RATE_LIMITED);
           resp->set_message("too many tunnel requests; retry later");
         }),
         out);
    return;
  }
  // Resolve the destination: by ID, or by overlay address (a packet to it opened the tunnel).
  std::optional<store::Device> dst;
  std::string named = r.peer_id();
  if (!r.peer_id().empty()) {
    dst = store_.get_device(r.peer_id());
  } else if (auto a = Endpoint::parse_address(r.peer_address())) {
    named = r.peer_address();
    if (auto idx = cfg_.overlay.index_of(*a)) dst = store_.get_device_by_overlay(*idx);
  } else {
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_BAD_MESSAGE,
                       "name the peer by device ID or overlay address", named, out);
  }
  if (!dst)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_PEER_REFUSED,
                       "no device '" + named + "'", named, out);
  if (dst->id == s.device_id)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_PEER_REFUSED,
                       "a device cannot open a tunnel to itself", named, out);
  auto src = store_.get_device(s.device_id);
  if (!src || src->state != store::DeviceState::active)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_REVOKED,
                       "this device is no longer active", named, out);
  // A11: only members of the same group reach each other.
  if (dst->group != src->group)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_PEER_REFUSED,
                       "device '" + dst->id + "' is not in group " + src->group, dst->id, out);
  if (dst->state != store::DeviceState::active)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_PEER_REFUSED,
                       "device '" + dst->id + "' is " + store::to_string(dst->state), dst->id, out);
  Session* ds = online_session(dst->id);
  if (!ds)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_PEER_REFUSED,
                       "device '" + dst->id + "' is offline", dst->id, out);
  size_t pending = 0;
  for (uint64_t id : tunnels_by_device_[s.device_id])
    if (auto t = tunnels_.find(id); t != tunnels_.end() && !t->second.open) ++pending;
  if (pending >= limits::kMaxPendingPeerRequests)
    return refuse_peer(now, s, r.request_id(), pb::ERROR_CODE_RATE_LIMITED,
                       "too many tunnel requests awaiting an answer", dst->id, out);

  // One tunnel per pair: a new request replaces the old one (e.g. after a restart).
  std::vector<uint64_t> old;
  for (uint64_t id : tunnels_by_device_[s.device_id]) {
    auto t = tunnels_.find(id);
    if (t != tunnels_.end() && (t->second.src == dst->id || t->second.dst == dst->id))
      old.push_back(id);
  }
  for (uint64_t id : old) drop_tunnel(id, out);
  // Bounded memory: a device keeps at most kMaxTunnelsPerDevice brokered tunnels.
  for (const auto* dev : {&s.device_id, &dst->id}) {
    auto& set = tunnels_by_device_[*dev];
    while (set.size() >= limits::kMaxTunnelsPerDevice) drop_tunnel(*set.begin(), out);
  }

  Tunnel t;
  t.id = next_tunnel_++;
  t.src = s.device_id;
  t.dst = dst->id;
  t.request_id = r.request_id();
  t.deadline = now.mono + limits::kPeerConfirmTimeout;
  const auto a = nat_view(*src), b = nat_view(*dst);
  t.method = p2p::choose_method(a, b);
  if (t.method == p2p::Method::port_prediction) {
    t.predict_for_src = dependent_mapping(b);
    t.predict_for_dst = dependent_mapping(a);
  }
  t.punch_key = random_key();
  t.relay_key = random_key();
  t.src_candidates = valid_candidates(r.candidates());
  t.src_index = r.receiver_index();
  tunnel_deadlines_.emplace(t.deadline, t.id);
  tunnels_by_device_[t.src].insert(t.id);
  tunnels_by_device_[t.dst].insert(t.id);
  auto& stored = tunnels_.emplace(t.id, std::move(t)).first->second;
  audit(now, "peer.request", s.device_id, s.source,
        "tunnel " + std::to_string(stored.id) + " to " + stored.dst + ", method " +
            p2p::to_string(stored.method),
        out);
  send(*ds, make_frame([&](pb::Envelope& e) {
    auto* o = e.mutable_connect_instruction()->mutable_offer();
    fill_offer(stored, false, *src, *o);
    for (const auto& c : stored.src_candidates) o->add_candidates(c);
    o->set_peer_receiver_index(stored.src_index);
  }),
       out);
}

void ServerCore::on_peer_confirm(const Now& now, Session& s, const pb::PeerConfirm& c,
                                 Actions& out) {
  auto it = tunnels_.find(c.tunnel_id());
  if (it == tunnels_.end() || it->second.dst != s.device_id || it->second.open) return;
  Tunnel& t = it->second;
  tunnel_deadlines_.erase({t.deadline, t.id});
  Session* ss = online_session(t.src);
  if (!c.accept()) {
    const std::string why = c.reason().empty() ? "declined" : c.reason();
    ++metrics_.peer_refused;
    audit(now, "peer.declined", s.device_id, s.source,
          "tunnel " + std::to_string(t.id) + " from " + t.src + " declined: " + why, out);
    if (ss) {
      const uint64_t rid = t.request_id;
      send(*ss, make_frame([&](pb::Envelope& e) {
        auto* r = e.mutable_peer_response();
        r->set_request_id(rid);
        r->set_ok(false);
        r->set_code(pb::ERROR_CODE_PEER_REFUSED);
        r->set_message("device '" + s.device_id + "' declined: " + why);
      }),
           out);
    }
    return drop_tunnel(c.tunnel_id(), out);
  }
  auto dst = store_.get_device(s.device_id);
  if (!ss || !dst) return drop_tunnel(c.tunnel_id(), out);
  t.open = true;
  ++metrics_.tunnels_open;
  out.push_back(action::RelayOpen{t.id, t.relay_key});
  audit(now, "peer.open", t.src, ss->source,
        "tunnel " + std::to_string(t.id) + " " + t.src + " <-> " + t.dst + " (" +
            p2p::to_string(t.method) + ")",
        out);
  const auto candidates = valid_candidates(c.candidates());
  send(*ss, make_frame([&](pb::Envelope& e) {
    auto* r = e.mutable_peer_response();
    r->set_request_id(t.request_id);
    r->set_ok(true);
    auto* o = r->mutable_offer();
    fill_offer(t, true, *dst, *o);
    for (const auto& cand : candidates) o->add_candidates(cand);
    o->set_peer_receiver_index(c.receiver_index());
  }),
       out);
}

void ServerCore::on_peer_close(const Now& now, Session& s, const pb::PeerClose& c, Actions& out) {
  auto it = tunnels_.find(c.tunnel_id());
  if (it == tunnels_.end() || (it->second.src != s.device_id && it->second.dst != s.device_id))
    return;
  const std::string other = it->second.src == s.device_id ? it->second.dst : it->second.src;
  audit(now, "peer.close", s.device_id, s.source,
        "tunnel " + std::to_string(c.tunnel_id()) + " to " + other + " closed by the device" +
            (c.reason().empty() ? "" : ": " + c.reason()),
        out);
  drop_tunnel(c.tunnel_id(), out);
}

void ServerCore::on_relay_data(const Now& now, Session& s, const pb::RelayData& d, Actions& out) {
  auto it = tunnels_.find(d.tunnel_id());
  if (it == tunnels_.end() || !it->second.open ||
      (it->second.src != s.device_id && it->second.dst != s.device_id)) {
    ++metrics_.relay_tls_dropped;
    return;
  }
  const std::string& other = it->second.src == s.device_id ? it->second.dst : it->second.src;
  Session* os = online_session(other);
  if (!os) {
    ++metrics_.relay_tls_dropped;
    return;
  }
  ++metrics_.relay_tls_packets;
  // Forwarded unread: the packet is end-to-end encrypted between the devices (A9).
  send(*os, make_frame([&](pb::Envelope& e) { *e.mutable_relay_data() = d; }), out);
}

void ServerCore::drop_tunnel(uint64_t tunnel_id, Actions& out) {
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return;
  Tunnel& t = it->second;
  if (!t.open) tunnel_deadlines_.erase({t.deadline, t.id});
  if (t.open) {
    --metrics_.tunnels_open;
    out.push_back(action::RelayClose{t.id});
  }
  for (const auto* dev : {&t.src, &t.dst}) {
    auto d = tunnels_by_device_.find(*dev);
    if (d == tunnels_by_device_.end()) continue;
    d->second.erase(tunnel_id);
    if (d->second.empty()) tunnels_by_device_.erase(d);
  }
  tunnels_.erase(it);
}

void ServerCore::drop_tunnels_of(const Now& now, const std::string& device_id,
                                 const std::string& reason, Actions& out) {
  auto d = tunnels_by_device_.find(device_id);
  if (d == tunnels_by_device_.end()) return;
  const std::vector<uint64_t> ids(d->second.begin(), d->second.end());
  for (uint64_t id : ids) {
    auto it = tunnels_.find(id);
    if (it == tunnels_.end()) continue;
    const std::string other = it->second.src == device_id ? it->second.dst : it->second.src;
    if (Session* os = online_session(other)) {
      send(*os, make_frame([&](pb::Envelope& e) {
        auto* c = e.mutable_peer_close();
        c->set_tunnel_id(id);
        c->set_peer_id(device_id);
        c->set_reason(reason);
      }),
           out);
      audit(now, "peer.close", other, os->source,
            "tunnel " + std::to_string(id) + " to " + device_id + " torn down: " + reason, out);
    }
    drop_tunnel(id, out);
  }
}

std::optional<Instant> ServerCore::tick_tunnels(const Now& now, Actions& out) {
  while (!tunnel_deadlines_.empty() && tunnel_deadlines_.begin()->first <= now.mono) {
    const uint64_t id = tunnel_deadlines_.begin()->second;
    tunnel_deadlines_.erase(tunnel_deadlines_.begin());
    auto it = tunnels_.find(id);
    if (it == tunnels_.end() || it->second.open) continue;
    ++metrics_.peer_timeouts;
    const Tunnel& t = it->second;
    if (Session* ss = online_session(t.src)) {
      audit(now, "peer.timeout", t.src, ss->source,
            "tunnel " + std::to_string(id) + ": " + t.dst + " did not answer", out);
      const uint64_t rid = t.request_id;
      const std::string dst = t.dst;
      send(*ss, make_frame([&](pb::Envelope& e) {
        auto* r = e.mutable_peer_response();
        r->set_request_id(rid);
        r->set_ok(false);
        r->set_code(pb::ERROR_CODE_PEER_TIMEOUT);
        r->set_message("device '" + dst + "' did not answer");
      }),
           out);
    }
    it->second.deadline = Instant{};
    drop_tunnel(id, out);
  }
  if (tunnel_deadlines_.empty()) return std::nullopt;
  return tunnel_deadlines_.begin()->first;
}

std::vector<std::tuple<uint64_t, std::string, p2p::Method>> ServerCore::tunnels_of(
    const std::string& device_id) const {
  std::vector<std::tuple<uint64_t, std::string, p2p::Method>> v;
  auto d = tunnels_by_device_.find(device_id);
  if (d == tunnels_by_device_.end()) return v;
  for (uint64_t id : d->second) {
    auto it = tunnels_.find(id);
    if (it == tunnels_.end() || !it->second.open) continue;
    v.emplace_back(id, it->second.src == device_id ? it->second.dst : it->second.src,
                   it->second.method);
  }
  return v;
}

}  // namespace torii::server

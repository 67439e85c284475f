// Peer-to-peer tunnels on the device (see peer_manager.hpp). A6-A11.
#include "core/p2p/peer_manager.hpp"

#include <algorithm>
#include <cstring>

#include "core/control/frame.hpp"
#include "core/session/limits.hpp"
#include "core/tunnel/packet.hpp"

namespace torii::p2p {

namespace pb = ::torii::control::v1;
using control::make_frame;
using Datagrams = std::vector<std::vector<uint8_t>>;

const char* to_string(Path p) {
  switch (p) {
    case Path::none:
      return "none";
    case Path::direct:
      return "direct";
    case Path::relay_udp:
      return "relay";
    case Path::relay_tls:
      return "relay-tls";
  }
  return "?";
}

namespace {

Method from_wire(pb::ConnectMethod m) {
  switch (m) {
    case pb::CONNECT_METHOD_DIRECT:
      return Method::direct;
    case pb::CONNECT_METHOD_HOLE_PUNCH:
      return Method::hole_punch;
    case pb::CONNECT_METHOD_PORT_PREDICTION:
      return Method::port_prediction;
    default:
      return Method::relay;
  }
}

std::array<uint8_t, 17> overlay_key(const Endpoint& a) {
  std::array<uint8_t, 17> k{};
  k[0] = a.is_v4() ? 4 : 6;
  std::memcpy(k.data() + 1, a.addr.data(), 16);
  return k;
}

// Source and destination addresses of an IPv4 or IPv6 packet.
bool ip_addresses(std::span<const uint8_t> p, Endpoint& src, Endpoint& dst) {
  if (p.size() >= 20 && (p[0] >> 4) == 4) {
    src = Endpoint::v4({p[12], p[13], p[14], p[15]}, 0);
    dst = Endpoint::v4({p[16], p[17], p[18], p[19]}, 0);
    return true;
  }
  if (p.size() >= 40 && (p[0] >> 4) == 6) {
    std::array<uint8_t, 16> s, d;
    std::memcpy(s.data(), p.data() + 8, 16);
    std::memcpy(d.data(), p.data() + 24, 16);
    src = Endpoint::v6(s, 0);
    dst = Endpoint::v6(d, 0);
    return true;
  }
  return false;
}

bool in_prefix(const Endpoint& a, const Endpoint& net, int len) {
  if (a.family != net.family || len <= 0) return false;
  for (int bit = 0; bit < len; ++bit) {
    const uint8_t m = uint8_t(0x80 >> (bit % 8));
    if ((a.addr[bit / 8] & m) != (net.addr[bit / 8] & m)) return false;
  }
  return true;
}

std::array<uint8_t, 32> key32(const std::string& s) {
  std::array<uint8_t, 32> k{};
  if (s.size() == k.size()) std::memcpy(k.data(), s.data(), k.size());
  return k;
}

// Relay frame: header(type relay_data, flags = sender side, counter = tunnel ID) || packet.
void write_relay_header(uint64_t tunnel_id, uint8_t side, uint8_t* out) {
  tunnel::write_header({tunnel::PacketType::relay_data, 0, side, 0, tunnel_id}, out);
}

std::vector<uint8_t> relay_wrap(uint64_t tunnel_id, uint8_t side, std::span<const uint8_t> pkt) {
  std::vector<uint8_t> out(tunnel::kHeaderSize + pkt.size());
  write_relay_header(tunnel_id, side, out.data());
  std::memcpy(out.data() + tunnel::kHeaderSize, pkt.data(), pkt.size());
  return out;
}

// A decrypted packet must come from the peer's own overlay address (anti-spoofing).
bool sent_by(std::span<const uint8_t> plain, const std::optional<Endpoint>& v4,
             const std::optional<Endpoint>& v6) {
  Endpoint src, dst;
  return ip_addresses(plain, src, dst) && ((v4 && src == *v4) || (v6 && src == *v6));
}

}  // namespace

struct PeerManager::Tunnel {
  uint64_t id = 0;
  std::string peer_id;
  std::optional<Endpoint> overlay_v4, overlay_v6;
  std::string peer_serial;
  bool initiator = false;
  Method method = Method::relay;
  uint32_t local_index = 0, peer_index = 0;
  std::array<uint8_t, 32> punch_key{}, relay_key{};
  bool has_relay_key = false;
  uint32_t predict_ports = 0;
  std::vector<Endpoint> candidates;  // the peer's, plus peer-reflexive ones learned from probes
  Instant created{};
  // Paths.
  std::optional<Endpoint> direct;
  Instant direct_rx{};
  bool relay_acked = false;
  Instant relay_rx{};
  Instant relay_bind_sent{};
  bool tls_relay = false;        // the UDP relay did not answer: use the control session
  Path dtls_reply = Path::none;  // responder: where the last handshake datagram came from
  Endpoint dtls_reply_ep;
  Instant last_probe{};
  Instant last_ping{};
  std::map<uint64_t, Instant> pings;  // nonce -> sent
  std::optional<uint32_t> rtt_ms;
  // Security association.
  std::unique_ptr<dtls::Link> link;
  Instant handshake_started{};
  std::optional<tunnel::DataChannel> dc;
  std::string cipher;
  std::optional<Instant> up_since;
  Instant last_rx{}, last_tx{};
  uint64_t rx_bytes = 0, tx_bytes = 0;
  std::vector<std::vector<uint8_t>> queued;
};

PeerManager::PeerManager(PeerConfig cfg)
    : cfg_(std::move(cfg)), rng_(cfg_.seed ? cfg_.seed : std::random_device{}()) {}

PeerManager::~PeerManager() = default;

void PeerManager::set_overlay(const Endpoint& v4, int v4_prefix, const Endpoint& v6,
                              int v6_prefix) {
  overlay_v4_ = v4;
  overlay_v6_ = v6;
  v4_prefix_ = v4_prefix;
  v6_prefix_ = v6_prefix;
}

void PeerManager::set_server(const Endpoint& server_address, uint16_t relay_port) {
  server_ = server_address;
  relay_port_ = relay_port;
}

Endpoint PeerManager::relay_endpoint() const {
  Endpoint e = server_;
  e.port = relay_port_;
  return e;
}

void PeerManager::note_failure(Instant now, const std::string& peer, const std::string& why) {
  if (failures_.size() >= 256 && !failures_.count(peer)) {
    auto oldest = failures_.begin();
    for (auto it = failures_.begin(); it != failures_.end(); ++it)
      if (it->second.first < oldest->second.first) oldest = it;
    failures_.erase(oldest);
  }
  failures_[peer] = {now, why};
}

void PeerManager::log(PeerActions& out, const std::string& peer, std::string text, bool warn) {
  out.push_back(peer_action::Log{peer, std::move(text), warn});
}

uint32_t PeerManager::new_index() {
  for (;;) {
    const uint32_t i = uint32_t(rng_());
    bool used = i == 0 || by_index_.count(i);
    for (const auto& [id, p] : pending_) used = used || p.local_index == i;
    if (!used) return i;
  }
}

// ---------------------------------------------------------------------------------------------
// Signaling (A6)

void PeerManager::send_request(Instant now, Pending& p, PeerActions& out) {
  out.push_back(peer_action::SendControl{make_frame([&](pb::Envelope& e) {
    auto* r = e.mutable_peer_request();
    r->set_request_id(p.request_id);
    if (!p.peer_id.empty()) r->set_peer_id(p.peer_id);
    if (!p.peer_address.empty()) r->set_peer_address(p.peer_address);
    for (const auto& c : candidates_) {
      if (size_t(r->candidates_size()) >= limits::kMaxCandidates) break;
      r->add_candidates(c.to_string());
    }
    r->set_receiver_index(p.local_index);
  })});
}

bool PeerManager::connect(Instant now, const std::string& peer_id, PeerActions& out) {
  if (peer_id == cfg_.device_id) {
    log(out, peer_id, "cannot open a tunnel to this device itself", true);
    return false;
  }
  failures_.erase(peer_id);
  if (tunnels_.count(peer_id)) return true;
  for (const auto& [id, p] : pending_)
    if (p.peer_id == peer_id) return true;
  Pending p;
  p.request_id = next_request_++;
  p.peer_id = peer_id;
  p.local_index = new_index();
  p.started = now;
  auto& stored = pending_.emplace(p.request_id, std::move(p)).first->second;
  send_request(now, stored, out);
  log(out, peer_id, "requesting a tunnel");
  return true;
}

bool PeerManager::disconnect(Instant now, const std::string& peer_id, PeerActions& out) {
  bool found = false;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.peer_id == peer_id) {
      it = pending_.erase(it);
      found = true;
    } else {
      ++it;
    }
  }
  if (tunnels_.count(peer_id)) {
    remove_tunnel(now, peer_id, "closed locally", true, out);
    found = true;
  }
  return found;
}

void PeerManager::close_all(Instant now, PeerActions& out) {
  pending_.clear();
  std::vector<std::string> ids;
  for (const auto& [id, t] : tunnels_) ids.push_back(id);
  for (const auto& id : ids) remove_tunnel(now, id, "agent stopping", true, out);
}

void PeerManager::on_session_down(Instant now, PeerActions& out) {
  for (auto& [rid, p] : pending_) {
    stats_.dropped_queue += p.queued.size();
    log(out, p.peer_id.empty() ? p.peer_address : p.peer_id,
        "tunnel request abandoned: control session lost", true);
  }
  pending_.clear();
}

bool PeerManager::on_control(Instant now, const pb::Envelope& env, PeerActions& out) {
  switch (env.body_case()) {
    case pb::Envelope::kConnectInstruction:
      on_instruction(now, env.connect_instruction(), out);
      return true;
    case pb::Envelope::kPeerResponse:
      on_response(now, env.peer_response(), out);
      return true;
    case pb::Envelope::kPeerClose: {
      const auto& c = env.peer_close();
      auto it = by_tunnel_id_.find(c.tunnel_id());
      if (it != by_tunnel_id_.end())
        remove_tunnel(now, it->second->peer_id, "server: " + c.reason(), false, out);
      return true;
    }
    case pb::Envelope::kRelayData: {
      const auto& d = env.relay_data();
      const auto* p = reinterpret_cast<const uint8_t*>(d.packet().data());
      on_packet(now, Path::relay_tls, server_, {p, d.packet().size()}, out);
      return true;
    }
    default:
      return false;
  }
}

void PeerManager::on_instruction(Instant now, const pb::ConnectInstruction& ci, PeerActions& out) {
  const auto& o = ci.offer();
  const std::string& peer = o.peer().device_id();
  if (peer.empty() || peer == cfg_.device_id || o.punch_key().size() != 32) {
    out.push_back(peer_action::SendControl{make_frame([&](pb::Envelope& e) {
      auto* c = e.mutable_peer_confirm();
      c->set_tunnel_id(o.tunnel_id());
      c->set_accept(false);
      c->set_reason("malformed instruction");
    })});
    return;
  }
  if (tunnels_.count(peer)) remove_tunnel(now, peer, "replaced by a new tunnel", false, out);
  const uint32_t index = new_index();
  Tunnel& t = create_tunnel(now, o, false, index, out);
  // 3. peer connection confirmation, with our candidates.
  out.push_back(peer_action::SendControl{make_frame([&](pb::Envelope& e) {
    auto* c = e.mutable_peer_confirm();
    c->set_tunnel_id(o.tunnel_id());
    c->set_accept(true);
    for (const auto& cand : candidates_) {
      if (size_t(c->candidates_size()) >= limits::kMaxCandidates) break;
      c->add_candidates(cand.to_string());
    }
    c->set_receiver_index(index);
  })});
  log(out, peer,
      "tunnel " + std::to_string(t.id) + " requested by the peer, method " + to_string(t.method));
  send_probes(now, t, out);
}

void PeerManager::on_response(Instant now, const pb::PeerResponse& r, PeerActions& out) {
  auto it = pending_.find(r.request_id());
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  const std::string name = p.peer_id.empty() ? p.peer_address : p.peer_id;
  if (!r.ok()) {
    ++stats_.tunnels_failed;
    stats_.dropped_queue += p.queued.size();
    log(out, name, "tunnel refused: " + r.message(), true);
    note_failure(now, name, "refused by the server: " + r.message());
    return;
  }
  const auto& o = r.offer();
  const std::string& peer = o.peer().device_id();
  if (peer.empty() || peer == cfg_.device_id || o.punch_key().size() != 32) return;
  if (!p.peer_id.empty() && p.peer_id != peer) return;
  if (tunnels_.count(peer)) remove_tunnel(now, peer, "replaced by a new tunnel", false, out);
  Tunnel& t = create_tunnel(now, o, true, p.local_index, out);
  t.queued = std::move(p.queued);
  log(out, peer, "tunnel " + std::to_string(t.id) + " accepted, method " + to_string(t.method));
  send_probes(now, t, out);
  if (t.method == Method::relay && best_path(t) != Path::none) start_handshake(now, t, out);
}

PeerManager::Tunnel& PeerManager::create_tunnel(Instant now, const pb::TunnelOffer& o,
                                                bool initiator, uint32_t local_index,
                                                PeerActions& out) {
  auto t = std::make_unique<Tunnel>();
  t->id = o.tunnel_id();
  t->peer_id = o.peer().device_id();
  t->overlay_v4 = Endpoint::parse_address(o.peer().overlay_ipv4());
  t->overlay_v6 = Endpoint::parse_address(o.peer().overlay_ipv6());
  t->peer_serial = o.peer().cert_serial();
  t->initiator = initiator;
  t->method = from_wire(o.method());
  t->local_index = local_index;
  t->peer_index = o.peer_receiver_index();
  t->punch_key = key32(o.punch_key());
  t->has_relay_key = o.relay_key().size() == 32;
  t->relay_key = key32(o.relay_key());
  t->predict_ports = std::min<uint32_t>(o.predict_ports(), 64);
  for (const auto& c : o.candidates())
    if (auto e = Endpoint::parse(c); e && e->port) t->candidates.push_back(*e);
  t->created = now;
  t->last_rx = now;
  Tunnel& ref = *t;
  by_index_[local_index] = &ref;
  by_tunnel_id_[ref.id] = &ref;
  if (ref.overlay_v4) by_overlay_[overlay_key(*ref.overlay_v4)] = &ref;
  if (ref.overlay_v6) by_overlay_[overlay_key(*ref.overlay_v6)] = &ref;
  tunnels_[ref.peer_id] = std::move(t);
  if (relay_port_ && ref.has_relay_key) send_relay_bind(now, ref, out);
  if (!relay_port_ && ref.method == Method::relay) ref.tls_relay = true;
  return ref;
}

void PeerManager::remove_tunnel(Instant now, const std::string& peer_id, const std::string& why,
                                bool tell_server, PeerActions& out) {
  auto it = tunnels_.find(peer_id);
  if (it == tunnels_.end()) return;
  Tunnel& t = *it->second;
  // A10: close the SA with a DTLS alert so the peer tears down at once.
  if (t.link && t.link->state() == dtls::LinkState::established) {
    Datagrams d;
    t.link->close(d);
    for (auto& dg : d) {
      std::vector<uint8_t> pkt(tunnel::kHeaderSize + dg.size());
      tunnel::write_header({tunnel::PacketType::handshake, 0, 0, t.peer_index, 0}, pkt.data());
      std::memcpy(pkt.data() + tunnel::kHeaderSize, dg.data(), dg.size());
      send_packet(now, t, std::move(pkt), out);
    }
  }
  if (tell_server)
    out.push_back(peer_action::SendControl{make_frame([&](pb::Envelope& e) {
      auto* c = e.mutable_peer_close();
      c->set_tunnel_id(t.id);
      c->set_peer_id(peer_id);
      c->set_reason(why);
    })});
  log(out, peer_id, "tunnel " + std::to_string(t.id) + " closed: " + why);
  if (!t.dc) note_failure(now, peer_id, why);
  ++stats_.tunnels_closed;
  stats_.dropped_queue += t.queued.size();
  by_index_.erase(t.local_index);
  by_tunnel_id_.erase(t.id);
  if (t.overlay_v4) by_overlay_.erase(overlay_key(*t.overlay_v4));
  if (t.overlay_v6) by_overlay_.erase(overlay_key(*t.overlay_v6));
  tunnels_.erase(it);
}

// ---------------------------------------------------------------------------------------------
// Datagrams

void PeerManager::on_udp(Instant now, const Endpoint& from, std::span<const uint8_t> data,
                         PeerActions& out) {
  const bool from_relay = relay_port_ && from == relay_endpoint();
  on_packet(now, from_relay ? Path::relay_udp : Path::direct, from, data, out);
}

void PeerManager::on_packet(Instant now, Path via, const Endpoint& from,
                            std::span<const uint8_t> data, PeerActions& out) {
  auto h = tunnel::parse_header(data);
  if (!h) {
    ++stats_.dropped_malformed;
    return;
  }
  if (via != Path::direct) {
    if (h->type == tunnel::PacketType::relay_bind_ack && via == Path::relay_udp) {
      auto ack = tunnel::parse_relay_bind_ack(data);
      auto it = ack ? by_tunnel_id_.find(ack->tunnel_id) : by_tunnel_id_.end();
      if (it == by_tunnel_id_.end() ||
          !tunnel::verify_relay_bind_ack(it->second->relay_key, data)) {
        ++stats_.dropped_unauth;
        return;
      }
      Tunnel& t = *it->second;
      if (!t.relay_acked) log(out, t.peer_id, "relay ready");
      t.relay_acked = true;
      t.relay_rx = now;
      return;
    }
    // Relayed: strip the relay frame and process the inner packet.
    if (h->type != tunnel::PacketType::relay_data) {
      ++stats_.dropped_malformed;
      return;
    }
    data = data.subspan(tunnel::kHeaderSize);
    h = tunnel::parse_header(data);
    if (!h || h->type == tunnel::PacketType::relay_data) {
      ++stats_.dropped_malformed;
      return;
    }
  }
  // A11: everything else must name one of our receiver indexes and then authenticate; anything
  // that does not is dropped without an answer.
  auto it = by_index_.find(h->receiver);
  if (it == by_index_.end()) {
    ++stats_.dropped_unknown;
    return;
  }
  Tunnel& t = *it->second;
  switch (h->type) {
    case tunnel::PacketType::probe:
      return on_probe(now, t, via, from, data, out);
    case tunnel::PacketType::handshake:
      return on_handshake(now, t, via, from, data, out);
    case tunnel::PacketType::data:
      return on_data(now, t, via, from, data, out);
    default:
      ++stats_.dropped_malformed;
  }
}

void PeerManager::on_probe(Instant now, Tunnel& t, Path via, const Endpoint& from,
                           std::span<const uint8_t> data, PeerActions& out) {
  if (!tunnel::verify_probe(t.punch_key, data)) {
    ++stats_.dropped_unauth;
    return;
  }
  const auto h = *tunnel::parse_header(data);
  t.last_rx = now;
  if (via == Path::relay_udp) t.relay_rx = now;
  if (h.flags == tunnel::kProbeRequest) {
    auto reply = tunnel::make_probe(t.punch_key, tunnel::kProbeReply, t.peer_index, h.counter);
    std::vector<uint8_t> pkt(reply.begin(), reply.end());
    if (via == Path::direct) {
      // Peer-reflexive candidate (e.g. a symmetric NAT's new port): remember and answer there.
      if (std::find(t.candidates.begin(), t.candidates.end(), from) == t.candidates.end() &&
          t.candidates.size() < 64)
        t.candidates.push_back(from);
      out.push_back(peer_action::SendUdp{from, std::move(pkt)});
    } else {
      send_on(t, via, std::move(pkt), out);
    }
    return;
  }
  // A reply: the path it came over works.
  if (auto p = t.pings.find(h.counter); p != t.pings.end()) {
    t.rtt_ms = uint32_t(std::max<int64_t>(0, (now - p->second).count()));
    t.pings.erase(p);
  }
  if (via == Path::direct) {
    if (!t.direct) {
      log(out, t.peer_id, "direct path " + from.to_string() + " works");
    } else if (*t.direct != from && best_path(t) != Path::direct) {
      log(out, t.peer_id, "direct path moves to " + from.to_string());
    }
    if (!t.direct || best_path(t) != Path::direct) t.direct = from;
    t.direct_rx = now;
    if (t.initiator && !t.link) start_handshake(now, t, out);
  } else if (via == Path::relay_udp) {
    t.relay_rx = now;
  }
}

void PeerManager::on_handshake(Instant now, Tunnel& t, Path via, const Endpoint& from,
                               std::span<const uint8_t> data, PeerActions& out) {
  if (!t.link) {
    if (t.initiator) {
      ++stats_.dropped_unauth;
      return;
    }
    t.link = std::make_unique<dtls::Link>(cfg_.dtls, false, cfg_.dtls_mtu);
    t.handshake_started = now;
    log(out, t.peer_id, std::string("DTLS handshake over ") + to_string(via) + " (responder)");
  }
  t.dtls_reply = via;
  t.dtls_reply_ep = from;
  Datagrams dg;
  if (!t.link->on_datagram(data.subspan(tunnel::kHeaderSize), dg))
    ++stats_.dropped_unauth;
  else
    t.last_rx = now;
  after_dtls(now, t, dg, out);
}

void PeerManager::start_handshake(Instant now, Tunnel& t, PeerActions& out) {
  if (t.link) return;
  t.link = std::make_unique<dtls::Link>(cfg_.dtls, true, cfg_.dtls_mtu);
  t.handshake_started = now;
  Datagrams dg;
  t.link->start(dg);
  log(out, t.peer_id,
      std::string("DTLS handshake over ") + to_string(best_path(t)) + " (initiator)");
  after_dtls(now, t, dg, out);
}

// Sends what DTLS produced and reacts to its state: established (check the peer, start the
// data channel), closed by the peer (A10), or failed.
void PeerManager::after_dtls(Instant now, Tunnel& t, Datagrams& dgrams, PeerActions& out) {
  for (auto& d : dgrams) {
    std::vector<uint8_t> pkt(tunnel::kHeaderSize + d.size());
    tunnel::write_header({tunnel::PacketType::handshake, 0, 0, t.peer_index, 0}, pkt.data());
    std::memcpy(pkt.data() + tunnel::kHeaderSize, d.data(), d.size());
    // The responder answers over the path the handshake came from.
    if (!t.initiator && t.dtls_reply == Path::direct)
      out.push_back(peer_action::SendUdp{t.dtls_reply_ep, std::move(pkt)});
    else if (!t.initiator && t.dtls_reply != Path::none)
      send_on(t, t.dtls_reply, std::move(pkt), out);
    else
      send_packet(now, t, std::move(pkt), out);
  }
  const auto st = t.link->state();
  if (st == dtls::LinkState::failed) {
    ++stats_.tunnels_failed;
    const std::string why = "DTLS handshake failed: " + t.link->error();
    log(out, t.peer_id, why, true);
    t.link.reset();
    return remove_tunnel(now, t.peer_id, why, true, out);
  }
  if (st == dtls::LinkState::closed) {
    return remove_tunnel(now, t.peer_id, "closed by the peer (DTLS close_notify)", true, out);
  }
  if (st != dtls::LinkState::established || t.dc) return;
  // A8: the peer must be exactly the device the server signaled, in our group, with the
  // certificate the server holds as current (a revoked or re-issued one is refused).
  std::optional<PeerIdentity> id;
  if (cfg_.identity) id = cfg_.identity(t.link->peer_certificate());
  std::string refusal;
  if (!id)
    refusal = "peer certificate carries no torii identity";
  else if (id->device_id != t.peer_id)
    refusal = "peer presented device '" + id->device_id + "', expected '" + t.peer_id + "'";
  else if (id->group != cfg_.group)
    refusal = "peer is in group '" + id->group + "', not '" + cfg_.group + "'";
  else if (!t.peer_serial.empty() && id->serial_hex != t.peer_serial)
    refusal = "peer certificate serial " + id->serial_hex + " is not its current one";
  if (!refusal.empty()) {
    ++stats_.tunnels_failed;
    log(out, t.peer_id, "refused: " + refusal, true);
    return remove_tunnel(now, t.peer_id, "peer certificate refused: " + refusal, true, out);
  }
  // The handshake came over a direct path the peer authenticated: use it (the responder may not
  // have had a probe reply yet).
  if (!t.direct && t.dtls_reply == Path::direct) {
    t.direct = t.dtls_reply_ep;
    t.direct_rx = now;
  }
  const auto km = t.link->export_keying_material(tunnel::kExporterLabel, tunnel::kExportedKeySize);
  t.dc.emplace(cfg_.cipher,
               std::span<const uint8_t, tunnel::kExportedKeySize>(km.data(), km.size()),
               t.initiator, t.peer_index, now, cfg_.rekey);
  t.cipher = t.link->cipher_name();
  t.up_since = now;
  ++stats_.tunnels_opened;
  log(out, t.peer_id,
      "tunnel up over " + std::string(to_string(best_path(t))) + " (" + t.cipher + ", " +
          std::to_string((now - t.created).count()) + " ms after signaling)");
  auto q = std::move(t.queued);
  for (const auto& p : q) send_ip(now, t, p, out);
}

void PeerManager::on_data(Instant now, Tunnel& t, Path via, const Endpoint& from,
                          std::span<const uint8_t> data, PeerActions& out) {
  if (!t.dc) {
    ++stats_.dropped_unauth;
    return;
  }
  std::vector<uint8_t> plain(data.size());
  auto n = t.dc->open(now, data, plain.data());
  if (!n) {
    ++stats_.dropped_unauth;
    return;
  }
  t.last_rx = now;
  // Roaming: an authentic, fresh packet from a new address moves the direct path there.
  if (via == Path::direct) {
    if (t.direct != from) {
      log(out, t.peer_id, "peer moved to " + from.to_string());
      t.direct = from;
    }
    t.direct_rx = now;
  } else if (via == Path::relay_udp) {
    t.relay_rx = now;
  }
  if (*n == 0) return;  // keepalive
  plain.resize(*n);
  if (!sent_by(plain, t.overlay_v4, t.overlay_v6)) {
    ++stats_.dropped_spoofed;
    return;
  }
  t.rx_bytes += plain.size();
  out.push_back(peer_action::DeliverIp{std::move(plain)});
}

// ---------------------------------------------------------------------------------------------
// Sending

Path PeerManager::best_path(const Tunnel& t) const {
  if (t.direct) return Path::direct;
  if (t.relay_acked) return Path::relay_udp;
  if (t.tls_relay) return Path::relay_tls;
  return Path::none;
}

void PeerManager::send_on(Tunnel& t, Path p, std::vector<uint8_t> pkt, PeerActions& out) {
  const uint8_t side = t.initiator ? tunnel::kSideInitiator : tunnel::kSideResponder;
  switch (p) {
    case Path::direct:
      if (t.direct) out.push_back(peer_action::SendUdp{*t.direct, std::move(pkt)});
      return;
    case Path::relay_udp:
      out.push_back(peer_action::SendUdp{relay_endpoint(), relay_wrap(t.id, side, pkt)});
      return;
    case Path::relay_tls: {
      auto wrapped = relay_wrap(t.id, side, pkt);
      out.push_back(peer_action::SendControl{make_frame([&](pb::Envelope& e) {
        auto* d = e.mutable_relay_data();
        d->set_tunnel_id(t.id);
        d->set_packet(wrapped.data(), wrapped.size());
      })});
      return;
    }
    case Path::none:
      return;
  }
}

bool PeerManager::send_packet(Instant now, Tunnel& t, std::vector<uint8_t> pkt, PeerActions& out) {
  const Path p = best_path(t);
  if (p == Path::none) return false;
  t.last_tx = now;
  send_on(t, p, std::move(pkt), out);
  return true;
}

void PeerManager::send_ip(Instant now, Tunnel& t, std::span<const uint8_t> ip, PeerActions& out) {
  std::vector<uint8_t> pkt(ip.size() + tunnel::kOverhead);
  const size_t n = t.dc->seal(now, ip, pkt.data());
  if (n == 0) return;
  pkt.resize(n);
  if (send_packet(now, t, std::move(pkt), out)) t.tx_bytes += ip.size();
}

void PeerManager::on_ip(Instant now, std::span<const uint8_t> packet, PeerActions& out) {
  Endpoint src, dst;
  if (!ip_addresses(packet, src, dst)) {
    ++stats_.dropped_malformed;
    return;
  }
  auto it = by_overlay_.find(overlay_key(dst));
  if (it != by_overlay_.end()) {
    Tunnel& t = *it->second;
    if (t.dc) return send_ip(now, t, packet, out);
    if (t.queued.size() < cfg_.max_queued)
      t.queued.emplace_back(packet.begin(), packet.end());
    else
      ++stats_.dropped_queue;
    return;
  }
  // On demand (A10): a packet to another overlay address opens a tunnel to that device.
  const bool in_overlay = (overlay_v4_ && in_prefix(dst, *overlay_v4_, v4_prefix_)) ||
                          (overlay_v6_ && in_prefix(dst, *overlay_v6_, v6_prefix_));
  if (!in_overlay || (overlay_v4_ && dst == *overlay_v4_) || (overlay_v6_ && dst == *overlay_v6_)) {
    ++stats_.dropped_no_route;
    return;
  }
  const std::string addr = dst.address_string();
  for (auto& [rid, p] : pending_)
    if (p.peer_address == addr) {
      if (p.queued.size() < cfg_.max_queued)
        p.queued.emplace_back(packet.begin(), packet.end());
      else
        ++stats_.dropped_queue;
      return;
    }
  Pending p;
  p.request_id = next_request_++;
  p.peer_address = addr;
  p.local_index = new_index();
  p.started = now;
  p.queued.emplace_back(packet.begin(), packet.end());
  auto& stored = pending_.emplace(p.request_id, std::move(p)).first->second;
  send_request(now, stored, out);
  log(out, addr, "packet to " + addr + ": requesting a tunnel");
}

// ---------------------------------------------------------------------------------------------
// Data fast path (issue 4): the same decisions as send_ip() and on_data(), without actions.

std::optional<PeerManager::TxRoute> PeerManager::tx_route(std::span<const uint8_t> ip) noexcept {
  Endpoint src, dst;
  if (!ip_addresses(ip, src, dst)) return std::nullopt;
  auto it = by_overlay_.find(overlay_key(dst));
  if (it == by_overlay_.end() || !it->second->dc) return std::nullopt;
  Tunnel& t = *it->second;
  switch (best_path(t)) {
    case Path::direct:
      return TxRoute{&t, *t.direct, tunnel::kHeaderSize};
    case Path::relay_udp:
      return TxRoute{&t, relay_endpoint(), 2 * tunnel::kHeaderSize};
    default:
      return std::nullopt;  // opening, or relayed inside the TLS session
  }
}

size_t PeerManager::seal(Instant now, const TxRoute& r, uint8_t* buf, size_t n) noexcept {
  Tunnel& t = *r.tunnel;
  uint8_t* pkt = buf + r.headroom - tunnel::kHeaderSize;
  size_t len = t.dc->seal(now, {buf + r.headroom, n}, pkt);
  if (len == 0) return 0;
  if (r.headroom > tunnel::kHeaderSize) {  // relay frame
    write_relay_header(t.id, t.initiator ? tunnel::kSideInitiator : tunnel::kSideResponder, buf);
    len += tunnel::kHeaderSize;
  }
  t.last_tx = now;
  t.tx_bytes += n;
  return len;
}

PeerManager::Rx PeerManager::open(Instant now, const Endpoint& from, std::span<uint8_t> dgram,
                                  std::span<const uint8_t>& plain) noexcept {
  auto h = tunnel::parse_header(dgram);
  if (!h) return Rx::slow;
  const bool relayed = relay_port_ && from == relay_endpoint();
  std::span<uint8_t> inner = dgram;
  if (relayed) {
    if (h->type != tunnel::PacketType::relay_data) return Rx::slow;
    inner = dgram.subspan(tunnel::kHeaderSize);
    h = tunnel::parse_header(inner);
    if (!h) return Rx::slow;
  }
  if (h->type != tunnel::PacketType::data) return Rx::slow;
  auto it = by_index_.find(h->receiver);
  if (it == by_index_.end()) return Rx::slow;
  Tunnel& t = *it->second;
  // A new address (roaming) or a tunnel still opening: the reference path decides and logs.
  if (!t.dc || (!relayed && t.direct != from)) return Rx::slow;
  auto n = t.dc->open(now, inner, inner.data() + tunnel::kHeaderSize);
  if (!n) {
    ++stats_.dropped_unauth;
    return Rx::consumed;
  }
  t.last_rx = now;
  if (relayed)
    t.relay_rx = now;
  else
    t.direct_rx = now;
  if (*n == 0) return Rx::consumed;  // keepalive
  plain = {inner.data() + tunnel::kHeaderSize, *n};
  if (!sent_by(plain, t.overlay_v4, t.overlay_v6)) {
    ++stats_.dropped_spoofed;
    return Rx::consumed;
  }
  t.rx_bytes += *n;
  return Rx::plain;
}

void PeerManager::send_probes(Instant now, Tunnel& t, PeerActions& out) {
  t.last_probe = now;
  if (t.method == Method::relay) return;
  auto probe_to = [&](const Endpoint& to) {
    auto p = tunnel::make_probe(t.punch_key, tunnel::kProbeRequest, t.peer_index, rng_());
    out.push_back(peer_action::SendUdp{to, std::vector<uint8_t>(p.begin(), p.end())});
  };
  for (const auto& c : t.candidates) {
    probe_to(c);
    // Port prediction: a dependent mapping allocates its next ports near the observed one.
    for (uint32_t k = 1; k <= t.predict_ports && uint32_t(c.port) + k <= 65535; ++k) {
      Endpoint e = c;
      e.port = uint16_t(c.port + k);
      probe_to(e);
    }
  }
}

void PeerManager::send_ping(Instant now, Tunnel& t, PeerActions& out) {
  t.last_ping = now;
  const uint64_t nonce = rng_();
  auto p = tunnel::make_probe(t.punch_key, tunnel::kProbeRequest, t.peer_index, nonce);
  if (t.pings.size() > 8) t.pings.erase(t.pings.begin());
  t.pings[nonce] = now;
  send_packet(now, t, std::vector<uint8_t>(p.begin(), p.end()), out);
}

void PeerManager::send_relay_bind(Instant now, Tunnel& t, PeerActions& out) {
  t.relay_bind_sent = now;
  const uint8_t side = t.initiator ? tunnel::kSideInitiator : tunnel::kSideResponder;
  const UnixMs wall = wall_offset_ + to_ms(now);
  auto b = tunnel::make_relay_bind(t.relay_key, t.id, side, uint64_t(wall));
  out.push_back(peer_action::SendUdp{relay_endpoint(), std::vector<uint8_t>(b.begin(), b.end())});
}

// ---------------------------------------------------------------------------------------------
// Timers

std::optional<Instant> PeerManager::tick(Instant now, PeerActions& out) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.started >= cfg_.timers.request_timeout) {
      stats_.dropped_queue += it->second.queued.size();
      ++stats_.tunnels_failed;
      const std::string name =
          it->second.peer_id.empty() ? it->second.peer_address : it->second.peer_id;
      log(out, name, "tunnel request unanswered", true);
      note_failure(now, name, "the server did not answer the tunnel request");
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::string> ids;
  for (const auto& [id, t] : tunnels_) ids.push_back(id);
  for (const auto& id : ids) {
    auto it = tunnels_.find(id);
    if (it != tunnels_.end()) tick_tunnel(now, *it->second, out);
  }
  std::optional<Instant> next;
  for (const auto& [rid, p] : pending_) {
    const Instant e = p.started + cfg_.timers.request_timeout;
    if (!next || e < *next) next = e;
  }
  for (const auto& [id, t] : tunnels_) {
    const Instant e = next_event(now, *t);
    if (!next || e < *next) next = e;
  }
  return next;
}

Instant PeerManager::next_event(Instant now, const Tunnel& t) const {
  // Coarse: the fastest timer that may be due; tick() is cheap when nothing is.
  const auto& tm = cfg_.timers;
  Duration d = tm.fast_keepalive;
  if (!t.dc || now - t.created < tm.fast_probing) d = tm.probe_fast;
  if (relay_port_ && t.has_relay_key && !t.relay_acked) d = std::min(d, tm.relay_bind_retry);
  if (t.link && t.link->state() == dtls::LinkState::handshaking)
    if (auto to = t.link->next_timeout()) d = std::min<Duration>(d, std::max<Duration>(*to, 1ms));
  return now + d;
}

void PeerManager::tick_tunnel(Instant now, Tunnel& t, PeerActions& out) {
  const auto& tm = cfg_.timers;
  const Duration age = now - t.created;
  // Dead peer: nothing authentic for peer_dead (or no SA within handshake_timeout).
  if (now - t.last_rx >= tm.peer_dead) {
    ++stats_.tunnels_failed;
    return remove_tunnel(now, t.peer_id,
                         "peer silent for " + std::to_string(tm.peer_dead.count()) + " ms", true,
                         out);
  }
  if (!t.dc && age >= tm.handshake_timeout) {
    ++stats_.tunnels_failed;
    return remove_tunnel(now, t.peer_id, "no working path to the peer", true, out);
  }
  // Relay binding: retransmit until acknowledged, then refresh.
  if (relay_port_ && t.has_relay_key) {
    const Duration every = t.relay_acked ? tm.relay_refresh : tm.relay_bind_retry;
    if (now - t.relay_bind_sent >= every) send_relay_bind(now, t, out);
  }
  if (!t.relay_acked && !t.tls_relay && age >= tm.tls_relay_after) {
    t.tls_relay = true;
    log(out, t.peer_id, "UDP relay unreachable; relaying inside the control session");
  }
  // Direct path gone quiet: fall back to the relay and probe again.
  if (t.direct && now - t.direct_rx >= tm.direct_dead && now - t.last_rx < tm.direct_dead) {
    log(out, t.peer_id, "direct path " + t.direct->to_string() + " silent; using the relay", true);
    t.direct.reset();
  } else if (t.direct && now - t.direct_rx >= tm.direct_dead && now - t.last_rx >= tm.direct_dead &&
             (t.relay_acked || t.tls_relay)) {
    t.direct.reset();
  }
  // Probing for a direct path (also upgrades relay -> direct later).
  if (!t.direct && t.method != Method::relay) {
    const Duration every = age < tm.fast_probing       ? tm.probe_fast
                           : age < tm.probe_slow_until ? tm.probe_slow
                                                       : tm.probe_idle;
    if (now - t.last_probe >= every) send_probes(now, t, out);
  }
  // Initiator: start DTLS over the relay when punching takes too long.
  if (t.initiator && !t.link && best_path(t) != Path::none &&
      (t.method == Method::relay || age >= tm.punch_timeout))
    start_handshake(now, t, out);
  if (t.link && t.link->state() == dtls::LinkState::handshaking) {
    auto to = t.link->next_timeout();
    if (to && *to <= 0ms) {
      Datagrams dg;
      t.link->tick(dg);
      after_dtls(now, t, dg, out);
      if (!tunnels_.count(t.peer_id)) return;
    }
  }
  if (!t.dc) return;
  // Liveness and RTT on the current path; fast keepalive while the peer is active (roaming).
  if (now - t.last_ping >= tm.ping_interval) send_ping(now, t, out);
  if (now - t.last_tx >= tm.fast_keepalive && now - t.last_rx < tm.fast_keepalive_window) {
    std::vector<uint8_t> pkt(tunnel::kOverhead);
    const size_t n = t.dc->seal(now, {}, pkt.data());
    if (n) {
      pkt.resize(n);
      send_packet(now, t, std::move(pkt), out);
    }
  }
}

std::vector<PeerStatus> PeerManager::status(Instant now) const {
  std::vector<PeerStatus> v;
  for (const auto& [id, t] : tunnels_) {
    PeerStatus s;
    s.id = id;
    if (t->overlay_v4) s.overlay_ipv4 = t->overlay_v4->address_string();
    if (t->overlay_v6) s.overlay_ipv6 = t->overlay_v6->address_string();
    s.state = t->dc ? "up" : "connecting";
    s.path = t->dc ? best_path(*t) : Path::none;
    if (s.path == Path::direct)
      s.endpoint = t->direct;
    else if (s.path == Path::relay_udp)
      s.endpoint = relay_endpoint();
    else if (s.path == Path::relay_tls)
      s.endpoint = server_;
    s.rtt_ms = t->rtt_ms;
    s.rx_bytes = t->rx_bytes;
    s.tx_bytes = t->tx_bytes;
    s.tunnel_id = t->id;
    s.method = t->method;
    s.initiator = t->initiator;
    s.cipher = t->cipher;
    s.up_since = t->up_since;
    v.push_back(std::move(s));
  }
  for (const auto& [rid, p] : pending_) {
    PeerStatus s;
    s.id = p.peer_id.empty() ? p.peer_address : p.peer_id;
    s.state = "signaling";
    v.push_back(std::move(s));
  }
  for (const auto& [peer, f] : failures_) {
    if (tunnels_.count(peer) || now - f.first > std::chrono::minutes(5)) continue;
    bool pending = false;
    for (const auto& [rid, p] : pending_) pending |= p.peer_id == peer || p.peer_address == peer;
    if (pending) continue;
    PeerStatus s;
    s.id = peer;
    s.state = "failed";
    s.error = f.second;
    v.push_back(std::move(s));
  }
  return v;
}

}  // namespace torii::p2p

// Tunnel relay table (see relay_table.hpp). A6, A9, A11.
#include "core/p2p/relay_table.hpp"

#include <openssl/crypto.h>

#include "core/tunnel/packet.hpp"

namespace torii::p2p {

void RelayTable::open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key) {
  auto& e = tunnels_[tunnel_id];
  e.key = key;
  e.side[0] = e.side[1] = Side{};
}

void RelayTable::close(uint64_t tunnel_id) {
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return;
  OPENSSL_cleanse(it->second.key.data(), it->second.key.size());
  tunnels_.erase(it);
}

std::optional<RelayTable::Forward> RelayTable::on_datagram(Instant now, UnixMs wall,
                                                           const Endpoint& from,
                                                           std::span<const uint8_t> data,
                                                           std::array<uint8_t, 32>& ack,
                                                           std::array<uint8_t, 32>& other_ack) {
  auto h = tunnel::parse_header(data);
  if (!h || h->flags > 1) {
    ++stats_.dropped_malformed;
    return std::nullopt;
  }
  auto it = tunnels_.find(h->counter);
  if (it == tunnels_.end()) {
    ++stats_.dropped_unbound;
    return std::nullopt;
  }
  Entry& e = it->second;
  if (h->type == tunnel::PacketType::relay_bind) {
    auto b = tunnel::parse_relay_bind(data);
    if (!b || !tunnel::verify_relay_bind(e.key, data)) {
      ++stats_.dropped_unauth;
      return std::nullopt;
    }
    const int64_t skew = int64_t(b->unix_ms) - wall;
    if (skew > kBindSkew.count() || -skew > kBindSkew.count()) {
      ++stats_.dropped_stale;
      return std::nullopt;
    }
    Side& me = e.side[b->side];
    const Side& peer = e.side[1 - b->side];
    const bool first = !me.ep || *me.ep != from;
    me.ep = from;
    me.seen = now;
    ++stats_.binds;
    if (!peer.ep || now - peer.seen > kBindLifetime) return std::nullopt;  // wait for the peer
    ack = tunnel::make_relay_bind_ack(e.key, h->counter, b->side);
    Forward f{from, true, std::nullopt};
    if (first) {
      other_ack = tunnel::make_relay_bind_ack(e.key, h->counter, uint8_t(1 - b->side));
      f.other = peer.ep;
    }
    return f;
  }
  if (h->type != tunnel::PacketType::relay_data) {
    ++stats_.dropped_malformed;
    return std::nullopt;
  }
  Side& me = e.side[h->flags];
  Side& other = e.side[1 - h->flags];
  if (!me.ep || *me.ep != from || now - me.seen > kBindLifetime || !other.ep ||
      now - other.seen > kBindLifetime) {
    ++stats_.dropped_unbound;
    return std::nullopt;
  }
  ++stats_.forwarded;
  stats_.forwarded_bytes += data.size();
  return Forward{*other.ep, false};
}

}  // namespace torii::p2p

// The server's tunnel relay (A6 relay fallback), I/O-free: which device endpoints may exchange
// packets through toriid, learned from authenticated relay binds, and where each relayed packet
// goes. The relay never decrypts: packets are end-to-end encrypted between the devices (A9).
//
// A device binds its endpoint to (tunnel, side) with a relay_bind packet (HMAC with the tunnel's
// relay key, which only the two devices and the server know; timestamp within kBindSkew of the
// server's clock). A relay_data frame (header: type relay_data, flags = side, counter = tunnel
// ID) from the bound endpoint of one side is forwarded unchanged to the other side's bound
// endpoint. Anything else is dropped and counted, with no answer (A11).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>

#include "core/endpoint.hpp"
#include "core/time.hpp"

namespace torii::p2p {

class RelayTable {
 public:
  static constexpr Duration kBindSkew = std::chrono::seconds(120);
  static constexpr Duration kBindLifetime = std::chrono::seconds(60);  // without refresh

  struct Stats {
    uint64_t binds = 0, forwarded = 0, forwarded_bytes = 0;
    uint64_t dropped_unbound = 0, dropped_unauth = 0, dropped_malformed = 0, dropped_stale = 0;
  };
  // What to do with one datagram: send `data` (the input itself, or `ack`) to `to`.
  struct Forward {
    Endpoint to;
    bool is_ack = false;
    // A bind completes the pair: the other side (bound earlier) learns at once that the relay
    // path works end to end (`other_ack` to `other`).
    std::optional<Endpoint> other;
  };

  void open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key);
  void close(uint64_t tunnel_id);
  // A bind is acknowledged only once both sides are bound, so an acknowledged relay path works
  // end to end. `ack` (and `other_ack`) receive the acknowledgements when the result has is_ack.
  std::optional<Forward> on_datagram(Instant now, UnixMs wall, const Endpoint& from,
                                     std::span<const uint8_t> data, std::array<uint8_t, 32>& ack,
                                     std::array<uint8_t, 32>& other_ack);
  size_t size() const { return tunnels_.size(); }
  const Stats& stats() const { return stats_; }

 private:
  struct Side {
    std::optional<Endpoint> ep;
    Instant seen{};
  };
  struct Entry {
    std::array<uint8_t, 32> key{};
    Side side[2];
  };
  std::unordered_map<uint64_t, Entry> tunnels_;
  Stats stats_;
};

}  // namespace torii::p2p

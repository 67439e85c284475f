// The device side of peer-to-peer tunnels (A6-A11), as one I/O-free state machine for all peers:
// signaling over the control session (peer request / instruction / confirmation / response),
// authenticated hole-punching probes toward every candidate (with port prediction), relay binds,
// the DTLS handshake over whichever path works first (direct, UDP relay, or relay inside the TLS
// control session), the peer's certificate check, the AEAD data channel, path upgrades from relay
// to direct, roaming, keepalive, dead-peer detection and close.
//
// The host feeds it (now, input): control messages, UDP datagrams of the tunnel socket, IP packets
// read from the TUN device, ticks; and carries out the actions it returns (send a datagram, send a
// control frame, write a packet to the TUN device). Only the DTLS retransmission timer runs on the
// real clock (OpenSSL; see core/dtls/link.hpp).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/dtls/link.hpp"
#include "core/endpoint.hpp"
#include "core/p2p/method.hpp"
#include "core/time.hpp"
#include "core/tunnel/data_channel.hpp"
#include "torii/control.pb.h"

namespace torii::p2p {

using namespace std::chrono_literals;

// Timers of the tunnel layer (style.md 2), with what each bounds.
struct PeerTimers {
  Duration probe_fast = 200ms;      // probe every candidate this often during fast_probing
  Duration fast_probing = 3s;       // ... for this long after the tunnel starts
  Duration probe_slow = 2s;         // then this often (relay -> direct upgrade attempts)
  Duration probe_slow_until = 60s;  // ... until this long after start, then probe_idle
  Duration probe_idle = 15s;
  Duration punch_timeout = 1500ms;      // no direct path by then: handshake over the relay
  Duration tls_relay_after = 3s;        // UDP relay unanswered by then: relay inside TLS
  Duration relay_bind_retry = 250ms;    // relay bind retransmission until acknowledged
  Duration relay_refresh = 15s;         // relay bind refresh (server binding + NAT mapping)
  Duration ping_interval = 5s;          // authenticated probe on the current path (RTT, liveness)
  Duration fast_keepalive = 1s;         // empty data packet if we sent nothing for this long while
  Duration fast_keepalive_window = 5s;  // ... the peer sent something within this window (roaming)
  Duration direct_dead = 15s;           // nothing on the direct path: fall back to the relay
  Duration peer_dead = 45s;             // nothing at all: the tunnel is dead (A10 without alert)
  Duration handshake_timeout = 20s;     // DTLS must complete within this
  Duration request_timeout = 10s;       // signaling answer
};

struct PeerIdentity {
  std::string device_id, group, serial_hex;
};
// Reads the identity out of a verified peer certificate (pki::device_identity in the agent).
using IdentityFn = std::function<std::optional<PeerIdentity>(X509*)>;

struct PeerConfig {
  std::string device_id;
  std::string group;
  std::shared_ptr<dtls::Context> dtls;
  IdentityFn identity;
  tunnel::Cipher cipher = tunnel::Cipher::aes_256_gcm;
  tunnel::RekeyPolicy rekey;
  PeerTimers timers;
  size_t dtls_mtu = 1200;
  size_t max_queued = 32;  // IP packets held per peer while the tunnel opens
  uint64_t seed = 0;       // 0: random indexes and nonces (tests pass a fixed seed)
};

enum class Path : uint8_t { none, direct, relay_udp, relay_tls };
const char* to_string(Path p);

struct PeerStatus {
  std::string id;
  std::string overlay_ipv4, overlay_ipv6;
  std::string state;  // "signaling", "connecting", "up", "failed" (with `error`)
  std::string error;
  Path path = Path::none;
  std::optional<Endpoint> endpoint;
  std::optional<uint32_t> rtt_ms;
  uint64_t rx_bytes = 0, tx_bytes = 0;
  uint64_t tunnel_id = 0;
  Method method = Method::relay;
  bool initiator = false;
  std::string cipher;
  std::optional<Instant> up_since;
};

struct PeerStats {
  uint64_t dropped_unknown = 0;    // datagrams for no tunnel / from no peer (silently ignored)
  uint64_t dropped_malformed = 0;  // not a torii packet
  uint64_t dropped_unauth = 0;     // probes/handshakes/data that did not authenticate
  uint64_t dropped_no_route = 0;   // IP packets to addresses outside the overlay
  uint64_t dropped_spoofed = 0;    // decrypted packets whose source is not the peer's address
  uint64_t dropped_queue = 0;      // IP packets dropped while a tunnel was opening
  uint64_t tunnels_opened = 0, tunnels_failed = 0, tunnels_closed = 0;
};

namespace peer_action {
struct SendUdp {
  Endpoint to;
  std::vector<uint8_t> data;
};
struct SendControl {  // a frame for the TLS control session
  std::vector<uint8_t> frame;
};
struct DeliverIp {  // write to the TUN device
  std::vector<uint8_t> packet;
};
struct Log {
  std::string peer;
  std::string text;
  bool warning = false;
};
}  // namespace peer_action
using PeerAction = std::variant<peer_action::SendUdp, peer_action::SendControl,
                                peer_action::DeliverIp, peer_action::Log>;
using PeerActions = std::vector<PeerAction>;

class PeerManager {
  struct Tunnel;

 public:
  explicit PeerManager(PeerConfig cfg);
  ~PeerManager();

  // From the Welcome: our overlay addresses and prefixes, and where the relay listens.
  void set_overlay(const Endpoint& v4, int v4_prefix, const Endpoint& v6, int v6_prefix);
  void set_server(const Endpoint& server_address, uint16_t relay_port);
  // Candidates of the tunnel socket: host addresses with its port, and the server-reflexive one.
  void set_candidates(std::vector<Endpoint> c) { candidates_ = std::move(c); }
  // Unix time at mono instant zero (relay binds carry wall-clock time).
  void set_wall_offset(UnixMs wall_at_zero) { wall_offset_ = wall_at_zero; }
  // The control session went down: pending requests fail; tunnels keep running (they are
  // peer-to-peer) except over the TLS relay.
  void on_session_down(Instant now, PeerActions& out);

  // A10: explicit open / close by peer ID. False (with a Log) if refused locally.
  bool connect(Instant now, const std::string& peer_id, PeerActions& out);
  bool disconnect(Instant now, const std::string& peer_id, PeerActions& out);
  void close_all(Instant now, PeerActions& out);

  // Control messages for the tunnel layer (ConnectInstruction, PeerResponse, PeerClose,
  // RelayData); false if the envelope is none of those.
  bool on_control(Instant now, const ::torii::control::v1::Envelope& env, PeerActions& out);
  void on_udp(Instant now, const Endpoint& from, std::span<const uint8_t> data, PeerActions& out);
  // An IP packet read from the TUN device: encrypted to its peer, opening the tunnel on demand.
  void on_ip(Instant now, std::span<const uint8_t> packet, PeerActions& out);
  std::optional<Instant> tick(Instant now, PeerActions& out);

  // --- Data fast path (issue 4): noexcept, no allocation, no action list. The host batches
  // the I/O; anything unusual goes to on_ip() / on_udp() above, which stay the reference.
  // Where an IP packet would go now: its tunnel is up with a data channel and a UDP path.
  // Valid until the next call of any other member. nullopt: use on_ip().
  struct TxRoute {
    Tunnel* tunnel = nullptr;
    Endpoint to;
    size_t headroom = 0;  // bytes before the plaintext: tunnel header, plus relay frame
  };
  std::optional<TxRoute> tx_route(std::span<const uint8_t> ip) noexcept;
  // Seals the `n` plaintext bytes found at buf + r.headroom into the datagram that starts at
  // buf (capacity r.headroom + n + tunnel::kTagSize). Returns its size, 0 if not sealed.
  size_t seal(Instant now, const TxRoute& r, uint8_t* buf, size_t n) noexcept;
  // A datagram of the tunnel socket: data for a running tunnel on its current path is decrypted
  // in place (`plain` then points into `dgram`). consumed: a keepalive, or dropped and counted.
  // slow: anything else, for on_udp() with the datagram untouched.
  enum class Rx : uint8_t { plain, consumed, slow };
  Rx open(Instant now, const Endpoint& from, std::span<uint8_t> dgram,
          std::span<const uint8_t>& plain) noexcept;

  std::vector<PeerStatus> status(Instant now) const;
  const PeerStats& stats() const { return stats_; }
  size_t tunnel_count() const { return tunnels_.size(); }

 private:
  struct Pending {
    uint64_t request_id = 0;
    std::string peer_id;       // or
    std::string peer_address;  // overlay address
    uint32_t local_index = 0;
    Instant started{};
    std::vector<std::vector<uint8_t>> queued;
  };

  uint32_t new_index();
  void send_request(Instant now, Pending& p, PeerActions& out);
  Tunnel& create_tunnel(Instant now, const ::torii::control::v1::TunnelOffer& offer, bool initiator,
                        uint32_t local_index, PeerActions& out);
  void remove_tunnel(Instant now, const std::string& peer_id, const std::string& why,
                     bool tell_server, PeerActions& out);
  void on_instruction(Instant now, const ::torii::control::v1::ConnectInstruction& ci,
                      PeerActions& out);
  void on_response(Instant now, const ::torii::control::v1::PeerResponse& r, PeerActions& out);
  void on_packet(Instant now, Path via, const Endpoint& from, std::span<const uint8_t> data,
                 PeerActions& out);
  void on_probe(Instant now, Tunnel& t, Path via, const Endpoint& from,
                std::span<const uint8_t> data, PeerActions& out);
  void on_handshake(Instant now, Tunnel& t, Path via, const Endpoint& from,
                    std::span<const uint8_t> data, PeerActions& out);
  void on_data(Instant now, Tunnel& t, Path via, const Endpoint& from,
               std::span<const uint8_t> data, PeerActions& out);
  void after_dtls(Instant now, Tunnel& t, std::vector<std::vector<uint8_t>>& dgrams,
                  PeerActions& out);
  void start_handshake(Instant now, Tunnel& t, PeerActions& out);
  void send_probes(Instant now, Tunnel& t, PeerActions& out);
  void send_ping(Instant now, Tunnel& t, PeerActions& out);
  void send_relay_bind(Instant now, Tunnel& t, PeerActions& out);
  // Sends one tunnel packet on the tunnel's best path; false if there is none.
  bool send_packet(Instant now, Tunnel& t, std::vector<uint8_t> pkt, PeerActions& out);
  void send_on(Tunnel& t, Path p, std::vector<uint8_t> pkt, PeerActions& out);
  void send_ip(Instant now, Tunnel& t, std::span<const uint8_t> ip, PeerActions& out);
  Path best_path(const Tunnel& t) const;
  void tick_tunnel(Instant now, Tunnel& t, PeerActions& out);
  Instant next_event(Instant now, const Tunnel& t) const;
  Endpoint relay_endpoint() const;
  void log(PeerActions& out, const std::string& peer, std::string text, bool warn = false);

  PeerConfig cfg_;
  std::mt19937_64 rng_;
  std::vector<Endpoint> candidates_;
  std::optional<Endpoint> overlay_v4_, overlay_v6_;
  int v4_prefix_ = 0, v6_prefix_ = 0;
  Endpoint server_;
  uint16_t relay_port_ = 0;
  UnixMs wall_offset_ = 0;
  uint64_t next_request_ = 1;
  std::map<uint64_t, Pending> pending_;
  std::map<std::string, std::unique_ptr<Tunnel>> tunnels_;  // by peer ID
  std::unordered_map<uint32_t, Tunnel*> by_index_;          // by our receiver index
  std::unordered_map<uint64_t, Tunnel*> by_tunnel_id_;
  std::map<std::array<uint8_t, 17>, Tunnel*> by_overlay_;  // family byte + address
  PeerStats stats_;
  // Why the last attempt to reach a peer failed (refused, unanswered, handshake), for status
  // and `connect --wait`; cleared by a new connect. Bounded: oldest entries go first.
  std::map<std::string, std::pair<Instant, std::string>> failures_;
  void note_failure(Instant now, const std::string& peer, const std::string& why);
};

}  // namespace torii::p2p

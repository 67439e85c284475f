// Tunnel wire format (A9): the 16-byte header every datagram on the agent's tunnel socket (and
// through the server relay) starts with, the HMAC-authenticated hole-punching probe sent before
// DTLS, and the relay bind / bind-ack that prove to the server relay which tunnel an agent is in.
//
//   byte 0      type (PacketType)
//   byte 1      epoch (data: key generation, mod 256; 0 elsewhere)
//   bytes 2-3   flags, big-endian (probe: request/reply; relay bind: side)
//   bytes 4-7   receiver index, big-endian (chosen by the destination, used to demultiplex)
//   bytes 8-15  counter, big-endian (data: AEAD nonce; probe: random nonce; relay: tunnel ID)
//
// Data plane: nothing here allocates or throws; bytes from the network are only ever rejected.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace torii::tunnel {

// Big-endian field access, shared by the codecs of this folder.
namespace wire {
inline uint16_t load16(const uint8_t* p) noexcept {
  return uint16_t((p[0] << 8) | p[1]);
}
inline uint32_t load32(const uint8_t* p) noexcept {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline uint64_t load64(const uint8_t* p) noexcept {
  return (uint64_t(load32(p)) << 32) | load32(p + 4);
}
inline void store16(uint8_t* p, uint16_t v) noexcept {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store32(uint8_t* p, uint32_t v) noexcept {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}
inline void store64(uint8_t* p, uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}
}  // namespace wire

enum class PacketType : uint8_t {
  probe = 1,
  handshake = 2,
  data = 3,
  relay_bind = 4,
  relay_bind_ack = 5,
  relay_data = 6  // relay frame: flags = sender side, counter = tunnel ID, then the inner packet
};

struct Header {
  PacketType type;
  uint8_t epoch = 0;
  uint16_t flags = 0;
  uint32_t receiver = 0;
  uint64_t counter = 0;
  bool operator==(const Header&) const = default;
};

inline constexpr size_t kHeaderSize = 16, kTagSize = 16, kOverhead = kHeaderSize + kTagSize;
inline constexpr size_t kMaxPacket = 65535;  // largest UDP payload we ever build or accept
inline constexpr size_t kMaxPlaintext = kMaxPacket - kOverhead;

// nullopt: shorter than kHeaderSize or unknown type. Any trailing bytes are the caller's.
std::optional<Header> parse_header(std::span<const uint8_t> packet) noexcept;
// Writes exactly kHeaderSize bytes.
void write_header(const Header& h, uint8_t* out) noexcept;

// --- Hole-punching probe ------------------------------------------------------------------
// probe = header(type=probe, flags = kProbeRequest or kProbeReply, receiver = receiver index of
// the destination, counter = random nonce) + tag = HMAC-SHA256(punch_key, header)[0..16].
// The punch key is 32 random bytes the server hands both peers over their TLS sessions, so a
// probe proves it comes from the peer (or the server), not from whoever scans the port.
inline constexpr uint16_t kProbeRequest = 1, kProbeReply = 2;
inline constexpr size_t kProbeSize = kHeaderSize + kTagSize;  // 32

std::array<uint8_t, kProbeSize> make_probe(std::span<const uint8_t, 32> punch_key, uint16_t flags,
                                           uint32_t receiver, uint64_t nonce) noexcept;
// True for exactly kProbeSize bytes of type probe, flags request or reply, with a valid tag
// (constant-time compare). The caller reads flags/receiver/nonce with parse_header().
bool verify_probe(std::span<const uint8_t, 32> punch_key, std::span<const uint8_t> packet) noexcept;

// --- Relay bind ---------------------------------------------------------------------------
// The server derives relay_key = HMAC-SHA256(server_secret, "torii relay" || tunnel_id BE64) and
// hands it to both agents of the tunnel; it can recompute it from the tunnel ID alone, so the
// relay keeps no per-tunnel secret.
// relay_bind = header(type=relay_bind, flags = side, receiver = 0, counter = tunnel_id)
//              + timestamp (Unix ms, BE64) + tag = HMAC-SHA256(relay_key, header||timestamp)[0..16]
// relay_bind_ack = header(type=relay_bind_ack, flags = side, receiver = 0, counter = tunnel_id)
//              + tag = HMAC-SHA256(relay_key, header)[0..16]
// Freshness of the timestamp is the relay's decision (it knows its clock and tolerance).
inline constexpr uint8_t kSideInitiator = 0, kSideResponder = 1;
inline constexpr size_t kRelayBindSize = kHeaderSize + 8 + kTagSize;  // 40
inline constexpr size_t kRelayBindAckSize = kHeaderSize + kTagSize;   // 32

std::array<uint8_t, 32> relay_key(std::span<const uint8_t, 32> server_secret,
                                  uint64_t tunnel_id) noexcept;

struct RelayBind {
  uint64_t tunnel_id;
  uint8_t side;
  uint64_t unix_ms;
  bool operator==(const RelayBind&) const = default;
};
std::array<uint8_t, kRelayBindSize> make_relay_bind(std::span<const uint8_t, 32> relay_key,
                                                    uint64_t tunnel_id, uint8_t side,
                                                    uint64_t unix_ms) noexcept;
// Structure only (size, type, side 0/1, epoch and receiver 0): tells the relay which tunnel's
// key to derive before verify_relay_bind().
std::optional<RelayBind> parse_relay_bind(std::span<const uint8_t> packet) noexcept;
// parse_relay_bind() succeeds and the tag matches (constant-time compare).
bool verify_relay_bind(std::span<const uint8_t, 32> relay_key,
                       std::span<const uint8_t> packet) noexcept;

struct RelayBindAck {
  uint64_t tunnel_id;
  uint8_t side;
  bool operator==(const RelayBindAck&) const = default;
};
std::array<uint8_t, kRelayBindAckSize> make_relay_bind_ack(std::span<const uint8_t, 32> relay_key,
                                                           uint64_t tunnel_id,
                                                           uint8_t side) noexcept;
std::optional<RelayBindAck> parse_relay_bind_ack(std::span<const uint8_t> packet) noexcept;
bool verify_relay_bind_ack(std::span<const uint8_t, 32> relay_key,
                           std::span<const uint8_t> packet) noexcept;

}  // namespace torii::tunnel

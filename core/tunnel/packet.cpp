// Tunnel wire format (A9): header codec, hole-punching probe and relay bind (see packet.hpp).
#include "core/tunnel/packet.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

namespace torii::tunnel {

namespace {

using Key = std::span<const uint8_t, 32>;
using Tag = std::array<uint8_t, kTagSize>;

bool known_type(uint8_t t) noexcept {
  return t >= uint8_t(PacketType::probe) && t <= uint8_t(PacketType::relay_data);
}

// First kTagSize bytes of HMAC-SHA256(key, data). False only if OpenSSL fails (out of memory).
bool mac(Key key, const uint8_t* data, size_t len, Tag& tag) noexcept {
  uint8_t full[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key.data(), int(key.size()), data, len, full, &n) || n < kTagSize) {
    OPENSSL_cleanse(full, sizeof full);
    return false;
  }
  std::memcpy(tag.data(), full, kTagSize);
  OPENSSL_cleanse(full, sizeof full);
  return true;
}

// Tags the first `len - kTagSize` bytes of `packet` into its last kTagSize bytes.
template <size_t N>
void seal_mac(Key key, std::array<uint8_t, N>& packet) noexcept {
  Tag tag{};
  mac(key, packet.data(), N - kTagSize, tag);  // on failure the zero tag never verifies
  std::memcpy(packet.data() + N - kTagSize, tag.data(), kTagSize);
}

bool check_mac(Key key, std::span<const uint8_t> packet) noexcept {
  Tag tag;
  const size_t body = packet.size() - kTagSize;
  if (!mac(key, packet.data(), body, tag)) return false;
  return CRYPTO_memcmp(tag.data(), packet.data() + body, kTagSize) == 0;
}

// Header checks shared by relay_bind and relay_bind_ack.
std::optional<Header> relay_header(std::span<const uint8_t> packet, PacketType type,
                                   size_t size) noexcept {
  if (packet.size() != size) return std::nullopt;
  auto h = parse_header(packet);
  if (!h || h->type != type || h->epoch != 0 || h->receiver != 0 || h->flags > kSideResponder)
    return std::nullopt;
  return h;
}

}  // namespace

std::optional<Header> parse_header(std::span<const uint8_t> packet) noexcept {
  if (packet.size() < kHeaderSize || !known_type(packet[0])) return std::nullopt;
  const uint8_t* p = packet.data();
  return Header{PacketType(p[0]), p[1], wire::load16(p + 2), wire::load32(p + 4),
                wire::load64(p + 8)};
}

void write_header(const Header& h, uint8_t* out) noexcept {
  out[0] = uint8_t(h.type);
  out[1] = h.epoch;
  wire::store16(out + 2, h.flags);
  wire::store32(out + 4, h.receiver);
  wire::store64(out + 8, h.counter);
}

std::array<uint8_t, kProbeSize> make_probe(std::span<const uint8_t, 32> punch_key, uint16_t flags,
                                           uint32_t receiver, uint64_t nonce) noexcept {
  std::array<uint8_t, kProbeSize> p{};
  write_header({PacketType::probe, 0, flags, receiver, nonce}, p.data());
  seal_mac(punch_key, p);
  return p;
}

bool verify_probe(std::span<const uint8_t, 32> punch_key,
                  std::span<const uint8_t> packet) noexcept {
  if (packet.size() != kProbeSize) return false;
  const auto h = parse_header(packet);
  if (!h || h->type != PacketType::probe || (h->flags != kProbeRequest && h->flags != kProbeReply))
    return false;
  return check_mac(punch_key, packet);
}

std::array<uint8_t, 32> relay_key(std::span<const uint8_t, 32> server_secret,
                                  uint64_t tunnel_id) noexcept {
  static constexpr char kLabel[] = "torii relay";  // 11 bytes, no terminator on the wire
  uint8_t msg[sizeof kLabel - 1 + 8];
  std::memcpy(msg, kLabel, sizeof kLabel - 1);
  wire::store64(msg + sizeof kLabel - 1, tunnel_id);
  std::array<uint8_t, 32> key{};
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), server_secret.data(), int(server_secret.size()), msg, sizeof msg,
            key.data(), &n))
    key.fill(0);
  return key;
}

std::array<uint8_t, kRelayBindSize> make_relay_bind(std::span<const uint8_t, 32> relay_key,
                                                    uint64_t tunnel_id, uint8_t side,
                                                    uint64_t unix_ms) noexcept {
  std::array<uint8_t, kRelayBindSize> p{};
  write_header({PacketType::relay_bind, 0, side, 0, tunnel_id}, p.data());
  wire::store64(p.data() + kHeaderSize, unix_ms);
  seal_mac(relay_key, p);
  return p;
}

std::optional<RelayBind> parse_relay_bind(std::span<const uint8_t> packet) noexcept {
  const auto h = relay_header(packet, PacketType::relay_bind, kRelayBindSize);
  if (!h) return std::nullopt;
  return RelayBind{h->counter, uint8_t(h->flags), wire::load64(packet.data() + kHeaderSize)};
}

bool verify_relay_bind(std::span<const uint8_t, 32> relay_key,
                       std::span<const uint8_t> packet) noexcept {
  return parse_relay_bind(packet) && check_mac(relay_key, packet);
}

std::array<uint8_t, kRelayBindAckSize> make_relay_bind_ack(std::span<const uint8_t, 32> relay_key,
                                                           uint64_t tunnel_id,
                                                           uint8_t side) noexcept {
  std::array<uint8_t, kRelayBindAckSize> p{};
  write_header({PacketType::relay_bind_ack, 0, side, 0, tunnel_id}, p.data());
  seal_mac(relay_key, p);
  return p;
}

std::optional<RelayBindAck> parse_relay_bind_ack(std::span<const uint8_t> packet) noexcept {
  const auto h = relay_header(packet, PacketType::relay_bind_ack, kRelayBindAckSize);
  if (!h) return std::nullopt;
  return RelayBindAck{h->counter, uint8_t(h->flags)};
}

bool verify_relay_bind_ack(std::span<const uint8_t, 32> relay_key,
                           std::span<const uint8_t> packet) noexcept {
  return parse_relay_bind_ack(packet) && check_mac(relay_key, packet);
}

}  // namespace torii::tunnel

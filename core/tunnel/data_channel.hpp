// Tunnel data channel (A9): AEAD (AES-256-GCM or ChaCha20-Poly1305) over the packet header of
// packet.hpp, with per-epoch anti-replay windows and forward-secret rekeying.
//
// Keys: after the DTLS 1.2 handshake both sides export kExportedKeySize bytes (RFC 5705, label
// kExporterLabel, no context). The initiator sends with bytes 0..31 and receives with 32..63,
// the responder the other way round.
// Packet: header(type=data, epoch, flags=0, receiver=peer's index, counter) || ciphertext ||
//   16-byte tag; the 16 header bytes are the AAD, the 12-byte nonce is 4 zero bytes || counter
//   BE64. Counters start at 0 in each epoch and direction and never reach UINT64_MAX.
// Rekey (sender's decision, RekeyPolicy): before sealing, if after_time passed since the current
//   epoch began, or it carried after_packets packets or after_bytes plaintext bytes, the sender
//   moves to epoch+1 (mod 256) with
//   next key = HKDF-SHA256(IKM = current key, salt = none, info = "torii rekey v1", L = 32)
//   and wipes the old key: a key captured later cannot decrypt earlier epochs.
// Receiver: holds the current epoch, the previous one for keep_previous after switching (late
//   packets in flight), and the next one pre-derived. The first packet of epoch current+1 that
//   authenticates and passes its (fresh) replay window makes it current. Each epoch has its own
//   ReplayWindow; the window is updated only after the tag verified. An expired previous key is
//   wiped by the first seal() or open() after keep_previous.
// Limitation: the receiver follows one epoch at a time, so if every packet of a whole epoch is
//   lost the channel stays stuck (dropped_epoch grows); the tunnel layer then re-handshakes.
//
// Data plane: seal/open are noexcept, never allocate, and reuse one EVP_CIPHER_CTX per key and
// direction (re-initialised per packet with the IV only). Only rekeying allocates (HKDF).
#pragma once
#include <openssl/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "core/time.hpp"
#include "core/tunnel/packet.hpp"
#include "core/tunnel/replay_window.hpp"

namespace torii::tunnel {

enum class Cipher : uint8_t { aes_256_gcm, chacha20_poly1305 };
const char* to_string(Cipher c) noexcept;

inline constexpr std::string_view kExporterLabel = "EXPORTER-torii-tunnel-v1";
inline constexpr size_t kExportedKeySize = 64, kKeySize = 32, kNonceSize = 12;
inline constexpr std::string_view kRekeyInfo = "torii rekey v1";

struct RekeyPolicy {
  Duration after_time = std::chrono::seconds(120);
  uint64_t after_packets = 1ull << 30;  // well inside AES-GCM's 2^32 invocation guidance
  uint64_t after_bytes = 1ull << 36;    // plaintext bytes
  Duration keep_previous = std::chrono::seconds(10);
};

struct DataChannelStats {
  uint64_t sealed = 0, opened = 0;
  uint64_t bytes_sealed = 0, bytes_opened = 0;  // plaintext
  uint64_t rekeys_sent = 0, rekeys_received = 0;
  uint64_t dropped_auth = 0;       // tag did not verify (forged, corrupted, wrong key)
  uint64_t dropped_replay = 0;     // authentic, but counter already seen or below the window
  uint64_t dropped_epoch = 0;      // epoch neither current, previous (kept) nor next
  uint64_t dropped_malformed = 0;  // too short/long or not a data packet
};

// next = HKDF-SHA256(IKM = key, no salt, info = kRekeyInfo, 32 bytes). False only if OpenSSL
// fails (out of memory). Exposed for known-answer tests and other implementations.
bool derive_next_key(std::span<const uint8_t, kKeySize> key,
                     std::span<uint8_t, kKeySize> out) noexcept;

class DataChannel {
 public:
  // Throws std::runtime_error if OpenSSL cannot set up the cipher contexts.
  DataChannel(Cipher c, std::span<const uint8_t, kExportedKeySize> exported, bool initiator,
              uint32_t peer_receiver_index, Instant now, RekeyPolicy p = {});
  ~DataChannel();
  DataChannel(DataChannel&&) noexcept = default;
  DataChannel& operator=(DataChannel&&) noexcept = default;
  DataChannel(const DataChannel&) = delete;
  DataChannel& operator=(const DataChannel&) = delete;

  // Writes header || ciphertext || tag to `out` (capacity >= plaintext.size() + kOverhead) and
  // returns the packet size. `plaintext` may alias out + kHeaderSize (in-place). Empty
  // plaintext is a valid keepalive. Returns 0 if plaintext is larger than kMaxPlaintext, or if
  // the channel cannot go on (OpenSSL failure while rekeying; not expected in practice).
  size_t seal(Instant now, std::span<const uint8_t> plaintext, uint8_t* out) noexcept;
  // Checks the header (type data, size), the epoch, the tag (header as AAD), then the replay
  // window. Writes the plaintext to `out` (capacity >= packet.size() - kOverhead) and returns
  // its size; `out` may alias packet.data() + kHeaderSize. nullopt: refused, counted in stats()
  // by reason; `out` then holds garbage and must not be used.
  std::optional<size_t> open(Instant now, std::span<const uint8_t> packet, uint8_t* out) noexcept;

  Instant last_sent() const noexcept { return last_sent_; }
  Instant last_received() const noexcept { return last_received_; }
  const DataChannelStats& stats() const noexcept { return stats_; }
  uint8_t send_epoch() const noexcept { return tx_.epoch; }
  uint8_t receive_epoch() const noexcept { return rx_[cur_].epoch; }
  Cipher cipher() const noexcept { return cipher_; }

 private:
  struct CtxFree {
    void operator()(EVP_CIPHER_CTX* c) const noexcept;
  };
  using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

  // One key of one direction and its cipher context. Wiping clears both the key bytes and the
  // context's expanded key schedule; moving wipes the source.
  struct Slot {
    std::array<uint8_t, kKeySize> key{};
    Ctx ctx;
    uint8_t epoch = 0;
    bool live = false;

    Slot() = default;
    Slot(Slot&& o) noexcept;
    Slot& operator=(Slot&& o) noexcept;
    ~Slot();
    bool install(const EVP_CIPHER* cipher, bool encrypt) noexcept;  // key -> ctx
    void wipe() noexcept;
  };

  bool rekey_due(Instant now) const noexcept;
  bool rekey_send(Instant now) noexcept;
  bool derive_receive_next() noexcept;
  void rotate_receive(Instant now) noexcept;
  void expire_previous(Instant now) noexcept;
  bool decrypt(Slot& s, std::span<const uint8_t> packet, uint8_t* out) noexcept;

  Cipher cipher_;
  const EVP_CIPHER* evp_;
  uint32_t peer_index_;
  RekeyPolicy policy_;

  Slot tx_;
  uint64_t tx_counter_ = 0;
  uint64_t tx_packets_ = 0, tx_bytes_ = 0;  // in the current epoch
  Instant tx_epoch_start_;

  // Receive slots; cur_/prev_/next_ rotate over them so a rekey moves no key material.
  std::array<Slot, 3> rx_;
  std::array<ReplayWindow, 3> windows_;
  uint8_t cur_ = 0, prev_ = 1, next_ = 2;
  Instant prev_expiry_;

  Instant last_sent_, last_received_;
  DataChannelStats stats_;
};

}  // namespace torii::tunnel

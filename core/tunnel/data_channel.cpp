// Tunnel data channel (A9): AEAD sealing/opening, replay windows and rekeying (see
// data_channel.hpp for the format and the rules).
#include "core/tunnel/data_channel.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <cstring>
#include <stdexcept>

namespace torii::tunnel {

namespace {

const EVP_CIPHER* evp_cipher(Cipher c) noexcept {
  return c == Cipher::aes_256_gcm ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
}

// 4 zero bytes || counter BE64: the header already holds the counter big-endian.
void make_nonce(const uint8_t* header, uint8_t* nonce) noexcept {
  std::memset(nonce, 0, 4);
  std::memcpy(nonce + 4, header + 8, 8);
}

}  // namespace

const char* to_string(Cipher c) noexcept {
  switch (c) {
    case Cipher::aes_256_gcm:
      return "aes-256-gcm";
    case Cipher::chacha20_poly1305:
      return "chacha20-poly1305";
  }
  return "?";
}

bool derive_next_key(std::span<const uint8_t, kKeySize> key,
                     std::span<uint8_t, kKeySize> out) noexcept {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
  EVP_KDF_CTX* kctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
  EVP_KDF_free(kdf);
  if (!kctx) return false;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(key.data()),
                                        key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(kRekeyInfo.data()),
                                        kRekeyInfo.size()),
      OSSL_PARAM_construct_end()};
  const bool ok = EVP_KDF_derive(kctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(kctx);  // clears its copy of the key
  if (!ok) OPENSSL_cleanse(out.data(), out.size());
  return ok;
}

// --- Slot ---------------------------------------------------------------------------------

void DataChannel::CtxFree::operator()(EVP_CIPHER_CTX* c) const noexcept {
  EVP_CIPHER_CTX_free(c);  // cleanses the key schedule
}

DataChannel::Slot::Slot(Slot&& o) noexcept
    : key(o.key), ctx(std::move(o.ctx)), epoch(o.epoch), live(o.live) {
  OPENSSL_cleanse(o.key.data(), o.key.size());
  o.live = false;
}

DataChannel::Slot& DataChannel::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    key = o.key;
    ctx = std::move(o.ctx);
    epoch = o.epoch;
    live = o.live;
    OPENSSL_cleanse(o.key.data(), o.key.size());
    o.live = false;
  }
  return *this;
}

DataChannel::Slot::~Slot() {
  OPENSSL_cleanse(key.data(), key.size());
}

bool DataChannel::Slot::install(const EVP_CIPHER* cipher, bool encrypt) noexcept {
  if (!ctx) return false;
  EVP_CIPHER_CTX_reset(ctx.get());
  live = EVP_CipherInit_ex(ctx.get(), cipher, nullptr, key.data(), nullptr, encrypt ? 1 : 0) == 1;
  return live;
}

void DataChannel::Slot::wipe() noexcept {
  OPENSSL_cleanse(key.data(), key.size());
  if (ctx) EVP_CIPHER_CTX_reset(ctx.get());  // frees (and clears) the expanded key
  live = false;
}

// --- DataChannel --------------------------------------------------------------------------

DataChannel::DataChannel(Cipher c, std::span<const uint8_t, kExportedKeySize> exported,
                         bool initiator, uint32_t peer_receiver_index, Instant now, RekeyPolicy p)
    : cipher_(c),
      evp_(evp_cipher(c)),
      peer_index_(peer_receiver_index),
      policy_(p),
      tx_epoch_start_(now),
      prev_expiry_(now),
      last_sent_(now),
      last_received_(now) {
  const uint8_t* send_half = exported.data() + (initiator ? 0 : kKeySize);
  const uint8_t* recv_half = exported.data() + (initiator ? kKeySize : 0);
  tx_.ctx.reset(EVP_CIPHER_CTX_new());
  for (auto& s : rx_) s.ctx.reset(EVP_CIPHER_CTX_new());
  std::memcpy(tx_.key.data(), send_half, kKeySize);
  std::memcpy(rx_[cur_].key.data(), recv_half, kKeySize);
  if (!evp_ || !tx_.install(evp_, true) || !rx_[cur_].install(evp_, false) ||
      !derive_receive_next())
    throw std::runtime_error("tunnel data channel: cannot set up OpenSSL cipher contexts");
}

DataChannel::~DataChannel() = default;  // slots wipe themselves

bool DataChannel::rekey_due(Instant now) const noexcept {
  return tx_counter_ == ReplayWindow::kRejectCounter ||  // nonce space exhausted
         tx_packets_ >= policy_.after_packets || tx_bytes_ >= policy_.after_bytes ||
         now - tx_epoch_start_ >= policy_.after_time;
}

bool DataChannel::rekey_send(Instant now) noexcept {
  std::array<uint8_t, kKeySize> next;
  const bool ok = derive_next_key(tx_.key, next);
  tx_.wipe();  // forward secrecy: the old key is gone even if the new one failed
  if (!ok) return false;
  tx_.key = next;
  OPENSSL_cleanse(next.data(), next.size());
  if (!tx_.install(evp_, true)) return false;
  ++tx_.epoch;  // mod 256
  tx_counter_ = 0;
  tx_packets_ = tx_bytes_ = 0;
  tx_epoch_start_ = now;
  ++stats_.rekeys_sent;
  return true;
}

size_t DataChannel::seal(Instant now, std::span<const uint8_t> plaintext, uint8_t* out) noexcept {
  if (plaintext.size() > kMaxPlaintext || !tx_.live) return 0;  // !live: moved-from, failed rekey
  expire_previous(now);
  if (rekey_due(now) && !rekey_send(now)) return 0;

  EVP_CIPHER_CTX* c = tx_.ctx.get();
  const size_t n = plaintext.size();
  // The header goes first: it cannot overlap the plaintext, which starts at most at its end.
  write_header({PacketType::data, tx_.epoch, 0, peer_index_, tx_counter_}, out);
  // The counter is spent before encrypting, so a nonce is never reused even after a failure.
  ++tx_counter_;
  uint8_t nonce[kNonceSize];
  make_nonce(out, nonce);
  uint8_t* ct = out + kHeaderSize;
  int len = 0, fin = 0;
  if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_EncryptUpdate(c, nullptr, &len, out, int(kHeaderSize)) != 1)
    return 0;
  len = 0;
  if (n > 0 && EVP_EncryptUpdate(c, ct, &len, plaintext.data(), int(n)) != 1) return 0;
  if (EVP_EncryptFinal_ex(c, ct + len, &fin) != 1 || size_t(len) + size_t(fin) != n ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, int(kTagSize), ct + n) != 1)
    return 0;

  ++tx_packets_;
  tx_bytes_ += n;
  ++stats_.sealed;
  stats_.bytes_sealed += n;
  last_sent_ = now;
  return n + kOverhead;
}

bool DataChannel::decrypt(Slot& s, std::span<const uint8_t> packet, uint8_t* out) noexcept {
  EVP_CIPHER_CTX* c = s.ctx.get();
  const size_t n = packet.size() - kOverhead;
  const uint8_t* ct = packet.data() + kHeaderSize;
  // Copy the tag first: with `out` aliasing the ciphertext it stays intact anyway (the
  // plaintext ends where the tag starts), but a copy keeps that reasoning local.
  uint8_t tag[kTagSize];
  std::memcpy(tag, ct + n, kTagSize);
  uint8_t nonce[kNonceSize];
  make_nonce(packet.data(), nonce);
  int len = 0, fin = 0;
  if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_DecryptUpdate(c, nullptr, &len, packet.data(), int(kHeaderSize)) != 1)
    return false;
  len = 0;
  if (n > 0 && EVP_DecryptUpdate(c, out, &len, ct, int(n)) != 1) return false;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, int(kTagSize), tag) != 1) return false;
  return EVP_DecryptFinal_ex(c, out + len, &fin) == 1 && size_t(len) + size_t(fin) == n;
}

std::optional<size_t> DataChannel::open(Instant now, std::span<const uint8_t> packet,
                                        uint8_t* out) noexcept {
  if (!rx_[cur_].live) return std::nullopt;  // moved-from
  if (packet.size() < kOverhead || packet.size() > kMaxPacket ||
      packet[0] != uint8_t(PacketType::data)) {
    ++stats_.dropped_malformed;
    return std::nullopt;
  }
  expire_previous(now);
  const uint8_t epoch = packet[1];
  uint8_t which;
  if (epoch == rx_[cur_].epoch)
    which = cur_;
  else if (rx_[prev_].live && epoch == rx_[prev_].epoch)
    which = prev_;
  else if (rx_[next_].live && epoch == rx_[next_].epoch)
    which = next_;
  else {
    ++stats_.dropped_epoch;
    return std::nullopt;
  }
  if (!decrypt(rx_[which], packet, out)) {
    ++stats_.dropped_auth;
    return std::nullopt;
  }
  if (!windows_[which].accept(wire::load64(packet.data() + 8))) {
    ++stats_.dropped_replay;
    return std::nullopt;
  }
  if (which == next_) rotate_receive(now);
  const size_t n = packet.size() - kOverhead;
  ++stats_.opened;
  stats_.bytes_opened += n;
  last_received_ = now;
  return n;
}

bool DataChannel::derive_receive_next() noexcept {
  Slot& cur = rx_[cur_];
  Slot& next = rx_[next_];
  windows_[next_].reset();
  next.wipe();
  if (!derive_next_key(cur.key, next.key)) return false;
  next.epoch = uint8_t(cur.epoch + 1);
  return next.install(evp_, false);
}

void DataChannel::rotate_receive(Instant now) noexcept {
  const uint8_t freed = prev_;
  rx_[freed].wipe();
  prev_ = cur_;
  cur_ = next_;
  next_ = freed;
  prev_expiry_ = now + policy_.keep_previous;
  if (policy_.keep_previous <= Duration::zero()) rx_[prev_].wipe();
  derive_receive_next();  // on failure the next epoch is simply refused (dropped_epoch)
  ++stats_.rekeys_received;
}

void DataChannel::expire_previous(Instant now) noexcept {
  if (rx_[prev_].live && now >= prev_expiry_) rx_[prev_].wipe();
}

}  // namespace torii::tunnel

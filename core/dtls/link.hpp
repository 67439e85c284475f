// I/O-free DTLS 1.2 link between two devices (A7, A8, A10): mutual authentication with torii
// device certificates over any datagram path, RFC 5705 key export for the data channel, and
// close_notify. Datagrams in, datagrams out: the same object runs over a UDP socket, a relay or
// an in-process simulated network.
//
// One departure from the core's rule that time is an argument (style.md 1): OpenSSL 3.0 runs
// the DTLS retransmission timer on the real clock (gettimeofday) and offers no way to feed it
// simulated time. next_timeout() reports how long until OpenSSL wants tick(); a simulated network
// that advances faster than real time still gets correct handshakes, only retransmissions happen
// on real-time deadlines. Timer values (see kInitialRetransmit below) are set through
// DTLS_set_timer_cb.
#pragma once
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torii::dtls {

using namespace std::chrono_literals;

// Retransmission timer of a handshake flight (RFC 6347 4.2.4.1): the first retransmission after
// kInitialRetransmit, then doubling per retransmission up to kMaxRetransmit. OpenSSL gives up
// at the 13th expiry without progress (12 retransmissions, DTLS1_TMO_ALERT_COUNT): the link
// fails with "DTLS handshake timed out: read timeout expired" after
// 0.25+0.5+1+2+4+8*8 s = 71.75 s (measured). Callers bound the handshake with their own, shorter
// deadline (then close() the link).
inline constexpr std::chrono::milliseconds kInitialRetransmit = 250ms;
inline constexpr std::chrono::milliseconds kMaxRetransmit = 8s;
// Smallest `mtu` a Link accepts: OpenSSL's own DTLS minimum (the last of its probable MTUs).
inline constexpr size_t kMinMtu = 256;
// Largest `mtu`: the largest UDP payload over IPv4.
inline constexpr size_t kMaxMtu = 65507;

// Shared per agent: one SSL_CTX for DTLS 1.2 only (OpenSSL 3.0 has no DTLS 1.3).
//  - cipher suites ECDHE-ECDSA-AES256-GCM-SHA384, then ECDHE-ECDSA-CHACHA20-POLY1305;
//    groups X25519, P-256; ECDSA signatures with SHA-256/384. Ed25519 device certificates (which
//    the CA also issues) are refused: OpenSSL 3.0 does not offer Ed25519 to DTLS 1.2;
//  - a certificate is required from both ends and verified against the torii CA alone (a fresh
//    X509_STORE holding only that CA, leaf directly under it), with the clientAuth purpose on
//    both sides: device certificates carry only the clientAuth EKU, whichever end plays server;
//  - no session tickets or resumption (every link is a full handshake), no renegotiation,
//    extended master secret required (RFC 7627, so the RFC 5705 export is bound to the handshake);
//  - no cookie exchange (HelloVerifyRequest): the caller hands us pre-authenticated paths;
//  - SSL_OP_NO_QUERY_MTU: the MTU is the Link's, never probed from a socket.
// Thread-safe to share between Links on different threads (OpenSSL SSL_CTX rules).
class Context {
 public:
  // `ca` is the torii CA, `cert`/`key` the device's credential (references are taken, the
  // caller keeps ownership of its own). Throws std::runtime_error with a clear message if one is
  // missing, the key is not EC (Ed25519 included, see above), the key does not match the
  // certificate, or the certificate was not signed by `ca`.
  static std::shared_ptr<Context> create(X509* ca, X509* cert, EVP_PKEY* key);

  SSL_CTX* native() const { return ctx_.get(); }

 private:
  struct CtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };
  explicit Context(SSL_CTX* ctx) : ctx_(ctx) {}
  std::unique_ptr<SSL_CTX, CtxFree> ctx_;
};

enum class LinkState { handshaking, established, closed, failed };
namespace detail {
struct LinkIo;  // link.cpp: the datagram queues between OpenSSL and the Link
}
const char* to_string(LinkState s);

// One DTLS association. `mtu` is the largest datagram (UDP payload) this link may emit; the
// caller subtracts whatever its path adds (relay header, IPv6 vs IPv4). Every outgoing
// datagram is one element of `out`, never larger than `mtu`. Not thread-safe; movable.
class Link {
 public:
  // Throws std::invalid_argument if mtu is outside [kMinMtu, kMaxMtu], std::runtime_error if
  // OpenSSL cannot allocate the session.
  Link(std::shared_ptr<Context> ctx, bool client, size_t mtu = 1200);
  ~Link();
  Link(Link&&) noexcept;
  Link& operator=(Link&&) noexcept;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Client: emits the first flight (ClientHello). Server: nothing to send, waits for it.
  void start(std::vector<std::vector<uint8_t>>& out);

  // Feeds one received datagram: handshake progress, retransmitted flights, alerts,
  // close_notify. Returns false if the datagram was rejected (not DTLS 1.x record framing, or
  // the link is closed/failed) or the link failed while processing it. Application data
  // records are decrypted and discarded: this class carries no data. Never throws on input.
  bool on_datagram(std::span<const uint8_t> d, std::vector<std::vector<uint8_t>>& out);

  // Time until OpenSSL wants tick() (retransmission of the last flight), rounded up to the
  // millisecond; nullopt when no timer runs. Measured on the real clock (see the file comment).
  std::optional<std::chrono::milliseconds> next_timeout() const;
  // Calls DTLSv1_handle_timeout: retransmits the last flight if its timer expired (harmless if
  // called early). Fails the link after too many retransmissions.
  void tick(std::vector<std::vector<uint8_t>>& out);

  // A10: once established, sends close_notify (one datagram) and moves to closed. During the
  // handshake OpenSSL cannot send an alert; the link just moves to closed (the peer's handshake
  // times out). No-op when already closed or failed.
  void close(std::vector<std::vector<uint8_t>>& out);

  LinkState state() const { return state_; }
  // Why the link failed, e.g. `DTLS handshake failed: peer certificate "cam-7" rejected: unable
  // to get local issuer certificate`, `DTLS handshake failed: peer sent fatal alert: unknown CA
  // (it rejected our certificate)`, `DTLS handshake timed out: read timeout expired`.
  const std::string& error() const { return error_; }
  // The verified peer certificate once established (also after close); nullptr before or after
  // a failure. Owned by the link.
  X509* peer_certificate() const;
  // RFC 5705 exporter without context, e.g. ("EXPORTER-torii-tunnel-v1", 64). Both ends get the
  // same bytes. Throws std::logic_error unless established.
  std::vector<uint8_t> export_keying_material(std::string_view label, size_t len) const;
  // Negotiated cipher suite (OpenSSL name) once established (also after close), else "".
  std::string cipher_name() const;

  size_t mtu() const { return mtu_; }
  bool is_client() const { return client_; }

 private:
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };

  void drive_handshake();
  void drain_records();
  void fail(std::string why);
  std::string describe_failure(const char* what) const;
  void flush(std::vector<std::vector<uint8_t>>& out);

  std::shared_ptr<Context> ctx_;
  std::unique_ptr<detail::LinkIo> io_;  // heap: OpenSSL holds its address across moves
  std::unique_ptr<SSL, SslFree> ssl_;
  size_t mtu_ = 0;
  bool client_ = false;
  LinkState state_ = LinkState::handshaking;
  std::string error_;
};

}  // namespace torii::dtls

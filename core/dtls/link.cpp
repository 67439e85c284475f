// DTLS link over an in-memory datagram BIO (see link.hpp; A7, A8, A10). OpenSSL writes one
// record batch per BIO_write and reads one datagram per BIO_read, so the BIO below keeps
// datagram boundaries in both directions; nothing here touches a socket.
#include "core/dtls/link.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <utility>

namespace torii::dtls {

namespace {

// Reasons from OpenSSL's error queue, without the "error:0A000086:SSL routines::" prefix.
std::string openssl_reasons() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    const char* r = ERR_reason_error_string(e);
    std::string one = r ? r : "error " + std::to_string(ERR_GET_REASON(e));
    if (out.find(one) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += one;
  }
  return out;
}

std::string common_name(X509* cert) {
  char cn[256] = {};
  if (cert) X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  return cn;
}

// Alerts that mean "your certificate is not acceptable to me" (RFC 5246 7.2.2).
bool certificate_alert(int desc) {
  switch (desc) {
    case SSL3_AD_BAD_CERTIFICATE:
    case SSL3_AD_UNSUPPORTED_CERTIFICATE:
    case SSL3_AD_CERTIFICATE_REVOKED:
    case SSL3_AD_CERTIFICATE_EXPIRED:
    case SSL3_AD_CERTIFICATE_UNKNOWN:
    case TLS1_AD_UNKNOWN_CA:
    case TLS1_AD_ACCESS_DENIED:
      return true;
    default:
      return false;
  }
}

// Does `d` consist of whole DTLS 1.0/1.2 records of a content type we handle? OpenSSL would
// drop anything else silently; checking first lets on_datagram() tell the caller it was junk.
bool dtls_record_framing(std::span<const uint8_t> d) {
  constexpr size_t kHeader = 13;               // type, version, epoch, seq(6), length
  constexpr size_t kMaxRecord = 16384 + 2048;  // RFC 6347 4.1 (ciphertext bound)
  if (d.empty()) return false;
  size_t pos = 0;
  while (pos < d.size()) {
    if (d.size() - pos < kHeader) return false;
    const uint8_t type = d[pos];
    if (type < SSL3_RT_CHANGE_CIPHER_SPEC || type > SSL3_RT_APPLICATION_DATA) return false;
    const uint16_t version = static_cast<uint16_t>(d[pos + 1] << 8 | d[pos + 2]);
    if (version != DTLS1_2_VERSION && version != DTLS1_VERSION) return false;
    const size_t len = static_cast<size_t>(d[pos + 11] << 8 | d[pos + 12]);
    if (len == 0 || len > kMaxRecord || d.size() - pos - kHeader < len) return false;
    pos += kHeader + len;
  }
  return true;
}

unsigned int retransmit_timer(SSL* /*ssl*/, unsigned int previous_us) {
  using std::chrono::microseconds;
  const auto initial = static_cast<unsigned int>(microseconds(kInitialRetransmit).count());
  const auto max = static_cast<unsigned int>(microseconds(kMaxRetransmit).count());
  if (previous_us == 0) return initial;
  return std::min(previous_us * 2, max);
}

}  // namespace

// The datagram queues between OpenSSL and the Link, and what the info callback saw.
struct detail::LinkIo {
  std::deque<std::vector<uint8_t>> in;
  std::vector<std::vector<uint8_t>> out;
  size_t mtu = 0;
  int alert_received = -1;  // last fatal alert (or close_notify) from the peer: RFC description
  std::string rejected_subject;  // CN of the first certificate our verification refused
};

namespace {

detail::LinkIo* io_of(BIO* b) {
  return static_cast<detail::LinkIo*>(BIO_get_data(b));
}

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  if (len < 0) return -1;
  auto* p = reinterpret_cast<const uint8_t*>(data);
  io_of(b)->out.emplace_back(p, p + len);
  return len;
}

int bio_read(BIO* b, char* buf, int cap) {
  BIO_clear_retry_flags(b);
  detail::LinkIo* io = io_of(b);
  if (io->in.empty()) {
    BIO_set_retry_read(b);
    return -1;
  }
  std::vector<uint8_t> d = std::move(io->in.front());
  io->in.pop_front();
  // A datagram longer than OpenSSL's buffer is truncated, like recvfrom() would; the record
  // layer then drops it.
  const size_t n = std::min(d.size(), static_cast<size_t>(std::max(cap, 0)));
  std::memcpy(buf, d.data(), n);
  return static_cast<int>(n);
}

int bio_puts(BIO* b, const char* s) {
  return bio_write(b, s, static_cast<int>(std::strlen(s)));
}

long bio_ctrl(BIO* b, int cmd, long num, void* /*ptr*/) {
  detail::LinkIo* io = io_of(b);
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // every write already is a datagram
    case BIO_CTRL_WPENDING:
      return 0;  // nothing held back: DTLS subtracts this from the room left in a datagram
    case BIO_CTRL_PENDING:
      return io->in.empty() ? 0 : static_cast<long>(io->in.front().size());
    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
    case BIO_CTRL_DGRAM_GET_MTU:
      return static_cast<long>(io->mtu);
    case BIO_CTRL_DGRAM_SET_MTU:
      return num;  // OpenSSL tells us the MTU it settled on; ours is fixed
    case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD:
      return 0;  // `mtu` already is the datagram payload size
    case BIO_CTRL_DGRAM_MTU_EXCEEDED:
      return 0;  // writes never fail with EMSGSIZE here
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
      return 1;  // no socket receive timeout to arm; the Link reports next_timeout()
    case BIO_CTRL_DGRAM_SET_CONNECTED:
    case BIO_CTRL_DGRAM_SET_PEER:
      return 1;  // the path is the caller's business
    case BIO_CTRL_DGRAM_GET_PEER:
      return 0;  // no address to report
    case BIO_CTRL_PUSH:
    case BIO_CTRL_POP:
      return 0;
    default:
      return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

int bio_destroy(BIO* b) {
  BIO_set_data(b, nullptr);  // the Io belongs to the Link
  return 1;
}

const BIO_METHOD* datagram_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "torii dtls queue");
    if (m == nullptr || BIO_meth_set_write(m, bio_write) != 1 ||
        BIO_meth_set_read(m, bio_read) != 1 || BIO_meth_set_puts(m, bio_puts) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1 ||
        BIO_meth_set_destroy(m, bio_destroy) != 1)
      throw std::runtime_error("dtls: cannot create the datagram BIO method");
    return m;
  }();
  return method;
}

void info_callback(const SSL* ssl, int where, int ret) {
  if ((where & SSL_CB_ALERT) == 0) return;
  auto* io = static_cast<detail::LinkIo*>(SSL_get_app_data(ssl));
  if (io == nullptr) return;
  const int level = ret >> 8;
  const int desc = ret & 0xff;
  if ((where & SSL_CB_READ) && (level == SSL3_AL_FATAL || desc == SSL3_AD_CLOSE_NOTIFY))
    io->alert_received = desc;
}

// Keeps OpenSSL's verdict but remembers whom it was about: a failed handshake has no peer
// certificate to ask for afterwards.
int record_rejection(int preverify_ok, X509_STORE_CTX* store_ctx) {
  if (preverify_ok == 1) return 1;
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* io = ssl ? static_cast<detail::LinkIo*>(SSL_get_app_data(ssl)) : nullptr;
  if (io != nullptr && io->rejected_subject.empty()) {
    X509* cert = X509_STORE_CTX_get_current_cert(store_ctx);
    io->rejected_subject = cert ? common_name(cert) : "?";
    if (io->rejected_subject.empty()) io->rejected_subject = "(no CN)";
  }
  return 0;
}

struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};

}  // namespace

const char* to_string(LinkState s) {
  switch (s) {
    case LinkState::handshaking:
      return "handshaking";
    case LinkState::established:
      return "established";
    case LinkState::closed:
      return "closed";
    case LinkState::failed:
      return "failed";
  }
  return "?";
}

std::shared_ptr<Context> Context::create(X509* ca, X509* cert, EVP_PKEY* key) {
  if (ca == nullptr || cert == nullptr || key == nullptr)
    throw std::runtime_error("dtls: the CA certificate, device certificate and key are required");
  // OpenSSL 3.0 offers Ed25519 to TLS 1.2 but not to DTLS 1.2 (the server answers "no shared
  // cipher"), so an Ed25519-enrolled device cannot hold DTLS links: say so here, not mid-handshake.
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519)
    throw std::runtime_error(
        "dtls: Ed25519 device keys cannot be used for DTLS 1.2 with OpenSSL 3.0; enroll the "
        "device with a P-256 key");
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
    throw std::runtime_error("dtls: the device key must be ECDSA P-256");
  ERR_clear_error();
  if (X509_check_issued(ca, cert) != X509_V_OK || X509_verify(cert, X509_get0_pubkey(ca)) != 1) {
    ERR_clear_error();
    throw std::runtime_error("dtls: device certificate \"" + common_name(cert) +
                             "\" was not issued by the given CA");
  }

  std::shared_ptr<Context> c(new Context(SSL_CTX_new(DTLS_method())));
  SSL_CTX* ctx = c->native();
  if (ctx == nullptr) throw std::runtime_error("dtls: SSL_CTX_new: " + openssl_reasons());
  auto check = [](bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("dtls: ") + what + ": " + openssl_reasons());
  };
  check(SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) == 1 &&
            SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION) == 1,
        "cannot restrict to DTLS 1.2");
  check(SSL_CTX_set_cipher_list(ctx,
                                "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305") == 1,
        "cipher suites");
  check(SSL_CTX_set1_groups_list(ctx, "X25519:P-256") == 1, "key exchange groups");
  check(SSL_CTX_set1_sigalgs_list(ctx, "ECDSA+SHA256:ECDSA+SHA384") == 1, "signature algorithms");
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_QUERY_MTU |
                               SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_clear_options(ctx, SSL_OP_COOKIE_EXCHANGE);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // Send the leaf alone: the peer verifies against its own copy of the CA, and a smaller
  // Certificate message keeps the flight to one or two datagrams.
  SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);

  if (SSL_CTX_use_certificate(ctx, cert) != 1)
    throw std::runtime_error("dtls: device certificate refused: " + openssl_reasons());
  if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
    throw std::runtime_error("dtls: the private key does not match the device certificate (" +
                             openssl_reasons() + ")");

  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  check(store != nullptr && X509_STORE_add_cert(store.get(), ca) == 1, "trust store");
  SSL_CTX_set_cert_store(ctx, store.release());  // the context owns it now
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, record_rejection);
  SSL_CTX_set_verify_depth(ctx, 0);  // the leaf must be signed by the CA itself
  check(SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) == 1, "verify purpose");
  return c;
}

Link::Link(std::shared_ptr<Context> ctx, bool client, size_t mtu)
    : ctx_(std::move(ctx)), io_(std::make_unique<detail::LinkIo>()), mtu_(mtu), client_(client) {
  if (!ctx_) throw std::invalid_argument("dtls::Link: no context");
  if (mtu < kMinMtu || mtu > kMaxMtu)
    throw std::invalid_argument("dtls::Link: mtu " + std::to_string(mtu) + " outside [" +
                                std::to_string(kMinMtu) + ", " + std::to_string(kMaxMtu) + "]");
  io_->mtu = mtu;
  ssl_.reset(SSL_new(ctx_->native()));
  if (!ssl_) throw std::runtime_error("dtls: SSL_new: " + openssl_reasons());
  BIO* bio = BIO_new(datagram_method());
  if (bio == nullptr) throw std::runtime_error("dtls: BIO_new: " + openssl_reasons());
  BIO_set_data(bio, io_.get());
  SSL_set_bio(ssl_.get(), bio, bio);  // one reference, owned by the SSL
  SSL_set_app_data(ssl_.get(), io_.get());
  SSL_set_info_callback(ssl_.get(), info_callback);
  DTLS_set_timer_cb(ssl_.get(), retransmit_timer);
  // Both calls: SSL_set_mtu is the datagram size OpenSSL fills (it returns the MTU, 0 on
  // refusal); the link MTU (with our BIO's zero overhead, the same number) is what OpenSSL
  // re-derives the MTU from in dtls1_query_mtu.
  if (SSL_set_mtu(ssl_.get(), static_cast<long>(mtu)) <= 0 ||
      DTLS_set_link_mtu(ssl_.get(), static_cast<long>(mtu)) != 1)
    throw std::runtime_error("dtls: OpenSSL refused mtu " + std::to_string(mtu));
  // The link lives as long as its tunnel (it sends and receives the A10 close_notify), and
  // OpenSSL keeps a DTLS link's write buffer, sized for the largest record (16 KiB plus
  // overhead), for that long: SSL_MODE_RELEASE_BUFFERS does not apply to DTLS. No record of ours
  // exceeds the MTU (handshake messages are fragmented to it, no application data is sent), so
  // a fragment limit of the MTU changes nothing on the wire and shrinks that buffer to ~2 KB.
  // Measured: 3.4-3.6 KB less resident memory per peer; only the written part of the larger
  // buffer had been resident (issue 4 target 5, docs/benchmarks.md 3.6). OpenSSL accepts
  // 512..16384.
  SSL_set_max_send_fragment(
      ssl_.get(), static_cast<long>(std::clamp<size_t>(mtu, 512, SSL3_RT_MAX_PLAIN_LENGTH)));
  if (client)
    SSL_set_connect_state(ssl_.get());
  else
    SSL_set_accept_state(ssl_.get());
}

Link::~Link() = default;
Link::Link(Link&&) noexcept = default;
Link& Link::operator=(Link&&) noexcept = default;

void Link::start(std::vector<std::vector<uint8_t>>& out) {
  if (state_ == LinkState::handshaking) drive_handshake();
  flush(out);
}

bool Link::on_datagram(std::span<const uint8_t> d, std::vector<std::vector<uint8_t>>& out) {
  if (state_ == LinkState::closed || state_ == LinkState::failed) return false;
  if (!dtls_record_framing(d)) return false;
  io_->in.emplace_back(d.begin(), d.end());
  if (state_ == LinkState::handshaking) drive_handshake();
  if (state_ == LinkState::established) drain_records();
  io_->in.clear();
  flush(out);
  return state_ != LinkState::failed;
}

std::optional<std::chrono::milliseconds> Link::next_timeout() const {
  if (state_ != LinkState::handshaking && state_ != LinkState::established) return std::nullopt;
  timeval tv{};
  if (DTLSv1_get_timeout(ssl_.get(), &tv) != 1) return std::nullopt;
  const int64_t us = static_cast<int64_t>(tv.tv_sec) * 1'000'000 + tv.tv_usec;
  return std::chrono::milliseconds((us + 999) / 1000);
}

void Link::tick(std::vector<std::vector<uint8_t>>& out) {
  if (state_ != LinkState::handshaking && state_ != LinkState::established) return;
  ERR_clear_error();
  if (DTLSv1_handle_timeout(ssl_.get()) < 0)
    fail(describe_failure("DTLS handshake timed out"));
  else
    BIO_flush(SSL_get_wbio(ssl_.get()));
  flush(out);
}

void Link::close(std::vector<std::vector<uint8_t>>& out) {
  if (state_ == LinkState::established) {
    ERR_clear_error();
    SSL_shutdown(ssl_.get());  // 0: our close_notify went out; we do not wait for the peer's
    ERR_clear_error();
  }
  if (state_ == LinkState::handshaking || state_ == LinkState::established)
    state_ = LinkState::closed;
  flush(out);
}

X509* Link::peer_certificate() const {
  if (state_ != LinkState::established && state_ != LinkState::closed) return nullptr;
  return SSL_get0_peer_certificate(ssl_.get());
}

std::vector<uint8_t> Link::export_keying_material(std::string_view label, size_t len) const {
  if (state_ != LinkState::established)
    throw std::logic_error(std::string("dtls: keying material requested from a link that is ") +
                           to_string(state_));
  std::vector<uint8_t> key(len);
  const std::string l(label);
  if (SSL_export_keying_material(ssl_.get(), key.data(), key.size(), l.data(), l.size(), nullptr, 0,
                                 0) != 1)
    throw std::logic_error("dtls: SSL_export_keying_material: " + openssl_reasons());
  return key;
}

std::string Link::cipher_name() const {
  if (state_ != LinkState::established && state_ != LinkState::closed) return "";
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_.get());
  return c ? SSL_CIPHER_get_name(c) : "";
}

void Link::drive_handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_.get());
  if (r == 1) {
    // Both ends are OpenSSL 3 and always negotiate it; without it the RFC 5705 export would not
    // be bound to this handshake (RFC 7627 triple handshake).
    if (SSL_get_extms_support(ssl_.get()) != 1) {
      fail("DTLS handshake refused: the peer did not negotiate extended master secret");
      return;
    }
    state_ = LinkState::established;
    return;
  }
  const int e = SSL_get_error(ssl_.get(), r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
  fail(describe_failure("DTLS handshake failed"));
}

void Link::drain_records() {
  uint8_t sink[512];  // application data is not ours to keep: read and drop
  for (;;) {
    ERR_clear_error();
    size_t got = 0;
    const int r = SSL_read_ex(ssl_.get(), sink, sizeof sink, &got);
    if (r == 1) continue;
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    if (e == SSL_ERROR_ZERO_RETURN) {
      // The peer's close_notify. No close_notify of our own in reply: the peer has forgotten
      // the association already, so it would only be dropped there.
      state_ = LinkState::closed;
      return;
    }
    fail(describe_failure("DTLS link failed"));
    return;
  }
}

void Link::fail(std::string why) {
  state_ = LinkState::failed;
  error_ = std::move(why);
  ERR_clear_error();
}

std::string Link::describe_failure(const char* what) const {
  std::string why;
  const long vr = SSL_get_verify_result(ssl_.get());
  X509* peer = SSL_get0_peer_certificate(ssl_.get());
  if (io_->alert_received >= 0) {
    why = std::string("peer sent fatal alert: ") +
          SSL_alert_desc_string_long(SSL3_AL_FATAL << 8 | io_->alert_received);
    if (certificate_alert(io_->alert_received)) why += " (it rejected our certificate)";
  } else if (vr != X509_V_OK) {
    why = "peer certificate";
    if (!io_->rejected_subject.empty())
      why += " \"" + io_->rejected_subject + "\"";
    else if (peer)
      why += " \"" + common_name(peer) + "\"";
    why += std::string(" rejected: ") + X509_verify_cert_error_string(vr);
  }
  std::string reasons = openssl_reasons();
  if (why.empty()) why = reasons.empty() ? "unknown error" : reasons;
  return std::string(what) + ": " + why;
}

void Link::flush(std::vector<std::vector<uint8_t>>& out) {
  for (auto& d : io_->out) out.push_back(std::move(d));
  io_->out.clear();
}

}  // namespace torii::dtls

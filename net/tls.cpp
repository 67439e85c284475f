// OpenSSL contexts and the readiness-driven TLS stream (see tls.hpp).
#include "net/tls.hpp"

#include "net/asio_endpoint.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace torii::net {

std::string openssl_errors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

namespace {

// Accept the handshake whatever the client certificate; the verdict stays in the SSL object
// (SSL_get_verify_result) for the core to act on.
int accept_and_record(int /*preverify_ok*/, X509_STORE_CTX* /*ctx*/) {
  return 1;
}

void common_options(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set1_groups_list(ctx, "X25519:P-256");
}

}  // namespace

SslCtxPtr make_server_context(const pki::CertificateAuthority& ca) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw TlsError("SSL_CTX_new: " + openssl_errors());
  common_options(ctx.get());
  if (SSL_CTX_use_certificate(ctx.get(), const_cast<X509*>(ca.server_cert())) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), ca.server_key()) != 1 ||
      SSL_CTX_add1_chain_cert(ctx.get(), const_cast<X509*>(ca.cert())) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1)
    throw TlsError("server certificate: " + openssl_errors());
  X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
  X509_STORE_add_cert(store, const_cast<X509*>(ca.cert()));
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, accept_and_record);
  SSL_CTX_set_verify_depth(ctx.get(), 2);
  SSL_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  return ctx;
}

SslCtxPtr make_client_context(const X509* ca, const X509* cert, EVP_PKEY* key) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw TlsError("SSL_CTX_new: " + openssl_errors());
  common_options(ctx.get());
  if (cert && key) {
    if (SSL_CTX_use_certificate(ctx.get(), const_cast<X509*>(cert)) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), key) != 1 || SSL_CTX_check_private_key(ctx.get()) != 1)
      throw TlsError("device certificate/key: " + openssl_errors());
    // Send the device certificate alone. By default OpenSSL builds a chain from the trust store
    // on every handshake (an X509_verify_cert on the device) and sends the CA along, which the
    // server then parses for nothing: it verifies against its own copy of the CA.
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_NO_AUTO_CHAIN);
  }
  if (ca) {
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), const_cast<X509*>(ca));
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, accept_and_record);
  }
  return ctx;
}

pki::X509Ptr find_pinned_ca(SSL* ssl, const pki::Fingerprint& pin, std::string& why) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);  // client side: includes the leaf
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (!chain || !leaf) {
    why = "server sent no certificate";
    return nullptr;
  }
  X509* ca = nullptr;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    X509* c = sk_X509_value(chain, i);
    if (pki::fingerprint(c) == pin) ca = c;
  }
  if (!ca) {
    why =
        "no certificate in the server's chain matches the CA fingerprint given with --ca-sha256 "
        "(wrong server or wrong fingerprint)";
    return nullptr;
  }
  X509_STORE* store = X509_STORE_new();
  X509_STORE_CTX* vctx = X509_STORE_CTX_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX_init(vctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER);
  const bool ok = X509_verify_cert(vctx) == 1;
  if (!ok)
    why = std::string("server certificate does not verify against the pinned CA: ") +
          X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx));
  X509_STORE_CTX_free(vctx);
  X509_STORE_free(store);
  if (!ok) return nullptr;
  X509_up_ref(ca);
  return pki::X509Ptr(ca);
}

TlsStream::TlsStream(tcp::socket socket, SSL_CTX* ctx, bool server)
    : socket_(std::move(socket)), ssl_(SSL_new(ctx)) {
  if (!ssl_) throw TlsError("SSL_new: " + openssl_errors());
  socket_.non_blocking(true);
  SSL_set_fd(ssl_.get(), socket_.native_handle());
  if (server)
    SSL_set_accept_state(ssl_.get());
  else
    SSL_set_connect_state(ssl_.get());
}

asio::awaitable<void> TlsStream::wait_for(int ssl_error) {
  if (ssl_error == SSL_ERROR_WANT_READ)
    co_await socket_.async_wait(tcp::socket::wait_read, asio::use_awaitable);
  else
    co_await socket_.async_wait(tcp::socket::wait_write, asio::use_awaitable);
}

asio::awaitable<void> TlsStream::handshake() {
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) co_return;
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      co_await wait_for(e);
      continue;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
      throw TlsError("connection closed during the TLS handshake");
    const long vr = SSL_get_verify_result(ssl_.get());
    std::string msg = "TLS handshake failed: " + openssl_errors();
    if (vr != X509_V_OK) msg += std::string(" (") + X509_verify_cert_error_string(vr) + ")";
    throw TlsError(msg);
  }
}

asio::awaitable<ReadResult> TlsStream::read_some(uint8_t* buf, size_t len) {
  for (;;) {
    ERR_clear_error();
    size_t got = 0;
    const int r = SSL_read_ex(ssl_.get(), buf, len, &got);
    if (r == 1) co_return ReadResult{got, ReadStatus::data, {}};
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      boost::system::error_code ec;
      co_await socket_.async_wait(
          e == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write,
          asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return ReadResult{0, ReadStatus::error, ec.message()};
      continue;
    }
    if (e == SSL_ERROR_ZERO_RETURN) co_return ReadResult{0, ReadStatus::close_notify, {}};
    if ((e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) ||
        (e == SSL_ERROR_SSL &&
         ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
      ERR_clear_error();
      co_return ReadResult{0, ReadStatus::eof, "connection closed without close_notify"};
    }
    co_return ReadResult{0, ReadStatus::error, openssl_errors()};
  }
}

asio::awaitable<void> TlsStream::write_all(const uint8_t* data, size_t len) {
  while (len > 0) {
    ERR_clear_error();
    size_t put = 0;
    const int r = SSL_write_ex(ssl_.get(), data, len, &put);
    if (r == 1) {
      data += put;
      len -= put;
      continue;
    }
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      co_await wait_for(e);
      continue;
    }
    throw TlsError("TLS write failed: " + openssl_errors());
  }
}

asio::awaitable<void> TlsStream::shutdown() {
  for (int i = 0; i < 4; ++i) {
    ERR_clear_error();
    const int r = SSL_shutdown(ssl_.get());
    if (r >= 0) co_return;  // 0: our close_notify is sent; we do not wait for the peer's
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_WRITE) {
      co_await wait_for(e);
      continue;
    }
    ERR_clear_error();
    co_return;
  }
}

void TlsStream::close() {
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

PeerCertificate client_certificate(SSL* ssl) {
  PeerCertificate pc;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return pc;
  pc.present = true;
  const long vr = SSL_get_verify_result(ssl);
  if (vr != X509_V_OK) pc.verify_error = X509_verify_cert_error_string(vr);
  pc.identity = pki::device_identity(cert);
  if (pc.identity) {
    pc.claimed_id = pc.identity->device_id;
  } else {
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    pc.claimed_id = cn;
    if (pc.verify_error.empty()) pc.verify_error = "not a torii device certificate";
  }
  return pc;
}

Endpoint to_endpoint(const tcp::endpoint& ep) {
  return from_asio(ep);
}

}  // namespace torii::net

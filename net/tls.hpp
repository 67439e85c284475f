// TLS 1.3 on an Asio TCP socket, driving OpenSSL directly on the file descriptor and waiting
// for readiness with async_wait. Why not asio::ssl::stream: it keeps two 17 KiB buffers per
// connection for life, while this keeps none when idle (SSL_MODE_RELEASE_BUFFERS), which is
// what makes 100k idle device sessions per server affordable. Control plane only (A2).
#pragma once
#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/endpoint.hpp"
#include "pki/pki.hpp"

namespace torii::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

// Server context: TLS 1.3 only, the server certificate with the CA in its chain, a client
// certificate requested but not required (enrollment connects without one). Client
// certificates are verified against the CA; the outcome is read with client_certificate() so
// the core can refuse with a clear message and an audit entry instead of a bare alert.
SslCtxPtr make_server_context(const pki::CertificateAuthority& ca);

// Client context: TLS 1.3 only. With `ca`, the server must chain to it (serverAuth purpose).
// Without, the handshake accepts any chain and the caller checks the pin with
// find_pinned_ca() (enrollment, A1). `cert`/`key` are the device's credential, if any.
SslCtxPtr make_client_context(const X509* ca, const X509* cert, EVP_PKEY* key);

// Enrollment pin check: returns the CA certificate from the server's chain whose SHA-256
// equals `pin`, after verifying that the server leaf chains to it with serverAuth purpose.
pki::X509Ptr find_pinned_ca(SSL* ssl, const pki::Fingerprint& pin, std::string& why);

// OpenSSL's error queue as one line, for messages.
std::string openssl_errors();

enum class ReadStatus { data, close_notify, eof, error };
struct ReadResult {
  size_t n = 0;
  ReadStatus status = ReadStatus::data;
  std::string error;
};

class TlsStream {
 public:
  TlsStream(tcp::socket socket, SSL_CTX* ctx, bool server);
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Throws TlsError with OpenSSL's reason; the caller bounds it with a timer that closes the
  // socket.
  asio::awaitable<void> handshake();
  asio::awaitable<ReadResult> read_some(uint8_t* buf, size_t len);
  // Throws TlsError / boost::system::system_error on failure.
  asio::awaitable<void> write_all(const uint8_t* data, size_t len);
  // Sends close_notify (A5); does not wait for the peer's.
  asio::awaitable<void> shutdown();

  SSL* ssl() const { return ssl_.get(); }
  tcp::socket& socket() { return socket_; }
  void close();

 private:
  asio::awaitable<void> wait_for(int ssl_error);
  tcp::socket socket_;
  SslPtr ssl_;
};

// The client certificate of an established server-side session, as the core wants it.
struct PeerCertificate {
  bool present = false;
  std::optional<pki::DeviceIdentity> identity;
  std::string claimed_id;    // CN even when the certificate is not a valid torii one
  std::string verify_error;  // "" if verified against the CA during the handshake
};
PeerCertificate client_certificate(SSL* ssl);

Endpoint to_endpoint(const tcp::endpoint& ep);

}  // namespace torii::net

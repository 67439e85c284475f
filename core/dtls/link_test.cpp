// Tests of the I/O-free DTLS link (A7, A8, A10), all in memory: two Links shuttle datagrams
// through a test "wire" that can drop or inject. Mutual authentication with torii device
// certificates, RFC 5705 export, refusal of foreign or missing certificates, MTU, close_notify,
// retransmission on tick(), junk datagrams. One test sleeps (~0.5 s) for OpenSSL's real timer.
#include "core/dtls/link.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "pki/pki.hpp"

namespace torii::dtls {
namespace {

namespace fs = std::filesystem;
using Datagrams = std::vector<std::vector<uint8_t>>;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "torii-dtls-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

UnixMs wall_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Device {
  pki::PkeyPtr key;
  pki::X509Ptr cert;
  pki::X509Ptr ca;  // the CA this device trusts
  std::shared_ptr<Context> context() const {
    return Context::create(ca.get(), cert.get(), key.get());
  }
};

pki::X509Ptr copy(const X509* c) {
  X509_up_ref(const_cast<X509*>(c));
  return pki::X509Ptr(const_cast<X509*>(c));
}

Device make_device(const pki::CertificateAuthority& ca, const std::string& id,
                   const std::string& group, pki::PkeyPtr key = pki::generate_p256_key()) {
  auto issued = ca.issue_device_cert(pki::make_csr(key.get(), id), id, group, wall_now_ms(),
                                     std::chrono::hours(24));
  return Device{std::move(key), std::move(issued.cert), copy(ca.cert())};
}

std::string device_id(X509* cert) {
  if (cert == nullptr) return "(none)";
  auto id = pki::device_identity(cert);
  return id ? id->device_id : "(not a device certificate)";
}

// Two links and the datagrams in flight between them. A "flight" here is the batch one side
// emits in answer to one delivery; the wire records every datagram size per flight.
struct Wire {
  Link client;
  Link server;
  Datagrams to_server;
  Datagrams to_client;
  std::vector<std::vector<size_t>> flights;  // datagram sizes, in delivery order
  // Return true to drop the datagram; `to_server` tells the direction.
  std::function<bool(bool to_server, const std::vector<uint8_t>&)> drop;

  Wire(std::shared_ptr<Context> c, std::shared_ptr<Context> s, size_t mtu = 1200)
      : client(std::move(c), true, mtu), server(std::move(s), false, mtu) {}

  void start() { client.start(to_server); }

  // Delivers one batch in one direction; returns whether there was anything to deliver.
  bool deliver(bool towards_server) {
    Datagrams batch;
    std::swap(batch, towards_server ? to_server : to_client);
    if (batch.empty()) return false;
    flights.emplace_back();
    for (const auto& d : batch) {
      flights.back().push_back(d.size());
      if (drop && drop(towards_server, d)) continue;
      if (towards_server)
        server.on_datagram(d, to_client);
      else
        client.on_datagram(d, to_server);
    }
    return true;
  }

  // Shuttles until neither side has anything to send.
  void run(int max_batches = 40) {
    for (int i = 0; i < max_batches; ++i) {
      const bool a = deliver(true);
      const bool b = deliver(false);
      if (!a && !b) return;
    }
  }

  size_t largest_datagram() const {
    size_t m = 0;
    for (const auto& f : flights)
      for (size_t s : f) m = std::max(m, s);
    return m;
  }
};

class DtlsLink : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    other_dir_ = new TempDir;
    ca_ = new pki::CertificateAuthority(pki::CertificateAuthority::open(dir_->path() / "ca"));
    other_ca_ =
        new pki::CertificateAuthority(pki::CertificateAuthority::open(other_dir_->path() / "ca"));
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete other_ca_;
    delete dir_;
    delete other_dir_;
  }

  static TempDir* dir_;
  static TempDir* other_dir_;
  static pki::CertificateAuthority* ca_;
  static pki::CertificateAuthority* other_ca_;

  Device cam_ = make_device(*ca_, "cam-1", "lab");
  Device plc_ = make_device(*ca_, "plc-2", "lab");
};
TempDir* DtlsLink::dir_ = nullptr;
TempDir* DtlsLink::other_dir_ = nullptr;
pki::CertificateAuthority* DtlsLink::ca_ = nullptr;
pki::CertificateAuthority* DtlsLink::other_ca_ = nullptr;

constexpr std::string_view kLabel = "EXPORTER-torii-tunnel-v1";

TEST_F(DtlsLink, HandshakeAuthenticatesBothEndsAndExportsTheSameKeys) {
  Wire w(cam_.context(), plc_.context());
  w.start();
  w.run();
  ASSERT_EQ(w.client.state(), LinkState::established) << w.client.error();
  ASSERT_EQ(w.server.state(), LinkState::established) << w.server.error();
  EXPECT_EQ(device_id(w.client.peer_certificate()), "plc-2");
  EXPECT_EQ(device_id(w.server.peer_certificate()), "cam-1");
  const auto kc = w.client.export_keying_material(kLabel, 64);
  const auto ks = w.server.export_keying_material(kLabel, 64);
  EXPECT_EQ(kc.size(), 64u);
  EXPECT_EQ(kc, ks);
  EXPECT_NE(kc, w.client.export_keying_material("EXPORTER-torii-other", 64));
  EXPECT_EQ(w.client.cipher_name(), "ECDHE-ECDSA-AES256-GCM-SHA384");
  EXPECT_EQ(w.server.cipher_name(), w.client.cipher_name());
  EXPECT_TRUE(w.client.error().empty());
  EXPECT_LE(w.largest_datagram(), 1200u);

  // Full handshake: ClientHello / server flight / client flight / CCS+Finished = 2 round trips.
  std::string trace;
  for (const auto& f : w.flights) {
    trace += "[";
    for (size_t i = 0; i < f.size(); ++i) trace += (i ? " " : "") + std::to_string(f[i]);
    trace += "] ";
  }
  EXPECT_EQ(w.flights.size(), 4u) << trace;
  // X25519 was the key exchange: ServerKeyExchange carries named_curve(3), x25519(0x001d), and
  // a 32-byte public key.
  Wire again(cam_.context(), plc_.context());
  std::vector<uint8_t> server_flight;
  again.drop = [&](bool to_server, const std::vector<uint8_t>& d) {
    if (!to_server && server_flight.empty()) server_flight = d;
    return false;
  };
  again.start();
  again.run();
  const uint8_t x25519_params[] = {0x03, 0x00, 0x1d, 0x20};
  EXPECT_NE(std::search(server_flight.begin(), server_flight.end(), std::begin(x25519_params),
                        std::end(x25519_params)),
            server_flight.end());
  std::printf("handshake flights (datagram bytes): %s\n", trace.c_str());
  // The final flight's sender has no timer left; the client's stops when it got that flight.
  EXPECT_FALSE(w.client.next_timeout());
}

TEST_F(DtlsLink, SeparateHandshakesExportDifferentKeys) {
  Wire a(cam_.context(), plc_.context());
  Wire b(cam_.context(), plc_.context());
  a.start();
  a.run();
  b.start();
  b.run();
  ASSERT_EQ(a.client.state(), LinkState::established);
  ASSERT_EQ(b.client.state(), LinkState::established);
  EXPECT_NE(a.client.export_keying_material(kLabel, 64),
            b.client.export_keying_material(kLabel, 64));
}

TEST_F(DtlsLink, OneContextServesBothRolesAndManyLinks) {
  auto cam = cam_.context();
  auto plc = plc_.context();
  Wire a(cam, plc);
  Wire b(plc, cam);  // same contexts, roles swapped
  a.start();
  b.start();
  a.run();
  b.run();
  EXPECT_EQ(a.server.state(), LinkState::established);
  EXPECT_EQ(b.server.state(), LinkState::established);
  EXPECT_EQ(device_id(b.server.peer_certificate()), "plc-2");
}

TEST_F(DtlsLink, Ed25519DeviceKeyIsRefusedWithAClearMessage) {
  // The CA issues Ed25519 device certificates, but OpenSSL 3.0's DTLS 1.2 cannot use them.
  pki::PkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  ASSERT_TRUE(ed);
  Device gw = make_device(*ca_, "gw-ed", "lab", std::move(ed));
  try {
    gw.context();
    ADD_FAILURE() << "Ed25519 key accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Ed25519 device keys cannot be used for DTLS 1.2"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(DtlsLink, ServerCertificateFromAnotherCaFailsOnBothEnds) {
  Device rogue = make_device(*other_ca_, "rogue", "lab");
  Wire w(cam_.context(), rogue.context());
  w.start();
  w.run();
  ASSERT_EQ(w.client.state(), LinkState::failed);
  ASSERT_EQ(w.server.state(), LinkState::failed);
  EXPECT_NE(w.client.error().find("peer certificate \"rogue\" rejected"), std::string::npos)
      << w.client.error();
  EXPECT_NE(w.client.error().find("unable to get local issuer certificate"), std::string::npos)
      << w.client.error();
  EXPECT_NE(w.server.error().find("peer sent fatal alert"), std::string::npos) << w.server.error();
  EXPECT_NE(w.server.error().find("rejected our certificate"), std::string::npos)
      << w.server.error();
  EXPECT_EQ(w.client.peer_certificate(), nullptr);
  EXPECT_THROW(w.client.export_keying_material(kLabel, 64), std::logic_error);
  std::printf("client: %s\nserver: %s\n", w.client.error().c_str(), w.server.error().c_str());
}

TEST_F(DtlsLink, ClientCertificateFromAnotherCaFailsOnBothEnds) {
  Device rogue = make_device(*other_ca_, "rogue", "lab");
  Wire w(rogue.context(), plc_.context());
  w.start();
  w.run();
  ASSERT_EQ(w.client.state(), LinkState::failed);
  ASSERT_EQ(w.server.state(), LinkState::failed);
  // The rogue client trusts another CA, so it is the first to refuse (the server's certificate).
  EXPECT_NE(w.client.error().find("peer certificate \"plc-2\" rejected"), std::string::npos)
      << w.client.error();
  EXPECT_NE(w.server.error().find("unknown CA"), std::string::npos) << w.server.error();
}

TEST_F(DtlsLink, ClientCertificateSignedByAnotherCaIsRefusedByServer) {
  // The client trusts our CA (so it accepts the server) but holds a foreign certificate: only
  // the server's verification can stop it.
  Device rogue = make_device(*other_ca_, "rogue", "lab");
  // Context::create refuses a certificate not issued by the given CA, so build the client's
  // context around the foreign CA and then trust our CA as well: the store holds both.
  auto ctx = rogue.context();
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx->native()), const_cast<X509*>(ca_->cert()));
  Wire w(ctx, plc_.context());
  w.start();
  w.run();
  ASSERT_EQ(w.server.state(), LinkState::failed);
  ASSERT_EQ(w.client.state(), LinkState::failed);
  EXPECT_NE(w.server.error().find("peer certificate \"rogue\" rejected"), std::string::npos)
      << w.server.error();
  EXPECT_NE(w.client.error().find("rejected our certificate"), std::string::npos)
      << w.client.error();
}

// A plain OpenSSL DTLS client without a certificate, on memory BIOs (Context refuses to be
// built without one).
struct BareClient {
  SSL_CTX* ctx = SSL_CTX_new(DTLS_client_method());
  SSL* ssl = nullptr;
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  BareClient() {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_options(ctx, SSL_OP_NO_QUERY_MTU);
    ssl = SSL_new(ctx);
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_mtu(ssl, 1200);
    SSL_set_connect_state(ssl);
  }
  ~BareClient() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
  Datagrams step(const Datagrams& in) {
    for (const auto& d : in) BIO_write(rbio, d.data(), static_cast<int>(d.size()));
    SSL_do_handshake(ssl);
    ERR_clear_error();
    Datagrams out;
    std::vector<uint8_t> all(static_cast<size_t>(BIO_pending(wbio)));
    if (!all.empty()) {
      BIO_read(wbio, all.data(), static_cast<int>(all.size()));
      out.push_back(std::move(all));
    }
    return out;
  }
};

TEST_F(DtlsLink, ClientWithoutCertificateIsRefused) {
  Link server(plc_.context(), false);
  BareClient bare;
  Datagrams to_server = bare.step({});
  ASSERT_FALSE(to_server.empty());
  for (int round = 0; round < 5 && !to_server.empty(); ++round) {
    Datagrams to_client;
    for (const auto& d : to_server) server.on_datagram(d, to_client);
    to_server = bare.step(to_client);
  }
  ASSERT_EQ(server.state(), LinkState::failed);
  EXPECT_NE(server.error().find("peer did not return a certificate"), std::string::npos)
      << server.error();
  EXPECT_EQ(server.peer_certificate(), nullptr);
}

TEST_F(DtlsLink, EveryDatagramFitsTheMtu) {
  for (size_t mtu : {size_t{1200}, size_t{576}, size_t{300}}) {
    Wire w(cam_.context(), plc_.context(), mtu);
    w.start();
    w.run();
    ASSERT_EQ(w.client.state(), LinkState::established) << "mtu " << mtu << w.client.error();
    ASSERT_EQ(w.server.state(), LinkState::established) << "mtu " << mtu << w.server.error();
    EXPECT_LE(w.largest_datagram(), mtu);
    Datagrams alert;
    w.client.close(alert);
    for (const auto& d : alert) EXPECT_LE(d.size(), mtu);
  }
}

TEST_F(DtlsLink, MtuOutsideLimitsIsRefused) {
  auto ctx = cam_.context();
  EXPECT_THROW(Link(ctx, true, 100), std::invalid_argument);
  EXPECT_THROW(Link(ctx, true, 70000), std::invalid_argument);
  EXPECT_THROW(Link(nullptr, true), std::invalid_argument);
  EXPECT_NO_THROW(Link(ctx, true, kMinMtu));
}

TEST_F(DtlsLink, CloseSendsCloseNotifyAndPeerReachesClosed) {
  Wire w(cam_.context(), plc_.context());
  w.start();
  w.run();
  ASSERT_EQ(w.server.state(), LinkState::established);
  Datagrams out;
  w.server.close(out);
  EXPECT_EQ(w.server.state(), LinkState::closed);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0][0], SSL3_RT_ALERT);
  // Still the verified peer after a clean close.
  EXPECT_EQ(device_id(w.server.peer_certificate()), "cam-1");

  Datagrams reply;
  EXPECT_TRUE(w.client.on_datagram(out[0], reply));
  EXPECT_EQ(w.client.state(), LinkState::closed);
  EXPECT_TRUE(w.client.error().empty()) << w.client.error();
  EXPECT_TRUE(reply.empty());
  // Both are done: nothing more is accepted, keys are gone, close() again is a no-op.
  EXPECT_FALSE(w.server.on_datagram(out[0], reply));
  EXPECT_THROW(w.client.export_keying_material(kLabel, 32), std::logic_error);
  w.client.close(reply);
  EXPECT_TRUE(reply.empty());
  EXPECT_FALSE(w.client.next_timeout());
}

TEST_F(DtlsLink, CloseDuringHandshakeSendsNothing) {
  Link client(cam_.context(), true);
  Datagrams out;
  client.start(out);
  ASSERT_FALSE(out.empty());
  Datagrams after;
  client.close(after);
  EXPECT_EQ(client.state(), LinkState::closed);
  EXPECT_TRUE(after.empty());
  EXPECT_FALSE(client.next_timeout());
}

TEST_F(DtlsLink, LostFlightsAreRetransmittedOnTick) {
  // Drop the server's first flight, then its final flight (CCS + Finished) once each.
  Wire w(cam_.context(), plc_.context());
  int server_flights_seen = 0;
  bool dropping = false;
  int last_flight = -1;
  w.drop = [&](bool to_server, const std::vector<uint8_t>&) {
    if (to_server) return false;
    const int flight = static_cast<int>(w.flights.size());
    if (flight != last_flight) {
      last_flight = flight;
      ++server_flights_seen;
      dropping = server_flights_seen == 1 || server_flights_seen == 3;
    }
    return dropping;
  };
  w.start();
  w.run();
  EXPECT_EQ(w.client.state(), LinkState::handshaking);  // waiting for the lost flight
  auto t = w.client.next_timeout();
  ASSERT_TRUE(t);
  EXPECT_LE(*t, kInitialRetransmit);
  EXPECT_TRUE(w.server.next_timeout());  // the server would repeat its flight as well

  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 10 && w.client.state() != LinkState::established; ++i) {
    if (auto wait = w.client.next_timeout()) std::this_thread::sleep_for(*wait);
    w.client.tick(w.to_server);
    w.run();
  }
  const auto took = std::chrono::steady_clock::now() - begin;
  ASSERT_EQ(w.client.state(), LinkState::established) << w.client.error();
  ASSERT_EQ(w.server.state(), LinkState::established) << w.server.error();
  EXPECT_EQ(w.client.export_keying_material(kLabel, 64),
            w.server.export_keying_material(kLabel, 64));
  // Two retransmissions, each after the initial 250 ms: far below OpenSSL's default 1 s.
  EXPECT_LT(took, std::chrono::milliseconds(1500));
  std::printf(
      "recovered from two lost flights in %lld ms\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST_F(DtlsLink, TickBeforeTheTimerExpiresSendsNothing) {
  Link client(cam_.context(), true);
  Datagrams out;
  client.start(out);
  Datagrams again;
  client.tick(again);
  EXPECT_TRUE(again.empty());
  EXPECT_EQ(client.state(), LinkState::handshaking);
}

TEST_F(DtlsLink, JunkDatagramsAreRejectedAndTheHandshakeCompletes) {
  std::mt19937 rng(7);
  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  };
  std::vector<std::vector<uint8_t>> junk = {
      {},
      {0x16},
      {0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2},  // record longer than datagram
      {0x16, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},     // TLS, not DTLS, version
      {0x18, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},     // heartbeat
      {0x17, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},        // empty record
  };
  for (int i = 0; i < 20; ++i) junk.push_back(random_bytes(1 + rng() % 1400));
  for (auto& j : junk)
    if (!j.empty() && j[0] >= 20 && j[0] <= 23) j[0] = 0;  // keep random ones unframed

  // Framed but bogus: application data in epoch 1, which fails authentication and is dropped.
  std::vector<uint8_t> forged = {0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 40};
  auto body = random_bytes(40);
  forged.insert(forged.end(), body.begin(), body.end());

  Wire w(cam_.context(), plc_.context());
  size_t rejected = 0;
  size_t sprays = 0;
  auto spray = [&](Link& l, Datagrams& reply) {
    ++sprays;
    for (const auto& j : junk) rejected += l.on_datagram(j, reply) ? 0 : 1;
    EXPECT_TRUE(l.on_datagram(forged, reply));  // accepted for OpenSSL, silently discarded
  };
  spray(w.server, w.to_client);  // before anything
  w.start();
  for (int i = 0; i < 10; ++i) {
    spray(w.server, w.to_client);
    spray(w.client, w.to_server);
    const bool a = w.deliver(true);
    const bool b = w.deliver(false);
    if (!a && !b) break;
  }
  EXPECT_EQ(rejected, sprays * junk.size());
  ASSERT_EQ(w.client.state(), LinkState::established) << w.client.error();
  ASSERT_EQ(w.server.state(), LinkState::established) << w.server.error();
  // And once established too.
  Datagrams reply;
  spray(w.client, reply);
  EXPECT_EQ(w.client.state(), LinkState::established);
  EXPECT_EQ(w.client.export_keying_material(kLabel, 64),
            w.server.export_keying_material(kLabel, 64));
}

TEST_F(DtlsLink, ReplayedHandshakeDatagramsAfterEstablishmentAreHarmless) {
  Wire w(cam_.context(), plc_.context());
  std::vector<std::vector<uint8_t>> seen_by_server;
  w.drop = [&](bool to_server, const std::vector<uint8_t>& d) {
    if (to_server) seen_by_server.push_back(d);
    return false;
  };
  w.start();
  w.run();
  ASSERT_EQ(w.server.state(), LinkState::established);
  // The client's flights again, as a retransmission or an attacker would send them: the server
  // answers a repeated final client flight by repeating its own, and stays established.
  Datagrams reply;
  for (const auto& d : seen_by_server) w.server.on_datagram(d, reply);
  EXPECT_EQ(w.server.state(), LinkState::established) << w.server.error();
  for (const auto& d : reply) w.client.on_datagram(d, w.to_server);
  EXPECT_EQ(w.client.state(), LinkState::established) << w.client.error();
  EXPECT_EQ(w.client.export_keying_material(kLabel, 64),
            w.server.export_keying_material(kLabel, 64));
}

TEST_F(DtlsLink, LinkIsMovable) {
  Wire w(cam_.context(), plc_.context());
  w.start();
  Link moved = std::move(w.server);
  Datagrams to_client;
  for (const auto& d : w.to_server) moved.on_datagram(d, to_client);
  w.to_server.clear();
  for (int i = 0; i < 4; ++i) {
    Datagrams to_server;
    for (const auto& d : to_client) w.client.on_datagram(d, to_server);
    to_client.clear();
    for (const auto& d : to_server) moved.on_datagram(d, to_client);
  }
  EXPECT_EQ(moved.state(), LinkState::established);
  EXPECT_EQ(w.client.state(), LinkState::established);
}

TEST_F(DtlsLink, ContextRefusesBadCredentials) {
  auto other_key = pki::generate_p256_key();
  try {
    Context::create(const_cast<X509*>(ca_->cert()), cam_.cert.get(), other_key.get());
    ADD_FAILURE() << "mismatched key accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the device certificate"),
              std::string::npos)
        << e.what();
  }
  try {
    Device rogue = make_device(*other_ca_, "rogue", "lab");
    Context::create(const_cast<X509*>(ca_->cert()), rogue.cert.get(), rogue.key.get());
    ADD_FAILURE() << "certificate of another CA accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("\"rogue\" was not issued by the given CA"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Context::create(nullptr, cam_.cert.get(), cam_.key.get()), std::runtime_error);
  EXPECT_THROW(Context::create(cam_.ca.get(), nullptr, cam_.key.get()), std::runtime_error);
  EXPECT_THROW(Context::create(cam_.ca.get(), cam_.cert.get(), nullptr), std::runtime_error);
}

TEST_F(DtlsLink, NothingBeforeEstablishment) {
  Link client(cam_.context(), true);
  EXPECT_EQ(client.state(), LinkState::handshaking);
  EXPECT_EQ(client.peer_certificate(), nullptr);
  EXPECT_EQ(client.cipher_name(), "");
  EXPECT_FALSE(client.next_timeout());
  EXPECT_THROW(client.export_keying_material(kLabel, 64), std::logic_error);
  Link server(plc_.context(), false);
  Datagrams out;
  server.start(out);
  EXPECT_TRUE(out.empty());  // the server speaks second
}

// Generator for the fuzz corpus (fuzz/corpus/dtls_link/, read by dtls_link_fuzz.cpp): run once
// with TORII_DTLS_CORPUS_DIR=<dir> --gtest_also_run_disabled_tests
// --gtest_filter='*WriteFuzzCorpus'. Input format: datagrams, each preceded by a 2-byte
// big-endian length.
TEST_F(DtlsLink, DISABLED_WriteFuzzCorpus) {
  const char* dir = std::getenv("TORII_DTLS_CORPUS_DIR");
  ASSERT_NE(dir, nullptr) << "set TORII_DTLS_CORPUS_DIR";
  auto write = [&](const std::string& name, const Datagrams& ds) {
    std::ofstream f(fs::path(dir) / name, std::ios::binary);
    for (const auto& d : ds) {
      const uint8_t len[2] = {static_cast<uint8_t>(d.size() >> 8), static_cast<uint8_t>(d.size())};
      f.write(reinterpret_cast<const char*>(len), 2);
      f.write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
    }
  };
  {
    Link client(cam_.context(), true);
    Datagrams hello;
    client.start(hello);
    write("client_hello", hello);
  }
  write("bad_framing", {{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2},
                        {0x16, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
                        {0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4}});
  // A whole client side of one handshake (the server's random differs in the fuzzer, so the
  // later flights exercise the "unexpected / bad Finished" paths).
  Wire w(cam_.context(), plc_.context());
  Datagrams client_side;
  w.drop = [&](bool to_server, const std::vector<uint8_t>& d) {
    if (to_server) client_side.push_back(d);
    return false;
  };
  w.start();
  w.run();
  write("client_flights", client_side);
  Datagrams alert;
  w.client.close(alert);
  Datagrams hello_then_close = {client_side.front(), alert.front()};
  write("client_hello_then_close_notify", hello_then_close);
  Datagrams twice = {client_side.front(), client_side.front()};
  write("client_hello_twice", twice);
}

}  // namespace
}  // namespace torii::dtls

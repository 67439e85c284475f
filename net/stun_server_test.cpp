// Loopback tests for the STUN adapters: StunServer over real sockets (incl. the Debian RFC 3489
// `stun` client for interoperability) and discover_nat() against it.
#include "net/stun_server.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/use_future.hpp>

#include "core/stun/message.hpp"
#include "net/nat_discovery.hpp"

// GCC 12 flags every Asio awaitable coroutine frame with a false -Wmismatched-new-delete
// (GCC PR middle-end/109224); the frame's operator new and delete do match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace torii::net {
namespace {

namespace asio = boost::asio;
using udp = asio::ip::udp;
using namespace std::chrono_literals;

Endpoint ep(const char* text) {
  return *Endpoint::parse(text);
}

udp::endpoint to_udp(const Endpoint& e) {
  return {asio::ip::make_address(e.address_string()), e.port};
}

// Runs an io_context on a background thread for the duration of a test.
struct IoThread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread thread{[this] { io.run(); }};
  ~IoThread() {
    guard.reset();
    io.stop();
    thread.join();
  }
};

// A blocking client socket with a receive timeout, so a silent server fails the test quickly.
struct Client {
  asio::io_context io;
  udp::socket sock{io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};

  Endpoint local() const {
    auto l = sock.local_endpoint();
    return Endpoint::v4(l.address().to_v4().to_uint(), l.port());
  }
  void send(const std::vector<uint8_t>& bytes, const Endpoint& to) {
    sock.send_to(asio::buffer(bytes), to_udp(to));
  }
  std::optional<std::vector<uint8_t>> receive(Endpoint* from = nullptr,
                                              std::chrono::milliseconds timeout = 2000ms) {
    pollfd p{sock.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, int(timeout.count())) != 1) return std::nullopt;
    std::vector<uint8_t> buf(2048);
    udp::endpoint src;
    size_t n = sock.receive_from(asio::buffer(buf), src);
    buf.resize(n);
    if (from) *from = Endpoint::v4(src.address().to_v4().to_uint(), src.port());
    return buf;
  }
};

std::vector<uint8_t> binding_request(std::optional<stun::ChangeRequest> change = std::nullopt) {
  stun::Message m;
  m.transaction_id = stun::make_transaction_id({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  m.change_request = change;
  m.fingerprint = true;
  return stun::serialize(m);
}

// A server with the RFC 5780 alternate on 127.0.0.2 (Linux routes all of 127/8 to lo), or
// nullptr where that address cannot be bound.
std::unique_ptr<StunServer> make_rfc5780_server(asio::io_context& io) {
  try {
    return std::make_unique<StunServer>(io, ep("127.0.0.1:0"), ep("127.0.0.2:0"));
  } catch (const std::runtime_error&) {
    return nullptr;
  }
}

template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 200 && !pred(); ++i) std::this_thread::sleep_for(5ms);
  return pred();
}

TEST(StunServer, AnswersBindingAndCountsMalformed) {
  IoThread t;
  StunServer server(t.io, ep("127.0.0.1:0"));
  server.start();
  EXPECT_NE(server.primary_endpoint().port, 0);
  EXPECT_FALSE(server.alternate_endpoint());

  Client c;
  c.send({0xde, 0xad, 0xbe, 0xef}, server.primary_endpoint());  // garbage: dropped, counted
  c.send(binding_request(), server.primary_endpoint());
  Endpoint from;
  auto reply = c.receive(&from);
  ASSERT_TRUE(reply) << "no answer from the STUN server";
  EXPECT_EQ(from, server.primary_endpoint());
  auto parsed = stun::parse(reply->data(), reply->size());
  ASSERT_TRUE(parsed) << stun::to_string(parsed.error);
  EXPECT_EQ(parsed.message->cls, stun::MessageClass::success);
  EXPECT_EQ(parsed.message->xor_mapped_address, c.local());
  EXPECT_EQ(parsed.message->response_origin, server.primary_endpoint());
  EXPECT_FALSE(parsed.message->other_address);

  ASSERT_TRUE(eventually([&] { return server.stats().answered == 1; }));
  auto s = server.stats();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.dropped, 1u);
}

TEST(StunServer, ChangeRequestIsAnsweredFromTheAlternate) {
  IoThread t;
  auto server = make_rfc5780_server(t.io);
  if (!server) GTEST_SKIP() << "127.0.0.2 cannot be bound here";
  server->start();
  Endpoint alt = *server->alternate_endpoint();
  EXPECT_EQ(alt.address_string(), "127.0.0.2");
  EXPECT_NE(alt.port, server->primary_endpoint().port);

  Client c;
  c.send(binding_request(stun::ChangeRequest{true, true}), server->primary_endpoint());
  Endpoint from;
  auto reply = c.receive(&from);
  ASSERT_TRUE(reply);
  EXPECT_EQ(from, alt);
  auto parsed = stun::parse(reply->data(), reply->size());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed.message->response_origin, alt);
  EXPECT_EQ(parsed.message->other_address, alt);

  c.send(binding_request(stun::ChangeRequest{false, true}), server->primary_endpoint());
  reply = c.receive(&from);
  ASSERT_TRUE(reply);
  Endpoint alt_port = server->primary_endpoint();
  alt_port.port = alt.port;
  EXPECT_EQ(from, alt_port);
}

TEST(StunServer, ChangeRequestWithoutAlternateGets420) {
  IoThread t;
  StunServer server(t.io, ep("127.0.0.1:0"));
  server.start();
  Client c;
  c.send(binding_request(stun::ChangeRequest{true, true}), server.primary_endpoint());
  auto reply = c.receive();
  ASSERT_TRUE(reply);
  auto parsed = stun::parse(reply->data(), reply->size());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed.message->cls, stun::MessageClass::error);
  EXPECT_EQ(parsed.message->error_code->code, 420);
}

TEST(StunServer, BindFailureNamesTheAddress) {
  asio::io_context io;
  udp::socket taken(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  uint16_t port = taken.local_endpoint().port();
  try {
    StunServer server(io, Endpoint::v4(0x7f000001, port));
    FAIL() << "bind on a taken port succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot bind STUN on 127.0.0.1:" + std::to_string(port) + ": Address already in use");
  }
  EXPECT_THROW(StunServer(io, ep("127.0.0.1:0"), ep("[::1]:0")), std::invalid_argument);
}

TEST(StunServer, StopEndsServing) {
  IoThread t;
  StunServer server(t.io, ep("127.0.0.1:0"));
  server.start();
  server.stop();
  Client c;
  ASSERT_TRUE(eventually([&] {
    c.send(binding_request(), server.primary_endpoint());
    return !c.receive(nullptr, 20ms).has_value();
  }));
}

// --- Interoperability with the Debian `stun` client (RFC 3489, package stun-client). ---

constexpr const char* kStunClient = "/usr/bin/stun";

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

uint16_t free_udp_port() {
  asio::io_context io;
  udp::socket s(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return s.local_endpoint().port();
}

TEST(StunServer, DebianStunClientBindingTest) {
  if (::access(kStunClient, X_OK) != 0)
    GTEST_SKIP() << kStunClient << " missing (apt install stun-client)";
  IoThread t;
  auto server = make_rfc5780_server(t.io);
  if (!server) GTEST_SKIP() << "127.0.0.2 cannot be bound here";
  server->start();
  uint16_t client_port = free_udp_port();
  // `stun HOST:PORT 1 -v -p SRC`: RFC 3489 test I only, verbose (which goes to stderr).
  std::string out =
      run("timeout 20 " + std::string(kStunClient) + " " + server->primary_endpoint().to_string() +
          " 1 -v -p " + std::to_string(client_port));
  EXPECT_NE(out.find("MappedAddress = 127.0.0.1:" + std::to_string(client_port)), std::string::npos)
      << out;
  EXPECT_NE(out.find("SourceAddress = " + server->primary_endpoint().to_string()),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("ChangedAddress = " + server->alternate_endpoint()->to_string()),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("ok=1"), std::string::npos) << out;
}

TEST(StunServer, DebianStunClientNatTypeOnLoopbackIsOpen) {
  if (::access(kStunClient, X_OK) != 0)
    GTEST_SKIP() << kStunClient << " missing (apt install stun-client)";
  IoThread t;
  auto server = make_rfc5780_server(t.io);
  if (!server) GTEST_SKIP() << "127.0.0.2 cannot be bound here";
  server->start();
  // The full RFC 3489 run: tests I, II (change IP), III (change port), I against
  // CHANGED-ADDRESS. Loopback has no NAT and no filter, so every test must pass.
  std::string out =
      run("timeout 30 " + std::string(kStunClient) + " " + server->primary_endpoint().to_string() +
          " -v -p " + std::to_string(free_udp_port()));
  EXPECT_NE(out.find("test I = 1"), std::string::npos) << out;
  EXPECT_NE(out.find("test II = 1"), std::string::npos) << out;
  EXPECT_NE(out.find("test III = 1"), std::string::npos) << out;
  EXPECT_NE(out.find("test I(2) = 1"), std::string::npos) << out;
  EXPECT_NE(out.find("Primary: Open"), std::string::npos) << out;
}

// --- discover_nat() against our own server. ---

stun::NatReport discover(asio::io_context& io, const Endpoint& server, stun::ProbeConfig cfg = {}) {
  auto fut = asio::co_spawn(io, discover_nat(io.get_executor(), server, cfg), asio::use_future);
  return fut.get();
}

TEST(NatDiscovery, LoopbackWithRfc5780ServerHasNoNat) {
  IoThread t;
  auto server = make_rfc5780_server(t.io);
  if (!server) GTEST_SKIP() << "127.0.0.2 cannot be bound here";
  server->start();
  auto start = std::chrono::steady_clock::now();
  stun::NatReport r = discover(t.io, server->primary_endpoint());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // every test answered at once
  EXPECT_EQ(r.mapping, stun::NatBehaviour::no_nat) << stun::to_string(r.mapping);
  EXPECT_EQ(r.filtering, stun::NatBehaviour::endpoint_independent) << stun::to_string(r.filtering);
  EXPECT_TRUE(r.rfc5780_supported);
  EXPECT_EQ(r.local_endpoint.address_string(), "127.0.0.1");
  EXPECT_NE(r.local_endpoint.port, 0);
  ASSERT_TRUE(r.public_endpoint);
  EXPECT_EQ(*r.public_endpoint, r.local_endpoint);
  EXPECT_EQ(stun::nat_type_summary(r), "none");
}

TEST(NatDiscovery, LoopbackWithPlainServer) {
  IoThread t;
  StunServer server(t.io, ep("127.0.0.1:0"));
  server.start();
  stun::NatReport r = discover(t.io, server.primary_endpoint());
  EXPECT_EQ(r.mapping, stun::NatBehaviour::no_nat);
  EXPECT_EQ(r.filtering, stun::NatBehaviour::unknown);
  EXPECT_FALSE(r.rfc5780_supported);
  EXPECT_EQ(r.public_endpoint, r.local_endpoint);
  EXPECT_EQ(stun::nat_type_summary(r), "none");
}

TEST(NatDiscovery, SilentServerMeansUdpBlockedWithinSeconds) {
  IoThread t;
  // Bound but never read: datagrams vanish, like behind a firewall dropping UDP.
  udp::socket silent(t.io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto start = std::chrono::steady_clock::now();
  stun::NatReport r = discover(t.io, Endpoint::v4(0x7f000001, silent.local_endpoint().port()));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.mapping, stun::NatBehaviour::udp_blocked);
  EXPECT_EQ(r.filtering, stun::NatBehaviour::udp_blocked);
  EXPECT_FALSE(r.public_endpoint);
  EXPECT_EQ(stun::nat_type_summary(r), "udp-blocked");
  EXPECT_GE(took, 1500ms);
  EXPECT_LT(took, 3s);
}

}  // namespace
}  // namespace torii::net

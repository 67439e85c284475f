// StunServer: one receive coroutine per bound socket, all on one strand so the Responder (not
// thread-safe) needs no lock; replies are sent synchronously from the socket the Responder chose.
#include "net/stun_server.hpp"
#include "net/asio_endpoint.hpp"

#include <array>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/stun/responder.hpp"

// GCC 12 flags every Asio awaitable coroutine frame with a false -Wmismatched-new-delete
// (GCC PR middle-end/109224); the frame's operator new and delete do match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace torii::net {
namespace {

namespace asio = boost::asio;
using udp = asio::ip::udp;

udp::endpoint to_udp(const Endpoint& e) {
  return to_asio<udp>(e);
}
Endpoint from_udp(const udp::endpoint& u) {
  return from_asio(u);
}

// Large enough for any Binding request a real client sends; longer datagrams arrive truncated,
// fail the length check and are counted as malformed.
constexpr size_t kMaxDatagram = 2048;

}  // namespace

struct StunServer::State {
  explicit State(asio::io_context& io) : strand(asio::make_strand(io)) {}

  asio::strand<asio::io_context::executor_type> strand;
  std::array<std::optional<udp::socket>, stun::kMaxSockets> sockets;
  std::optional<stun::Responder> responder;
  Endpoint primary;
  std::optional<Endpoint> alternate;
  bool started = false;  // touched only by the owner thread
  bool stopped = false;  // touched only on the strand
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> dropped{0};

  // Binds one socket; the message names the address because an operator reads it in a log.
  udp::socket& bind(size_t index, const Endpoint& where) {
    auto& s = sockets[index].emplace(strand);
    boost::system::error_code ec;
    udp::endpoint ep = to_udp(where);
    s.open(ep.protocol(), ec);
    // v6-only so that "[::]:3478" and "0.0.0.0:3478" can both be configured.
    if (!ec && !where.is_v4()) s.set_option(asio::ip::v6_only(true), ec);
    if (!ec) s.bind(ep, ec);
    // Replies are sent synchronously; a full send buffer must drop a reply, not stall the loop.
    if (!ec) s.non_blocking(true, ec);
    if (ec) {
      throw std::runtime_error("cannot bind STUN on " + where.to_string() + ": " + ec.message());
    }
    return s;
  }

  Endpoint bound(size_t index) const { return from_udp(sockets[index]->local_endpoint()); }

  static asio::awaitable<void> receive_loop(std::shared_ptr<State> st, size_t index);
};

StunServer::StunServer(asio::io_context& io, Endpoint primary, std::optional<Endpoint> alt)
    : state_(std::make_shared<State>(io)) {
  auto& st = *state_;
  if (alt && alt->family != primary.family) {
    throw std::invalid_argument("STUN alternate address " + alt->to_string() +
                                " is not of the same family as " + primary.to_string());
  }
  st.bind(stun::kPrimaryIpPrimaryPort, primary);
  st.primary = st.bound(stun::kPrimaryIpPrimaryPort);
  if (alt) {
    bool other_ip = !alt->same_address(primary);
    // Port 0 means "some other port", which is always a different one.
    bool other_port = alt->port == 0 || alt->port != primary.port;
    Endpoint resolved_alt = *alt;
    resolved_alt.port = st.primary.port;
    if (other_ip) {
      Endpoint e = *alt;
      e.port = st.primary.port;
      st.bind(stun::kAltIpPrimaryPort, e);
    }
    if (other_port) {
      Endpoint e = st.primary;
      e.port = alt->port;
      st.bind(stun::kPrimaryIpAltPort, e);
      resolved_alt.port = st.bound(stun::kPrimaryIpAltPort).port;
    }
    if (other_ip && other_port) st.bind(stun::kAltIpAltPort, resolved_alt);
    if (other_ip || other_port) st.alternate = resolved_alt;
  }
  st.responder.emplace(st.primary, st.alternate);
}

StunServer::~StunServer() {
  stop();
}

void StunServer::start() {
  if (state_->started) return;
  state_->started = true;
  for (size_t i : state_->responder->socket_indexes()) {
    spdlog::info("stun: serving on {}", state_->responder->socket_endpoint(i).to_string());
    asio::co_spawn(state_->strand, State::receive_loop(state_, i), asio::detached);
  }
}

void StunServer::stop() {
  // On the strand, because the receive coroutines use the sockets there. Holding the state keeps
  // it valid even if this object is gone when the handler runs.
  asio::dispatch(state_->strand, [st = state_] {
    st->stopped = true;
    for (auto& s : st->sockets) {
      boost::system::error_code ec;
      if (s) s->close(ec);
    }
  });
}

StunServer::Stats StunServer::stats() const {
  return Stats{state_->requests.load(std::memory_order_relaxed),
               state_->answered.load(std::memory_order_relaxed),
               state_->dropped.load(std::memory_order_relaxed)};
}

Endpoint StunServer::primary_endpoint() const {
  return state_->primary;
}
std::optional<Endpoint> StunServer::alternate_endpoint() const {
  return state_->alternate;
}

asio::awaitable<void> StunServer::State::receive_loop(std::shared_ptr<State> st, size_t index) {
  std::array<uint8_t, kMaxDatagram> buf;
  udp::endpoint from;
  udp::socket& sock = *st->sockets[index];
  for (;;) {
    auto [ec, n] = co_await sock.async_receive_from(asio::buffer(buf), from,
                                                    asio::as_tuple(asio::use_awaitable));
    if (st->stopped || !sock.is_open() || ec == asio::error::operation_aborted) co_return;
    // Other errors (e.g. an ICMP error reported on the socket) concern one earlier datagram,
    // not the service: keep serving.
    if (ec) continue;
    st->requests.fetch_add(1, std::memory_order_relaxed);
    auto reply = st->responder->handle(buf.data(), n, from_udp(from), index);
    if (!reply) {
      st->dropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    boost::system::error_code send_ec;
    st->sockets[reply->socket_index]->send_to(asio::buffer(reply->bytes), from, 0, send_ec);
    if (send_ec) {
      st->dropped.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("stun: reply to {} failed: {}", from_udp(from).to_string(), send_ec.message());
    } else {
      st->answered.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace torii::net

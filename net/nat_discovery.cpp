// discover_nat(): feeds a NatProbe from one UDP socket, racing each receive against the probe's
// next deadline.
#include "net/nat_discovery.hpp"
#include "net/asio_endpoint.hpp"

#include <array>
#include <chrono>
#include <variant>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

// GCC 12 flags every Asio awaitable coroutine frame with a false -Wmismatched-new-delete
// (GCC PR middle-end/109224); the frame's operator new and delete do match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace torii::net {
namespace {

namespace asio = boost::asio;
using udp = asio::ip::udp;
using namespace asio::experimental::awaitable_operators;

udp::endpoint to_udp(const Endpoint& e) {
  return to_asio<udp>(e);
}
Endpoint from_udp(const udp::endpoint& u) {
  return from_asio(u);
}

Instant now() {
  return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
}

}  // namespace

asio::awaitable<stun::NatReport> discover_nat(asio::any_io_executor ex, Endpoint server,
                                              stun::ProbeConfig cfg) {
  stun::NatReport unreachable;
  unreachable.mapping = stun::NatBehaviour::udp_blocked;
  unreachable.filtering = stun::NatBehaviour::udp_blocked;

  const udp::endpoint server_ep = to_udp(server);
  boost::system::error_code ec;

  // The NAT-free check compares the mapped address with ours, so "ours" must be the concrete
  // source address towards the server, not 0.0.0.0. Connecting a UDP socket sends nothing; it
  // only makes the kernel pick the route and source address. The probe socket itself stays
  // unconnected because replies to the CHANGE-REQUEST tests come from other addresses.
  udp::endpoint local;
  {
    udp::socket route(ex);
    route.open(server_ep.protocol(), ec);
    if (!ec) route.connect(server_ep, ec);
    if (!ec) local = route.local_endpoint(ec);
    if (ec) co_return unreachable;  // no route to the server at all
  }
  udp::socket sock(ex);
  local.port(0);
  sock.open(server_ep.protocol(), ec);
  if (!ec) sock.bind(local, ec);
  if (!ec) local = sock.local_endpoint(ec);
  if (ec) co_return unreachable;
  unreachable.local_endpoint = from_udp(local);

  stun::NatProbe probe(server, from_udp(local), std::move(cfg));
  auto send_all = [&](const stun::ProbeOutput& out) {
    for (const auto& d : out.send) {
      boost::system::error_code send_ec;
      // A failed send (e.g. no route to the alternate address) is just a lost datagram to the
      // probe, which then times the test out.
      sock.send_to(asio::buffer(d.bytes), to_udp(d.to), 0, send_ec);
    }
    return out.deadline;
  };

  asio::steady_timer timer(ex);
  std::array<uint8_t, 2048> buf;
  udp::endpoint from;
  auto deadline = send_all(probe.start(now()));
  while (!probe.done() && deadline) {
    timer.expires_at(*deadline);
    auto result = co_await (
        sock.async_receive_from(asio::buffer(buf), from, asio::as_tuple(asio::use_awaitable)) ||
        timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (result.index() == 0) {
      auto [rec, n] = std::get<0>(result);
      if (!rec) {
        deadline = send_all(probe.on_response(now(), buf.data(), n, from_udp(from)));
        continue;
      }
      // A receive error (e.g. a reported ICMP error) could repeat at once; sit out the rest of
      // the current wait so it cannot spin.
      timer.expires_at(*deadline);
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    deadline = send_all(probe.on_tick(now()));
  }
  co_return probe.report();
}

}  // namespace torii::net

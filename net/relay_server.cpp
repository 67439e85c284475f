// UDP tunnel relay (see relay_server.hpp). A6, A9, A11.
#include "net/relay_server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

#include "net/asio_endpoint.hpp"

namespace torii::net {

namespace asio = boost::asio;
using udp = asio::ip::udp;

struct RelayServer::State {
  explicit State(asio::io_context& io) : sock(io) {}
  udp::socket sock;
  mutable std::mutex mu;
  p2p::RelayTable table;
  bool stopping = false;
};

namespace {

Instant mono() {
  using namespace std::chrono;
  return Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch()));
}
UnixMs wall() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

asio::awaitable<void> serve(std::shared_ptr<RelayServer::State> st) {
  std::vector<uint8_t> buf(65536);
  udp::endpoint from;
  for (;;) {
    boost::system::error_code ec;
    const size_t n = co_await st->sock.async_receive_from(
        asio::buffer(buf), from, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || st->stopping) co_return;
    if (ec) continue;
    std::array<uint8_t, 32> ack, other_ack;
    std::optional<p2p::RelayTable::Forward> f;
    {
      std::lock_guard lk(st->mu);
      f = st->table.on_datagram(mono(), wall(), from_asio(from), {buf.data(), n}, ack, other_ack);
    }
    if (!f) continue;
    const auto to = to_asio<udp>(f->to);
    if (f->is_ack) {
      st->sock.send_to(asio::buffer(ack), to, 0, ec);
      if (f->other) st->sock.send_to(asio::buffer(other_ack), to_asio<udp>(*f->other), 0, ec);
    } else {
      st->sock.send_to(asio::buffer(buf.data(), n), to, 0, ec);
    }
  }
}

}  // namespace

RelayServer::RelayServer(asio::io_context& io, const Endpoint& listen)
    : st_(std::make_shared<State>(io)) {
  const auto ep = to_asio<udp>(listen);
  boost::system::error_code ec;
  st_->sock.open(ep.protocol(), ec);
  if (!ec) st_->sock.bind(ep, ec);
  if (ec)
    throw std::runtime_error("cannot bind the relay to " + listen.to_string() + ": " +
                             ec.message());
  st_->sock.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
  st_->sock.set_option(asio::socket_base::send_buffer_size(4 << 20), ec);
}

RelayServer::~RelayServer() {
  stop();
}

void RelayServer::start() {
  asio::co_spawn(st_->sock.get_executor(), serve(st_), asio::detached);
}

void RelayServer::stop() {
  st_->stopping = true;
  boost::system::error_code ec;
  st_->sock.close(ec);
}

void RelayServer::open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key) {
  std::lock_guard lk(st_->mu);
  st_->table.open(tunnel_id, key);
}

void RelayServer::close(uint64_t tunnel_id) {
  std::lock_guard lk(st_->mu);
  st_->table.close(tunnel_id);
}

Endpoint RelayServer::local_endpoint() const {
  return from_asio(st_->sock.local_endpoint());
}

p2p::RelayTable::Stats RelayServer::stats() const {
  std::lock_guard lk(st_->mu);
  return st_->table.stats();
}

}  // namespace torii::net

// toriid's UDP tunnel relay (A6 relay fallback): one UDP socket whose forwarding decisions are
// the I/O-free core's (core/p2p/relay_table). The control core opens and closes tunnels on it
// (RelayOpen / RelayClose actions); packets stay end-to-end encrypted (A9).
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <memory>
#include <mutex>

#include "core/endpoint.hpp"
#include "core/p2p/relay_table.hpp"

namespace torii::net {

class RelayServer {
 public:
  RelayServer(boost::asio::io_context& io,
              const Endpoint& listen);  // binds; throws with the address
  ~RelayServer();
  void start();
  void stop();
  void open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key);
  void close(uint64_t tunnel_id);
  Endpoint local_endpoint() const;
  p2p::RelayTable::Stats stats() const;

  struct State;  // relay_server.cpp

 private:
  std::shared_ptr<State> st_;
};

}  // namespace torii::net

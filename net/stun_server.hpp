// UDP STUN service of toriid (requirement A3): binds the server's 1 or 4 UDP sockets and answers
// Binding requests through the I/O-free stun::Responder.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>

#include <boost/asio/io_context.hpp>

#include "core/endpoint.hpp"

namespace torii::net {

class StunServer {
 public:
  // Monotonic counters for Prometheus; requests == answered + dropped once a datagram is done.
  struct Stats {
    uint64_t requests = 0;  // datagrams received
    uint64_t answered = 0;  // replies sent
    uint64_t dropped = 0;   // malformed, not a Binding request, or the reply could not be sent
  };

  // Binds the sockets immediately: `primary` alone, or with `alt` the RFC 5780 set
  // {primary IP, alt IP} x {primary port, alt port} (only 2 sockets if alt shares the IP or the
  // port). Port 0 picks an ephemeral port (the alternate IP then reuses the port chosen for the
  // primary IP, as RFC 5780 requires). Throws std::runtime_error naming the address, e.g.
  // "cannot bind STUN on 0.0.0.0:3478: Address already in use", and std::invalid_argument if
  // `alt` is of another address family.
  StunServer(boost::asio::io_context& io, Endpoint primary, std::optional<Endpoint> alt = {});
  ~StunServer();  // stops
  StunServer(const StunServer&) = delete;
  StunServer& operator=(const StunServer&) = delete;

  // Starts serving on the io_context (which may run on any number of threads: all socket work is
  // serialised on one strand). Idempotent.
  void start();
  // Closes the sockets; pending receives end with operation_aborted. Safe from any thread.
  void stop();

  Stats stats() const;  // safe from any thread

  // Bound addresses, ports resolved if 0 was asked for.
  Endpoint primary_endpoint() const;
  std::optional<Endpoint> alternate_endpoint() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the receive coroutines, which may outlive us
};

}  // namespace torii::net

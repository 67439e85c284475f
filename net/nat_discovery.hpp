// Agent-side NAT discovery (requirement A3): runs the I/O-free stun::NatProbe against toriid's
// STUN service over a real UDP socket and Asio timers.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "core/endpoint.hpp"
#include "core/stun/nat_probe.hpp"

namespace torii::net {

// Probes `server` (the STUN server's primary endpoint) from a fresh UDP socket bound to the
// local address the OS would use towards the server, port chosen by the OS. Never throws for
// network conditions: if nothing answers within cfg.test_timeout (about 1.6 s by default) the
// report says udp-blocked, as it does when there is no route at all. Worst case with an RFC 5780
// server is about 3 * cfg.test_timeout plus round trips.
boost::asio::awaitable<stun::NatReport> discover_nat(boost::asio::any_io_executor ex,
                                                     Endpoint server, stun::ProbeConfig cfg = {});

}  // namespace torii::net

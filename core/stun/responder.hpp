// I/O-free STUN server logic: turns one received datagram into the reply to send (and from which
// of up to four local sockets), covering RFC 8489 Binding, RFC 5780 CHANGE-REQUEST and RFC 3489.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/endpoint.hpp"

namespace torii::stun {

// Local sockets of a server, indexed so that bit 1 selects the alternate IP and bit 0 the
// alternate port. "Change IP" and "change port" then simply flip a bit, and the RFC 5780
// OTHER-ADDRESS of socket i is socket i ^ 3.
enum SocketIndex : size_t {
  kPrimaryIpPrimaryPort = 0,
  kPrimaryIpAltPort = 1,
  kAltIpPrimaryPort = 2,
  kAltIpAltPort = 3,
};
inline constexpr size_t kMaxSockets = 4;

class Responder {
 public:
  struct Reply {
    std::vector<uint8_t> bytes;
    size_t socket_index = 0;  // send from this socket, to the request's source endpoint
  };
  struct Counters {
    uint64_t requests = 0;           // datagrams handed to handle()
    uint64_t answered = 0;           // replies produced (success and error responses)
    uint64_t dropped_malformed = 0;  // not parseable as STUN
    uint64_t dropped_other = 0;      // valid STUN we do not answer (see handle())
  };

  // `alternate` may differ from `primary` in IP, port or both. The sockets that exist are those
  // whose address differs: only both differing gives all four and full RFC 5780 support
  // (OTHER-ADDRESS / CHANGED-ADDRESS are only advertised then, as RFC 5780 6 requires).
  // An alternate of a different address family than `primary` is ignored.
  explicit Responder(Endpoint primary, std::optional<Endpoint> alternate = std::nullopt,
                     std::string software = "torii");

  // Whether the socket with this index is part of the configuration.
  bool has_socket(size_t index) const;
  // Local endpoint of socket `index` (requires has_socket(index)).
  const Endpoint& socket_endpoint(size_t index) const { return sockets_[index]; }
  // Indexes of the configured sockets, primary first.
  std::vector<size_t> socket_indexes() const;
  // Both an alternate IP and an alternate port: RFC 5780 behaviour discovery is possible.
  bool full_rfc5780() const { return has_socket(kAltIpAltPort); }

  // Handles one datagram that arrived on socket `socket_index` from `source`. Returns the reply,
  // or nullopt to drop it silently: not STUN / malformed, not a Binding request, unknown socket,
  // or an RFC 3489 request asking for a change this server cannot make (see responder.cpp).
  // Never throws on any input.
  std::optional<Reply> handle(const uint8_t* data, size_t size, const Endpoint& source,
                              size_t socket_index);

  const Counters& counters() const { return counters_; }

 private:
  std::array<Endpoint, kMaxSockets> sockets_{};
  std::array<bool, kMaxSockets> present_{};
  std::string software_;
  Counters counters_;
};

}  // namespace torii::stun

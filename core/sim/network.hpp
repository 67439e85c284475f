// An in-process simulated UDP network with RFC 4787 NAT models and simulated time, so that NAT
// traversal between peers can be tested fast and deterministically (requirements A6, A11).
//
// A small discrete-event simulator: hosts and NATs live in address realms (the public internet,
// or the LAN of one NAT), datagrams and timers are events ordered by (time, insertion order),
// and nothing reads a clock or touches a socket (style.md 1).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/endpoint.hpp"
#include "core/time.hpp"

namespace torii::sim {

// RFC 4787 4.1: what a NAT keys a mapping on besides the internal endpoint.
enum class Mapping { endpoint_independent, address_dependent, address_and_port_dependent };
// RFC 4787 5: which inbound sources a mapping admits.
enum class Filtering { endpoint_independent, address_dependent, address_and_port_dependent };
// How a new mapping's external port is chosen. preserving: the internal port if free, else
// sequential. sequential: the next free port counting up from first_port (wrapping to
// first_port after 65535). random: seeded random in 1024..65535.
enum class PortAllocation { preserving, sequential, random };

struct NatConfig {
  Mapping mapping = Mapping::endpoint_independent;
  Filtering filtering = Filtering::address_and_port_dependent;
  PortAllocation allocation = PortAllocation::sequential;
  bool hairpin = false;
  // A mapping lives this long after its last outbound packet (inbound traffic does not refresh
  // it, RFC 4787 REQ-6 leaves that optional); at exactly last + timeout it is gone.
  Duration mapping_timeout = std::chrono::seconds(120);
  uint16_t first_port = 40000;  // must be > 0
  bool block_udp = false;       // drops all UDP crossing the NAT (the "UDP blocked" case)
};

// "endpoint-independent", "address-dependent", "address-and-port-dependent".
const char* to_string(Mapping m);
const char* to_string(Filtering f);
// "preserving", "sequential", "random".
const char* to_string(PortAllocation a);
// A short name: the cone name for endpoint-independent mapping ("full-cone", "restricted",
// "port-restricted"), "symmetric" for any other mapping, "udp-blocked". Anything that differs
// from the classic type is appended so that distinct configs get distinct names:
// "-adm" (address-dependent mapping), "-eif" / "-adf" (symmetric with looser filtering),
// "-random" / "-preserving" (allocation), "-hairpin". Examples: "symmetric-random",
// "port-restricted-preserving-hairpin", "symmetric-adm-adf". Contains '-', which GoogleTest
// parameter names do not allow.
std::string short_name(const NatConfig& cfg);

using NodeId = uint32_t;
// `local` is the receiving host's own endpoint the datagram was addressed to (after any NAT
// translation), `from` the source as the host sees it (translated by NATs on the way).
using Receiver = std::function<void(Instant now, const Endpoint& local, const Endpoint& from,
                                    std::span<const uint8_t> data)>;

class Network {
 public:
  struct Stats {
    uint64_t sent = 0;                // send() calls
    uint64_t delivered = 0;           // handed to a receiver
    uint64_t dropped_filter = 0;      // NAT inbound filtering, or block_udp
    uint64_t dropped_no_mapping = 0;  // to a NAT port without a live mapping (or ports exhausted)
    uint64_t dropped_loss = 0;        // random loss (set_loss)
    uint64_t dropped_no_route = 0;    // unknown address, hairpin disabled, host without receiver
    uint64_t dropped_link_down = 0;   // sender, receiver or a NAT on the path is down
    uint64_t hairpinned = 0;          // looped back by a NAT (before its inbound filtering)
  };

  explicit Network(uint64_t seed = 1, Duration one_way_latency = std::chrono::milliseconds(10));
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // A NAT whose outside (public) address is `public_address`, on the public internet or, for
  // carrier-grade NAT, on the LAN of `behind_nat`. Throws std::invalid_argument on an
  // unparsable or duplicate address, a bad behind_nat or first_port == 0.
  NodeId add_nat(std::string name, const std::string& public_address, NatConfig cfg,
                 std::optional<NodeId> behind_nat = std::nullopt);
  // A host on the public internet (no NAT) or behind a NAT on that NAT's LAN (private address,
  // e.g. "192.168.1.10"). Private addresses are scoped to their LAN: the same address may
  // exist behind several NATs. Throws like add_nat.
  NodeId add_host(std::string name, const std::string& address,
                  std::optional<NodeId> behind_nat = std::nullopt);
  // Gives a host a further address in the same realm (a STUN server's alternate IP).
  void add_address(NodeId host, const std::string& address);
  void set_receiver(NodeId host, Receiver r);

  // Host sends a datagram from its (first) address and local_port to dst; delivered after the
  // one-way latency if it crosses the public internet, else after the LAN latency (peers
  // behind the same NAT talk directly; hairpinned packets never leave the LAN). A packet from
  // inside to its NAT's public address is hairpinned if enabled, else dropped. NAT outbound
  // translation happens now, inbound translation and filtering when the packet arrives.
  void send(NodeId host, uint16_t local_port, const Endpoint& dst, std::span<const uint8_t> data);
  // The same from a chosen local endpoint, which must be one of the host's addresses.
  void send(NodeId host, const Endpoint& local, const Endpoint& dst, std::span<const uint8_t> data);

  Endpoint address_of(NodeId host, uint16_t port) const;  // host's own (private) address
  Endpoint public_address_of(NodeId nat) const;           // port 0
  const std::string& name_of(NodeId node) const;
  // Live (unexpired) mappings of a NAT.
  size_t mapping_count(NodeId nat) const;

  Instant now() const;
  // Runs fn at t (or at now() if t is in the past), after events already queued for that time.
  void at(Instant t, std::function<void()> fn);
  void after(Duration d, std::function<void()> fn);
  bool step();  // runs the next event; false if none
  // Runs every event up to and including t, then sets now = t (never moves time backwards).
  void run_until(Instant t);
  // Runs events while pred() holds and the next event is no later than deadline. Returns true
  // when pred() turned false (now stays at that event's time); false when no event up to the
  // deadline is left while pred() still holds (now = deadline then).
  bool run_while(const std::function<bool()>& pred, Instant deadline);

  // Forgets all mappings of the NAT (reboot / mapping change). Their external ports are never
  // reused, so the next outbound packet gets a new public port under every allocation mode.
  void rebind(NodeId nat);
  // Every datagram that survives outbound processing is lost with probability p, decided by a
  // generator seeded from the network's seed (and independent of NAT port choice).
  void set_loss(double p);
  // A down host sends and receives nothing; a down NAT (its WAN link) passes nothing in or
  // out, while its LAN and hairpinning keep working.
  void set_link_down(NodeId node, bool down);
  void set_lan_latency(Duration d);  // default 1 ms

  const Stats& stats() const;
  // The last trace_limit deliveries and drops, one line each: time, what happened, where,
  // addresses as seen at that point. For failure messages in tests.
  std::string trace() const;
  void set_trace_limit(size_t n);  // default 64; 0 disables tracing

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace torii::sim

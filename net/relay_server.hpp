// toriid's UDP tunnel relay (A6 relay fallback): one UDP socket whose forwarding decisions are
// the I/O-free core's (core/p2p/relay_table). The control core opens and closes tunnels on it
// (RelayOpen / RelayClose actions); packets stay end-to-end encrypted (A9).
//
// Data plane (issue 4): the relay runs on its own thread with its own io_context, so relayed
// traffic never queues in front of the control sessions' keepalives and signaling (A4). When the
// socket is readable it drains it with recvmmsg (kBatch datagrams per call), decides the whole
// batch under one lock of the table, and forwards with sendmmsg. With UDP_GRO a receive slot may
// hold a run of equal-size datagrams from one sender (split by the segment size the kernel
// reports); runs of equal-size datagrams to one destination leave as one UDP_SEGMENT (GSO) send,
// straight from the receive slots (no copy). Either option falls back to plain datagrams when
// the kernel refuses it. No allocation per packet.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/endpoint.hpp"
#include "core/p2p/relay_table.hpp"

namespace torii::net {

class RelayServer {
 public:
  // Every data-plane limit of the relay.
  static constexpr size_t kBatch = 32;            // datagrams per recvmmsg
  static constexpr size_t kSlotBytes = 65536;     // one receive slot: any datagram, or a GRO run
  static constexpr size_t kMaxOut = 1024;         // decided datagrams sent per flush
  static constexpr size_t kMaxGsoSegments = 64;   // UDP_MAX_SEGMENTS of older kernels
  static constexpr size_t kMaxGsoBytes = 65000;   // one GSO send stays below the 64 KiB IP limit
  static constexpr size_t kMaxSendsPerCall = 64;  // messages per sendmmsg

  struct IoStats {
    bool gro = false, gso = false;  // offloads in use
    uint64_t recv_calls = 0;        // recvmmsg calls that returned datagrams
    uint64_t datagrams_in = 0;      // after GRO splitting
    uint64_t send_calls = 0;        // sendmmsg calls
    uint64_t gso_sends = 0;         // datagrams sent inside UDP_SEGMENT runs
    uint64_t send_errors = 0;       // datagrams the kernel refused (dropped, counted)
    uint64_t truncated = 0;         // datagrams larger than a slot (dropped)
  };

  explicit RelayServer(const Endpoint& listen);  // binds; throws with the address
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;
  // Starts the relay thread; stop() ends and joins it (idempotent). Callable from any thread.
  void start();
  void stop();
  // From the control plane's threads: one short lock of the table each.
  void open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key);
  void close(uint64_t tunnel_id);
  Endpoint local_endpoint() const;
  p2p::RelayTable::Stats stats() const;
  IoStats io_stats() const;
  // CPU time of the relay thread so far (CLOCK_THREAD_CPUTIME of that thread; 0 before start).
  double thread_cpu_seconds() const;
  // Tests: turn the offloads off before start() to exercise the plain path.
  void disable_offloads();

  struct State;  // relay_server.cpp

 private:
  std::unique_ptr<State> st_;
};

}  // namespace torii::net

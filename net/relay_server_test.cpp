// Loopback tests for toriid's UDP relay adapter (A6 relay, A11; issue 4 data plane): binds and
// their acks, bursts forwarded complete and in order through the batched path, with and without
// the UDP GRO/GSO offloads, a GSO run from a sender split back into datagrams, drops counted,
// and open/close from another thread while traffic flows.
#include "net/relay_server.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "core/tunnel/packet.hpp"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace torii::net {
namespace {

using namespace std::chrono_literals;

const std::array<uint8_t, 32> kKey = [] {
  std::array<uint8_t, 32> k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(i * 5 + 1);
  return k;
}();
constexpr uint64_t kTunnel = 0x1122334455667788;

UnixMs wall_now() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

sockaddr_in to_sin(const Endpoint& e) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(e.port);
  std::memcpy(&a.sin_addr, e.addr.data(), 4);
  return a;
}

// A device's tunnel socket on 127.0.0.1, blocking with poll timeouts.
struct Peer {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Peer() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const int buf = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  }
  ~Peer() { ::close(fd); }
  void send(std::span<const uint8_t> b, const Endpoint& to) {
    auto a = to_sin(to);
    ASSERT_EQ(::sendto(fd, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a),
              ssize_t(b.size()));
  }
  // One sendmsg with UDP_SEGMENT: the kernel cuts `run` into `seg`-byte datagrams.
  bool send_gso(const std::vector<uint8_t>& run, uint16_t seg, const Endpoint& to) {
    auto a = to_sin(to);
    iovec iov{const_cast<uint8_t*>(run.data()), run.size()};
    alignas(cmsghdr) uint8_t ctl[CMSG_SPACE(sizeof(uint16_t))]{};
    msghdr h{};
    h.msg_name = &a;
    h.msg_namelen = sizeof a;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = ctl;
    h.msg_controllen = sizeof ctl;
    auto* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    std::memcpy(CMSG_DATA(c), &seg, sizeof seg);
    return ::sendmsg(fd, &h, 0) == ssize_t(run.size());
  }
  std::optional<std::vector<uint8_t>> receive(int timeout_ms = 2000) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    std::vector<uint8_t> b(70000);
    const ssize_t n = ::recv(fd, b.data(), b.size(), 0);
    if (n < 0) return std::nullopt;
    b.resize(size_t(n));
    return b;
  }
};

std::vector<uint8_t> bind_packet(uint8_t side) {
  auto b = tunnel::make_relay_bind(kKey, kTunnel, side, uint64_t(wall_now()));
  return {b.begin(), b.end()};
}

// relay_data frame from `side`, `len` bytes, payload = sequence number then a pattern.
std::vector<uint8_t> data_packet(uint8_t side, uint32_t seq, size_t len = 1200,
                                 uint64_t tunnel = kTunnel) {
  std::vector<uint8_t> p(len);
  tunnel::write_header({tunnel::PacketType::relay_data, 0, side, 0, tunnel}, p.data());
  std::memcpy(p.data() + tunnel::kHeaderSize, &seq, sizeof seq);
  for (size_t i = tunnel::kHeaderSize + 4; i < len; ++i) p[i] = uint8_t(seq + i);
  return p;
}

struct Bound {
  std::unique_ptr<RelayServer> relay;
  Endpoint at;
  Peer a, b;
};

// A relay with one open tunnel, A bound as side 0 and B as side 1; both acks checked.
void bind_both(Bound& x, bool offloads) {
  x.relay = std::make_unique<RelayServer>(*Endpoint::parse("127.0.0.1:0"));
  if (!offloads) x.relay->disable_offloads();
  x.relay->open(kTunnel, kKey);
  x.relay->start();
  x.at = x.relay->local_endpoint();
  ASSERT_NE(x.at.port, 0);
  x.a.send(bind_packet(0), x.at);
  EXPECT_FALSE(x.a.receive(200)) << "a bind is acknowledged only once both sides are bound";
  x.b.send(bind_packet(1), x.at);
  auto ack_b = x.b.receive();
  auto ack_a = x.a.receive();
  ASSERT_TRUE(ack_a && ack_b);
  EXPECT_TRUE(tunnel::verify_relay_bind_ack(kKey, *ack_a));
  EXPECT_TRUE(tunnel::verify_relay_bind_ack(kKey, *ack_b));
}

class RelayServerPaths : public ::testing::TestWithParam<bool> {};

TEST_P(RelayServerPaths, BurstsArriveCompleteAndInOrder) {
  Bound x;
  ASSERT_NO_FATAL_FAILURE(bind_both(x, GetParam()));
  constexpr uint32_t kN = 500;     // many batches; sizes vary so GSO runs end and restart
  constexpr uint32_t kChunk = 50;  // bounded bursts: unprivileged socket buffers are ~200 KiB
  for (uint32_t c = 0; c < kN; c += kChunk) {
    for (uint32_t i = c; i < c + kChunk; ++i)
      x.a.send(data_packet(0, i, i % 7 == 6 ? 300 : 1200), x.at);
    for (uint32_t i = c; i < c + kChunk; ++i) {
      auto p = x.b.receive();
      ASSERT_TRUE(p) << "datagram " << i << " not relayed";
      ASSERT_EQ(*p, data_packet(0, i, i % 7 == 6 ? 300 : 1200)) << "datagram " << i;
    }
  }
  x.b.send(data_packet(1, 7), x.at);  // and back
  auto back = x.a.receive();
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, data_packet(1, 7));
  const auto s = x.relay->stats();
  EXPECT_EQ(s.forwarded, kN + 1);
  EXPECT_EQ(s.binds, 2u);
  const auto io = x.relay->io_stats();
  EXPECT_EQ(io.send_errors, 0u);
  EXPECT_EQ(io.truncated, 0u);
  EXPECT_EQ(io.datagrams_in, kN + 3);  // + both binds
  if (!GetParam()) {
    EXPECT_FALSE(io.gro);
    EXPECT_FALSE(io.gso);
    EXPECT_EQ(io.gso_sends, 0u);
  }
}

TEST_P(RelayServerPaths, GsoRunFromASenderIsRelayedAsSeparateDatagrams) {
  Bound x;
  ASSERT_NO_FATAL_FAILURE(bind_both(x, GetParam()));
  constexpr uint32_t kSegs = 40;
  constexpr size_t kSeg = 1000;
  std::vector<uint8_t> run;
  for (uint32_t i = 0; i < kSegs; ++i) {
    auto p = data_packet(0, i, i + 1 == kSegs ? 500 : kSeg);  // the last one shorter
    run.insert(run.end(), p.begin(), p.end());
  }
  if (!x.a.send_gso(run, kSeg, x.at)) GTEST_SKIP() << "no UDP_SEGMENT on this kernel";
  for (uint32_t i = 0; i < kSegs; ++i) {
    auto p = x.b.receive();
    ASSERT_TRUE(p) << "segment " << i << " not relayed";
    ASSERT_EQ(*p, data_packet(0, i, i + 1 == kSegs ? 500 : kSeg)) << "segment " << i;
  }
  const auto io = x.relay->io_stats();
  EXPECT_EQ(io.datagrams_in, kSegs + 2);
  EXPECT_EQ(x.relay->stats().forwarded, kSegs);
  if (io.gro) {
    EXPECT_LT(io.recv_calls, kSegs) << "with GRO the run arrives in few receives";
    if (io.gso) {  // counted after sendmmsg returns, which may be after B has the datagrams
      bool gso_seen = false;
      for (int i = 0; i < 200 && !gso_seen; ++i) {
        gso_seen = x.relay->io_stats().gso_sends > 0;
        if (!gso_seen) std::this_thread::sleep_for(5ms);
      }
      EXPECT_TRUE(gso_seen) << "the run leaves as GSO sends";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Offloads, RelayServerPaths, ::testing::Values(true, false),
                         [](const auto& i) { return i.param ? "GroGso" : "Plain"; });

TEST(RelayServer, DropsWhatIsNotBoundAndAnswersNothing) {
  Bound x;
  ASSERT_NO_FATAL_FAILURE(bind_both(x, true));
  Peer stranger;
  stranger.send(data_packet(0, 1), x.at);                     // not the bound endpoint
  stranger.send(data_packet(0, 2, 1200, kTunnel + 1), x.at);  // unknown tunnel
  stranger.send(std::vector<uint8_t>{1, 2, 3}, x.at);         // malformed
  EXPECT_FALSE(stranger.receive(200));
  EXPECT_FALSE(x.b.receive(100));
  x.relay->close(kTunnel);
  x.a.send(data_packet(0, 3), x.at);  // closed tunnel
  EXPECT_FALSE(x.b.receive(200));
  const auto s = x.relay->stats();
  EXPECT_EQ(s.forwarded, 0u);
  EXPECT_EQ(s.dropped_unbound, 3u);
  EXPECT_EQ(s.dropped_malformed, 1u);
}

// The control plane opens and closes tunnels from its own threads while the relay thread
// forwards (one lock per batch; run under the tsan preset to check the locking).
TEST(RelayServer, OpenCloseFromAnotherThreadWhileForwarding) {
  Bound x;
  ASSERT_NO_FATAL_FAILURE(bind_both(x, true));
  std::atomic<bool> done{false};
  std::thread control([&] {
    for (uint64_t t = 1; !done; ++t) {
      x.relay->open(1000 + t % 50, kKey);
      x.relay->close(1000 + (t + 25) % 50);
      (void)x.relay->stats();
    }
  });
  constexpr uint32_t kN = 300;
  uint32_t got = 0;
  for (uint32_t c = 0; c < kN; c += 30) {
    for (uint32_t i = c; i < c + 30; ++i) x.a.send(data_packet(0, i), x.at);
    for (uint32_t i = c; i < c + 30 && x.b.receive(1000); ++i) ++got;
  }
  done = true;
  control.join();
  EXPECT_EQ(got, kN);
  x.relay->stop();
  x.relay->stop();  // idempotent
}

}  // namespace
}  // namespace torii::net

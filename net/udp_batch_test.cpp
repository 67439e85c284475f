// Batched UDP I/O on loopback (issue 4): runs of datagrams sent with and without UDP GSO arrive
// intact, in order and with their own sizes, with and without UDP GRO on the receiver, and
// datagrams to several destinations in one batch reach each.
#include "net/udp_batch.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace torii::net {
namespace {

struct Sock {
  int fd = -1;
  uint16_t port = 0;
  Sock() {
    fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    int big = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin6_port);
  }
  ~Sock() { ::close(fd); }
  Endpoint v4() const { return *Endpoint::parse("127.0.0.1:" + std::to_string(port)); }
};

std::vector<uint8_t> datagram(size_t n, int tag) {
  std::vector<uint8_t> d(n);
  for (size_t i = 0; i < n; ++i) d[i] = uint8_t(tag * 31 + i);
  return d;
}

std::vector<std::vector<uint8_t>> drain(UdpRx& rx, int fd, size_t want) {
  std::vector<std::vector<uint8_t>> got;
  for (int i = 0; i < 200 && got.size() < want; ++i) {
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 10);
    rx.receive(
        [&](const Endpoint&, std::span<uint8_t> d) { got.emplace_back(d.begin(), d.end()); });
  }
  return got;
}

class UdpBatch : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(UdpBatch, RunsArriveIntactInOrder) {
  const auto [gso, gro] = GetParam();
  Sock a, b;
  UdpTx tx(a.fd, true, gso);
  UdpRx rx(b.fd, gro);
  std::vector<std::vector<uint8_t>> sent;
  // 100 datagrams of 1432 bytes with a shorter one every 30 (ends a GSO run), then small ones.
  for (int i = 0; i < 110; ++i) {
    const size_t n = i >= 100 ? 60 : i % 30 == 29 ? 700 : 1432;
    sent.push_back(datagram(n, i));
    uint8_t* p = tx.prepare(b.v4(), n);
    std::memcpy(p, sent.back().data(), n);
    tx.commit(n);
  }
  tx.flush();
  EXPECT_EQ(tx.stats().errors, 0u);
  EXPECT_EQ(tx.stats().datagrams, 110u);
  if (tx.gso()) {
    EXPECT_LT(tx.stats().messages, 20u);  // runs, not one message per datagram
  }
  auto got = drain(rx, b.fd, sent.size());
  ASSERT_EQ(got.size(), sent.size());
  EXPECT_EQ(got, sent);
}

INSTANTIATE_TEST_SUITE_P(GsoGro, UdpBatch, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& i) {
                           return std::string(std::get<0>(i.param) ? "gso" : "nogso") + "_" +
                                  (std::get<1>(i.param) ? "gro" : "nogro");
                         });

// A kernel that refuses UDP GSO on this socket (SO_NO_CHECK makes UDP_SEGMENT fail with
// EINVAL): GSO is switched off and every datagram still arrives exactly once.
TEST(UdpBatchFallback, GsoRefusedMidBatchSendsEachDatagramOnce) {
  Sock a, b;
  int one = 1;
  ASSERT_EQ(::setsockopt(a.fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one), 0);
  UdpTx tx(a.fd, true, true);
  UdpRx rx(b.fd, false);
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 50; ++i) {
    // single datagrams first (sent before any GSO message), then runs
    const size_t n = i < 5 ? size_t(100 + i) : 1000;
    sent.push_back(datagram(n, i));
    uint8_t* p = tx.prepare(b.v4(), n);
    std::memcpy(p, sent.back().data(), n);
    tx.commit(n);
  }
  tx.flush();
  EXPECT_FALSE(tx.gso());
  auto got = drain(rx, b.fd, sent.size());
  EXPECT_EQ(got, sent);
}

TEST(UdpBatchMixed, SeveralDestinationsInOneBatch) {
  Sock a, b, c;
  UdpTx tx(a.fd, true, true);
  UdpRx rb(b.fd, true), rc(c.fd, true);
  for (int i = 0; i < 40; ++i) {
    const Sock& to = i % 3 == 0 ? c : b;
    auto d = datagram(1000, i);
    uint8_t* p = tx.prepare(to.v4(), d.size());
    std::memcpy(p, d.data(), d.size());
    tx.commit(d.size());
  }
  tx.flush();
  EXPECT_EQ(drain(rb, b.fd, 26).size(), 26u);
  EXPECT_EQ(drain(rc, c.fd, 14).size(), 14u);
}

TEST(UdpBatchAddr, SockaddrRoundTrip) {
  for (auto text : {"192.0.2.7:4000", "[2001:db8::5]:53"}) {
    const Endpoint e = *Endpoint::parse(text);
    sockaddr_storage sa;
    to_sockaddr(e, true, sa);
    EXPECT_EQ(from_sockaddr(sa), e) << text;  // IPv4-mapped comes back as IPv4
    if (e.is_v4()) {
      EXPECT_EQ(to_sockaddr(e, false, sa), socklen_t(sizeof(sockaddr_in)));
      EXPECT_EQ(from_sockaddr(sa), e);
    }
  }
}

}  // namespace
}  // namespace torii::net

// Batched UDP I/O for the tunnel data plane (issue 4, A9), Linux: recvmmsg with UDP_GRO (the
// kernel hands over runs of same-sized datagrams from one sender as one buffer), sendmmsg with
// UDP_SEGMENT (GSO: one message carries a run of same-sized datagrams to one destination). Each
// offload is probed with setsockopt and dropped at the first error; without them both classes
// still batch with recvmmsg/sendmmsg. The socket stays owned by the caller (an Asio socket).
#pragma once
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/endpoint.hpp"

// glibc's <netinet/udp.h> has them since 2.28/2.29; the kernel's values, for older headers.
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace torii::net {

// sockaddr <-> Endpoint without strings or Asio (per packet). IPv4 destinations become
// IPv4-mapped addresses on an IPv6 socket and mapped sources plain IPv4; to_sockaddr returns
// the address length, 0 for an IPv6 endpoint on an IPv4 socket.
socklen_t to_sockaddr(const Endpoint& e, bool v6_socket, sockaddr_storage& out) noexcept;
Endpoint from_sockaddr(const sockaddr_storage& sa) noexcept;

class UdpTx {
 public:
  static constexpr size_t kMaxDatagrams = 128, kCapacity = 160 * 1024;
  static constexpr size_t kMaxGsoBytes = 65000, kMaxGsoSegments = 64;
  // `gso`: try UDP_SEGMENT. `v6_socket`: the socket is AF_INET6 (dual-stack).
  UdpTx(int fd, bool v6_socket, bool gso);

  // Room for one datagram of up to `need` bytes to `to`; flushes first when full.
  uint8_t* prepare(const Endpoint& to, size_t need) noexcept;
  // The datagram prepared last is `len` bytes (0: forget it).
  void commit(size_t len) noexcept;
  // Sends everything queued (one sendmmsg; waits for room in the socket buffer if it is full).
  void flush() noexcept;
  bool gso() const noexcept { return gso_; }

  struct Stats {
    uint64_t syscalls = 0, messages = 0, datagrams = 0, errors = 0;
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  int fd_;
  bool v6_;
  bool gso_;
  // Not value-initialised: pages become resident only when traffic uses them (agent RSS).
  std::unique_ptr<uint8_t[]> buf_;
  size_t used_ = 0, count_ = 0;
  std::array<uint32_t, kMaxDatagrams> off_{}, len_{};
  std::array<uint16_t, kMaxDatagrams> dest_{};  // index into dests_
  std::array<sockaddr_storage, kMaxDatagrams> dests_{};
  std::array<socklen_t, kMaxDatagrams> dest_len_{};
  size_t ndests_ = 0;
  // One sendmmsg's messages, their iovecs and UDP_SEGMENT control blocks.
  struct alignas(cmsghdr) Ctrl : std::array<uint8_t, CMSG_SPACE(sizeof(uint16_t))> {};
  std::array<mmsghdr, kMaxDatagrams> msgs_{};
  std::array<iovec, kMaxDatagrams> iov_{};
  std::array<Ctrl, kMaxDatagrams> ctrl_{};
  std::array<uint32_t, kMaxDatagrams> first_{};  // first datagram of each message
  Endpoint last_to_{};
  bool have_last_ = false;
  Stats stats_;
  // sendmmsg of all n; returns n, or the index of the message whose GSO the kernel refused
  // (GSO is then off).
  unsigned send_all(struct mmsghdr* msgs, unsigned n) noexcept;
};

class UdpRx {
 public:
  static constexpr size_t kBatch = 8, kBufSize = 65536;
  UdpRx(int fd, bool gro);
  // Reads what is waiting (one recvmmsg, without blocking) and calls f(from, span<uint8_t>) for
  // every datagram, splitting GRO buffers. Returns the number of datagrams (0: none waiting).
  template <class F>
  size_t receive(F&& f) noexcept {
    const int n = recv_batch();
    size_t count = 0;
    for (int i = 0; i < n; ++i) {
      const Endpoint from = from_sockaddr(addrs_[size_t(i)]);
      uint8_t* p = bufs_.get() + size_t(i) * kBufSize;
      size_t left = lens_[size_t(i)];
      const size_t seg = segs_[size_t(i)] ? segs_[size_t(i)] : left;
      while (left > 0) {
        const size_t take = left < seg ? left : seg;
        f(from, std::span<uint8_t>(p, take));
        p += take;
        left -= take;
        ++count;
      }
    }
    return count;
  }
  bool gro() const noexcept { return gro_; }

 private:
  int recv_batch() noexcept;
  int fd_;
  bool gro_;
  std::unique_ptr<uint8_t[]> bufs_;  // kBatch slots; not value-initialised, as UdpTx's
  std::array<sockaddr_storage, kBatch> addrs_{};
  std::array<size_t, kBatch> lens_{}, segs_{};
  std::array<std::array<uint8_t, 64>, kBatch> ctrl_{};
};

}  // namespace torii::net

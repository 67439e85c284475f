// Batched UDP I/O (see udp_batch.hpp). Issue 4, A9.
#include "net/udp_batch.hpp"

#include <poll.h>

#include <cerrno>
#include <cstring>

namespace torii::net {

socklen_t to_sockaddr(const Endpoint& e, bool v6_socket, sockaddr_storage& out) noexcept {
  std::memset(&out, 0, sizeof out);
  if (!e.is_v4() && !v6_socket) return 0;  // unreachable from an IPv4 socket
  if (e.is_v4() && !v6_socket) {
    auto& s = reinterpret_cast<sockaddr_in&>(out);
    s.sin_family = AF_INET;
    s.sin_port = htons(e.port);
    std::memcpy(&s.sin_addr, e.addr.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto& s = reinterpret_cast<sockaddr_in6&>(out);
  s.sin6_family = AF_INET6;
  s.sin6_port = htons(e.port);
  if (e.is_v4()) {  // IPv4-mapped
    s.sin6_addr.s6_addr[10] = 0xff;
    s.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(s.sin6_addr.s6_addr + 12, e.addr.data(), 4);
  } else {
    std::memcpy(s.sin6_addr.s6_addr, e.addr.data(), 16);
  }
  return sizeof(sockaddr_in6);
}

Endpoint from_sockaddr(const sockaddr_storage& sa) noexcept {
  if (sa.ss_family == AF_INET) {
    const auto& s = reinterpret_cast<const sockaddr_in&>(sa);
    std::array<uint8_t, 4> b;
    std::memcpy(b.data(), &s.sin_addr, 4);
    return Endpoint::v4(b, ntohs(s.sin_port));
  }
  const auto& s = reinterpret_cast<const sockaddr_in6&>(sa);
  const uint8_t* a = s.sin6_addr.s6_addr;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a, kMapped, 12) == 0)
    return Endpoint::v4({a[12], a[13], a[14], a[15]}, ntohs(s.sin6_port));
  std::array<uint8_t, 16> b;
  std::memcpy(b.data(), a, 16);
  return Endpoint::v6(b, ntohs(s.sin6_port));
}

// ---------------------------------------------------------------------------------------------

UdpTx::UdpTx(int fd, bool v6_socket, bool gso) : fd_(fd), v6_(v6_socket), gso_(gso) {
  buf_.reset(new uint8_t[kCapacity]);
}

uint8_t* UdpTx::prepare(const Endpoint& to, size_t need) noexcept {
  if (count_ == kMaxDatagrams || used_ + need > kCapacity || ndests_ == kMaxDatagrams) flush();
  if (!have_last_ || !(to == last_to_)) {
    dest_len_[ndests_] = to_sockaddr(to, v6_, dests_[ndests_]);
    ++ndests_;
    last_to_ = to;
    have_last_ = true;
  }
  dest_[count_] = uint16_t(ndests_ - 1);
  off_[count_] = uint32_t(used_);
  return buf_.get() + used_;
}

void UdpTx::commit(size_t len) noexcept {
  if (len == 0) return;
  len_[count_] = uint32_t(len);
  used_ += len;
  ++count_;
}

unsigned UdpTx::send_all(mmsghdr* msgs, unsigned n) noexcept {
  unsigned k = 0;
  while (k < n) {
    const int sent = ::sendmmsg(fd_, msgs + k, n - k, 0);
    ++stats_.syscalls;
    if (sent > 0) {
      k += unsigned(sent);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {  // socket buffer full: wait for room
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    if (gso_ && msgs[k].msg_hdr.msg_controllen > 0 && (errno == EIO || errno == EINVAL)) {
      gso_ = false;  // no UDP GSO on this path or kernel: the rest goes plainly
      return k;
    }
    ++stats_.errors;  // e.g. unreachable: that message is lost, the rest goes on
    ++k;
  }
  return n;
}

void UdpTx::flush() noexcept {
  if (count_ == 0) {
    ndests_ = 0;
    have_last_ = false;
    return;
  }
  auto& msgs = msgs_;
  auto& iov = iov_;
  auto& ctrl = ctrl_;
  // Until everything went: a GSO refusal switches GSO off and resends from the first datagram
  // of the refused message (what went before it is not sent twice).
  for (size_t start = 0; start < count_;) {
    unsigned n = 0;
    for (size_t i = start; i < count_;) {
      const size_t seg = len_[i];
      size_t j = i + 1, total = seg;
      if (gso_) {
        while (j < count_ && dest_[j] == dest_[i] && len_[j] <= seg && j - i < kMaxGsoSegments &&
               total + len_[j] <= kMaxGsoBytes) {
          total += len_[j];
          ++j;
          if (len_[j - 1] < seg) break;  // a shorter datagram ends a GSO run
        }
      }
      mmsghdr& m = msgs[n];
      std::memset(&m, 0, sizeof m);
      iov[n] = {buf_.get() + off_[i], total};
      m.msg_hdr.msg_iov = &iov[n];
      m.msg_hdr.msg_iovlen = 1;
      m.msg_hdr.msg_name = &dests_[dest_[i]];
      m.msg_hdr.msg_namelen = dest_len_[dest_[i]];
      if (j - i > 1) {
        m.msg_hdr.msg_control = ctrl[n].data();
        m.msg_hdr.msg_controllen = ctrl[n].size();
        cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t s = uint16_t(seg);
        std::memcpy(CMSG_DATA(c), &s, sizeof s);
      }
      first_[n] = uint32_t(i);
      ++n;
      i = j;
    }
    stats_.messages += n;
    const unsigned done = send_all(msgs.data(), n);
    start = done < n ? first_[done] : count_;
  }
  stats_.datagrams += count_;
  count_ = used_ = ndests_ = 0;
  have_last_ = false;
}

// ---------------------------------------------------------------------------------------------

UdpRx::UdpRx(int fd, bool gro) : fd_(fd), gro_(false) {
  if (gro) {
    int one = 1;
    gro_ = ::setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  bufs_.reset(new uint8_t[kBatch * kBufSize]);
}

int UdpRx::recv_batch() noexcept {
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  for (size_t i = 0; i < kBatch; ++i) {
    iov[i] = {bufs_.get() + i * kBufSize, kBufSize};
    std::memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &addrs_[i];
    msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    msgs[i].msg_hdr.msg_control = ctrl_[i].data();
    msgs[i].msg_hdr.msg_controllen = ctrl_[i].size();
  }
  int n;
  do {
    n = ::recvmmsg(fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    auto& h = msgs[i].msg_hdr;
    lens_[size_t(i)] = (h.msg_flags & MSG_TRUNC) ? 0 : msgs[i].msg_len;
    segs_[size_t(i)] = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
      if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
        int seg = 0;
        std::memcpy(&seg, CMSG_DATA(c), sizeof seg);
        if (seg > 0) segs_[size_t(i)] = size_t(seg);
      }
  }
  return n;
}

}  // namespace torii::net

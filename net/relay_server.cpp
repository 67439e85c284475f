// UDP tunnel relay (see relay_server.hpp). A6, A9, A11; the batched data plane of issue 4.
// Linux only (recvmmsg/sendmmsg, UDP_GRO/UDP_SEGMENT, eventfd), like the rest of net/.
#include "net/relay_server.hpp"

#include "net/udp_batch.hpp"  // UDP_SEGMENT, UDP_GRO, sockaddr conversions

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace torii::net {

namespace {

Instant mono() {
  using namespace std::chrono;
  return Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch()));
}
UnixMs wall() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

constexpr size_t kCtlBytes = CMSG_SPACE(sizeof(int));  // UDP_GRO in, UDP_SEGMENT (u16) out

}  // namespace

struct RelayServer::State {
  int fd = -1;
  int wake = -1;  // eventfd: stop()
  bool v6 = false;
  std::thread thread;
  std::mutex life;  // start/stop
  bool started = false, stopped = false;

  mutable std::mutex mu;  // the table: one lock per received batch, and open/close/stats
  p2p::RelayTable table;

  // Offloads and counters, written by the relay thread (read by io_stats()).
  std::atomic<bool> gro{false}, gso{false};
  std::atomic<uint64_t> recv_calls{0}, datagrams_in{0}, send_calls{0}, gso_sends{0}, send_errors{0},
      truncated{0};

  // Everything below belongs to the relay thread: preallocated once, reused for every batch.
  std::unique_ptr<uint8_t[]> slots{new uint8_t[kBatch * kSlotBytes]};  // untouched until used
  std::array<mmsghdr, kBatch> rmsg{};
  std::array<iovec, kBatch> riov{};
  std::array<sockaddr_storage, kBatch> rfrom{};
  struct alignas(cmsghdr) Ctl {
    uint8_t b[kCtlBytes];
  };
  std::array<Ctl, kBatch> rctl{};

  struct Out {
    Endpoint to;
    const uint8_t* data;
    uint32_t len;
  };
  std::vector<Out> outs;                      // decided, not yet sent (capacity kMaxOut)
  std::vector<std::array<uint8_t, 32>> acks;  // bind acks, indexed like outs
  std::array<mmsghdr, kMaxSendsPerCall> smsg{};
  std::array<sockaddr_storage, kMaxSendsPerCall> sto{};
  std::array<Ctl, kMaxSendsPerCall> sctl{};
  std::array<std::pair<uint32_t, uint32_t>, kMaxSendsPerCall> sgroup{};  // outs [first, last)
  std::vector<iovec> siov;                                               // capacity kMaxOut

  void run();
  void drain();
  void decide(size_t n);
  void flush();
  size_t send_some(size_t m);
  bool send_one(const Out& o);
};

void RelayServer::State::run() {
  for (;;) {
    pollfd p[2] = {{fd, POLLIN, 0}, {wake, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("relay: poll: {}", std::strerror(errno));
      return;
    }
    if (p[1].revents) return;
    if (p[0].revents) drain();
  }
}

// Reads batches until the socket is empty (at most 64 batches, then poll again: stop() and
// fairness between wakeups stay bounded).
void RelayServer::State::drain() {
  for (int round = 0; round < 64; ++round) {
    const bool with_gro = gro.load(std::memory_order_relaxed);
    for (size_t b = 0; b < kBatch; ++b) {
      riov[b] = {slots.get() + b * kSlotBytes, kSlotBytes};
      auto& h = rmsg[b].msg_hdr;
      h.msg_name = &rfrom[b];
      h.msg_namelen = sizeof(sockaddr_storage);
      h.msg_iov = &riov[b];
      h.msg_iovlen = 1;
      h.msg_control = with_gro ? rctl[b].b : nullptr;
      h.msg_controllen = with_gro ? kCtlBytes : 0;
      h.msg_flags = 0;
    }
    const int n = ::recvmmsg(fd, rmsg.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // EAGAIN: empty; anything else: transient (ICMP errors), poll again
    }
    recv_calls.fetch_add(1, std::memory_order_relaxed);
    decide(size_t(n));
    flush();
    if (size_t(n) < kBatch) return;
  }
}

// The forwarding decisions for one received batch, under one lock of the table (A6 relay).
void RelayServer::State::decide(size_t n) {
  const Instant now = mono();
  const UnixMs w = wall();
  uint64_t in = 0;
  std::unique_lock lk(mu);
  for (size_t b = 0; b < n; ++b) {
    const auto& h = rmsg[b].msg_hdr;
    const size_t len = rmsg[b].msg_len;
    if (h.msg_flags & MSG_TRUNC) {
      truncated.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    size_t seg = len;  // a GRO slot holds equal-size datagrams (the last may be shorter)
    if (h.msg_controllen > 0) {
      for (auto* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int g;
          std::memcpy(&g, CMSG_DATA(c), sizeof g);
          if (g > 0) seg = size_t(g);
        }
      }
    }
    if (seg == 0) seg = 1;  // an empty datagram: dropped as malformed by the table
    const Endpoint from = from_sockaddr(rfrom[b]);
    const uint8_t* base = slots.get() + b * kSlotBytes;
    size_t off = 0;
    do {
      const size_t dlen = std::min(seg, len - off);
      ++in;
      if (outs.size() + 2 > kMaxOut) {  // a flood of tiny GRO segments: send what we have
        lk.unlock();
        flush();
        lk.lock();
      }
      const size_t i = outs.size();
      auto f = table.on_datagram(now, w, from, {base + off, dlen}, acks[i], acks[i + 1]);
      if (f) {
        if (!f->is_ack) {
          outs.push_back({f->to, base + off, uint32_t(dlen)});
        } else {
          outs.push_back({f->to, acks[i].data(), 32});
          if (f->other) outs.push_back({*f->other, acks[i + 1].data(), 32});
        }
      }
      off += dlen;
    } while (off < len);
  }
  lk.unlock();
  datagrams_in.fetch_add(in, std::memory_order_relaxed);
}

// Sends every decided datagram: consecutive ones to the same destination with the same size
// (the last may be shorter) go as one UDP_SEGMENT message when GSO is on, gathered from the
// receive slots by the iovec (no copy); up to kMaxSendsPerCall messages per sendmmsg.
void RelayServer::State::flush() {
  const bool with_gso = gso.load(std::memory_order_relaxed);
  size_t i = 0;
  while (i < outs.size()) {
    size_t m = 0;
    siov.clear();
    while (i < outs.size() && m < kMaxSendsPerCall) {
      const Out& o = outs[i];
      size_t j = i + 1, total = o.len;
      if (with_gso) {
        while (j < outs.size() && j - i < kMaxGsoSegments && outs[j].to == o.to &&
               outs[j].len <= o.len && total + outs[j].len <= kMaxGsoBytes) {
          total += outs[j].len;
          if (outs[j++].len < o.len) break;  // a shorter one ends the run
        }
      }
      const socklen_t alen = to_sockaddr(o.to, v6, sto[m]);
      if (alen == 0) {
        send_errors.fetch_add(j - i, std::memory_order_relaxed);
        i = j;
        continue;
      }
      const size_t first_iov = siov.size();
      for (size_t k = i; k < j; ++k) {
        // Segments of one GRO slot are contiguous: one iovec for the whole run.
        if (siov.size() > first_iov &&
            static_cast<uint8_t*>(siov.back().iov_base) + siov.back().iov_len == outs[k].data)
          siov.back().iov_len += outs[k].len;
        else
          siov.push_back({const_cast<uint8_t*>(outs[k].data), outs[k].len});
      }
      auto& h = smsg[m].msg_hdr;
      h = msghdr{};
      h.msg_name = &sto[m];
      h.msg_namelen = alen;
      h.msg_iov = &siov[first_iov];
      h.msg_iovlen = siov.size() - first_iov;
      if (j - i > 1) {
        h.msg_control = sctl[m].b;
        h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        auto* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t gs = uint16_t(o.len);
        std::memcpy(CMSG_DATA(c), &gs, sizeof gs);
      }
      sgroup[m] = {uint32_t(i), uint32_t(j)};
      ++m;
      i = j;
    }
    send_some(m);
  }
  outs.clear();
}

// sendmmsg of smsg[0, m); a message the kernel refuses is retried once the socket is writable
// (full send buffer), sent as plain datagrams (a GSO run the kernel or the route cannot take),
// or dropped and counted. Returns the messages sent.
size_t RelayServer::State::send_some(size_t m) {
  size_t k = 0, sent = 0;
  int waits = 0;
  while (k < m) {
    const int r = ::sendmmsg(fd, &smsg[k], unsigned(m - k), MSG_DONTWAIT);
    send_calls.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      for (size_t q = k; q < k + size_t(r); ++q)
        if (sgroup[q].second - sgroup[q].first > 1)
          gso_sends.fetch_add(sgroup[q].second - sgroup[q].first, std::memory_order_relaxed);
      k += size_t(r);
      sent += size_t(r);
      continue;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if ((err == EAGAIN || err == ENOBUFS) && waits < 4) {
      // The old relay blocked here (synchronous send_to); wait a little, never forever.
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 5);
      ++waits;
      continue;
    }
    const auto [first, last] = sgroup[k];
    if (last - first > 1) {
      if (err == EIO && gso.exchange(false))  // no checksum offload on the route: GSO off
        spdlog::warn("relay: UDP GSO refused by the kernel ({}); sending plain datagrams",
                     std::strerror(err));
      for (size_t q = first; q < last; ++q)
        if (send_one(outs[q])) ++sent;
    } else {
      send_errors.fetch_add(1, std::memory_order_relaxed);
    }
    ++k;
  }
  return sent;
}

bool RelayServer::State::send_one(const Out& o) {
  sockaddr_storage ss;
  const socklen_t alen = to_sockaddr(o.to, v6, ss);
  if (alen != 0 &&
      ::sendto(fd, o.data, o.len, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), alen) >= 0)
    return true;
  send_errors.fetch_add(1, std::memory_order_relaxed);
  return false;
}

RelayServer::RelayServer(const Endpoint& listen) : st_(std::make_unique<State>()) {
  State& s = *st_;
  s.outs.reserve(kMaxOut);
  s.acks.resize(kMaxOut);
  s.siov.reserve(kMaxOut);
  s.v6 = !listen.is_v4();
  sockaddr_storage ss;
  const socklen_t alen = to_sockaddr(listen, s.v6, ss);
  s.fd = ::socket(s.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s.fd < 0 || ::bind(s.fd, reinterpret_cast<sockaddr*>(&ss), alen) != 0) {
    const std::string why = std::strerror(errno);
    if (s.fd >= 0) ::close(s.fd);
    throw std::runtime_error("cannot bind the relay to " + listen.to_string() + ": " + why);
  }
  s.wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s.wake < 0) {
    ::close(s.fd);
    throw std::runtime_error(std::string("relay: eventfd: ") + std::strerror(errno));
  }
  // Socket buffers: 4 MiB; beyond net.core.[rw]mem_max only with CAP_NET_ADMIN (FORCE).
  const int buf = 4 << 20;
  if (::setsockopt(s.fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
    ::setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  if (::setsockopt(s.fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) != 0)
    ::setsockopt(s.fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  // Offloads, each with a plain fallback: GRO (Linux >= 5.0) coalesces runs of one sender's
  // datagrams into one receive; GSO (>= 4.18) is probed with a zero socket-level segment size.
  const int one = 1, zero = 0;
  s.gro = ::setsockopt(s.fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  s.gso = ::setsockopt(s.fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
}

RelayServer::~RelayServer() {
  stop();
  ::close(st_->wake);
  ::close(st_->fd);
}

void RelayServer::disable_offloads() {
  const int zero = 0;
  ::setsockopt(st_->fd, SOL_UDP, UDP_GRO, &zero, sizeof zero);
  st_->gro = false;
  st_->gso = false;
}

void RelayServer::start() {
  std::lock_guard lk(st_->life);
  if (st_->started || st_->stopped) return;
  st_->started = true;
  spdlog::info("relay: own thread, batches of {}, UDP GRO {}, GSO {}", kBatch,
               st_->gro ? "on" : "off", st_->gso ? "on" : "off");
  st_->thread = std::thread([s = st_.get()] { s->run(); });
}

void RelayServer::stop() {
  std::lock_guard lk(st_->life);
  if (st_->stopped) return;
  st_->stopped = true;
  const uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(st_->wake, &one, sizeof one);
  if (st_->thread.joinable()) st_->thread.join();
}

void RelayServer::open(uint64_t tunnel_id, const std::array<uint8_t, 32>& key) {
  std::lock_guard lk(st_->mu);
  st_->table.open(tunnel_id, key);
}

void RelayServer::close(uint64_t tunnel_id) {
  std::lock_guard lk(st_->mu);
  st_->table.close(tunnel_id);
}

Endpoint RelayServer::local_endpoint() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(st_->fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return from_sockaddr(ss);
}

p2p::RelayTable::Stats RelayServer::stats() const {
  std::lock_guard lk(st_->mu);
  return st_->table.stats();
}

double RelayServer::thread_cpu_seconds() const {
  std::lock_guard lk(st_->life);
  if (!st_->started || st_->stopped) return 0;
  clockid_t cid;
  timespec ts{};
  if (::pthread_getcpuclockid(st_->thread.native_handle(), &cid) != 0 ||
      ::clock_gettime(cid, &ts) != 0)
    return 0;
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

RelayServer::IoStats RelayServer::io_stats() const {
  const State& s = *st_;
  constexpr auto r = std::memory_order_relaxed;
  return {s.gro.load(r),        s.gso.load(r),       s.recv_calls.load(r),  s.datagrams_in.load(r),
          s.send_calls.load(r), s.gso_sends.load(r), s.send_errors.load(r), s.truncated.load(r)};
}

}  // namespace torii::net

// bench_relay: the UDP relay's capacity per core (issue 4, A6 relay), without the agents.
// In one process on loopback: a RelayServer (the real one: its own thread, recvmmsg/sendmmsg,
// GRO/GSO), side 0 of one tunnel bound from socket A, side 1 from socket B; a sender thread
// blasts relay_data frames from A as fast as the kernel takes them, a receiver thread drains B.
// The relay's thread CPU time (pthread_getcpuclockid) against the bytes it forwarded gives
// Gbit/s per relay core at saturation; the sender and receiver threads share the machine's
// cores with it.
//
//   bench_relay [--seconds 5] [--size 1400] [--sender plain|gso] [--offloads on|off] [--json]
//
// --sender plain: sendmmsg of 64 datagrams per call (an agent without GSO); gso: one
// UDP_SEGMENT send of up to 64 KB per call (an agent with GSO; the relay receives the run with
// GRO when --offloads on). --offloads off: the relay without UDP_GRO and UDP_SEGMENT.
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/tunnel/packet.hpp"
#include "net/relay_server.hpp"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

using namespace torii;

namespace {

constexpr uint64_t kTunnel = 42;
const std::array<uint8_t, 32> kKey{1, 2, 3, 4, 5, 6, 7, 8};

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

int udp_socket(sockaddr_in& bound) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  bound = {};
  bound.sin_family = AF_INET;
  bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&bound), sizeof bound) != 0)
    throw std::runtime_error("cannot bind a loopback UDP socket");
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int buf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  timeval tv{0, 200000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool bind_side(int fd, const sockaddr_in& relay, uint8_t side) {
  using namespace std::chrono;
  const auto wall = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  auto b = tunnel::make_relay_bind(kKey, kTunnel, side, uint64_t(wall));
  return ::sendto(fd, b.data(), b.size(), 0, reinterpret_cast<const sockaddr*>(&relay),
                  sizeof relay) == ssize_t(b.size());
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  size_t size = 1400;
  std::string sender = "plain", offloads = "on";
  bool json = false;
  CLI::App app{"bench_relay: UDP relay capacity per core, in process on loopback"};
  app.add_option("--seconds", seconds)->check(CLI::Range(0.5, 600.0));
  app.add_option("--size", size, "relay_data frame bytes")->check(CLI::Range(64, 1472));
  app.add_option("--sender", sender)->check(CLI::IsMember({"plain", "gso"}));
  app.add_option("--offloads", offloads)->check(CLI::IsMember({"on", "off"}));
  app.add_flag("--json", json);
  CLI11_PARSE(app, argc, argv);

  try {
    net::RelayServer relay(*Endpoint::parse("127.0.0.1:0"));
    if (offloads == "off") relay.disable_offloads();
    relay.open(kTunnel, kKey);
    relay.start();
    const Endpoint rel = relay.local_endpoint();
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(rel.port);
    std::memcpy(&to.sin_addr, rel.addr.data(), 4);

    sockaddr_in a_addr, b_addr;
    const int a = udp_socket(a_addr), b = udp_socket(b_addr);
    uint8_t ack[64];
    bind_side(a, to, 0);
    bind_side(b, to, 1);
    if (::recv(a, ack, sizeof ack, 0) <= 0 || ::recv(b, ack, sizeof ack, 0) <= 0)
      throw std::runtime_error("the relay did not acknowledge both binds");

    // One frame, repeated: header (relay_data, side 0, tunnel), then filler.
    std::vector<uint8_t> frame(size, 0x5a);
    tunnel::write_header({tunnel::PacketType::relay_data, 0, 0, 0, kTunnel}, frame.data());
    const size_t per_gso = std::min<size_t>(64, 65000 / size);
    std::vector<uint8_t> run;
    for (size_t i = 0; i < per_gso; ++i) run.insert(run.end(), frame.begin(), frame.end());

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> sent_bytes{0}, recv_bytes{0};
    std::thread rx([&] {
      constexpr size_t kN = 64;
      std::vector<uint8_t> bufs(kN * 2048);
      std::array<mmsghdr, kN> m{};
      std::array<iovec, kN> iov{};
      while (!stop) {
        for (size_t i = 0; i < kN; ++i) {
          iov[i] = {bufs.data() + i * 2048, 2048};
          m[i].msg_hdr = msghdr{};
          m[i].msg_hdr.msg_iov = &iov[i];
          m[i].msg_hdr.msg_iovlen = 1;
        }
        const int n = ::recvmmsg(b, m.data(), kN, MSG_WAITFORONE, nullptr);
        uint64_t got = 0;
        for (int i = 0; i < n; ++i) got += m[size_t(i)].msg_len;
        recv_bytes += got;
      }
    });
    std::thread tx([&] {
      constexpr size_t kN = 64;
      std::array<mmsghdr, kN> m{};
      std::array<iovec, kN> iov{};
      for (size_t i = 0; i < kN; ++i) {
        iov[i] = {frame.data(), frame.size()};
        m[i].msg_hdr.msg_name = &to;
        m[i].msg_hdr.msg_namelen = sizeof to;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
      }
      iovec giov{run.data(), run.size()};
      alignas(cmsghdr) uint8_t ctl[CMSG_SPACE(sizeof(uint16_t))]{};
      msghdr g{};
      g.msg_name = &to;
      g.msg_namelen = sizeof to;
      g.msg_iov = &giov;
      g.msg_iovlen = 1;
      g.msg_control = ctl;
      g.msg_controllen = sizeof ctl;
      auto* c = CMSG_FIRSTHDR(&g);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t seg = uint16_t(size);
      std::memcpy(CMSG_DATA(c), &seg, sizeof seg);
      while (!stop) {
        if (sender == "gso") {
          if (::sendmsg(a, &g, 0) > 0) sent_bytes += run.size();
        } else {
          const int n = ::sendmmsg(a, m.data(), kN, 0);
          if (n > 0) sent_bytes += uint64_t(n) * size;
        }
      }
    });

    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // warm-up
    const auto s0 = relay.stats();
    const auto io0 = relay.io_stats();
    const double c0 = relay.thread_cpu_seconds(), t0 = now_s();
    const uint64_t sb0 = sent_bytes, rb0 = recv_bytes;
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(seconds * 1000)));
    const auto s1 = relay.stats();
    const auto io1 = relay.io_stats();
    const double c1 = relay.thread_cpu_seconds(), t1 = now_s();
    const uint64_t sb1 = sent_bytes, rb1 = recv_bytes;
    stop = true;
    tx.join();
    rx.join();
    relay.stop();
    ::close(a);
    ::close(b);

    const double wall = t1 - t0, cpu = c1 - c0;
    const double fwd_gbit = double(s1.forwarded_bytes - s0.forwarded_bytes) * 8 / wall / 1e9;
    const uint64_t dg = s1.forwarded - s0.forwarded;
    nlohmann::json r{
        {"sender", sender},
        {"offloads", offloads},
        {"gro", io1.gro},
        {"gso", io1.gso},
        {"size", size},
        {"seconds", wall},
        {"offered_gbit_s", double(sb1 - sb0) * 8 / wall / 1e9},
        {"forwarded_gbit_s", fwd_gbit},
        {"received_gbit_s", double(rb1 - rb0) * 8 / wall / 1e9},
        {"forwarded_datagrams_per_s", double(dg) / wall},
        {"relay_thread_cores", cpu / wall},
        {"gbit_s_per_relay_core", cpu > 0 ? fwd_gbit / (cpu / wall) : 0.0},
        {"datagrams_per_recv_call", io1.recv_calls > io0.recv_calls
                                        ? double(dg) / double(io1.recv_calls - io0.recv_calls)
                                        : 0.0},
        {"gso_share", dg ? double(io1.gso_sends - io0.gso_sends) / double(dg) : 0.0},
        {"send_errors", io1.send_errors - io0.send_errors}};
    if (json) {
      std::cout << r.dump() << "\n";
    } else {
      std::printf(
          "sender %s, relay offloads %s (GRO %s, GSO %s), %zu B frames, %.1f s: offered %.2f "
          "Gbit/s, forwarded %.2f Gbit/s (%.0f datagrams/s, %.1f per receive call, %.0f %% in GSO "
          "runs), relay thread %.2f cores -> %.2f Gbit/s per relay core\n",
          sender.c_str(), offloads.c_str(), io1.gro ? "on" : "off", io1.gso ? "on" : "off", size,
          wall, r["offered_gbit_s"].get<double>(), fwd_gbit, double(dg) / wall,
          r["datagrams_per_recv_call"].get<double>(), 100 * r["gso_share"].get<double>(),
          cpu / wall, r["gbit_s_per_relay_core"].get<double>());
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_relay: " << e.what() << "\n";
    return 1;
  }
}

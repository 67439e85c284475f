// Tests of the Linux TUN adapter (A9). The real test runs in a forked child that first moves
// into a fresh network namespace (unshare(CLONE_NEWNET)), so the host's interfaces, addresses
// and routes are never touched:
//
//   child netns:  lo (up)    torii-t0 (TUN) 100.64.0.1/10, fd00:746f:7269:6900::1/64
//                              |  fd
//   UDP socket --> 100.64.0.2:9 ... kernel routes via torii-t0 ... read() from the fd
//   write() ICMP echo 100.64.0.2 -> 100.64.0.1 ... kernel answers ... read() the echo reply
//
// The child reports a failure as text through a pipe; the parent turns it into a test result.
// Skipped when not root or /dev/net/tun is missing (or namespaces are not permitted).
#include "net/tun.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

namespace torii::net {
namespace {

constexpr int kSkip = 77;
constexpr uint32_t kTunAddr = 0x64400001;   // 100.64.0.1
constexpr uint32_t kPeerAddr = 0x64400002;  // 100.64.0.2
constexpr std::array<uint8_t, 16> kTunAddr6 = {0xfd, 0x00, 0x74, 0x6f, 0x72, 0x69, 0x69, 0x00,
                                               0,    0,    0,    0,    0,    0,    0,    1};

uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, static_cast<uint16_t>(v >> 16));
  put16(p + 2, static_cast<uint16_t>(v));
}
uint16_t inet_checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += be16(p + i);
  if (n & 1) sum += uint32_t{p[n - 1]} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Reads packets from the TUN until `match` accepts one (other traffic, such as IPv6 router
// solicitations, is skipped) or 3 s pass.
bool read_until(TunDevice& tun, const std::function<bool(const uint8_t*, size_t)>& match) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  std::vector<uint8_t> buf(65536);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{tun.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    for (;;) {
      const ssize_t n = tun.read(buf.data(), buf.size());
      if (n <= 0) break;
      const size_t hdr = tun.vnet_hdr() ? 10 : 0;  // virtio_net_hdr (offload mode)
      if (static_cast<size_t>(n) > hdr && match(buf.data() + hdr, static_cast<size_t>(n) - hdr))
        return true;
    }
  }
  return false;
}

bool set_up(const char* ifname) {
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  bool ok = ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  ok = ok && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  ::close(s);
  return ok;
}

int interface_mtu(const std::string& name) {
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  const int mtu = ::ioctl(s, SIOCGIFMTU, &ifr) == 0 ? ifr.ifr_mtu : -1;
  ::close(s);
  return mtu;
}

ino_t netns_inode() {
  struct stat st {};
  return ::stat("/proc/self/ns/net", &st) == 0 ? st.st_ino : 0;
}

// Everything below runs in the child, inside its own network namespace. Returns "" on success,
// else what went wrong; `skip` is set when the environment cannot run the test.
// With a zero virtio_net_hdr in front in offload mode.
bool write_packet(TunDevice& tun, const uint8_t* p, size_t n) {
  if (!tun.vnet_hdr()) return tun.write(p, n);
  uint8_t hdr[10] = {};
  iovec iov[2] = {{hdr, sizeof hdr}, {const_cast<uint8_t*>(p), n}};
  return tun.writev(iov, 2);
}

std::string run_in_namespace(bool offload, bool& skip) {
  const ino_t host_ns = netns_inode();
  if (::unshare(CLONE_NEWNET) != 0) {
    skip = true;
    return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  }
  if (host_ns == 0 || netns_inode() == host_ns) return "still in the host's network namespace";
  if (!set_up("lo")) return std::string("cannot bring up lo: ") + std::strerror(errno);

  try {
    TunDevice opened = TunDevice::open("torii-t0", 1400, offload);
    TunDevice tun = std::move(opened);  // movable: the fd travels, the source is emptied
    if (opened.fd() != -1) return "moved-from TunDevice still holds an fd";
    if (tun.name() != "torii-t0") return "unexpected name " + tun.name();
    if (tun.mtu() != 1400 || interface_mtu("torii-t0") != 1400)
      return "MTU not applied: " + std::to_string(interface_mtu("torii-t0"));
    if ((::fcntl(tun.fd(), F_GETFL) & O_NONBLOCK) == 0) return "fd is blocking";
    if (tun.vnet_hdr() != offload || tun.offload() != offload)
      return std::string("offload ") + (offload ? "requested but not granted" : "not requested");
    if ((::fcntl(tun.fd(), F_GETFD) & FD_CLOEXEC) == 0) return "fd lacks FD_CLOEXEC";

    // No duplicate address detection on this test interface, so the IPv6 address is usable at
    // once (a sysctl of the child's own namespace).
    if (int f = ::open("/proc/sys/net/ipv6/conf/torii-t0/accept_dad", O_WRONLY | O_CLOEXEC);
        f >= 0) {
      (void)!::write(f, "0", 1);
      ::close(f);
    }
    tun.set_ipv4(kTunAddr, 10);
    tun.set_ipv6(kTunAddr6, 64);
    tun.up();

    // (a) The interface is up with both addresses and the /10 mask.
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "getifaddrs failed";
    bool v4 = false, v6 = false, up = false;
    for (ifaddrs* a = list; a; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || tun.name() != a->ifa_name) continue;
      up = up || (a->ifa_flags & IFF_UP);
      if (a->ifa_addr->sa_family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
        auto* mask = reinterpret_cast<sockaddr_in*>(a->ifa_netmask);
        v4 = ntohl(sin->sin_addr.s_addr) == kTunAddr && mask &&
             ntohl(mask->sin_addr.s_addr) == 0xffc00000;
      } else if (a->ifa_addr->sa_family == AF_INET6) {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
        v6 = v6 || std::memcmp(&sin6->sin6_addr, kTunAddr6.data(), 16) == 0;
      }
    }
    ::freeifaddrs(list);
    if (!up) return "interface not up";
    if (!v4) return "100.64.0.1/10 not found on the interface";
    if (!v6) return "fd00:746f:7269:6900::1 not found on the interface";

    uint8_t scratch[2048];
    while (tun.read(scratch, sizeof scratch) > 0) {
    }
    if (tun.read(scratch, sizeof scratch) != 0) return "read() on an empty queue did not return 0";

    // (b) A UDP datagram to 100.64.0.2:9 leaves through the TUN as an IPv4 packet.
    const char payload[] = "torii-tun-test";
    const int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(9);
    dst.sin_addr.s_addr = htonl(kPeerAddr);
    if (::sendto(u, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) < 0)
      return std::string("sendto 100.64.0.2:9: ") + std::strerror(errno);
    ::close(u);
    const bool got_udp = read_until(tun, [&](const uint8_t* p, size_t n) {
      if (n < 28 || (p[0] >> 4) != 4 || p[9] != IPPROTO_UDP) return false;
      const size_t ihl = (p[0] & 0xf) * 4u;
      return be32(p + 12) == kTunAddr && be32(p + 16) == kPeerAddr && n >= ihl + 8 &&
             be16(p + ihl + 2) == 9 && n - ihl - 8 == sizeof payload &&
             std::memcmp(p + ihl + 8, payload, sizeof payload) == 0;
    });
    if (!got_udp) return "the UDP datagram to 100.64.0.2:9 never came out of the TUN";

    // (c) An ICMP echo request written into the TUN is answered by the kernel through it.
    uint8_t ping[20 + 8 + 4] = {};
    ping[0] = 0x45;
    put16(ping + 2, sizeof ping);
    ping[8] = 64;
    ping[9] = IPPROTO_ICMP;
    put32(ping + 12, kPeerAddr);
    put32(ping + 16, kTunAddr);
    put16(ping + 10, inet_checksum(ping, 20));
    uint8_t* icmp = ping + 20;
    icmp[0] = 8;  // echo request
    put16(icmp + 4, 0x7431);
    put16(icmp + 6, 1);
    std::memcpy(icmp + 8, "ping", 4);
    put16(icmp + 2, inet_checksum(icmp, 12));
    if (!write_packet(tun, ping, sizeof ping)) return std::string("write: ") + std::strerror(errno);
    const bool got_reply = read_until(tun, [&](const uint8_t* p, size_t n) {
      if (n < 32 || (p[0] >> 4) != 4 || p[9] != IPPROTO_ICMP) return false;
      const uint8_t* r = p + (p[0] & 0xf) * 4;
      return be32(p + 16) == kPeerAddr && r[0] == 0 && be16(r + 4) == 0x7431 && be16(r + 6) == 1 &&
             std::memcmp(r + 8, "ping", 4) == 0;
    });
    if (!got_reply) return "no ICMP echo reply came out of the TUN";

    // (d) IPv6: a datagram to fd00:746f:7269:6900::2 follows the /64 route into the TUN.
    const int u6 = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in6 dst6{};
    dst6.sin6_family = AF_INET6;
    dst6.sin6_port = htons(9);
    std::memcpy(&dst6.sin6_addr, kTunAddr6.data(), 16);
    dst6.sin6_addr.s6_addr[15] = 2;
    if (::sendto(u6, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&dst6), sizeof dst6) <
        0)
      return std::string("sendto [fd00:746f:7269:6900::2]:9: ") + std::strerror(errno);
    ::close(u6);
    // Only the destination is checked: right after up() the kernel may still count the new
    // address as tentative (its DAD work runs asynchronously even with accept_dad=0) and pick
    // the link-local address as the source.
    const bool got_udp6 = read_until(tun, [&](const uint8_t* p, size_t n) {
      return n >= 48 && (p[0] >> 4) == 6 && p[6] == IPPROTO_UDP &&
             std::memcmp(p + 24, &dst6.sin6_addr, 16) == 0 && be16(p + 42) == 9;
    });
    if (!got_udp6) return "the UDP datagram to fd00:746f:7269:6900::2 never came out of the TUN";
  } catch (const std::system_error& e) {
    if (e.code().value() == EPERM) skip = true;
    return e.what();
  }
  return "";
}

void run_child(bool offload) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun missing";

  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    bool skip = false;
    const std::string why = run_in_namespace(offload, skip);
    (void)!::write(pipefd[1], why.data(), why.size());
    ::_exit(why.empty() ? 0 : (skip ? kSkip : 1));
  }
  ::close(pipefd[1]);
  std::string why;
  char buf[512];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) why.append(buf, n);
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died: " << status;
  if (WEXITSTATUS(status) == kSkip) GTEST_SKIP() << why;
  EXPECT_EQ(WEXITSTATUS(status), 0) << why;
}

TEST(TunDevice, CarriesPacketsInAPrivateNetworkNamespace) {
  run_child(false);
}

// Issue 4: with IFF_VNET_HDR + TUNSETOFFLOAD every packet carries a virtio_net_hdr both ways.
TEST(TunDevice, CarriesPacketsWithVirtioHeaders) {
  run_child(true);
}

TEST(TunDevice, RefusesBadArgumentsBeforeTouchingTheSystem) {
  try {
    TunDevice::open("a-name-that-is-far-too-long", 1400);
    ADD_FAILURE() << "long name accepted";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("interface name too long"), std::string::npos) << e.what();
  }
  try {
    TunDevice::open("torii0", 20);
    ADD_FAILURE() << "MTU 20 accepted";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid MTU 20"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace torii::net

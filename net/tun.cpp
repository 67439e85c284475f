// Linux TUN adapter (see tun.hpp; A9): /dev/net/tun plus the classic SIOC* interface ioctls.
#include "net/tun.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace torii::net {

namespace {

// The kernel's struct in6_ifreq (include/uapi/linux/ipv6.h). Declared here because
// <linux/ipv6.h> and glibc's <netinet/in.h> fight over struct in6_addr; the layout is ABI.
struct In6Ifreq {
  in6_addr ifr6_addr;
  uint32_t ifr6_prefixlen;
  int ifr6_ifindex;
};
static_assert(sizeof(In6Ifreq) == 24);

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// A socket of the given family, only to carry interface ioctls.
class IoctlSocket {
 public:
  IoctlSocket(int family, const std::string& ifname) {
    fd_ = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      fail(errno, std::string("cannot create an ") + (family == AF_INET6 ? "IPv6" : "IPv4") +
                      " socket to configure " + ifname);
  }
  ~IoctlSocket() { ::close(fd_); }
  IoctlSocket(const IoctlSocket&) = delete;
  IoctlSocket& operator=(const IoctlSocket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

ifreq request_for(const std::string& name) {
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof ifr.ifr_name - 1));
  return ifr;
}

std::string ipv4_text(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

}  // namespace

TunDevice TunDevice::open(const std::string& name, int mtu, bool offload) {
  if (name.size() >= IFNAMSIZ)
    fail(EINVAL, "interface name too long (max " + std::to_string(IFNAMSIZ - 1) + "): " + name);
  if (mtu < 68 || mtu > 65535)
    fail(EINVAL, "invalid MTU " + std::to_string(mtu) + " for " + (name.empty() ? "tun" : name) +
                     " (68..65535)");
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(errno, "cannot open /dev/net/tun");
  TunDevice dev(fd, name, mtu);  // closes fd if anything below throws

  ifreq ifr = request_for(name);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  const std::string what =
      "TUNSETIFF " + (name.empty() ? std::string("(kernel-chosen name)") : name);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    if (!offload) fail(errno, what);
    ifr = request_for(name);  // a kernel without virtio headers on TUN: plain packets
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    offload = false;
    if (::ioctl(fd, TUNSETIFF, &ifr) < 0) fail(errno, what);
  }
  dev.name_ = std::string(ifr.ifr_name, strnlen(ifr.ifr_name, sizeof ifr.ifr_name));
  if (offload) {
    dev.vnet_hdr_ = true;
    // Large TCP segments both ways (TSO/GRO); checksums may be left partial. Without this the
    // header is still there, always "no offload".
    dev.offload_ = ::ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == 0;
  }

  IoctlSocket s(AF_INET, dev.name_);
  ifreq m = request_for(dev.name_);
  m.ifr_mtu = mtu;
  if (::ioctl(s.fd(), SIOCSIFMTU, &m) < 0)
    fail(errno, "SIOCSIFMTU " + dev.name_ + " " + std::to_string(mtu));
  return dev;
}

void TunDevice::set_ipv4(uint32_t host_order_addr, int prefix_len) {
  const std::string what =
      name_ + " " + ipv4_text(host_order_addr) + "/" + std::to_string(prefix_len);
  if (prefix_len < 0 || prefix_len > 32) fail(EINVAL, "invalid IPv4 prefix length for " + what);
  IoctlSocket s(AF_INET, name_);

  ifreq ifr = request_for(name_);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(host_order_addr);
  std::memcpy(&ifr.ifr_addr, &sin, sizeof sin);
  if (::ioctl(s.fd(), SIOCSIFADDR, &ifr) < 0) fail(errno, "SIOCSIFADDR " + what);

  const uint32_t mask = prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
  ifreq nm = request_for(name_);
  sockaddr_in msin{};
  msin.sin_family = AF_INET;
  msin.sin_addr.s_addr = htonl(mask);
  std::memcpy(&nm.ifr_netmask, &msin, sizeof msin);
  if (::ioctl(s.fd(), SIOCSIFNETMASK, &nm) < 0) fail(errno, "SIOCSIFNETMASK " + what);
}

void TunDevice::set_ipv6(const std::array<uint8_t, 16>& addr, int prefix_len) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, addr.data(), text, sizeof text);
  const std::string what = name_ + " " + text + "/" + std::to_string(prefix_len);
  if (prefix_len < 0 || prefix_len > 128) fail(EINVAL, "invalid IPv6 prefix length for " + what);
  IoctlSocket s(AF_INET6, name_);

  ifreq idx = request_for(name_);
  if (::ioctl(s.fd(), SIOCGIFINDEX, &idx) < 0) fail(errno, "SIOCGIFINDEX " + name_);
  In6Ifreq req{};
  std::memcpy(&req.ifr6_addr, addr.data(), 16);
  req.ifr6_prefixlen = static_cast<uint32_t>(prefix_len);
  req.ifr6_ifindex = idx.ifr_ifindex;
  if (::ioctl(s.fd(), SIOCSIFADDR, &req) < 0) fail(errno, "SIOCSIFADDR " + what);
}

void TunDevice::up() {
  IoctlSocket s(AF_INET, name_);
  ifreq ifr = request_for(name_);
  if (::ioctl(s.fd(), SIOCGIFFLAGS, &ifr) < 0) fail(errno, "SIOCGIFFLAGS " + name_);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s.fd(), SIOCSIFFLAGS, &ifr) < 0) fail(errno, "SIOCSIFFLAGS " + name_ + " up");
}

ssize_t TunDevice::read(uint8_t* buf, size_t cap) noexcept {
  for (;;) {
    const ssize_t n = ::read(fd_, buf, cap);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

bool TunDevice::write(const uint8_t* p, size_t n) noexcept {
  for (;;) {
    const ssize_t w = ::write(fd_, p, n);
    if (w >= 0) return static_cast<size_t>(w) == n;
    if (errno != EINTR) return false;
  }
}

bool TunDevice::writev(const iovec* iov, int n) noexcept {
  size_t want = 0;
  for (int i = 0; i < n; ++i) want += iov[i].iov_len;
  for (;;) {
    const ssize_t w = ::writev(fd_, iov, n);
    if (w >= 0) return static_cast<size_t>(w) == want;
    if (errno != EINTR) return false;
  }
}

TunDevice::TunDevice(TunDevice&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      name_(std::move(o.name_)),
      mtu_(o.mtu_),
      vnet_hdr_(o.vnet_hdr_),
      offload_(o.offload_) {}

TunDevice& TunDevice::operator=(TunDevice&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    name_ = std::move(o.name_);
    mtu_ = o.mtu_;
    vnet_hdr_ = o.vnet_hdr_;
    offload_ = o.offload_;
  }
  return *this;
}

TunDevice::~TunDevice() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace torii::net

// Linux TUN adapter (A9): a layer-3 interface whose IP packets the agent reads and writes
// through a file descriptor. Addresses, MTU and link state are set with plain ioctls (no netlink
// library, no `ip` command), so it works in a minimal image and in a test's network namespace.
#pragma once
#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace torii::net {

// Non-persistent: the interface exists while the descriptor is open and disappears with it.
// Needs CAP_NET_ADMIN. Control-plane calls throw std::system_error whose message names the
// step and the interface; read()/write() are the data plane: noexcept, no allocation.
class TunDevice {
 public:
  // Opens /dev/net/tun (O_RDWR | O_NONBLOCK | O_CLOEXEC) with IFF_TUN | IFF_NO_PI (bare IP
  // packets, no 4-byte protocol header); `name` "" lets the kernel choose (tun0, tun1, ...), a
  // name may hold "%d". Then sets the MTU. Throws std::system_error, e.g.
  // "cannot open /dev/net/tun: No such file or directory",
  // "TUNSETIFF torii0: Operation not permitted", "interface name too long (max 15): ...".
  // `offload` (issue 4): IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO4, TSO6), so reads and
  // writes carry a 10-byte virtio_net_hdr (core/tunnel/offload.hpp) and TCP segments up to
  // 64 KiB. Falls back silently: vnet_hdr() / offload() tell what the kernel granted.
  static TunDevice open(const std::string& name, int mtu, bool offload = false);

  // IPv4 address and prefix (SIOCSIFADDR, then SIOCSIFNETMASK); the kernel installs the prefix
  // route once the interface is up. Replaces the interface's primary IPv4 address.
  void set_ipv4(uint32_t host_order_addr, int prefix_len);
  // Adds an IPv6 address with its prefix (SIOCSIFADDR on an AF_INET6 socket, struct in6_ifreq);
  // the kernel installs the prefix route. Duplicate address detection applies as usual.
  void set_ipv6(const std::array<uint8_t, 16>& addr, int prefix_len);
  // Sets IFF_UP (SIOCGIFFLAGS, then SIOCSIFFLAGS).
  void up();

  const std::string& name() const { return name_; }
  int fd() const { return fd_; }
  int mtu() const { return mtu_; }
  bool vnet_hdr() const { return vnet_hdr_; }  // every read/write starts with a virtio_net_hdr
  bool offload() const { return offload_; }    // ... which may describe a large TCP segment

  // One IP packet into buf. Returns its length, 0 when none is waiting (EAGAIN), -1 on another
  // error (errno set; a packet longer than cap is truncated by the kernel).
  ssize_t read(uint8_t* buf, size_t cap) noexcept;
  // Hands one IP packet to the kernel as if received on the interface. False on error (errno
  // set), including EAGAIN when the kernel's queue is full.
  bool write(const uint8_t* p, size_t n) noexcept;
  // The same, gathered from pieces (one packet).
  bool writev(const iovec* iov, int n) noexcept;

  TunDevice(TunDevice&& o) noexcept;
  TunDevice& operator=(TunDevice&& o) noexcept;
  TunDevice(const TunDevice&) = delete;
  TunDevice& operator=(const TunDevice&) = delete;
  ~TunDevice();

 private:
  TunDevice(int fd, std::string name, int mtu) : fd_(fd), name_(std::move(name)), mtu_(mtu) {}
  int fd_ = -1;
  std::string name_;
  int mtu_ = 0;
  bool vnet_hdr_ = false, offload_ = false;
};

}  // namespace torii::net

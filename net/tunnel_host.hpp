// The agent's tunnel data plane host (A6-A11): one UDP socket (bound to an ephemeral port, it
// answers nothing but authenticated peer traffic), the TUN interface carrying the overlay
// addresses, and the I/O-free PeerManager (core/p2p) that decides everything. Also learns the
// socket's server-reflexive candidate with STUN against toriid.
#pragma once
#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/endpoint.hpp"
#include "core/p2p/peer_manager.hpp"
#include "torii/control.pb.h"

namespace torii::net {

struct TunnelOptions {
  bool enabled = true;
  uint16_t port = 0;                 // UDP port of the tunnel socket (0: ephemeral)
  std::string tun_name = "torii%d";  // kernel picks the number
  int mtu = 1400;  // overlay MTU: 1500 - IPv6 40 - UDP 8 - relay 16 - tunnel 32 - margin
  // Issue 4: TUN TSO/GRO (virtio headers) and UDP GSO/GRO where the kernel has them. Off: one
  // packet per read/write on the TUN device, batched recvmmsg/sendmmsg on the socket.
  bool offload = true;
};

class TunnelHost {
 public:
  using SendControl = std::function<bool(std::vector<uint8_t> frame)>;
  TunnelHost(boost::asio::io_context& io, TunnelOptions opts, p2p::PeerConfig cfg,
             SendControl send_control);
  ~TunnelHost();

  // The control session is up: overlay addresses (TUN created on first call), the server's
  // address for the relay and STUN.
  void on_established(const ::torii::control::v1::Welcome& w, const Endpoint& server,
                      uint16_t stun_port);
  void on_session_down();
  void on_control(const ::torii::control::v1::Envelope& env);
  // A10, from `torii-agent connect/disconnect`. Returns "" or an error for the operator.
  std::string connect(const std::string& peer_id);
  std::string disconnect(const std::string& peer_id);
  void stop();
  nlohmann::json status() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace torii::net

// Agent tunnel host (see tunnel_host.hpp). A6-A11.
#include "net/tunnel_host.hpp"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>

#include "core/stun/message.hpp"
#include "core/tunnel/offload.hpp"
#include "net/agent.hpp"
#include "net/asio_endpoint.hpp"
#include "net/tun.hpp"
#include "net/udp_batch.hpp"

namespace torii::net {

namespace asio = boost::asio;
using udp = asio::ip::udp;
namespace pb = ::torii::control::v1;

namespace {

Instant mono_now() {
  using namespace std::chrono;
  return Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch()));
}

UnixMs wall_now() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct TunnelHost::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, TunnelOptions o, p2p::PeerConfig cfg, SendControl send)
      : io(io),
        opts(std::move(o)),
        pm(std::move(cfg)),
        send_control(std::move(send)),
        sock(io),
        timer(io),
        stun_timer(io) {}

  asio::io_context& io;
  TunnelOptions opts;
  p2p::PeerManager pm;
  SendControl send_control;
  udp::socket sock;
  std::optional<TunDevice> tun;
  std::optional<asio::posix::stream_descriptor> tun_fd;
  asio::steady_timer timer;
  asio::steady_timer stun_timer;
  bool stopped = false;
  bool session_up = false;
  Endpoint server;
  uint16_t stun_port = 0;
  std::optional<Endpoint> srflx;
  std::array<stun::TransactionId, 4> stun_txns{};  // the last requests (replies may cross)
  size_t stun_next = 0;
  bool stun_pending = false;
  std::string overlay_v4, overlay_v6;
  uint64_t udp_send_errors = 0, tun_write_errors = 0, tun_dropped = 0;
  // Data plane (issue 4): batched socket I/O and the TUN offloads.
  std::optional<UdpTx> udp_tx;
  std::optional<UdpRx> udp_rx;
  tunnel::offload::Coalescer gro;

  void open_socket() {
    if (sock.is_open()) return;
    boost::system::error_code ec;
    sock.open(udp::v6(), ec);
    if (!ec) {
      sock.set_option(asio::ip::v6_only(false), ec);
      sock.bind(udp::endpoint(udp::v6(), opts.port), ec);
    }
    if (ec) {  // no IPv6 on this host: IPv4 only
      sock.close();
      sock.open(udp::v4());
      sock.bind(udp::endpoint(udp::v4(), opts.port));
    }
    // 4 MiB each way; *BUFFORCE (CAP_NET_ADMIN, which the TUN device needs anyway) goes past
    // net.core.rmem_max/wmem_max, 208 KiB on a stock kernel: too little for GRO batches.
    const int bytes = 4 << 20;
    if (::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
      sock.set_option(asio::socket_base::receive_buffer_size(bytes), ec);
    if (::setsockopt(sock.native_handle(), SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
      sock.set_option(asio::socket_base::send_buffer_size(bytes), ec);
    const bool v6 = sock.local_endpoint().address().is_v6();
    udp_tx.emplace(sock.native_handle(), v6, opts.offload);
    udp_rx.emplace(sock.native_handle(), opts.offload);
    spdlog::info("tunnel socket on UDP port {} (GSO {}, GRO {})", sock.local_endpoint().port(),
                 udp_tx->gso() ? "on" : "off", udp_rx->gro() ? "on" : "off");
    asio::co_spawn(io, udp_loop(shared_from_this()), asio::detached);
    asio::co_spawn(io, tick_loop(shared_from_this()), asio::detached);
  }

  void open_tun(const pb::Welcome& w) {
    if (tun || !opts.enabled) return;
    auto v4 = Endpoint::parse_address(w.overlay_ipv4());
    auto v6 = Endpoint::parse_address(w.overlay_ipv6());
    if (!v4) {
      spdlog::warn("the server assigned no overlay address; tunnels disabled");
      return;
    }
    try {
      tun.emplace(TunDevice::open(opts.tun_name, opts.mtu, opts.offload));
      tun->set_ipv4(v4->v4_host_order(), int(w.overlay_ipv4_prefix()));
      tun->up();
      if (v6) {
        try {
          tun->set_ipv6(v6->addr, int(w.overlay_ipv6_prefix()));
        } catch (const std::exception& e) {
          spdlog::warn("overlay IPv6 not configured (IPv4 only): {}", e.what());
          v6.reset();
        }
      }
    } catch (const std::exception& e) {
      spdlog::error("cannot create the TUN interface: {} (tunnels need CAP_NET_ADMIN)", e.what());
      tun.reset();
      return;
    }
    overlay_v4 = w.overlay_ipv4();
    overlay_v6 = v6 ? w.overlay_ipv6() : "";
    spdlog::info("overlay interface {} with {}/{}{} (MTU {}, TSO/GRO {})", tun->name(), overlay_v4,
                 w.overlay_ipv4_prefix(),
                 v6 ? " and " + overlay_v6 + "/" + std::to_string(w.overlay_ipv6_prefix()) : "",
                 opts.mtu, tun->offload() ? "on" : "off");
    tun_fd.emplace(io, ::dup(tun->fd()));
    asio::co_spawn(io, tun_loop(shared_from_this()), asio::detached);
  }

  void refresh_candidates() {
    std::vector<Endpoint> c;
    const uint16_t port = sock.local_endpoint().port();
    for (const auto& a : local_addresses()) {
      auto e = Endpoint::parse_address(a, port);
      if (!e) continue;
      // Never offer the overlay itself as a path to the overlay.
      if (e->address_string() == overlay_v4 || e->address_string() == overlay_v6) continue;
      c.push_back(*e);
    }
    if (srflx && std::find(c.begin(), c.end(), *srflx) == c.end()) c.insert(c.begin(), *srflx);
    pm.set_candidates(std::move(c));
  }

  void send_stun() {
    if (!stun_port || !sock.is_open()) return;
    std::array<uint8_t, 12> rnd{};
    RAND_bytes(rnd.data(), int(rnd.size()));
    stun::Message m;
    m.transaction_id = stun::make_transaction_id(rnd);
    stun_txns[stun_next++ % stun_txns.size()] = m.transaction_id;
    stun_pending = true;
    const auto bytes = stun::serialize(m);
    Endpoint to = server;
    to.port = stun_port;
    boost::system::error_code ec;
    sock.send_to(asio::buffer(bytes), to_asio<udp>(to), 0, ec);
  }

  bool maybe_stun(const Endpoint& from, const uint8_t* p, size_t n) {
    if (n < 20 || from.port != stun_port || !from.same_address(server)) return false;
    auto r = stun::parse(p, n);
    if (!r ||
        std::find(stun_txns.begin(), stun_txns.end(), r.message->transaction_id) == stun_txns.end())
      return false;
    stun_pending = false;
    auto mapped =
        r.message->xor_mapped_address ? r.message->xor_mapped_address : r.message->mapped_address;
    if (mapped && mapped != srflx) {
      spdlog::info("tunnel socket's public endpoint: {}", mapped->to_string());
      srflx = mapped;
      refresh_candidates();
    }
    return true;
  }

  // `rearm`: the tick loop re-reads the PeerManager's deadlines now. Needed after control
  // events (a new tunnel wants its first probes at once), not on the data path: there the
  // loop's own wake-up (at most 500 ms, 200 ms while a tunnel opens) is soon enough, and waking
  // it per packet would run every tunnel's timers per packet.
  void execute(p2p::PeerActions& acts, bool rearm = true) {
    for (auto& a : acts) {
      if (auto* u = std::get_if<p2p::peer_action::SendUdp>(&a)) {
        boost::system::error_code ec;
        sock.send_to(asio::buffer(u->data), to_asio<udp>(u->to), 0, ec);
        if (ec) ++udp_send_errors;
      } else if (auto* c = std::get_if<p2p::peer_action::SendControl>(&a)) {
        if (!send_control(std::move(c->frame)))
          spdlog::debug("control session down; frame dropped");
      } else if (auto* d = std::get_if<p2p::peer_action::DeliverIp>(&a)) {
        if (tun)
          write_tun({tunnel::offload::VnetHdr{}, d->packet, {}});
        else
          ++tun_write_errors;
      } else if (auto* l = std::get_if<p2p::peer_action::Log>(&a)) {
        if (l->warning)
          spdlog::warn("peer {}: {}", l->peer, l->text);
        else
          spdlog::info("peer {}: {}", l->peer, l->text);
      }
    }
    acts.clear();
    if (rearm) timer.cancel();
  }

  // One packet (or coalesced TCP segment) to the TUN device, with its virtio header when the
  // device has them.
  void write_tun(const tunnel::offload::Coalescer::Output& o) noexcept {
    std::array<iovec, tunnel::offload::Coalescer::kMaxPieces + 2> iov;
    std::array<uint8_t, tunnel::offload::kVnetHdrSize> vh;
    int n = 0;
    if (tun->vnet_hdr()) {
      tunnel::offload::store_vnet(o.vnet, vh.data());
      iov[size_t(n++)] = {vh.data(), vh.size()};
    }
    iov[size_t(n++)] = {const_cast<uint8_t*>(o.head.data()), o.head.size()};
    for (const auto& p : o.pieces) iov[size_t(n++)] = {const_cast<uint8_t*>(p.data()), p.size()};
    if (!tun->writev(iov.data(), n)) ++tun_write_errors;
  }

  void deliver(std::span<const uint8_t> ip) noexcept {
    if (!tun) return;
    auto emit = [this](const tunnel::offload::Coalescer::Output& o) { write_tun(o); };
    if (tun->offload())
      gro.add(ip, emit);
    else
      emit({tunnel::offload::VnetHdr{}, ip, {}});
  }

  void flush_gro() noexcept {
    if (tun && tun->offload())
      gro.flush([this](const tunnel::offload::Coalescer::Output& o) { write_tun(o); });
  }

  // Receive side: batches of datagrams (recvmmsg, GRO); tunnel data on its current path is
  // decrypted in place and handed to the TUN device, TCP segments merged (issue 4). Everything
  // else takes the PeerManager's reference path.
  static asio::awaitable<void> udp_loop(std::shared_ptr<Impl> self) {
    p2p::PeerActions out;
    while (!self->stopped) {
      boost::system::error_code ec;
      co_await self->sock.async_wait(udp::socket::wait_read,
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (self->stopped || ec == asio::error::operation_aborted) co_return;
      if (ec) continue;
      for (int round = 0; round < 16; ++round) {
        const Instant now = mono_now();
        const size_t got = self->udp_rx->receive([&](const Endpoint& f, std::span<uint8_t> d) {
          if (self->maybe_stun(f, d.data(), d.size())) return;
          std::span<const uint8_t> plain;
          switch (self->pm.open(now, f, d, plain)) {
            case p2p::PeerManager::Rx::plain:
              self->deliver(plain);
              return;
            case p2p::PeerManager::Rx::consumed:
              return;
            case p2p::PeerManager::Rx::slow:
              break;
          }
          self->flush_gro();  // keep the order of what came before
          self->pm.on_udp(now, f, d, out);
          if (!out.empty()) self->execute(out, false);
        });
        self->flush_gro();
        self->udp_tx->flush();  // replies the slow path queued
        if (got == 0) break;
      }
    }
  }

  // Send side: one read from TUN may be a TCP segment of up to 64 KiB (TSO); it is cut into
  // MTU-sized IP packets directly in the send buffer, sealed in place and sent in runs with
  // UDP GSO (issue 4).
  static asio::awaitable<void> tun_loop(std::shared_ptr<Impl> self) {
    namespace off = tunnel::offload;
    // Not value-initialised (std::vector would zero them): resident only once used.
    std::unique_ptr<uint8_t[]> buf(new uint8_t[off::kVnetHdrSize + 65536]);
    std::unique_ptr<uint8_t[]> scratch(new uint8_t[65536]);
    const size_t buf_size = off::kVnetHdrSize + 65536;
    p2p::PeerActions out;
    off::Segmenter seg;
    while (!self->stopped && self->tun) {
      boost::system::error_code ec;
      co_await self->tun_fd->async_wait(asio::posix::stream_descriptor::wait_read,
                                        asio::redirect_error(asio::use_awaitable, ec));
      if (self->stopped || ec) co_return;
      const size_t hdr = self->tun->vnet_hdr() ? off::kVnetHdrSize : 0;
      for (int i = 0; i < 64; ++i) {
        const ssize_t n = self->tun->read(buf.get(), buf_size);
        if (n <= 0 || size_t(n) <= hdr) break;
        const Instant now = mono_now();
        const off::VnetHdr vh = hdr ? off::load_vnet(buf.get()) : off::VnetHdr{};
        const std::span<const uint8_t> pkt(buf.get() + hdr, size_t(n) - hdr);
        if (!seg.reset(vh, pkt)) {
          ++self->tun_dropped;
          continue;
        }
        auto route = self->pm.tx_route(pkt);
        for (size_t k = 0; k < seg.count(); ++k) {
          const size_t len = seg.size(k);
          if (!route) {  // reference path: opening tunnels, TLS relay, no route
            seg.write(k, scratch.get());
            self->pm.on_ip(now, {scratch.get(), len}, out);
            continue;
          }
          uint8_t* p = self->udp_tx->prepare(route->to, route->headroom + len + tunnel::kTagSize);
          seg.write(k, p + route->headroom);
          self->udp_tx->commit(self->pm.seal(now, *route, p, len));
        }
        if (!out.empty()) {
          self->udp_tx->flush();
          self->execute(out, false);
        }
      }
      self->udp_tx->flush();
    }
  }

  static asio::awaitable<void> tick_loop(std::shared_ptr<Impl> self) {
    p2p::PeerActions out;
    int stun_countdown = 0;
    Instant last_stun{};
    while (!self->stopped) {
      const Instant now = mono_now();
      auto next = self->pm.tick(now, out);
      if (!out.empty()) self->execute(out, false);
      // STUN for the server-reflexive candidate: retry each second until answered, then every
      // 30 s (a changed public endpoint means the NAT mapping moved: roaming).
      if (self->session_up && self->stun_port &&
          (now - last_stun >= std::chrono::seconds(self->stun_pending ? 1 : 30))) {
        last_stun = now;
        if (stun_countdown++ < 1000) self->send_stun();
      }
      Duration wait = std::chrono::milliseconds(500);
      if (next) wait = std::clamp<Duration>(*next - now, Duration(1), wait);
      self->timer.expires_after(wait);
      boost::system::error_code ec;
      co_await self->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
};

TunnelHost::TunnelHost(asio::io_context& io, TunnelOptions opts, p2p::PeerConfig cfg,
                       SendControl send_control)
    : impl_(std::make_shared<Impl>(io, std::move(opts), std::move(cfg), std::move(send_control))) {
  impl_->pm.set_wall_offset(wall_now() - to_ms(mono_now()));
}

TunnelHost::~TunnelHost() {
  stop();
}

void TunnelHost::on_established(const pb::Welcome& w, const Endpoint& server, uint16_t stun_port) {
  auto& m = *impl_;
  if (!m.opts.enabled) return;
  m.session_up = true;
  m.server = server;
  m.stun_port = stun_port;
  m.open_socket();
  m.open_tun(w);
  auto v4 = Endpoint::parse_address(w.overlay_ipv4());
  auto v6 = Endpoint::parse_address(w.overlay_ipv6());
  if (v4 && v6)
    m.pm.set_overlay(*v4, int(w.overlay_ipv4_prefix()), *v6, int(w.overlay_ipv6_prefix()));
  m.pm.set_server(server, uint16_t(w.relay_port()));
  m.refresh_candidates();
  m.send_stun();
}

void TunnelHost::on_session_down() {
  auto& m = *impl_;
  m.session_up = false;
  p2p::PeerActions out;
  m.pm.on_session_down(mono_now(), out);
  m.execute(out);
}

void TunnelHost::on_control(const pb::Envelope& env) {
  p2p::PeerActions out;
  impl_->pm.on_control(mono_now(), env, out);
  impl_->execute(out);
}

std::string TunnelHost::connect(const std::string& peer_id) {
  auto& m = *impl_;
  if (!m.opts.enabled) return "tunnels are disabled (--no-tunnel)";
  if (!m.session_up) return "not connected to the server; try again when the session is up";
  p2p::PeerActions out;
  const bool ok = m.pm.connect(mono_now(), peer_id, out);
  m.execute(out);
  return ok ? "" : "cannot open a tunnel to " + peer_id;
}

std::string TunnelHost::disconnect(const std::string& peer_id) {
  p2p::PeerActions out;
  const bool ok = impl_->pm.disconnect(mono_now(), peer_id, out);
  impl_->execute(out);
  return ok ? "" : "no tunnel to " + peer_id;
}

void TunnelHost::stop() {
  auto& m = *impl_;
  if (m.stopped) return;
  p2p::PeerActions out;
  m.pm.close_all(mono_now(), out);
  m.execute(out);
  m.stopped = true;
  boost::system::error_code ec;
  m.sock.close(ec);
  m.timer.cancel();
  if (m.tun_fd) m.tun_fd->close(ec);
}

nlohmann::json TunnelHost::status() const {
  const auto& m = *impl_;
  nlohmann::json j;
  j["overlay_ipv4"] = m.overlay_v4;
  j["overlay_ipv6"] = m.overlay_v6;
  j["interface"] = m.tun ? m.tun->name() : "";
  j["tunnel_port"] = m.sock.is_open() ? m.sock.local_endpoint().port() : 0;
  j["public_endpoint"] = m.srflx ? m.srflx->to_string() : "";
  auto peers = nlohmann::json::array();
  for (const auto& p : m.pm.status(mono_now())) {
    nlohmann::json e;
    e["id"] = p.id;
    e["overlay_ipv4"] = p.overlay_ipv4;
    e["overlay_ipv6"] = p.overlay_ipv6;
    e["state"] = p.state;
    // "direct" or "relay"; how the relay is reached: "udp" or "tls" (inside the control session).
    e["path"] = p.state != "up" ? "" : p.path == p2p::Path::direct ? "direct" : "relay";
    e["relay_via"] = p.path == p2p::Path::relay_udp   ? "udp"
                     : p.path == p2p::Path::relay_tls ? "tls"
                                                      : "";
    e["endpoint"] = p.endpoint ? p.endpoint->to_string() : "";
    e["rtt_ms"] = p.rtt_ms ? nlohmann::json(*p.rtt_ms) : nlohmann::json(nullptr);
    e["rx_bytes"] = p.rx_bytes;
    e["tx_bytes"] = p.tx_bytes;
    e["tunnel_id"] = p.tunnel_id;
    e["method"] = p2p::to_string(p.method);
    e["cipher"] = p.cipher;
    if (!p.error.empty()) e["error"] = p.error;
    peers.push_back(std::move(e));
  }
  j["peers"] = std::move(peers);
  const auto& s = m.pm.stats();
  j["dropped"] = {{"unknown", s.dropped_unknown},        {"malformed", s.dropped_malformed},
                  {"unauthenticated", s.dropped_unauth}, {"no_route", s.dropped_no_route},
                  {"spoofed", s.dropped_spoofed},        {"queue", s.dropped_queue},
                  {"tun_malformed", m.tun_dropped}};
  // Issue 4: which offloads the kernel granted, and how well they batch.
  j["offload"] = {{"tun", m.tun && m.tun->offload()},
                  {"udp_gso", m.udp_tx && m.udp_tx->gso()},
                  {"udp_gro", m.udp_rx && m.udp_rx->gro()}};
  if (m.udp_tx) {
    const auto& t = m.udp_tx->stats();
    j["datapath"] = {{"udp_send_syscalls", t.syscalls},
                     {"udp_datagrams_sent", t.datagrams},
                     {"udp_send_errors", t.errors + m.udp_send_errors},
                     {"tun_packets_merged", m.gro.stats().merged},
                     {"tun_write_errors", m.tun_write_errors}};
  }
  return j;
}

}  // namespace torii::net

// Control-plane adapter (see control_server.hpp).
#include "net/control_server.hpp"

#include "net/relay_server.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/control/frame.hpp"

namespace torii::net {

using server::Actions;

struct ControlServer::Conn : std::enable_shared_from_this<Conn> {
  Conn(tcp::socket s, SSL_CTX* ctx, asio::strand<asio::io_context::executor_type> st)
      : strand(st), tls(std::move(s), ctx, true) {}
  asio::strand<asio::io_context::executor_type> strand;
  TlsStream tls;
  control::FrameDecoder decoder;
  server::SessionId sid = 0;
  Endpoint source;
  std::vector<std::vector<uint8_t>> outq;  // not a deque: an idle deque still holds 512 bytes
  bool writing = false;
  bool close_requested = false;
  bool closed = false;
};

server::Now ControlServer::now() {
  using namespace std::chrono;
  return server::Now{Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch())),
                     duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count()};
}

ControlServer::ControlServer(asio::io_context& io, store::Store& store,
                             const pki::CertificateAuthority& ca, server::CertIssuer& issuer,
                             AuditLog& audit, ControlServerOptions opts)
    : io_(io),
      store_(store),
      ca_(ca),
      issuer_(issuer),
      audit_(audit),
      opts_(opts),
      ctx_(make_server_context(ca)),
      acceptor_(io),
      core_(opts.core, store) {}

ControlServer::~ControlServer() = default;

void ControlServer::start() {
  const auto addr = asio::ip::make_address(opts_.listen.address_string());
  tcp::endpoint ep(addr, opts_.listen.port);
  boost::system::error_code ec;
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(opts_.backlog, ec);
  if (ec)
    throw std::runtime_error("cannot listen for device sessions on " + opts_.listen.to_string() +
                             ": " + ec.message());
  asio::co_spawn(io_, accept_loop(), asio::detached);
  asio::co_spawn(io_, timer_loop(), asio::detached);
}

Endpoint ControlServer::local_endpoint() const {
  return to_endpoint(acceptor_.local_endpoint());
}

asio::awaitable<void> ControlServer::accept_loop() {
  while (!stopping_) {
    boost::system::error_code ec;
    auto strand = asio::make_strand(io_);
    tcp::socket sock(strand);
    co_await acceptor_.async_accept(sock, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping_) co_return;
      // EMFILE and friends: back off briefly rather than spin.
      spdlog::warn("accept: {}", ec.message());
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    auto c = std::make_shared<Conn>(std::move(sock), ctx_.get(), strand);
    asio::co_spawn(strand, serve(c), asio::detached);
  }
}

asio::awaitable<void> ControlServer::serve(std::shared_ptr<Conn> c) {
  ++connections_;
  struct Dec {
    std::atomic<size_t>& n;
    ~Dec() { --n; }
  } dec{connections_};
  boost::system::error_code ec;
  const auto remote = c->tls.socket().remote_endpoint(ec);
  if (ec) co_return;
  c->source = to_endpoint(remote);
  {
    std::lock_guard lk(core_mu_);
    if (!core_.admit(now(), c->source)) {
      c->tls.close();
      co_return;
    }
  }
  c->tls.socket().set_option(tcp::no_delay(true), ec);

  // Phase 1 (A2): TLS 1.3 handshake, bounded in time.
  asio::steady_timer deadline(c->strand, limits::kTlsHandshakeTimeout);
  deadline.async_wait([c](boost::system::error_code e) {
    if (!e) c->tls.socket().cancel();
  });
  try {
    co_await c->tls.handshake();
  } catch (const std::exception& e) {
    deadline.cancel();
    Actions out;
    {
      std::lock_guard lk(core_mu_);
      core_.on_handshake_failed(now(), c->source, e.what(), out);
    }
    execute(out);
    spdlog::debug("handshake from {} failed: {}", c->source.to_string(), e.what());
    c->tls.close();
    co_return;
  } catch (...) {
    c->tls.close();
    co_return;
  }
  deadline.cancel();
  ++handshakes_ok_;

  const PeerCertificate pc = client_certificate(c->tls.ssl());
  server::ClientCert cert;
  cert.present = pc.present;
  cert.device_id = pc.claimed_id;
  cert.verify_error = pc.verify_error;
  if (pc.identity) {
    cert.group = pc.identity->group;
    cert.serial_hex = pc.identity->serial_hex;
  }
  {
    Actions out;
    {
      std::lock_guard lk(core_mu_);
      c->sid = core_.on_open(now(), c->source, std::move(cert), out);
    }
    {
      std::lock_guard lk(conns_mu_);
      conns_[c->sid] = c;
    }
    execute(out);
  }

  uint8_t buf[1024];
  server::CloseKind kind = server::CloseKind::error;
  for (;;) {
    ReadResult r = co_await c->tls.read_some(buf, sizeof buf);
    if (r.status != ReadStatus::data) {
      kind = r.status == ReadStatus::close_notify ? server::CloseKind::close_notify
             : r.status == ReadStatus::eof        ? server::CloseKind::eof
                                                  : server::CloseKind::error;
      break;
    }
    Actions out;
    if (!c->decoder.feed(buf, r.n)) {
      std::lock_guard lk(core_mu_);
      core_.on_stream_corrupt(now(), c->sid, out);
    } else {
      std::lock_guard lk(core_mu_);
      const auto t = now();
      while (auto frame = c->decoder.next()) core_.on_frame(t, c->sid, *frame, out);
    }
    execute(out);
    if (c->decoder.corrupt()) {
      // Wait for the close we asked for; further bytes are ignored.
      continue;
    }
  }
  if (kind == server::CloseKind::close_notify && !c->close_requested) {
    // A5: answer the device's close_notify with ours.
    co_await c->tls.shutdown();
  }
  {
    Actions out;
    {
      std::lock_guard lk(core_mu_);
      core_.on_closed(now(), c->sid, kind, out);
    }
    execute(out);
    // Only device sessions (client certificate) have presence; enrollments and garbage do not
    // trigger writes.
    if (pc.present) presence_urgent_ = true;
  }
  {
    std::lock_guard lk(conns_mu_);
    conns_.erase(c->sid);
  }
  c->closed = true;
  c->tls.close();
}

asio::awaitable<void> ControlServer::write_loop(std::shared_ptr<Conn> c) {
  c->writing = true;
  asio::steady_timer deadline(c->strand);
  while (!c->outq.empty() && !c->closed) {
    std::vector<std::vector<uint8_t>> batch;
    batch.swap(c->outq);
    deadline.expires_after(limits::kWriteTimeout);
    deadline.async_wait([c](boost::system::error_code e) {
      if (!e) c->tls.close();  // a peer that stops reading cannot hold us
    });
    try {
      for (auto& f : batch) co_await c->tls.write_all(f.data(), f.size());
    } catch (const std::exception& e) {
      spdlog::debug("write to {} failed: {}", c->source.to_string(), e.what());
      c->outq.clear();
      c->tls.close();
    }
    deadline.cancel();
  }
  if (c->close_requested && !c->closed) {
    co_await c->tls.shutdown();  // TLS close_notify (A5)
    c->closed = true;
    c->tls.close();  // wakes the reader, which reports on_closed
  }
  c->writing = false;
}

void ControlServer::deliver(server::SessionId sid, std::vector<uint8_t> frame, bool close) {
  std::shared_ptr<Conn> c;
  {
    std::lock_guard lk(conns_mu_);
    auto it = conns_.find(sid);
    if (it != conns_.end()) c = it->second.lock();
  }
  if (!c) return;
  asio::dispatch(c->strand, [this, c, frame = std::move(frame), close]() mutable {
    if (c->closed) return;
    if (close)
      c->close_requested = true;
    else
      c->outq.push_back(std::move(frame));
    if (!c->writing) asio::co_spawn(c->strand, write_loop(c), asio::detached);
  });
}

void ControlServer::run_enrollment(std::shared_ptr<Conn> c, server::action::Enroll e) {
  server::EnrollResult r;
  try {
    r = server::enroll(store_, issuer_, now().wall, e.device_id, e.token, e.csr_der);
  } catch (const std::exception& ex) {
    spdlog::error("enrollment of '{}' failed: {}", e.device_id, ex.what());
    r.ok = false;
    r.code = ::torii::control::v1::ERROR_CODE_INTERNAL;
    r.message = "internal error during enrollment; see the server log";
    r.audit_kind = "enroll.error";
    r.audit_detail = ex.what();
  }
  Actions out;
  {
    std::lock_guard lk(core_mu_);
    core_.on_enroll_result(now(), c->sid, r, out);
  }
  execute(out);
}

std::vector<std::tuple<uint64_t, std::string, p2p::Method>> ControlServer::tunnels_of(
    const std::string& id) {
  std::lock_guard lk(core_mu_);
  return core_.tunnels_of(id);
}

void ControlServer::execute(Actions& actions) {
  for (auto& a : actions) {
    std::visit(
        [&](auto& act) {
          using T = std::decay_t<decltype(act)>;
          if constexpr (std::is_same_v<T, server::action::Send>) {
            deliver(act.sid, std::move(act.frame), false);
          } else if constexpr (std::is_same_v<T, server::action::Close>) {
            deliver(act.sid, {}, true);
          } else if constexpr (std::is_same_v<T, server::action::Audit>) {
            audit_.append(std::move(act.event));
          } else if constexpr (std::is_same_v<T, server::action::Enroll>) {
            std::shared_ptr<Conn> c;
            {
              std::lock_guard lk(conns_mu_);
              auto it = conns_.find(act.sid);
              if (it != conns_.end()) c = it->second.lock();
            }
            if (c)
              asio::post(c->strand, [this, c, e = std::move(act)]() mutable {
                run_enrollment(c, std::move(e));
              });
          } else if constexpr (std::is_same_v<T, server::action::RelayOpen>) {
            if (relay_) relay_->open(act.tunnel_id, act.key);
          } else if constexpr (std::is_same_v<T, server::action::RelayClose>) {
            if (relay_) relay_->close(act.tunnel_id);
          } else if constexpr (std::is_same_v<T, server::action::SaveAttributes>) {
            try {
              store_.update_attributes(act.device_id, act.attributes);
            } catch (const std::exception& e) {
              spdlog::error("saving attributes of {}: {}", act.device_id, e.what());
            }
          }
        },
        a);
  }
}

asio::awaitable<void> ControlServer::timer_loop() {
  asio::steady_timer t(io_);
  auto last_flush = std::chrono::steady_clock::now();
  while (!stopping_) {
    t.expires_after(std::chrono::milliseconds(100));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    Actions out;
    {
      std::lock_guard lk(core_mu_);
      core_.tick(now(), out);
    }
    execute(out);
    if (presence_urgent_.exchange(false) ||
        std::chrono::steady_clock::now() - last_flush >= limits::kPresenceFlushInterval) {
      last_flush = std::chrono::steady_clock::now();
      flush_presence();
    }
  }
}

void ControlServer::flush_presence() {
  std::vector<store::Presence> batch;
  {
    std::lock_guard lk(core_mu_);
    batch = core_.drain_presence();
  }
  if (batch.empty()) return;
  try {
    store_.update_presence(batch);
  } catch (const std::exception& e) {
    spdlog::error("saving presence of {} device(s): {}", batch.size(), e.what());
  }
}

void ControlServer::shutdown() {
  stopping_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  Actions out;
  {
    std::lock_guard lk(core_mu_);
    core_.shutdown(now(), out);
  }
  execute(out);
}

void ControlServer::revoke(const std::string& device_id) {
  Actions out;
  {
    std::lock_guard lk(core_mu_);
    core_.revoke(now(), device_id, out);
  }
  execute(out);
}

bool ControlServer::disconnect(const std::string& device_id) {
  Actions out;
  bool was_online;
  {
    std::lock_guard lk(core_mu_);
    was_online = core_.disconnect(now(), device_id, out);
  }
  execute(out);
  return was_online;
}

std::optional<server::SessionInfo> ControlServer::session_of(const std::string& device_id) {
  std::lock_guard lk(core_mu_);
  return core_.session_of(device_id);
}

server::Metrics ControlServer::metrics() {
  std::lock_guard lk(core_mu_);
  return core_.metrics();
}

size_t ControlServer::sessions() {
  std::lock_guard lk(core_mu_);
  return core_.online_count();
}

}  // namespace torii::net

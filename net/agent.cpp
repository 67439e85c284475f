// Agent enrollment and session loop (see agent.hpp).
#include "net/agent.hpp"

#include <ifaddrs.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>

#include <sys/stat.h>
#include "core/control/frame.hpp"
#include "core/dtls/link.hpp"
#include "core/server/server_core.hpp"
#include "core/session/agent_session.hpp"
#include "core/session/backoff.hpp"
#include "net/nat_discovery.hpp"
#include "net/tls.hpp"
#include "pki/key_store.hpp"
#include "pki/pki.hpp"

namespace torii::net {

namespace pb = ::torii::control::v1;
namespace fs = std::filesystem;

namespace {

Instant mono_now() {
  using namespace std::chrono;
  return Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch()));
}

std::string iso_now() {
  using namespace std::chrono;
  const auto t = system_clock::to_time_t(system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Resolves and connects, bounded by `timeout`.
asio::awaitable<tcp::socket> connect_to(const std::string& server, Duration timeout) {
  auto [host, port] = split_host_port(server);
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  boost::system::error_code ec;
  auto results = co_await resolver.async_resolve(host, std::to_string(port),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) throw std::runtime_error("cannot resolve " + host + ": " + ec.message());
  tcp::socket sock(ex);
  asio::steady_timer t(ex, timeout);
  t.async_wait([&](boost::system::error_code e) {
    if (!e) sock.close();
  });
  co_await asio::async_connect(sock, results, asio::redirect_error(asio::use_awaitable, ec));
  t.cancel();
  if (ec) throw std::runtime_error("cannot connect to " + server + ": " + ec.message());
  sock.set_option(tcp::no_delay(true));
  co_return sock;
}

asio::awaitable<void> handshake_with_timeout(TlsStream& tls) {
  asio::steady_timer t(co_await asio::this_coro::executor, limits::kTlsHandshakeTimeout);
  t.async_wait([&](boost::system::error_code e) {
    if (!e) tls.socket().cancel();
  });
  try {
    co_await tls.handshake();
  } catch (const boost::system::system_error& e) {
    throw TlsError("TLS handshake with the server failed: " + e.code().message());
  }
  t.cancel();
}

}  // namespace

std::vector<std::string> local_addresses() {
  std::vector<std::string> out;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (auto* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      out.push_back(Endpoint::v4(ntohl(sin->sin_addr.s_addr), 0).address_string());
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) continue;
      std::array<uint8_t, 16> b;
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      out.push_back(Endpoint::v6(b, 0).address_string());
    }
    if (out.size() >= limits::kMaxLocalAddresses) break;
  }
  freeifaddrs(ifa);
  return out;
}

std::string os_description() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

// ---------------------------------------------------------------------------------------------
// Enrollment (A1)

std::string enroll(const EnrollOptions& o) {
  const auto pin = pki::parse_fingerprint(o.ca_sha256);
  if (!pin)
    throw std::runtime_error(
        "--ca-sha256: expected the 64 hex digits toriid printed at start "
        "(colons allowed)");
  if (!pki::valid_device_id(o.device_id))
    throw std::runtime_error("--id: '" + o.device_id +
                             "' is not a valid device ID (1-64 of A-Z a-z 0-9 . _ -)");
  if (o.token.empty() || o.token.size() > limits::kMaxTokenLength)
    throw std::runtime_error("--token: give the one-time token printed by `torii device add`");
  split_host_port(o.server);  // validates the form early
  std::error_code ec;
  fs::create_directories(o.paths.dir, ec);
  if (ec) throw std::runtime_error("cannot create " + o.paths.dir.string() + ": " + ec.message());
  fs::permissions(o.paths.dir, fs::perms::owner_all, ec);
  if (fs::exists(o.paths.cert()))
    throw std::runtime_error(o.paths.dir.string() +
                             " already holds an enrolled device (device.crt); use another "
                             "--state-dir or remove it to enroll again");
  // The private key is made here and never leaves the device; a key left by an earlier failed
  // attempt (e.g. a mistyped token) is reused.
  pki::FileKeyStore keys(o.paths.key());
  if (!keys.has_key()) keys.generate();
  pki::PkeyPtr key = keys.load();
  const auto csr = pki::make_csr(key.get(), o.device_id);

  asio::io_context io;
  std::string group;
  std::exception_ptr failure;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ctx = make_client_context(nullptr, nullptr, nullptr);
        TlsStream tls(co_await connect_to(o.server, limits::kTlsHandshakeTimeout), ctx.get(),
                      false);
        co_await handshake_with_timeout(tls);
        std::string why;
        auto ca = find_pinned_ca(tls.ssl(), *pin, why);
        if (!ca) throw std::runtime_error("server not trusted: " + why);
        auto frame = control::make_frame([&](pb::Envelope& e) {
          auto* r = e.mutable_enroll_request();
          r->set_device_id(o.device_id);
          r->set_token(o.token);
          r->set_csr_der(csr.data(), csr.size());
        });
        co_await tls.write_all(frame.data(), frame.size());
        control::FrameDecoder dec;
        uint8_t buf[4096];
        for (;;) {
          auto r = co_await tls.read_some(buf, sizeof buf);
          if (r.status != ReadStatus::data)
            throw std::runtime_error("server closed the connection without answering (" +
                                     (r.error.empty() ? std::string("close") : r.error) + ")");
          if (!dec.feed(buf, r.n)) throw std::runtime_error("oversized frame from the server");
          while (auto payload = dec.next()) {
            pb::Envelope env;
            if (control::decode_envelope(reinterpret_cast<const uint8_t*>(payload->data()),
                                         payload->size(), env) != control::DecodeError::none)
              throw std::runtime_error("malformed answer from the server");
            if (env.has_error()) throw std::runtime_error(env.error().message());
            if (!env.has_enroll_response()) continue;
            const auto& resp = env.enroll_response();
            auto cert =
                pki::cert_from_der(reinterpret_cast<const uint8_t*>(resp.certificate_der().data()),
                                   resp.certificate_der().size());
            auto ca_cert = pki::cert_from_der(
                reinterpret_cast<const uint8_t*>(resp.ca_der().data()), resp.ca_der().size());
            if (!cert || !ca_cert)
              throw std::runtime_error("server sent an unreadable certificate");
            if (pki::fingerprint(ca_cert.get()) != *pin)
              throw std::runtime_error("server sent a CA that does not match --ca-sha256");
            if (X509_check_private_key(cert.get(), key.get()) != 1)
              throw std::runtime_error("issued certificate does not match this device's key");
            auto ident = pki::device_identity(cert.get());
            if (!ident || ident->device_id != o.device_id)
              throw std::runtime_error("issued certificate is not for device " + o.device_id);
            pki::write_file_atomic(o.paths.ca(), pki::to_pem(ca_cert.get()), 0644);
            pki::write_file_atomic(o.paths.cert(), pki::to_pem(cert.get()), 0644);
            save_identity(o.paths,
                          {o.device_id, ident->group, o.server, pki::fingerprint_hex(*pin)});
            group = ident->group;
            co_await tls.shutdown();
            co_return;
          }
        }
      },
      [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
  return group;
}

// ---------------------------------------------------------------------------------------------
// Session loop (A2-A5)

namespace {

class SessionRunner {
 public:
  SessionRunner(const RunOptions& o, AgentIdentity id, SSL_CTX* ctx, asio::io_context& io)
      : o_(o), id_(std::move(id)), ctx_(ctx), io_(io), backoff_(std::random_device{}()) {
    tunnel_ = nullptr;
    status_ = {{"device_id", id_.device_id}, {"group", id_.group},  {"server", id_.server},
               {"pid", int(::getpid())},     {"state", "starting"}, {"reconnects", 0}};
  }

  asio::awaitable<void> loop() {
    for (;;) {
      const Instant started = mono_now();
      set_state("connecting");
      try {
        co_await one_session();
      } catch (const std::exception& e) {
        last_error_ = e.what();
        spdlog::warn("session: {}", e.what());
      }
      if (stopping_) {
        set_state("stopped");
        exit_code_ = kExitStopped;
        co_return;
      }
      if (session_ && !session_->should_reconnect()) {
        const bool revoked = session_->end_reason() == session::EndReason::revoked;
        exit_code_ = revoked ? kExitRevoked : kExitRefused;
        set_state(revoked ? "revoked" : "refused");
        spdlog::error("server refused this device: {}; not reconnecting", session_->end_message());
        co_return;
      }
      if (mono_now() - started >= limits::kBackoffResetAfter) backoff_.reset();
      const Duration delay = backoff_.next();
      status_["reconnects"] = status_["reconnects"].get<int>() + 1;
      status_["retry_in_ms"] = delay.count();
      set_state("backoff");
      spdlog::info("reconnecting in {} ms", delay.count());
      wait_timer_.emplace(io_, delay);
      boost::system::error_code ec;
      co_await wait_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      status_.erase("retry_in_ms");
      if (stopping_) {
        set_state("stopped");
        co_return;
      }
    }
  }

  void stop() {
    stopping_ = true;
    if (wait_timer_) wait_timer_->cancel();
    if (session_ && tls_) {
      session::AgentActions out;
      session_->close(mono_now(), out);
      execute(out);
    } else if (tls_) {
      tls_->close();
    }
  }

  int exit_code() const { return exit_code_; }
  void set_tunnel(TunnelHost* t) { tunnel_ = t; }

  // A tunnel-layer frame for the server (peer request, confirmation, close, relay data).
  bool send_tunnel_frame(std::vector<uint8_t> frame) {
    if (!session_ || !tls_) return false;
    session::AgentActions out;
    if (!session_->send_tunnel_frame(mono_now(), std::move(frame), out)) return false;
    execute(out);
    return true;
  }

  // One command line from the local control socket; returns the answer line.
  std::string command(const std::string& line) {
    auto sp = line.find(' ');
    const std::string verb = line.substr(0, sp);
    const std::string arg = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (verb == "status") {
      publish(true);
      return "ok " + status_.dump();
    }
    if (!tunnel_) return "error: tunnels are disabled";
    if (verb == "connect" || verb == "disconnect") {
      if (arg.empty()) return "error: name the peer device ID";
      const std::string err = verb == "connect" ? tunnel_->connect(arg) : tunnel_->disconnect(arg);
      publish(true);
      return err.empty() ? "ok" : "error: " + err;
    }
    return "error: unknown command '" + verb + "' (connect, disconnect, status)";
  }

 private:
  asio::awaitable<void> one_session() {
    tls_.reset();
    session_.reset();
    auto sock = co_await connect_to(id_.server, limits::kTlsHandshakeTimeout);
    server_addr_ = to_endpoint(sock.remote_endpoint());
    tls_ = std::make_shared<TlsStream>(std::move(sock), ctx_, false);
    co_await handshake_with_timeout(*tls_);
    if (stopping_) co_return;
    session::AgentConfig cfg;
    cfg.device_id = id_.device_id;
    cfg.agent_version = TORII_AGENT_VERSION;
    cfg.firmware_version = o_.firmware_version;
    cfg.os_version = os_description();
    cfg.local_addresses = local_addresses();
    cfg.keepalive_interval = o_.keepalive;
    session_.emplace(cfg);
    local_addrs_ = cfg.local_addresses;
    set_state("authenticating");
    session::AgentActions out;
    session_->start(mono_now(), out);
    execute(out);

    auto tls = tls_;
    bool ticking = true;
    asio::co_spawn(io_, tick_loop(tls, &ticking), asio::detached);
    control::FrameDecoder dec;
    uint8_t buf[2048];
    bool clean = false;
    for (;;) {
      auto r = co_await tls->read_some(buf, sizeof buf);
      if (r.status != ReadStatus::data) {
        clean = r.status == ReadStatus::close_notify;
        if (clean && !closing_) co_await tls->shutdown();  // A5: answer close_notify
        break;
      }
      session::AgentActions acts;
      if (!dec.feed(buf, r.n)) {
        last_error_ = "oversized frame from the server";
        break;
      }
      while (auto f = dec.next()) session_->on_frame(mono_now(), *f, acts);
      execute(acts);
      publish();
    }
    ticking = false;
    if (tunnel_) tunnel_->on_session_down();
    session_->on_disconnected(mono_now(), clean);
    if (tick_timer_) tick_timer_->cancel();
    tls->close();
    closing_ = false;
    if (session_->end_reason() != session::EndReason::none)
      last_error_ =
          std::string(session::to_string(session_->end_reason())) + ": " + session_->end_message();
    spdlog::info("session ended: {}", last_error_);
    publish();
  }

  asio::awaitable<void> tick_loop(std::shared_ptr<TlsStream> tls, bool* ticking) {
    tick_timer_.emplace(io_);
    while (*ticking && tls == tls_) {
      session::AgentActions out;
      auto next = session_->tick(mono_now(), out);
      execute(out);
      publish();
      auto wait = next ? std::min<Duration>(*next - mono_now(), std::chrono::seconds(1))
                       : Duration(std::chrono::seconds(1));
      if (wait < Duration(1)) wait = Duration(1);
      tick_timer_->expires_after(wait);
      boost::system::error_code ec;
      co_await tick_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  void execute(session::AgentActions& acts) {
    for (auto& a : acts) {
      if (auto* s = std::get_if<session::agent_action::Send>(&a)) {
        outq_.push_back(std::move(s->frame));
        if (!writing_) asio::co_spawn(io_, write_loop(tls_), asio::detached);
      } else if (std::get_if<session::agent_action::Close>(&a)) {
        closing_ = true;
        if (!writing_) asio::co_spawn(io_, write_loop(tls_), asio::detached);
      } else if (auto* e = std::get_if<session::agent_action::Established>(&a)) {
        spdlog::info("session established (group {}, server marks offline after {} ms)", e->group,
                     e->offline_after.count());
        set_state("established");
        status_["established_at"] = iso_now();
        if (o_.discover_nat && e->stun_port)
          asio::co_spawn(io_, nat_then_attributes(tls_, e->stun_port), asio::detached);
        if (tunnel_) tunnel_->on_established(e->welcome, server_addr_, e->stun_port);
      } else if (auto* t = std::get_if<session::agent_action::Tunnel>(&a)) {
        if (tunnel_) tunnel_->on_control(t->envelope);
      }
    }
  }

  asio::awaitable<void> write_loop(std::shared_ptr<TlsStream> tls) {
    if (!tls) co_return;
    writing_ = true;
    try {
      while (!outq_.empty()) {
        auto f = std::move(outq_.front());
        outq_.erase(outq_.begin());
        co_await tls->write_all(f.data(), f.size());
      }
      if (closing_) {
        co_await tls->shutdown();  // TLS close_notify (A5)
        tls->close();
      }
    } catch (const std::exception& e) {
      outq_.clear();
      tls->close();
    }
    writing_ = false;
  }

  asio::awaitable<void> nat_then_attributes(std::shared_ptr<TlsStream> tls, uint16_t stun_port) {
    Endpoint stun_server = server_addr_;
    stun_server.port = stun_port;
    stun::NatReport rep;
    try {
      // A named config: GCC 12 destroys a defaulted by-value coroutine argument twice.
      stun::ProbeConfig cfg;
      rep = co_await discover_nat(io_.get_executor(), stun_server, cfg);
    } catch (const std::exception& e) {
      spdlog::warn("NAT discovery failed: {}", e.what());
    }
    if (tls != tls_ || !session_ || session_->state() != session::AgentState::established)
      co_return;
    pb::Attributes a;
    a.set_mapping(server::to_wire(rep.mapping));
    a.set_filtering(server::to_wire(rep.filtering));
    if (rep.public_endpoint) a.set_public_endpoint(rep.public_endpoint->to_string());
    for (const auto& l : local_addrs_) a.add_local_addresses(l);
    a.mutable_versions()->set_agent(TORII_AGENT_VERSION);
    a.mutable_versions()->set_firmware(o_.firmware_version);
    a.mutable_versions()->set_os(os_description());
    status_["nat_type"] = stun::nat_type_summary(rep);
    status_["nat_mapping"] = stun::to_string(rep.mapping);
    status_["nat_filtering"] = stun::to_string(rep.filtering);
    status_["public_endpoint"] =
        rep.public_endpoint ? rep.public_endpoint->to_string() : std::string();
    session::AgentActions out;
    session_->send_attributes(mono_now(), std::move(a), out);
    execute(out);
    publish();
  }

  void set_state(const std::string& s) {
    status_["state"] = s;
    status_["since"] = iso_now();
    spdlog::debug("state {}", s);
    publish(true);
  }

  void publish(bool force = false) {
    if (session_) {
      if (auto rtt = session_->rtt_ms()) status_["rtt_ms"] = *rtt;
      status_["echoes_sent"] = session_->echoes_sent();
    }
    status_["last_error"] = last_error_;
    if (tunnel_) {
      auto t = tunnel_->status();
      status_["overlay_ipv4"] = t["overlay_ipv4"];
      status_["overlay_ipv6"] = t["overlay_ipv6"];
      status_["interface"] = t["interface"];
      status_["tunnel_port"] = t["tunnel_port"];
      status_["tunnel_public_endpoint"] = t["public_endpoint"];
      status_["peers"] = t["peers"];
      status_["tunnel_dropped"] = t["dropped"];
      status_["tunnel_offload"] = t["offload"];
      if (t.contains("datapath")) status_["tunnel_datapath"] = t["datapath"];
    }
    status_["keepalive_ms"] = o_.keepalive.count();
    const std::string text = status_.dump();
    if (!force && text == last_published_) return;
    last_published_ = text;
    status_["updated_at"] = iso_now();
    try {
      save_status(o_.paths, status_);
    } catch (const std::exception& e) {
      spdlog::warn("cannot write status: {}", e.what());
    }
  }

  const RunOptions& o_;
  AgentIdentity id_;
  SSL_CTX* ctx_;
  asio::io_context& io_;
  session::Backoff backoff_;
  std::shared_ptr<TlsStream> tls_;
  std::optional<session::AgentSession> session_;
  std::optional<asio::steady_timer> wait_timer_;
  std::optional<asio::steady_timer> tick_timer_;
  std::vector<std::vector<uint8_t>> outq_;
  bool writing_ = false;
  bool closing_ = false;
  bool stopping_ = false;
  Endpoint server_addr_;
  std::vector<std::string> local_addrs_;
  nlohmann::json status_;
  std::string last_published_;
  std::string last_error_;
  int exit_code_ = kExitStopped;
  TunnelHost* tunnel_ = nullptr;
};

// The local control socket (agent.sock): one command line per connection, one answer line.
asio::awaitable<void> control_socket_loop(asio::local::stream_protocol::acceptor& acc,
                                          SessionRunner& runner) {
  for (;;) {
    boost::system::error_code ec;
    auto s = co_await acc.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    std::string line;
    co_await asio::async_read_until(s, asio::dynamic_buffer(line, 1024), '\n',
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) continue;
    line.resize(line.find('\n'));
    const std::string answer = runner.command(line) + "\n";
    co_await asio::async_write(s, asio::buffer(answer),
                               asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace

int run_agent(const RunOptions& o) {
  const AgentIdentity id = load_identity(o.paths);
  pki::FileKeyStore keys(o.paths.key());
  pki::PkeyPtr key = keys.load();
  auto read_pem = [](const fs::path& p) {
    std::ifstream in(p);
    if (!in) throw std::runtime_error("missing " + p.string() + ": enroll first");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto cert = pki::cert_from_pem(read_pem(o.paths.cert()));
  auto ca = pki::cert_from_pem(read_pem(o.paths.ca()));
  if (!cert || !ca) throw std::runtime_error("unreadable certificate in " + o.paths.dir.string());
  auto ctx = make_client_context(ca.get(), cert.get(), key.get());
  // A7/A8: the same credential authenticates the device to its peers over DTLS. A credential
  // DTLS cannot use (e.g. an Ed25519 key) disables tunnels but not the server session, so the
  // server can still give its own verdict on the certificate.
  std::shared_ptr<dtls::Context> dtls_ctx;
  if (o.tunnel.enabled) {
    try {
      dtls_ctx = dtls::Context::create(ca.get(), cert.get(), key.get());
    } catch (const std::exception& e) {
      spdlog::error("peer-to-peer tunnels disabled: {}", e.what());
    }
  }
  key.reset();  // the SSL_CTXs hold their own references

  asio::io_context io(1);
  SessionRunner runner(o, id, ctx.get(), io);
  std::optional<TunnelHost> tunnel;
  if (dtls_ctx) {
    p2p::PeerConfig pc;
    pc.device_id = id.device_id;
    pc.group = id.group;
    pc.dtls = dtls_ctx;
    pc.identity = [](X509* c) -> std::optional<p2p::PeerIdentity> {
      auto i = c ? pki::device_identity(c) : std::nullopt;
      if (!i) return std::nullopt;
      return p2p::PeerIdentity{i->device_id, i->group, i->serial_hex};
    };
    tunnel.emplace(io, o.tunnel, std::move(pc), [&runner](std::vector<uint8_t> f) {
      return runner.send_tunnel_frame(std::move(f));
    });
    runner.set_tunnel(&*tunnel);
  }
  // Local control socket for connect/disconnect (owner-only; never a network port).
  const std::string sock_path = o.paths.socket().string();
  ::unlink(sock_path.c_str());
  asio::local::stream_protocol::acceptor acceptor(io);
  {
    const mode_t old = ::umask(0177);
    acceptor.open();
    acceptor.bind(asio::local::stream_protocol::endpoint(sock_path));
    acceptor.listen();
    ::umask(old);
  }
  asio::co_spawn(io, control_socket_loop(acceptor, runner), asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code e, int) {
    if (!e) {
      if (tunnel) tunnel->stop();
      runner.stop();
    }
  });
  asio::co_spawn(io, runner.loop(), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("agent: {}", ex.what());
      }
    }
    signals.cancel();
    boost::system::error_code ec;
    acceptor.close(ec);
    if (tunnel) tunnel->stop();
    // Let the last frames (PeerClose, Close) and DTLS alerts go out.
    asio::post(io, [&io] { io.stop(); });
  });
  io.run();
  ::unlink(sock_path.c_str());
  return runner.exit_code();
}

std::string agent_command(const AgentPaths& paths, const std::string& command) {
  asio::io_context io;
  asio::local::stream_protocol::socket s(io);
  boost::system::error_code ec;
  s.connect(asio::local::stream_protocol::endpoint(paths.socket().string()), ec);
  if (ec)
    throw std::runtime_error("the agent is not running in " + paths.dir.string() + " (" +
                             paths.socket().string() + ": " + ec.message() + ")");
  asio::write(s, asio::buffer(command + "\n"));
  std::string line;
  asio::read_until(s, asio::dynamic_buffer(line, 1 << 20), '\n', ec);
  if (ec && line.empty()) throw std::runtime_error("no answer from the agent: " + ec.message());
  return line.substr(0, line.find('\n'));
}

}  // namespace torii::net

// toriid — the torii management server: device enrollment and registration over TLS 1.3 with
// mutual certificates, STUN for NAT discovery, keepalive, revocation, admin API (A1-A5).
// Thin: parses settings, opens the data directory, wires adapters to the core, runs.
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/stubs/logging.h>
#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <fstream>
#include <iostream>
#include <thread>

#include "net/admin_api.hpp"
#include "net/audit_log.hpp"
#include "net/ca_issuer.hpp"
#include "net/control_server.hpp"
#include "net/relay_server.hpp"
#include "net/server_admin.hpp"
#include "net/server_config.hpp"
#include "net/stun_server.hpp"
#include "pki/key_store.hpp"
#include "pki/pki.hpp"
#include "store/sqlite_store.hpp"

namespace fs = std::filesystem;
using namespace torii;

namespace {

std::string load_or_create_admin_token(const fs::path& file) {
  if (fs::exists(file)) {
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077))
      throw std::runtime_error("admin token " + file.string() +
                               " is readable by others; chmod 600 " + file.string());
    std::ifstream in(file);
    std::string t;
    std::getline(in, t);
    if (t.size() < 32) throw std::runtime_error("admin token " + file.string() + " is too short");
    return t;
  }
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("RAND_bytes failed");
  static const char* kHex = "0123456789abcdef";
  std::string t;
  for (uint8_t b : raw) t += {kHex[b >> 4], kHex[b & 15]};
  pki::write_file_atomic(file, t + "\n", 0600);
  return t;
}

std::string default_advertise(const Endpoint& listen) {
  const std::string port = std::to_string(listen.port);
  const bool any =
      listen.is_v4() ? listen.v4_host_order() == 0 : listen.addr == std::array<uint8_t, 16>{};
  if (!any) return listen.to_string();
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0 && host[0]) return std::string(host) + ":" + port;
  return "127.0.0.1:" + port;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "toriid — torii management server (device registration, STUN, peer signaling and relay, "
      "admin API)"};
  app.set_version_flag("--version", std::string("toriid ") + TORII_VERSION);
  net::ServerSettings s;
  std::string config_file;
  std::optional<std::string> data_dir, listen, stun, stun_alt, relay, overlay4, overlay6, api,
      advertise, log_level;
  std::optional<int> threads;
  app.add_option("-c,--config", config_file, "TOML configuration file (flags override it)")
      ->check(CLI::ExistingFile);
  app.add_option("-d,--data-dir", data_dir, "State directory: CA, keys, database, admin token")
      ->envname("TORII_DATA_DIR");
  app.add_option("--listen", listen, "Control port, TLS 1.3 (default 0.0.0.0:7443)");
  app.add_option("--stun", stun, "STUN UDP address (default 0.0.0.0:3478)");
  app.add_option("--stun-alt", stun_alt,
                 "Second STUN address ADDR:PORT (other IP and port) for RFC 5780 NAT behaviour "
                 "discovery");
  app.add_option("--relay", relay,
                 "UDP tunnel relay ADDR:PORT, or 'off' to relay only inside TLS (default "
                 "0.0.0.0:3480)");
  app.add_option("--overlay-ipv4", overlay4,
                 "Overlay IPv4 prefix devices get addresses from (default 100.64.0.0/10)");
  app.add_option("--overlay-ipv6", overlay6,
                 "Overlay IPv6 ULA prefix (default: a /64 derived from the CA)");
  app.add_option("--api", api,
                 "Admin API: ADDR:PORT or unix:PATH (default 127.0.0.1:7444, localhost only)");
  app.add_option("--advertise", advertise,
                 "HOST:PORT devices use to reach the control port (put in enroll commands)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default info)");
  app.add_option("--threads", threads, "I/O threads (default: one per core)");
  CLI11_PARSE(app, argc, argv);
  // Malformed strings from a peer would make libprotobuf write to stderr for every message: the
  // decoder already refuses them (counted as malformed), so its own logging only adds noise.
  google::protobuf::SetLogHandler(nullptr);

  try {
    if (!config_file.empty()) {
      std::ifstream in(config_file);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      net::apply_toml(text, s);
    }
    if (data_dir) s.data_dir = *data_dir;
    if (listen) s.listen = *listen;
    if (stun) s.stun = *stun;
    if (stun_alt) s.stun_alt = *stun_alt;
    if (relay) s.relay = *relay;
    if (overlay4) s.overlay_ipv4 = *overlay4;
    if (overlay6) s.overlay_ipv6 = *overlay6;
    if (api) s.api = *api;
    if (advertise) s.advertise = *advertise;
    if (log_level) s.log_level = *log_level;
    if (threads) s.threads = *threads;
    net::validate(s);
  } catch (const std::exception& e) {
    std::cerr << "toriid: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(s.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  try {
    std::error_code ec;
    fs::create_directories(s.data_dir, ec);
    if (ec)
      throw std::runtime_error("cannot create data directory " + s.data_dir.string() + ": " +
                               ec.message());
    ::chmod(s.data_dir.c_str(), 0700);
    bool created = false;
    auto ca = pki::CertificateAuthority::open(s.data_dir, &created);
    const std::string fp = pki::fingerprint_hex(ca.ca_fingerprint());
    const std::string admin_token = load_or_create_admin_token(s.data_dir / "admin.token");
    auto store = store::SqliteStore::open(s.data_dir / "torii.db");

    const Endpoint listen_ep = net::parse_listen("--listen", s.listen);
    const Endpoint stun_ep = net::parse_listen("--stun", s.stun);
    std::optional<Endpoint> stun_alt_ep;
    if (!s.stun_alt.empty()) stun_alt_ep = net::parse_listen("--stun-alt", s.stun_alt);
    if (s.advertise.empty()) s.advertise = default_advertise(listen_ep);

    boost::asio::io_context io;
    net::AuditLog audit(*store);
    net::CaIssuer issuer(ca);
    net::ControlServerOptions copts;
    copts.listen = listen_ep;
    copts.core.stun_port = stun_ep.port;
    // A9 overlay plan: configured prefixes, or a ULA derived from this deployment's CA.
    {
      const auto ca_fp = ca.ca_fingerprint();
      copts.core.overlay.derive_ula(ca_fp);
      copts.core.overlay.set_ipv4(s.overlay_ipv4);
      copts.core.overlay.set_ipv6(s.overlay_ipv6);
    }
    std::unique_ptr<net::RelayServer> relay_server;
    if (s.relay != "off") {
      // A6 relay on its own thread (issue 4): relayed traffic never delays the control plane.
      relay_server = std::make_unique<net::RelayServer>(net::parse_listen("--relay", s.relay));
      copts.core.relay_port = relay_server->local_endpoint().port;
    }
    copts.core.per_source.max_failures = s.auth_failures_per_source;
    copts.core.per_device.max_failures = s.auth_failures_per_device;
    copts.core.per_source.lockout = copts.core.per_device.lockout =
        std::chrono::seconds(s.auth_lockout_seconds);
    net::ControlServer control(io, *store, ca, issuer, audit, copts);
    control.set_relay(relay_server.get());
    net::StunServer stun_server(io, stun_ep, stun_alt_ep);
    net::ServerAdmin admin(*store, control, audit,
                           {s.advertise, fp, std::chrono::seconds(s.token_ttl_seconds)});
    net::AdminApi api_server(io, s.api, admin_token, admin);
    admin.set_stun(&stun_server);
    admin.set_relay(relay_server.get());
    admin.set_unauthorized_counter([&] { return api_server.unauthorized_count(); });

    control.start();
    stun_server.start();
    if (relay_server) relay_server->start();
    api_server.start();
    pki::write_file_atomic(s.data_dir / "api.endpoint", api_server.bound_endpoint() + "\n", 0600);

    std::cout << "toriid " << TORII_VERSION << (created ? " (new CA created)" : "") << "\n"
              << "  data dir    " << s.data_dir.string() << "\n"
              << "  control     " << control.local_endpoint().to_string()
              << " (TLS 1.3, mutual certificates; devices use " << s.advertise << ")\n"
              << "  STUN        " << stun_ep.to_string()
              << (stun_alt_ep ? " + alternate " + stun_alt_ep->to_string() + " (RFC 5780)"
                              : " (no --stun-alt: NAT filtering/mapping tests limited)")
              << "\n"
              << "  relay       "
              << (relay_server ? relay_server->local_endpoint().to_string() + " (UDP)"
                               : std::string("inside TLS only (--relay off)"))
              << "\n"
              << "  overlay     " << copts.core.overlay.ipv4_cidr() << ", "
              << copts.core.overlay.ipv6_cidr() << "\n"
              << "  admin API   " << api_server.bound_endpoint() << " (token in "
              << (s.data_dir / "admin.token").string() << ")\n"
              << "CA fingerprint (SHA-256): " << fp << "\n"
              << std::flush;
    audit.append({0, net::ControlServer::now().wall, "server.start", "", "local",
                  "toriid " TORII_VERSION " listening on " + s.listen});

    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::steady_timer grace(io);
    signals.async_wait([&](boost::system::error_code e, int sig) {
      if (e) return;
      spdlog::info("signal {}: closing sessions (close_notify) and stopping", sig);
      control.shutdown();
      stun_server.stop();
      if (relay_server) relay_server->stop();
      api_server.stop();
      grace.expires_after(std::chrono::milliseconds(500));
      grace.async_wait([&](boost::system::error_code) { io.stop(); });
    });
    ::signal(SIGPIPE, SIG_IGN);

    const int n =
        s.threads > 0 ? s.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int i = 1; i < n; ++i) pool.emplace_back([&] { io.run(); });
    io.run();
    for (auto& t : pool) t.join();
    control.flush_presence();
    audit.append({0, net::ControlServer::now().wall, "server.stop", "", "local", "toriid stopped"});
    audit.flush();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "toriid: " << e.what() << "\n";
    return 1;
  }
}

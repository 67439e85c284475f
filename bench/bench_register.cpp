// bench_register: registrations per second against a running toriid. One registration is what
// a device does when it (re)connects: a fresh TCP connection, a full mutual-TLS 1.3 handshake,
// Hello -> Welcome, Attributes -> AttributesAck, then Close + close_notify, waiting for the
// server's close_notify. C coroutines on one io_context repeat it; coroutine w only uses devices
// w, w+C, w+2C, ... so two concurrent connections never share a device ID (the server would
// replace the older session).
//
//   bench_register provision --data-dir D --devices N [--group bench]   (toriid stopped)
//   bench_register --server 127.0.0.1:PORT --data-dir D --concurrency 32 --duration 15 [--json]
#include <CLI/CLI.hpp>
#include <csignal>
#include <map>

#include "bench/bench_common.hpp"
#include "core/control/frame.hpp"

using namespace torii;
using namespace torii::bench;

namespace {

struct LoadOptions {
  std::string server;
  fs::path data_dir;
  fs::path creds;
  size_t devices = 0;  // 0: all provisioned
  size_t concurrency = 32;
  double duration = 15;
  size_t count = 0;  // 0: run for --duration
  int threads = 1;
  std::string source_base = "127.1.0.0";
  uint32_t sources = 250;
  double timeout = 10;  // per registration
  bool vary_attributes = false;
  bool json = false;
};

struct WorkerStats {
  uint64_t ok = 0;
  uint64_t failed = 0;
  std::vector<double> total_ms;  // connect start -> server's close_notify
  std::vector<double> ack_ms;    // connect start -> AttributesAck
  double last_end = 0;
  std::map<std::string, uint64_t> errors;
};

struct Shared {
  const LoadOptions& o;
  tcp::endpoint server;
  SSL_CTX* ctx;
  std::vector<pki::X509Ptr> certs;
  std::vector<std::string> ids;
  SourceRotation sources;
  double deadline = 0;
  std::atomic<uint64_t> started{0};
  std::atomic<uint64_t> connections{0};
  std::atomic<bool> stop{false};
};

using session::AgentActions;

asio::awaitable<void> send_frames(net::TlsStream& tls, AgentActions& acts, bool& close_requested,
                                  bool& established) {
  for (auto& a : acts) {
    if (auto* s = std::get_if<session::agent_action::Send>(&a)) {
      co_await tls.write_all(s->frame.data(), s->frame.size());
    } else if (std::get_if<session::agent_action::Close>(&a)) {
      close_requested = true;
    } else if (std::get_if<session::agent_action::Established>(&a)) {
      established = true;
    }
  }
  acts.clear();
}

// One registration; throws with the stage in `stage` on failure. Returns the AttributesAck time.
asio::awaitable<double> register_once(Shared& g, size_t dev, std::string& stage) {
  auto ex = co_await asio::this_coro::executor;
  stage = "connect";
  const auto src = g.sources.pick(g.connections.fetch_add(1));
  const Duration timeout(int64_t(g.o.timeout * 1000));
  tcp::socket sock = co_await connect_from(src, g.server, timeout);
  auto tls = std::make_shared<net::TlsStream>(std::move(sock), g.ctx, false);
  Credentials::use_device(tls->ssl(), g.certs[dev].get());
  // Whole-registration bound: closing the socket wakes whatever is pending.
  asio::steady_timer guard(ex, timeout);
  guard.async_wait([tls](boost::system::error_code e) {
    if (!e) tls->close();
  });
  struct Cancel {
    asio::steady_timer& t;
    ~Cancel() { t.cancel(); }
  } cancel{guard};

  stage = "handshake";
  co_await tls->handshake();

  stage = "welcome";
  session::AgentSession s(
      BenchAttributes::agent_config(g.ids[dev], limits::kDefaultKeepaliveInterval));
  AgentActions acts;
  bool close_requested = false, established = false, attrs_sent = false, acked = false;
  s.start(mono_now(), acts);
  co_await send_frames(*tls, acts, close_requested, established);
  control::FrameDecoder dec;
  uint8_t buf[512];
  pb::Envelope env;
  while (!acked) {
    auto r = co_await tls->read_some(buf, sizeof buf);
    if (r.status != net::ReadStatus::data)
      throw std::runtime_error("connection ended" +
                               (s.end_message().empty() ? "" : " (" + s.end_message() + ")"));
    if (!dec.feed(buf, r.n)) throw std::runtime_error("oversized frame");
    while (auto f = dec.next()) {
      if (control::decode_envelope(reinterpret_cast<const uint8_t*>(f->data()), f->size(), env) ==
              control::DecodeError::none &&
          env.has_attributes_ack())
        acked = true;
      s.on_frame(mono_now(), *f, acts);
    }
    co_await send_frames(*tls, acts, close_requested, established);
    if (s.end_reason() != session::EndReason::none || close_requested)
      throw std::runtime_error(std::string(session::to_string(s.end_reason())) + ": " +
                               s.end_message());
    if (established && !attrs_sent) {
      stage = "attributes";
      attrs_sent = true;
      std::string pub = BenchAttributes::kPublic;
      if (g.o.vary_attributes)
        pub = "198.51.100." + std::to_string(1 + g.started.load() % 250) + ":" +
              std::to_string(1024 + g.connections.load() % 60000);
      s.send_attributes(mono_now(), BenchAttributes::message(pub), acts);
      co_await send_frames(*tls, acts, close_requested, established);
    }
  }
  const double ack = now_s();

  stage = "close";
  s.close(mono_now(), acts);  // Close{SHUTDOWN}, then close_notify (A5)
  co_await send_frames(*tls, acts, close_requested, established);
  co_await tls->shutdown();
  for (int i = 0; i < 16; ++i) {  // until the server's close_notify (or EOF)
    auto r = co_await tls->read_some(buf, sizeof buf);
    if (r.status != net::ReadStatus::data) break;
  }
  tls->close();
  co_return ack;
}

asio::awaitable<void> worker(Shared& g, size_t w, WorkerStats& st) {
  const size_t n = g.certs.size(), c = g.o.concurrency;
  const size_t mine = (n - w + c - 1) / c;  // devices w, w+c, w+2c, ... below n
  uint64_t consecutive_failures = 0;
  for (size_t j = 0; !g.stop; ++j) {
    if (now_s() >= g.deadline) break;
    if (g.o.count && g.started.fetch_add(1) >= g.o.count) break;
    if (!g.o.count) g.started.fetch_add(1);
    const size_t dev = w + c * (j % mine);
    const double t0 = now_s();
    std::string stage;
    bool failed = false;
    try {
      double ack = co_await register_once(g, dev, stage);
      const double t1 = now_s();
      ++st.ok;
      st.total_ms.push_back((t1 - t0) * 1e3);
      st.ack_ms.push_back((ack - t0) * 1e3);
      st.last_end = t1;
      consecutive_failures = 0;
    } catch (const std::exception& e) {
      ++st.failed;
      std::string what = e.what();
      if (what.size() > 120) what.resize(120);
      ++st.errors[stage + ": " + what];
      st.last_end = now_s();
      // Do not hammer a server that refuses everything: back off a little, and give up after
      // a long run of failures with no success.
      failed = true;
    }
    if (failed) {
      if (++consecutive_failures >= 200 && st.ok == 0) break;
      auto ex = co_await asio::this_coro::executor;
      asio::steady_timer t(ex, std::chrono::milliseconds(20));
      co_await t.async_wait(asio::use_awaitable);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// In-process anchors, single thread: what OpenSSL alone allows on this machine with torii's real
// TLS contexts (no sockets, no server logic), to tell torii's cost from the library's.

struct AnchorResult {
  double handshakes_per_s = 0;  // full mutual TLS 1.3 handshake, client + server, memory BIOs
  double cert_parse_per_s = 0;  // d2i_X509 of a device certificate
  double ssl_new_free_per_s = 0;
  // Experiment, not the product's configuration: the same handshake resumed from a TLS 1.3
  // ticket (psk_dhe_ke: X25519 but no certificates or signatures on the wire).
  double resumed_handshakes_per_s = 0;
  double resumed_fraction = 0;  // of those handshakes, how many the server actually resumed
};

// Runs fn repeatedly for `seconds`; returns calls per second.
template <typename F>
double rate(double seconds, F&& fn) {
  const double t0 = now_s();
  uint64_t n = 0;
  double t = t0;
  while ((t = now_s()) - t0 < seconds) {
    for (int i = 0; i < 8; ++i) fn();
    n += 8;
  }
  return double(n) / (t - t0);
}

// One handshake over a memory BIO pair. With `resume`, offers that session; with `ticket`,
// reads the server's NewSessionTicket afterwards and returns the session there.
bool memory_handshake(SSL_CTX* sctx, SSL_CTX* cctx, X509* cert, SSL_SESSION* resume = nullptr,
                      SSL_SESSION** ticket = nullptr) {
  SSL* c = SSL_new(cctx);
  SSL* s = SSL_new(sctx);
  Credentials::use_device(c, cert);
  if (resume) SSL_set_session(c, resume);
  BIO *cb = nullptr, *sb = nullptr;
  BIO_new_bio_pair(&cb, 0, &sb, 0);
  SSL_set_bio(c, cb, cb);
  SSL_set_bio(s, sb, sb);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  bool cdone = false, sdone = false, ok = true;
  for (int i = 0; i < 20 && !(cdone && sdone); ++i) {
    if (!cdone) {
      const int r = SSL_do_handshake(c);
      if (r == 1)
        cdone = true;
      else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) {
        ok = false;
        break;
      }
    }
    if (!sdone) {
      const int r = SSL_do_handshake(s);
      if (r == 1)
        sdone = true;
      else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) {
        ok = false;
        break;
      }
    }
  }
  ok = ok && cdone && sdone && SSL_get_verify_result(s) == X509_V_OK &&
       SSL_get0_peer_certificate(s) != nullptr;
  if (resume) ok = ok && SSL_session_reused(c) == 1;
  if (ok && ticket) {
    // The ticket arrives after the handshake: one server write and one client read move it.
    uint8_t b[8];
    size_t k = 0;
    SSL_write_ex(s, "x", 1, &k);
    ok = SSL_read_ex(c, b, sizeof b, &k) == 1;
    *ticket = ok ? SSL_get1_session(c) : nullptr;
    ok = ok && *ticket;
  }
  // As after a clean close: an SSL freed mid-connection marks its session not resumable.
  SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(c);
  SSL_free(s);
  ERR_clear_error();
  return ok;
}

AnchorResult measure_anchors(const fs::path& data_dir, const Credentials& creds, double seconds) {
  AnchorResult r;
  auto ca = pki::CertificateAuthority::open(data_dir);
  auto sctx = net::make_server_context(ca);
  auto cctx = creds.client_context();
  auto cert = creds.cert(0);
  if (!memory_handshake(sctx.get(), cctx.get(), cert.get()))
    throw std::runtime_error("in-memory handshake failed: " + net::openssl_errors());
  r.handshakes_per_s = rate(seconds, [&] { memory_handshake(sctx.get(), cctx.get(), cert.get()); });
  const auto [off, len] = creds.der_at[0];
  r.cert_parse_per_s = rate(seconds / 3, [&] {
    auto x = pki::cert_from_der(reinterpret_cast<const uint8_t*>(creds.der_blob.data()) + off, len);
  });
  r.ssl_new_free_per_s = rate(seconds / 3, [&] { SSL_free(SSL_new(sctx.get())); });
  {
    // Resumption experiment: contexts that issue and accept TLS 1.3 tickets.
    auto rs = net::make_server_context(ca);
    SSL_CTX_set_num_tickets(rs.get(), 1);
    static const unsigned char kSidCtx[] = "torii-bench";  // required to resume with client auth
    SSL_CTX_set_session_id_context(rs.get(), kSidCtx, sizeof kSidCtx - 1);
    auto rc = creds.client_context();
    SSL_CTX_set_session_cache_mode(rc.get(), SSL_SESS_CACHE_CLIENT);
    SSL_SESSION* t = nullptr;
    const bool first = memory_handshake(rs.get(), rc.get(), cert.get(), nullptr, &t);
    SSL_SESSION* t2 = nullptr;
    const bool again = first && memory_handshake(rs.get(), rc.get(), cert.get(), t, &t2);
    if (t2) {
      SSL_SESSION_free(t);
      t = t2;
    }
    if (!again)
      std::fprintf(stderr, "resumption experiment failed (%s)\n", first ? "resume" : "ticket");
    else {
      uint64_t tried = 0, resumed = 0;
      const double per_s = rate(seconds / 3, [&] {
        // Tickets are single-use for the client (RFC 8446 C.4): resume with the newest one.
        ++tried;
        SSL_SESSION* next = nullptr;
        resumed += memory_handshake(rs.get(), rc.get(), cert.get(), t, &next) ? 1 : 0;
        if (next) {
          SSL_SESSION_free(t);
          t = next;
        }
      });
      r.resumed_handshakes_per_s = per_s;
      r.resumed_fraction = tried ? double(resumed) / double(tried) : 0;
    }
    SSL_SESSION_free(t);
  }
  return r;
}

int run_load(const LoadOptions& o) {
  const fs::path creds_dir = o.creds.empty() ? o.data_dir / "bench" : o.creds;
  auto creds = load_credentials(creds_dir);
  Shared g{o, parse_server(o.server), nullptr, {}, {}, {}};
  const size_t n = o.devices ? std::min(o.devices, creds.count) : creds.count;
  if (o.concurrency == 0 || n < o.concurrency)
    throw std::runtime_error("--concurrency must be 1.." + std::to_string(n) +
                             " (each concurrent connection needs its own devices)");
  for (size_t i = 0; i < n; ++i) {
    g.certs.push_back(creds.cert(i));
    g.ids.push_back(creds.id(i));
  }
  auto ctx = creds.client_context();
  g.ctx = ctx.get();
  g.sources.base = loopback_v4(o.source_base).to_uint();
  g.sources.count = std::max<uint32_t>(1, o.sources);
  g.sources.check();

  const int threads = std::clamp(o.threads, 1, 2);
  asio::io_context io(threads);
  std::vector<WorkerStats> stats(o.concurrency);
  const double t_start = now_s();
  const double limit = o.count && o.duration <= 0 ? 600 : o.duration;
  g.deadline = t_start + limit;
  std::atomic<size_t> live{o.concurrency};
  for (size_t w = 0; w < o.concurrency; ++w) {
    // When the last worker ends, stop: the hard timer and the signal set would keep run() alive.
    auto done = [&live, &io](std::exception_ptr) {
      if (--live == 0) io.stop();
    };
    if (threads > 1)
      asio::co_spawn(asio::make_strand(io), worker(g, w, stats[w]), done);
    else
      asio::co_spawn(io, worker(g, w, stats[w]), done);
  }
  // Hard bound: in-flight registrations get `timeout` after the deadline, then everything stops.
  asio::steady_timer hard(io, std::chrono::milliseconds(int64_t((limit + o.timeout + 5) * 1000)));
  bool cut = false;
  hard.async_wait([&](boost::system::error_code e) {
    if (!e) {
      cut = true;
      io.stop();
    }
  });
  asio::signal_set sig(io, SIGINT, SIGTERM);
  sig.async_wait([&](boost::system::error_code e, int) {
    if (!e) g.stop = true;
  });
  const double cpu0 = cpu_seconds();
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  const double cpu = cpu_seconds() - cpu0;

  WorkerStats all;
  double t_end = t_start;
  for (auto& s : stats) {
    all.ok += s.ok;
    all.failed += s.failed;
    all.total_ms.insert(all.total_ms.end(), s.total_ms.begin(), s.total_ms.end());
    all.ack_ms.insert(all.ack_ms.end(), s.ack_ms.begin(), s.ack_ms.end());
    t_end = std::max(t_end, s.last_end);
    for (auto& [k, v] : s.errors) all.errors[k] += v;
  }
  const double elapsed = std::max(1e-3, t_end - t_start);
  nlohmann::json j{
      {"server", o.server},
      {"concurrency", o.concurrency},
      {"devices", n},
      {"client_threads", threads},
      {"vary_attributes", o.vary_attributes},
      {"registrations", all.ok},
      {"failures", all.failed},
      {"elapsed_s", elapsed},
      {"regs_per_s", double(all.ok) / elapsed},
      {"p50_ms", percentile(all.total_ms, 50)},
      {"p99_ms", percentile(all.total_ms, 99)},
      {"max_ms",
       all.total_ms.empty() ? 0.0 : *std::max_element(all.total_ms.begin(), all.total_ms.end())},
      {"ack_p50_ms", percentile(all.ack_ms, 50)},
      {"ack_p99_ms", percentile(all.ack_ms, 99)},
      {"client_cpu_s", cpu},
      {"client_cpu_us_per_reg", all.ok ? cpu / double(all.ok) * 1e6 : 0.0},
      {"cut_by_hard_limit", cut},
      {"errors", all.errors},
  };
  if (o.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::printf(
        "%zu devices, concurrency %zu: %llu registrations in %.2f s = %.0f/s, failures %llu\n"
        "latency (connect -> server close_notify) p50 %.2f ms p99 %.2f ms; to AttributesAck p50 "
        "%.2f ms p99 %.2f ms\nclient CPU %.2f s (%.0f us per registration)\n",
        n, o.concurrency, (unsigned long long)all.ok, elapsed, double(all.ok) / elapsed,
        (unsigned long long)all.failed, j["p50_ms"].get<double>(), j["p99_ms"].get<double>(),
        j["ack_p50_ms"].get<double>(), j["ack_p99_ms"].get<double>(), cpu,
        j["client_cpu_us_per_reg"].get<double>());
    for (auto& [k, v] : all.errors) std::printf("  %llu x %s\n", (unsigned long long)v, k.c_str());
  }
  return all.ok > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_register — registrations per second against a running toriid"};
  LoadOptions o;
  app.add_option("--server", o.server, "toriid control port HOST:PORT (loopback only)");
  app.add_option("-d,--data-dir", o.data_dir, "toriid data directory (credentials in <dir>/bench)");
  app.add_option("--creds", o.creds,
                 "Credentials folder written by `provision` (default <data-dir>/bench)");
  app.add_option("--devices", o.devices, "Use devices [0, N) (default: all provisioned)");
  app.add_option("-c,--concurrency", o.concurrency, "Concurrent registrations")
      ->check(CLI::Range(1, 10000));
  app.add_option("--duration", o.duration, "Seconds to run (default 15)")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--count", o.count,
                 "Stop after K registrations (bounded by --duration if given, else 600 s)");
  app.add_option("--threads", o.threads, "Threads running the io_context (1 or 2)")
      ->check(CLI::Range(1, 2));
  app.add_option("--source-base", o.source_base,
                 "Source addresses are base+1 .. base+sources (127/8)");
  app.add_option("--sources", o.sources, "Number of source addresses to rotate over");
  app.add_option("--timeout", o.timeout, "Seconds allowed per registration");
  app.add_flag("--vary-attributes", o.vary_attributes,
               "Send a new public endpoint each time (the server then writes attributes)");
  app.add_flag("--json", o.json, "One JSON line on stdout");

  ProvisionOptions p;
  auto* prov = app.add_subcommand("provision",
                                  "Create N enrolled bench devices in a stopped toriid's data dir");
  prov->add_option("-d,--data-dir", p.data_dir, "toriid data directory")->required();
  prov->add_option("--devices", p.devices, "How many devices")->required();
  prov->add_option("--group", p.group, "Group (created if missing)");
  prov->add_option("--prefix", p.prefix, "Device ID prefix (IDs are <prefix><6 digits>)");
  prov->add_option("--out", p.out, "Credentials folder (default <data-dir>/bench)");
  prov->add_option("--method", p.method, "sql (one transaction) or store (SqliteStore API)")
      ->check(CLI::IsMember({"sql", "store"}));
  prov->add_option("--jobs", p.jobs, "Threads issuing certificates (1-2)");
  bool prov_json = false;
  prov->add_flag("--json", prov_json, "One JSON line on stdout");
  double anchor_seconds = 3;
  bool anchor_json = false;
  fs::path anchor_dir, anchor_creds;
  auto* anc = app.add_subcommand(
      "anchor",
      "Single-thread in-process rates: full mutual TLS 1.3 handshake (memory BIOs), "
      "certificate parse, SSL_new");
  anc->add_option("-d,--data-dir", anchor_dir, "toriid data directory (CA, server key)")
      ->required();
  anc->add_option("--creds", anchor_creds, "Credentials folder (default <data-dir>/bench)");
  anc->add_option("--seconds", anchor_seconds, "Seconds for the handshake loop");
  anc->add_flag("--json", anchor_json, "One JSON line on stdout");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    if (*prov) {
      auto t = provision(p);
      nlohmann::json j{{"devices", p.devices}, {"method", p.method},   {"issue_s", t.issue_s},
                       {"db_s", t.db_s},       {"files_s", t.files_s}, {"total_s", t.total_s}};
      if (prov_json)
        std::cout << j.dump() << "\n";
      else
        std::printf(
            "provisioned %zu devices (%s): certificates %.2f s, database %.2f s, files "
            "%.2f s, total %.2f s\n",
            p.devices, p.method.c_str(), t.issue_s, t.db_s, t.files_s, t.total_s);
      return 0;
    }
    if (*anc) {
      auto creds = load_credentials(anchor_creds.empty() ? anchor_dir / "bench" : anchor_creds);
      auto r = measure_anchors(anchor_dir, creds, anchor_seconds);
      nlohmann::json j{{"tls13_mutual_handshakes_per_s_1core", r.handshakes_per_s},
                       {"cert_parse_per_s_1core", r.cert_parse_per_s},
                       {"ssl_new_free_per_s_1core", r.ssl_new_free_per_s},
                       {"experiment_resumed_handshakes_per_s_1core", r.resumed_handshakes_per_s},
                       {"experiment_resumed_fraction", r.resumed_fraction},
                       {"openssl", OpenSSL_version(OPENSSL_VERSION)}};
      if (anchor_json)
        std::cout << j.dump() << "\n";
      else
        std::printf(
            "one core, in process: %.0f full mutual TLS 1.3 handshakes/s (both sides), "
            "%.0f certificate parses/s, %.0f SSL_new+SSL_free/s; experiment: %.0f "
            "handshakes/s offering a ticket, %.0f %% resumed (%s)\n",
            r.handshakes_per_s, r.cert_parse_per_s, r.ssl_new_free_per_s,
            r.resumed_handshakes_per_s, 100 * r.resumed_fraction, OpenSSL_version(OPENSSL_VERSION));
      return 0;
    }
    if (o.server.empty() || (o.data_dir.empty() && o.creds.empty())) {
      std::cerr << "bench_register: --server and --data-dir (or --creds) are required\n";
      return 2;
    }
    return run_load(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_register: " << e.what() << "\n";
    return 1;
  }
}

// bench_echo: the server's responsiveness as a device sees it (A4 keepalive). One enrolled
// device (an agent state folder left by `torii-agent enroll`) opens its control session (mutual
// TLS, Hello -> Welcome) and then sends an ECHO every --interval-ms, timing each ECHO -> EchoReply
// round trip with the monotonic clock (µs; the agent itself keeps only whole ms). Used by
// bench/relay_throughput.sh to compare keepalive RTT with the relay idle and under load.
//
//   bench_echo --state-dir DIR [--server HOST:PORT] [--interval-ms 20] [--seconds 10]
//              [--delay 0] [--json]
//
// The device must not be running `torii-agent run` at the same time (the server would replace
// the older session). Prints sent / answered / lost and RTT median, p90, p99, max in ms; with
// --json one JSON object on stdout. Bounded: connect + handshake + Welcome within 10 s, the run
// within delay + seconds + 2 s (replies still outstanding then count as lost).
#include <CLI/CLI.hpp>

#include "bench/bench_common.hpp"
#include "net/agent_files.hpp"

using namespace torii;
using namespace torii::bench;

namespace {

struct Options {
  fs::path state_dir;
  std::string server;  // default: the server in agent.json
  double interval_ms = 20;
  double seconds = 10;
  double delay = 0;  // seconds connected before the first timed ECHO
  bool json = false;
};

struct Run {
  std::shared_ptr<net::TlsStream> tls;
  std::vector<double> sent_at;  // by seq - 1, seconds (monotonic)
  std::vector<double> rtt_ms;
  std::optional<session::AgentSession> session;  // Hello -> Welcome only
  uint64_t sent = 0, answered = 0;
  bool established = false;
  bool done = false;
  std::string error;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("missing " + p.string() + ": enroll the device first");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

asio::awaitable<void> reader(Run& r) {
  control::FrameDecoder dec;
  uint8_t buf[1024];
  pb::Envelope env;
  session::AgentActions acts;
  for (;;) {
    auto res = co_await r.tls->read_some(buf, sizeof buf);
    if (res.status != net::ReadStatus::data) {
      if (!r.done) r.error = "connection ended: " + res.error;
      break;
    }
    const double now = now_s();
    if (!dec.feed(buf, res.n)) break;
    while (auto f = dec.next()) {
      if (control::decode_envelope(reinterpret_cast<const uint8_t*>(f->data()), f->size(), env) !=
          control::DecodeError::none)
        continue;
      if (env.has_echo_reply()) {
        const uint64_t seq = env.echo_reply().seq();
        if (seq >= 1 && seq <= r.sent_at.size() && r.sent_at[seq - 1] > 0) {
          r.rtt_ms.push_back((now - r.sent_at[seq - 1]) * 1e3);
          r.sent_at[seq - 1] = 0;
          ++r.answered;
        }
        continue;
      }
      r.session->on_frame(mono_now(), *f, acts);
      for (auto& a : acts)
        if (std::holds_alternative<session::agent_action::Established>(a)) r.established = true;
      acts.clear();  // Welcome needs no answer; nothing else is expected
    }
  }
}

asio::awaitable<void> run(const Options& o, Run& r, tcp::endpoint server, SSL_CTX* ctx,
                          std::string device_id) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t(ex);
  // Connect, handshake and Welcome, bounded by a guard that closes the socket.
  tcp::socket sock(ex);
  asio::steady_timer guard(ex, std::chrono::seconds(10));
  bool timed_out = false;
  guard.async_wait([&](boost::system::error_code e) {
    if (e) return;
    timed_out = true;
    if (r.tls)
      r.tls->close();
    else
      sock.close();
  });
  co_await sock.async_connect(server, asio::use_awaitable);
  sock.set_option(tcp::no_delay(true));
  r.tls = std::make_shared<net::TlsStream>(std::move(sock), ctx, false);
  co_await r.tls->handshake();
  session::AgentConfig cfg;
  cfg.device_id = device_id;
  cfg.agent_version = "bench_echo";
  cfg.keepalive_interval = std::chrono::hours(1);  // our ECHOs, not the session's
  r.session.emplace(cfg);
  session::AgentActions acts;
  r.session->start(mono_now(), acts);
  for (auto& a : acts)
    if (auto* snd = std::get_if<session::agent_action::Send>(&a))
      co_await r.tls->write_all(snd->frame.data(), snd->frame.size());
  acts.clear();
  asio::co_spawn(ex, reader(r), asio::detached);
  while (!r.established && !timed_out && r.error.empty()) {
    t.expires_after(std::chrono::milliseconds(5));
    co_await t.async_wait(asio::use_awaitable);
  }
  guard.cancel();
  if (!r.established) throw std::runtime_error(r.error.empty() ? "no Welcome" : r.error);

  if (o.delay > 0) {
    t.expires_after(std::chrono::milliseconds(int64_t(o.delay * 1000)));
    co_await t.async_wait(asio::use_awaitable);
  }
  // Fixed-rate schedule (no drift): ECHO k leaves at start + k * interval.
  const auto interval = std::chrono::microseconds(int64_t(o.interval_ms * 1000));
  const auto start = std::chrono::steady_clock::now();
  const size_t n = size_t(o.seconds * 1000 / o.interval_ms);
  r.sent_at.assign(n, 0.0);
  for (size_t k = 0; k < n && r.error.empty(); ++k) {
    t.expires_at(start + interval * int64_t(k));
    co_await t.async_wait(asio::use_awaitable);
    auto frame = control::make_frame([&](pb::Envelope& e) { e.mutable_echo()->set_seq(k + 1); });
    r.sent_at[k] = now_s();
    ++r.sent;
    co_await r.tls->write_all(frame.data(), frame.size());
  }
  // Grace for the last replies.
  for (int i = 0; i < 200 && r.answered < r.sent && r.error.empty(); ++i) {
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(asio::use_awaitable);
  }
  r.done = true;
  try {
    co_await r.tls->shutdown();
  } catch (const std::exception&) {
  }
  r.tls->close();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"bench_echo: ECHO round trips of one device session against toriid"};
  app.add_option("--state-dir", o.state_dir, "agent state folder (torii-agent enroll)")->required();
  app.add_option("--server", o.server, "HOST:PORT (default: the server in agent.json)");
  app.add_option("--interval-ms", o.interval_ms, "ECHO every N ms")->check(CLI::Range(1.0, 1e4));
  app.add_option("--seconds", o.seconds, "how long to send ECHOs")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--delay", o.delay, "seconds to wait after Welcome")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_flag("--json", o.json, "one JSON object on stdout");
  CLI11_PARSE(app, argc, argv);

  try {
    const net::AgentPaths paths{o.state_dir};
    const auto id = net::load_identity(paths);
    const auto [host, port] = net::split_host_port(o.server.empty() ? id.server : o.server);
    const tcp::endpoint server(asio::ip::make_address(host), port);
    auto key = pki::FileKeyStore(paths.key()).load();
    auto cert = pki::cert_from_pem(read_file(paths.cert()));
    auto ca = pki::cert_from_pem(read_file(paths.ca()));
    if (!cert || !ca) throw std::runtime_error("unreadable certificate in " + o.state_dir.string());
    auto ctx = net::make_client_context(ca.get(), cert.get(), key.get());

    asio::io_context io(1);
    Run r;
    std::string failure;
    asio::co_spawn(io, run(o, r, server, ctx.get(), id.device_id), [&](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        failure = x.what();
      }
      if (r.tls) r.tls->close();
    });
    io.run_for(std::chrono::milliseconds(int64_t((o.delay + o.seconds + 15) * 1000)));
    if (!failure.empty()) throw std::runtime_error(failure);

    const uint64_t sent = r.sent;
    std::vector<double> v = r.rtt_ms;
    const double med = percentile(v, 50), p90 = percentile(v, 90), p99 = percentile(v, 99);
    const double mx = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    const uint64_t lost = sent - r.answered;
    if (o.json) {
      std::cout << nlohmann::json{{"device", id.device_id}, {"interval_ms", o.interval_ms},
                                  {"sent", sent},           {"answered", r.answered},
                                  {"lost", lost},           {"rtt_ms_median", med},
                                  {"rtt_ms_p90", p90},      {"rtt_ms_p99", p99},
                                  {"rtt_ms_max", mx},       {"error", r.error}}
                       .dump()
                << "\n";
    } else {
      std::printf(
          "%s: %llu ECHOs every %.0f ms, %llu answered, %llu lost; RTT ms median %.3f p90 "
          "%.3f p99 %.3f max %.3f%s%s\n",
          id.device_id.c_str(), (unsigned long long)sent, o.interval_ms,
          (unsigned long long)r.answered, (unsigned long long)lost, med, p90, p99, mx,
          r.error.empty() ? "" : "; ", r.error.c_str());
    }
    return r.answered > 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_echo: " << e.what() << "\n";
    return 1;
  }
}

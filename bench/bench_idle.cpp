// bench_idle: K concurrent idle device sessions against a running toriid, kept alive by the real
// AgentSession keepalive (ECHO after --keepalive of silence). One io_context, one coroutine per
// session reading, one ticker for all sessions' timers, writes spawned only when there is
// something to send. Sessions are devices [first, first+K) of a `bench_register provision`
// folder; each connection binds a loopback source address (127.x.y.z), at most --per-address
// connections per address, so the ephemeral port range is never exhausted.
//
// Phases: ramp (connect at --rate, at most --pending handshakes in flight, bounded by
// --ramp-timeout), hold (--hold seconds), close (Close + close_notify for every session, waiting
// for the server's close_notify, bounded by --close-timeout). Progress lines (JSON) go to stderr
// every --report-every seconds; the summary (JSON) to stdout.
//
//   bench_idle --server 127.0.0.1:PORT --creds D/bench --first 0 --count 5000 --keepalive 10
//              --hold 30 --source-base 127.20.0.0
#include <CLI/CLI.hpp>
#include <csignal>
#include <map>

#include "bench/bench_common.hpp"
#include "core/control/frame.hpp"

using namespace torii;
using namespace torii::bench;

namespace {

struct Options {
  std::string server;
  fs::path creds;
  size_t first = 0;
  size_t count = 1000;
  double rate = 1000;   // new connections per second
  size_t pending = 64;  // handshakes in flight at most
  double keepalive = 25;
  double hold = 60;
  double ramp_timeout = 0;  // 0: count / rate * 2 + 30
  double close_timeout = 30;
  double close_rate = 5000;
  std::string source_base = "127.20.0.0";
  size_t per_address = 10000;
  double report_every = 5;
};

struct Sess {
  size_t index = 0;
  std::shared_ptr<net::TlsStream> tls;
  std::optional<session::AgentSession> s;
  control::FrameDecoder dec;
  std::vector<std::vector<uint8_t>> outq;
  Instant next_tick{};
  bool writing = false;
  bool closing = false;
  bool established = false;
  bool ended = false;
};

struct G {
  G(const Options& opt, tcp::endpoint srv, const Credentials& c, SSL_CTX* x)
      : o(opt), server(srv), creds(c), ctx(x) {}
  const Options& o;
  tcp::endpoint server;
  const Credentials& creds;
  SSL_CTX* ctx = nullptr;
  SourceRotation src;
  std::vector<std::shared_ptr<Sess>> sessions;
  // Counters (single-threaded io_context).
  size_t spawned = 0, established = 0, failed = 0, pending = 0, live = 0;
  size_t ended_before_close = 0, closed_clean = 0, closed_unclean = 0;
  uint64_t echo_replies = 0;
  std::map<std::string, uint64_t> failures;
  std::map<std::string, uint64_t> drops;
  std::string phase = "ramp";
  bool stop = false;  // signal: skip to the close phase
  double t0 = 0;
  long rss_peak_kib = 0;
};

uint64_t echoes_sent(const G& g) {
  uint64_t n = 0;
  for (const auto& s : g.sessions)
    if (s && s->s) n += s->s->echoes_sent();
  return n;
}

asio::awaitable<void> write_loop(G& g, std::shared_ptr<Sess> x) {
  x->writing = true;
  try {
    while (!x->outq.empty()) {
      auto f = std::move(x->outq.front());
      x->outq.erase(x->outq.begin());
      co_await x->tls->write_all(f.data(), f.size());
    }
    if (x->closing) co_await x->tls->shutdown();  // close_notify (A5)
  } catch (const std::exception&) {
    x->outq.clear();
    x->tls->close();
  }
  x->writing = false;
}

void execute(G& g, const std::shared_ptr<Sess>& x, session::AgentActions& acts) {
  for (auto& a : acts) {
    if (auto* s = std::get_if<session::agent_action::Send>(&a)) {
      x->outq.push_back(std::move(s->frame));
    } else if (std::get_if<session::agent_action::Close>(&a)) {
      x->closing = true;
    } else if (std::get_if<session::agent_action::Established>(&a)) {
      x->established = true;
      ++g.established;
      --g.pending;
    }
  }
  acts.clear();
  if ((!x->outq.empty() || x->closing) && !x->writing && x->tls)
    asio::co_spawn(x->tls->socket().get_executor(), write_loop(g, x), asio::detached);
}

asio::awaitable<void> run_session(G& g, std::shared_ptr<Sess> x) {
  const Duration io_timeout = limits::kTlsHandshakeTimeout;
  std::string stage = "connect";
  bool failed = false;
  std::string why;
  try {
    const auto addr = asio::ip::address_v4(g.src.base + 1 + uint32_t(x->index / g.o.per_address));
    tcp::socket sock = co_await connect_from(addr, g.server, io_timeout);
    x->tls = std::make_shared<net::TlsStream>(std::move(sock), g.ctx, false);
    {
      auto cert = g.creds.cert(g.o.first + x->index);
      Credentials::use_device(x->tls->ssl(), cert.get());
    }
    stage = "handshake";
    {
      auto ex = co_await asio::this_coro::executor;
      asio::steady_timer guard(ex, io_timeout);
      std::weak_ptr<net::TlsStream> w = x->tls;
      guard.async_wait([w](boost::system::error_code e) {
        if (auto t = w.lock(); t && !e) t->close();
      });
      co_await x->tls->handshake();
      guard.cancel();
    }
    stage = "welcome";
    x->s.emplace(BenchAttributes::agent_config(g.creds.id(g.o.first + x->index),
                                               Duration(int64_t(g.o.keepalive * 1000))));
    session::AgentActions acts;
    const Instant now = mono_now();
    x->s->start(now, acts);
    x->next_tick = now + limits::kFirstMessageTimeout;
    execute(g, x, acts);
    uint8_t buf[256];
    pb::Envelope env;
    for (;;) {
      auto r = co_await x->tls->read_some(buf, sizeof buf);
      if (r.status != net::ReadStatus::data) {
        if (x->closing && r.status == net::ReadStatus::close_notify)
          ++g.closed_clean;
        else if (x->closing)
          ++g.closed_unclean;
        x->s->on_disconnected(mono_now(), r.status == net::ReadStatus::close_notify);
        break;
      }
      if (!x->dec.feed(buf, r.n)) break;
      while (auto f = x->dec.next()) {
        if (control::decode_envelope(reinterpret_cast<const uint8_t*>(f->data()), f->size(), env) ==
                control::DecodeError::none &&
            env.has_echo_reply())
          ++g.echo_replies;
        x->s->on_frame(mono_now(), *f, acts);
      }
      const bool was = x->established;
      execute(g, x, acts);
      if (!was && x->established)
        x->next_tick = mono_now() + Duration(int64_t(g.o.keepalive * 1000));
    }
    if (!x->established) {
      failed = true;
      why = x->s->end_message().empty() ? "connection ended before Welcome" : x->s->end_message();
    } else if (!x->closing) {
      ++g.ended_before_close;
      ++g.drops[std::string(session::to_string(x->s->end_reason())) + ": " + x->s->end_message()];
    }
  } catch (const std::exception& e) {
    failed = !x->established;
    why = e.what();
  }
  if (failed) {
    ++g.failed;
    --g.pending;
    if (why.size() > 100) why.resize(100);
    ++g.failures[stage + ": " + why];
  }
  if (x->established) --g.established;
  x->ended = true;
  if (x->tls) x->tls->close();
  --g.live;
}

// Keepalive for every session: AgentSession::tick when its next instant has come.
asio::awaitable<void> ticker(G& g) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  session::AgentActions acts;
  while (g.phase != "done") {
    t.expires_after(std::chrono::milliseconds(250));
    co_await t.async_wait(asio::use_awaitable);
    const Instant now = mono_now();
    for (auto& x : g.sessions) {
      if (!x || !x->s || x->ended || x->closing || now < x->next_tick) continue;
      const auto st = x->s->state();
      if (st != session::AgentState::awaiting_welcome && st != session::AgentState::established)
        continue;
      auto next = x->s->tick(now, acts);
      execute(g, x, acts);
      x->next_tick = next ? *next : now + std::chrono::seconds(1);
    }
  }
}

nlohmann::json progress(G& g) {
  g.rss_peak_kib = std::max(g.rss_peak_kib, vm_rss_kib());
  return {{"t", now_s() - g.t0},
          {"phase", g.phase},
          {"established", g.established},
          {"failed", g.failed},
          {"pending", g.pending},
          {"echoes_sent", echoes_sent(g)},
          {"echo_replies", g.echo_replies},
          {"rss_kib", vm_rss_kib()}};
}

asio::awaitable<void> sleep_for(double seconds) {
  asio::steady_timer t(co_await asio::this_coro::executor,
                       std::chrono::microseconds(int64_t(seconds * 1e6)));
  co_await t.async_wait(asio::use_awaitable);
}

asio::awaitable<void> controller(G& g) {
  auto ex = co_await asio::this_coro::executor;
  const auto& o = g.o;
  double next_report = now_s() + o.report_every;
  auto maybe_report = [&] {
    if (now_s() >= next_report) {
      next_report = now_s() + o.report_every;
      std::cerr << progress(g).dump() << std::endl;
    }
  };
  // Ramp.
  const double ramp_limit = o.ramp_timeout > 0 ? o.ramp_timeout : double(o.count) / o.rate * 2 + 30;
  const double ramp_end = now_s() + ramp_limit;
  const double t_ramp = now_s();
  double budget = 0, last = now_s();
  while (!g.stop && now_s() < ramp_end && (g.spawned < o.count || g.pending > 0)) {
    const double t = now_s();
    budget = std::min(budget + (t - last) * o.rate, double(o.pending));
    last = t;
    while (budget >= 1 && g.spawned < o.count && g.pending < o.pending) {
      budget -= 1;
      auto x = std::make_shared<Sess>();
      x->index = g.spawned;
      g.sessions[g.spawned] = x;
      ++g.spawned;
      ++g.pending;
      ++g.live;
      asio::co_spawn(ex, run_session(g, x), asio::detached);
    }
    maybe_report();
    co_await sleep_for(0.005);
  }
  const double ramp_s = now_s() - t_ramp;
  const size_t reached = g.established;
  std::cerr << nlohmann::json{{"event", "ramp_done"},
                              {"established", reached},
                              {"failed", g.failed},
                              {"pending", g.pending},
                              {"ramp_s", ramp_s}}
                   .dump()
            << std::endl;
  // Hold.
  g.phase = "hold";
  const uint64_t echoes0 = echoes_sent(g), replies0 = g.echo_replies;
  const double t_hold = now_s();
  while (!g.stop && now_s() - t_hold < o.hold) {
    maybe_report();
    co_await sleep_for(0.2);
  }
  const double hold_s = now_s() - t_hold;
  const uint64_t hold_echoes = echoes_sent(g) - echoes0, hold_replies = g.echo_replies - replies0;
  const size_t at_end_of_hold = g.established;
  progress(g);
  // Close, paced.
  g.phase = "close";
  const double t_close = now_s();
  size_t closed = 0;
  session::AgentActions acts;
  for (auto& x : g.sessions) {
    if (!x || x->ended || !x->s) continue;
    if (x->s->state() == session::AgentState::established ||
        x->s->state() == session::AgentState::awaiting_welcome) {
      x->s->close(mono_now(), acts);
      execute(g, x, acts);
    } else if (x->tls) {
      x->tls->close();
    }
    if (++closed % 100 == 0) co_await sleep_for(100.0 / o.close_rate);
  }
  while (g.live > 0 && now_s() - t_close < o.close_timeout) {
    maybe_report();
    co_await sleep_for(0.05);
  }
  const size_t stragglers = g.live;
  for (auto& x : g.sessions)
    if (x && !x->ended && x->tls) x->tls->close();
  while (g.live > 0 && now_s() - t_close < o.close_timeout + 5) co_await sleep_for(0.05);
  g.phase = "done";
  nlohmann::json j{{"server", o.server},
                   {"first", o.first},
                   {"count", o.count},
                   {"keepalive_s", o.keepalive},
                   {"established_at_ramp_end", reached},
                   {"established_at_hold_end", at_end_of_hold},
                   {"failed", g.failed},
                   {"ramp_s", ramp_s},
                   {"hold_s", hold_s},
                   {"hold_echoes_sent", hold_echoes},
                   {"hold_echo_replies", hold_replies},
                   {"hold_echoes_per_s", hold_s > 0 ? double(hold_echoes) / hold_s : 0.0},
                   {"ended_before_close", g.ended_before_close},
                   {"closed_clean", g.closed_clean},
                   {"closed_unclean", g.closed_unclean},
                   {"close_s", now_s() - t_close},
                   {"close_stragglers", stragglers},
                   {"client_rss_peak_kib", g.rss_peak_kib},
                   {"failures", g.failures},
                   {"drops", g.drops}};
  std::cout << j.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_idle — many concurrent idle device sessions with keepalive"};
  Options o;
  app.add_option("--server", o.server, "toriid control port HOST:PORT (loopback only)")->required();
  app.add_option("--creds", o.creds, "Credentials folder from `bench_register provision`")
      ->required();
  app.add_option("--first", o.first, "First device index");
  app.add_option("--count", o.count, "Sessions (devices [first, first+count))")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--rate", o.rate, "New connections per second")->check(CLI::Range(1.0, 100000.0));
  app.add_option("--pending", o.pending, "Handshakes in flight at most")
      ->check(CLI::Range(1, 10000));
  app.add_option("--keepalive", o.keepalive, "Keepalive interval, seconds (agent default 25)")
      ->check(CLI::Range(0.2, 600.0));
  app.add_option("--hold", o.hold, "Seconds to hold the sessions after the ramp")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--ramp-timeout", o.ramp_timeout,
                 "Seconds allowed for the ramp (default count/rate*2+30)");
  app.add_option("--close-timeout", o.close_timeout, "Seconds allowed for the close phase");
  app.add_option("--close-rate", o.close_rate, "Closes per second")->check(CLI::Range(100.0, 1e6));
  app.add_option("--source-base", o.source_base, "Source addresses base+1, base+2, ... (127/8)");
  app.add_option("--per-address", o.per_address, "Connections per source address")
      ->check(CLI::Range(1, 25000));
  app.add_option("--report-every", o.report_every, "Seconds between progress lines on stderr");
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    auto creds = load_credentials(o.creds);
    if (o.first + o.count > creds.count)
      throw std::runtime_error("devices [" + std::to_string(o.first) + ", " +
                               std::to_string(o.first + o.count) + ") not provisioned (" +
                               std::to_string(creds.count) + " in " + o.creds.string() + ")");
    auto ctx = creds.client_context();
    G g{o, parse_server(o.server), creds, ctx.get()};
    g.src.base = loopback_v4(o.source_base).to_uint();
    g.src.count = uint32_t((o.count + o.per_address - 1) / o.per_address);
    g.src.check();
    g.sessions.resize(o.count);
    g.t0 = now_s();
    asio::io_context io(1);
    asio::signal_set sig(io, SIGINT, SIGTERM);
    sig.async_wait([&](boost::system::error_code e, int) {
      if (!e) g.stop = true;
    });
    const double ramp_limit =
        o.ramp_timeout > 0 ? o.ramp_timeout : double(o.count) / o.rate * 2 + 30;
    // Hard bound on the whole run.
    asio::steady_timer hard(io, std::chrono::milliseconds(
                                    int64_t((ramp_limit + o.hold + o.close_timeout + 15) * 1000)));
    bool cut = false;
    hard.async_wait([&](boost::system::error_code e) {
      if (!e) {
        cut = true;
        io.stop();
      }
    });
    asio::co_spawn(io, ticker(g), asio::detached);
    asio::co_spawn(io, controller(g), [&](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          std::cerr << "bench_idle: " << ex.what() << "\n";
        }
      }
      g.phase = "done";
      hard.cancel();
      sig.cancel();
    });
    io.run();
    if (cut) {
      std::cerr << "bench_idle: hard time limit reached\n";
      return 1;
    }
    return g.failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_idle: " << e.what() << "\n";
    return 1;
  }
}

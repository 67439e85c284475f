// Peer-to-peer tunnels end to end in the in-process simulated network (A6-A11): the real
// ServerCore (signaling), RelayTable (UDP relay) and STUN answers on a public server node; two or
// more agents, each a PeerManager with real DTLS and the AEAD data channel, behind simulated NATs
// of every RFC 4787 kind. Simulated time, deterministic seeds.
//
// The grid: every pair of NAT kinds connects, with the expected path (direct where the NATs allow
// it, relay otherwise); setup time and round trips are printed for docs/benchmarks.md. Then: two
// devices behind one NAT, other-group refusal, revocation teardown, roaming, relay inside TLS when
// UDP is blocked, and silence toward strangers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/control/frame.hpp"
#include "core/p2p/peer_manager.hpp"
#include "core/p2p/relay_table.hpp"
#include "core/server/server_core.hpp"
#include "core/sim/network.hpp"
#include "core/stun/message.hpp"
#include "pki/pki.hpp"
#include "store/memory_store.hpp"

namespace torii::p2p {
namespace {

namespace fs = std::filesystem;
namespace pb = ::torii::control::v1;
using namespace std::chrono_literals;

constexpr uint16_t kStunPort = 3478, kRelayPort = 3480, kAgentPort = 5000;
const char* kServerAddr = "198.51.100.1";

UnixMs wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One CA and device credentials for the whole test binary (key generation is the slow part).
struct Pki {
  fs::path dir;
  std::optional<pki::CertificateAuthority> ca;
  Pki() {
    std::string tmpl = (fs::temp_directory_path() / "torii-p2p-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp");
    dir = tmpl;
    ca.emplace(pki::CertificateAuthority::open(dir));
  }
  ~Pki() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  struct Cred {
    std::shared_ptr<dtls::Context> ctx;
    std::string serial;
  };
  Cred issue(const std::string& id, const std::string& group) {
    auto key = pki::generate_p256_key();
    auto issued = ca->issue_device_cert(pki::make_csr(key.get(), id), id, group, wall_ms(), 24h);
    return {dtls::Context::create(const_cast<X509*>(ca->cert()), issued.cert.get(), key.get()),
            issued.serial_hex};
  }
  static Pki& get() {
    static Pki p;
    return p;
  }
};

enum class Kind {
  none,
  full_cone,
  restricted,
  port_restricted,
  symmetric,
  symmetric_random,
  blocked
};
const char* name(Kind k) {
  switch (k) {
    case Kind::none:
      return "none";
    case Kind::full_cone:
      return "full-cone";
    case Kind::restricted:
      return "restricted";
    case Kind::port_restricted:
      return "port-restricted";
    case Kind::symmetric:
      return "symmetric";
    case Kind::symmetric_random:
      return "symmetric-random";
    case Kind::blocked:
      return "udp-blocked";
  }
  return "?";
}
sim::NatConfig nat_config(Kind k) {
  sim::NatConfig c;
  using M = sim::Mapping;
  using F = sim::Filtering;
  switch (k) {
    case Kind::full_cone:
      c.mapping = M::endpoint_independent;
      c.filtering = F::endpoint_independent;
      break;
    case Kind::restricted:
      c.mapping = M::endpoint_independent;
      c.filtering = F::address_dependent;
      break;
    case Kind::port_restricted:
      c.mapping = M::endpoint_independent;
      c.filtering = F::address_and_port_dependent;
      break;
    case Kind::symmetric:
      c.mapping = M::address_and_port_dependent;
      c.filtering = F::address_and_port_dependent;
      break;
    case Kind::symmetric_random:
      c.mapping = M::address_and_port_dependent;
      c.filtering = F::address_and_port_dependent;
      c.allocation = sim::PortAllocation::random;
      break;
    case Kind::blocked:
      c.block_udp = true;
      break;
    case Kind::none:
      break;
  }
  return c;
}
// What the STUN probe reports for each kind (core/sim's tests check the probe against these).
std::pair<const char*, const char*> reported(Kind k) {
  switch (k) {
    case Kind::none:
      return {"no-nat", "no-nat"};
    case Kind::full_cone:
      return {"endpoint-independent", "endpoint-independent"};
    case Kind::restricted:
      return {"endpoint-independent", "address-dependent"};
    case Kind::port_restricted:
      return {"endpoint-independent", "address-and-port-dependent"};
    case Kind::symmetric:
    case Kind::symmetric_random:
      return {"address-and-port-dependent", "address-and-port-dependent"};
    case Kind::blocked:
      return {"udp-blocked", "udp-blocked"};
  }
  return {"unknown", "unknown"};
}
bool dependent(Kind k) {
  return k == Kind::symmetric || k == Kind::symmetric_random;
}
// The path a pair should end up on.
Path expected_path(Kind a, Kind b) {
  if (a == Kind::blocked || b == Kind::blocked) return Path::relay_tls;
  if (dependent(a) && dependent(b)) return Path::relay_udp;
  if (dependent(a) || dependent(b)) {
    const Kind sym = dependent(a) ? a : b, cone = dependent(a) ? b : a;
    if (cone == Kind::port_restricted && sym == Kind::symmetric_random) return Path::relay_udp;
  }
  return Path::direct;
}

class SimWorld {
 public:
  struct Agent {
    std::string id;
    sim::NodeId host = 0;
    std::optional<sim::NodeId> nat;
    std::unique_ptr<PeerManager> pm;
    server::SessionId sid = 0;
    std::vector<std::vector<uint8_t>> delivered;
    std::vector<std::string> logs;
    Endpoint overlay4;
    size_t fast_rx = 0, fast_tx = 0;  // datagrams that took the fast path
    bool ticking = true;
    stun::TransactionId stun_txn{};
    std::optional<Endpoint> srflx;
  };

  explicit SimWorld(uint64_t seed = 7) : net(seed, 10ms) {
    cfg.relay_port = kRelayPort;
    cfg.stun_port = kStunPort;
    const uint8_t seed_bytes[] = {1, 2, 3, 4, 5};
    cfg.overlay.derive_ula(seed_bytes);
    core.emplace(cfg, store);
    store.create_group({"g1", 0});
    store.create_group({"g2", 0});
    server = net.add_host("server", kServerAddr);
    net.set_receiver(server,
                     [this](Instant now, const Endpoint& local, const Endpoint& from,
                            std::span<const uint8_t> d) { on_server_udp(now, local, from, d); });
    schedule_server_tick();
  }

  server::Now snow() const { return {net.now(), 1'700'000'000'000 + to_ms(net.now())}; }

  Agent& add_agent(const std::string& id, Kind kind, const std::string& group = "g1",
                   std::optional<sim::NodeId> shared_nat = std::nullopt) {
    auto a = std::make_unique<Agent>();
    a->id = id;
    const int n = int(agents.size()) + 1;
    if (shared_nat) {
      a->nat = shared_nat;
      a->host = net.add_host(id, "192.168.50." + std::to_string(10 + n), shared_nat);
    } else if (kind == Kind::none) {
      a->host = net.add_host(id, "203.0.113." + std::to_string(n));
    } else {
      a->nat = net.add_nat("nat-" + id, "198.18.0." + std::to_string(n), nat_config(kind));
      a->host = net.add_host(id, "192.168." + std::to_string(n) + ".2", a->nat);
    }
    // Register the device, as enrollment would.
    auto cred = Pki::get().issue(id, group);
    store::Device d;
    d.id = id;
    d.group = group;
    store::EnrollmentToken t{id, server::hash_token("t-" + id), 1'000'000'000'000'000,
                             std::nullopt};
    store.add_device(d, t);
    EXPECT_TRUE(store.complete_enrollment(id, t.hash, 1, cred.serial, 9'000'000'000'000'000, {1}));
    auto [m, f] = reported(kind);
    store::DeviceAttributes attrs;
    attrs.nat_mapping = m;
    attrs.nat_filtering = f;
    const Endpoint pub = a->nat ? net.public_address_of(*a->nat) : net.address_of(a->host, 0);
    attrs.public_endpoint = Endpoint{pub.family, pub.addr, 40000}.to_string();
    store.update_attributes(id, attrs);

    PeerConfig pc;
    pc.device_id = id;
    pc.group = group;
    pc.dtls = cred.ctx;
    pc.identity = [](X509* c) -> std::optional<PeerIdentity> {
      auto i = c ? pki::device_identity(c) : std::nullopt;
      if (!i) return std::nullopt;
      return PeerIdentity{i->device_id, i->group, i->serial_hex};
    };
    pc.seed = 1000 + n;
    a->pm = std::make_unique<PeerManager>(pc);
    a->pm->set_wall_offset(1'700'000'000'000);
    Agent& ref = *a;
    agents.push_back(std::move(a));
    net.set_receiver(ref.host, [this, &ref](Instant now, const Endpoint&, const Endpoint& from,
                                            std::span<const uint8_t> d) {
      if (maybe_stun(ref, from, d)) return;
      if (fast_path) {  // as the agent's host does it (issue 4): in place, then the reference
        std::vector<uint8_t> copy(d.begin(), d.end());
        std::span<const uint8_t> plain;
        switch (ref.pm->open(now, from, copy, plain)) {
          case PeerManager::Rx::plain:
            ++ref.fast_rx;
            ref.delivered.emplace_back(plain.begin(), plain.end());
            return;
          case PeerManager::Rx::consumed:
            ++ref.fast_rx;
            return;
          case PeerManager::Rx::slow:
            break;
        }
      }
      PeerActions out;
      ref.pm->on_udp(now, from, d, out);
      execute(ref, out);
    });
    // Control session (TLS in real life; frames with latency here).
    server::Actions sout;
    ref.sid = core->on_open(snow(), net.address_of(ref.host, 40000),
                            server::ClientCert{true, id, group, cred.serial, ""}, sout);
    core->on_frame(snow(), ref.sid, body([&](pb::Envelope& e) {
                     e.mutable_hello()->set_device_id(id);
                     e.mutable_hello()->set_keepalive_interval_ms(600000);
                   }),
                   sout);
    run_server_actions(sout);
    // Server-reflexive candidate of the tunnel socket.
    send_stun(ref);
    schedule_agent_tick(ref);
    return ref;
  }

  static std::string body(const std::function<void(pb::Envelope&)>& f) {
    auto v = control::make_frame(f);
    return std::string(v.begin() + 4, v.end());
  }

  void send_stun(Agent& a) {
    stun::Message m;
    std::array<uint8_t, 12> r{};
    r[0] = uint8_t(a.host);
    m.transaction_id = stun::make_transaction_id(r);
    a.stun_txn = m.transaction_id;
    auto bytes = stun::serialize(m);
    net.send(a.host, kAgentPort, *Endpoint::parse(std::string(kServerAddr) + ":3478"), bytes);
  }

  bool maybe_stun(Agent& a, const Endpoint& from, std::span<const uint8_t> d) {
    if (from.port != kStunPort) return false;
    auto r = stun::parse(d.data(), d.size());
    if (!r || r.message->transaction_id != a.stun_txn) return true;
    a.srflx = r.message->xor_mapped_address;
    std::vector<Endpoint> cands{net.address_of(a.host, kAgentPort)};
    if (r.message->xor_mapped_address && *r.message->xor_mapped_address != cands[0])
      cands.insert(cands.begin(), *r.message->xor_mapped_address);
    a.pm->set_candidates(cands);
    return true;
  }

  void on_server_udp(Instant now, const Endpoint& local, const Endpoint& from,
                     std::span<const uint8_t> d) {
    if (local.port == kStunPort) {
      auto r = stun::parse(d.data(), d.size());
      if (!r) return;
      stun::Message resp;
      resp.cls = stun::MessageClass::success;
      resp.transaction_id = r.message->transaction_id;
      resp.xor_mapped_address = from;
      auto bytes = stun::serialize(resp);
      net.send(server, kStunPort, from, bytes);
      return;
    }
    if (local.port == kRelayPort && relay_up) {
      std::array<uint8_t, 32> ack, other_ack;
      auto f = relay.on_datagram(now, snow().wall, from, d, ack, other_ack);
      if (!f) return;
      if (f->is_ack) {
        net.send(server, kRelayPort, f->to, ack);
        if (f->other) net.send(server, kRelayPort, *f->other, other_ack);
      } else {
        net.send(server, kRelayPort, f->to, d);
      }
    }
  }

  Agent* by_sid(server::SessionId sid) {
    for (auto& a : agents)
      if (a->sid == sid) return a.get();
    return nullptr;
  }

  void run_server_actions(server::Actions& acts) {
    for (auto& act : acts) {
      if (auto* s = std::get_if<server::action::Send>(&act)) {
        Agent* a = by_sid(s->sid);
        if (!a) continue;
        auto frame = std::make_shared<std::vector<uint8_t>>(std::move(s->frame));
        net.after(10ms, [this, a, frame] {
          pb::Envelope env;
          if (control::decode_envelope(frame->data() + 4, frame->size() - 4, env) !=
              control::DecodeError::none)
            return;
          if (env.has_welcome()) {
            const auto& w = env.welcome();
            a->overlay4 = *Endpoint::parse_address(w.overlay_ipv4());
            a->pm->set_overlay(a->overlay4, int(w.overlay_ipv4_prefix()),
                               *Endpoint::parse_address(w.overlay_ipv6()),
                               int(w.overlay_ipv6_prefix()));
            a->pm->set_server(*Endpoint::parse_address(kServerAddr), uint16_t(w.relay_port()));
            return;
          }
          if (env.has_peer_response() && !stale_serial_for.empty() &&
              env.peer_response().offer().peer().device_id() == stale_serial_for)
            env.mutable_peer_response()->mutable_offer()->mutable_peer()->set_cert_serial("00ff");
          PeerActions out;
          a->pm->on_control(net.now(), env, out);
          execute(*a, out);
        });
      } else if (auto* o = std::get_if<server::action::RelayOpen>(&act)) {
        relay.open(o->tunnel_id, o->key);
      } else if (auto* c = std::get_if<server::action::RelayClose>(&act)) {
        relay.close(c->tunnel_id);
      } else if (auto* au = std::get_if<server::action::Audit>(&act)) {
        audit.push_back(au->event.kind + " " + au->event.device_id + ": " + au->event.detail);
      }
    }
  }

  void execute(Agent& a, PeerActions& out) {
    for (auto& act : out) {
      if (auto* u = std::get_if<peer_action::SendUdp>(&act)) {
        net.send(a.host, kAgentPort, u->to, u->data);
      } else if (auto* c = std::get_if<peer_action::SendControl>(&act)) {
        auto frame = std::make_shared<std::vector<uint8_t>>(std::move(c->frame));
        net.after(10ms, [this, &a, frame] {
          if (!a.ticking) return;
          server::Actions sout;
          core->on_frame(
              snow(), a.sid,
              std::string_view(reinterpret_cast<const char*>(frame->data() + 4), frame->size() - 4),
              sout);
          run_server_actions(sout);
        });
      } else if (auto* d = std::get_if<peer_action::DeliverIp>(&act)) {
        a.delivered.push_back(std::move(d->packet));
      } else if (auto* l = std::get_if<peer_action::Log>(&act)) {
        a.logs.push_back(l->peer + ": " + l->text);
      }
    }
    out.clear();
  }

  void schedule_agent_tick(Agent& a) {
    net.after(10ms, [this, &a] {
      if (!a.ticking) return;
      PeerActions out;
      a.pm->tick(net.now(), out);
      execute(a, out);
      schedule_agent_tick(a);
    });
  }
  void schedule_server_tick() {
    net.after(100ms, [this] {
      server::Actions out;
      core->tick(snow(), out);
      run_server_actions(out);
      schedule_server_tick();
    });
  }

  // An IPv4/UDP packet from a's overlay address to b's.
  static std::vector<uint8_t> ip_packet(const Endpoint& src, const Endpoint& dst,
                                        size_t payload = 32) {
    std::vector<uint8_t> p(28 + payload, 0xab);
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[8] = 64;
    p[9] = 17;
    std::memcpy(&p[12], src.addr.data(), 4);
    std::memcpy(&p[16], dst.addr.data(), 4);
    return p;
  }
  void send_ip(Agent& from, const Agent& to, size_t payload = 32) {
    const auto ip = ip_packet(from.overlay4, to.overlay4, payload);
    if (fast_path) {
      if (auto r = from.pm->tx_route(ip)) {
        std::vector<uint8_t> buf(r->headroom + ip.size() + tunnel::kTagSize);
        std::memcpy(buf.data() + r->headroom, ip.data(), ip.size());
        const size_t n = from.pm->seal(net.now(), *r, buf.data(), ip.size());
        EXPECT_EQ(n, buf.size());
        buf.resize(n);
        ++from.fast_tx;
        net.send(from.host, kAgentPort, r->to, buf);
        return;
      }
    }
    PeerActions out;
    from.pm->on_ip(net.now(), ip, out);
    execute(from, out);
  }
  static std::optional<PeerStatus> peer_of(const Agent& a, const std::string& peer, Instant now) {
    for (auto& s : a.pm->status(now))
      if (s.id == peer) return s;
    return std::nullopt;
  }

  sim::Network net;
  store::MemoryStore store;
  server::ServerConfig cfg;
  std::optional<server::ServerCore> core;
  RelayTable relay;
  bool relay_up = true;
  bool fast_path = false;        // agents use PeerManager's data fast path where it applies
  std::string stale_serial_for;  // PeerResponse for this peer carries another serial
  sim::NodeId server = 0;
  std::vector<std::unique_ptr<Agent>> agents;
  std::vector<std::string> audit;
};

// Opens a tunnel a -> b on demand (first packet), waits for the packet to arrive at b.
// Returns the simulated setup time, or nullopt.
std::optional<Duration> open_and_deliver(SimWorld& w, SimWorld::Agent& a, SimWorld::Agent& b,
                                         Duration limit = 20s) {
  w.net.run_until(w.net.now() + 200ms);  // sessions, STUN
  const Instant start = w.net.now();
  w.send_ip(a, b);
  const bool ok = w.net.run_while([&] { return b.delivered.empty(); }, start + limit);
  if (!ok || b.delivered.empty()) return std::nullopt;
  return w.net.now() - start;
}

struct GridResult {
  Kind a, b;
  Duration setup;
  Path path;
};
std::vector<GridResult>& grid_results() {
  static std::vector<GridResult> r;
  return r;
}

class Grid : public ::testing::TestWithParam<std::tuple<Kind, Kind>> {};

TEST_P(Grid, EveryPairConnectsOnTheExpectedPath) {
  const auto [ka, kb] = GetParam();
  SimWorld w(11);
  auto& a = w.add_agent("a", ka);
  auto& b = w.add_agent("b", kb);
  auto setup = open_and_deliver(w, a, b);
  ASSERT_TRUE(setup) << name(ka) << " -> " << name(kb) << "\n"
                     << ::testing::PrintToString(a.logs) << "\n"
                     << ::testing::PrintToString(b.logs) << "\n"
                     << w.net.trace();
  // Both ways, and the path settles to the expected one.
  w.net.run_until(w.net.now() + 4s);
  w.send_ip(b, a);
  w.net.run_until(w.net.now() + 500ms);
  EXPECT_FALSE(a.delivered.empty()) << "reply b -> a";
  auto sa = SimWorld::peer_of(a, "b", w.net.now());
  auto sb = SimWorld::peer_of(b, "a", w.net.now());
  ASSERT_TRUE(sa && sb);
  EXPECT_EQ(sa->state, "up");
  EXPECT_EQ(to_string(sa->path), std::string(to_string(expected_path(ka, kb))))
      << name(ka) << " -> " << name(kb) << "\n"
      << ::testing::PrintToString(a.logs);
  EXPECT_EQ(sa->overlay_ipv4, b.overlay4.address_string());
  EXPECT_GT(sa->tx_bytes, 0u);
  EXPECT_GT(sb->rx_bytes, 0u);
  grid_results().push_back({ka, kb, *setup, sa->path});
}

const Kind kKinds[] = {Kind::none,       Kind::full_cone,
                       Kind::restricted, Kind::port_restricted,
                       Kind::symmetric,  Kind::symmetric_random};
INSTANTIATE_TEST_SUITE_P(AllNatPairs, Grid,
                         ::testing::Combine(::testing::ValuesIn(kKinds),
                                            ::testing::ValuesIn(kKinds)),
                         [](const auto& info) {
                           std::string n = std::string(name(std::get<0>(info.param))) + "_to_" +
                                           name(std::get<1>(info.param));
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// Prints the setup-time table (simulated one-way latency 10 ms: RTT 20 ms) for the benchmarks doc.
class GridReport : public ::testing::Environment {
 public:
  void TearDown() override {
    if (grid_results().empty()) return;
    std::printf("\nP2P setup in the simulated network (one-way latency 10 ms, RTT 20 ms):\n");
    std::printf("%-18s %-18s %-10s %10s %8s\n", "source", "destination", "path", "setup ms",
                "RTTs");
    for (const auto& r : grid_results())
      std::printf("%-18s %-18s %-10s %10lld %8.1f\n", name(r.a), name(r.b), to_string(r.path),
                  (long long)r.setup.count(), double(r.setup.count()) / 20.0);
  }
};
const auto* kReport = ::testing::AddGlobalTestEnvironment(new GridReport);

TEST(P2pSim, TwoDevicesBehindOneNatGoDirectOnTheLan) {
  SimWorld w;
  auto nat = w.net.add_nat("shared", "198.18.9.1", nat_config(Kind::symmetric));
  auto& a = w.add_agent("a", Kind::symmetric, "g1", nat);
  auto& b = w.add_agent("b", Kind::symmetric, "g1", nat);
  ASSERT_TRUE(open_and_deliver(w, a, b));
  w.net.run_until(w.net.now() + 2s);
  auto s = SimWorld::peer_of(a, "b", w.net.now());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, Path::direct);
  ASSERT_TRUE(s->endpoint);
  EXPECT_EQ(s->endpoint->address_string().rfind("192.168.50.", 0), 0u) << s->endpoint->to_string();
}

// Two devices behind one NAT that cannot use their LAN addresses (e.g. different VLANs behind
// one router): with hairpinning they meet at the NAT's public address; without it they relay.
TEST(P2pSim, SameNatWithoutLanPathUsesHairpinOrRelay) {
  for (bool hairpin : {true, false}) {
    SimWorld w;
    auto cfg = nat_config(Kind::port_restricted);
    cfg.hairpin = hairpin;
    auto nat = w.net.add_nat("shared", "198.18.9.1", cfg);
    auto& a = w.add_agent("a", Kind::port_restricted, "g1", nat);
    auto& b = w.add_agent("b", Kind::port_restricted, "g1", nat);
    w.net.run_until(w.net.now() + 200ms);
    // Only the server-reflexive candidate (the NAT's public address) is offered.
    ASSERT_TRUE(a.srflx && b.srflx);
    a.pm->set_candidates({*a.srflx});
    b.pm->set_candidates({*b.srflx});
    ASSERT_TRUE(open_and_deliver(w, a, b)) << "hairpin " << hairpin;
    w.net.run_until(w.net.now() + 2s);
    auto s = SimWorld::peer_of(a, "b", w.net.now());
    ASSERT_TRUE(s);
    if (hairpin) {
      EXPECT_EQ(s->path, Path::direct);
      ASSERT_TRUE(s->endpoint);
      EXPECT_EQ(s->endpoint->address_string(), "198.18.9.1");
    } else {
      EXPECT_EQ(s->path, Path::relay_udp);
    }
  }
}

TEST(P2pSim, OtherGroupIsRefusedAndAudited) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::port_restricted, "g1");
  auto& x = w.add_agent("x", Kind::full_cone, "g2");
  EXPECT_FALSE(open_and_deliver(w, a, x, 3s));
  PeerActions out;
  a.pm->connect(w.net.now(), "x", out);
  w.execute(a, out);
  w.net.run_until(w.net.now() + 1s);
  EXPECT_EQ(a.pm->tunnel_count(), 0u);
  EXPECT_EQ(x.pm->tunnel_count(), 0u);
  bool audited = false;
  for (const auto& l : w.audit) audited |= l.rfind("peer.refused a", 0) == 0;
  EXPECT_TRUE(audited) << ::testing::PrintToString(w.audit);
  bool logged = false;
  for (const auto& l : a.logs) logged |= l.find("not in group g1") != std::string::npos;
  EXPECT_TRUE(logged) << ::testing::PrintToString(a.logs);
}

TEST(P2pSim, RevocationTearsDownWithinOneSecond) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::port_restricted);
  auto& b = w.add_agent("b", Kind::restricted);
  ASSERT_TRUE(open_and_deliver(w, a, b));
  w.net.run_until(w.net.now() + 1s);
  ASSERT_EQ(a.pm->tunnel_count(), 1u);
  server::Actions out;
  w.store.revoke_device("b", 1);
  w.core->revoke(w.snow(), "b", out);
  w.run_server_actions(out);
  const Instant t0 = w.net.now();
  w.net.run_while([&] { return a.pm->tunnel_count() > 0; }, t0 + 1s);
  EXPECT_EQ(a.pm->tunnel_count(), 0u);
  EXPECT_LT(w.net.now() - t0, 1s);
}

// A11: a revoked device is refused by the server at signaling (audited).
TEST(P2pSim, RevokedPeerIsRefusedAtSignaling) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::full_cone);
  auto& b = w.add_agent("b", Kind::restricted);
  w.store.revoke_device("b", 1);
  w.net.run_until(w.net.now() + 200ms);
  EXPECT_FALSE(open_and_deliver(w, a, b, 3s));
  bool refused = false;
  for (const auto& l : w.audit) refused |= l.rfind("peer.refused a", 0) == 0;
  EXPECT_TRUE(refused) << "the server refuses a revoked peer at signaling";
}

// A8: the peer's own check. The server signals the serial it holds as current; when the
// certificate presented over DTLS has another one (re-issued, or a stolen old key), the device
// refuses it, closes the tunnel and reports it to the server, which audits it.
TEST(P2pSim, PeerCertificateCheckRefusesAStaleSerial) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::full_cone);
  auto& b = w.add_agent("b", Kind::restricted);
  w.net.run_until(w.net.now() + 200ms);
  // b's certificate is re-issued on the server side (serial changes); b still presents the old.
  w.stale_serial_for = "b";
  EXPECT_FALSE(open_and_deliver(w, a, b, 3s));
  bool reported = false;
  for (const auto& l : w.audit) reported |= l.find("peer certificate refused") != std::string::npos;
  EXPECT_TRUE(reported) << ::testing::PrintToString(w.audit) << ::testing::PrintToString(a.logs);
  EXPECT_EQ(a.pm->tunnel_count(), 0u);
}

TEST(P2pSim, RoamingRecoversWithinTwoSeconds) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::full_cone);
  auto& b = w.add_agent("b", Kind::port_restricted);
  ASSERT_TRUE(open_and_deliver(w, a, b));
  w.net.run_until(w.net.now() + 2s);
  // b's NAT forgets every mapping: b's packets now leave from a new public port.
  w.net.rebind(*b.nat);
  const Instant t0 = w.net.now();
  size_t before = b.delivered.size();
  // a keeps sending (e.g. a ping every 100 ms): when do packets reach b again?
  std::optional<Instant> recovered;
  for (int i = 0; i < 40 && !recovered; ++i) {
    w.send_ip(a, b);
    w.net.run_until(w.net.now() + 100ms);
    if (b.delivered.size() > before) recovered = w.net.now();
    before = b.delivered.size();
  }
  ASSERT_TRUE(recovered) << ::testing::PrintToString(a.logs);
  EXPECT_LE(*recovered - t0, 2s);
  std::printf("roaming: recovered after %lld ms\n", (long long)(*recovered - t0).count());
}

// Issue 4: the data fast path (tx_route/seal, open in place) carries the same traffic as the
// reference path, direct and through the relay, and hands roaming back to the reference path.
TEST(P2pSim, FastPathCarriesDirectAndRelayedTraffic) {
  for (auto [ka, kb, path] : {std::tuple{Kind::restricted, Kind::port_restricted, Path::direct},
                              std::tuple{Kind::symmetric, Kind::symmetric, Path::relay_udp}}) {
    SimWorld w;
    w.fast_path = true;
    auto& a = w.add_agent("a", ka);
    auto& b = w.add_agent("b", kb);
    ASSERT_TRUE(open_and_deliver(w, a, b));
    w.net.run_until(w.net.now() + 2s);
    auto s = SimWorld::peer_of(a, "b", w.net.now());
    ASSERT_TRUE(s);
    EXPECT_EQ(s->path, path);
    const size_t before = b.delivered.size();
    for (int i = 0; i < 100; ++i) {
      w.send_ip(a, b, 1000);
      w.send_ip(b, a, 40);
      w.net.run_until(w.net.now() + 5ms);
    }
    w.net.run_until(w.net.now() + 200ms);
    EXPECT_EQ(b.delivered.size() - before, 100u);
    EXPECT_GE(a.fast_tx, 100u);
    EXPECT_GE(b.fast_rx, 100u);
    EXPECT_EQ(b.delivered.back(), SimWorld::ip_packet(a.overlay4, b.overlay4, 1000));
    s = SimWorld::peer_of(a, "b", w.net.now());
    EXPECT_GE(s->tx_bytes, 100u * 1028);
  }
}

TEST(P2pSim, FastPathRoamingFallsBackToTheReferencePath) {
  SimWorld w;
  w.fast_path = true;
  auto& a = w.add_agent("a", Kind::full_cone);
  auto& b = w.add_agent("b", Kind::port_restricted);
  ASSERT_TRUE(open_and_deliver(w, a, b));
  w.net.run_until(w.net.now() + 2s);
  w.net.rebind(*b.nat);
  size_t before = a.delivered.size();
  bool recovered = false;
  for (int i = 0; i < 40 && !recovered; ++i) {
    w.send_ip(b, a);  // from b's new public port: a must learn it (reference path, logged)
    w.send_ip(a, b);
    w.net.run_until(w.net.now() + 100ms);
    recovered = a.delivered.size() > before;
  }
  ASSERT_TRUE(recovered);
  EXPECT_TRUE(std::any_of(a.logs.begin(), a.logs.end(), [](const std::string& l) {
    return l.find("moved to") != l.npos;
  })) << ::testing::PrintToString(a.logs);
}

TEST(P2pSim, UdpBlockedFallsBackToRelayInsideTls) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::blocked);
  auto& b = w.add_agent("b", Kind::port_restricted);
  auto setup = open_and_deliver(w, a, b);
  ASSERT_TRUE(setup) << ::testing::PrintToString(a.logs);
  auto s = SimWorld::peer_of(a, "b", w.net.now());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, Path::relay_tls);
  EXPECT_GT(w.core->metrics().relay_tls_packets, 0u);
}

// The UDP network is down at first (all loss): the tunnel comes up inside the TLS control
// session; when UDP works again, probing finds the direct path and traffic moves there, with the
// same tunnel and data channel (A6 relay -> direct).
TEST(P2pSim, RelayUpgradesToDirectWithoutDroppingTheTunnel) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::port_restricted);
  auto& b = w.add_agent("b", Kind::restricted);
  w.net.run_until(w.net.now() + 200ms);
  w.net.set_loss(1.0);
  ASSERT_TRUE(open_and_deliver(w, a, b, 10s)) << ::testing::PrintToString(a.logs);
  auto s = SimWorld::peer_of(a, "b", w.net.now());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, Path::relay_tls);
  const uint64_t tunnel = s->tunnel_id;
  w.net.set_loss(0.0);
  for (int i = 0; i < 50; ++i) {
    w.send_ip(a, b);
    w.net.run_until(w.net.now() + 100ms);
  }
  s = SimWorld::peer_of(a, "b", w.net.now());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, Path::direct) << ::testing::PrintToString(a.logs);
  EXPECT_EQ(s->tunnel_id, tunnel);
  EXPECT_GE(b.delivered.size(), 45u) << "no packet lost across the path change";
}

TEST(P2pSim, NoCandidatesMeansRelayBothWays) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::port_restricted);
  auto& b = w.add_agent("b", Kind::port_restricted);
  w.net.run_until(w.net.now() + 200ms);
  b.pm->set_candidates({});
  a.pm->set_candidates({});
  auto setup = open_and_deliver(w, a, b);
  ASSERT_TRUE(setup);
  auto s = SimWorld::peer_of(a, "b", w.net.now());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->path, Path::relay_udp);
  w.send_ip(b, a);
  w.net.run_until(w.net.now() + 500ms);
  EXPECT_FALSE(a.delivered.empty());
  EXPECT_GT(w.relay.stats().forwarded, 0u);
}

TEST(P2pSim, StrangersGetNoAnswer) {
  SimWorld w;
  auto& a = w.add_agent("a", Kind::none);
  auto stranger = w.net.add_host("stranger", "203.0.113.200");
  size_t answers = 0;
  w.net.set_receiver(stranger, [&](Instant, const Endpoint&, const Endpoint&,
                                   std::span<const uint8_t>) { ++answers; });
  w.net.run_until(w.net.now() + 200ms);
  // Garbage, probes with random keys, fake handshakes and data at the agent's socket.
  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::vector<uint8_t> junk(1 + rng() % 200);
    for (auto& c : junk) c = uint8_t(rng());
    if (i % 3 == 0 && junk.size() >= 16) junk[0] = uint8_t(1 + rng() % 6);
    w.net.send(stranger, 999, w.net.address_of(a.host, kAgentPort), junk);
  }
  w.net.run_until(w.net.now() + 1s);
  EXPECT_EQ(answers, 0u);
  EXPECT_GT(a.pm->stats().dropped_unknown + a.pm->stats().dropped_malformed, 400u);
}

}  // namespace
}  // namespace torii::p2p

// Deterministic tests for NatProbe: an in-process network with simulated time, a simulated NAT of
// every RFC 4787 mapping x filtering combination, and the real Responder as the server.
#include "core/stun/nat_probe.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <queue>
#include <set>
#include <tuple>

#include "core/stun/responder.hpp"

namespace torii::stun {
namespace {

Endpoint ep(const char* text) {
  return *Endpoint::parse(text);
}

const Endpoint kLocal = ep("192.168.1.10:5000");
const Endpoint kPublicIp = ep("203.0.113.7:0");
const Endpoint kPrimary = ep("198.51.100.1:3478");
const Endpoint kAlt = ep("198.51.100.2:3479");

enum class Mapping { eim, adm, apdm };
enum class Filtering { eif, adf, apdf };

struct EndpointLess {
  bool operator()(const Endpoint& a, const Endpoint& b) const {
    return std::tie(a.family, a.addr, a.port) < std::tie(b.family, b.addr, b.port);
  }
};

// Minimal RFC 4787 NAT: mapping chooses the external port per (internal endpoint, destination
// key); filtering admits inbound packets per what the mapping has sent to.
class SimNat {
 public:
  SimNat(Mapping m, Filtering f) : mapping_(m), filtering_(f) {}

  Endpoint outbound(const Endpoint& from, const Endpoint& to) {
    // The part of the destination the mapping depends on: nothing, the address, or both.
    Endpoint key_dst = to;
    if (mapping_ == Mapping::eim) key_dst = Endpoint{};
    if (mapping_ == Mapping::adm) key_dst.port = 0;
    auto& by_dst = mappings_[from];
    auto it = by_dst.find(key_dst);
    uint16_t port;
    if (it == by_dst.end()) {
      port = next_port_++;
      by_dst[key_dst] = port;
      internal_[port] = from;
    } else {
      port = it->second;
    }
    contacted_[port].insert(to);
    Endpoint ext = kPublicIp;
    ext.port = port;
    return ext;
  }

  // The internal endpoint to deliver to, or nullopt when the NAT drops the packet.
  std::optional<Endpoint> inbound(const Endpoint& from, const Endpoint& to) {
    if (!to.same_address(kPublicIp) || !internal_.count(to.port)) return std::nullopt;
    bool ok = false;
    for (const auto& c : contacted_[to.port]) {
      if (filtering_ == Filtering::eif) ok = true;
      if (filtering_ == Filtering::adf && c.same_address(from)) ok = true;
      if (filtering_ == Filtering::apdf && c == from) ok = true;
    }
    if (!ok) return std::nullopt;
    return internal_[to.port];
  }

 private:
  Mapping mapping_;
  Filtering filtering_;
  uint16_t next_port_ = 40000;
  std::map<Endpoint, std::map<Endpoint, uint16_t, EndpointLess>, EndpointLess> mappings_;
  std::map<uint16_t, Endpoint> internal_;
  std::map<uint16_t, std::set<Endpoint, EndpointLess>> contacted_;
};

enum class Path { nat, no_nat, blocked };

struct SimConfig {
  Path path = Path::nat;
  Mapping mapping = Mapping::eim;
  Filtering filtering = Filtering::eif;
  bool server_has_alt = true;
  int drop_first_n = 0;  // client->server datagrams lost before the network starts delivering
};

struct SimResult {
  NatReport report;
  int64_t finished_at_ms = -1;
  int datagrams_sent = 0;
};

// Event-driven network: 10 ms one-way latency, probe ticks at its deadlines, all in simulated
// time, so every run is identical.
SimResult run_sim(const SimConfig& cfg, ProbeConfig pcfg = {}) {
  Responder server(kPrimary, cfg.server_has_alt ? std::optional<Endpoint>(kAlt) : std::nullopt);
  SimNat nat(cfg.mapping, cfg.filtering);
  Endpoint local = cfg.path == Path::nat ? kLocal : ep("203.0.113.50:5000");
  uint8_t counter = 0;
  NatProbe probe(kPrimary, local, pcfg, [&counter] {
    std::array<uint8_t, 12> id{};
    id[11] = ++counter;
    return id;
  });

  struct Event {
    int64_t at;
    int seq;
    bool to_server;
    Endpoint from, to;
    std::vector<uint8_t> bytes;
    bool operator>(const Event& o) const { return std::tie(at, seq) > std::tie(o.at, o.seq); }
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q;
  int seq = 0;
  SimResult result;
  int dropped = 0;
  constexpr int64_t kLatency = 10;

  auto emit = [&](int64_t now, const ProbeOutput& out) {
    for (const auto& d : out.send) {
      ++result.datagrams_sent;
      if (cfg.path == Path::blocked) continue;
      if (dropped < cfg.drop_first_n) {
        ++dropped;
        continue;
      }
      Endpoint src = cfg.path == Path::nat ? nat.outbound(local, d.to) : local;
      q.push(Event{now + kLatency, seq++, true, src, d.to, d.bytes});
    }
    return out.deadline;
  };

  int64_t now = 0;
  auto deadline = emit(now, probe.start(instant_from_ms(now)));
  while (!probe.done() && now < 60000) {
    int64_t next_deadline = deadline ? to_ms(*deadline) : std::numeric_limits<int64_t>::max();
    if (!q.empty() && q.top().at <= next_deadline) {
      Event e = q.top();
      q.pop();
      now = e.at;
      if (e.to_server) {
        size_t index = kMaxSockets;
        for (size_t i : server.socket_indexes())
          if (server.socket_endpoint(i) == e.to) index = i;
        if (index == kMaxSockets) continue;  // nobody listens there
        auto reply = server.handle(e.bytes.data(), e.bytes.size(), e.from, index);
        if (reply) {
          q.push(Event{now + kLatency, seq++, false, server.socket_endpoint(reply->socket_index),
                       e.from, reply->bytes});
        }
      } else {
        std::optional<Endpoint> dst = e.to;
        if (cfg.path == Path::nat) dst = nat.inbound(e.from, e.to);
        if (!dst) continue;
        EXPECT_EQ(*dst, local);
        deadline = emit(
            now, probe.on_response(instant_from_ms(now), e.bytes.data(), e.bytes.size(), e.from));
      }
    } else if (deadline) {
      now = to_ms(*deadline);
      deadline = emit(now, probe.on_tick(instant_from_ms(now)));
    } else {
      break;
    }
  }
  EXPECT_TRUE(probe.done());
  result.report = probe.report();
  result.finished_at_ms = now;
  return result;
}

using B = NatBehaviour;

struct NatCase {
  Mapping mapping;
  Filtering filtering;
  B expect_mapping;
  B expect_filtering;
  const char* summary;
};

class NatProbeMatrix : public ::testing::TestWithParam<NatCase> {};

TEST_P(NatProbeMatrix, Classifies) {
  const NatCase& c = GetParam();
  SimConfig cfg;
  cfg.mapping = c.mapping;
  cfg.filtering = c.filtering;
  auto r = run_sim(cfg);
  EXPECT_EQ(r.report.mapping, c.expect_mapping) << to_string(r.report.mapping);
  EXPECT_EQ(r.report.filtering, c.expect_filtering) << to_string(r.report.filtering);
  EXPECT_EQ(nat_type_summary(r.report), c.summary);
  EXPECT_TRUE(r.report.rfc5780_supported);
  EXPECT_EQ(r.report.local_endpoint, kLocal);
  ASSERT_TRUE(r.report.public_endpoint);
  EXPECT_EQ(*r.report.public_endpoint, ep("203.0.113.7:40000"));  // first mapping made
  // Even the slowest case (two filtering timeouts) ends within a few seconds.
  EXPECT_LT(r.finished_at_ms, 4000);
}

INSTANTIATE_TEST_SUITE_P(
    AllNats, NatProbeMatrix,
    ::testing::Values(NatCase{Mapping::eim, Filtering::eif, B::endpoint_independent,
                              B::endpoint_independent, "full-cone"},
                      NatCase{Mapping::eim, Filtering::adf, B::endpoint_independent,
                              B::address_dependent, "restricted-cone"},
                      NatCase{Mapping::eim, Filtering::apdf, B::endpoint_independent,
                              B::address_and_port_dependent, "port-restricted-cone"},
                      NatCase{Mapping::adm, Filtering::eif, B::address_dependent,
                              B::endpoint_independent, "symmetric"},
                      NatCase{Mapping::adm, Filtering::adf, B::address_dependent,
                              B::address_dependent, "symmetric"},
                      NatCase{Mapping::adm, Filtering::apdf, B::address_dependent,
                              B::address_and_port_dependent, "symmetric"},
                      NatCase{Mapping::apdm, Filtering::eif, B::address_and_port_dependent,
                              B::endpoint_independent, "symmetric"},
                      NatCase{Mapping::apdm, Filtering::adf, B::address_and_port_dependent,
                              B::address_dependent, "symmetric"},
                      NatCase{Mapping::apdm, Filtering::apdf, B::address_and_port_dependent,
                              B::address_and_port_dependent, "symmetric"}));

TEST(NatProbe, NoNat) {
  SimConfig cfg;
  cfg.path = Path::no_nat;
  auto r = run_sim(cfg);
  EXPECT_EQ(r.report.mapping, B::no_nat);
  EXPECT_EQ(r.report.filtering, B::endpoint_independent);
  EXPECT_EQ(r.report.public_endpoint, ep("203.0.113.50:5000"));
  EXPECT_EQ(nat_type_summary(r.report), "none");
}

TEST(NatProbe, UdpBlocked) {
  SimConfig cfg;
  cfg.path = Path::blocked;
  auto r = run_sim(cfg);
  EXPECT_EQ(r.report.mapping, B::udp_blocked);
  EXPECT_EQ(r.report.filtering, B::udp_blocked);
  EXPECT_FALSE(r.report.public_endpoint);
  EXPECT_EQ(nat_type_summary(r.report), "udp-blocked");
  // Transmissions at 0, 200, 600, 1400 ms; given up at 1600 ms.
  EXPECT_EQ(r.datagrams_sent, 4);
  EXPECT_EQ(r.finished_at_ms, 1600);
}

TEST(NatProbe, RetransmitTimingFollowsConfig) {
  SimConfig cfg;
  cfg.path = Path::blocked;
  ProbeConfig pcfg;
  pcfg.initial_rto = Duration(100);
  pcfg.test_timeout = Duration(1000);
  auto r = run_sim(cfg, pcfg);
  EXPECT_EQ(r.datagrams_sent, 4);  // 0, 100, 300, 700
  EXPECT_EQ(r.finished_at_ms, 1000);
}

TEST(NatProbe, SurvivesLoss) {
  SimConfig cfg;
  cfg.mapping = Mapping::eim;
  cfg.filtering = Filtering::adf;
  cfg.drop_first_n = 2;  // test I needs its third transmission
  auto r = run_sim(cfg);
  EXPECT_EQ(r.report.mapping, B::endpoint_independent);
  EXPECT_EQ(r.report.filtering, B::address_dependent);
}

TEST(NatProbe, ServerWithoutAlternateBehindNat) {
  SimConfig cfg;
  cfg.server_has_alt = false;
  auto r = run_sim(cfg);
  EXPECT_FALSE(r.report.rfc5780_supported);
  EXPECT_EQ(r.report.mapping, B::unknown);
  EXPECT_EQ(r.report.filtering, B::unknown);
  EXPECT_EQ(r.report.public_endpoint, ep("203.0.113.7:40000"));
  EXPECT_EQ(nat_type_summary(r.report), "unknown");
  EXPECT_LT(r.finished_at_ms, 100);  // one round trip, no waiting
}

TEST(NatProbe, ServerWithoutAlternateNoNat) {
  SimConfig cfg;
  cfg.server_has_alt = false;
  cfg.path = Path::no_nat;
  auto r = run_sim(cfg);
  EXPECT_EQ(r.report.mapping, B::no_nat);
  EXPECT_EQ(r.report.filtering, B::unknown);
  EXPECT_EQ(nat_type_summary(r.report), "none");
}

TEST(NatProbe, IgnoresForeignAndMalformedDatagrams) {
  NatProbe probe(kPrimary, kLocal);
  auto out = probe.start(instant_from_ms(0));
  ASSERT_EQ(out.send.size(), 1u);
  EXPECT_EQ(out.send[0].to, kPrimary);
  std::vector<uint8_t> junk = {0, 1, 2, 3};
  auto o2 = probe.on_response(instant_from_ms(5), junk.data(), junk.size(), kPrimary);
  EXPECT_TRUE(o2.send.empty());
  EXPECT_EQ(o2.deadline, instant_from_ms(200));
  // A well-formed response with another transaction ID.
  Message m;
  m.cls = MessageClass::success;
  m.transaction_id = make_transaction_id({7});
  m.xor_mapped_address = ep("1.2.3.4:5");
  auto bytes = serialize(m);
  probe.on_response(instant_from_ms(6), bytes.data(), bytes.size(), kPrimary);
  EXPECT_FALSE(probe.done());
  EXPECT_FALSE(probe.report().public_endpoint);
}

TEST(NatProbe, ErrorToChangeRequestLeavesFilteringUnknown) {
  // A server that advertises OTHER-ADDRESS but refuses CHANGE-REQUEST with 420.
  NatProbe probe(kPrimary, kLocal, {}, [] { return std::array<uint8_t, 12>{}; });
  auto out = probe.start(instant_from_ms(0));
  auto req = parse(out.send[0].bytes.data(), out.send[0].bytes.size());
  Message resp;
  resp.cls = MessageClass::success;
  resp.transaction_id = req.message->transaction_id;
  resp.xor_mapped_address = ep("203.0.113.7:40000");
  resp.other_address = kAlt;
  auto bytes = serialize(resp);
  out = probe.on_response(instant_from_ms(10), bytes.data(), bytes.size(), kPrimary);
  ASSERT_EQ(out.send.size(), 1u);
  req = parse(out.send[0].bytes.data(), out.send[0].bytes.size());
  ASSERT_TRUE(req.message->change_request);
  Message err;
  err.cls = MessageClass::error;
  err.transaction_id = req.message->transaction_id;
  err.error_code = ErrorCode{420, "Unknown Attribute"};
  bytes = serialize(err);
  out = probe.on_response(instant_from_ms(20), bytes.data(), bytes.size(), kPrimary);
  // Moves straight on to mapping test II, towards the alternate IP with the primary port.
  ASSERT_EQ(out.send.size(), 1u);
  EXPECT_EQ(out.send[0].to, ep("198.51.100.2:3478"));
  EXPECT_EQ(probe.report().filtering, B::unknown);
}

TEST(NatProbe, Strings) {
  EXPECT_STREQ(to_string(B::unknown), "unknown");
  EXPECT_STREQ(to_string(B::no_nat), "no-nat");
  EXPECT_STREQ(to_string(B::endpoint_independent), "endpoint-independent");
  EXPECT_STREQ(to_string(B::address_dependent), "address-dependent");
  EXPECT_STREQ(to_string(B::address_and_port_dependent), "address-and-port-dependent");
  EXPECT_STREQ(to_string(B::udp_blocked), "udp-blocked");
  NatReport r;
  EXPECT_EQ(nat_type_summary(r), "unknown");
  r.mapping = B::no_nat;
  r.filtering = B::address_and_port_dependent;
  EXPECT_EQ(nat_type_summary(r), "port-restricted-cone");  // firewall without NAT
}

}  // namespace
}  // namespace torii::stun

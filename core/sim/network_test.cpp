// Tests for the simulated network (requirements A6, A11): RFC 4787 mapping, filtering, port
// allocation, expiry, rebind, hairpinning, LAN paths, loss and event order, and finally the real
// STUN Responder and NatProbe classifying every NAT configuration over it.
#include "core/sim/network.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/stun/nat_probe.hpp"
#include "core/stun/responder.hpp"

namespace torii::sim {
namespace {

using namespace std::chrono_literals;

Endpoint ep(const char* text) {
  return *Endpoint::parse(text);
}

const std::vector<uint8_t> kPing = {'p', 'i', 'n', 'g'};

// Everything a host received.
struct Inbox {
  struct Got {
    Instant at;
    Endpoint local, from;
    std::vector<uint8_t> data;
  };
  std::vector<Got> got;

  Receiver receiver() {
    return [this](Instant now, const Endpoint& local, const Endpoint& from,
                  std::span<const uint8_t> data) {
      got.push_back(Got{now, local, from, {data.begin(), data.end()}});
    };
  }
};

// Host "a" (192.168.1.10) behind NAT "nat" (203.0.113.7), and a public server "s" with two
// addresses, 198.51.100.1 and 198.51.100.2.
struct Site {
  Inbox at_a, at_s;
  Network net;
  NodeId nat, a, s;

  explicit Site(NatConfig cfg, uint64_t seed = 1) : net(seed) {
    nat = net.add_nat("nat", "203.0.113.7", cfg);
    a = net.add_host("a", "192.168.1.10", nat);
    s = net.add_host("s", "198.51.100.1");
    net.add_address(s, "198.51.100.2");
    net.set_receiver(a, at_a.receiver());
    net.set_receiver(s, at_s.receiver());
  }

  // a sends from `port` to dst; returns the source the server saw (a's public endpoint).
  Endpoint outbound(const Endpoint& dst, uint16_t port = 5000) {
    size_t before = at_s.got.size();
    net.send(a, port, dst, kPing);
    net.run_until(net.now() + 50ms);
    EXPECT_EQ(at_s.got.size(), before + 1) << net.trace();
    return at_s.got.empty() ? Endpoint{} : at_s.got.back().from;
  }

  // The server sends from `from` to `to`; returns whether a received it.
  bool inbound(const Endpoint& from, const Endpoint& to) {
    size_t before = at_a.got.size();
    net.send(s, from, to, kPing);
    net.run_until(net.now() + 50ms);
    return at_a.got.size() > before;
  }
};

NatConfig nat(Mapping m, Filtering f, PortAllocation a = PortAllocation::sequential) {
  NatConfig cfg;
  cfg.mapping = m;
  cfg.filtering = f;
  cfg.allocation = a;
  return cfg;
}

constexpr auto EIM = Mapping::endpoint_independent;
constexpr auto ADM = Mapping::address_dependent;
constexpr auto APDM = Mapping::address_and_port_dependent;
constexpr auto EIF = Filtering::endpoint_independent;
constexpr auto ADF = Filtering::address_dependent;
constexpr auto APDF = Filtering::address_and_port_dependent;

// ---- Mapping (RFC 4787 4.1): external port towards s1:3478, s1:3479, s2:3478, s1:3478 again.

TEST(SimNetwork, MappingKinds) {
  struct Row {
    Mapping mapping;
    uint16_t p1, p2, p3;
  };
  const Row rows[] = {
      {EIM, 40000, 40000, 40000},
      {ADM, 40000, 40000, 40001},
      {APDM, 40000, 40001, 40002},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(to_string(r.mapping));
    Site site(nat(r.mapping, APDF));
    EXPECT_EQ(site.outbound(ep("198.51.100.1:3478")), ep("203.0.113.7:40000"));
    EXPECT_EQ(site.outbound(ep("198.51.100.1:3479")).port, r.p2);
    EXPECT_EQ(site.outbound(ep("198.51.100.2:3478")).port, r.p3);
    EXPECT_EQ(site.outbound(ep("198.51.100.1:3478")).port, r.p1);  // the mapping is reused
    // A different internal port is a different internal endpoint, hence a new mapping.
    EXPECT_NE(site.outbound(ep("198.51.100.1:3478"), 5001).port, r.p1);
  }
}

// ---- Filtering (RFC 4787 5): after a -> s1:3478, who may send to a's mapping.

TEST(SimNetwork, FilteringKinds) {
  struct Row {
    Filtering filtering;
    bool same_ep, same_addr_other_port, other_addr, other_addr_other_port;
  };
  const Row rows[] = {
      {EIF, true, true, true, true},
      {ADF, true, true, false, false},
      {APDF, true, false, false, false},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(to_string(r.filtering));
    Site site(nat(EIM, r.filtering));
    Endpoint pub = site.outbound(ep("198.51.100.1:3478"));
    EXPECT_EQ(site.inbound(ep("198.51.100.1:3478"), pub), r.same_ep);
    EXPECT_EQ(site.inbound(ep("198.51.100.1:9999"), pub), r.same_addr_other_port);
    EXPECT_EQ(site.inbound(ep("198.51.100.2:3478"), pub), r.other_addr);
    EXPECT_EQ(site.inbound(ep("198.51.100.2:9999"), pub), r.other_addr_other_port);
    int admitted = r.same_ep + r.same_addr_other_port + r.other_addr + r.other_addr_other_port;
    EXPECT_EQ(site.net.stats().dropped_filter, uint64_t(4 - admitted));
    // What arrives carries the server's real source and a's private endpoint.
    ASSERT_FALSE(site.at_a.got.empty());
    EXPECT_EQ(site.at_a.got[0].from, ep("198.51.100.1:3478"));
    EXPECT_EQ(site.at_a.got[0].local, ep("192.168.1.10:5000"));
    // Nothing gets through a port without a mapping, whatever the filtering.
    EXPECT_FALSE(site.inbound(ep("198.51.100.1:3478"), ep("203.0.113.7:40001")));
    EXPECT_EQ(site.net.stats().dropped_no_mapping, 1u);
  }
}

TEST(SimNetwork, FilteringFollowsEachMappingsOwnDestinations) {
  // Address-dependent mapping: a's mapping towards s2 must not admit s1, even with address
  // filtering, because s1 was contacted through another mapping.
  Site site(nat(ADM, ADF));
  Endpoint to_s1 = site.outbound(ep("198.51.100.1:3478"));
  Endpoint to_s2 = site.outbound(ep("198.51.100.2:3478"));
  ASSERT_NE(to_s1, to_s2);
  EXPECT_TRUE(site.inbound(ep("198.51.100.1:1"), to_s1));
  EXPECT_FALSE(site.inbound(ep("198.51.100.1:1"), to_s2));
  EXPECT_TRUE(site.inbound(ep("198.51.100.2:1"), to_s2));
}

// ---- Port allocation.

TEST(SimNetwork, SequentialAllocationCountsUpFromFirstPortAndWraps) {
  NatConfig cfg = nat(APDM, APDF);
  cfg.first_port = 65534;
  cfg.mapping_timeout = 1s;
  Site site(cfg);
  EXPECT_EQ(site.outbound(ep("198.51.100.1:1")).port, 65534);
  EXPECT_EQ(site.outbound(ep("198.51.100.1:2")).port, 65535);
  // Every port from first_port up is taken: the packet is dropped.
  site.net.send(site.a, 5000, ep("198.51.100.1:3"), kPing);
  EXPECT_EQ(site.net.stats().dropped_no_mapping, 1u);
  // Once both mappings have expired the counter wraps back to first_port.
  site.net.run_until(site.net.now() + 2s);
  EXPECT_EQ(site.outbound(ep("198.51.100.1:3")).port, 65534);
}

TEST(SimNetwork, RandomAllocationIsSeededAndInRange) {
  auto ports = [](uint64_t seed) {
    Site site(nat(APDM, APDF, PortAllocation::random), seed);
    std::vector<uint16_t> out;
    for (uint16_t i = 1; i <= 8; ++i) {
      Endpoint dst = ep("198.51.100.1:0");
      dst.port = i;
      out.push_back(site.outbound(dst).port);
    }
    return out;
  };
  auto a = ports(1);
  EXPECT_EQ(a, ports(1));
  EXPECT_NE(a, ports(2));
  EXPECT_EQ(std::set<uint16_t>(a.begin(), a.end()).size(), a.size());
  int consecutive = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_GE(a[i], 1024);
    if (i > 0 && a[i] == a[i - 1] + 1) ++consecutive;
  }
  EXPECT_LT(consecutive, 2);
}

TEST(SimNetwork, PreservingAllocationKeepsInternalPortIfFree) {
  Site site(nat(EIM, APDF, PortAllocation::preserving));
  NodeId b = site.net.add_host("b", "192.168.1.11", site.nat);
  EXPECT_EQ(site.outbound(ep("198.51.100.1:3478"), 5000), ep("203.0.113.7:5000"));
  site.net.send(b, 5000, ep("198.51.100.1:3478"), kPing);  // 5000 is taken by a
  site.net.run_until(site.net.now() + 50ms);
  EXPECT_EQ(site.at_s.got.back().from, ep("203.0.113.7:40000"));
  EXPECT_EQ(site.outbound(ep("198.51.100.1:3478"), 6000), ep("203.0.113.7:6000"));
}

// ---- Mapping lifetime, rebind.

TEST(SimNetwork, MappingExpiresAfterTimeoutWithoutOutboundTraffic) {
  NatConfig cfg = nat(EIM, EIF);
  cfg.mapping_timeout = 30s;
  Site site(cfg);
  Endpoint pub = site.outbound(ep("198.51.100.1:3478"));  // at t=0
  site.net.run_until(instant_from_ms(20'000));
  EXPECT_TRUE(site.inbound(ep("198.51.100.1:3478"), pub));  // arrives at 20.01 s
  // Inbound traffic does not refresh: the mapping still ends at 30 s.
  site.net.run_until(instant_from_ms(29'990));
  EXPECT_EQ(site.net.mapping_count(site.nat), 1u);
  EXPECT_FALSE(site.inbound(ep("198.51.100.1:3478"), pub));  // arrives at exactly 30 s
  EXPECT_EQ(site.net.stats().dropped_no_mapping, 1u);
  EXPECT_EQ(site.net.mapping_count(site.nat), 0u);
  // A new outbound packet makes a new mapping on the next sequential port.
  EXPECT_EQ(site.outbound(ep("198.51.100.1:3478")), ep("203.0.113.7:40001"));
}

TEST(SimNetwork, OutboundTrafficRefreshesMapping) {
  NatConfig cfg = nat(EIM, EIF);
  cfg.mapping_timeout = 30s;
  Site site(cfg);
  Endpoint pub = site.outbound(ep("198.51.100.1:3478"));
  site.net.run_until(instant_from_ms(25'000));
  EXPECT_EQ(site.outbound(ep("198.51.100.2:3478")), pub);  // refresh at 25 s, same mapping
  site.net.run_until(instant_from_ms(50'000));
  EXPECT_TRUE(site.inbound(ep("198.51.100.1:3478"), pub));
}

TEST(SimNetwork, RebindGivesNewPortInEveryAllocationMode) {
  for (auto alloc :
       {PortAllocation::sequential, PortAllocation::preserving, PortAllocation::random}) {
    SCOPED_TRACE(to_string(alloc));
    Site site(nat(EIM, EIF, alloc));
    Endpoint before = site.outbound(ep("198.51.100.1:3478"));
    site.net.rebind(site.nat);
    EXPECT_EQ(site.net.mapping_count(site.nat), 0u);
    EXPECT_FALSE(site.inbound(ep("198.51.100.1:3478"), before));
    EXPECT_EQ(site.net.stats().dropped_no_mapping, 1u);
    Endpoint after = site.outbound(ep("198.51.100.1:3478"));
    EXPECT_TRUE(after.same_address(before));
    EXPECT_NE(after.port, before.port);
    EXPECT_TRUE(site.inbound(ep("198.51.100.1:3478"), after));
  }
}

// ---- Hairpinning and the LAN.

TEST(SimNetwork, HairpinTranslatesSourceAndLoopsBack) {
  NatConfig cfg = nat(EIM, APDF);
  cfg.hairpin = true;
  Site site(cfg);
  Inbox at_b;
  NodeId b = site.net.add_host("b", "192.168.1.11", site.nat);
  site.net.set_receiver(b, at_b.receiver());
  Endpoint a_pub = site.outbound(ep("198.51.100.1:3478"));  // 203.0.113.7:40000
  site.net.send(b, 6000, ep("198.51.100.1:3478"), kPing);
  site.net.run_until(site.net.now() + 50ms);
  Endpoint b_pub = site.at_s.got.back().from;  // 203.0.113.7:40001

  // a -> b's public endpoint: hairpinned, but b's port-restricted filter has not seen a_pub.
  site.net.send(site.a, 5000, b_pub, kPing);
  site.net.run_until(site.net.now() + 50ms);
  EXPECT_TRUE(at_b.got.empty());
  EXPECT_EQ(site.net.stats().hairpinned, 1u);
  EXPECT_EQ(site.net.stats().dropped_filter, 1u);
  // That packet opened a's filter for b_pub, so b -> a_pub passes, then a -> b_pub too.
  Instant sent = site.net.now();
  site.net.send(b, 6000, a_pub, kPing);
  site.net.run_until(site.net.now() + 50ms);
  ASSERT_EQ(site.at_a.got.size(), 1u);
  EXPECT_EQ(site.at_a.got[0].from, b_pub);  // source translated, as RFC 4787 REQ-9 requires
  EXPECT_EQ(site.at_a.got[0].local, ep("192.168.1.10:5000"));
  EXPECT_EQ(site.at_a.got[0].at, sent + 1ms);  // LAN latency: it never left the site
  site.net.send(site.a, 5000, b_pub, kPing);
  site.net.run_until(site.net.now() + 50ms);
  ASSERT_EQ(at_b.got.size(), 1u);
  EXPECT_EQ(at_b.got[0].from, a_pub);
  EXPECT_EQ(site.net.stats().hairpinned, 3u);
}

TEST(SimNetwork, HairpinDisabledDrops) {
  Site site(nat(EIM, EIF));
  Inbox at_b;
  NodeId b = site.net.add_host("b", "192.168.1.11", site.nat);
  site.net.set_receiver(b, at_b.receiver());
  site.net.send(b, 6000, ep("198.51.100.1:3478"), kPing);
  site.net.run_until(site.net.now() + 50ms);
  Endpoint b_pub = site.at_s.got.back().from;
  site.net.send(site.a, 5000, b_pub, kPing);
  site.net.run_until(site.net.now() + 50ms);
  EXPECT_TRUE(at_b.got.empty());
  EXPECT_EQ(site.net.stats().hairpinned, 0u);
  EXPECT_EQ(site.net.stats().dropped_no_route, 1u);
  EXPECT_NE(site.net.trace().find("drop no-hairpin"), std::string::npos) << site.net.trace();
}

TEST(SimNetwork, SameNatHostsTalkDirectlyOnPrivateAddresses) {
  Site site(nat(APDM, APDF));
  Inbox at_b, at_c;
  NodeId b = site.net.add_host("b", "192.168.1.11", site.nat);
  site.net.set_receiver(b, at_b.receiver());
  // Another site using the same private address: a different realm, never reached from a.
  NodeId nat2 = site.net.add_nat("nat2", "203.0.113.8", nat(EIM, EIF));
  NodeId c = site.net.add_host("c", "192.168.1.11", nat2);
  site.net.set_receiver(c, at_c.receiver());

  site.net.send(site.a, 5000, ep("192.168.1.11:6000"), kPing);
  site.net.run_until(instant_from_ms(50));
  ASSERT_EQ(at_b.got.size(), 1u);
  EXPECT_EQ(at_b.got[0].from, ep("192.168.1.10:5000"));  // untranslated
  EXPECT_EQ(at_b.got[0].at, instant_from_ms(1));
  EXPECT_TRUE(at_c.got.empty());
  EXPECT_EQ(site.net.mapping_count(site.nat), 0u);
  // From the internet, private addresses lead nowhere.
  site.net.send(site.s, 3478, ep("192.168.1.11:6000"), kPing);
  site.net.run_until(instant_from_ms(100));
  EXPECT_EQ(site.net.stats().dropped_no_route, 1u);
  EXPECT_EQ(at_b.got.size() + at_c.got.size(), 1u);
}

TEST(SimNetwork, CarrierGradeNatNests) {
  Inbox at_a, at_s;
  Network net;
  NodeId cgn = net.add_nat("cgn", "203.0.113.9", nat(EIM, ADF));
  NodeId home = net.add_nat("home", "100.64.0.2", nat(EIM, EIF), cgn);
  NodeId a = net.add_host("a", "192.168.1.10", home);
  NodeId s = net.add_host("s", "198.51.100.1");
  net.set_receiver(a, at_a.receiver());
  net.set_receiver(s, at_s.receiver());
  net.send(a, 5000, ep("198.51.100.1:3478"), kPing);
  net.run_until(instant_from_ms(50));
  ASSERT_EQ(at_s.got.size(), 1u);
  EXPECT_EQ(at_s.got[0].from, ep("203.0.113.9:40000"));
  EXPECT_EQ(at_s.got[0].at, instant_from_ms(10));
  net.send(s, 9, at_s.got[0].from, kPing);  // same address: passes the CGN's filter
  net.send(s, ep("198.51.100.1:1"), ep("203.0.113.9:40000"), kPing);
  net.run_until(instant_from_ms(100));
  ASSERT_EQ(at_a.got.size(), 2u);
  EXPECT_EQ(at_a.got[0].local, ep("192.168.1.10:5000"));
  EXPECT_EQ(net.mapping_count(home), 1u);
  EXPECT_EQ(net.mapping_count(cgn), 1u);
}

// ---- Failures: unknown addresses, blocked UDP, links down, loss.

TEST(SimNetwork, UnknownAddressIsDroppedAndCounted) {
  Site site(nat(EIM, EIF));
  site.net.send(site.a, 5000, ep("203.0.113.99:1"), kPing);
  site.net.run_until(instant_from_ms(50));
  EXPECT_EQ(site.net.stats().sent, 1u);
  EXPECT_EQ(site.net.stats().dropped_no_route, 1u);
  EXPECT_EQ(site.net.mapping_count(site.nat), 1u);  // the NAT translated it before the internet
}

TEST(SimNetwork, BlockedUdpDropsBothWays) {
  NatConfig cfg;
  cfg.block_udp = true;
  Site site(cfg);
  site.net.send(site.a, 5000, ep("198.51.100.1:3478"), kPing);
  site.net.send(site.s, 3478, ep("203.0.113.7:40000"), kPing);
  site.net.run_until(instant_from_ms(50));
  EXPECT_TRUE(site.at_s.got.empty());
  EXPECT_TRUE(site.at_a.got.empty());
  EXPECT_EQ(site.net.stats().dropped_filter, 2u);
}

TEST(SimNetwork, LinkDown) {
  Site site(nat(EIM, EIF));
  Endpoint pub = site.outbound(ep("198.51.100.1:3478"));
  site.net.set_link_down(site.a, true);
  site.net.send(site.a, 5000, ep("198.51.100.1:3478"), kPing);
  EXPECT_FALSE(site.inbound(ep("198.51.100.1:3478"), pub));
  EXPECT_EQ(site.net.stats().dropped_link_down, 2u);
  site.net.set_link_down(site.a, false);
  site.net.set_link_down(site.nat, true);
  site.net.send(site.a, 5000, ep("198.51.100.1:3478"), kPing);
  EXPECT_FALSE(site.inbound(ep("198.51.100.1:3478"), pub));
  EXPECT_EQ(site.net.stats().dropped_link_down, 4u);
  site.net.set_link_down(site.nat, false);
  EXPECT_TRUE(site.inbound(ep("198.51.100.1:3478"), pub));
}

TEST(SimNetwork, LossIsDeterministicBySeed) {
  auto pattern = [](uint64_t seed) {
    Network net(seed);
    NodeId p = net.add_host("p", "198.51.100.1");
    NodeId q = net.add_host("q", "198.51.100.2");
    std::vector<bool> got(400);
    net.set_receiver(q, [&got](Instant, const Endpoint&, const Endpoint&,
                               std::span<const uint8_t> d) { got[d[0] | (d[1] << 8)] = true; });
    net.set_loss(0.25);
    for (int i = 0; i < 400; ++i) {
      uint8_t msg[2] = {uint8_t(i), uint8_t(i >> 8)};
      net.send(p, 1, ep("198.51.100.2:2"), msg);
    }
    net.run_until(instant_from_ms(100));
    EXPECT_EQ(net.stats().dropped_loss + net.stats().delivered, 400u);
    return got;
  };
  auto one = pattern(1);
  EXPECT_EQ(one, pattern(1));
  EXPECT_NE(one, pattern(2));
  auto lost = std::count(one.begin(), one.end(), false);
  EXPECT_GT(lost, 60);
  EXPECT_LT(lost, 140);
}

// ---- Time and events.

TEST(SimNetwork, EventsRunInTimeThenInsertionOrder) {
  Network net(1, 25ms);
  std::vector<int> order;
  net.at(instant_from_ms(5), [&] { order.push_back(2); });
  net.at(instant_from_ms(1), [&] { order.push_back(1); });
  net.at(instant_from_ms(5), [&] { order.push_back(3); });
  net.after(5ms, [&] {
    order.push_back(4);
    net.at(instant_from_ms(0), [&] { order.push_back(5); });  // the past means now
  });
  net.run_until(instant_from_ms(4));
  EXPECT_EQ(order, (std::vector<int>{1}));
  EXPECT_EQ(net.now(), instant_from_ms(4));
  EXPECT_TRUE(net.step());
  EXPECT_EQ(net.now(), instant_from_ms(5));
  net.run_until(instant_from_ms(5));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_FALSE(net.step());

  // Latency of the public path, and run_while's two outcomes.
  Inbox inbox;
  NodeId p = net.add_host("p", "198.51.100.1");
  NodeId q = net.add_host("q", "198.51.100.2");
  net.set_receiver(q, inbox.receiver());
  net.send(p, 1, net.address_of(q, 2), kPing);
  EXPECT_TRUE(net.run_while([&] { return inbox.got.empty(); }, instant_from_ms(100)));
  EXPECT_EQ(net.now(), instant_from_ms(30));
  EXPECT_EQ(inbox.got.at(0).at, instant_from_ms(30));
  EXPECT_FALSE(net.run_while([] { return true; }, instant_from_ms(200)));
  EXPECT_EQ(net.now(), instant_from_ms(200));
}

TEST(SimNetwork, ReceiverCanReplyAndReplaceItself) {
  Network net;
  NodeId p = net.add_host("p", "198.51.100.1");
  NodeId q = net.add_host("q", "198.51.100.2");
  Inbox at_p;
  net.set_receiver(p, at_p.receiver());
  net.set_receiver(
      q, [&](Instant, const Endpoint& local, const Endpoint& from, std::span<const uint8_t> d) {
        net.send(q, local, from, d);  // echo once, then go quiet
        net.set_receiver(q, nullptr);
      });
  net.send(p, 1, ep("198.51.100.2:7"), kPing);
  net.send(p, 1, ep("198.51.100.2:7"), kPing);
  net.run_until(instant_from_ms(100));
  ASSERT_EQ(at_p.got.size(), 1u);
  EXPECT_EQ(at_p.got[0].from, ep("198.51.100.2:7"));
  EXPECT_EQ(at_p.got[0].at, instant_from_ms(20));
  EXPECT_EQ(net.stats().dropped_no_route, 1u);  // the second one found no receiver
}

TEST(SimNetwork, RejectsBadTopology) {
  Network net;
  NodeId n = net.add_nat("n", "203.0.113.7", {});
  NodeId h = net.add_host("h", "192.168.1.10", n);
  EXPECT_THROW(net.add_host("x", "203.0.113.7"), std::invalid_argument);      // taken
  EXPECT_THROW(net.add_host("x", "192.168.1.10", n), std::invalid_argument);  // taken on LAN
  EXPECT_NO_THROW(net.add_host("x", "192.168.1.10"));  // another realm: fine (if odd)
  EXPECT_THROW(net.add_host("x", "not-an-ip"), std::invalid_argument);
  EXPECT_THROW(net.add_host("x", "10.0.0.1", h), std::invalid_argument);  // h is no NAT
  EXPECT_THROW(net.add_host("x", "10.0.0.1", 99), std::out_of_range);
  NatConfig bad;
  bad.first_port = 0;
  EXPECT_THROW(net.add_nat("y", "203.0.113.8", bad), std::invalid_argument);
  EXPECT_THROW(net.send(h, ep("10.9.9.9:1"), ep("203.0.113.1:1"), kPing), std::invalid_argument);
  EXPECT_THROW(net.send(n, 1, ep("203.0.113.1:1"), kPing), std::invalid_argument);
  EXPECT_EQ(net.stats().sent, 0u);
  EXPECT_EQ(net.public_address_of(n), ep("203.0.113.7:0"));
  EXPECT_EQ(net.address_of(h, 5), ep("192.168.1.10:5"));
  EXPECT_EQ(net.name_of(h), "h");
}

TEST(SimNetwork, TraceKeepsLastEntries) {
  Site site(nat(EIM, APDF));
  site.net.set_trace_limit(2);
  Endpoint pub = site.outbound(ep("198.51.100.1:3478"));
  site.inbound(ep("198.51.100.2:3478"), pub);
  site.inbound(ep("198.51.100.1:3478"), pub);
  EXPECT_EQ(site.net.trace(),
            "t=60ms drop filtered 198.51.100.2:3478 -> 203.0.113.7:40000 at nat (4 B)\n"
            "t=110ms delivered 198.51.100.1:3478 -> 192.168.1.10:5000 at a (4 B)\n");
}

TEST(SimNetwork, Names) {
  EXPECT_STREQ(to_string(EIM), "endpoint-independent");
  EXPECT_STREQ(to_string(ADM), "address-dependent");
  EXPECT_STREQ(to_string(APDM), "address-and-port-dependent");
  EXPECT_STREQ(to_string(EIF), "endpoint-independent");
  EXPECT_STREQ(to_string(ADF), "address-dependent");
  EXPECT_STREQ(to_string(APDF), "address-and-port-dependent");
  EXPECT_STREQ(to_string(PortAllocation::random), "random");
  EXPECT_EQ(short_name(nat(EIM, EIF)), "full-cone");
  EXPECT_EQ(short_name(nat(EIM, ADF)), "restricted");
  EXPECT_EQ(short_name(nat(EIM, APDF)), "port-restricted");
  EXPECT_EQ(short_name(nat(APDM, APDF)), "symmetric");
  EXPECT_EQ(short_name(nat(APDM, APDF, PortAllocation::random)), "symmetric-random");
  EXPECT_EQ(short_name(nat(ADM, ADF)), "symmetric-adm-adf");
  NatConfig cfg = nat(EIM, APDF, PortAllocation::preserving);
  cfg.hairpin = true;
  EXPECT_EQ(short_name(cfg), "port-restricted-preserving-hairpin");
  cfg.block_udp = true;
  EXPECT_EQ(short_name(cfg), "udp-blocked");
}

// ---- Hole punching between two sites: what the grid test will do at scale.

struct TwoSites {
  Inbox at_a, at_b;
  Network net;
  NodeId a, b;

  TwoSites(NatConfig ca, NatConfig cb) {
    NodeId na = net.add_nat("nat-a", "203.0.113.7", ca);
    NodeId nb = net.add_nat("nat-b", "203.0.113.8", cb);
    a = net.add_host("a", "192.168.1.10", na);
    b = net.add_host("b", "192.168.1.10", nb);
    NodeId s = net.add_host("s", "198.51.100.1");
    net.set_receiver(a, at_a.receiver());
    net.set_receiver(b, at_b.receiver());
    // Both register with the server, which learns their public endpoints (the first mappings).
    net.set_receiver(s, [](Instant, const Endpoint&, const Endpoint&, std::span<const uint8_t>) {});
    net.send(a, 5000, ep("198.51.100.1:3478"), kPing);
    net.send(b, 5000, ep("198.51.100.1:3478"), kPing);
    net.run_until(instant_from_ms(100));
  }

  // Both send to the other's server-observed endpoint at the same instant, twice.
  bool punch() {
    for (int i = 0; i < 2; ++i) {
      net.send(a, 5000, ep("203.0.113.8:40000"), kPing);
      net.send(b, 5000, ep("203.0.113.7:40000"), kPing);
      net.run_until(net.now() + 100ms);
    }
    return !at_a.got.empty() && !at_b.got.empty();
  }
};

TEST(SimNetwork, HolePunchingBetweenPortRestrictedNatsSucceeds) {
  TwoSites t(nat(EIM, APDF), nat(EIM, APDF));
  EXPECT_TRUE(t.punch()) << t.net.trace();
  // The first crossing packets pass: each meets the other NAT after that NAT's own packet.
  EXPECT_EQ(t.net.stats().dropped_filter, 0u);
}

TEST(SimNetwork, HolePunchingFailsBetweenSymmetricAndPortRestricted) {
  TwoSites t(nat(APDM, APDF), nat(EIM, APDF));
  EXPECT_FALSE(t.punch());
  EXPECT_GT(t.net.stats().dropped_filter, 0u);
}

// ---- The real STUN responder and NAT probe over the simulated network.

const Endpoint kPrimary = ep("198.51.100.1:3478");
const Endpoint kAlt = ep("198.51.100.2:3479");

// Serves STUN on a host holding both server addresses: the Responder's four sockets are those
// two addresses times the two ports; the receiving endpoint picks the socket.
void serve_stun(Network& net, NodeId host, const std::shared_ptr<stun::Responder>& responder) {
  net.set_receiver(
      host, [&net, host, responder](Instant, const Endpoint& local, const Endpoint& from,
                                    std::span<const uint8_t> data) {
        for (size_t i : responder->socket_indexes()) {
          if (responder->socket_endpoint(i) != local) continue;
          if (auto reply = responder->handle(data.data(), data.size(), from, i))
            net.send(host, responder->socket_endpoint(reply->socket_index), from, reply->bytes);
          return;
        }
      });
}

// Runs a NatProbe on `client`:5000 until it is done: datagrams go through the network, its
// deadlines become timers. State is shared with the callbacks, which may outlive this call.
stun::NatReport probe(Network& net, NodeId client) {
  struct State {
    std::unique_ptr<stun::NatProbe> probe;
    std::optional<Instant> wake;
  };
  auto st = std::make_shared<State>();
  Endpoint local = net.address_of(client, 5000);
  auto counter = std::make_shared<uint32_t>(0);
  st->probe = std::make_unique<stun::NatProbe>(kPrimary, local, stun::ProbeConfig{}, [counter] {
    std::array<uint8_t, 12> id{};
    uint32_t n = ++*counter;
    std::memcpy(id.data(), &n, sizeof n);
    return id;
  });
  auto apply = std::make_shared<std::function<void(const stun::ProbeOutput&)>>();
  std::weak_ptr<std::function<void(const stun::ProbeOutput&)>> weak_apply = apply;
  *apply = [&net, client, local, st, weak_apply](const stun::ProbeOutput& out) {
    for (const auto& d : out.send) net.send(client, local, d.to, d.bytes);
    if (out.deadline && out.deadline != st->wake) {
      Instant t = *out.deadline;
      net.at(t, [&net, st, weak_apply, t] {
        auto again = weak_apply.lock();
        if (again && st->wake == t && !st->probe->done()) (*again)(st->probe->on_tick(net.now()));
      });
    }
    st->wake = out.deadline;
  };
  net.set_receiver(client, [st, apply](Instant now, const Endpoint&, const Endpoint& from,
                                       std::span<const uint8_t> d) {
    (*apply)(st->probe->on_response(now, d.data(), d.size(), from));
  });
  (*apply)(st->probe->start(net.now()));
  EXPECT_TRUE(net.run_while([&] { return !st->probe->done(); }, net.now() + 10s));
  net.set_receiver(client, nullptr);
  return st->probe->report();
}

struct StunWorld {
  Network net;
  NodeId server;
  std::shared_ptr<stun::Responder> responder = std::make_shared<stun::Responder>(kPrimary, kAlt);

  StunWorld() {
    server = net.add_host("stun", "198.51.100.1");
    net.add_address(server, "198.51.100.2");
    serve_stun(net, server, responder);
  }
};

stun::NatBehaviour expected(Mapping m) {
  switch (m) {
    case Mapping::endpoint_independent:
      return stun::NatBehaviour::endpoint_independent;
    case Mapping::address_dependent:
      return stun::NatBehaviour::address_dependent;
    case Mapping::address_and_port_dependent:
      return stun::NatBehaviour::address_and_port_dependent;
  }
  return stun::NatBehaviour::unknown;
}

stun::NatBehaviour expected(Filtering f) {
  switch (f) {
    case Filtering::endpoint_independent:
      return stun::NatBehaviour::endpoint_independent;
    case Filtering::address_dependent:
      return stun::NatBehaviour::address_dependent;
    case Filtering::address_and_port_dependent:
      return stun::NatBehaviour::address_and_port_dependent;
  }
  return stun::NatBehaviour::unknown;
}

TEST(SimNetwork, NatProbeClassifiesEveryConfig) {
  int combos = 0;
  for (auto m : {EIM, ADM, APDM}) {
    for (auto f : {EIF, ADF, APDF}) {
      for (auto alloc :
           {PortAllocation::sequential, PortAllocation::preserving, PortAllocation::random}) {
        NatConfig cfg = nat(m, f, alloc);
        SCOPED_TRACE(short_name(cfg));
        StunWorld w;
        NodeId n = w.net.add_nat("nat", "203.0.113.7", cfg);
        NodeId client = w.net.add_host("client", "192.168.1.10", n);
        stun::NatReport r = probe(w.net, client);
        EXPECT_EQ(r.mapping, expected(m)) << stun::to_string(r.mapping) << "\n" << w.net.trace();
        EXPECT_EQ(r.filtering, expected(f)) << stun::to_string(r.filtering) << "\n"
                                            << w.net.trace();
        EXPECT_TRUE(r.rfc5780_supported);
        ASSERT_TRUE(r.public_endpoint);
        EXPECT_TRUE(r.public_endpoint->same_address(ep("203.0.113.7:0")));
        uint16_t first = alloc == PortAllocation::sequential   ? 40000
                         : alloc == PortAllocation::preserving ? 5000
                                                               : r.public_endpoint->port;
        EXPECT_EQ(r.public_endpoint->port, first);
        const char* cone[] = {"full-cone", "restricted-cone", "port-restricted-cone"};
        EXPECT_EQ(stun::nat_type_summary(r), m == EIM ? cone[int(f)] : "symmetric");
        ++combos;
      }
    }
  }
  EXPECT_EQ(combos, 27);
}

TEST(SimNetwork, NatProbeSeesNoNatAndBlockedUdp) {
  {
    StunWorld w;
    NodeId pub = w.net.add_host("pub", "203.0.113.50");
    stun::NatReport r = probe(w.net, pub);
    EXPECT_EQ(r.mapping, stun::NatBehaviour::no_nat);
    EXPECT_EQ(r.filtering, stun::NatBehaviour::endpoint_independent);
    EXPECT_EQ(r.public_endpoint, ep("203.0.113.50:5000"));
  }
  {
    StunWorld w;
    NatConfig cfg;
    cfg.block_udp = true;
    NodeId n = w.net.add_nat("nat", "203.0.113.7", cfg);
    NodeId client = w.net.add_host("client", "192.168.1.10", n);
    stun::NatReport r = probe(w.net, client);
    EXPECT_EQ(r.mapping, stun::NatBehaviour::udp_blocked);
    EXPECT_EQ(r.filtering, stun::NatBehaviour::udp_blocked);
    EXPECT_EQ(w.net.stats().dropped_filter, w.net.stats().sent);
  }
}

TEST(SimNetwork, NatProbeBehindCarrierGradeNatSeesTheStricterNat) {
  StunWorld w;
  NodeId cgn = w.net.add_nat("cgn", "203.0.113.9", nat(APDM, ADF));
  NodeId home = w.net.add_nat("home", "100.64.0.2", nat(EIM, EIF), cgn);
  NodeId client = w.net.add_host("client", "192.168.1.10", home);
  stun::NatReport r = probe(w.net, client);
  EXPECT_EQ(r.mapping, stun::NatBehaviour::address_and_port_dependent);
  EXPECT_EQ(r.filtering, stun::NatBehaviour::address_dependent);
  EXPECT_EQ(r.public_endpoint, ep("203.0.113.9:40000"));
}

}  // namespace
}  // namespace torii::sim

// A6 signaling in ServerCore: the four messages in order, the method choice from stored NAT
// attributes, A11 refusals (other group, revoked, offline, unknown) with audit entries, the
// confirmation timeout, relay authorisation, RelayData forwarding, and teardown on revocation.
#include <gtest/gtest.h>

#include "core/server/server_core_fixture.hpp"

namespace torii::server {
namespace {

using test_support::ServerCoreTest;
namespace pb = ::torii::control::v1;

class SignalingTest : public ServerCoreTest {
 protected:
  void SetUp() override {
    ServerCoreTest::SetUp();
    store.create_group({"g2", 0});
    add_active("other", "g2", "bb01");
    set_nat("cam1", "endpoint-independent", "address-and-port-dependent", "10.200.0.11:4000");
    set_nat("cam2", "address-and-port-dependent", "address-and-port-dependent", "10.200.0.12:5000");
  }
  void set_nat(const std::string& id, const char* m, const char* f, const char* pub) {
    auto d = *store.get_device(id);
    d.attributes.nat_mapping = m;
    d.attributes.nat_filtering = f;
    d.attributes.public_endpoint = pub;
    store.update_attributes(id, d.attributes);
  }
  std::string request(const std::string& peer, uint64_t rid = 7) {
    return body([&](pb::Envelope& e) {
      auto* r = e.mutable_peer_request();
      r->set_request_id(rid);
      r->set_peer_id(peer);
      r->add_candidates("192.168.1.2:41000");
      r->add_candidates("10.200.0.11:41000");
      r->add_candidates("not-an-endpoint");
      r->set_receiver_index(0x1111);
    });
  }
  std::string confirm(uint64_t tunnel, bool accept = true) {
    return body([&](pb::Envelope& e) {
      auto* c = e.mutable_peer_confirm();
      c->set_tunnel_id(tunnel);
      c->set_accept(accept);
      c->add_candidates("192.168.2.2:42000");
      c->set_receiver_index(0x2222);
      if (!accept) c->set_reason("busy");
    });
  }
  static const pb::PeerResponse* response(const std::vector<pb::Envelope>& v) {
    for (const auto& e : v)
      if (e.has_peer_response()) return &e.peer_response();
    return nullptr;
  }
  // cam1 and cam2 online; cam1 asks for cam2; returns the tunnel ID of the instruction cam2 got.
  uint64_t instructed(Actions& out, SessionId& s1, SessionId& s2) {
    s1 = connect("cam1", "aa01", 0, out);
    s2 = connect("cam2", "aa02", 0, out);
    out.clear();
    core.on_frame(at(10), s1, request("cam2"), out);
    const auto to2 = sent(out, s2);
    EXPECT_EQ(to2.size(), 1u);
    return to2.empty() ? 0 : to2[0].connect_instruction().offer().tunnel_id();
  }
  template <typename T>
  static bool has(const Actions& out) {
    for (const auto& a : out)
      if (std::holds_alternative<T>(a)) return true;
    return false;
  }
};

TEST_F(SignalingTest, FourMessagesOpenATunnel) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId s2 = connect("cam2", "aa02", 0, out);
  out.clear();
  // 1. peer connection request -> 2. connection instruction to the destination.
  core.on_frame(at(10), s1, request("cam2"), out);
  auto to2 = sent(out, s2);
  ASSERT_EQ(to2.size(), 1u);
  ASSERT_TRUE(to2[0].has_connect_instruction());
  const auto& in = to2[0].connect_instruction().offer();
  EXPECT_EQ(in.peer().device_id(), "cam1");
  EXPECT_EQ(in.peer().cert_serial(), "aa01");
  EXPECT_EQ(in.peer().overlay_ipv4(), "100.64.0.1");
  EXPECT_EQ(in.method(), pb::CONNECT_METHOD_PORT_PREDICTION);  // port-restricted <-> symmetric
  EXPECT_EQ(in.predict_ports(), 0u);   // cam2 is the symmetric side: it does not predict
  ASSERT_EQ(in.candidates_size(), 2);  // the malformed candidate is dropped
  EXPECT_EQ(in.peer_receiver_index(), 0x1111u);
  EXPECT_EQ(in.punch_key().size(), 32u);
  EXPECT_TRUE(sent(out, s1).empty());
  EXPECT_FALSE(has<action::RelayOpen>(out));
  // 3. peer connection confirmation -> 4. peer connection response to the source.
  out.clear();
  core.on_frame(at(20), s2, confirm(in.tunnel_id()), out);
  const auto to1 = sent(out, s1);
  const auto* r = response(to1);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->request_id(), 7u);
  EXPECT_EQ(r->offer().tunnel_id(), in.tunnel_id());
  EXPECT_EQ(r->offer().peer().device_id(), "cam2");
  EXPECT_EQ(r->offer().peer().overlay_ipv4(), "100.64.0.2");
  EXPECT_EQ(r->offer().punch_key(), in.punch_key());
  EXPECT_EQ(r->offer().relay_key(), in.relay_key());
  EXPECT_EQ(r->offer().predict_ports(), limits::kDefaultPredictPorts);
  EXPECT_EQ(r->offer().peer_receiver_index(), 0x2222u);
  ASSERT_EQ(r->offer().candidates_size(), 1);
  EXPECT_TRUE(has<action::RelayOpen>(out));
  EXPECT_EQ(audits(out), std::vector<std::string>{"peer.open"});
  EXPECT_EQ(core.tunnels_of("cam1").size(), 1u);
  EXPECT_EQ(core.metrics().tunnels_open, 1u);
}

TEST_F(SignalingTest, ByOverlayAddress) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId s2 = connect("cam2", "aa02", 0, out);
  out.clear();
  core.on_frame(
      at(10), s1,
      body([](pb::Envelope& e) { e.mutable_peer_request()->set_peer_address("100.64.0.2"); }), out);
  auto to2 = sent(out, s2);
  ASSERT_EQ(to2.size(), 1u);
  EXPECT_TRUE(to2[0].has_connect_instruction());
}

TEST_F(SignalingTest, RefusalsAreAuditedAndClear) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId so = connect("other", "bb01", 0, out);
  struct Case {
    std::string peer;
    std::string want;
  } cases[] = {
      {"other", "not in group g1"},  // A11
      {"nobody", "no device 'nobody'"},
      {"cam2", "offline"},
      {"cam1", "itself"},
  };
  for (const auto& c : cases) {
    out.clear();
    core.on_frame(at(10), s1, request(c.peer), out);
    const auto v = sent(out, s1);
    const auto* r = response(v);
    ASSERT_TRUE(r) << c.peer;
    EXPECT_FALSE(r->ok());
    EXPECT_NE(r->message().find(c.want), std::string::npos) << r->message();
    EXPECT_EQ(audits(out), std::vector<std::string>{"peer.refused"});
    EXPECT_TRUE(sent(out, so).empty()) << "the other group's device never hears of it";
  }
  // Revoked destination.
  SessionId s2 = connect("cam2", "aa02", 0, out);
  store.revoke_device("cam2", 5);
  out.clear();
  core.on_frame(at(10), s1, request("cam2"), out);
  const auto v = sent(out, s1);
  ASSERT_TRUE(response(v));
  EXPECT_FALSE(response(v)->ok());
  EXPECT_TRUE(sent(out, s2).empty());
  EXPECT_EQ(core.metrics().peer_refused, 5u);
}

TEST_F(SignalingTest, DeclineAndTimeout) {
  Actions out;
  SessionId s1 = 0, s2 = 0;
  const uint64_t tid = instructed(out, s1, s2);
  out.clear();
  core.on_frame(at(20), s2, confirm(tid, false), out);
  ASSERT_TRUE(response(sent(out, s1)));
  EXPECT_NE(response(sent(out, s1))->message().find("busy"), std::string::npos);
  // A confirmation nobody asked for (or from the wrong device) does nothing.
  out.clear();
  core.on_frame(at(30), s1, confirm(tid), out);
  EXPECT_TRUE(sent(out, s1).empty());
  // No answer within kPeerConfirmTimeout.
  core.on_frame(at(100), s1, request("cam2", 9), out);
  // Keep both sessions alive past the confirmation deadline (ECHO every 1 s keepalive).
  for (int64_t t = 1000; t <= 5000; t += 1000) {
    core.on_frame(at(t), s1, body([](pb::Envelope& e) { e.mutable_echo()->set_seq(1); }), out);
    core.on_frame(at(t), s2, body([](pb::Envelope& e) { e.mutable_echo()->set_seq(1); }), out);
  }
  out.clear();
  core.tick(at(100 + limits::kPeerConfirmTimeout.count() - 1), out);
  EXPECT_FALSE(response(sent(out, s1)));
  core.tick(at(100 + limits::kPeerConfirmTimeout.count()), out);
  const auto msgs = sent(out, s1);
  const auto* r = response(msgs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code(), pb::ERROR_CODE_PEER_TIMEOUT);
  EXPECT_EQ(r->request_id(), 9u);
  EXPECT_EQ(core.metrics().peer_timeouts, 1u);
}

TEST_F(SignalingTest, RevocationTearsDownTunnelsAndRelay) {
  Actions out;
  SessionId s1 = 0, s2 = 0;
  const uint64_t tid = instructed(out, s1, s2);
  core.on_frame(at(20), s2, confirm(tid), out);
  // RelayData is forwarded unread between the two ends, and only for members of the tunnel.
  out.clear();
  core.on_frame(at(30), s1, body([&](pb::Envelope& e) {
                  e.mutable_relay_data()->set_tunnel_id(tid);
                  e.mutable_relay_data()->set_packet("opaque");
                }),
                out);
  auto to2 = sent(out, s2);
  ASSERT_EQ(to2.size(), 1u);
  EXPECT_EQ(to2[0].relay_data().packet(), "opaque");
  out.clear();
  store.revoke_device("cam2", 40);
  core.revoke(at(40), "cam2", out);
  auto to1 = sent(out, s1);
  ASSERT_EQ(to1.size(), 1u);
  ASSERT_TRUE(to1[0].has_peer_close());
  EXPECT_EQ(to1[0].peer_close().peer_id(), "cam2");
  EXPECT_EQ(to1[0].peer_close().tunnel_id(), tid);
  EXPECT_TRUE(has<action::RelayClose>(out));
  EXPECT_TRUE(core.tunnels_of("cam1").empty());
  out.clear();
  core.on_frame(at(50), s1, body([&](pb::Envelope& e) {
                  e.mutable_relay_data()->set_tunnel_id(tid);
                  e.mutable_relay_data()->set_packet("x");
                }),
                out);
  EXPECT_TRUE(sent(out, s2).empty());
  EXPECT_EQ(core.metrics().relay_tls_dropped, 1u);
}

// D1: a device making requests faster than its bucket refills is refused (RATE_LIMITED), audited
// once per burst, and its peer hears nothing of the refused requests.
TEST_F(SignalingTest, PeerRequestsAreRateLimited) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId s2 = connect("cam2", "aa02", 0, out);
  out.clear();
  for (uint32_t i = 0; i < limits::kPeerRequestBurst; ++i)
    core.on_frame(at(10), s1, request("cam2", i), out);
  EXPECT_EQ(sent(out, s2).size(), limits::kPeerRequestBurst);
  out.clear();
  for (int i = 0; i < 5; ++i) core.on_frame(at(10), s1, request("cam2", 100 + i), out);
  const auto msgs = sent(out, s1);
  ASSERT_EQ(msgs.size(), 5u);
  for (const auto& m : msgs) EXPECT_EQ(m.peer_response().code(), pb::ERROR_CODE_RATE_LIMITED);
  EXPECT_TRUE(sent(out, s2).empty());
  EXPECT_EQ(audits(out), std::vector<std::string>{"peer.rate_limited"});
  EXPECT_EQ(core.metrics().peer_rate_limited, 5u);
  // One token comes back per interval.
  out.clear();
  core.on_frame(at(10 + limits::kPeerRequestInterval.count()), s1, request("cam2", 200), out);
  EXPECT_EQ(sent(out, s2).size(), 1u);
}

}  // namespace
}  // namespace torii::server

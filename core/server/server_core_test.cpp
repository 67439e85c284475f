// ServerCore with simulated time and the in-memory Store: authentication decisions (A3),
// keepalive/offline (A4), closes and revocation (A5), enrollment gating (A1), lockouts (D1).
#include "core/server/server_core.hpp"

#include <gtest/gtest.h>

#include "core/control/frame.hpp"
#include "core/server/server_core_fixture.hpp"
#include "store/memory_store.hpp"

namespace torii::server {
namespace {

using test_support::ServerCoreTest;
namespace pb = ::torii::control::v1;
using namespace std::chrono_literals;
using control::make_frame;

TEST_F(ServerCoreTest, HelloWithCurrentCertificateEstablishes) {
  Actions out;
  SessionId sid = connect("cam1", "aa01", 0, out);
  auto msgs = sent(out, sid);
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_welcome());
  EXPECT_EQ(msgs[0].welcome().group(), "g1");
  EXPECT_EQ(msgs[0].welcome().stun_port(), 3478u);
  EXPECT_EQ(msgs[0].welcome().offline_after_ms(), 1000u * 3 + 2000);
  EXPECT_FALSE(closed(out, sid));
  EXPECT_EQ(audits(out), std::vector<std::string>{"session.open"});
  ASSERT_TRUE(core.session_of("cam1"));
  EXPECT_EQ(core.online_count(), 1u);
  EXPECT_EQ(core.metrics().sessions_opened, 1u);
}

TEST_F(ServerCoreTest, RefusalsAreClearAuditedAndClose) {
  struct Case {
    const char* name;
    ClientCert cert;
    std::string hello_id;
    pb::ErrorCode code;
    const char* audit;
  };
  ClientCert untrusted = cert("cam1", "aa01");
  untrusted.verify_error = "unable to get local issuer certificate";
  ClientCert expired = cert("cam1", "aa01");
  expired.verify_error = "certificate has expired";
  std::vector<Case> cases = {
      {"no certificate", ClientCert{}, "cam1", pb::ERROR_CODE_NOT_AUTHENTICATED,
       "auth.no_certificate"},
      {"other CA", untrusted, "cam1", pb::ERROR_CODE_NOT_AUTHENTICATED, "auth.bad_certificate"},
      {"expired", expired, "cam1", pb::ERROR_CODE_NOT_AUTHENTICATED, "auth.bad_certificate"},
      {"wrong ID", cert("cam1", "aa01"), "cam2", pb::ERROR_CODE_WRONG_DEVICE_ID,
       "auth.wrong_device_id"},
      {"stale serial", cert("cam1", "ffff"), "cam1", pb::ERROR_CODE_NOT_AUTHENTICATED,
       "auth.stale_certificate"},
      {"unknown device", cert("ghost", "aa09"), "ghost", pb::ERROR_CODE_UNKNOWN_DEVICE,
       "auth.unknown_device"},
  };
  int64_t t = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Actions out;
    SessionId sid = core.on_open(at(t), src, c.cert, out);
    core.on_frame(at(t), sid, hello(c.hello_id), out);
    auto msgs = sent(out, sid);
    ASSERT_EQ(msgs.size(), 1u);
    ASSERT_TRUE(msgs[0].has_error());
    EXPECT_EQ(msgs[0].error().code(), c.code);
    EXPECT_FALSE(msgs[0].error().message().empty());
    EXPECT_TRUE(closed(out, sid));
    EXPECT_EQ(audits(out).at(0), c.audit);
    EXPECT_EQ(core.online_count(), 0u);
    core.on_closed(at(t), sid, CloseKind::eof, out);
    t += 10;
  }
  EXPECT_EQ(core.metrics().auth_failures, cases.size());
}

TEST_F(ServerCoreTest, RevokedDeviceRefused) {
  store.revoke_device("cam1", 5);
  Actions out;
  SessionId sid = connect("cam1", "aa01", 0, out);
  auto msgs = sent(out, sid);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].error().code(), pb::ERROR_CODE_REVOKED);
  EXPECT_EQ(audits(out).at(0), "auth.revoked");
}

TEST_F(ServerCoreTest, EchoKeepsOnlineAndSilenceMarksOffline) {
  Actions out;
  SessionId sid = connect("cam1", "aa01", 0, out);  // keepalive 1 s -> offline after 5 s
  // ECHOs every second keep it online well past 5 s.
  for (int64_t t = 1000; t <= 10'000; t += 1000) {
    out.clear();
    core.on_frame(at(t), sid, body([&](pb::Envelope& e) {
                    e.mutable_echo()->set_seq(uint64_t(t));
                    e.mutable_echo()->set_last_rtt_ms(7);
                  }),
                  out);
    auto msgs = sent(out, sid);
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].echo_reply().seq(), uint64_t(t));
    core.tick(at(t + 500), out);
    EXPECT_TRUE(core.session_of("cam1")) << "at " << t;
  }
  EXPECT_EQ(core.session_of("cam1")->rtt_ms, 7u);
  // Then silence: still online at 10 s + 4.999 s, offline at 10 s + 5 s (A4).
  out.clear();
  core.tick(at(10'000 + 4999), out);
  EXPECT_TRUE(core.session_of("cam1"));
  core.tick(at(10'000 + 5000), out);
  EXPECT_FALSE(core.session_of("cam1"));
  EXPECT_TRUE(closed(out, sid));
  EXPECT_EQ(audits(out), std::vector<std::string>{"session.offline"});
  EXPECT_EQ(core.metrics().offline_timeouts, 1u);
  auto presence = core.drain_presence();
  ASSERT_EQ(presence.size(), 1u);
  EXPECT_EQ(presence[0].last_seen, at(10'000).wall);
}

TEST_F(ServerCoreTest, AttributesAreSavedAndAcknowledged) {
  Actions out;
  SessionId sid = connect("cam1", "aa01", 0, out);
  out.clear();
  core.on_frame(at(100), sid, body([](pb::Envelope& e) {
                  auto* a = e.mutable_attributes();
                  a->set_mapping(pb::NAT_BEHAVIOUR_ENDPOINT_INDEPENDENT);
                  a->set_filtering(pb::NAT_BEHAVIOUR_ADDRESS_AND_PORT_DEPENDENT);
                  a->set_public_endpoint("203.0.113.7:40001");
                  a->add_local_addresses("192.168.1.20");
                  a->set_rtt_ms(12);
                }),
                out);
  ASSERT_TRUE(sent(out, sid).at(0).has_attributes_ack());
  const action::SaveAttributes* save = nullptr;
  for (auto& a : out)
    if (auto* s = std::get_if<action::SaveAttributes>(&a)) save = s;
  ASSERT_NE(save, nullptr);
  EXPECT_EQ(save->attributes.nat_type, "port-restricted-cone");
  EXPECT_EQ(save->attributes.nat_mapping, "endpoint-independent");
  EXPECT_EQ(save->attributes.nat_filtering, "address-and-port-dependent");
  EXPECT_EQ(save->attributes.public_endpoint, "203.0.113.7:40001");
  EXPECT_EQ(save->attributes.local_addresses, std::vector<std::string>{"192.168.1.20"});
  EXPECT_EQ(core.session_of("cam1")->rtt_ms, 12u);
}

TEST_F(ServerCoreTest, DeviceCloseNotifyIsRecorded) {
  Actions out;
  SessionId sid = connect("cam1", "aa01", 0, out);
  out.clear();
  core.on_frame(
      at(50), sid,
      body([](pb::Envelope& e) { e.mutable_close()->set_reason(pb::CLOSE_REASON_SHUTDOWN); }), out);
  core.on_closed(at(60), sid, CloseKind::close_notify, out);
  auto kinds = audits(out);
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_EQ(kinds[0], "session.close_requested");
  EXPECT_EQ(kinds[1], "session.close");
  auto* ev = std::get_if<action::Audit>(&out.back());
  ASSERT_NE(ev, nullptr);
  EXPECT_NE(ev->event.detail.find("close_notify"), std::string::npos);
  EXPECT_EQ(core.online_count(), 0u);
  EXPECT_EQ(core.session_count(), 0u);
}

TEST_F(ServerCoreTest, RevokeAndDisconnectCloseTheLiveSessionAtOnce) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId s2 = connect("cam2", "aa02", 0, out);
  out.clear();
  core.revoke(at(10), "cam1", out);
  auto m1 = sent(out, s1);
  ASSERT_EQ(m1.size(), 1u);
  EXPECT_EQ(m1[0].close().reason(), pb::CLOSE_REASON_REVOKED);
  EXPECT_TRUE(closed(out, s1));
  EXPECT_FALSE(core.session_of("cam1"));  // offline immediately, before the socket closes
  out.clear();
  EXPECT_TRUE(core.disconnect(at(20), "cam2", out));
  EXPECT_EQ(sent(out, s2).at(0).close().reason(), pb::CLOSE_REASON_ADMIN);
  EXPECT_FALSE(core.disconnect(at(30), "cam2", out));
}

TEST_F(ServerCoreTest, NewSessionReplacesOld) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  out.clear();
  SessionId s2 = connect("cam1", "aa01", 100, out);
  EXPECT_EQ(sent(out, s1).at(0).close().reason(), pb::CLOSE_REASON_REPLACED);
  EXPECT_TRUE(closed(out, s1));
  EXPECT_EQ(core.session_of("cam1")->sid, s2);
  core.on_closed(at(200), s1, CloseKind::close_notify, out);
  EXPECT_EQ(core.session_of("cam1")->sid, s2);  // the old session's end does not unseat the new
}

TEST_F(ServerCoreTest, SilentConnectionTimesOut) {
  Actions out;
  SessionId sid = core.on_open(at(0), src, cert("cam1", "aa01"), out);
  core.tick(at(cfg.first_message_timeout.count() - 1), out);
  EXPECT_FALSE(closed(out, sid));
  core.tick(at(cfg.first_message_timeout.count()), out);
  EXPECT_TRUE(closed(out, sid));
}

TEST_F(ServerCoreTest, GarbageFrameIsCountedAndCloses) {
  Actions out;
  SessionId sid = core.on_open(at(0), src, cert("cam1", "aa01"), out);
  core.on_frame(at(1), sid, std::string("\xff\xff\xff garbage", 12), out);
  EXPECT_TRUE(closed(out, sid));
  EXPECT_EQ(core.metrics().malformed, 1u);
  auto msgs = sent(out, sid);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].error().code(), pb::ERROR_CODE_BAD_MESSAGE);
}

TEST_F(ServerCoreTest, RepeatedFailuresLockTheSourceOut) {
  ServerConfig c;
  c.per_source.max_failures = 3;
  c.per_source.lockout = 60s;
  ServerCore limited(c, store);
  Actions out;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limited.admit(at(i), src));
    SessionId sid = limited.on_open(at(i), src, ClientCert{}, out);
    limited.on_frame(at(i), sid, hello("cam1"), out);
    limited.on_closed(at(i), sid, CloseKind::eof, out);
  }
  auto kinds = audits(out);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "abuse.lockout"), kinds.end());
  EXPECT_FALSE(limited.admit(at(10), src));
  EXPECT_TRUE(limited.admit(at(10), *Endpoint::parse("10.0.0.6:1")));  // other sources unaffected
  EXPECT_TRUE(limited.admit(at(60'010), src));                         // lockout over
  EXPECT_EQ(limited.metrics().lockouts, 1u);
}

TEST_F(ServerCoreTest, EnrollmentRunsOutsideTheCoreAndAnswers) {
  Actions out;
  SessionId sid = core.on_open(at(0), src, ClientCert{}, out);
  core.on_frame(at(0), sid, body([](pb::Envelope& e) {
                  e.mutable_enroll_request()->set_device_id("cam9");
                  e.mutable_enroll_request()->set_token("tt1_x");
                  e.mutable_enroll_request()->set_csr_der("csr");
                }),
                out);
  const action::Enroll* en = nullptr;
  for (auto& a : out)
    if (auto* e = std::get_if<action::Enroll>(&a)) en = e;
  ASSERT_NE(en, nullptr);
  EXPECT_EQ(en->device_id, "cam9");
  EXPECT_EQ(en->token, "tt1_x");
  out.clear();
  EnrollResult r;
  r.ok = true;
  r.group = "g1";
  r.audit_kind = "enroll.ok";
  r.issued.cert_der = {1, 2, 3};
  core.on_enroll_result(at(5), sid, r, out);
  auto msgs = sent(out, sid);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].enroll_response().certificate_der(), std::string("\x01\x02\x03", 3));
  EXPECT_TRUE(closed(out, sid));
  EXPECT_EQ(audits(out), std::vector<std::string>{"enroll.ok"});

  // A refused enrollment is an authentication failure: error to the device, audit, close.
  out.clear();
  SessionId sid2 = core.on_open(at(10), src, ClientCert{}, out);
  core.on_frame(at(10), sid2,
                body([](pb::Envelope& e) { e.mutable_enroll_request()->set_device_id("cam9"); }),
                out);
  EnrollResult bad;
  bad.code = pb::ERROR_CODE_BAD_TOKEN;
  bad.message = "token is not valid";
  bad.audit_kind = "enroll.bad_token";
  core.on_enroll_result(at(11), sid2, bad, out);
  EXPECT_EQ(sent(out, sid2).back().error().code(), pb::ERROR_CODE_BAD_TOKEN);
  EXPECT_EQ(audits(out).at(0), "enroll.bad_token");
  EXPECT_EQ(core.metrics().enroll_failed, 1u);
}

TEST_F(ServerCoreTest, ShutdownClosesEverySession) {
  Actions out;
  SessionId s1 = connect("cam1", "aa01", 0, out);
  SessionId s2 = connect("cam2", "aa02", 0, out);
  out.clear();
  core.shutdown(at(1), out);
  EXPECT_EQ(sent(out, s1).at(0).close().reason(), pb::CLOSE_REASON_SHUTDOWN);
  EXPECT_TRUE(closed(out, s1));
  EXPECT_TRUE(closed(out, s2));
  EXPECT_EQ(core.online_count(), 0u);
}

}  // namespace
}  // namespace torii::server

// AgentSession with simulated time: Hello/Welcome and RTT, ECHO after an idle interval (A4),
// dead-server detection, and which endings allow a reconnect (A5).
#include "core/session/agent_session.hpp"

#include <gtest/gtest.h>

#include "core/control/frame.hpp"
#include "core/session/backoff.hpp"

namespace torii::session {
namespace {

namespace pb = ::torii::control::v1;
using namespace std::chrono_literals;

std::string body(const std::function<void(pb::Envelope&)>& set) {
  auto f = control::make_frame(set);
  return std::string(f.begin() + 4, f.end());
}

std::vector<pb::Envelope> sent(const AgentActions& out) {
  std::vector<pb::Envelope> v;
  for (const auto& a : out)
    if (auto* s = std::get_if<agent_action::Send>(&a)) {
      pb::Envelope e;
      EXPECT_EQ(control::decode_envelope(s->frame.data() + 4, s->frame.size() - 4, e),
                control::DecodeError::none);
      v.push_back(e);
    }
  return v;
}

bool closes(const AgentActions& out) {
  for (const auto& a : out)
    if (std::holds_alternative<agent_action::Close>(a)) return true;
  return false;
}

Instant at(int64_t ms) {
  return instant_from_ms(ms);
}

class AgentSessionTest : public ::testing::Test {
 protected:
  AgentSessionTest() {
    cfg.device_id = "cam1";
    cfg.agent_version = "1.0";
    cfg.keepalive_interval = 1000ms;
    cfg.local_addresses = {"192.168.1.20"};
  }
  void establish(AgentSession& s) {
    AgentActions out;
    s.start(at(0), out);
    s.on_frame(at(8), body([](pb::Envelope& e) {
                 e.mutable_welcome()->set_group("g1");
                 e.mutable_welcome()->set_stun_port(3478);
               }),
               out);
  }
  AgentConfig cfg;
};

TEST_F(AgentSessionTest, HelloThenWelcomeEstablishesAndMeasuresRtt) {
  AgentSession s(cfg);
  AgentActions out;
  s.start(at(0), out);
  auto msgs = sent(out);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].hello().device_id(), "cam1");
  EXPECT_EQ(msgs[0].hello().keepalive_interval_ms(), 1000u);
  EXPECT_EQ(msgs[0].hello().local_addresses(0), "192.168.1.20");
  out.clear();
  s.on_frame(at(8), body([](pb::Envelope& e) {
               e.mutable_welcome()->set_group("g1");
               e.mutable_welcome()->set_stun_port(3478);
             }),
             out);
  EXPECT_EQ(s.state(), AgentState::established);
  EXPECT_EQ(s.rtt_ms(), 8u);
  ASSERT_EQ(out.size(), 1u);
  auto* est = std::get_if<agent_action::Established>(&out[0]);
  ASSERT_NE(est, nullptr);
  EXPECT_EQ(est->stun_port, 3478);
  EXPECT_EQ(est->group, "g1");
}

TEST_F(AgentSessionTest, NoWelcomeMeansServerDead) {
  AgentSession s(cfg);
  AgentActions out;
  s.start(at(0), out);
  out.clear();
  s.tick(at(cfg.reply_timeout.count() - 1), out);
  EXPECT_TRUE(out.empty());
  s.tick(at(cfg.reply_timeout.count()), out);
  EXPECT_TRUE(closes(out));
  EXPECT_EQ(s.end_reason(), EndReason::server_dead);
  EXPECT_TRUE(s.should_reconnect());
}

TEST_F(AgentSessionTest, EchoOnlyAfterIdleIntervalAndRttFromReply) {
  AgentSession s(cfg);
  establish(s);  // Hello sent at 0
  AgentActions out;
  EXPECT_EQ(s.tick(at(999), out), at(1000));
  EXPECT_TRUE(out.empty());
  s.tick(at(1000), out);
  auto msgs = sent(out);
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_echo());
  EXPECT_EQ(msgs[0].echo().seq(), 1u);
  EXPECT_EQ(msgs[0].echo().last_rtt_ms(), 8u);  // the Hello/Welcome RTT travels with it
  out.clear();
  s.on_frame(at(1003), body([](pb::Envelope& e) { e.mutable_echo_reply()->set_seq(1); }), out);
  EXPECT_EQ(s.rtt_ms(), 3u);
  // Sending something else counts as activity: the next ECHO waits a full interval after it.
  s.send_attributes(at(1500), pb::Attributes(), out);
  out.clear();
  s.tick(at(2000), out);
  EXPECT_TRUE(sent(out).empty());
  s.tick(at(2500), out);
  ASSERT_EQ(sent(out).size(), 1u);
}

TEST_F(AgentSessionTest, MissedEchoRepliesDeclareTheServerDead) {
  AgentSession s(cfg);
  establish(s);
  AgentActions out;
  s.tick(at(1000), out);  // echo 1
  s.tick(at(2000), out);  // unanswered for an interval: echo 2 (missed 1)
  s.tick(at(3000), out);  // echo 3 (missed 2)
  EXPECT_EQ(sent(out).size(), 3u);
  EXPECT_FALSE(closes(out));
  s.tick(at(4000), out);  // missed 3 = kMissedEchoes
  EXPECT_TRUE(closes(out));
  EXPECT_EQ(s.end_reason(), EndReason::server_dead);
  EXPECT_TRUE(s.should_reconnect());
}

TEST_F(AgentSessionTest, EndingsDecideReconnect) {
  struct Case {
    const char* name;
    std::function<void(pb::Envelope&)> msg;
    EndReason reason;
    bool reconnect;
  };
  std::vector<Case> cases = {
      {"revoked close",
       [](pb::Envelope& e) { e.mutable_close()->set_reason(pb::CLOSE_REASON_REVOKED); },
       EndReason::revoked, false},
      {"admin close",
       [](pb::Envelope& e) { e.mutable_close()->set_reason(pb::CLOSE_REASON_ADMIN); },
       EndReason::server_close, true},
      {"revoked error",
       [](pb::Envelope& e) { e.mutable_error()->set_code(pb::ERROR_CODE_REVOKED); },
       EndReason::revoked, false},
      {"wrong id",
       [](pb::Envelope& e) { e.mutable_error()->set_code(pb::ERROR_CODE_WRONG_DEVICE_ID); },
       EndReason::refused, false},
      {"rate limited",
       [](pb::Envelope& e) { e.mutable_error()->set_code(pb::ERROR_CODE_RATE_LIMITED); },
       EndReason::rate_limited, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    AgentSession s(cfg);
    establish(s);
    AgentActions out;
    s.on_frame(at(100), body(c.msg), out);
    s.on_disconnected(at(101), true);
    EXPECT_EQ(s.end_reason(), c.reason);
    EXPECT_EQ(s.should_reconnect(), c.reconnect);
    EXPECT_EQ(s.state(), AgentState::closed);
  }
}

TEST_F(AgentSessionTest, LocalCloseSendsCloseThenCloseNotify) {
  AgentSession s(cfg);
  establish(s);
  AgentActions out;
  s.close(at(50), out);
  auto msgs = sent(out);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].close().reason(), pb::CLOSE_REASON_SHUTDOWN);
  EXPECT_TRUE(closes(out));
  EXPECT_EQ(s.end_reason(), EndReason::local_close);
}

TEST_F(AgentSessionTest, GarbageFromServerIsAProtocolError) {
  AgentSession s(cfg);
  establish(s);
  AgentActions out;
  s.on_frame(at(10), std::string("\x08\x63\x62", 3), out);
  EXPECT_TRUE(closes(out));
  EXPECT_EQ(s.end_reason(), EndReason::protocol_error);
}

TEST(Backoff, JitteredExponentialWithinBoundsAndCapped) {
  Backoff b(42, 1000ms, 60'000ms);
  const int64_t expect_max[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
  for (int64_t hi : expect_max) {
    const auto d = b.next().count();
    EXPECT_GE(d, hi / 2);
    EXPECT_LE(d, hi);
  }
  b.reset();
  EXPECT_LE(b.next().count(), 1000);
  // Same seed, same sequence: deterministic in tests; different seeds spread the herd.
  Backoff x(7), y(7), z(8);
  std::vector<int64_t> vx, vy, vz;
  for (int i = 0; i < 6; ++i) {
    vx.push_back(x.next().count());
    vy.push_back(y.next().count());
    vz.push_back(z.next().count());
  }
  EXPECT_EQ(vx, vy);
  EXPECT_NE(vx, vz);
}

}  // namespace
}  // namespace torii::session

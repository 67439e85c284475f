// Test fixture shared by the ServerCore tests (server_core_test.cpp, signaling_test.cpp): an
// in-memory Store with two active devices of group g1, simulated time, and decoders for the
// actions the core returns.
#pragma once
#include <gtest/gtest.h>

#include "core/control/frame.hpp"
#include "core/server/server_core.hpp"
#include "store/memory_store.hpp"

namespace torii::server::test_support {

namespace pb = ::torii::control::v1;
using namespace std::chrono_literals;
using control::make_frame;

class ServerCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store.create_group({"g1", 0});
    add_active("cam1", "g1", "aa01");
    add_active("cam2", "g1", "aa02");
  }
  void add_active(const std::string& id, const std::string& group, const std::string& serial) {
    store::Device d;
    d.id = id;
    d.group = group;
    store::EnrollmentToken t{id, hash_token("tok-" + id), 1'000'000'000, std::nullopt};
    store.add_device(d, t);
    ASSERT_TRUE(store.complete_enrollment(id, t.hash, 1000, serial, 9'000'000'000'000, {1, 2}));
  }
  Now at(int64_t ms) { return Now{instant_from_ms(ms), 1'700'000'000'000 + ms}; }
  static ClientCert cert(const std::string& id, const std::string& serial,
                         const std::string& group = "g1") {
    return ClientCert{true, id, group, serial, ""};
  }
  static std::string hello(const std::string& id, uint32_t keepalive_ms = 1000) {
    auto f = make_frame([&](pb::Envelope& e) {
      e.mutable_hello()->set_device_id(id);
      e.mutable_hello()->mutable_versions()->set_agent("9.9");
      e.mutable_hello()->set_keepalive_interval_ms(keepalive_ms);
    });
    return std::string(f.begin() + 4, f.end());
  }
  template <typename F>
  static std::string body(F&& set) {
    auto f = make_frame(set);
    return std::string(f.begin() + 4, f.end());
  }
  // The messages sent to `sid`, decoded.
  static std::vector<pb::Envelope> sent(const Actions& out, SessionId sid) {
    std::vector<pb::Envelope> v;
    for (const auto& a : out)
      if (auto* s = std::get_if<action::Send>(&a); s && s->sid == sid) {
        pb::Envelope e;
        EXPECT_EQ(control::decode_envelope(s->frame.data() + 4, s->frame.size() - 4, e),
                  control::DecodeError::none);
        v.push_back(e);
      }
    return v;
  }
  static bool closed(const Actions& out, SessionId sid) {
    for (const auto& a : out)
      if (auto* c = std::get_if<action::Close>(&a); c && c->sid == sid) return true;
    return false;
  }
  static std::vector<std::string> audits(const Actions& out) {
    std::vector<std::string> v;
    for (const auto& a : out)
      if (auto* au = std::get_if<action::Audit>(&a)) v.push_back(au->event.kind);
    return v;
  }
  SessionId connect(const std::string& id, const std::string& serial, int64_t t, Actions& out) {
    SessionId sid = core.on_open(at(t), src, cert(id, serial), out);
    core.on_frame(at(t), sid, hello(id), out);
    return sid;
  }

  store::MemoryStore store;
  ServerConfig cfg;
  ServerCore core{cfg, store};
  Endpoint src = *Endpoint::parse("10.0.0.5:40000");
};

}  // namespace torii::server::test_support

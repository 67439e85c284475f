// Conformance suite every Store implementation passes (SQLite, memory, later PostgreSQL): a
// type-parameterised GoogleTest suite, instantiated once per implementation with a factory.
//
//   struct MyFactory {
//     // A fresh, empty store; `dir` is an empty temp directory owned by the test.
//     static std::unique_ptr<Store> make(const std::filesystem::path& dir);
//     // The certificate complete_enrollment stored for `id` (not part of the Store interface).
//     static std::vector<uint8_t> cert_der(Store& s, const std::string& id);
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(My, StoreConformance, MyFactory);
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <thread>

#include "core/store/store.hpp"

namespace torii::store::conformance {

inline TokenHash hash_of(uint8_t seed) {
  TokenHash h{};
  for (size_t i = 0; i < h.size(); ++i) h[i] = uint8_t(seed + i * 7);
  return h;
}

// Removes the directory (and whatever a store left in it) when the test ends.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "torii-store-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

template <typename Factory>
class StoreConformance : public ::testing::Test {
 protected:
  void SetUp() override { store_ = Factory::make(dir_.path()); }

  // A pending device in group "g" (created if needed) whose token has hash_of(seed).
  void add(const std::string& id, uint8_t seed = 1, UnixMs expires_at = 10'000) {
    if (!store_->get_group("g")) store_->create_group(Group{"g", 1});
    Device d;
    d.id = id;
    d.group = "g";
    d.created_at = 100;
    EnrollmentToken t;
    t.device_id = id;
    t.hash = hash_of(seed);
    t.expires_at = expires_at;
    store_->add_device(d, t);
  }
  bool enroll(const std::string& id, uint8_t seed, UnixMs now) {
    return store_->complete_enrollment(id, hash_of(seed), now, "0a1b", now + 1000,
                                       std::vector<uint8_t>{0x30, 0x01, 0x00});
  }
  static void expect_kind(StoreError::Kind kind, const std::function<void()>& f) {
    try {
      f();
      ADD_FAILURE() << "expected StoreError";
    } catch (const StoreError& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
    }
  }

  ScopedTempDir dir_;
  std::unique_ptr<Store> store_;
};

TYPED_TEST_SUITE_P(StoreConformance);

TYPED_TEST_P(StoreConformance, Groups) {
  auto& s = *this->store_;
  EXPECT_TRUE(s.list_groups().empty());
  EXPECT_FALSE(s.get_group("lab"));
  s.create_group(Group{"lab", 5});
  s.create_group(Group{"field", 7});
  auto g = s.get_group("lab");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->name, "lab");
  EXPECT_EQ(g->created_at, 5);
  this->expect_kind(StoreError::Kind::conflict, [&] { s.create_group(Group{"lab", 9}); });
  EXPECT_EQ(s.get_group("lab")->created_at, 5);
  auto all = s.list_groups();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "field");
  EXPECT_EQ(all[1].name, "lab");
}

TYPED_TEST_P(StoreConformance, AddDevice) {
  auto& s = *this->store_;
  s.create_group(Group{"g", 1});
  Device d;
  d.id = "dev-b";
  d.group = "g";
  d.created_at = 1234;
  d.attributes.agent_version = "0.1.0";
  d.attributes.local_addresses = {"10.0.0.2", "fe80::1"};
  EnrollmentToken t;
  t.device_id = "dev-b";
  t.hash = hash_of(3);
  t.expires_at = 5000;
  s.add_device(d, t);
  this->add("dev-a");

  auto got = s.get_device("dev-b");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, "dev-b");
  EXPECT_EQ(got->group, "g");
  EXPECT_EQ(got->state, DeviceState::pending);
  EXPECT_EQ(got->created_at, 1234);
  EXPECT_FALSE(got->enrolled_at);
  EXPECT_FALSE(got->revoked_at);
  EXPECT_EQ(got->cert_serial, "");
  EXPECT_FALSE(got->cert_not_after);
  EXPECT_FALSE(got->last_seen);
  EXPECT_FALSE(got->rtt_ms);
  EXPECT_EQ(got->attributes, d.attributes);

  auto tok = s.get_token("dev-b");
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->device_id, "dev-b");
  EXPECT_EQ(tok->hash, hash_of(3));
  EXPECT_EQ(tok->expires_at, 5000);
  EXPECT_FALSE(tok->used_at);
  EXPECT_FALSE(s.get_token("nope"));
  EXPECT_FALSE(s.get_device("nope"));

  auto all = s.list_devices();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, "dev-a");
  EXPECT_EQ(all[1].id, "dev-b");
}

TYPED_TEST_P(StoreConformance, AddDeviceConflictAndUnknownGroup) {
  auto& s = *this->store_;
  this->add("dev", 1);
  // A second add with the same ID changes nothing, not even the token.
  this->expect_kind(StoreError::Kind::conflict, [&] { this->add("dev", 2); });
  EXPECT_EQ(s.get_token("dev")->hash, hash_of(1));

  Device d;
  d.id = "orphan";
  d.group = "no-such-group";
  EnrollmentToken t;
  t.hash = hash_of(4);
  t.expires_at = 100;
  this->expect_kind(StoreError::Kind::not_found, [&] { s.add_device(d, t); });
  EXPECT_FALSE(s.get_device("orphan"));
  EXPECT_FALSE(s.get_token("orphan"));

  d.group = "g";
  t.device_id = "someone-else";
  this->expect_kind(StoreError::Kind::invalid, [&] { s.add_device(d, t); });
  EXPECT_FALSE(s.get_device("orphan"));
  t.device_id = "";  // empty: the device's own ID
  s.add_device(d, t);
  EXPECT_EQ(s.get_token("orphan")->device_id, "orphan");
}

TYPED_TEST_P(StoreConformance, TokenConsumedOnce) {
  auto& s = *this->store_;
  this->add("dev", 7, 10'000);
  ASSERT_TRUE(this->enroll("dev", 7, 2000));
  auto d = s.get_device("dev");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, DeviceState::active);
  EXPECT_EQ(d->enrolled_at, 2000);
  EXPECT_EQ(d->cert_serial, "0a1b");
  EXPECT_EQ(d->cert_not_after, 3000);
  EXPECT_EQ(TypeParam::cert_der(s, "dev"), (std::vector<uint8_t>{0x30, 0x01, 0x00}));
  auto t = s.get_token("dev");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->used_at, 2000);

  // Replaying the same token later fails and changes nothing.
  EXPECT_FALSE(s.complete_enrollment("dev", hash_of(7), 2500, "ffff", 9999, {0x01}));
  d = s.get_device("dev");
  EXPECT_EQ(d->enrolled_at, 2000);
  EXPECT_EQ(d->cert_serial, "0a1b");
  EXPECT_EQ(s.get_token("dev")->used_at, 2000);
  EXPECT_EQ(TypeParam::cert_der(s, "dev"), (std::vector<uint8_t>{0x30, 0x01, 0x00}));
}

TYPED_TEST_P(StoreConformance, WrongExpiredOrUnknownTokenRefused) {
  auto& s = *this->store_;
  this->add("dev", 7, 10'000);
  EXPECT_FALSE(this->enroll("dev", 8, 2000));    // wrong hash
  EXPECT_FALSE(this->enroll("dev", 7, 10'000));  // expires_at must be after now
  EXPECT_FALSE(this->enroll("dev", 7, 20'000));
  EXPECT_FALSE(this->enroll("other", 7, 2000));  // unknown device
  auto d = s.get_device("dev");
  EXPECT_EQ(d->state, DeviceState::pending);
  EXPECT_FALSE(d->enrolled_at);
  EXPECT_FALSE(s.get_token("dev")->used_at);
  EXPECT_TRUE(TypeParam::cert_der(s, "dev").empty());
  // The refusals did not burn the token.
  EXPECT_TRUE(this->enroll("dev", 7, 9'999));
}

TYPED_TEST_P(StoreConformance, ConcurrentEnrollmentsConsumeTokenOnce) {
  auto& s = *this->store_;
  this->add("dev", 7, 10'000);
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      if (s.complete_enrollment("dev", hash_of(7), 1000 + i, "s" + std::to_string(i), 5000, {1}))
        ++wins;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
  auto d = s.get_device("dev");
  EXPECT_EQ(d->state, DeviceState::active);
  EXPECT_EQ("s" + std::to_string(*d->enrolled_at - 1000), d->cert_serial);
}

TYPED_TEST_P(StoreConformance, Revoke) {
  auto& s = *this->store_;
  this->add("dev", 7);
  ASSERT_TRUE(this->enroll("dev", 7, 2000));
  s.revoke_device("dev", 3000);
  auto d = s.get_device("dev");
  EXPECT_EQ(d->state, DeviceState::revoked);
  EXPECT_EQ(d->revoked_at, 3000);
  EXPECT_EQ(d->enrolled_at, 2000);
  s.revoke_device("dev", 4000);  // idempotent, keeps the first time
  EXPECT_EQ(s.get_device("dev")->revoked_at, 3000);
  this->expect_kind(StoreError::Kind::not_found, [&] { s.revoke_device("nope", 1); });

  // A device revoked before enrolling cannot enroll with its still-unused token.
  this->add("pending", 9);
  s.revoke_device("pending", 3000);
  EXPECT_FALSE(this->enroll("pending", 9, 3500));
  EXPECT_EQ(s.get_device("pending")->state, DeviceState::revoked);
  EXPECT_FALSE(s.get_token("pending")->used_at);
}

TYPED_TEST_P(StoreConformance, AttributesRoundTrip) {
  auto& s = *this->store_;
  this->add("dev");
  DeviceAttributes a;
  a.nat_type = "restricted-cone";
  a.nat_mapping = "endpoint-independent";
  a.nat_filtering = "address-dependent";
  a.public_endpoint = "203.0.113.7:40000";
  a.local_addresses = {"192.168.1.20", "10.8.0.3", "fd00::1234", "[fe80::1%eth0]"};
  a.agent_version = "0.1.0";
  a.firmware_version = "fw 2.3 (build 17)";
  a.os_version = "Linux 6.1.0-rpi — ünïcode";
  s.update_attributes("dev", a);
  EXPECT_EQ(s.get_device("dev")->attributes, a);

  a.local_addresses = {"10.0.0.1"};
  s.update_attributes("dev", a);
  EXPECT_EQ(s.get_device("dev")->attributes, a);
  a.local_addresses.clear();
  a.nat_type = "";
  s.update_attributes("dev", a);
  EXPECT_EQ(s.get_device("dev")->attributes, a);
  EXPECT_EQ(s.get_device("dev")->state, DeviceState::pending);

  this->expect_kind(StoreError::Kind::not_found, [&] { s.update_attributes("nope", a); });
  DeviceAttributes bad = a;
  bad.local_addresses = {"10.0.0.1", "two\nlines"};
  this->expect_kind(StoreError::Kind::invalid, [&] { s.update_attributes("dev", bad); });
  bad.local_addresses = {""};
  this->expect_kind(StoreError::Kind::invalid, [&] { s.update_attributes("dev", bad); });
  EXPECT_EQ(s.get_device("dev")->attributes, a);
}

TYPED_TEST_P(StoreConformance, PresenceBatch) {
  auto& s = *this->store_;
  this->add("a");
  this->add("b");
  this->add("c");
  s.update_presence({});
  s.update_presence(
      {Presence{"a", 1000, 12}, Presence{"b", 1100, std::nullopt}, Presence{"ghost", 1200, 5}});
  auto a = s.get_device("a"), b = s.get_device("b"), c = s.get_device("c");
  EXPECT_EQ(a->last_seen, 1000);
  EXPECT_EQ(a->rtt_ms, 12u);
  EXPECT_EQ(b->last_seen, 1100);
  EXPECT_FALSE(b->rtt_ms);
  EXPECT_FALSE(c->last_seen);
  EXPECT_FALSE(s.get_device("ghost"));

  // A later entry without an RTT keeps the last measured one.
  s.update_presence({Presence{"a", 2000, std::nullopt}, Presence{"b", 2100, 4000000000u}});
  a = s.get_device("a");
  b = s.get_device("b");
  EXPECT_EQ(a->last_seen, 2000);
  EXPECT_EQ(a->rtt_ms, 12u);
  EXPECT_EQ(b->rtt_ms, 4000000000u);
}

TYPED_TEST_P(StoreConformance, Audit) {
  auto& s = *this->store_;
  EXPECT_TRUE(s.list_audit(0, 10).empty());
  EXPECT_TRUE(s.tail_audit(10).empty());
  std::vector<int64_t> seqs;
  for (int i = 0; i < 5; ++i) {
    AuditEvent e;
    e.time = 1000 + i;
    e.kind = i % 2 ? "enroll.ok" : "enroll.bad_token";
    e.device_id = "dev-" + std::to_string(i);
    e.source = "192.0.2.1:5000";
    e.detail = "attempt " + std::to_string(i);
    e.seq = 999;  // ignored: the store assigns it
    seqs.push_back(s.append_audit(e));
  }
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_GT(seqs[i], seqs[i - 1]);
  EXPECT_GT(seqs[0], 0);

  auto all = s.list_audit(0, 100);
  ASSERT_EQ(all.size(), 5u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].seq, seqs[i]);
    EXPECT_EQ(all[i].time, int64_t(1000 + i));
    EXPECT_EQ(all[i].device_id, "dev-" + std::to_string(i));
    EXPECT_EQ(all[i].source, "192.0.2.1:5000");
    EXPECT_EQ(all[i].detail, "attempt " + std::to_string(i));
    EXPECT_EQ(all[i].kind, i % 2 ? "enroll.ok" : "enroll.bad_token");
  }
  auto page = s.list_audit(seqs[1], 2);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].seq, seqs[2]);
  EXPECT_EQ(page[1].seq, seqs[3]);
  EXPECT_TRUE(s.list_audit(seqs[4], 10).empty());
  EXPECT_TRUE(s.list_audit(0, 0).empty());

  auto tail = s.tail_audit(3);
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0].seq, seqs[2]);
  EXPECT_EQ(tail[2].seq, seqs[4]);
  EXPECT_EQ(s.tail_audit(50).size(), 5u);
  EXPECT_EQ(s.tail_audit(50).front().seq, seqs[0]);
  EXPECT_TRUE(s.tail_audit(0).empty());
}

TYPED_TEST_P(StoreConformance, AuditBatch) {
  auto& s = *this->store_;
  s.append_audit_batch({});
  EXPECT_TRUE(s.list_audit(0, 10).empty());
  int64_t first = s.append_audit(AuditEvent{0, 1, "session.open", "a", "192.0.2.1:1", ""});
  std::vector<AuditEvent> batch;
  for (int i = 0; i < 3; ++i)
    batch.push_back(AuditEvent{0, 10 + i, "session.close", "d" + std::to_string(i), "", "bye"});
  s.append_audit_batch(batch);
  int64_t last = s.append_audit(AuditEvent{0, 20, "device.revoke", "a", "admin", ""});
  auto all = s.list_audit(0, 100);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all.front().seq, first);
  EXPECT_EQ(all.back().seq, last);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq, all[i - 1].seq);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(all[1 + i].time, 10 + i);
    EXPECT_EQ(all[1 + i].kind, "session.close");
    EXPECT_EQ(all[1 + i].device_id, "d" + std::to_string(i));
    EXPECT_EQ(all[1 + i].detail, "bye");
  }
}

TYPED_TEST_P(StoreConformance, ConcurrentAuditAppends) {
  auto& s = *this->store_;
  constexpr int kThreads = 4, kEach = 25;
  std::vector<std::vector<int64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        AuditEvent e;
        e.time = i;
        e.kind = "session.open";
        e.device_id = "t" + std::to_string(t);
        seqs[t].push_back(s.append_audit(e));
      }
    });
  for (auto& th : threads) th.join();
  std::set<int64_t> unique;
  for (auto& v : seqs) {
    for (size_t i = 1; i < v.size(); ++i) EXPECT_GT(v[i], v[i - 1]);
    unique.insert(v.begin(), v.end());
  }
  EXPECT_EQ(unique.size(), size_t(kThreads * kEach));
  auto all = s.list_audit(0, 1000);
  ASSERT_EQ(all.size(), size_t(kThreads * kEach));
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                             [](const auto& a, const auto& b) { return a.seq < b.seq; }));
}

// A9: every device gets a distinct, stable overlay index; a failed add consumes none.
TYPED_TEST_P(StoreConformance, OverlayIndexes) {
  auto& s = *this->store_;
  this->add("a");
  this->add("b");
  this->expect_kind(StoreError::Kind::conflict, [&] { this->add("a"); });
  this->add("c");
  EXPECT_EQ(s.get_device("a")->overlay_index, 1u);
  EXPECT_EQ(s.get_device("b")->overlay_index, 2u);
  EXPECT_EQ(s.get_device("c")->overlay_index, 3u);
  ASSERT_TRUE(s.get_device_by_overlay(2));
  EXPECT_EQ(s.get_device_by_overlay(2)->id, "b");
  EXPECT_FALSE(s.get_device_by_overlay(4));
  EXPECT_FALSE(s.get_device_by_overlay(0));
  ASSERT_TRUE(this->enroll("b", 1, 50));
  s.revoke_device("b", 60);
  EXPECT_EQ(s.get_device("b")->overlay_index, 2u);  // revocation keeps the address reserved
}

REGISTER_TYPED_TEST_SUITE_P(StoreConformance, OverlayIndexes, Groups, AddDevice,
                            AddDeviceConflictAndUnknownGroup, TokenConsumedOnce,
                            WrongExpiredOrUnknownTokenRefused,
                            ConcurrentEnrollmentsConsumeTokenOnce, Revoke, AttributesRoundTrip,
                            PresenceBatch, Audit, AuditBatch, ConcurrentAuditAppends);

}  // namespace torii::store::conformance

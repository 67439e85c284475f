// Counts failed authentications per key (source address or device ID) in a fixed window and
// locks a key out after too many (D1: dictionary and token guessing get nowhere). Memory is
// bounded: the table holds at most max_keys entries, oldest evicted first.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>

#include "core/time.hpp"

namespace torii::server {

struct LimiterConfig {
  uint32_t max_failures = 10;
  Duration window = std::chrono::seconds(60);
  Duration lockout = std::chrono::seconds(300);
  size_t max_keys = 100000;
};

class FailureLimiter {
 public:
  explicit FailureLimiter(LimiterConfig cfg) : cfg_(cfg) {}
  bool locked(const std::string& key, Instant now) const;
  // Records a failure; returns true when this failure starts a lockout.
  bool record_failure(const std::string& key, Instant now);
  void forget(const std::string& key) { entries_.erase(key); }
  size_t size() const { return entries_.size(); }
  const LimiterConfig& config() const { return cfg_; }

 private:
  struct Entry {
    uint32_t failures = 0;
    Instant window_start{};
    Instant locked_until{};
  };
  void evict(Instant now);
  LimiterConfig cfg_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace torii::server

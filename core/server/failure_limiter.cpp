// Fixed-window failure counting with lockout (see failure_limiter.hpp).
#include "core/server/failure_limiter.hpp"

namespace torii::server {

bool FailureLimiter::locked(const std::string& key, Instant now) const {
  auto it = entries_.find(key);
  return it != entries_.end() && now < it->second.locked_until;
}

bool FailureLimiter::record_failure(const std::string& key, Instant now) {
  if (entries_.size() >= cfg_.max_keys && !entries_.count(key)) evict(now);
  Entry& e = entries_[key];
  if (now < e.locked_until) return false;  // already locked; the lockout is not extended
  if (e.failures == 0 || now - e.window_start >= cfg_.window) {
    e.failures = 0;
    e.window_start = now;
  }
  if (++e.failures >= cfg_.max_failures) {
    e.locked_until = now + cfg_.lockout;
    e.failures = 0;
    return true;
  }
  return false;
}

void FailureLimiter::evict(Instant now) {
  // Drop entries whose window and lockout are over; if none, drop the oldest window.
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (now >= it->second.locked_until && now - it->second.window_start >= cfg_.window)
      it = entries_.erase(it);
    else
      ++it;
  }
  if (entries_.size() < cfg_.max_keys) return;
  auto oldest = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->second.window_start < oldest->second.window_start && now >= it->second.locked_until)
      oldest = it;
  entries_.erase(oldest);
}

}  // namespace torii::server

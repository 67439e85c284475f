// Group-committing audit writer (see audit_log.hpp).
#include "net/audit_log.hpp"

#include <spdlog/spdlog.h>

namespace torii::net {

AuditLog::AuditLog(store::Store& store) : store_(store), thread_([this] { run(); }) {}

AuditLog::~AuditLog() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AuditLog::append(store::AuditEvent ev) {
  spdlog::info("audit {} device={} source={} {}", ev.kind,
               ev.device_id.empty() ? "-" : ev.device_id, ev.source.empty() ? "-" : ev.source,
               ev.detail);
  {
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(ev));
    ++appended_;
  }
  cv_.notify_one();
}

void AuditLog::flush() {
  std::unique_lock lk(mu_);
  const uint64_t target = appended_;
  cv_.notify_one();
  done_cv_.wait(lk, [&] { return committed_ >= target; });
}

void AuditLog::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_) return;
    std::vector<store::AuditEvent> batch;
    batch.swap(queue_);
    lk.unlock();
    try {
      store_.append_audit_batch(batch);
    } catch (const std::exception& e) {
      spdlog::error("audit: could not store {} event(s): {}", batch.size(), e.what());
    }
    lk.lock();
    committed_ += batch.size();
    done_cv_.notify_all();
  }
}

}  // namespace torii::net

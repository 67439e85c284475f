// Durable audit trail writer: events are queued by any thread and committed to the Store by one
// background thread in batches (group commit), so a burst of registrations costs one fsync per
// batch rather than one per event. Every event is also logged (never with secrets).
#pragma once
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "core/store/store.hpp"

namespace torii::net {

class AuditLog {
 public:
  explicit AuditLog(store::Store& store);
  ~AuditLog();  // flushes
  void append(store::AuditEvent ev);
  void flush();  // returns once everything appended so far is committed

 private:
  void run();
  store::Store& store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::vector<store::AuditEvent> queue_;
  uint64_t appended_ = 0;
  uint64_t committed_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace torii::net

#include "src/core/stream.h"

#include "src/core/comm.h"
#include "src/core/log.h"
#include "src/engine/executor.h"

namespace braid {

Status runTask(Task& task) {
  std::vector<std::shared_ptr<Comm>> comms;
  for (auto& s : task.schedules) {
    comms.push_back(s->commPtr());
    s->comm()->enter();
  }
  Status st = executeSchedules(task.schedules);
  for (auto& c : comms) {
    if (!st.isOk()) c->setLastError(st.message());
    c->leave();
  }
  if (!st.isOk()) LOG_WARN(kColl, "{}", st.message());
  return st;
}

Stream::Stream() : thread_([this] { worker(); }) {}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Stream::enqueue(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

// Runs the front task with mu_ held on entry and exit (released while it runs).
void Stream::runFront(std::unique_lock<std::mutex>& lock) {
  Task t = std::move(queue_.front());
  queue_.pop_front();
  running_ = true;
  lock.unlock();
  Status s = runTask(t);
  t.schedules.clear();
  lock.lock();
  running_ = false;
  if (!s.isOk() && firstError_.isOk()) firstError_ = s;
  if (queue_.empty()) idle_.notify_all();
}

void Stream::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return !running_ && (stop_ || !queue_.empty()); });
    if (queue_.empty()) return;  // stop_ and nothing left
    runFront(lock);
  }
}

Status Stream::synchronize() {
  std::unique_lock<std::mutex> lock(mu_);
  // The caller would only wait, so when the worker has not started yet it runs the queued
  // tasks itself (in order): no hand-off to the worker and back. A busy worker keeps going
  // (it wakes us when the queue is empty). Every task is bounded by its timeout.
  while (!queue_.empty() || running_) {
    if (running_) {
      idle_.wait(lock);
    } else {
      runFront(lock);
    }
  }
  Status s = firstError_;
  firstError_ = Status::ok();
  return s;
}

bool Stream::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  return !queue_.empty() || running_;
}

Status Stream::takeError() {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = firstError_;
  firstError_ = Status::ok();
  return s;
}

}  // namespace braid

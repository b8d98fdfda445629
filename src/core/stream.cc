#include "src/core/stream.h"

#include "src/core/comm.h"
#include "src/core/handles.h"
#include "src/core/log.h"
#include "src/engine/executor.h"

namespace braid {

Status runTask(Task& task) {
  std::vector<std::shared_ptr<Comm>> comms;
  // Calls queued behind one that failed fail too, for the same reason: said once (a stream of
  // thousands of queued calls would repeat it thousands of times).
  bool failedBefore = !task.schedules.empty();
  for (auto& s : task.schedules) {
    comms.push_back(s->commPtr());
    failedBefore = failedBefore && s->comm()->hasAsyncError();
    s->comm()->enter();
  }
  // The stream's worker serves any communicator: its log lines carry this task's rank.
  if (!task.schedules.empty()) logSetThreadRank(task.schedules[0]->comm()->rank());
  Status st = executeSchedules(task.schedules);
  for (auto& c : comms) {
    // Each communicator's own failure, where it has one: in a group over several, the call's
    // error names ranks of the communicator it came from (the others' say so).
    if (!st.isOk()) c->setLastError(c->hasAsyncError() ? c->asyncError().message() : st.message());
    c->leave();
  }
  if (!st.isOk() && failedBefore) {
    LOG_DEBUG(kColl, "{}", st.message());
  } else if (!st.isOk()) {
    LOG_WARN(kColl, "{}", st.message());
  }
  return st;
}

StreamQueue::StreamQueue() : forkGen_(braid::forkGeneration()), thread_([this] { worker(); }) {}

StreamQueue::~StreamQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

namespace {
// How long a task queued during synchronous use may wait for its caller before the worker
// starts it, and how long after the caller last ran a task that use counts as synchronous.
constexpr auto kLazyStart = std::chrono::microseconds(500);
constexpr auto kSyncWindow = std::chrono::milliseconds(20);
}  // namespace

QueuedMark::QueuedMark(const std::vector<std::unique_ptr<Schedule>>& schedules) {
  for (const auto& s : schedules) {
    comms_.push_back(s->commPtr());
    comms_.back()->queued(1);
  }
}

QueuedMark::~QueuedMark() {
  for (auto& c : comms_) c->queued(-1);
}

void StreamQueue::enqueue(Task task) {
  task.queuedAt = Clock::now();
  task.queued = QueuedMark(task.schedules);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
    wake = !(callerRuns_ && workerTimed_);
  }
  if (wake) cv_.notify_all();
}

// Runs the front task with mu_ held on entry and exit (released while it runs).
void StreamQueue::runFront(std::unique_lock<std::mutex>& lock) {
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

void StreamQueue::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    auto now = Clock::now();
    if (!running_ && !queue_.empty() &&
        (!callerRuns_ || stop_ || now - queue_.front().queuedAt >= kLazyStart)) {
      callerRuns_ = false;
      runFront(lock);
      continue;
    }
    if (stop_ && queue_.empty() && !running_) return;
    if (callerRuns_ && now - lastCallerRun_ > kSyncWindow) callerRuns_ = false;
    workerTimed_ = callerRuns_;
    if (workerTimed_) {
      cv_.wait_for(lock, kLazyStart);
    } else {
      cv_.wait(lock);
    }
    workerTimed_ = false;
  }
}

Status StreamQueue::synchronize() {
  std::unique_lock<std::mutex> lock(mu_);
  // The caller would only wait, so when the worker has not started yet it runs the queued
  // tasks itself (in order): no hand-off to the worker and back. A busy worker keeps going
  // (it wakes us when the queue is empty). Every task is bounded by its timeout.
  while (!queue_.empty() || running_) {
    if (running_) {
      idle_.wait(lock);
    } else {
      callerRuns_ = true;
      lastCallerRun_ = Clock::now();
      runFront(lock);
    }
  }
  Status s = firstError_;
  firstError_ = Status::ok();
  return s;
}

bool StreamQueue::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  return !queue_.empty() || running_;
}

Status StreamQueue::takeError() {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = firstError_;
  firstError_ = Status::ok();
  return s;
}

}  // namespace braid

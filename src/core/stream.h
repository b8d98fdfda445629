// Streams (braidStream_t; StreamQueue, not Stream: braid.hpp's braid::Stream is the public
// wrapper, and a program may link both): a worker thread per stream runs its tasks in order,
// asynchronously to the caller; a caller that synchronizes runs the queued tasks itself instead of
// waiting for the worker, and while it keeps doing so, enqueue stops waking the worker (no thread
// switch per call). A task is the schedules of one call or of one fused group.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "src/core/status.h"
#include "src/engine/schedule.h"

namespace braid {

class Comm;

// The communicators a task queued on a stream counts against until it has run (or is
// dropped): destroying a communicator completes what was queued on it first (Comm::shutdown).
class QueuedMark {
 public:
  QueuedMark() = default;
  explicit QueuedMark(const std::vector<std::unique_ptr<Schedule>>& schedules);
  QueuedMark(QueuedMark&& o) noexcept : comms_(std::exchange(o.comms_, {})) {}
  QueuedMark& operator=(QueuedMark&& o) noexcept {
    std::swap(comms_, o.comms_);
    return *this;
  }
  ~QueuedMark();

 private:
  std::vector<std::shared_ptr<Comm>> comms_;
};

struct Task {
  std::vector<std::unique_ptr<Schedule>> schedules;
  Clock::time_point queuedAt{};
  QueuedMark queued;  // set by StreamQueue::enqueue
};

// Runs a task now on this thread; records errors on the communicators involved.
Status runTask(Task& task);

class StreamQueue {
 public:
  StreamQueue();
  ~StreamQueue();  // finishes queued work first
  void enqueue(Task task);
  Status synchronize();
  bool busy();
  Status takeError();
  // The fork generation it belongs to (handles.h): a child of fork() has no worker thread.
  uint64_t forkGeneration() const { return forkGen_; }

 private:
  uint64_t forkGen_ = 0;
  void worker();
  void runFront(std::unique_lock<std::mutex>& lock);
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_;
  std::deque<Task> queue_;
  bool running_ = false;
  bool stop_ = false;
  // Synchronous use (the caller keeps running its tasks in synchronize): new tasks do not wake
  // the worker; it looks at the queue by itself every kLazyStart and starts a task that has
  // waited that long (so a caller that never synchronizes is only delayed, never stuck).
  bool callerRuns_ = false;
  bool workerTimed_ = false;
  Clock::time_point lastCallerRun_{};
  Status firstError_;
  std::thread thread_;
};

}  // namespace braid

// Streams: a worker thread per stream runs its tasks in order, asynchronously to the caller;
// a caller that synchronizes runs the queued tasks itself instead of waiting for the worker.
// A task is the schedules of one call or of one fused group.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "src/core/status.h"
#include "src/engine/schedule.h"

namespace braid {

struct Task {
  std::vector<std::unique_ptr<Schedule>> schedules;
};

// Runs a task now on this thread; records errors on the communicators involved.
Status runTask(Task& task);

class Stream {
 public:
  Stream();
  ~Stream();  // finishes queued work first
  void enqueue(Task task);
  Status synchronize();
  bool busy();
  Status takeError();

 private:
  void worker();
  void runFront(std::unique_lock<std::mutex>& lock);
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_;
  std::deque<Task> queue_;
  bool running_ = false;
  bool stop_ = false;
  Status firstError_;
  std::thread thread_;
};

}  // namespace braid

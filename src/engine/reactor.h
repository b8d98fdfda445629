// The progress loop of one communicator. All transport state is touched only by whoever holds
// the loop: normally the loop's own epoll thread, but a thread waiting for an operation may
// take the loop and poll the network itself (drive), so a small message costs no thread
// hand-off. While someone drives, and for a short linger after, the loop thread stays parked
// (it does not even wake for network events); an idle loop sleeps in epoll_wait, so ranks may
// outnumber cores.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "src/bootstrap/socket_util.h"

namespace braid {

class Reactor {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onEvents(uint32_t events) = 0;
  };

  Reactor() = default;
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Creates the epoll set (fds can be added from then on); start() runs the loop thread.
  Status open();
  Status start(int rank);
  // Runs pending posted work, then stops and joins the thread. Idempotent.
  void stop();

  // Any thread: fn runs while holding the loop, in post order.
  void post(std::function<void()> fn);
  // Any thread: runs fn now on this thread when the loop is free (after earlier posted work),
  // else posts it.
  void runOrPost(std::function<void()> fn);
  bool running() const { return thread_.joinable(); }

  // Driving: a waiting thread calls beginDrive(), then pollOnce() as often as it likes, then
  // endDrive(). pollOnce() returns whether anything happened (events or posted work).
  // endDrive(handBack=true) wakes the loop thread at once (the caller will sleep with work
  // still pending); handBack=false lets it linger parked, expecting another operation soon.
  void beginDrive();
  bool pollOnce();
  void endDrive(bool handBack);

  // With the loop held (handlers, posted work, or before start).
  Status add(int fd, uint32_t events, Handler* h);
  void modify(int fd, uint32_t events, Handler* h);
  void remove(int fd);

 private:
  void run();
  bool parked() const;
  // With loopMu_ held.
  void dispatch(const epoll_event* events, int n);
  void drainPosted();
  void wakeLoopThread();

  Fd epfd_;
  Fd wakeFd_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  int rank_ = -1;
  std::mutex loopMu_;  // held by whoever runs handlers and posted work
  std::mutex mu_;      // posted_
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> hasPosted_{false};
  // Parking of the loop thread while others drive.
  std::atomic<int> drivers_{0};
  std::atomic<int64_t> lingerUntilNs_{0};
  std::mutex parkMu_;
  std::condition_variable parkCv_;
};

}  // namespace braid

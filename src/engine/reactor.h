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
#include <type_traits>
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

  // Progress that no file descriptor signals (shared-memory rings): polled with the loop held
  // on every pass, by drivers and by the loop thread. Before the loop thread sleeps it arms
  // every poller; a poller that still has work says so and the thread does not sleep. An armed
  // poller's peers wake the loop through one of its fds (a doorbell); disarm follows the sleep.
  class Poller {
   public:
    virtual ~Poller() = default;
    virtual bool poll() = 0;      // whether anything moved
    virtual bool armSleep() = 0;  // false: work is pending, do not sleep
    virtual void disarm() = 0;
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
  // else posts it. A template, so that the common case (the loop is free) builds no
  // std::function: a small send is posted this way on every call.
  template <typename Fn>
  void runOrPost(Fn&& fn) {
    if (!runNow([](void* f) { (*static_cast<std::remove_reference_t<Fn>*>(f))(); }, &fn)) {
      post(std::function<void()>(std::forward<Fn>(fn)));
    }
  }
  bool running() const { return thread_.joinable(); }
  // Any thread but the loop's: evaluates done() in the loop every few milliseconds until it is
  // true or the deadline passes (e.g. until queued goodbyes are written). False when the loop
  // never answered by the deadline (done() never ran: what it would have looked at is unknown).
  bool waitUntil(Deadline deadline, const std::function<bool()>& done);

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
  void addPoller(Poller* p);
  void removePoller(Poller* p);

 private:
  void run();
  // Runs call(arg) now, holding the loop, when this thread holds it already or it is free
  // (after earlier posted work); false when another thread holds it.
  bool runNow(void (*call)(void*), void* arg);
  bool parked() const;
  // With loopMu_ held.
  void dispatch(const epoll_event* events, int n);
  void drainPosted();
  void wakeLoopThread();
  bool pollPollers();
  bool armPollers();

  Fd epfd_;
  Fd wakeFd_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  int rank_ = -1;
  std::mutex loopMu_;  // held by whoever runs handlers and posted work
  std::mutex mu_;      // posted_
  std::vector<std::function<void()>> posted_;
  std::vector<Poller*> pollers_;  // with loopMu_ held
  std::atomic<bool> hasPollers_{false};
  unsigned polls_ = 0;  // with loopMu_ held
  std::atomic<bool> hasPosted_{false};
  // Parking of the loop thread while others drive.
  std::atomic<int> drivers_{0};
  std::atomic<int64_t> lingerUntilNs_{0};
  std::mutex parkMu_;
  std::condition_variable parkCv_;
};

}  // namespace braid

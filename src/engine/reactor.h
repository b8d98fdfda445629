// The progress loop of one communicator: an epoll thread that owns all transport state.
// Other threads hand it work with post(); an idle loop sleeps in epoll_wait (after an optional
// bounded spin of BRAID_SPIN_US), so ranks may outnumber cores.
#pragma once

#include <sys/epoll.h>

#include <atomic>
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
  Status start(int64_t spinUs, int rank);
  // Runs pending posted work, then stops and joins the thread. Idempotent.
  void stop();

  // Any thread: fn runs on the loop thread, in post order.
  void post(std::function<void()> fn);
  bool running() const { return thread_.joinable(); }

  // Loop thread only (or before start).
  Status add(int fd, uint32_t events, Handler* h);
  void modify(int fd, uint32_t events, Handler* h);
  void remove(int fd);

 private:
  void run();
  void drainPosted();

  Fd epfd_;
  Fd wakeFd_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  int64_t spinUs_ = 0;
  int rank_ = -1;
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> hasPosted_{false};
};

}  // namespace braid

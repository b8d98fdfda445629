#include "src/engine/reactor.h"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/core/log.h"

namespace braid {

Reactor::~Reactor() { stop(); }

Status Reactor::open() {
  epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
  wakeFd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!epfd_.valid() || !wakeFd_.valid()) {
    return systemError(fmt::format("epoll/eventfd: {}", std::strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the wake fd
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wakeFd_.get(), &ev) != 0) {
    return systemError(fmt::format("epoll_ctl: {}", std::strerror(errno)));
  }
  return Status::ok();
}

Status Reactor::start(int64_t spinUs, int rank) {
  spinUs_ = spinUs;
  rank_ = rank;
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void Reactor::stop() {
  if (!thread_.joinable()) return;
  post([this] { stopping_ = true; });
  thread_.join();
}

void Reactor::post(std::function<void()> fn) {
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wasEmpty = posted_.empty();
    posted_.push_back(std::move(fn));
    hasPosted_.store(true, std::memory_order_release);
  }
  if (wasEmpty) {
    uint64_t one = 1;
    ssize_t r = ::write(wakeFd_.get(), &one, sizeof one);
    (void)r;
  }
}

Status Reactor::add(int fd, uint32_t events, Handler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return systemError(fmt::format("epoll_ctl(ADD): {}", std::strerror(errno)));
  }
  return Status::ok();
}

void Reactor::modify(int fd, uint32_t events, Handler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void Reactor::remove(int fd) { epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void Reactor::drainPosted() {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    work.swap(posted_);
    hasPosted_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : work) fn();
}

void Reactor::run() {
  logSetThreadRank(rank_);
  epoll_event events[64];
  while (!stopping_) {
    int timeout = -1;
    if (spinUs_ > 0) timeout = 0;
    int n = epoll_wait(epfd_.get(), events, 64, timeout);
    if (n == 0 && spinUs_ > 0) {
      // Bounded spin: poll without sleeping for spinUs_, then sleep.
      auto until = Clock::now() + std::chrono::microseconds(spinUs_);
      while (n == 0 && Clock::now() < until && !hasPosted_.load(std::memory_order_acquire)) {
        n = epoll_wait(epfd_.get(), events, 64, 0);
      }
      if (n == 0 && !hasPosted_.load(std::memory_order_acquire)) {
        n = epoll_wait(epfd_.get(), events, 64, -1);
      }
    }
    if (n < 0 && errno != EINTR) {
      LOG_ERROR(kNet, "epoll_wait: {}", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t v;
        ssize_t r = ::read(wakeFd_.get(), &v, sizeof v);
        (void)r;
        continue;
      }
      static_cast<Handler*>(events[i].data.ptr)->onEvents(events[i].events);
    }
    if (hasPosted_.load(std::memory_order_acquire)) drainPosted();
  }
  drainPosted();
}

}  // namespace braid

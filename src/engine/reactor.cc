#include "src/engine/reactor.h"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/core/log.h"

namespace braid {
namespace {

// How long the loop thread stays parked after a driver finished with nothing pending: an
// application issuing operations back to back keeps the loop on its own thread.
constexpr int64_t kLingerNs = 2'000'000;
// The parked loop thread looks again after kLingerNs, then at doubling intervals up to this
// while the application keeps driving: each look is a thread wake-up, which takes the core
// from a spinning rank where ranks share cores. Once the application goes quiet, the loop
// thread takes over within the interval reached (posted work wakes it at once).
constexpr int64_t kMaxParkCheckNs = 16'000'000;

// The reactor whose loop this thread holds (nested runOrPost runs inline).
thread_local const Reactor* tlsHeld = nullptr;

int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

class Hold {
 public:
  Hold(const Reactor* r) : prev_(tlsHeld) { tlsHeld = r; }
  ~Hold() { tlsHeld = prev_; }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

 private:
  const Reactor* prev_;
};

}  // namespace

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

Status Reactor::start(int rank) {
  rank_ = rank;
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void Reactor::stop() {
  if (!thread_.joinable()) return;
  post([this] { stopping_ = true; });
  wakeLoopThread();
  thread_.join();
}

void Reactor::wakeLoopThread() {
  uint64_t one = 1;
  ssize_t r = ::write(wakeFd_.get(), &one, sizeof one);
  (void)r;
  std::lock_guard<std::mutex> lock(parkMu_);
  parkCv_.notify_one();
}

void Reactor::post(std::function<void()> fn) {
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wasEmpty = posted_.empty();
    posted_.push_back(std::move(fn));
    hasPosted_.store(true);
  }
  // A driver drains posted work itself; otherwise the loop thread must wake. (Sequentially
  // consistent with endDrive: one of the two sees the other.)
  if (wasEmpty && drivers_.load() == 0) wakeLoopThread();
}

bool Reactor::runNow(void (*call)(void*), void* arg) {
  if (tlsHeld == this) {
    call(arg);
    return true;
  }
  std::unique_lock<std::mutex> loop(loopMu_, std::try_to_lock);
  if (!loop.owns_lock()) return false;
  Hold hold(this);
  if (hasPosted_.load(std::memory_order_acquire)) drainPosted();
  call(arg);
  return true;
}

bool Reactor::waitUntil(Deadline deadline, const std::function<bool()>& done) {
  // The question is shared with the loop, which may look at it after this returns: a question
  // withdrawn (the loop did not take it up by the deadline) is not asked any more.
  struct Question {
    std::mutex mu;
    std::condition_variable cv;
    bool answered = false, finished = false, withdrawn = false;
  };
  bool answered = false;
  while (Clock::now() < deadline) {
    auto q = std::make_shared<Question>();
    post([q, &done] {
      std::lock_guard<std::mutex> lock(q->mu);
      if (q->withdrawn) return;
      q->finished = done();  // (the asker waits for this while it holds q->mu)
      q->answered = true;
      q->cv.notify_one();
    });
    std::unique_lock<std::mutex> lock(q->mu);
    if (!q->cv.wait_until(lock, deadline, [&] { return q->answered; })) {
      q->withdrawn = true;
      LOG_WARN(kNet, "progress loop did not answer within the wait's deadline");
      return answered;
    }
    answered = true;
    if (q->finished) return true;
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return answered;
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

void Reactor::addPoller(Poller* p) {
  pollers_.push_back(p);
  hasPollers_.store(true, std::memory_order_release);
}

void Reactor::removePoller(Poller* p) {
  std::erase(pollers_, p);
  hasPollers_.store(!pollers_.empty(), std::memory_order_release);
}

bool Reactor::pollPollers() {
  bool moved = false;
  for (Poller* p : pollers_) moved = p->poll() || moved;
  return moved;
}

bool Reactor::armPollers() {
  bool sleepOk = true;
  for (Poller* p : pollers_) sleepOk = p->armSleep() && sleepOk;
  return sleepOk;
}

void Reactor::drainPosted() {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    work.swap(posted_);
    hasPosted_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : work) fn();
}

void Reactor::dispatch(const epoll_event* events, int n) {
  for (int i = 0; i < n; ++i) {
    if (events[i].data.ptr == nullptr) {
      uint64_t v;
      ssize_t r = ::read(wakeFd_.get(), &v, sizeof v);
      (void)r;
      continue;
    }
    static_cast<Handler*>(events[i].data.ptr)->onEvents(events[i].events);
  }
}

void Reactor::beginDrive() { drivers_.fetch_add(1, std::memory_order_acq_rel); }

bool Reactor::pollOnce() {
  std::unique_lock<std::mutex> loop(loopMu_, std::try_to_lock);
  if (!loop.owns_lock()) return false;
  Hold hold(this);
  bool moved = hasPosted_.load(std::memory_order_acquire);
  if (moved) drainPosted();
  if (!pollers_.empty() && pollPollers()) moved = true;
  // With shared-memory peers polled above, the fds (sockets, doorbells) are looked at every
  // few passes only: an epoll_wait costs more than a pass over the rings.
  if (pollers_.empty() || (++polls_ & 7) == 0) {
    epoll_event events[64];
    int n = epoll_wait(epfd_.get(), events, 64, 0);
    if (n > 0) {
      dispatch(events, n);
      moved = true;
    }
  }
  if (hasPosted_.load(std::memory_order_acquire)) drainPosted();
  return moved;
}

void Reactor::endDrive(bool handBack) {
  lingerUntilNs_.store(handBack ? 0 : nowNs() + kLingerNs, std::memory_order_release);
  if (drivers_.fetch_sub(1) != 1) return;
  // Work posted while this thread drove did not wake the loop thread (post() leaves it to the
  // driver), which may sit in epoll_wait rather than parked: wake it both ways. So too when
  // the loop thread's pollers are disarmed (a driver took the doorbell that was meant to wake
  // it): it must poll and re-arm.
  if (hasPosted_.load() || (handBack && hasPollers_.load(std::memory_order_acquire))) {
    wakeLoopThread();
  } else if (handBack) {
    std::lock_guard<std::mutex> lock(parkMu_);
    parkCv_.notify_one();
  }
}

bool Reactor::parked() const {
  if (stopping_.load(std::memory_order_acquire)) return false;
  if (drivers_.load(std::memory_order_acquire) > 0) return true;
  if (hasPosted_.load(std::memory_order_acquire)) return false;
  return nowNs() < lingerUntilNs_.load(std::memory_order_acquire);
}

void Reactor::run() {
  logSetThreadRank(rank_);
  epoll_event events[64];
  int64_t checkNs = kLingerNs;
  while (!stopping_) {
    if (parked()) {
      std::unique_lock<std::mutex> lock(parkMu_);
      // While someone drives, endDrive(handBack) or post() wakes us: check rarely. While
      // lingering, look again when the linger ends, or after checkNs if that is later.
      int64_t waitNs = checkNs;
      if (drivers_.load(std::memory_order_acquire) == 0) {
        int64_t until = lingerUntilNs_.load(std::memory_order_acquire);
        waitNs = std::clamp<int64_t>(until - nowNs(), 100'000, kLingerNs);
        waitNs = std::max(waitNs, checkNs);
      }
      if (!parkCv_.wait_for(lock, std::chrono::nanoseconds(waitNs), [&] { return !parked(); })) {
        checkNs = std::min(2 * checkNs, kMaxParkCheckNs);  // still busy: look less often
      }
      continue;
    }
    checkNs = kLingerNs;
    int timeout = -1;
    if (hasPollers_.load(std::memory_order_acquire)) {
      // Shared-memory peers: poll until idle, then arm their doorbells before sleeping.
      std::lock_guard<std::mutex> loop(loopMu_);
      Hold hold(this);
      bool moved = pollPollers();
      if (hasPosted_.load(std::memory_order_acquire)) drainPosted();
      if (moved || !armPollers()) timeout = 0;
    } else if (hasPosted_.load(std::memory_order_acquire)) {
      timeout = 0;  // posted while a driver held the loop: the wake fd may not have been written
    }
    int n = epoll_wait(epfd_.get(), events, 64, timeout);
    if (n < 0 && errno != EINTR) {
      LOG_ERROR(kNet, "epoll_wait: {}", std::strerror(errno));
      break;
    }
    if (timeout != 0 && hasPollers_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> loop(loopMu_);
      for (Poller* p : pollers_) p->disarm();
    }
    // A thread began driving while we slept: it handles these events (level-triggered).
    if (drivers_.load(std::memory_order_acquire) > 0) continue;
    std::lock_guard<std::mutex> loop(loopMu_);
    Hold hold(this);
    if (n > 0) dispatch(events, n);
    if (!pollers_.empty()) pollPollers();
    if (hasPosted_.load(std::memory_order_acquire)) drainPosted();
  }
  std::lock_guard<std::mutex> loop(loopMu_);
  Hold hold(this);
  drainPosted();
}

}  // namespace braid

#include "src/engine/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "src/core/comm.h"
#include "src/core/laggards.h"
#include "src/core/log.h"
#include "src/engine/reduce.h"
#include "transports/transport.h"

namespace braid {
namespace {

struct Ref {
  uint32_t sched;
  uint32_t node;
};

// "send of 8 bytes to rank 1 (...)": a request still pending, for timeout messages.
std::string describe(const NetRequest& q, const Transport& t) {
  const bool send = q.kind == NetRequest::Kind::kSend;
  return fmt::format("{} {} bytes {} {}", send ? "send of" : "receive of", q.bytes,
                     send ? "to" : "from", t.peerName(q.peer));
}

// The error of a wait that ran out: "allreduce timed out after 30000 ms waiting for receive of
// 8 bytes from rank 1 (...)" and what the transport knows of the peers' health.
Status waitTimedOut(const std::string& name, int64_t timeoutMs, const std::string& pending,
                    const Transport& t) {
  return timeoutError(timeoutText(name, timeoutMs, pending + t.healthNote(), {}));
}

class Waiter;
// The waiter whose thread is polling its single progress loop right now (Waiter::drive).
thread_local const Waiter* tlsDriving = nullptr;

// Waits on one thread for the completions of the network requests it posted: drives the
// communicators' progress loops itself while the network moves (BRAID_SPIN_US), then sleeps
// until a completion wakes it. `poll` is more work to look at on every pass (poll steps):
// true when it finished something.
class Waiter : public CompletionSink {
 public:
  void onComplete(NetRequest* r) override {
    if (tlsDriving == this) {
      // Completed inside this waiter's own pollOnce, on its own thread, holding its only loop:
      // every other completion of its requests also holds that loop (they run in the loop's
      // handlers or posted work), and this thread is not in take() or asleep: no lock, no
      // wake-up.
      done_.push_back(r);
      hasDone_.store(true, std::memory_order_release);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_.push_back(r);
    hasDone_.store(true, std::memory_order_release);
    cv_.notify_one();
  }
  // Back to the state of a new Waiter (no communicator, nothing pending), keeping the
  // vectors' storage: for reuse by the next call on this thread.
  void reset() {
    loops_.clear();
    spinUs_ = 0;
    yieldMask_ = kYieldMask;
    driving_ = false;
    timedOut_ = false;
    hasDone_.store(false, std::memory_order_relaxed);
    done_.clear();
  }
  void addComm(Comm* c) {
    spinUs_ = std::max(spinUs_, c->config().spinUs);
    if (c->oversubscribed()) yieldMask_ = 0;
    if (std::find(loops_.begin(), loops_.end(), c->reactor()) == loops_.end()) {
      loops_.push_back(c->reactor());
    }
  }
  int64_t spinUs() const { return spinUs_; }
  void setDriving(bool on, bool handBack) {
    if (on == driving_) return;
    driving_ = on;
    for (Reactor* l : loops_) on ? l->beginDrive() : l->endDrive(handBack);
  }
  // Polls the loops on this thread while the network keeps moving; true when completions
  // arrived (or `poll` finished something), false when nothing moved for spinUs_ (or the
  // deadline passed).
  template <typename Poll>
  bool drive(Deadline deadline, Poll&& poll) {
    setDriving(true, false);
    // The spin starts at the first clock read (a few passes in): an operation that completes
    // at once reads no clock.
    Clock::time_point lastMove;
    bool stamp = true;  // progress since the clock was last read
    const bool alone = loops_.size() == 1;
    for (unsigned idle = 0;; ++idle) {
      bool moved = false;
      if (alone) {
        struct Mark {
          explicit Mark(const Waiter* w) { tlsDriving = w; }
          ~Mark() { tlsDriving = nullptr; }
        } mark(this);
        moved = loops_[0]->pollOnce();
      } else {
        for (Reactor* l : loops_) moved = l->pollOnce() || moved;
      }
      if (hasDone_.load(std::memory_order_acquire)) return true;
      if (poll()) return true;
      if (moved) {
        idle = 0;
        stamp = true;
        continue;
      }
      if ((idle & yieldMask_) == yieldMask_) {
        // Let other ranks sharing this core run (ranks may outnumber cores).
        std::this_thread::yield();
      }
      if ((idle & 7) != 7) continue;  // the clock costs more than a pass over shm rings
      auto now = Clock::now();
      if (stamp) {
        lastMove = now;
        stamp = false;
      }
      if (now >= deadline || now - lastMove > std::chrono::microseconds(spinUs_)) break;
    }
    setDriving(false, true);
    return false;
  }
  // Sleeps until a completion arrives (or, with `polling`, `poll` finishes something: looked
  // at every 100 us, as poll steps signal nothing); false when `until` passed first.
  template <typename Poll>
  bool sleep(Deadline until, bool polling, Poll&& poll) {
    std::unique_lock<std::mutex> lock(mu_);
    auto arrived = [&] { return !done_.empty(); };
    if (!polling) return cv_.wait_until(lock, until, arrived);
    for (;;) {
      auto next = std::min<Deadline>(until, Clock::now() + std::chrono::microseconds(100));
      if (cv_.wait_until(lock, next, arrived)) return true;
      lock.unlock();
      bool woke = poll();
      lock.lock();
      if (woke) return true;
      if (Clock::now() >= until) return false;
    }
  }
  // Whether a completion arrived (it may have come while posting, on this thread).
  bool hasDone() const { return hasDone_.load(std::memory_order_acquire); }
  // The completions that arrived.
  void take(std::vector<NetRequest*>* batch) {
    std::lock_guard<std::mutex> lock(mu_);
    batch->swap(done_);
    hasDone_.store(false, std::memory_order_relaxed);
  }
  // Waits for at least one completion (moved into *batch): drives, then sleeps. At `deadline`
  // it calls onTimeout() once, which must abort what is pending so that the requests come
  // back, and returns with the batch empty; after that it only sleeps, 30 s at most. False
  // when even then nothing came: the requests are leaked (the caller must not free them).
  template <typename Poll, typename OnTimeout>
  bool waitSome(Deadline deadline, bool polling, Poll&& poll, OnTimeout&& onTimeout,
                std::vector<NetRequest*>* batch) {
    if (spinUs_ > 0 && !timedOut_ && drive(deadline, poll)) {
      take(batch);
      return true;
    }
    if (!sleep(timedOut_ ? deadlineIn(30000) : deadline, polling, poll)) {
      if (timedOut_) {
        LOG_ERROR(kColl, "requests still pending 30 s after aborting; leaking them");
        return false;
      }
      timedOut_ = true;
      onTimeout();
      return true;  // batch stays empty: the caller comes back after the aborts
    }
    take(batch);
    return true;
  }

 private:
  // The progress loops of the communicators involved, and whether this thread drives them.
  std::vector<Reactor*> loops_;
  int64_t spinUs_ = 0;
  // Idle polls between yields: every one when this host runs more ranks than it has cores
  // (a spinning rank would take the core from the peer it waits for).
  static constexpr unsigned kYieldMask = 15;
  unsigned yieldMask_ = kYieldMask;
  bool driving_ = false;
  bool timedOut_ = false;  // onTimeout was called
  std::atomic<bool> hasDone_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<NetRequest*> done_;
};

class Run {
 public:
  Run(std::vector<std::unique_ptr<Schedule>>& s, Deadline limit) : scheds_(s), limit_(limit) {}
  Status execute();
  bool leaked() const { return leaked_; }

 private:
  Node& node(Ref r) { return scheds_[r.sched]->nodes()[r.node]; }
  void start(Ref r);
  void finish(Ref r);
  // The first failure of the run, of a step of schedule `from`: see execute().
  void fail(uint32_t from, Status e);
  PollStep* stepOf(Ref r) { return scheds_[r.sched]->pollStep(node(r).slot); }
  // Polls a started poll step; true (and finish or fail) when it finished.
  bool pollOne(Ref r, bool* any);
  bool pollSteps();
  std::string pendingDescription();
  bool waitSome(Deadline deadline, int64_t timeoutMs, std::vector<NetRequest*>* batch);

  std::vector<std::unique_ptr<Schedule>>& scheds_;
  const Deadline limit_;
  size_t at(Ref r) const { return base_[r.sched] + r.node; }
  // Per step of every schedule, flat (schedule si's steps start at base_[si]).
  std::vector<size_t> base_;
  std::vector<uint32_t> deps_;
  std::vector<NetRequest> reqs_;
  std::vector<uint8_t> inFlight_;
  std::vector<Ref> ready_;
  std::vector<Ref> polling_;  // poll steps started and not finished (without a lane)
  // Laned poll steps started and not finished, by lane, in lane order (PollStep::lane).
  std::map<const void*, std::map<uint64_t, Ref>> lanes_;
  bool hasPolling() const { return !polling_.empty() || !lanes_.empty(); }
  std::map<std::pair<Comm*, uint64_t>, Ref> selfSends_, selfRecvs_;
  size_t outstanding_ = 0;
  size_t finished_ = 0;
  Status err_;
  bool leaked_ = false;
  Waiter w_;
};

void Run::fail(uint32_t from, Status e) {
  if (!err_.isOk()) return;
  err_ = std::move(e);
  // The call cannot finish, and its peers wait for this rank's part: tell them why (a peer
  // that only saw this rank go away would blame it), and end the rest now: the requests of
  // every communicator of a group come back failed. The other communicators say where it came
  // from (its rank numbers are another communicator's).
  Comm* origin = scheds_[from]->comm();
  for (auto& s : scheds_) {
    s->comm()->failWith(s->comm() == origin
                            ? err_
                            : Status(err_.code(), fmt::format("a call of the same group on "
                                                              "another communicator (rank "
                                                              "numbers there) failed: {}",
                                                              err_.message())));
  }
}

void Run::finish(Ref r) {
  ++finished_;
  for (uint32_t s : node(r).succ) {
    if (--deps_[base_[r.sched] + s] == 0) ready_.push_back(Ref{r.sched, s});
  }
}

void Run::start(Ref r) {
  Node& n = node(r);
  Schedule& s = *scheds_[r.sched];
  switch (n.kind) {
    case Node::Kind::kReduce:
      reduceBuffers(n.dst, n.src, n.src2, n.count, n.dt, n.op);
      return finish(r);
    case Node::Kind::kCopy:
      if (n.count > 0 && n.dst != n.src) std::memmove(n.dst, n.src, n.count);
      return finish(r);
    case Node::Kind::kAvg:
      finishAvg(n.dst, n.count, n.dt, n.nranks);
      return finish(r);
    case Node::Kind::kPoll: {
      PollStep* step = s.pollStep(n.slot);
      if (const void* lane = step->lane()) {
        lanes_[lane].emplace(step->laneOrder(), r);  // polled in order by pollSteps
        ++outstanding_;
        return;
      }
      Status e;
      if (step->poll(&e)) return e.isOk() ? finish(r) : fail(r.sched, std::move(e));
      polling_.push_back(r);
      ++outstanding_;
      return;
    }
    case Node::Kind::kSend:
    case Node::Kind::kRecv:
      break;
  }
  Comm* comm = s.comm();
  bool isSend = n.kind == Node::Kind::kSend;
  if (n.peer == comm->rank()) {
    // Self messages pair up inside the task (e.g. send/recv to self in one group).
    auto key = std::make_pair(comm, s.tag(n.slot));
    auto& mine = isSend ? selfSends_ : selfRecvs_;
    auto& other = isSend ? selfRecvs_ : selfSends_;
    auto it = other.find(key);
    if (it == other.end()) {
      mine.emplace(key, r);
      return;
    }
    Ref o = it->second;
    other.erase(it);
    Node& sn = isSend ? n : node(o);
    Node& rn = isSend ? node(o) : n;
    if (sn.count != rn.count) {
      if (err_.isOk()) {
        err_ =
            invalidUsage(fmt::format("send to self of {} bytes does not match the receive "
                                     "from self of {} bytes",
                                     sn.count, rn.count));
      }
      return;
    }
    if (sn.count > 0) std::memmove(rn.dst, sn.src, sn.count);
    finish(r);
    finish(o);
    return;
  }
  NetRequest& q = reqs_[at(r)];
  q.kind = isSend ? NetRequest::Kind::kSend : NetRequest::Kind::kRecv;
  q.peer = n.peer;
  q.tag = s.tag(n.slot);
  q.buf = isSend ? const_cast<void*>(n.src) : n.dst;
  q.bytes = n.count;
  q.sink = &w_;
  q.node = (static_cast<size_t>(r.sched) << 32) | r.node;
  ++outstanding_;
  inFlight_[at(r)] = 1;
  comm->transport()->post(&q);
}

// Polls the poll steps in flight; whether any finished or is busy (so that the waiter
// polls again at once rather than sleeping).
bool Run::pollOne(Ref r, bool* any) {
  Status e;
  PollStep* step = stepOf(r);
  if (!step->poll(&e)) {
    *any = *any || step->busy();
    return false;
  }
  --outstanding_;
  *any = true;
  e.isOk() ? finish(r) : fail(r.sched, std::move(e));
  return true;
}

bool Run::pollSteps() {
  bool any = false;
  for (size_t i = 0; i < polling_.size();) {
    if (!pollOne(polling_[i], &any)) {
      ++i;
      continue;
    }
    polling_[i] = polling_.back();
    polling_.pop_back();
  }
  for (auto lane = lanes_.begin(); lane != lanes_.end();) {
    auto& pending = lane->second;
    while (!pending.empty() && pollOne(pending.begin()->second, &any)) {
      pending.erase(pending.begin());
    }
    lane = pending.empty() ? lanes_.erase(lane) : std::next(lane);
  }
  return any;
}

std::string Run::pendingDescription() {
  // The first few distinct clauses, each with how often it is pending ("receive of 20000 bytes
  // from rank 1 (x2)": chunks of one ring step).
  std::vector<std::pair<std::string, int>> items;
  bool more = false;
  auto add = [&](std::string s) {
    for (auto& [text, n] : items) {
      if (text == s) return static_cast<void>(++n);
    }
    if (items.size() == 3) return static_cast<void>(more = true);
    items.emplace_back(std::move(s), 1);
  };
  for (Ref r : polling_) add(stepOf(r)->waitingFor());
  for (const auto& [lane, pending] : lanes_) add(stepOf(pending.begin()->second)->waitingFor());
  for (uint32_t si = 0; si < scheds_.size(); ++si) {
    auto& nodes = scheds_[si]->nodes();
    for (uint32_t ni = 0; ni < nodes.size(); ++ni) {
      if (inFlight_[at(Ref{si, ni})]) {
        add(describe(reqs_[at(Ref{si, ni})], *scheds_[si]->comm()->transport()));
      }
    }
  }
  std::string out;
  for (const auto& [text, n] : items) {
    out +=
        fmt::format("{}{}{}", out.empty() ? "" : ", ", text, n > 1 ? fmt::format(" (x{})", n) : "");
  }
  return more ? out + ", ..." : out;
}

// Waits for at least one completion (moved into *batch); false when the run must give up.
bool Run::waitSome(Deadline deadline, int64_t timeoutMs, std::vector<NetRequest*>* batch) {
  auto poll = [this] { return hasPolling() && pollSteps(); };
  auto onTimeout = [&] {
    // Woken long after the deadline: this process did not run meanwhile (SIGSTOP, a debugger,
    // a starved CPU), and the others' silence may be its own doing. Measured now: asking the
    // peers below waits for their answers (up to a second for one that is cut off).
    const auto overMs =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - deadline).count();
    // Which ranks have not made the (first) collective call: those the wait is for, in the end.
    std::string late;
    for (auto& s : scheds_) {
      if ((s->tagBase() & kP2pBit) == 0) {
        late = s->comm()->whoIsLate(s->tagBase());
        break;
      }
    }
    Comm* c0 = scheds_[0]->comm();
    Status t = c0->timedOut(scheds_[0]->name(), timeoutMs, pendingDescription(), late,
                            c0->transport()->healthNote());
    if (overMs > 1000) {
      t = Status(t.code(), fmt::format("{} (this rank's wait ended {} ms after its deadline: the "
                                       "process was stopped or starved of CPU meanwhile)",
                                       t.message(), overMs));
    }
    if (err_.isOk()) err_ = t;
    for (auto& s : scheds_) s->comm()->transport()->abort(t);
  };
  if (w_.waitSome(deadline, hasPolling(), poll, onTimeout, batch)) return true;
  leaked_ = true;
  return false;
}

Status Run::execute() {
  int64_t timeoutMs = INT64_MAX;
  size_t total = 0;
  base_.reserve(scheds_.size());
  for (auto& s : scheds_) {
    BRAID_TRY(s->comm()->asyncError());
    try {
      s->prepare();
    } catch (const std::bad_alloc&) {
      return systemError(fmt::format("{}: out of memory building its steps", s->name()));
    }
  }
  for (uint32_t si = 0; si < scheds_.size(); ++si) {
    Comm* c = scheds_[si]->comm();
    timeoutMs = std::min(timeoutMs, c->config().timeoutMs);
    w_.addComm(c);
    auto& nodes = scheds_[si]->nodes();
    total += nodes.size();
    base_.push_back(total - nodes.size());
    for (uint32_t ni = 0; ni < nodes.size(); ++ni) {
      deps_.push_back(nodes[ni].deps);
      if (nodes[ni].deps == 0) ready_.push_back(Ref{si, ni});
    }
  }
  reqs_.resize(total);
  inFlight_.assign(total, 0);
  Deadline deadline = std::min(deadlineIn(timeoutMs), limit_);
  std::vector<NetRequest*> batch;
  while (true) {
    while (!ready_.empty() && err_.isOk()) {
      Ref r = ready_.back();
      ready_.pop_back();
      start(r);
    }
    if (outstanding_ == 0) break;
    if (!waitSome(deadline, timeoutMs, &batch)) return err_;
    for (NetRequest* q : batch) {
      --outstanding_;
      inFlight_[at(Ref{static_cast<uint32_t>(q->node >> 32), static_cast<uint32_t>(q->node)})] = 0;
      if (!q->status.isOk()) {
        fail(static_cast<uint32_t>(q->node >> 32), q->status);
        continue;
      }
      finish(Ref{static_cast<uint32_t>(q->node >> 32), static_cast<uint32_t>(q->node)});
    }
    batch.clear();
  }
  w_.setDriving(false, false);
  if (!err_.isOk()) return err_;
  if (finished_ != total) {
    if (!selfSends_.empty() || !selfRecvs_.empty()) {
      return invalidUsage(
          "a send to self or receive from self has no matching partner in the "
          "same group (put both inside braidGroupStart/braidGroupEnd)");
    }
    return internalError(fmt::format("{}: schedule stalled with {} of {} steps done",
                                     scheds_[0]->name(), finished_, total));
  }
  return Status::ok();
}

}  // namespace

Status executeP2p(Comm* comm, const char* name, bool send, int peer, uint64_t tag, void* buf,
                  size_t bytes) {
  if (comm->hasAsyncError()) return comm->asyncError();
  // On the heap for the same reason as a Run: leaked, not freed, if the request never comes
  // back after an abort. Otherwise kept for this thread's next call (no allocation per call).
  struct Direct {
    Waiter w;
    NetRequest q;
    std::vector<NetRequest*> batch;
  };
  // Owned by a raw pointer: on every way out but success (an exception included) it is leaked.
  thread_local std::unique_ptr<Direct> spare;
  Direct* d = spare ? spare.release() : new Direct;
  d->w.reset();
  d->q = NetRequest{};
  d->batch.clear();
  d->w.addComm(comm);
  NetRequest& q = d->q;
  q.kind = send ? NetRequest::Kind::kSend : NetRequest::Kind::kRecv;
  q.peer = peer;
  q.tag = tag;
  q.buf = buf;
  q.bytes = bytes;
  q.sink = &d->w;
  Transport* t = comm->transport();
  t->post(&q);
  std::vector<NetRequest*>& batch = d->batch;
  // A small send the transport copied completes while it is posted: nothing to wait for, and
  // no pass over the network either (the receive that follows drives it; a ping-pong's reply
  // is then placed straight into the posted buffer instead of the unexpected store).
  if (d->w.hasDone()) d->w.take(&batch);
  Status timedOut;
  if (batch.empty()) {
    const int64_t timeoutMs = comm->config().timeoutMs;
    const Deadline deadline = deadlineIn(timeoutMs);
    auto noPoll = [] { return false; };
    auto onTimeout = [&] {
      timedOut = waitTimedOut(name, timeoutMs, describe(q, *t), *t);
      t->abort(timedOut);
    };
    while (batch.empty()) {
      if (!d->w.waitSome(deadline, false, noPoll, onTimeout, &batch)) return timedOut;  // leaked
    }
  }
  d->w.setDriving(false, false);
  Status s = timedOut.isOk() ? std::move(q.status) : timedOut;
  spare.reset(d);
  return s;
}

Status executeSchedules(std::vector<std::unique_ptr<Schedule>>& schedules, Deadline limit) {
  if (schedules.empty()) return Status::ok();
  // The run lives on the heap: if requests never complete after an abort (should not happen),
  // it is leaked instead of freed under the transport's feet.
  auto* run = new Run(schedules, limit);
  Status s = run->execute();
  if (run->leaked()) {
    new std::vector<std::unique_ptr<Schedule>>(std::move(schedules));  // intentionally leaked
    return s;
  }
  delete run;
  return s;
}

}  // namespace braid

#include "src/engine/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "src/core/comm.h"
#include "src/core/log.h"
#include "src/engine/reduce.h"
#include "transports/transport.h"

namespace braid {
namespace {

struct Ref {
  uint32_t sched;
  uint32_t node;
};

class Run : public CompletionSink {
 public:
  explicit Run(std::vector<std::unique_ptr<Schedule>>& s) : scheds_(s) {}
  Status execute();
  bool leaked() const { return leaked_; }
  void onComplete(NetRequest* r) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_.push_back(r);
    hasDone_.store(true, std::memory_order_release);
    cv_.notify_one();
  }

 private:
  Node& node(Ref r) { return scheds_[r.sched]->nodes()[r.node]; }
  void start(Ref r);
  void finish(Ref r);
  void fail(Status e) {
    if (err_.isOk()) err_ = std::move(e);
  }
  bool pollSteps();
  std::string pendingDescription();
  bool waitSome(Deadline deadline, int64_t timeoutMs, std::vector<NetRequest*>* batch);
  bool drive(Deadline deadline);
  void setDriving(bool on, bool handBack);

  std::vector<std::unique_ptr<Schedule>>& scheds_;
  size_t at(Ref r) const { return base_[r.sched] + r.node; }
  // Per step of every schedule, flat (schedule si's steps start at base_[si]).
  std::vector<size_t> base_;
  std::vector<uint32_t> deps_;
  std::vector<NetRequest> reqs_;
  std::vector<uint8_t> inFlight_;
  std::vector<Ref> ready_;
  std::vector<Ref> polling_;  // poll steps started and not finished
  std::map<std::pair<Comm*, uint64_t>, Ref> selfSends_, selfRecvs_;
  size_t outstanding_ = 0;
  size_t finished_ = 0;
  Status err_;
  bool leaked_ = false;
  bool timedOut_ = false;
  // The progress loops of the communicators involved, and whether this thread drives them.
  std::vector<Reactor*> loops_;
  int64_t spinUs_ = 0;
  // Idle polls between yields: every one when this host runs more ranks than it has cores
  // (a spinning rank would take the core from the peer it waits for).
  unsigned yieldMask_ = 15;
  bool driving_ = false;
  std::atomic<bool> hasDone_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<NetRequest*> done_;
};

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
      Status e;
      if (s.pollStep(n.slot)->poll(&e)) return e.isOk() ? finish(r) : fail(std::move(e));
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
  q.sink = this;
  q.node = (static_cast<size_t>(r.sched) << 32) | r.node;
  ++outstanding_;
  inFlight_[at(r)] = 1;
  comm->transport()->post(&q);
}

// Polls the poll steps in flight; whether any finished.
bool Run::pollSteps() {
  bool any = false;
  for (size_t i = 0; i < polling_.size();) {
    Ref r = polling_[i];
    Status e;
    if (!scheds_[r.sched]->pollStep(node(r).slot)->poll(&e)) {
      ++i;
      continue;
    }
    polling_[i] = polling_.back();
    polling_.pop_back();
    --outstanding_;
    any = true;
    e.isOk() ? finish(r) : fail(std::move(e));
  }
  return any;
}

std::string Run::pendingDescription() {
  std::string out;
  int shown = 0;
  for (Ref r : polling_) {
    if (shown++ == 3) return out + ", ...";
    out += fmt::format("{}{}", out.empty() ? "" : ", ",
                       scheds_[r.sched]->pollStep(node(r).slot)->waitingFor());
  }
  for (uint32_t si = 0; si < scheds_.size(); ++si) {
    auto& nodes = scheds_[si]->nodes();
    for (uint32_t ni = 0; ni < nodes.size(); ++ni) {
      NetRequest& q = reqs_[at(Ref{si, ni})];
      if (!inFlight_[at(Ref{si, ni})]) continue;
      if (shown++ == 3) return out + ", ...";
      out += fmt::format("{}{} {} bytes {} {}", out.empty() ? "" : ", ",
                         q.kind == NetRequest::Kind::kSend ? "send of" : "receive of", q.bytes,
                         q.kind == NetRequest::Kind::kSend ? "to" : "from",
                         scheds_[si]->comm()->transport()->peerName(q.peer));
    }
  }
  return out;
}

void Run::setDriving(bool on, bool handBack) {
  if (on == driving_) return;
  driving_ = on;
  for (Reactor* l : loops_) on ? l->beginDrive() : l->endDrive(handBack);
}

// Polls the communicators' loops on this thread while the network keeps moving; returns true
// when completions arrived, false when nothing moved for spinUs_ (or the deadline passed).
bool Run::drive(Deadline deadline) {
  setDriving(true, false);
  auto lastMove = Clock::now();
  bool stamp = false;  // progress since the clock was last read
  for (unsigned idle = 0;; ++idle) {
    bool moved = false;
    for (Reactor* l : loops_) moved = l->pollOnce() || moved;
    if (hasDone_.load(std::memory_order_acquire)) return true;
    if (!polling_.empty() && pollSteps()) return true;
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

// Waits for at least one completion (moved into *batch); false when the run must give up.
bool Run::waitSome(Deadline deadline, int64_t timeoutMs, std::vector<NetRequest*>* batch) {
  if (spinUs_ > 0 && !timedOut_ && drive(deadline)) {
    std::lock_guard<std::mutex> lock(mu_);
    batch->swap(done_);
    hasDone_.store(false, std::memory_order_relaxed);
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  Deadline until = timedOut_ ? deadlineIn(30000) : deadline;
  auto arrived = [&] { return !done_.empty(); };
  bool woke;
  if (polling_.empty()) {
    woke = cv_.wait_until(lock, until, arrived);
  } else {
    // Poll steps signal nothing: look at them every 100 µs while sleeping.
    for (;;) {
      auto next = std::min<Deadline>(until, Clock::now() + std::chrono::microseconds(100));
      if ((woke = cv_.wait_until(lock, next, arrived))) break;
      lock.unlock();
      woke = pollSteps();
      lock.lock();
      if (woke || Clock::now() >= until) break;
    }
  }
  if (!woke) {
    lock.unlock();
    if (timedOut_) {
      LOG_ERROR(kColl, "requests still pending 30 s after aborting; leaking them");
      leaked_ = true;
      return false;
    }
    timedOut_ = true;
    Status t = timeoutError(fmt::format("{} timed out after {} ms waiting for {}{}",
                                        scheds_[0]->name(), timeoutMs, pendingDescription(),
                                        scheds_[0]->comm()->transport()->healthNote()));
    if (err_.isOk()) err_ = t;
    for (auto& s : scheds_) s->comm()->transport()->abort(t);
    return true;  // batch stays empty: the caller comes back after the aborts
  }
  batch->swap(done_);
  hasDone_.store(false, std::memory_order_relaxed);
  return true;
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
    spinUs_ = std::max(spinUs_, c->config().spinUs);
    if (c->oversubscribed()) yieldMask_ = 0;
    if (std::find(loops_.begin(), loops_.end(), c->reactor()) == loops_.end()) {
      loops_.push_back(c->reactor());
    }
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
  Deadline deadline = deadlineIn(timeoutMs);
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
        if (err_.isOk()) err_ = q->status;
        continue;
      }
      finish(Ref{static_cast<uint32_t>(q->node >> 32), static_cast<uint32_t>(q->node)});
    }
    batch.clear();
  }
  setDriving(false, false);
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

Status executeSchedules(std::vector<std::unique_ptr<Schedule>>& schedules) {
  if (schedules.empty()) return Status::ok();
  // The run lives on the heap: if requests never complete after an abort (should not happen),
  // it is leaked instead of freed under the transport's feet.
  auto* run = new Run(schedules);
  Status s = run->execute();
  if (run->leaked()) {
    new std::vector<std::unique_ptr<Schedule>>(std::move(schedules));  // intentionally leaked
    return s;
  }
  delete run;
  return s;
}

}  // namespace braid

// Small collectives in one exchange through the fast boxes (src/engine/fastbox.h), on a
// communicator whose ranks all share memory: every rank writes what each peer needs into its
// box to that peer, reads the boxes of the peers it needs, and finishes the call locally.
// Reductions combine the contributions in rank order, so every rank gets the same bits. One
// box write and one read per pair replace log2(n) rounds of ring messages, and a blocking call
// outside a group runs here directly: no schedule, no executor, no progress loop, no
// allocation. Calls run one at a time per communicator, in call order (fastbox.h). A larger
// allreduce of two ranks is a fast-box call too: the boxes carry buffer addresses and the
// ranks move the data themselves (allreduce_direct.h).
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "collectives/algorithms.h"
#include "collectives/allreduce_direct.h"
#include "src/core/comm.h"
#include "src/core/log.h"
#include "src/engine/reduce.h"

namespace braid {
namespace {

constexpr uint32_t bit(CollKind k) { return uint32_t{1} << static_cast<unsigned>(k); }
constexpr uint32_t kFastKinds = bit(CollKind::kAllReduce) | bit(CollKind::kBroadcast) |
                                bit(CollKind::kReduce) | bit(CollKind::kAllGather) |
                                bit(CollKind::kReduceScatter) | bit(CollKind::kBarrier);

class FastOp final : public PollStep {
 public:
  FastOp(Comm* comm, const CollArgs& a, uint64_t call, uint64_t tagBase)
      : comm_(comm),
        fb_(comm->fastBoxes()),
        a_(a),
        call_(call),
        tagBase_(tagBase),
        seq_(static_cast<uint32_t>(call)),  // the boxes' call numbers: the low 32 bits
        me_(comm->rank()),
        n_(comm->nranks()),
        bytes_(a.count * dtypeSize(a.dt)) {
    if (directAllReduceApplies(a, *fb_, me_, n_)) {
      direct_.emplace(a, comm, 1 - me_, call, fb_->links[1 - me_]);
      directBox_ = direct_->mine();
    }
  }

  bool poll(Status* err) override;
  std::string waitingFor() const override;
  bool busy() const override { return busy_; }
  // Calls of a communicator's fast boxes run in call order.
  const void* lane() const override { return fb_; }
  uint64_t laneOrder() const override { return call_; }
  // Runs the call to its end on this thread (blocking calls outside a group).
  Status run();

 private:
  bool myTurn() const { return fb_->finished.load(std::memory_order_acquire) == seq_ - 1; }
  // Writes the boxes to the peers, as far as they are free; whether all are written.
  bool post();
  // Whether peer p finished with its box from this rank (its use two calls ago).
  bool boxFree(int p) const;
  bool writesTo(int p) const;
  bool readsFrom(int p) const;
  // What this rank writes to p (boxBytes() bytes; none from a broadcast's non-root ranks,
  // whose boxes to the root carry only the call's description).
  const void* contents(int p) const;
  size_t boxBytes() const {
    return direct_ ? sizeof(DirectBuffers) : a_.kind == CollKind::kBarrier ? 0 : bytes_;
  }
  // The direct allreduce's chunks (after the boxes were read): whether this rank's are done
  // and the peer's too.
  bool directWork(Status* err);
  // After a failure with chunks under way: the peer must stop writing into this rank's
  // buffer before the call returns (it stops at its next pass, or has died).
  void directStop();
  Status check(int p, const FastBox& b) const;
  void complete();
  void reduceInRankOrder(void* dst, const char* own) const;
  // Ends the call with an error: a failure leaves the boxes out of step, so it is fatal to
  // the communicator (its peers hear of it and fail too, instead of waiting).
  bool fail(Status e, Status* err);
  FastBox* inBox(int p) const { return fb_->links[p].in[seq_ & 1]; }
  // Whether peer p destroyed its communicator (it writes no more boxes).
  bool peerLeft(int p) const {
    const std::atomic<bool>* left = fb_->links[p].left;
    return left != nullptr && left->load(std::memory_order_acquire);
  }
  // Ends the call because peer p left before doing its part of it.
  bool failLeft(int p, Status* err) {
    return fail(remoteError(fmt::format("{}: {} destroyed its communicator (or aborted it, idle), "
                                        "or its process ended without destroying it (exited, "
                                        "died or was killed), while this rank still waited for it "
                                        "(fast-box call {}; mismatched calls between ranks?)",
                                        collName(a_.kind), comm_->transport()->peerName(p), seq_)),
                err);
  }

  Comm* comm_;
  FastBoxes* fb_;
  CollArgs a_;
  uint64_t call_;
  uint64_t tagBase_;  // the call's tags: a peer that sent messages for it made another call
  uint32_t seq_;
  int me_, n_;
  size_t bytes_;
  bool started_ = false;                   // this rank's previous call has finished
  bool posted_ = false;                    // every box this call writes is written
  int nextOut_ = 0;                        // the first peer whose box has not been written yet
  int next_ = 0;                           // the first peer whose box has not been read yet
  std::optional<DirectAllReduce> direct_;  // a direct allreduce (allreduce_direct.h)
  DirectBuffers directBox_;                // what this rank's box carries then
  bool busy_ = false;                      // the last poll() reduced chunks
};

// A broadcast's root also reads a box from every rank, with no data: the description of the
// call (kind, type, size, root). Without it a rank that took itself for the root (a different
// root argument) read nothing, and every rank returned success with different data.
bool FastOp::writesTo(int p) const {
  if (a_.kind == CollKind::kBroadcast) return me_ == a_.root || p == a_.root;
  if (a_.kind == CollKind::kReduce) return p == a_.root;
  return true;
}

bool FastOp::readsFrom(int p) const {
  if (a_.kind == CollKind::kBroadcast) return p == a_.root || me_ == a_.root;
  if (a_.kind == CollKind::kReduce) return me_ == a_.root;
  return true;
}

bool FastOp::boxFree(int p) const {
  // Call numbers wrap: compare by difference.
  if (static_cast<int32_t>(fb_->seen[p] - (seq_ - 1)) >= 0) return true;
  const uint32_t done = fb_->links[p].doneIn->load(std::memory_order_acquire);
  return static_cast<int32_t>(done - (seq_ - 2)) >= 0;
}

const void* FastOp::contents(int p) const {
  switch (a_.kind) {
    case CollKind::kReduceScatter:
      return static_cast<const char*>(a_.send) + p * bytes_;
    case CollKind::kBarrier:
      return nullptr;
    case CollKind::kBroadcast:
      return me_ == a_.root ? a_.send : nullptr;
    default:
      if (direct_) return &directBox_;
      return a_.send;
  }
}

bool FastOp::post() {
  const uint8_t dt = a_.kind != CollKind::kBarrier ? a_.dt : 0;
  const uint8_t op = collReduces(a_.kind) ? a_.op : 0;
  const int32_t root = collRooted(a_.kind) ? a_.root : 0;
  for (; nextOut_ < n_; ++nextOut_) {
    const int p = nextOut_;
    if (p == me_ || !writesTo(p)) continue;
    if (!boxFree(p)) return false;
    FastBox* b = fb_->links[p].out[seq_ & 1];
    const size_t len = boxBytes();
    if (len > 0 && contents(p) != nullptr) std::memcpy(b->data(), contents(p), len);
    b->bytes = static_cast<uint32_t>(len);
    b->kind = static_cast<uint8_t>(a_.kind);
    b->dtype = dt;
    b->op = op;
    b->direct = direct_ ? 1 : 0;
    b->root = root;
    fastBoxPublish(b, seq_);
  }
  posted_ = true;
  return true;
}

Status FastOp::check(int p, const FastBox& b) const {
  const size_t want = boxBytes();
  if (direct_ && b.direct == 1 && b.bytes == want && b.kind == static_cast<uint8_t>(a_.kind)) {
    const DirectBuffers theirs = directBuffersIn(b);
    if (theirs.bytes != bytes_ || b.dtype != a_.dt || b.op != a_.op) {
      return invalidUsage(fmt::format(
          "allreduce: {} made a different call: {} bytes of {} ({}), where this rank has {} "
          "bytes of {} ({}) (every rank must make the same collective calls in the same order)",
          comm_->transport()->peerName(p), theirs.bytes,
          dtypeName(static_cast<braidDataType_t>(b.dtype)), opName(static_cast<braidRedOp_t>(b.op)),
          bytes_, dtypeName(a_.dt), opName(a_.op)));
    }
    return Status::ok();
  }
  const bool same =
      b.kind == static_cast<uint8_t>(a_.kind) && b.bytes == want && b.direct == (direct_ ? 1 : 0) &&
      (a_.kind == CollKind::kBarrier || b.dtype == a_.dt) &&
      (!collReduces(a_.kind) || b.op == a_.op) && (!collRooted(a_.kind) || b.root == a_.root);
  if (same) return Status::ok();
  auto describe = [](int kind, int dt, int op, int root) {
    auto k = static_cast<CollKind>(kind);
    std::string s = collName(k);
    if (k != CollKind::kBarrier)
      s += fmt::format(" ({}", dtypeName(static_cast<braidDataType_t>(dt)));
    if (collReduces(k)) s += fmt::format(", {}", opName(static_cast<braidRedOp_t>(op)));
    if (collRooted(k)) s += fmt::format(", root {}", root);
    return k != CollKind::kBarrier ? s + ")" : s;
  };
  // What the peer's call moves (a direct allreduce's box holds its size, not its data).
  const uint64_t sent =
      b.direct == 1 && b.bytes == sizeof(DirectBuffers) ? directBuffersIn(b).bytes : b.bytes;
  return invalidUsage(fmt::format(
      "{}: {} made a different call: it sent {} bytes for {}, where this rank expected {} bytes "
      "for {} (every rank must make the same collective calls in the same order)",
      collName(a_.kind), comm_->transport()->peerName(p), sent,
      describe(b.kind, b.dtype, b.op, b.root), direct_ ? bytes_ : want,
      describe(static_cast<int>(a_.kind), a_.dt, a_.op, a_.root)));
}

void FastOp::reduceInRankOrder(void* dst, const char* own) const {
  // own may alias dst (in place): then it is read from a copy.
  thread_local std::vector<char> saved;
  if (own == dst) {
    saved.assign(own, own + bytes_);
    own = saved.data();
  }
  auto src = [&](int r) { return r == me_ ? own : inBox(r)->data(); };
  reduceBuffers(dst, src(0), src(1), a_.count, a_.dt, a_.op);
  for (int r = 2; r < n_; ++r) reduceBuffers(dst, dst, src(r), a_.count, a_.dt, a_.op);
  if (a_.op == braidAvg) finishAvg(dst, a_.count, a_.dt, n_);
}

void FastOp::complete() {
  char* recv = static_cast<char*>(a_.recv);
  switch (a_.kind) {
    case CollKind::kAllReduce:
      reduceInRankOrder(recv, static_cast<const char*>(a_.send));
      break;
    case CollKind::kReduce:
      if (me_ == a_.root) reduceInRankOrder(recv, static_cast<const char*>(a_.send));
      break;
    case CollKind::kReduceScatter:
      reduceInRankOrder(recv, static_cast<const char*>(a_.send) + me_ * bytes_);
      break;
    case CollKind::kBroadcast: {
      const void* src = me_ == a_.root ? a_.send : inBox(a_.root)->data();
      if (bytes_ > 0 && src != recv) std::memcpy(recv, src, bytes_);
      break;
    }
    case CollKind::kAllGather:
      for (int r = 0; r < n_ && bytes_ > 0; ++r) {
        const void* src = r == me_ ? a_.send : inBox(r)->data();
        if (src != recv + r * bytes_) std::memcpy(recv + r * bytes_, src, bytes_);
      }
      break;
    default:
      break;
  }
}

bool FastOp::fail(Status e, Status* err) {
  if (!comm_->hasAsyncError()) {
    comm_->setAsyncError(e);
    comm_->transport()->abort(e);
  }
  if (direct_ && posted_) directStop();
  fb_->finished.store(seq_, std::memory_order_release);
  *err = std::move(e);
  return true;
}

bool FastOp::poll(Status* err) {
  if (!posted_) {
    if (!started_ && !(started_ = myTurn())) {
      return comm_->hasAsyncError() && fail(comm_->asyncError(), err);
    }
    if (!post()) {
      // A peer that left after its goodbye never frees its box (it was written before the
      // goodbye if at all: look again after seeing it).
      if (peerLeft(nextOut_) && !boxFree(nextOut_)) return failLeft(nextOut_, err);
      return comm_->hasAsyncError() && fail(comm_->asyncError(), err);
    }
  }
  for (; next_ < n_; ++next_) {
    if (next_ == me_ || !readsFrom(next_)) continue;
    const FastBox* b = inBox(next_);
    if (b->seq.load(std::memory_order_acquire) != seq_) {
      if (peerLeft(next_) && b->seq.load(std::memory_order_acquire) != seq_) {
        return failLeft(next_, err);
      }
      // The peer may be in another call, one that sends messages (call_check.h).
      if (Status e = comm_->checkCall(tagBase_); !e.isOk()) return fail(std::move(e), err);
      return comm_->hasAsyncError() && fail(comm_->asyncError(), err);
    }
    if (Status e = check(next_, *b); !e.isOk()) return fail(std::move(e), err);
    if (direct_) direct_->start(directBuffersIn(*b));  // once: next_ moves on
    fb_->seen[next_] = seq_;
  }
  if (direct_) {
    if (!directWork(err)) return !err->isOk();
    direct_->retire();
    LOG_TRACE(kColl, "allreduce (direct, call {}): {} of {} chunks reduced here", seq_,
              direct_->chunksDone(), direct_->chunks());
  } else {
    complete();
  }
  for (int p = 0; p < n_; ++p) {
    if (p != me_) fb_->links[p].doneOut->store(seq_, std::memory_order_release);
  }
  fb_->finished.store(seq_, std::memory_order_release);
  return true;
}

bool FastOp::directWork(Status* err) {
  Status e;
  const size_t before = direct_->chunksDone();
  const bool mineDone = direct_->work(&e);
  busy_ = direct_->chunksDone() != before;
  if (e.isOk() && comm_->hasAsyncError()) e = comm_->asyncError();
  if (e.isOk() && direct_->peerStopped()) {
    e = remoteError(fmt::format(
        "allreduce: {} failed during the direct allreduce (call {}): this rank's result is "
        "incomplete",
        comm_->transport()->peerName(1 - me_), seq_));
  }
  if (!e.isOk()) {
    fail(std::move(e), err);
    return false;
  }
  if (!mineDone || direct_->peerFinished()) return mineDone;
  if (peerLeft(1 - me_) && !direct_->peerFinished()) failLeft(1 - me_, err);
  return false;
}

void FastOp::directStop() {
  if (!direct_->stop()) return;
  // The peer stops at its next pass (a few chunks) once it hears of the failure, or has died;
  // a peer that stays silent (stopped, hung) is given up on after a while.
  const int pid = fb_->links[1 - me_].peerPid;
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (!direct_->peerFinished() && !direct_->peerStopped() && Clock::now() < until) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::string FastOp::waitingFor() const {
  if (!started_) return fmt::format("this rank's previous call (fast-box call {})", seq_ - 1);
  if (!posted_) {
    return fmt::format("{} to finish fast-box call {} (its box is still in use)",
                       comm_->transport()->peerName(nextOut_), seq_ - 2);
  }
  if (direct_ && next_ >= n_) {
    return fmt::format("{} to finish its chunks of the direct allreduce (call {})",
                       comm_->transport()->peerName(1 - me_), seq_);
  }
  return fmt::format("{} of {} (fast-box call {}; fast-box calls are numbered apart)",
                     collName(a_.kind), comm_->transport()->peerName(next_), seq_);
}

Status FastOp::run() {
  Status err;
  if (poll(&err)) return err;
  // Spin (yielding every time when ranks outnumber cores) for BRAID_SPIN_US, then sleep on
  // the box awaited in slices of 1 ms; give up at BRAID_TIMEOUT_MS.
  const Config& cfg = comm_->config();
  auto start = Clock::now();
  size_t chunks = 0;
  const auto spin = std::chrono::microseconds(cfg.spinUs);
  const auto timeout = std::chrono::milliseconds(cfg.timeoutMs);
  const bool yield = comm_->oversubscribed();
  for (unsigned i = 1;; ++i) {
    if (poll(&err)) return err;
    yield ? static_cast<void>(sched_yield()) : cpuRelax();
    if (direct_ && direct_->chunksDone() != chunks) {
      // Still copying: the spin and the timeout count from the last chunk.
      chunks = direct_->chunksDone();
      start = Clock::now();
      continue;
    }
    if ((i & (yield ? 7 : 127)) != 0) continue;
    const auto waited = Clock::now() - start;
    if (waited >= timeout) {
      Status t = comm_->timedOut(collName(a_.kind), cfg.timeoutMs,
                                 waitingFor() + comm_->transport()->healthNote(),
                                 comm_->whoIsLate(tagBase_));
      fail(t, &err);
      return t;
    }
    if (waited < spin) continue;
    if (posted_ && next_ < n_) {
      fastBoxSleep(inBox(next_), seq_, std::chrono::microseconds(1000));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

}  // namespace

uint32_t fastboxKinds(const Config& cfg) {
  uint32_t kinds = 0;
  for (unsigned k = 0; k < 32; ++k) {
    if ((kFastKinds & (uint32_t{1} << k)) != 0 && !algorithmForced(cfg, static_cast<CollKind>(k))) {
      kinds |= uint32_t{1} << k;
    }
  }
  return kinds;
}

bool fastboxApplies(const CollArgs& a, const Comm& comm) {
  const FastBoxes* fb = comm.fastBoxes();
  if (fb == nullptr || (fb->kinds & bit(a.kind)) == 0) return false;
  if (a.count * dtypeSize(a.dt) <= fb->capacity) return true;
  // Larger: the direct allreduce of two ranks (allreduce_direct.h), a fast-box call too.
  return directAllReduceApplies(a, *fb, comm.rank(), comm.nranks());
}

uint64_t fastboxNextCall(Comm& comm) { return comm.fastBoxes()->issued.fetch_add(1) + 1; }

void fastboxSchedule(const CollArgs& a, uint64_t call, Schedule* s) {
  s->poll(std::make_unique<FastOp>(s->comm(), a, call, s->tag(0)));
}

Status fastboxRun(const CollArgs& a, Comm& comm, uint64_t tagBase) {
  FastOp op(&comm, a, fastboxNextCall(comm), tagBase);
  return op.run();
}

}  // namespace braid

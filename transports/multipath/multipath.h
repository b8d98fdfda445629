// The multipath layer: reliable delivery of chunks to one peer over a set of paths (rails,
// flows, QPs), whatever carries them. The sender cuts nothing itself: a transport adds chunks
// (its frames), the Sender hands each to the path that would deliver it first (outstanding
// bytes over measured rate) while the path has room, a much slower free path only where the
// chunk arrives sooner than by waiting (Sender::pick), keeps every chunk until the receiver
// acknowledges it, and puts a dead path's unacknowledged chunks back in front of the queue so
// that the surviving paths re-send them at once. The Receiver places each chunk once: it
// recognises duplicates (a chunk re-sent after its first copy arrived but its ack was lost)
// and tells which fids to acknowledge. Transport-independent and single-threaded (the
// transport's progress loop owns it); unit-tested against a lossy in-process link.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "src/core/status.h"

namespace braid {
struct NetRequest;
}

namespace braid::mp {

inline int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

enum class PathState : uint8_t {
  kUp = 0,       // carries chunks
  kStandby = 1,  // connected, used only when no path is up (SenderOptions::standbyCarries)
  kDead = 2,     // failed; probed in the background and re-admitted when a probe succeeds
};
const char* pathStateName(PathState s);

// Counters of one path, readable from any thread (braidCommGetPathStats).
struct PathCounters {
  std::atomic<uint64_t> bytesSent{0}, bytesReceived{0}, chunksSent{0}, chunksReceived{0};
  std::atomic<uint64_t> retransmits{0};  // chunks of this path re-sent on another after it died
  std::atomic<uint64_t> failures{0};     // times the path was declared dead
  std::atomic<uint64_t> readmissions{0};
  std::atomic<uint64_t> rehashes{0};  // times it moved to a new flow because it lagged
  std::atomic<uint8_t> state{static_cast<uint8_t>(PathState::kUp)};
  // Adds n for a counter that one thread at a time writes (the progress loop's holder, under
  // its lock) and any thread reads: a plain load and store, no locked read-modify-write.
  static void bump(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// One unit of reliable delivery: a frame of the transport (type, tag, offset, total) with its
// payload, identified by a fid unique per direction of a peer pair.
struct Chunk {
  uint64_t fid = 0;
  uint8_t type = 0;
  uint64_t tag = 0, offset = 0, total = 0;
  uint32_t len = 0;
  const char* payload = nullptr;  // the request's buffer, or `owned`
  std::string owned;              // a copy (small messages complete before they are acked)
  NetRequest* req = nullptr;      // completes when its last chunk is acknowledged
  int path = -1;                  // the path it is outstanding on; -1: waiting for one
  int copyPath = -1;              // a second copy in flight there (Sender::resendStragglers)
  int64_t sentNs = 0;
  uint32_t sends = 0;
  bool urgent = true;  // the receiver acknowledges it at once (else with its next frame)
  uint64_t skip = 0;   // Sender: once acknowledged (fid 0), a later fid that may still be live
};

struct Range {
  uint64_t first = 0, count = 0;
};

struct SenderOptions {
  size_t window = 4 << 20;          // unacknowledged bytes per path
  int64_t timeoutNs = 500'000'000;  // no ack for this long with chunks outstanding: dead path
  // Re-send a chunk unacknowledged for the timeout even though its path still acknowledges
  // others (paths that may lose single chunks; a TCP path loses nothing while it lives).
  bool resendLost = false;
  // Standby paths carry chunks while no path is up (BRAID_MULTIRAIL=failover); false: never
  // (off: the rank's own rail only), and a sender whose up paths all died has none usable.
  bool standbyCarries = true;
};

class Sender {
 public:
  Sender() = default;
  Sender(int npaths, SenderOptions opt);
  // noexcept although std::deque's move may allocate: containers of peers move it.
  Sender(Sender&&) noexcept = default;
  Sender& operator=(Sender&&) noexcept = default;

  int paths() const { return static_cast<int>(paths_.size()); }
  PathState state(int path) const { return paths_[path].state; }
  // kDead moves the path's outstanding chunks back to the queue (returns how many).
  size_t setState(int path, PathState s, int64_t nowNs);
  bool anyUsable() const;

  // Queues a chunk (fid assigned here) and returns it; the pointer stays valid until acked.
  Chunk* add(Chunk&& c);
  // Assigns queued chunks to paths while some usable path has window left; emit(path, chunk)
  // must put the chunk on the wire of that path.
  template <typename Emit>
  void schedule(int64_t nowNs, Emit&& emit) {
    for (Chunk* c = nextQueued(); c != nullptr; c = nextQueued()) {
      int p = pick(c->len, nowNs);
      if (p < 0) return;
      popQueued(c->fid);
      c->path = p;
      c->sentNs = nowNs;
      ++c->sends;
      charge(p, c->len, nowNs);
      emit(p, *c);
    }
  }
  // A sender with one path and `c` (just added) as its only queued chunk: c goes out on that
  // path now if schedule() would send it there (the path takes chunks and has window left);
  // true when it did. What schedule() does for one chunk, without its passes over the queue
  // and the paths: a small message on a single-path peer takes this way on every call.
  bool sendAlone(Chunk* c, int64_t nowNs) {
    if (paths_.size() != 1 || !requeued_.empty() || fresh_ != c->fid || nextFid_ != c->fid + 1 ||
        pick(c->len, nowNs) != 0) {
      return false;
    }
    ++fresh_;
    c->path = 0;
    c->sentNs = nowNs;
    ++c->sends;
    charge(0, c->len, nowNs);
    return true;
  }
  // Acknowledgements (every fid below `below`, and the ranges) that arrived on `path`;
  // done(chunk) runs for each chunk acknowledged now, before it is freed.
  template <typename Done>
  void ack(int path, uint64_t below, const Range* ranges, size_t n, int64_t nowNs, Done&& done) {
    (void)path;
    for (uint64_t fid = nextLive(base_); fid < below && fid < nextFid_; fid = nextLive(fid + 1)) {
      retire(fid, nowNs, done);
    }
    for (size_t i = 0; i < n; ++i) {
      const uint64_t first = ranges[i].first;
      if (first >= nextFid_) continue;
      const uint64_t end = ranges[i].count > nextFid_ - first ? nextFid_ : first + ranges[i].count;
      for (uint64_t fid = nextLive(first); fid < end; fid = nextLive(fid + 1)) {
        retire(fid, nowNs, done);
      }
    }
    while (!chunks_.empty() && chunks_.front().fid == 0) {
      chunks_.pop_front();
      ++base_;
    }
  }
  // Late binding: a held path gets no new chunk (its transport already has enough queued to
  // keep it busy), so queued chunks go to a path that drains rather than waiting behind a
  // slow one (a much slower one only as pick() allows). The transport releases the path and
  // schedules again when it drains.
  void hold(int path, bool held) { paths_[path].held = held; }
  bool held(int path) const { return paths_[path].held; }
  bool waiting() const { return !requeued_.empty() || fresh_ < nextFid_; }
  // The end of a transfer: with nothing queued, a chunk out for ageNs on a path that has not
  // been acknowledged for as long and that stalled(path) says moves nothing below (a flow in
  // retransmission backoff, a blackhole; not one that is merely slow) is sent
  // again on the least loaded other usable path that is not held; the first copy acknowledged
  // retires it. At most one extra copy per chunk; returns how many were sent. stalled(path)
  // is asked at most once per path per call. With more than kScanAlways chunks unacknowledged
  // (small ones waiting for a lazy acknowledgement, thousands in a stream of small messages)
  // they are looked at every ageNs/8 at most: a pass over all of them on every send cost more
  // than the send.
  template <typename Stalled, typename Emit>
  size_t resendStragglers(int64_t nowNs, int64_t ageNs, Stalled&& stalled, Emit&& emit) {
    if (waiting()) return 0;
    if (live_ > kScanAlways) {
      if (nowNs < nextStragglerScanNs_) return 0;
      nextStragglerScanNs_ = nowNs + ageNs / 8;
    }
    size_t n = 0;
    uint64_t asked = 0, stalledPaths = 0;
    for (uint64_t fid = nextLive(base_); fid < nextFid_; fid = nextLive(fid + 1)) {
      Chunk& c = chunks_[fid - base_];
      if (c.path < 0 || c.copyPath >= 0 || nowNs - c.sentNs < ageNs) continue;
      const PathRec& from = paths_[c.path];
      if (nowNs - std::max(from.lastAckNs, c.sentNs) < ageNs) continue;
      if (static_cast<size_t>(c.path) < 64) {  // the answer for this path, once per call
        const uint64_t bit = uint64_t{1} << c.path;
        if ((asked & bit) == 0) {
          asked |= bit;
          if (stalled(c.path)) stalledPaths |= bit;
        }
        if ((stalledPaths & bit) == 0) continue;
      } else if (!stalled(c.path)) {
        continue;
      }
      int best = -1;
      for (size_t i = 0; i < paths_.size(); ++i) {
        const PathRec& p = paths_[i];
        if (static_cast<int>(i) == c.path || p.state != PathState::kUp || p.held) continue;
        if (best < 0 || p.outstanding < paths_[best].outstanding) best = static_cast<int>(i);
      }
      if (best < 0) return n;
      PathRec& to = paths_[best];
      if (to.outstanding != 0 && to.outstanding + c.len + kFrameCost > opt_.window) return n;
      c.copyPath = best;
      ++c.sends;
      charge(best, c.len, nowNs);
      emit(best, c);
      ++n;
    }
    return n;
  }
  // Paths with chunks outstanding and no acknowledgement for the timeout.
  void expired(int64_t nowNs, std::vector<int>* out) const;
  // The transport below knows the path still moves data (its own acknowledgements arrive):
  // a slow path, not a dead one; the timeout starts again.
  void stillMoving(int path, int64_t nowNs) { paths_[path].lastAliveNs = nowNs; }
  // With resendLost: queues again chunks unacknowledged for the timeout on live paths.
  size_t requeueLost(int64_t nowNs);
  bool idle() const { return live_ == 0; }
  size_t unacked() const { return live_; }
  size_t outstanding(int path) const { return paths_[path].outstanding; }
  size_t window() const { return opt_.window; }
  // What `path` may have outstanding now: the window, or kUnmeasuredBytes while it is not
  // measured and has siblings (a transport asks for acknowledgements before half of it).
  size_t limit(int path, int64_t nowNs) const;
  double rate(int path) const { return paths_[path].rate; }
  // Drops every chunk (failure); done(chunk) for each.
  template <typename Done>
  void clear(Done&& done) {
    for (Chunk& c : chunks_) {
      if (c.fid != 0) done(c);
    }
    base_ = nextFid_;
    fresh_ = nextFid_;
    live_ = 0;
    chunks_.clear();
    requeued_.clear();
    for (PathRec& p : paths_) p.outstanding = 0;
  }

  static constexpr size_t kFrameCost = 64;   // per-chunk bytes counted besides the payload
  static constexpr size_t kScanAlways = 64;  // resendStragglers
  static constexpr size_t kMinSampleBytes = 256 << 10;  // per rate sample
  // and at least this long, unless the path is idle again after a busy time that gave no
  // sample (the sample spans all of it): acknowledgements come in bunches (a receiver that got
  // the CPU late acknowledges several at once), and a short sample read many times the link.
  static constexpr int64_t kMinSampleNs = 10'000'000;
  // An idle path whose rate was not sampled for this long is measured again: it counts as
  // unmeasured (rateFor). A slow path keeps its rate meanwhile, so that it gets chunks only
  // where they arrive sooner than on the others (large transfers sample it again then).
  static constexpr int64_t kRateForgetNs = 10'000'000'000;
  // An unmeasured path takes at most this much outstanding (one chunk if larger) until its
  // first acknowledgements measure it: a slow path gets no full share before it is known.
  static constexpr size_t kUnmeasuredBytes = 1 << 20;
  // A path with nothing acknowledged for this long is not waited for (pick).
  static constexpr int64_t kStallNs = 200'000'000;

 private:
  struct PathRec {
    PathState state = PathState::kUp;
    size_t outstanding = 0;
    int64_t lastProgressNs = 0;
    int64_t lastAckNs = 0;
    int64_t lastAliveNs = 0;   // stillMoving()
    double rate = 0;           // bytes/s, smoothed; 0 until measured
    int64_t rateNs = 0;        // when the rate was last sampled
    int64_t busyStartNs = 0;   // start of the current rate sample (0: idle)
    bool sampledBusy = false;  // a sample was taken in the current busy period
    size_t busyBytes = 0;      // acknowledged since then
    bool held = false;         // hold()
  };
  int pick(uint32_t len, int64_t nowNs) const;
  double rateFor(const PathRec& p, int64_t nowNs) const;
  size_t carriers(PathState state) const;  // paths in that state
  // The first unacknowledged fid at or after `fid` (nextFid_ if none). An acknowledged chunk
  // left as a hole points past itself (skip); the walk shortens the pointers it followed, so
  // acknowledgements and scans cost what is still unacknowledged, not the holes (a chunk held
  // back on a slow path can leave thousands behind it, and every acknowledgement names them).
  uint64_t nextLive(uint64_t fid) {
    fid = std::max(fid, base_);
    uint64_t f = fid;
    while (f < nextFid_ && chunks_[f - base_].fid == 0) f = chunks_[f - base_].skip;
    while (fid < f) {
      Chunk& hole = chunks_[fid - base_];
      fid = hole.skip;
      hole.skip = f;
    }
    return std::min(f, nextFid_);
  }
  // The chunk of `fid` if it is still unacknowledged.
  Chunk* find(uint64_t fid) {
    if (fid < base_ || fid >= nextFid_) return nullptr;
    Chunk& c = chunks_[fid - base_];
    return c.fid == 0 ? nullptr : &c;
  }
  // The chunk that waits longest for a path (re-sends first: they are older than any chunk
  // never sent), or null.
  Chunk* nextQueued() {
    if (!requeued_.empty()) return find(*requeued_.begin());
    while (fresh_ < nextFid_) {
      if (Chunk* c = find(fresh_)) return c;
      ++fresh_;  // acknowledged before it was ever sent (a confused peer): nothing to send
    }
    return nullptr;
  }
  void popQueued(uint64_t fid) {
    if (!requeued_.empty() && *requeued_.begin() == fid) {
      requeued_.erase(requeued_.begin());
    } else {
      ++fresh_;
    }
  }
  // Frees the chunk of `fid` if unacknowledged (its slot stays until the ones before go).
  template <typename Done>
  void retire(uint64_t fid, int64_t nowNs, Done& done) {
    Chunk* c = find(fid);
    if (c == nullptr) return;
    if (c->path >= 0) {
      credit(c->path, c->len + kFrameCost, nowNs);
    } else {
      requeued_.erase(fid);  // acknowledged while queued again: an earlier copy arrived
    }
    if (c->copyPath >= 0) credit(c->copyPath, c->len + kFrameCost, nowNs);
    done(*c);
    *c = Chunk{};  // fid 0: retired; its copy of the payload is freed now
    c->skip = fid + 1;
    --live_;
  }
  void credit(int path, size_t bytes, int64_t nowNs);
  // Takes the chunk off the path(s) carrying it (their outstanding bytes) and queues it again.
  void requeue(Chunk& c);
  // A chunk of len bytes goes out on the path: outstanding, and a busy stretch starts if idle.
  void charge(int path, uint32_t len, int64_t nowNs) {
    PathRec& p = paths_[path];
    if (p.outstanding == 0) {
      p.lastProgressNs = nowNs;
      p.busyStartNs = nowNs;
      p.busyBytes = 0;
      p.sampledBusy = false;
    }
    p.outstanding += len + kFrameCost;
  }

  SenderOptions opt_;
  std::vector<PathRec> paths_;
  // Every chunk from fid base_ to nextFid_ - 1, in fid order; an acknowledged one stays as a
  // hole (fid 0) until the ones before it are acknowledged too. A deque: a chunk's address
  // holds while it lives, and the common case (acknowledged in order) costs no allocation per
  // chunk, unlike a tree node.
  std::deque<Chunk> chunks_;
  uint64_t base_ = 1;            // fid of chunks_.front()
  uint64_t nextFid_ = 1;         // the next fid add() assigns
  uint64_t fresh_ = 1;           // chunks from here on were never given to a path
  size_t live_ = 0;              // unacknowledged chunks
  std::set<uint64_t> requeued_;  // fids waiting for a path again (dead path, lost), lowest first
  int64_t nextStragglerScanNs_ = 0;  // resendStragglers
};

class Receiver {
 public:
  enum class Verdict { kNew, kDuplicate, kConflict };
  // A chunk's header arrived on `path`: new, already received (drop it, ack again), or being
  // received right now on another path (*other; the sender sent it again: a straggler, or a
  // path it gave up on): this copy is taken, the rest of the other one must go nowhere.
  Verdict begin(uint64_t fid, int path, int* other);
  // The chunk arrived whole on `path` (after kNew); urgent: acknowledge at the next opportunity.
  void end(uint64_t fid, int path, bool urgent);
  // The path died: chunks it was receiving did not arrive; what it owed any path may send.
  void dropPath(int path);
  // Acknowledgements owed on `path`: what arrived on a path is acknowledged on that path (its
  // way back works if its way in did; another path may be dead without either end knowing
  // yet). The acknowledgement itself is the whole state: everything below watermark() and the
  // ranges above it.
  bool ackOwed(int path) const { return debt(path) != 0 || orphan_ != 0; }
  bool ackUrgent(int path) const { return ((debt(path) | orphan_) & kUrgent) != 0; }
  bool anyAckOwed() const { return any_; }
  // Fills the acknowledgement (at most maxRanges ranges above the watermark, lowest first) and
  // clears `path`'s debt; acknowledging again what was acknowledged is harmless.
  uint64_t takeAck(int path, std::vector<Range>* ranges, size_t maxRanges);
  uint64_t watermark() const { return below_; }
  bool received(uint64_t fid) const { return fid < below_ || above_.count(fid) != 0; }

 private:
  uint64_t below_ = 1;        // every fid below has arrived
  std::set<uint64_t> above_;  // arrived fids above the watermark
  // (fid, path receiving it): a chunk under way per path at most, so a flat list.
  std::vector<std::pair<uint64_t, int>> inflight_;
  static constexpr uint8_t kOwed = 1, kUrgent = 2;
  uint8_t debt(int path) const {
    return path >= 0 && static_cast<size_t>(path) < debt_.size() ? debt_[path] : 0;
  }
  void owe(int path, bool urgent);
  std::vector<uint8_t> debt_;  // per path: kOwed | kUrgent
  uint8_t orphan_ = 0;         // owed by a path that died: any path may pay it
  bool any_ = false;
};

// A fault to inject (BRAID_FAULT, off by default): kill a path after some bytes or time.
//   "path=1,after_bytes=64M"   "rank=0,peer=2,path=0,after_ms=300,mode=blackhole"   "seed=7"
// path/peer may be "rand" (chosen from the seed); mode close (the socket is shut: a link
// error) or blackhole (the path silently stops moving data: found by the path timeout).
struct FaultPlan {
  bool enabled = false;
  int rank = -1;  // the rank whose paths die; -1: every rank
  int peer = -1;  // -1: every peer
  int path = 0;
  bool randomPath = false, randomPeer = false;
  uint64_t afterBytes = 0;  // at least one of the two triggers is set (>= 1)
  int64_t afterMs = 0;
  bool blackhole = false;
  uint64_t seed = 1;
  int times = 1;  // how many paths die (each after the previous one, same trigger)
  // nranks > 0: rank= and peer= must name a rank of the job.
  static Status parse(const std::string& text, FaultPlan* out, int nranks = 0);
  // Once the paths are known: path= must be one of them (pathsPerPeer: the most any peer has).
  Status checkPath(int pathsPerPeer) const;
  std::string describe() const;
};

}  // namespace braid::mp

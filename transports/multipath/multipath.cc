// The multipath layer's sender, receiver and fault plan (see multipath.h).
#include "transports/multipath/multipath.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "src/core/config.h"

namespace braid::mp {

const char* pathStateName(PathState s) {
  switch (s) {
    case PathState::kUp:
      return "up";
    case PathState::kStandby:
      return "standby";
    case PathState::kDead:
      return "dead";
  }
  return "?";
}

Sender::Sender(int npaths, SenderOptions opt) : opt_(opt), paths_(static_cast<size_t>(npaths)) {}

size_t Sender::setState(int path, PathState s, int64_t nowNs) {
  PathRec& p = paths_[path];
  p.state = s;
  p.held = false;
  p.lastProgressNs = nowNs;
  if (s != PathState::kDead) return 0;
  size_t moved = 0;
  for (uint64_t fid = nextLive(base_); fid < nextFid_; fid = nextLive(fid + 1)) {
    Chunk& c = chunks_[fid - base_];
    if (c.path != path && c.copyPath != path) continue;
    // Sent again even when its other copy is still under way: the receiver may have dropped
    // that one for this one (mp::Receiver's conflict), so only a fresh copy is sure to land.
    requeue(c);
    ++moved;
  }
  p.outstanding = 0;
  p.rate = 0;
  p.busyStartNs = 0;
  p.busyBytes = 0;
  return moved;
}

bool Sender::anyUsable() const {
  const bool standby = opt_.standbyCarries;
  return std::any_of(paths_.begin(), paths_.end(), [standby](const PathRec& p) {
    return p.state == PathState::kUp || (standby && p.state == PathState::kStandby);
  });
}

Chunk* Sender::add(Chunk&& c) {
  Chunk& ch = chunks_.emplace_back(std::move(c));
  ch.fid = nextFid_++;
  ch.path = -1;
  if (!ch.owned.empty()) ch.payload = ch.owned.data();  // the string moved: point into it
  ++live_;
  return &ch;  // queued: fids from fresh_ on wait for a path
}

size_t Sender::carriers(PathState want) const {
  return static_cast<size_t>(std::count_if(paths_.begin(), paths_.end(),
                                           [want](const PathRec& p) { return p.state == want; }));
}

size_t Sender::limit(int path, int64_t nowNs) const {
  const PathRec& p = paths_[path];
  if (rateFor(p, nowNs) > 0 || carriers(p.state) <= 1) return opt_.window;
  return std::min(opt_.window, kUnmeasuredBytes);
}

double Sender::rateFor(const PathRec& p, int64_t nowNs) const {
  if (p.outstanding == 0 && nowNs - p.rateNs > kRateForgetNs) return 0;
  return p.rate;
}

int Sender::pick(uint32_t len, int64_t nowNs) const {
  // Standby paths only when no path is up.
  const bool anyUp = carriers(PathState::kUp) > 0;
  if (!anyUp && !opt_.standbyCarries) return -1;
  const PathState want = anyUp ? PathState::kUp : PathState::kStandby;
  // Each path's cost is when it would have delivered this chunk: what it has out plus the
  // chunk, over its rate. Unmeasured paths count as fast as the fastest measured one (at
  // least 1 GB/s), so each gets tried, with at most kUnmeasuredBytes out.
  double measured = 0;
  for (const PathRec& p : paths_) measured = std::max(measured, rateFor(p, nowNs));
  const double fastest = std::max(measured, 1e9);
  const bool alone = carriers(want) == 1;  // no cap on an unmeasured path: nothing to gain
  int best = -1, bestFree = -1;
  double bestCost = 0, bestFreeCost = 0, bestRate = 0, freeRate = 0;
  double allRate = 0, allOut = 0;  // of the paths that may carry it
  for (size_t i = 0; i < paths_.size(); ++i) {
    const PathRec& p = paths_[i];
    if (p.state != want) continue;
    const double measuredRate = rateFor(p, nowNs);
    if (measuredRate == 0 && !alone && p.outstanding >= kUnmeasuredBytes) continue;
    const double r = measuredRate > 0 ? measuredRate : fastest;
    const double cost = static_cast<double>(p.outstanding + len) / r;
    allRate += r;
    allOut += static_cast<double>(p.outstanding);
    if (best < 0 || cost < bestCost) {
      best = static_cast<int>(i);
      bestCost = cost;
      bestRate = measuredRate;  // 0: unmeasured, never waited for
    }
    const bool free =
        !p.held && (p.outstanding == 0 || p.outstanding + len + kFrameCost <= opt_.window);
    if (free && (bestFree < 0 || cost < bestFreeCost)) {
      bestFree = static_cast<int>(i);
      bestFreeCost = cost;
      freeRate = r;
    }
  }
  // The cheapest path has no room now (window full, or its transport holds it). A free path
  // at least half as fast takes the chunk (waiting would idle it at every step's end for
  // little gain: rates are estimates), as does any free one while the cheapest is unmeasured
  // (it only counts as fast until measured) or has chunks out and nothing acknowledged for
  // kStallNs (it may be dead). A much slower free path takes it only if it would arrive
  // there before the others have carried out all they have and all that is queued; else it
  // waits for them (a path ten times slower took a chunk whenever the fast one's window was
  // full, and every collective step then waited ~90 ms for it).
  if (best < 0 || best == bestFree || bestFree < 0 || 2 * freeRate >= bestRate) return bestFree;
  const PathRec& b = paths_[best];
  if (b.outstanding == 0 || nowNs - std::max(b.lastProgressNs, b.lastAliveNs) >= kStallNs) {
    return bestFree;
  }
  const double queued =
      static_cast<double>(nextFid_ - fresh_ + requeued_.size()) * (len + kFrameCost);
  const double othersRate = allRate - freeRate;
  const double othersOut = allOut - static_cast<double>(paths_[bestFree].outstanding);
  const double drain = othersRate > 0 ? (othersOut + queued) / othersRate : 0;
  return bestFreeCost <= drain ? bestFree : -1;
}

void Sender::requeue(Chunk& c) {
  for (int q : {c.path, c.copyPath}) {
    if (q < 0) continue;
    PathRec& p = paths_[q];
    p.outstanding -= std::min(p.outstanding, static_cast<size_t>(c.len) + kFrameCost);
  }
  c.path = c.copyPath = -1;
  requeued_.insert(c.fid);
}

void Sender::credit(int path, size_t bytes, int64_t nowNs) {
  PathRec& p = paths_[path];
  p.outstanding -= std::min(p.outstanding, bytes);
  // Rate: bytes acknowledged over time while the path stays busy, sampled only once enough
  // bytes moved that the sample measures bandwidth rather than latency (small messages would
  // make a path look slow, and a path that looks slow gets nothing to prove otherwise).
  p.busyBytes += bytes;
  if (p.busyStartNs != 0 && p.busyBytes >= kMinSampleBytes && nowNs > p.busyStartNs &&
      (nowNs - p.busyStartNs >= kMinSampleNs || (p.outstanding == 0 && !p.sampledBusy))) {
    double sample =
        static_cast<double>(p.busyBytes) / (static_cast<double>(nowNs - p.busyStartNs) * 1e-9);
    // Slow to believe a path got faster, quick to see it got slower: a shaper's burst (a
    // policer's bucket, a switch buffer) lets a slow link pass its first bytes at line rate,
    // and a slow path taken for fast holds up every chunk a collective step waits for.
    const double weight = sample > p.rate ? 0.125 : 0.5;
    p.rate = p.rate == 0 ? sample : (1 - weight) * p.rate + weight * sample;
    p.rateNs = nowNs;
    p.busyStartNs = nowNs;
    p.busyBytes = 0;
    p.sampledBusy = true;
  }
  if (p.outstanding == 0) {
    p.busyStartNs = 0;
    p.busyBytes = 0;
  }
  p.lastAckNs = nowNs;
  p.lastProgressNs = nowNs;
}

void Sender::expired(int64_t nowNs, std::vector<int>* out) const {
  out->clear();
  for (size_t i = 0; i < paths_.size(); ++i) {
    const PathRec& p = paths_[i];
    if (p.state != PathState::kDead && p.outstanding != 0 &&
        nowNs - std::max(p.lastProgressNs, p.lastAliveNs) > opt_.timeoutNs) {
      out->push_back(static_cast<int>(i));
    }
  }
}

size_t Sender::requeueLost(int64_t nowNs) {
  if (!opt_.resendLost) return 0;
  size_t n = 0;
  for (uint64_t fid = nextLive(base_); fid < nextFid_; fid = nextLive(fid + 1)) {
    Chunk& c = chunks_[fid - base_];
    if (c.path < 0 || nowNs - c.sentNs <= opt_.timeoutNs) continue;
    requeue(c);
    ++n;
  }
  return n;
}

Receiver::Verdict Receiver::begin(uint64_t fid, int path, int* other) {
  if (received(fid)) {
    owe(path, true);  // its acknowledgement was lost: send it again
    return Verdict::kDuplicate;
  }
  auto it = std::find_if(inflight_.begin(), inflight_.end(),
                         [fid](const std::pair<uint64_t, int>& e) { return e.first == fid; });
  if (it == inflight_.end()) {
    inflight_.emplace_back(fid, path);
  } else if (it->second != path) {
    *other = it->second;
    it->second = path;
    return Verdict::kConflict;
  }
  return Verdict::kNew;
}

void Receiver::owe(int path, bool urgent) {
  const uint8_t d = kOwed | (urgent ? kUrgent : 0);
  if (path < 0) {
    orphan_ |= d;
  } else {
    if (static_cast<size_t>(path) >= debt_.size()) debt_.resize(static_cast<size_t>(path) + 1, 0);
    debt_[path] |= d;
  }
  any_ = true;
}

void Receiver::end(uint64_t fid, int path, bool urgent) {
  auto it = std::find_if(inflight_.begin(), inflight_.end(),
                         [fid](const std::pair<uint64_t, int>& e) { return e.first == fid; });
  if (it != inflight_.end()) {
    *it = inflight_.back();
    inflight_.pop_back();
  }
  if (fid == below_) {
    ++below_;
    while (!above_.empty() && *above_.begin() == below_) {
      above_.erase(above_.begin());
      ++below_;
    }
  } else if (fid > below_) {
    above_.insert(fid);
  }
  owe(path, urgent);
}

void Receiver::dropPath(int path) {
  std::erase_if(inflight_, [path](const std::pair<uint64_t, int>& e) { return e.second == path; });
  if (debt(path) != 0) {
    orphan_ |= debt_[path];
    debt_[path] = 0;
  }
}

uint64_t Receiver::takeAck(int path, std::vector<Range>* ranges, size_t maxRanges) {
  ranges->clear();
  for (auto it = above_.begin(); it != above_.end() && ranges->size() < maxRanges; ++it) {
    if (!ranges->empty() && ranges->back().first + ranges->back().count == *it) {
      ++ranges->back().count;
    } else {
      ranges->push_back({*it, 1});
    }
  }
  if (debt(path) != 0) debt_[path] = 0;
  orphan_ = 0;
  any_ = std::any_of(debt_.begin(), debt_.end(), [](uint8_t d) { return d != 0; });
  return below_;
}

namespace {

Status parseSize(const std::string& key, const std::string& v, uint64_t* out) {
  size_t pos = 0;
  unsigned long long n = 0;
  try {
    if (!v.empty() && v[0] >= '0' && v[0] <= '9') n = std::stoull(v, &pos);  // no sign
  } catch (...) {
    pos = 0;
  }
  if (pos == 0) return invalidArgument(fmt::format("BRAID_FAULT: {}='{}' is not a number", key, v));
  std::string unit = v.substr(pos);
  uint64_t mul = unit.empty()                   ? 1
                 : unit == "K" || unit == "KiB" ? 1ull << 10
                 : unit == "M" || unit == "MiB" ? 1ull << 20
                 : unit == "G" || unit == "GiB" ? 1ull << 30
                                                : 0;
  if (mul == 0) return invalidArgument(fmt::format("BRAID_FAULT: bad unit in {}='{}'", key, v));
  *out = n * mul;
  return Status::ok();
}

}  // namespace

Status FaultPlan::parse(const std::string& text, FaultPlan* out, int nranks) {
  *out = FaultPlan{};
  if (text.empty() || text == "off" || text == "none") return Status::ok();
  out->enabled = true;
  auto rankOf = [nranks](const std::string& k, uint64_t n, int* to) -> Status {
    if (n > 1'000'000'000 || (nranks > 0 && n >= static_cast<uint64_t>(nranks))) {
      return invalidArgument(
          fmt::format("BRAID_FAULT: {}={} is not a rank of this job ({} ranks)", k, n, nranks));
    }
    *to = static_cast<int>(n);
    return Status::ok();
  };
  for (const std::string& item : splitList(text)) {
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return invalidArgument(fmt::format("BRAID_FAULT: '{}' is not key=value", item));
    }
    std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    uint64_t n = 0;
    if (k == "path" || k == "peer") {
      bool rnd = v == "rand";
      if (!rnd) BRAID_TRY(parseSize(k, v, &n));
      if (k == "path") {
        out->randomPath = rnd;
        if (n > 65535) return invalidArgument(fmt::format("BRAID_FAULT: path={} is too large", v));
        out->path = static_cast<int>(n);
      } else {
        out->randomPeer = rnd;
        if (!rnd) BRAID_TRY(rankOf(k, n, &out->peer));
      }
    } else if (k == "rank") {
      BRAID_TRY(parseSize(k, v, &n));
      BRAID_TRY(rankOf(k, n, &out->rank));
    } else if (k == "after_bytes") {
      BRAID_TRY(parseSize(k, v, &out->afterBytes));
    } else if (k == "after_ms") {
      BRAID_TRY(parseSize(k, v, &n));
      if (n > 86'400'000) {
        return invalidArgument(fmt::format("BRAID_FAULT: after_ms={} is more than a day", v));
      }
      out->afterMs = static_cast<int64_t>(n);
    } else if (k == "seed") {
      BRAID_TRY(parseSize(k, v, &out->seed));
    } else if (k == "times") {
      BRAID_TRY(parseSize(k, v, &n));
      if (n < 1 || n > 1000) {
        return invalidArgument(fmt::format("BRAID_FAULT: times={} must be 1..1000", v));
      }
      out->times = static_cast<int>(n);
    } else if (k == "mode") {
      if (v != "close" && v != "blackhole") {
        return invalidArgument(fmt::format("BRAID_FAULT: mode='{}' (close or blackhole)", v));
      }
      out->blackhole = v == "blackhole";
    } else {
      return invalidArgument(fmt::format(
          "BRAID_FAULT: unknown key '{}' (rank, peer, path, after_bytes, after_ms, mode, seed, "
          "times)",
          k));
    }
  }
  if (out->afterBytes == 0 && out->afterMs == 0) {
    return invalidArgument(fmt::format(
        "BRAID_FAULT '{}' has no trigger: give after_bytes=N or after_ms=N (>= 1)", text));
  }
  return Status::ok();
}

Status FaultPlan::checkPath(int pathsPerPeer) const {
  if (!enabled || randomPath || pathsPerPeer <= 0 || path < pathsPerPeer) return Status::ok();
  return invalidArgument(fmt::format("BRAID_FAULT: path={} but a peer has {} path(s) (0..{})", path,
                                     pathsPerPeer, pathsPerPeer - 1));
}

std::string FaultPlan::describe() const {
  if (!enabled) return "off";
  return fmt::format("{}{} path {} of {} after {} bytes / {} ms, {} time(s), seed {}",
                     rank >= 0 ? fmt::format("rank {}: ", rank) : "",
                     blackhole ? "blackhole" : "close", randomPath ? "rand" : std::to_string(path),
                     randomPeer ? "a random peer"
                     : peer < 0 ? "one peer at a time (after_bytes: the one sent to; after_ms: the "
                                  "first reached over TCP)"
                                : fmt::format("peer {}", peer),
                     afterBytes, afterMs, times, seed);
}

}  // namespace braid::mp

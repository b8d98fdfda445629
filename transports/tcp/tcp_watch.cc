// Health of the TCP transport's paths: stalls and silence (checkPaths), keepalives, fault
// injection, per-path counters and stats.
#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <set>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

using mp::nowNs;
using mp::PathState;

void Transport::onBytesSent(Peer* p, int path, size_t bytes) {
  mp::PathCounters::bump(p->paths[path]->ctr.bytesSent, bytes);
  if (faultsLeft_ <= 0) return;
  faultBytes_ += bytes;
  if (fault_.afterBytes != 0 && faultBytes_ >= fault_.afterBytes) {
    // Not from inside the socket's write: after this round of events.
    int rank = p->rank;
    ctx_.reactor->post([this, rank] { injectFault(rank); });
    faultBytes_ = 0;
  }
}

void Transport::injectFault(int rank) {
  if (failed() || stopping_ || faultsLeft_ <= 0) return;
  int target = fault_.randomPeer ? -1 : (fault_.peer >= 0 ? fault_.peer : rank);
  std::vector<int> served;  // peers this transport reaches (not those over shared memory)
  for (const Peer& p : peers_) {
    if (!p.paths.empty()) served.push_back(p.rank);
  }
  if (served.empty()) return;
  if (fault_.randomPeer) target = served[faultRng_() % served.size()];
  if (target < 0 && fault_.peer < 0) target = served.front();  // a timed fault: the first
  if (target < 0 || target >= ctx_.nranks || peers_[target].paths.empty()) {
    // A peer reached over shared memory (or none): said once, and the fault disarmed, rather
    // than waiting silently for a path that will never exist.
    LOG_WARN(
        kPath, "fault injection: {} has no TCP path from this rank; the fault is disarmed",
        target >= 0 && target < ctx_.nranks ? peerName(target) : fmt::format("rank {}", target));
    faultsLeft_ = 0;
    return;
  }
  Peer& p = peers_[target];
  const int P = static_cast<int>(p.paths.size());
  if (!fault_.randomPath && fault_.path >= P) {
    // (Peers may have fewer paths than others: hosts built differently.)
    LOG_WARN(kPath, "fault injection: {} has {} path(s), none numbered {}; the fault is disarmed",
             peerName(target), P, fault_.path);
    faultsLeft_ = 0;
    return;
  }
  int path = (fault_.randomPath ? static_cast<int>(faultRng_() % P) : fault_.path) % P;
  for (int i = 0; i < P; ++i) {  // the chosen path, or the next that still lives
    Socket* s = p.paths[(path + i) % P]->sock.get();
    if (s != nullptr && s->alive() && !s->frozen()) {
      path = (path + i) % P;
      break;
    }
  }
  Socket* s = p.paths[path]->sock.get();
  if (s == nullptr || !s->alive() || s->frozen()) return;
  --faultsLeft_;
  lastFaultNs_ = nowNs();
  LOG_WARN(kPath, "fault injection: {} {} of {}", fault_.blackhole ? "blackholing" : "closing",
           pathName(&p, path), peerName(target));
  if (fault_.blackhole) {
    s->freeze();
  } else {
    ::shutdown(s->fd(), SHUT_RDWR);
    onPathDown(&p, path, "fault injection", false);
  }
}

// A path is dead when (1) it has chunks out, no acknowledgement came for the path timeout and
// the kernel's TCP moved nothing meanwhile either (a slow path is not a dead one), or (2) it
// heard nothing at all for twice the path timeout: every idle path sends a keepalive a few
// times per timeout, so idle paths and every peer's host are watched too (twice: a busy TCP
// connection in retransmission backoff can go quiet for a timeout and still be alive).
void Transport::checkPaths(Peer* p, int64_t now, std::vector<int>* stalled) {
  const int64_t timeoutMs = pathTimeoutNs_ / 1'000'000;
  p->tx.expired(now, stalled);
  for (int k : *stalled) {
    Socket* s = p->paths[k]->sock.get();
    if (s != nullptr && s->alive() && !s->frozen() && s->kernelProgress()) {
      p->tx.stillMoving(k, now);
      continue;
    }
    onPathDown(p, k,
               fmt::format("no acknowledgement for {} ms with {} bytes outstanding", timeoutMs,
                           p->tx.outstanding(k)),
               false);
    if (failed()) return;
  }
  if (stopping_ || p->left) return;
  for (size_t k = 0; k < p->paths.size(); ++k) {
    Socket* s = p->paths[k]->sock.get();
    if (s == nullptr || !s->alive() || s->saidBye()) continue;
    // A first connection that has not heard its peer yet: the peer may still be in its start
    // (waiting out a path that did not connect), sending nothing; it gets the start's grace.
    const bool starting =
        !s->heard() && p->paths[k]->generation == 1 && now - startNs_ < startGraceNs_;
    if (!starting && now - s->lastRecvNs() > 2 * pathTimeoutNs_) {
      // (A socket frozen by fault injection is a blackhole: its kernel may still take the
      // peer's bytes, but nothing reaches braid any more.)
      const int64_t quiet = s->frozen() ? -1 : s->kernelQuietMs();
      if (quiet >= 0 && quiet < timeoutMs) continue;  // this loop lagged, not the path
      onPathDown(p, static_cast<int>(k), fmt::format("nothing heard for {} ms", 2 * timeoutMs),
                 false);
      if (failed()) return;
      continue;
    }
    if (!s->frozen() && now - s->lastSendNs() > pathTimeoutNs_ / 3 && s->queuedBytes() == 0) {
      FrameHeader h;  // an acknowledgement of what already is: the keepalive
      h.type = static_cast<uint8_t>(FrameType::kAck);
      h.tag = p->rx.watermark();
      s->enqueueUrgent(h, {});
      s->flush();
    }
  }
}

std::string Transport::healthNote() const {
  std::string out;
  const int64_t now = nowNs();
  for (size_t r = 0; r < downSince_.size(); ++r) {
    int64_t since = downSince_[r].load(std::memory_order_relaxed);
    if (since == 0) continue;
    out += fmt::format("; {} is unreachable from here (every path down for {} ms)",
                       peerName(static_cast<int>(r)), (now - since) / 1'000'000);
  }
  return out;
}

// Re-hashing (transports/multipath/rehash.h): every tick, each path's bytes handed to the
// kernel, whether frames waited above the kernel's full buffer for it (the network set its
// pace), and whether it is up. A path that lags its siblings is moved to a new connection by
// the higher rank of the pair, which connects it again from a new source port; the lower rank
// asks it to (kRehash).
void Transport::checkRehash(Peer* p, int64_t now) {
  const size_t n = p->paths.size();
  if (static_cast<size_t>(p->rehash.paths()) != n || n < 2 || stopping_ || p->left) return;
  for (size_t k = 0; k < n; ++k) {
    Path& pa = *p->paths[k];
    if (pa.rehash == Path::Rehash::kDraining) rehashIfDrained(p, static_cast<int>(k), now);
    // A re-hash asked of the peer that did not come within a second (it refused, or its
    // connect failed): the path carries traffic again.
    constexpr int64_t kAnswerNs = 1'000'000'000;
    if (pa.rehash == Path::Rehash::kAsked && now - pa.rehashStepNs > kAnswerNs) {
      endDrain(p, static_cast<int>(k));
      if (++p->rehashUnanswered == Peer::kRehashUnanswered) {
        LOG_INFO(kPath, "{} did not re-hash the last {} paths it was asked to; not asking again",
                 peerName(p->rank), Peer::kRehashUnanswered);
      }
    }
  }
  rehashBytes_.resize(n);
  rehashBacklog_.resize(n);
  rehashUsable_.resize(n);
  for (size_t k = 0; k < n; ++k) {
    const Path& pa = *p->paths[k];
    const Socket* s = pa.sock.get();
    const bool live = s != nullptr && s->alive() && !s->frozen();
    rehashBytes_[k] = pa.ctr.bytesSent.load(std::memory_order_relaxed);
    rehashBacklog_[k] = live && s->queuedBytes() > 0;
    rehashUsable_[k] = live && pa.rehash == Path::Rehash::kNone && !pa.probing &&
                       p->tx.state(static_cast<int>(k)) == PathState::kUp;
  }
  rehashOut_.clear();
  p->rehash.sample(now, rehashBytes_, rehashBacklog_, rehashUsable_, &rehashOut_);
  for (int k : rehashOut_) {
    requestRehash(p, k,
                  fmt::format("it carried {:.1f} MB/s over the last window with data waiting, the "
                              "best flow of its NICs {:.1f} MB/s",
                              p->rehash.rate(k) / 1e6, p->rehash.bestSibling(k) / 1e6));
  }
}

void Transport::requestRehash(Peer* p, int path, const std::string& why) {
  Path& pa = *p->paths[path];
  if (pa.rehash != Path::Rehash::kNone || pa.probing || !pa.sock || !pa.sock->alive() || failed() ||
      stopping_) {
    return;
  }
  const bool mine = ctx_.rank > p->rank;  // else the peer connects this pair's paths: ask it
  if (!mine && p->rehashUnanswered >= Peer::kRehashUnanswered) return;
  const int64_t now = nowNs();
  pa.lastRehashNs = now;
  LOG_INFO(kPath, "{}: {}: re-hashing it ({})", peerName(p->rank), pathName(p, path), why);
  // First it drains: what is out on it is acknowledged before the new connection replaces it
  // (and the peer drains its side when it connects or is asked).
  if (p->tx.state(path) == PathState::kUp) setPathState(p, path, PathState::kStandby);
  pa.rehash = Path::Rehash::kDraining;
  pa.rehashStepNs = now;
  rehashIfDrained(p, path, now);
}

void Transport::rehashIfDrained(Peer* p, int path, int64_t now) {
  Path& pa = *p->paths[path];
  if (pa.rehash != Path::Rehash::kDraining) return;
  if (!pa.sock || !pa.sock->alive() || failed() || stopping_) {
    pa.rehash = Path::Rehash::kNone;  // it died meanwhile: the usual recovery takes over
    return;
  }
  if (p->tx.outstanding(path) != 0 && now - pa.rehashStepNs < kDrainWaitNs) return;
  pa.rehashStepNs = now;
  if (ctx_.rank > p->rank) {
    pa.rehash = Path::Rehash::kConnecting;
    scheduleProbe(p, path, false, /*rehash=*/true);
    return;
  }
  pa.rehash = Path::Rehash::kAsked;
  notifyPath(p, path, FrameType::kRehash);
}

void Transport::endDrain(Peer* p, int path) {
  Path& pa = *p->paths[path];
  const bool wasDraining = pa.rehash != Path::Rehash::kNone;
  pa.rehash = Path::Rehash::kNone;
  if (!wasDraining) return;
  if (pa.primary && pa.sock && pa.sock->alive() && p->tx.state(path) == PathState::kStandby) {
    setPathState(p, path, PathState::kUp);
    pump(p);
  }
}

void Transport::onRehashRequest(Peer* p, uint64_t path) {
  if (!rehash_ || ctx_.rank < p->rank || path >= p->paths.size()) return;
  Path& pa = *p->paths[path];
  // At most one every half second per path, whatever the peer asks.
  constexpr int64_t kMinGapNs = 500'000'000;
  if (pa.lastRehashNs != 0 && nowNs() - pa.lastRehashNs < kMinGapNs) return;
  requestRehash(p, static_cast<int>(path), "the peer's data lags on it");
}

std::string Transport::routeKey(int localNic, const SockAddr& remote) const {
  SockAddr a = remote;
  a.setPort(0);  // another communicator listens on another port of the same NIC
  return nics_[localNic].name + ">" + a.toString();
}

void Transport::deadRoutes(std::vector<std::string>* out) const {
  // Dead to every peer behind it (several ranks share a host's NIC), not only to one.
  std::set<std::string> dead, alive;
  for (const Peer& p : peers_) {
    for (const auto& pa : p.paths) {
      const auto state = static_cast<PathState>(pa->ctr.state.load());
      (state == PathState::kDead ? dead : alive)
          .insert(routeKey(pa->localNic, remoteNics_[p.rank][pa->remoteNic]));
    }
  }
  for (const std::string& r : dead) {
    if (alive.count(r) == 0) out->push_back(r);
  }
}

void Transport::pathStats(std::vector<PathStatsRow>* out) const {
  for (const Peer& p : peers_) {
    for (size_t k = 0; k < p.paths.size(); ++k) {
      const Path& pa = *p.paths[k];
      PathStatsRow r;
      r.peer = p.rank;
      r.path = static_cast<int>(k);
      r.transport = "tcp";
      r.local = localName(pa);
      r.remote = pa.remoteAddr;
      r.state = mp::pathStateName(static_cast<PathState>(pa.ctr.state.load()));
      r.bytesSent = pa.ctr.bytesSent.load();
      r.bytesReceived = pa.ctr.bytesReceived.load();
      r.chunksSent = pa.ctr.chunksSent.load();
      r.chunksReceived = pa.ctr.chunksReceived.load();
      r.retransmits = pa.ctr.retransmits.load();
      r.failures = pa.ctr.failures.load();
      r.readmissions = pa.ctr.readmissions.load();
      r.rehashes = pa.ctr.rehashes.load();
      out->push_back(std::move(r));
    }
  }
}

}  // namespace braid::tcp

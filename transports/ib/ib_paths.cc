// The ib transport's paths: failure (error completions, asynchronous events, timeouts, the
// peer's notices, fault injection) and repair (a fresh QP exchanged over the side channel,
// re-admitted into the multipath scheduler).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "src/core/log.h"
#include "transports/ib/ib_transport.h"

namespace braid::ib {
namespace {

constexpr int64_t kFirstBackoffMs = 100, kMaxBackoffMs = 5000;
// A replaced QP's buffers are freed this long after: its flushed completions have been taken.
constexpr int64_t kRetireNs = 10'000'000'000;
constexpr size_t kMaxRetired = 64;  // replaced QPs kept per peer
constexpr int64_t kRepairTimeoutNs = 10'000'000'000;

// Whether the path's local port can carry traffic: no repair is tried over a port that is down
// (connecting a QP there can block while the address does not resolve).
bool portActive(const Path* path) {
  ibv_port_attr a{};
  return ibv_query_port(path->dev->ctx, static_cast<uint8_t>(path->port->port), &a) == 0 &&
         a.state == IBV_PORT_ACTIVE;
}

}  // namespace

void Transport::pathDown(Peer* p, Path* path, const std::string& why, bool notify) {
  if (path->dead || failed() || p->paths[path->index].get() != path) return;
  path->dead = true;
  path->deathReason = why;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;  // flushes what is posted; nothing more leaves or lands
  ibv_modify_qp(path->qp, &a, IBV_QP_STATE);
  path->wire.clear();
  p->rx.dropPath(path->index);
  size_t moved = p->tx.setState(path->index, mp::PathState::kDead, mp::nowNs());
  path->ctr.state.store(static_cast<uint8_t>(mp::PathState::kDead), std::memory_order_relaxed);
  path->ctr.failures.fetch_add(1, std::memory_order_relaxed);
  path->ctr.retransmits.fetch_add(moved, std::memory_order_relaxed);
  if (path->backoffMs == 0) path->backoffMs = kFirstBackoffMs;
  path->nextRepairNs = mp::nowNs() + path->backoffMs * 1'000'000;
  LOG_WARN(kPath, "{}: {} is down ({}); {} chunk(s) go again on the other paths", peerName(p->rank),
           pathName(p, path), why, moved);
  if (notify) {
    uint32_t k = static_cast<uint32_t>(path->index);
    p->sendSide(SideType::kPathDown, std::string(reinterpret_cast<const char*>(&k), 4));
  }
  if (!p->tx.anyUsable()) {
    if (p->allDownSinceNs == 0) p->allDownSinceNs = mp::nowNs();
    downSince_[p->rank].store(p->allDownSinceNs, std::memory_order_relaxed);
    LOG_WARN(kPath, "{}: every path is down; repairing for up to {} ms", peerName(p->rank),
             ctx_.cfg->timeoutMs);
    return;
  }
  pump(p);
}

// A new generation of path k: same ports, a new QP and ring. The old one is kept (dead) until
// its completions cannot come any more.
std::unique_ptr<Path> Transport::freshPath(Peer* p, int k) {
  Path* old = p->paths[k].get();
  auto np = std::make_unique<Path>();
  np->index = k;
  np->dev = old->dev;
  np->port = old->port;
  np->remotePort = old->remotePort;
  np->remote = old->remote;
  np->generation = old->generation + 1;
  np->dead = true;
  np->backoffMs = old->backoffMs;
  np->nextRepairNs = old->nextRepairNs;
  np->deathReason = old->deathReason;
  for (auto [to, from] : {std::pair{&np->ctr.bytesSent, &old->ctr.bytesSent},
                          {&np->ctr.bytesReceived, &old->ctr.bytesReceived},
                          {&np->ctr.chunksSent, &old->ctr.chunksSent},
                          {&np->ctr.chunksReceived, &old->ctr.chunksReceived},
                          {&np->ctr.retransmits, &old->ctr.retransmits},
                          {&np->ctr.failures, &old->ctr.failures},
                          {&np->ctr.readmissions, &old->ctr.readmissions},
                          {&np->ctr.rehashes, &old->ctr.rehashes}}) {
    to->store(from->load());
  }
  np->ctr.state.store(old->ctr.state.load());
  old->retiredNs = mp::nowNs();
  p->retired.push_back(std::move(p->paths[k]));
  return np;
}

void Transport::sendRepair(Peer* p, SideType type, int k, uint32_t generation, const PathWire& w) {
  RepairWire r;
  r.path = static_cast<uint32_t>(k);
  r.generation = generation;
  r.rec = w;
  p->sendSide(type, std::string(reinterpret_cast<const char*>(&r), sizeof r));
}

// The higher rank of the pair offers a fresh QP for a dead path.
void Transport::startRepair(Peer* p, int k) {
  Path* old = p->paths[k].get();
  old->backoffMs = std::min(old->backoffMs * 2, kMaxBackoffMs);
  old->nextRepairNs = mp::nowNs() + old->backoffMs * 1'000'000;
  if (!portActive(old)) return;
  p->paths[k] = freshPath(p, k);
  Path* path = p->paths[k].get();
  Status s = createPath(p, path);
  if (!s.isOk()) {
    LOG_INFO(kPath, "{}: cannot rebuild {} yet: {}", peerName(p->rank), pathName(p, path),
             s.message());
    return;
  }
  path->repairing = true;
  path->repairStartNs = mp::nowNs();
  LOG_DEBUG(kPath, "{}: offering a new queue pair for {}", peerName(p->rank), pathName(p, path));
  sendRepair(p, SideType::kRepairOffer, k, path->generation, pathRecord(path));
}

void Transport::admitPath(Peer* p, Path* path) {
  path->repairing = false;
  path->dead = false;
  path->backoffMs = 0;
  p->tx.setState(path->index, mp::PathState::kUp, mp::nowNs());
  path->ctr.state.store(static_cast<uint8_t>(mp::PathState::kUp), std::memory_order_relaxed);
  path->ctr.readmissions.fetch_add(1, std::memory_order_relaxed);
  p->allDownSinceNs = 0;
  downSince_[p->rank].store(0, std::memory_order_relaxed);
  LOG_WARN(kPath, "{}: {} is back (queue pair {})", peerName(p->rank), pathName(p, path),
           path->qp->qp_num);
  returnCredits(path, true);  // for writes taken while it was being rebuilt
  pump(p);
}

void Transport::onRepair(Peer* p, SideType type, const std::string& payload) {
  RepairWire r;
  if (payload.size() != sizeof r) {
    return fail(remoteError(fmt::format("{} sent a malformed repair record", peerName(p->rank))));
  }
  std::memcpy(&r, payload.data(), sizeof r);
  if (r.path >= p->paths.size()) {
    return fail(remoteError(fmt::format("{} sent a repair for no path", peerName(p->rank))));
  }
  const int k = static_cast<int>(r.path);
  if (type == SideType::kRepairOffer) {
    // The peer gave up on path k (its notice came first on this connection, unless our side
    // has not seen a sign yet): replace ours too.
    if (!p->paths[k]->dead) pathDown(p, p->paths[k].get(), "the peer rebuilds it", false);
    if (failed()) return;
    if (!portActive(p->paths[k].get())) {
      return sendRepair(p, SideType::kRepairAnswer, k, r.generation, PathWire{});  // not now
    }
    p->paths[k] = freshPath(p, k);
    Path* path = p->paths[k].get();
    path->generation = r.generation;
    Status s = createPath(p, path);
    if (s.isOk()) s = connectPath(p, path, r.rec);
    if (!s.isOk()) {
      LOG_INFO(kPath, "{}: cannot rebuild {} yet: {}", peerName(p->rank), pathName(p, path),
               s.message());
      return sendRepair(p, SideType::kRepairAnswer, k, r.generation, PathWire{});
    }
    path->repairing = true;  // admitted at REPAIR_DONE: the peer's QP is then ready to receive
    path->repairStartNs = mp::nowNs();
    return sendRepair(p, SideType::kRepairAnswer, k, r.generation, pathRecord(path));
  }
  Path* path = p->paths[k].get();
  if (!path->repairing || path->generation != r.generation) return;  // an older attempt
  if (type == SideType::kRepairAnswer) {
    if (r.rec.qpn == 0) {
      path->repairing = false;  // refused for now: the next attempt after the backoff
      return;
    }
    Status s = connectPath(p, path, r.rec);
    if (!s.isOk()) {
      LOG_INFO(kPath, "{}: cannot rebuild {} yet: {}", peerName(p->rank), pathName(p, path),
               s.message());
      path->repairing = false;
      return;
    }
    sendRepair(p, SideType::kRepairDone, k, r.generation, PathWire{});
    return admitPath(p, path);
  }
  admitPath(p, path);  // kRepairDone
}

void Transport::onAsyncEvent(Device* d) {
  ibv_async_event ev{};
  while (ibv_get_async_event(d->ctx, &ev) == 0) {
    const ibv_event_type type = ev.event_type;
    LOG_INFO(kIb, "ib: {}: {}", d->name, ibv_event_type_str(type));
    for (Peer* p : active_) {
      for (auto& path : p->paths) {
        if (path->dev != d) continue;
        bool hit = false;
        if (type == IBV_EVENT_PORT_ERR) {
          hit = path->port->port == static_cast<int>(ev.element.port_num);
        }
        if (type == IBV_EVENT_DEVICE_FATAL) hit = true;
        if (type == IBV_EVENT_QP_FATAL || type == IBV_EVENT_QP_REQ_ERR ||
            type == IBV_EVENT_QP_ACCESS_ERR) {
          hit = path->qp == ev.element.qp;
        }
        if (hit) pathDown(p, path.get(), ibv_event_type_str(type), true);
      }
    }
    ibv_ack_async_event(&ev);
  }
}

void Transport::onTick() {
  if (failed()) return;
  const int64_t now = mp::nowNs();
  for (Peer* p : active_) {
    expiredScratch_.clear();
    p->tx.expired(now, &expiredScratch_);
    for (int k : expiredScratch_) {
      // The last path is not given up on a timeout (a slow QP, an overloaded host): its RC
      // transport reports a real failure itself, and the operation's own timeout bounds it.
      size_t others = 0;
      for (auto& q : p->paths) others += !q->dead && q->index != k ? 1 : 0;
      if (others == 0) {
        p->tx.stillMoving(k, now);
        continue;
      }
      pathDown(p, p->paths[k].get(),
               fmt::format("no completion for {} ms with {} bytes outstanding",
                           pathTimeoutNs_ / 1'000'000, p->tx.outstanding(k)),
               true);
      if (failed()) return;
    }
    if (p->allDownSinceNs != 0 && now - p->allDownSinceNs > ctx_.cfg->timeoutMs * 1'000'000) {
      std::string tried;
      for (auto& q : p->paths) {
        tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", pathName(p, q.get()),
                             q->deathReason);
      }
      return fail(timeoutError(fmt::format(
          "{} is unreachable over ib: every path has been down for {} ms (BRAID_TIMEOUT_MS; "
          "paths tried: {})",
          peerName(p->rank), (now - p->allDownSinceNs) / 1'000'000, tried)));
    }
    // Chunks that wait for a busy path which may have fallen silent since (Sender::pick waits
    // no more once it has been for kStallNs).
    if (p->tx.waiting()) {
      pump(p);
      if (failed()) return;
    }
    const bool repairs = ctx_.rank > p->rank && !p->byeSeen && !p->closed && !closing_;
    for (size_t k = 0; repairs && k < p->paths.size(); ++k) {
      Path* path = p->paths[k].get();
      // An attempt whose answer never came is given up (the next one starts over).
      if (path->repairing && now - path->repairStartNs > kRepairTimeoutNs) path->repairing = false;
      if (path->dead && !path->repairing && now >= path->nextRepairNs) {
        startRepair(p, static_cast<int>(k));
      }
    }
    // A replaced QP stays (in the error state, which drops whatever still arrives for it) so
    // that its number is not handed to a new QP while stale packets may name it; its buffers
    // go once its completions are long taken, and only the oldest QPs are destroyed.
    for (auto& old : p->retired) {
      if (now - old->retiredNs >= kRetireNs) {
        old->ring.release();
        old->staging.release();
      }
    }
    while (p->retired.size() > kMaxRetired && now - p->retired.front()->retiredNs >= kRetireNs) {
      const Path& gone = *p->retired.front();
      if (gone.qp != nullptr) byQpn_.erase(qpKey(gone.dev, gone.qp->qp_num));
      p->retired.erase(p->retired.begin());
    }
  }
  if (faultsLeft_ > 0 && fault_.afterMs > 0 && now - lastFaultNs_ >= fault_.afterMs * 1'000'000) {
    injectFault();
  }
}

std::string Transport::healthNote() const {
  std::string out;
  const int64_t now = mp::nowNs();
  for (int r = 0; r < static_cast<int>(info_.size()) && downSince_; ++r) {
    int64_t since = downSince_[r].load(std::memory_order_relaxed);
    if (since == 0) continue;
    out += fmt::format("; {} is unreachable over ib (every path down for {} ms)", peerName(r),
                       (now - since) / 1'000'000);
  }
  return out;
}

void Transport::injectFault() {
  if (failed() || faultsLeft_ <= 0 || active_.empty()) return;
  Peer* p = active_[0];
  for (Peer* q : active_) {
    if (fault_.peer >= 0 && q->rank == fault_.peer) p = q;
  }
  if (fault_.randomPeer) {
    p = active_[(fault_.seed + static_cast<uint64_t>(faultsLeft_)) % active_.size()];
  }
  const size_t P = p->paths.size();
  if (!fault_.randomPath && static_cast<size_t>(fault_.path) >= P) {
    LOG_WARN(kPath, "fault injection: {} has {} path(s), none numbered {}; the fault is disarmed",
             peerName(p->rank), P, fault_.path);
    faultsLeft_ = 0;
    return;
  }
  size_t k = fault_.randomPath
                 ? (fault_.seed * 2654435761u + static_cast<uint64_t>(faultsLeft_)) % P
                 : static_cast<size_t>(fault_.path) % P;
  for (size_t i = 0; i < P && (p->paths[k]->dead || p->paths[k]->frozen); ++i) k = (k + 1) % P;
  Path* path = p->paths[k].get();
  if (path->dead || path->frozen) return;
  --faultsLeft_;
  lastFaultNs_ = mp::nowNs();
  LOG_WARN(kPath, "fault injection: {} {} of {}", fault_.blackhole ? "blackholing" : "killing",
           pathName(p, path), peerName(p->rank));
  if (fault_.blackhole) {
    path->frozen = true;
  } else {
    pathDown(p, path, "fault injection (the queue pair was put in the error state)", true);
  }
}

}  // namespace braid::ib

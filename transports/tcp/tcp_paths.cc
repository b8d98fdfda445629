// Paths of the TCP transport: failure and re-admission, acknowledgements, the periodic tick;
// tcp_connect.cc: connections and reconnection, tcp_watch.cc: health.
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

using mp::nowNs;
using mp::PathState;

void Transport::setPathState(Peer* p, int path, PathState s, size_t* moved) {
  size_t m = p->tx.setState(path, s, nowNs());
  if (moved != nullptr) *moved = m;
  p->paths[path]->ctr.state.store(static_cast<uint8_t>(s), std::memory_order_relaxed);
}

void Transport::retire(std::unique_ptr<Socket> s, bool linger) {
  if (!s) return;
  if (linger) {
    lingering_.emplace_back(nowNs(), s->release());
  } else {
    s->closeNow();
  }
  // An event batch the loop thread took from epoll before the close may still name it (the
  // loop takes events outside the loop lock): free it only long after.
  graveyard_.emplace_back(nowNs(), std::move(s));
}

void Transport::onPathDown(Peer* p, int path, const std::string& why, bool closedByPeer,
                           bool notify) {
  if (failed()) return;
  Path& pa = *p->paths[path];
  if (!pa.sock || !pa.sock->alive()) return;
  const uint32_t conn = pa.sock->peerConnId();
  retire(std::move(pa.sock));
  p->rx.dropPath(path);
  size_t moved = 0;
  setPathState(p, path, PathState::kDead, &moved);
  pa.ctr.failures.fetch_add(1, std::memory_order_relaxed);
  pa.ctr.retransmits.fetch_add(moved, std::memory_order_relaxed);
  pa.closedByPeer = closedByPeer;
  pa.downSinceNs = nowNs();
  pa.flaps =
      pa.upSinceNs != 0 && pa.downSinceNs - pa.upSinceNs < Path::kFlapWindowNs ? pa.flaps + 1 : 0;
  LOG_WARN(kPath, "{}: {} is down ({}); {} chunk(s) go again on the other paths", peerName(p->rank),
           pathName(p, path), why, moved);
  // The peer may have no sign of it (a cut elsewhere, a blackhole): tell it on a live path
  // (one that stands by too), ahead of the chunks that go again there.
  if (notify && !closedByPeer) notifyPathDown(p, path, conn);
  if (!p->tx.anyUsable()) {
    allPathsDown(p);
    if (failed()) return;
  } else {
    pump(p);
  }
  if (ctx_.rank > p->rank) scheduleProbe(p, path, false);
}

void Transport::allPathsDown(Peer* p) {
  if (p->allDownSinceNs == 0) p->allDownSinceNs = nowNs();
  downSince_[p->rank].store(p->allDownSinceNs, std::memory_order_relaxed);
  LOG_WARN(kPath, "{}: every path it may send on is down; waiting up to {} ms for one to come back",
           peerName(p->rank), ctx_.cfg->timeoutMs);
  // The higher rank of the pair reconnects (and learns whether the peer still listens); the
  // lower one checks that the peer still accepts connections.
  if (ctx_.rank < p->rank) scheduleProbe(p, 0, /*liveness=*/true);
}

std::string Transport::pathsTried(const Peer* p) const {
  std::string out;
  for (size_t k = 0; k < p->paths.size(); ++k) {
    if (!out.empty()) out += "; ";
    out += pathName(p, static_cast<int>(k));
  }
  return out;
}

void Transport::onProbeResult(int rank, int path, bool ok, bool refused, const std::string& why) {
  if (failed() || stopping_) return;
  Peer& p = peers_[rank];
  const bool liveness = ctx_.rank < rank;
  (liveness ? p.livenessProbing : p.paths[path]->probing) = false;
  LOG_DEBUG(kPath, "{}: {} of {}: {}", peerName(rank), liveness ? "liveness check" : "probe",
            pathName(&p, path), why);
  (void)ok;
  if (p.left && p.goneWhy.empty()) return;  // it said goodbye
  if (!refused) p.refusedSinceNs = 0;       // refused on every try for BRAID_PEER_GONE_MS
  if (p.goneWhy.empty() && p.allDownSinceNs != 0 && refused) {
    // Every connection is gone and nothing listens: the process died, or a firewall rejects
    // (reloaded rules, a host being isolated): refusals for BRAID_PEER_GONE_MS tell.
    const int64_t now = nowNs();
    if (p.refusedSinceNs == 0) p.refusedSinceNs = now;
    if (now - p.refusedSinceNs >= ctx_.cfg->peerGoneMs * 1'000'000) return onPeerGone(&p);
  }
  if (liveness) {
    if (p.allDownSinceNs != 0) scheduleProbe(&p, 0, true);
    return;
  }
  Path& pa = *p.paths[path];
  // A re-hash that did not connect: the path keeps its connection.
  if (pa.rehash == Path::Rehash::kConnecting) endDrain(&p, path);
  if (!pa.sock || !pa.sock->alive()) scheduleProbe(&p, path, false);
}

void Transport::noteConnected(Path* pa) {
  pa->upSinceNs = nowNs();
  // The connection's own local port (logs and path stats then match what ss and tcpdump show).
  SockAddr local;
  local.len = sizeof local.ss;
  if (getsockname(pa->sock->fd(), reinterpret_cast<sockaddr*>(&local.ss), &local.len) == 0) {
    pa->localPort.store(local.port(), std::memory_order_relaxed);
  }
}

void Transport::installPath(int rank, int path, Fd fd, bool rehash) {
  if (failed() || stopping_) return;
  Peer& p = peers_[rank];
  Path& pa = *p.paths[path];
  const bool wasDead = p.tx.state(path) == PathState::kDead;
  pa.rehash = Path::Rehash::kNone;
  if (pa.sock && pa.sock->alive()) {
    // The other end saw this path fail first and reconnected: the old connection is stale. Or
    // it is a re-hash: the new connection takes the path's traffic from the lagging one (both
    // ends keep the old one open a while, so that neither sees its end of stream before the new
    // one is in); what was still unacknowledged on the old one (it drained meanwhile) goes again.
    if (rehash) {
      pa.ctr.rehashes.fetch_add(1, std::memory_order_relaxed);
      p.rehashUnanswered = 0;
      LOG_INFO(kPath, "{}: {} moved to a new connection (re-hash)", peerName(rank),
               pathName(&p, path));
    }
    retire(std::move(pa.sock), rehash);
    p.rx.dropPath(path);
    size_t moved = 0;
    setPathState(&p, path, PathState::kDead, &moved);
    pa.ctr.retransmits.fetch_add(moved, std::memory_order_relaxed);
  }
  Status s = setNonBlocking(fd.get());
  tunePathSocket(fd.get());
  auto sock = std::make_unique<Socket>(&p, path, std::move(fd));
  if (s.isOk()) s = ctx_.reactor->add(sock->fd(), EPOLLIN, sock.get());
  if (!s.isOk()) {
    LOG_WARN(kPath, "cannot use a new connection for {}: {}", pathName(&p, path), s.message());
    return;
  }
  pa.sock = std::move(sock);
  pa.probing = false;
  pa.backoffMs = 0;
  noteConnected(&pa);
  pa.closedByPeer = false;
  p.livenessBackoffMs = 0;
  ++pa.generation;
  setPathState(&p, path, pa.primary ? PathState::kUp : PathState::kStandby, nullptr);
  p.rehash.restarted(path, nowNs());
  if (wasDead && pa.generation == 1 && pa.startDead()) {
    // Its first connection (a NIC had no link at the start): an admission, not a re-admission.
    LOG_WARN(kPath, "{}: {} is up after {} ms (it started dead: {})", peerName(rank),
             pathName(&p, path), (nowNs() - pa.downSinceNs) / 1'000'000, pa.startWhy);
  } else if (wasDead) {
    pa.ctr.readmissions.fetch_add(1, std::memory_order_relaxed);
    LOG_WARN(kPath, "{}: {} is back after {} ms", peerName(rank), pathName(&p, path),
             (nowNs() - pa.downSinceNs) / 1'000'000);
  }
  p.allDownSinceNs = 0;
  p.refusedSinceNs = 0;
  downSince_[rank].store(0, std::memory_order_relaxed);
  if (!p.goneWhy.empty()) {
    // Taken for gone (refused for BRAID_PEER_GONE_MS: a firewall rejected longer than that,
    // and the peer went on trying): an authenticated connection says it lives.
    LOG_WARN(kNet, "{} is back: it was taken for gone ({})", peerName(rank), p.goneWhy);
    p.left = false;
    p.goneWhy.clear();
  }
  pump(&p);
}

bool Transport::acceptChunk(Peer* p, int path, const FrameHeader& h) {
  int other = -1;
  switch (p->rx.begin(h.fid, path, &other)) {
    case mp::Receiver::Verdict::kDuplicate:
      return false;
    case mp::Receiver::Verdict::kConflict: {
      // The sender sent the chunk again here while `other` was still bringing its first copy
      // (a straggler re-sent at the end of a transfer, or `other` is dying): this copy goes
      // to the destination, the rest of that one nowhere (the bytes are the same, and the
      // destination may be handed back to the application as soon as this copy is in).
      Socket* s = other >= 0 && static_cast<size_t>(other) < p->paths.size()
                      ? p->paths[other]->sock.get()
                      : nullptr;
      if (s != nullptr) s->abandonFrame(h.fid);
      return !failed();
    }
    case mp::Receiver::Verdict::kNew:
      return true;
  }
  return true;
}

void Transport::chunkArrived(Peer* p, int path, const FrameHeader& h) {
  p->rx.end(h.fid, path, !(h.flags & kFlagLazyAck));
  mp::PathCounters::bump(p->paths[path]->ctr.chunksReceived, 1);
}

void Transport::appendAck(Peer* p, Socket* s) {
  if (!p->rx.ackOwed(s->path())) return;
  uint64_t below = p->rx.takeAck(s->path(), &ackScratch_, kMaxAckRanges);
  std::string payload(ackScratch_.size() * 16, '\0');
  for (size_t i = 0; i < ackScratch_.size(); ++i) {
    std::memcpy(payload.data() + 16 * i, &ackScratch_[i].first, 8);
    std::memcpy(payload.data() + 16 * i + 8, &ackScratch_[i].count, 8);
  }
  FrameHeader h;
  h.type = static_cast<uint8_t>(FrameType::kAck);
  h.len = static_cast<uint32_t>(payload.size());
  h.tag = below;
  s->enqueueUrgent(h, std::move(payload));
}

void Transport::onAck(Peer* p, int path, uint64_t below, const std::string& ranges) {
  std::vector<mp::Range>& rs = ackScratch_;
  rs.resize(ranges.size() / 16);
  for (size_t i = 0; i < rs.size(); ++i) {
    std::memcpy(&rs[i].first, ranges.data() + 16 * i, 8);
    std::memcpy(&rs[i].count, ranges.data() + 16 * i + 8, 8);
  }
  p->tx.ack(path, below, rs.data(), rs.size(), nowNs(), [&](mp::Chunk& c) {
    if (c.sends > 1) {
      // Another copy may still be on its way out of a path: it must not read freed memory.
      for (int q : {c.path, c.copyPath}) {
        Socket* s = q >= 0 ? p->paths[q]->sock.get() : nullptr;
        if (s != nullptr && s->alive()) s->forget(c.fid);
      }
    }
    if (c.req != nullptr && --c.req->fragmentsLeft == 0) complete(c.req, Status::ok());
  });
  pump(p);
}

void Transport::onTick() {
  if (failed()) return;
  const int64_t now = nowNs();
  std::vector<int> stalled;
  for (Peer& p : peers_) {
    if (p.paths.empty()) continue;
    checkPaths(&p, now, &stalled);
    if (failed()) return;
    // The end of a transfer (stragglers), or chunks that wait for a busy fast path which may
    // have fallen silent since (Sender::pick waits no more once it has been for kStallNs).
    if (!p.tx.idle()) pump(&p);
    if (failed()) return;
    if (rehash_) checkRehash(&p, now);
    if (p.rx.anyAckOwed() && !stopping_) {
      // Lazy acknowledgements: each path's on that path, a dead path's on any live one (the
      // flush carries the acknowledgement).
      for (auto& path : p.paths) {
        Socket* s = path->sock.get();
        if (s != nullptr && s->alive() && !s->frozen() && p.rx.ackOwed(s->path())) s->flush();
      }
      if (p.rx.ackOwed(-1)) {
        if (Socket* s = p.liveSocket()) s->flush();
      }
    }
    if (p.allDownSinceNs != 0 && now - p.allDownSinceNs > ctx_.cfg->timeoutMs * 1'000'000) {
      fail(timeoutError(fmt::format("{} is unreachable: every path has been down for {} ms "
                                    "(BRAID_TIMEOUT_MS); paths tried: {}",
                                    peerName(p.rank), (now - p.allDownSinceNs) / 1'000'000,
                                    pathsTried(&p))),
           true);
      return;
    }
  }
  if (faultsLeft_ > 0 && fault_.afterMs > 0 && now - lastFaultNs_ >= fault_.afterMs * 1'000'000) {
    injectFault(-1);  // BRAID_FAULT's peer, else the first peer reached over TCP
  }
  tickConnections(now);
  // Handlers out of the epoll set for a long while can no longer be named by a pending event.
  constexpr int64_t kLongAfterNs = 10'000'000'000;
  graveyard_.erase(std::remove_if(graveyard_.begin(), graveyard_.end(),
                                  [&](const auto& g) { return now - g.first > kLongAfterNs; }),
                   graveyard_.end());
  // A re-hashed connection: its peer has taken the new one long since.
  constexpr int64_t kLingerNs = 2'000'000'000;
  lingering_.erase(std::remove_if(lingering_.begin(), lingering_.end(),
                                  [&](const auto& l) { return now - l.first > kLingerNs; }),
                   lingering_.end());
}

}  // namespace braid::tcp

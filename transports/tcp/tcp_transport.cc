// TCP transport: NICs and first connections, matching of tagged sends and receives, chunks,
// failure handling.
#include "transports/tcp/tcp_transport.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>
#include <unordered_set>

#include "src/core/log.h"

namespace braid {
namespace tcp {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

Socket* Peer::liveSocket() const {
  Socket* best = nullptr;
  for (const auto& p : paths) {
    Socket* s = p->sock.get();
    if (s != nullptr && s->alive() && !s->frozen() &&
        (best == nullptr || s->queuedBytes() < best->queuedBytes())) {
      best = s;
    }
  }
  return best;
}

Status Transport::listen() {
  const int localRank = launcherLocalRank();
  BRAID_TRY(chooseNics(*ctx_.cfg, localRank, &nics_, &primaryNic_));
  // The first NIC that is up (chooseNics keeps at least one).
  auto firstUp = [this] {
    auto up = std::find_if(nics_.begin(), nics_.end(), [](const NetIf& n) { return !n.down; });
    return static_cast<int>(up - nics_.begin());
  };
  const std::string& mode = ctx_.cfg->multirail;
  // off: the rank's own NIC (or the first that is up while its own has no link) carries what
  // it sends, and nothing else does, even when it fails. The other NICs stay connected: a peer
  // on another rail sends on its own, and the pairs must stay rail to rail (a rail-optimized
  // fabric does not route from one rail to another; pairing this NIC with the peer's would
  // send the bytes out of whichever NIC the kernel routes that subnet through).
  if (mode == "off" && nics_[primaryNic_].down) primaryNic_ = firstUp();
  // auto: spray while this rank's node is not known to hold other ranks (decided again when
  // the peers are known); failover: the primary NIC's paths only, the others as standby.
  spray_ = mode != "failover" && mode != "off";
  flows_ = static_cast<int>(ctx_.cfg->tcpSocketsPerPeer);
  chunkBytes_ = static_cast<size_t>(ctx_.cfg->pathChunkBytes);
  pathTimeoutNs_ = ctx_.cfg->pathTimeoutMs * 1'000'000;
  rehash_ = ctx_.cfg->pathRehash != 0;
  // Normal ends of a transfer on the ECMP testbed take 20-30 ms from the last chunk handed
  // out to the last acknowledgement; a flow in loss recovery held one 100-280 ms.
  stragglerNs_ = std::clamp<int64_t>(pathTimeoutNs_ / 10, 20'000'000, 100'000'000);
  BRAID_TRY(mp::FaultPlan::parse(ctx_.cfg->fault, &fault_, ctx_.nranks));
  BRAID_TRY(chooseCongestionControl());
  const std::string primaryName = nics_[primaryNic_].name;
  std::vector<NetIf> listening;
  for (const NetIf& nif : nics_) {
    Fd fd;
    SockAddr bound;
    Status s = listenOn(nif.addr, 1024, &fd, &bound);
    if (!s.isOk() && nif.down) {
      // Its address may not take a socket while the link is down (IPv6): left out.
      LOG_WARN(kNet, "tcp: rail {} is left out: {}", nif.name, s.message());
      continue;
    }
    BRAID_TRY(s);
    LOG_INFO(kNet, "tcp: listening on interface {} ({}){}{}", nif.name, bound.toString(),
             nics_.size() > 1 && nif.name == primaryName
                 ? fmt::format(", the rail of local rank {}", localRank)
                 : "",
             nif.down ? ", no link yet" : "");
    BRAID_TRY(addListener(std::move(fd), bound));
    listening.push_back(nif);
  }
  nics_ = std::move(listening);
  // The same NIC at its new place; if it was the one left out, the first that is up (a NIC
  // that is up and cannot listen failed the start above).
  auto own = std::find_if(nics_.begin(), nics_.end(),
                          [&](const NetIf& n) { return n.name == primaryName; });
  primaryNic_ = own != nics_.end() ? static_cast<int>(own - nics_.begin()) : firstUp();
  return Status::ok();
}

Status Transport::chooseCongestionControl() {
  const std::string& want = ctx_.cfg->tcpCongestion;
  congestion_.clear();
  if (want == "system") return Status::ok();
  if (want != "auto") {
    BRAID_TRY(checkCongestionControl(want));
    congestion_ = want;
    return Status::ok();
  }
  // The system's choice, except BBR (v1): it drops each connection to 4 packets in flight for
  // 200 ms every 10 s (ProbeRTT) and ignores loss, so long-lived bulk connections lose a few
  // percent, and several flows sharing one bottleneck keep a shallow switch buffer
  // overflowing. Measured on the testbed (1 Gbit/s links): a 4-host ring allreduce 0.93 of the
  // link with bbr, 0.955 with cubic; 8 flows per peer across ECMP 0.76 against 0.88.
  const std::string sys = readProcLine("/proc/sys/net/ipv4/tcp_congestion_control");
  if (sys == "bbr" && checkCongestionControl("cubic").isOk()) {
    congestion_ = "cubic";
    LOG_INFO(kNet, "tcp: cubic for the data connections instead of the system's bbr");
  }
  return Status::ok();
}

std::string Transport::peerName(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(peerInfo_.size())) return fmt::format("rank {}", rank);
  return fmt::format("rank {} ({}, {})", rank, peerInfo_[rank].host, peerInfo_[rank].address);
}

std::string Transport::localName(const Path& pa) const {
  SockAddr a = nics_[pa.localNic].addr;
  a.setPort(pa.localPort.load(std::memory_order_relaxed));
  return nics_[pa.localNic].name + " " + a.toString();
}

std::string Transport::pathName(const Peer* p, int path) const {
  const Path& pa = *p->paths[path];
  return fmt::format("path {} of {} ({} -> {})", path, p->paths.size(), localName(pa),
                     pa.remoteAddr);
}

std::vector<std::pair<int, int>> Transport::nicPairs(bool peerIsLower,
                                                     const std::vector<std::string>& remote) const {
  std::vector<std::string> local;
  for (const NetIf& n : nics_) local.push_back(n.name);
  std::vector<std::pair<int, int>> out;
  if (local != remote) {
    // Different NIC lists (a rail down on one host when the job started, or hosts built
    // differently): NICs of the same name, in the lower rank's order, so that no pair crosses
    // from one rail to another, which a rail-optimized fabric does not route.
    const std::vector<std::string>& order = peerIsLower ? remote : local;
    for (const std::string& name : order) {
      auto l = std::find(local.begin(), local.end(), name);
      auto r = std::find(remote.begin(), remote.end(), name);
      if (!name.empty() && l != local.end() && r != remote.end()) {
        out.emplace_back(int(l - local.begin()), int(r - remote.begin()));
      }
    }
    if (!out.empty()) return out;
  }
  // The same NICs on both ends, or no name in common: NIC q with the peer's NIC q (rails).
  const int pairs = static_cast<int>(std::max(local.size(), remote.size()));
  for (int q = 0; q < pairs; ++q) {
    out.emplace_back(q % static_cast<int>(local.size()), q % static_cast<int>(remote.size()));
  }
  return out;
}

Status Transport::connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int me = ctx_.rank, n = ctx_.nranks;
  peerInfo_ = peers;
  peers_.resize(n);
  downSince_ = std::vector<std::atomic<int64_t>>(static_cast<size_t>(n));
  remoteNics_.assign(n, {});
  // Other ranks on this node, whichever transport carries their traffic (shared memory by
  // default): they have rails of their own, so auto keeps each rank to its own rail.
  int sameNode = 0;
  for (int r = 0; r < n; ++r) {
    if (r != me && peers[r].sameNode) ++sameNode;
  }
  if (ctx_.cfg->multirail == "auto" && sameNode > 0) spray_ = false;  // rails belong to ranks
  mp::SenderOptions opt;
  opt.window = pathWindow();
  opt.timeoutNs = pathTimeoutNs_;
  opt.standbyCarries = ctx_.cfg->multirail != "off";
  for (int r = 0; r < n; ++r) {
    Peer& p = peers_[r];
    p.rank = r;
    p.t = this;
    if (r == me || !peers[r].serve) continue;
    std::vector<std::string> remoteNames;
    std::vector<bool> remoteDown;
    for (std::string a : splitList(peers[r].address)) {
      const bool down = a.ends_with(kNoLinkMark);
      if (down) a.resize(a.size() - kNoLinkMark.size());
      const size_t at = a.rfind('@');  // addresses hold no '@'
      SockAddr sa;
      BRAID_TRY(SockAddr::parse(at == std::string::npos ? a : a.substr(at + 1), &sa));
      remoteNics_[r].push_back(sa);
      remoteNames.push_back(at == std::string::npos ? "" : a.substr(0, at));
      remoteDown.push_back(down);
    }
    if (remoteNics_[r].empty()) {
      return remoteError(fmt::format("{} sent no TCP address", peerName(r)));
    }
    // Each NIC pair has `flows_` connections; both ends compute the same list (nicPairs).
    for (const auto& [localNic, remoteNic] : nicPairs(r < me, remoteNames)) {
      for (int f = 0; f < flows_; ++f) {
        auto path = std::make_unique<Path>();
        path->localNic = localNic;
        path->remoteNic = remoteNic;
        path->remoteAddr = remoteNics_[r][path->remoteNic].toString();
        path->primary = spray_ || path->localNic == primaryNic_;
        if (nics_[path->localNic].down || remoteDown[path->remoteNic]) {
          path->startWhy = "no link at the start";
        } else if (std::find(ctx_.deadRoutes.begin(), ctx_.deadRoutes.end(),
                             routeKey(localNic, remoteNics_[r][remoteNic])) !=
                   ctx_.deadRoutes.end()) {
          path->startWhy = "dead in the communicator this one was split from";
        }
        p.paths.push_back(std::move(path));
      }
    }
    // A peer with no NIC of this rank's rail (hosts built differently, a rail left out at its
    // start): no path leaves by this rank's own NIC, and off would have none to send on.
    // Every path to it then carries, as the pairs that exist are all there is.
    if (std::none_of(p.paths.begin(), p.paths.end(), [](const auto& pa) { return pa->primary; })) {
      LOG_INFO(kPath, "{}: no path from this rank's own rail ({}): every path to it carries",
               peerName(r), nics_[primaryNic_].name);
      for (auto& pa : p.paths) pa->primary = true;
    }
    p.tx = mp::Sender(static_cast<int>(p.paths.size()), opt);  // every path up
    std::vector<int> group;  // re-hashing compares the flows of one NIC pair
    for (const auto& pa : p.paths) {
      group.push_back(pa->localNic * static_cast<int>(remoteNics_[r].size()) + pa->remoteNic);
    }
    p.rehash = mp::RehashPolicy(std::move(group), mp::RehashOptions{});
    for (size_t k = 0; k < p.paths.size(); ++k) {
      if (!p.paths[k]->primary) setPathState(&p, static_cast<int>(k), mp::PathState::kStandby);
    }
  }
  BRAID_TRY(initialConnect(deadline));
  BRAID_TRY(startBackground());
  startDeadPaths();
  size_t served = static_cast<size_t>(
      std::count_if(peers.begin(), peers.end(), [](const PeerInfo& p) { return p.serve; }));
  LOG_INFO(kNet, "tcp: connected to {} peers over {} NIC(s), {} flow(s) per NIC pair ({})", served,
           nics_.size(), flows_,
           spray_                         ? "spraying over every path"
           : ctx_.cfg->multirail == "off" ? "own rail only"
                                          : "failover");
  if (faultsLeft_ > 0) LOG_WARN(kPath, "fault injection armed: {}", fault_.describe());
  return Status::ok();
}

void Transport::post(NetRequest* r) {
  ctx_.reactor->runOrPost([this, r] { postInLoop(r); });
}

void Transport::complete(NetRequest* r, Status s) { completeRequest(r, std::move(s)); }

void Transport::postInLoop(NetRequest* r) {
  if (failed()) return complete(r, failed_);
  Peer& p = peers_[r->peer];
  bool arrived = r->kind == NetRequest::Kind::kRecv && p.unexpected.count(r->tag) != 0;
  if (p.left && !arrived) {
    return complete(r, remoteError(p.goneWhy.empty()
                                       ? fmt::format("{} has left (its communicator was destroyed)",
                                                     peerName(p.rank))
                                       : p.goneWhy));
  }
  if (r->kind == NetRequest::Kind::kSend) {
    if (r->bytes <= eagerBytes()) return sendData(&p, r);
    // Every send above the eager limit tells the receiver its size (a receive posted at or
    // below the limit waits for data that would never come: it fails at once on a mismatch).
    sendReliable(&p, mp::announcement(static_cast<uint8_t>(FrameType::kRts), r->tag, r->bytes));
    auto it = p.rtrs.find(r->tag);
    if (it == p.rtrs.end()) {
      p.awaitingRtr[r->tag] = r;
      return;
    }
    uint64_t want = it->second;
    p.rtrs.erase(it);
    if (want != r->bytes) {
      fail(sizeMismatch(peerName(p.rank), r->tag, r->bytes, want, true), true);
      return complete(r, failed_);  // r was in no queue that fail() empties
    }
    return sendData(&p, r);
  }
  auto u = p.unexpected.find(r->tag);
  if (u != p.unexpected.end()) {
    if (u->second.data.size() != r->bytes) {
      fail(sizeMismatch(peerName(p.rank), r->tag, r->bytes, u->second.data.size(), false), true);
      return complete(r, failed_);  // r was in no queue that fail() empties
    }
    if (u->second.got == r->bytes) {
      if (r->bytes > 0) std::memcpy(r->buf, u->second.data.data(), r->bytes);
      unexpectedBytes_ -= r->bytes;
      p.unexpected.erase(u);
      return complete(r, Status::ok());
    }
    u->second.waiting = r;
    return;
  }
  if (uint64_t total = 0; !p.announced.posted(r->tag, r->bytes, eagerBytes(), &total)) {
    fail(sizeMismatch(peerName(p.rank), r->tag, r->bytes, total, false), true);
    return complete(r, failed_);  // r was in no queue that fail() empties
  }
  p.postedRecvs[r->tag] = r;
  if (r->bytes > eagerBytes()) {
    mp::Chunk c;
    c.type = static_cast<uint8_t>(FrameType::kRtr);
    c.tag = r->tag;
    c.total = r->bytes;
    sendReliable(&p, std::move(c));
  }
}

void Transport::sendReliable(Peer* p, mp::Chunk&& c) {
  p->tx.add(std::move(c));
  pump(p);
}

void Transport::sendData(Peer* p, NetRequest* r) {
  // Chunks small enough to spread a message over every path, within the configured bounds.
  const size_t P = std::max<size_t>(1, p->paths.size());
  const size_t chunk = std::clamp((r->bytes + 2 * P - 1) / (2 * P),
                                  std::min<size_t>(64 << 10, chunkBytes_), chunkBytes_);
  // The last P chunks' worth goes in eighths (at least 64 KiB), so that the paths finish
  // within a small chunk of each other rather than one flow carrying a last whole chunk alone
  // (8 flows sharing 1 Gbit/s: one 1 MiB chunk is 70 ms).
  const size_t fine = std::min(chunk, std::max<size_t>(chunk / 8, 64 << 10));
  const size_t tail = P > 1 && r->bytes > 4 * P * chunk ? P * chunk : 0;
  const size_t bulk = r->bytes - tail;
  const size_t nchunks = r->bytes == 0 ? 1 : (bulk + chunk - 1) / chunk + (tail + fine - 1) / fine;
  // A small message is copied and done; a large one completes when its last chunk is
  // acknowledged, so a chunk can be re-sent from the user's buffer until then.
  const bool copy = r->bytes <= kCopyBytes;
  r->fragmentsLeft = nchunks;
  size_t offset = 0;
  for (size_t i = 0; i < nchunks; ++i) {
    mp::Chunk c;
    c.type = static_cast<uint8_t>(FrameType::kData);
    c.tag = r->tag;
    c.offset = offset;
    c.len = static_cast<uint32_t>(offset < bulk ? std::min(chunk, bulk - offset)
                                                : std::min(fine, r->bytes - offset));
    offset += c.len;
    c.total = r->bytes;
    c.urgent = !copy;
    if (copy) {
      c.owned.assign(static_cast<const char*>(r->buf) + c.offset, c.len);
    } else {
      c.payload = static_cast<const char*>(r->buf) + c.offset;
      c.req = r;
    }
    p->tx.add(std::move(c));
  }
  if (copy) complete(r, Status::ok());
  pump(p);
}

void Transport::pump(Peer* p) {
  if (failed()) return;
  // Flushing may drain a held path, which pumps again: run that as another round here.
  if (p->pumping) {
    p->repump = true;
    return;
  }
  p->pumping = true;
  do {
    p->repump = false;
    pumpOnce(p);
  } while (p->repump && !failed());
  p->pumping = false;
}

void Transport::pumpOnce(Peer* p) {
  const int64_t now = mp::nowNs();
  Socket* touched[8];
  size_t nt = 0;
  bool many = false;
  auto emit = [&](int path, mp::Chunk& c) {
    Socket* s = p->paths[path]->sock.get();
    FrameHeader h;
    h.type = c.type;
    // A copied chunk (its request completed already) is acknowledged lazily: with the next
    // frame back, or at the next tick. Once half of what the path may have out (its window,
    // less while it is unmeasured) waits for acknowledgements it asks for one at once: else a
    // one-way stream of such chunks fills it and stalls until the tick.
    const bool lazy = !c.urgent && p->tx.outstanding(path) < p->tx.limit(path, now) / 2;
    h.flags = lazy ? kFlagLazyAck : 0;
    h.len = c.len;
    h.tag = c.tag;
    h.offset = c.offset;
    h.total = c.total;
    h.fid = c.fid;
    s->enqueue(h, c.payload);
    if (s->queuedBytes() >= kHoldBytes) p->tx.hold(path, true);
    mp::PathCounters::bump(p->paths[path]->ctr.chunksSent, 1);
    if (c.copyPath == path) {  // a straggler's second copy: counted as re-sent by its path
      p->paths[c.path]->ctr.retransmits.fetch_add(1, std::memory_order_relaxed);
    }
    if (std::find(touched, touched + nt, s) == touched + nt) {
      if (nt < 8) {
        touched[nt++] = s;
      } else {
        many = true;
      }
    }
  };
  p->tx.schedule(now, emit);
  // A copy only for a chunk whose flow is stuck in its kernel, not one that is merely slow:
  // copies of a slow flow's chunks on its siblings (an ECMP fabric's shared uplink) take the
  // bandwidth the transfer needs.
  auto stalled = [&](int k) {
    Socket* s = p->paths[k]->sock.get();
    return s == nullptr || s->kernelStalled(stragglerNs_, now);
  };
  p->tx.resendStragglers(now, stragglerNs_, stalled, emit);
  if (many) {
    for (auto& path : p->paths) {
      if (failed()) return;
      if (path->sock && path->sock->alive() && path->sock->queuedBytes() != 0) path->sock->flush();
    }
    return;
  }
  for (size_t i = 0; i < nt && !failed(); ++i) touched[i]->flush();
}

void Transport::onDrained(Peer* p, int path) {
  p->tx.hold(path, false);
  if (p->tx.waiting()) pump(p);
}

void Transport::onData(Peer* p, const FrameHeader& h, char** dest, NetRequest** req) {
  auto it = p->postedRecvs.find(h.tag);
  if (it != p->postedRecvs.end()) {
    NetRequest* r = it->second;
    if (h.total != r->bytes) {
      return fail(sizeMismatch(peerName(p->rank), h.tag, r->bytes, h.total, false), true);
    }
    *dest = static_cast<char*>(r->buf) + h.offset;
    *req = r;
    return;
  }
  auto [u, fresh] = p->unexpected.try_emplace(h.tag);
  if (fresh) {
    if (h.total > eagerBytes()) {
      p->unexpected.erase(u);
      return fail(remoteError(fmt::format("{} sent {} bytes (tag {:#x}) that were not asked for",
                                          peerName(p->rank), h.total, h.tag)),
                  true);
    }
    if (unexpectedBytes_ + h.total > kMaxUnexpectedBytes) {
      p->unexpected.erase(u);
      return fail(remoteError(fmt::format("{} sent more than {} bytes of unexpected messages",
                                          peerName(p->rank), kMaxUnexpectedBytes)),
                  true);
    }
    unexpectedBytes_ += h.total;
    u->second.data.resize(h.total);
    reportEarly(ctx_, p->rank, h.tag);
  } else if (u->second.data.size() != h.total) {
    return fail(remoteError(fmt::format("{} sent inconsistent fragments (tag {:#x})",
                                        peerName(p->rank), h.tag)),
                true);
  }
  *dest = u->second.data.data() + h.offset;
  *req = nullptr;
}

void Transport::onDataDone(Peer* p, uint64_t tag, NetRequest* req, size_t len) {
  if (req != nullptr) {
    req->progress += len;
    if (req->progress == req->bytes) {
      p->postedRecvs.erase(tag);
      complete(req, Status::ok());
    }
    return;
  }
  auto u = p->unexpected.find(tag);
  if (u == p->unexpected.end()) return;
  u->second.got += len;
  if (u->second.got == u->second.data.size() && u->second.waiting != nullptr) {
    NetRequest* r = u->second.waiting;
    if (r->bytes > 0) std::memcpy(r->buf, u->second.data.data(), r->bytes);
    unexpectedBytes_ -= r->bytes;
    p->unexpected.erase(u);
    complete(r, Status::ok());
  }
}

void Transport::onRtr(Peer* p, const FrameHeader& h) {
  auto it = p->awaitingRtr.find(h.tag);
  if (it == p->awaitingRtr.end()) {
    p->rtrs[h.tag] = h.total;
    reportEarly(ctx_, p->rank, h.tag);
    return;
  }
  NetRequest* r = it->second;
  if (r->bytes != h.total) {
    // r stays queued so that fail() completes it with the error.
    return fail(sizeMismatch(peerName(p->rank), h.tag, r->bytes, h.total, true), true);
  }
  p->awaitingRtr.erase(it);
  sendData(p, r);
}

void Transport::onRts(Peer* p, const FrameHeader& h) {
  auto it = p->postedRecvs.find(h.tag);
  const int64_t waiting = it == p->postedRecvs.end() ? -1 : static_cast<int64_t>(it->second->bytes);
  switch (p->announced.arrived(h.tag, h.total, waiting)) {
    case mp::Announcements::Verdict::kMismatch:
      return fail(sizeMismatch(peerName(p->rank), h.tag, it->second->bytes, h.total, false), true);
    case mp::Announcements::Verdict::kEarly:
      return reportEarly(ctx_, p->rank, h.tag);
    case mp::Announcements::Verdict::kExpected:
      return;
  }
}

void Transport::onGracefulClose(Peer* p) {
  for (auto& path : p->paths) {
    if (path->sock && path->sock->alive()) return;
  }
  p->left = true;
  LOG_INFO(kNet, "{} left (its communicator was destroyed)", peerName(p->rank));
  if (!p->postedRecvs.empty() || !p->awaitingRtr.empty()) {
    fail(remoteError(fmt::format(
             "{} destroyed its communicator (or aborted it, idle) while this rank still waited "
             "for it (mismatched calls between ranks?)",
             peerName(p->rank))),
         true);
  }
}

void Transport::onPeerGone(Peer* p) {
  const std::string why = fmt::format(
      "{} closed the connection unexpectedly on every path and has refused connections for {} "
      "ms (BRAID_PEER_GONE_MS; {}): the process died or aborted, or destroyed its communicator "
      "while this host could not hear its goodbye",
      peerName(p->rank), (mp::nowNs() - p->refusedSinceNs) / 1'000'000, pathsTried(p));
  // (A message it had begun to send: a receive may wait for the rest, or come for it later.)
  const bool partial = std::any_of(p->unexpected.begin(), p->unexpected.end(), [](const auto& u) {
    return u.second.got != u.second.data.size();
  });
  if (!p->postedRecvs.empty() || !p->awaitingRtr.empty() || !p->tx.idle() || partial) {
    return fail(remoteError(why), true);
  }
  // Nothing waits for it (e.g. it left while this host was cut off): calls with it fail from
  // now on; the others go on.
  LOG_WARN(kNet, "{}", why);
  p->left = true;
  p->goneWhy = why;
  p->allDownSinceNs = 0;
  p->refusedSinceNs = 0;
  downSince_[p->rank].store(0, std::memory_order_relaxed);
}

void Transport::fail(const Status& reason, bool notifyPeers) {
  if (failed()) return;
  failed_ = reason;
  LOG_WARN(kNet, "communicator failed: {}", reason.message());
  // Record the error before waking anyone: a caller that sees its call fail must also see it
  // in braidCommGetAsyncError.
  if (ctx_.onFatal) ctx_.onFatal(reason);
  stopBackground();
  std::unordered_set<NetRequest*> reqs;
  FrameHeader abortHdr;
  abortHdr.type = static_cast<uint8_t>(FrameType::kAbort);
  std::string text = reason.message().substr(0, kMaxAbortText);
  abortHdr.len = static_cast<uint32_t>(text.size());
  for (Peer& p : peers_) {
    for (auto& [tag, r] : p.postedRecvs) reqs.insert(r);
    for (auto& [tag, r] : p.awaitingRtr) reqs.insert(r);
    for (auto& [tag, u] : p.unexpected) {
      if (u.waiting != nullptr) reqs.insert(u.waiting);
    }
    p.tx.clear([&](mp::Chunk& c) {
      if (c.req != nullptr) reqs.insert(c.req);
    });
    for (auto& path : p.paths) {
      if (!path->sock) continue;
      if (notifyPeers && !path->sock->frozen()) {
        path->sock->beginAbort(abortHdr, text);
      } else {
        path->sock->closeNow();
      }
    }
    p.postedRecvs.clear();
    p.awaitingRtr.clear();
    p.unexpected.clear();
    p.rtrs.clear();
    p.announced.clear();
  }
  unexpectedBytes_ = 0;
  for (NetRequest* r : reqs) complete(r, reason);
}

void Transport::abort(const Status& reason) {
  ctx_.reactor->post([this, reason] { fail(reason, true); });
}

Status Transport::close(Deadline deadline) {
  // First every chunk this rank sent is acknowledged (a send of a small message returned once
  // it was copied): paths that die meanwhile are made again by the probes and the chunks go
  // again, as during a call. Not for a peer that left (it said goodbye on every path).
  std::string unacked;  // what is still out when the wait ends (read in the loop)
  Status failure;       // a failure meanwhile dropped it
  const bool answered = ctx_.reactor->waitUntil(ackWaitEnd(deadline), [&] {
    if (failed()) {
      failure = failed_;  // (the list stays)
      return true;
    }
    unacked.clear();
    for (const Peer& p : peers_) {
      if (p.left || p.tx.idle()) continue;
      unacked += fmt::format("{}{} chunk(s) to {}", unacked.empty() ? "" : ", ", p.tx.unacked(),
                             peerName(p.rank));
    }
    return unacked.empty();
  });
  if (!answered) unacked = "(unknown: the progress loop did not answer)";
  stopBackground();
  ctx_.reactor->post([this] {
    if (failed()) return;
    for (Peer& p : peers_) {
      FrameHeader h;
      h.type = static_cast<uint8_t>(FrameType::kBye);
      for (auto& path : p.paths) {
        Socket* s = path->sock.get();
        if (s == nullptr || !s->alive() || s->frozen()) continue;
        appendAck(&p, s);
        s->enqueue(h, nullptr);
        s->flush();
      }
    }
  });
  // Then (bounded: a path black-holed since keeps its bytes) until every queued byte reached
  // the kernel and, for a short while, the peers' goodbyes: closing with their goodbye unread
  // would reset the connection under them.
  const Deadline drainBy = tailEnd(deadline, 2000);
  Deadline byeBy = std::min(drainBy, deadlineIn(200));
  // After a failure, the ABORT frames still being written tell the peers why (a rank that
  // destroys its failed communicator at once otherwise leaves them an EOF, and they blame it).
  Deadline abortBy = tailEnd(deadline, 1000);
  ctx_.reactor->waitUntil(drainBy, [&] {
    if (failed()) {
      // And until the peer closed its end too (it does once it read the ABORT): closing with
      // its data unread would reset the connection, and a reset can discard the ABORT frame
      // still unread at the peer, which then blames this rank.
      for (Peer& p : peers_) {
        for (auto& path : p.paths) {
          Socket* s = path->sock.get();
          if (s != nullptr && s->alive() && !s->frozen() && Clock::now() < abortBy) return false;
        }
      }
      return true;
    }
    for (Peer& p : peers_) {
      for (auto& path : p.paths) {
        Socket* s = path->sock.get();
        if (s == nullptr || !s->alive() || s->frozen()) continue;
        if (s->queuedBytes() != 0 || (!s->saidBye() && Clock::now() < byeBy)) return false;
      }
    }
    return true;
  });
  if (unacked.empty()) return Status::ok();
  return unackedAtClose(unacked, ctx_.cfg->timeoutMs, failure);
}

}  // namespace tcp

std::unique_ptr<TransportFactory> makeTcpTransportFactory() {
  return std::make_unique<ListeningFactory<tcp::Transport>>("tcp", /*nodeLocal=*/false);
}

}  // namespace braid

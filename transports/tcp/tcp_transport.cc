// TCP transport: connection setup, matching of tagged sends and receives, failure handling.
#include "transports/tcp/tcp_transport.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>
#include <unordered_set>

#include "src/core/log.h"
#include "src/topology/netif.h"

namespace braid {
namespace tcp {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

Transport::Transport(const TransportContext& ctx) : ctx_(ctx) {}

Transport::~Transport() = default;

Status Transport::listen() {
  NetIf nif;
  Config cfg = *ctx_.cfg;
  std::string rail;
  const int localRank = launcherLocalRank();
  BRAID_TRY(railInterface(cfg, localRank, &rail));
  if (!rail.empty()) cfg.socketIfname = "=" + rail;  // this rank's rail
  BRAID_TRY(chooseLocalAddress(cfg, nullptr, &nif));
  LOG_INFO(kNet, "tcp: listening on interface {} ({}){}", nif.name, nif.addr.toString(),
           rail.empty() ? "" : fmt::format(", the rail of local rank {}", localRank));
  return listenOn(nif.addr, 1024, &listener_, &bound_);
}

std::string Transport::localAddress() const { return bound_.toString(); }

std::string Transport::peerName(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(peerInfo_.size())) return fmt::format("rank {}", rank);
  return fmt::format("rank {} ({}, {})", rank, peerInfo_[rank].host, peerInfo_[rank].address);
}

std::string Transport::pathName(const Peer* p, const Socket* s) const {
  return fmt::format("tcp socket {} of {} to {}", s->index(), p->socks.size(),
                     peerInfo_[p->rank].address);
}

Status Transport::connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int me = ctx_.rank, n = ctx_.nranks;
  const int S = static_cast<int>(ctx_.cfg->tcpSocketsPerPeer);
  peerInfo_ = peers;
  peers_.resize(n);
  for (int r = 0; r < n; ++r) {
    peers_[r].rank = r;
    peers_[r].t = this;
    peers_[r].socks.resize(r == me || !peers[r].serve ? 0 : S);
  }
  std::vector<std::vector<Fd>> fds(n);
  for (auto& v : fds) v.resize(S);

  // Higher ranks connect to lower ones; accept concurrently so nobody waits on a chain.
  Status acceptStatus;
  std::vector<AcceptedConn> accepted;
  size_t expected = static_cast<size_t>(std::count_if(peers.begin() + me + 1, peers.end(),
                                                      [](const PeerInfo& p) { return p.serve; })) *
                    S;
  std::thread acceptor([&] {
    logSetThreadRank(me);
    auto admit = [&](const Hello& h) -> Status {
      if (h.kind != ConnKind::kData || h.commTag != ctx_.commTag || h.nranks != n || h.rank <= me ||
          h.rank >= n || !peers[h.rank].serve || h.socketIndex >= S) {
        return remoteError(
            fmt::format("unexpected data connection (rank {}, socket {})", h.rank, h.socketIndex));
      }
      for (const auto& a : accepted) {
        if (a.hello.rank == h.rank && a.hello.socketIndex == h.socketIndex) {
          return remoteError(fmt::format("duplicate connection from rank {}", h.rank));
        }
      }
      return Status::ok();
    };
    if (expected == 0) return;
    acceptStatus = acceptAuthenticated(
        listener_.get(), ctx_.secret, deadline, admit,
        [&](AcceptedConn&& c) {
          accepted.push_back(std::move(c));
          return accepted.size() == expected;
        },
        "data connections from higher ranks");
  });
  Status connectStatus;
  for (int r = 0; r < me && connectStatus.isOk(); ++r) {
    if (!peers[r].serve) continue;
    SockAddr addr;
    connectStatus = SockAddr::parse(peers[r].address, &addr);
    for (int s = 0; s < S && connectStatus.isOk(); ++s) {
      Fd fd;
      connectStatus = connectTo(addr, deadline, &fd, peerName(r));
      if (!connectStatus.isOk()) break;
      Hello h;
      h.kind = ConnKind::kData;
      h.socketIndex = static_cast<uint16_t>(s);
      h.rank = me;
      h.nranks = n;
      h.commTag = ctx_.commTag;
      connectStatus = connectorHandshake(fd.get(), ctx_.secret, h, deadline, peerName(r));
      fds[r][s] = std::move(fd);
    }
  }
  acceptor.join();
  listener_.reset();
  BRAID_TRY(connectStatus);
  if (!acceptStatus.isOk()) {
    std::string missing;
    for (int r = me + 1; r < n; ++r) {
      if (!peers[r].serve) continue;
      bool have = std::any_of(accepted.begin(), accepted.end(),
                              [&](const AcceptedConn& a) { return a.hello.rank == r; });
      if (!have) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    return Status(acceptStatus.code(), fmt::format("{}; no connection from rank(s) {}",
                                                   acceptStatus.message(), missing));
  }
  for (auto& a : accepted) fds[a.hello.rank][a.hello.socketIndex] = std::move(a.fd);
  for (int r = 0; r < n; ++r) {
    for (int s = 0; s < static_cast<int>(peers_[r].socks.size()); ++s) {
      BRAID_TRY(setNonBlocking(fds[r][s].get()));
      tuneSocket(fds[r][s].get(), static_cast<int>(ctx_.cfg->tcpBufferBytes));
      auto sock = std::make_unique<Socket>(&peers_[r], s, std::move(fds[r][s]));
      BRAID_TRY(ctx_.reactor->add(sock->fd(), EPOLLIN, sock.get()));
      peers_[r].socks[s] = std::move(sock);
    }
  }
  LOG_INFO(kNet, "tcp: connected to {} peers with {} sockets each",
           std::count_if(peers.begin(), peers.end(), [](const PeerInfo& p) { return p.serve; }), S);
  return Status::ok();
}

void Transport::post(NetRequest* r) {
  ctx_.reactor->runOrPost([this, r] { postInLoop(r); });
}

void Transport::complete(NetRequest* r, Status s) { completeRequest(r, std::move(s)); }

namespace {}  // namespace

void Transport::postInLoop(NetRequest* r) {
  if (failed()) return complete(r, failed_);
  Peer& p = peers_[r->peer];
  bool alive = std::any_of(p.socks.begin(), p.socks.end(), [](auto& s) { return s->alive(); });
  bool arrived = r->kind == NetRequest::Kind::kRecv && p.unexpected.count(r->tag) != 0;
  if (!alive && !arrived) {
    return complete(r, remoteError(fmt::format("{} has left (its communicator was destroyed)",
                                               peerName(p.rank))));
  }
  if (r->kind == NetRequest::Kind::kSend) {
    if (r->bytes <= eagerBytes()) return sendData(&p, r);
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
  p.postedRecvs[r->tag] = r;
  if (r->bytes > eagerBytes()) {
    FrameHeader h;
    h.type = static_cast<uint8_t>(FrameType::kRtr);
    h.tag = r->tag;
    h.total = r->bytes;
    sendControl(&p, h);
  }
}

void Transport::sendControl(Peer* p, FrameHeader h) {
  Socket* best = p->leastQueued();
  if (best == nullptr) return;
  best->enqueue(h, nullptr, nullptr);
  best->flush();
}

void Transport::sendData(Peer* p, NetRequest* r) {
  const size_t S = p->socks.size();
  constexpr size_t kMinFrag = 64 << 10, kMaxFrag = 1 << 20;
  size_t frag = std::clamp((r->bytes + S - 1) / S, kMinFrag, kMaxFrag);
  size_t nfrag = r->bytes == 0 ? 1 : (r->bytes + frag - 1) / frag;
  r->fragmentsLeft = nfrag;
  std::vector<Socket*> touched;
  for (size_t i = 0; i < nfrag; ++i) {
    Socket* best = p->leastQueued();
    if (best == nullptr) {
      // Every socket to the peer closed after its goodbye: it left while we still send.
      fail(remoteError(
               fmt::format("{} left while this rank was still sending to it", peerName(p->rank))),
           true);
      if (i == 0) complete(r, failed_);  // no fragment queued: fail() could not see r
      return;
    }
    FrameHeader h;
    h.type = static_cast<uint8_t>(FrameType::kData);
    h.tag = r->tag;
    h.offset = i * frag;
    h.len = static_cast<uint32_t>(std::min(frag, r->bytes - h.offset));
    h.total = r->bytes;
    best->enqueue(h, static_cast<const char*>(r->buf) + h.offset, r);
    if (std::find(touched.begin(), touched.end(), best) == touched.end()) touched.push_back(best);
  }
  for (Socket* s : touched) {
    if (failed()) return;
    s->flush();
  }
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

void Transport::onGracefulClose(Peer* p) {
  bool alive = std::any_of(p->socks.begin(), p->socks.end(), [](auto& s) { return s->alive(); });
  if (alive) return;
  LOG_INFO(kNet, "{} left (its communicator was destroyed)", peerName(p->rank));
  if (!p->postedRecvs.empty() || !p->awaitingRtr.empty()) {
    fail(remoteError(fmt::format("{} destroyed its communicator while this rank still waited "
                                 "for it (mismatched calls between ranks?)",
                                 peerName(p->rank))),
         true);
  }
}

void Transport::onSocketDown(Peer* p, Socket* s, const std::string& why) {
  if (failed()) return;
  fail(remoteError(fmt::format("{} closed the connection unexpectedly on {} ({}): the process "
                               "died, aborted, or the network failed",
                               peerName(p->rank), pathName(p, s), why)),
       true);
}

void Transport::fail(const Status& reason, bool notifyPeers) {
  if (failed()) return;
  failed_ = reason;
  LOG_WARN(kNet, "communicator failed: {}", reason.message());
  // Record the error before waking anyone: a caller that sees its call fail must also see it
  // in braidCommGetAsyncError.
  if (ctx_.onFatal) ctx_.onFatal(reason);
  std::unordered_set<NetRequest*> reqs;
  std::vector<NetRequest*> queued;
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
    for (auto& s : p.socks) {
      s->collectRequests(&queued);
      if (notifyPeers) {
        s->beginAbort(abortHdr, text);
      } else {
        s->closeNow();
      }
    }
    p.postedRecvs.clear();
    p.awaitingRtr.clear();
    p.unexpected.clear();
    p.rtrs.clear();
  }
  unexpectedBytes_ = 0;
  reqs.insert(queued.begin(), queued.end());
  for (NetRequest* r : reqs) complete(r, reason);
}

void Transport::abort(const Status& reason) {
  ctx_.reactor->post([this, reason] { fail(reason, true); });
}

void Transport::close(Deadline deadline) {
  ctx_.reactor->post([this] {
    if (failed()) return;
    for (Peer& p : peers_) {
      FrameHeader h;
      h.type = static_cast<uint8_t>(FrameType::kBye);
      for (auto& s : p.socks) {
        if (!s->alive()) continue;
        s->enqueue(h, nullptr, nullptr);
        s->flush();
      }
    }
  });
  // Wait (bounded) until every queued byte reached the kernel and, for a short while, for the
  // peers' goodbyes: closing with their goodbye unread would reset the connection under them.
  Deadline byeBy = std::min(deadline, deadlineIn(200));
  ctx_.reactor->waitUntil(deadline, [&] {
    for (Peer& p : peers_) {
      for (auto& s : p.socks) {
        if (s->queuedBytes() != 0 || (s->alive() && !s->saidBye() && Clock::now() < byeBy)) {
          return false;
        }
      }
    }
    return true;
  });
}

}  // namespace tcp

std::unique_ptr<TransportFactory> makeTcpTransportFactory() {
  return std::make_unique<ListeningFactory<tcp::Transport>>("tcp", /*nodeLocal=*/false);
}

}  // namespace braid

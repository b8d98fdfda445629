// The ib transport's data path: chunks into remote slots, credits, completions, path failure,
// and the side channel (goodbye, abort, path-down notices, peer death).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "src/core/log.h"
#include "transports/ib/ib_transport.h"

namespace braid::ib {
namespace {

constexpr uint64_t kRecvWrId = ~uint64_t{0};
constexpr size_t kMaxSideMessage = kMaxAbortText + 64;

}  // namespace

// ---- side channel ----

void Peer::onEvents(uint32_t) {
  char buf[4096];
  std::string down;  // why the connection ended, if it did
  for (;;) {
    ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n > 0) {
      sideIn.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    down = n == 0 ? "connection closed" : std::strerror(errno);
    break;
  }
  // Whole messages first: the reason of an abort arrives before the connection's end.
  while (sideIn.size() >= 5 && !closed) {
    uint32_t len = 0;
    std::memcpy(&len, sideIn.data() + 1, 4);
    if (len > kMaxSideMessage) {
      down = "malformed side-channel message";
      break;
    }
    if (sideIn.size() < 5 + len) break;
    std::string payload = sideIn.substr(5, len);
    auto type = static_cast<SideType>(sideIn[0]);
    sideIn.erase(0, 5 + len);
    t->onSideMessage(this, type, payload);
  }
  if (!down.empty()) t->onSideDown(this, down);
}

// Small messages on a connection that carries almost nothing: written at once (a bounded
// wait if the kernel buffer is full; they are hints, losing one costs a timeout at worst).
void Peer::sendSide(SideType type, const std::string& payload) {
  if (closed || !sock.valid()) return;
  std::string msg(5, '\0');
  msg[0] = static_cast<char>(type);
  uint32_t len = static_cast<uint32_t>(payload.size());
  std::memcpy(msg.data() + 1, &len, 4);
  msg += payload;
  (void)writeFull(sock.get(), msg.data(), msg.size(), deadlineIn(100), "side channel");
}

void Transport::onSideMessage(Peer* p, SideType type, const std::string& payload) {
  switch (type) {
    case SideType::kBye:
      p->byeSeen = true;
      LOG_INFO(kIb, "{} left (its communicator was destroyed)", peerName(p->rank));
      // Its last chunks completed at its end before it said goodbye: take their completions.
      for (auto& d : devices_) {
        while (pollCq(d.get())) {
        }
      }
      if (!p->postedRecvs.empty() || !p->awaitingRtr.empty()) {
        fail(remoteError(fmt::format(
            "{} destroyed its communicator (or aborted it, idle) while this rank still waited "
            "for it (mismatched calls between ranks?)",
            peerName(p->rank))));
      }
      return;
    case SideType::kAbort:
      fail(remoteError(fmt::format("{} aborted: {}", peerName(p->rank), payload)));
      return;
    case SideType::kPathDown: {
      uint32_t k = 0;
      if (payload.size() == 4) std::memcpy(&k, payload.data(), 4);
      if (k < p->paths.size()) pathDown(p, p->paths[k].get(), "the peer found it dead", false);
      return;
    }
    case SideType::kRepairOffer:
    case SideType::kRepairAnswer:
    case SideType::kRepairDone:
      return onRepair(p, type, payload);
  }
  fail(remoteError(fmt::format("{} sent a malformed side-channel message", peerName(p->rank))));
}

void Transport::onSideDown(Peer* p, const std::string& why) {
  if (p->closed) return;
  ctx_.reactor->remove(p->sock.get());
  p->sock.reset();
  p->closed = true;
  if (p->byeSeen || failed()) return;
  fail(
      remoteError(fmt::format("{} closed its connection unexpectedly ({}): the process died, "
                              "aborted, or was killed",
                              peerName(p->rank), why)));
}

// ---- posting ----

void Transport::post(NetRequest* r) {
  ctx_.reactor->runOrPost([this, r] { postInLoop(r); });
}

void Transport::postInLoop(NetRequest* r) {
  if (failed()) return complete(r, failed_);
  Peer* p =
      r->peer >= 0 && r->peer < static_cast<int>(peers_.size()) ? peers_[r->peer].get() : nullptr;
  if (p == nullptr) {
    return complete(r, internalError(fmt::format("ib: rank {} is not served by ib", r->peer)));
  }
  bool arrived = r->kind == NetRequest::Kind::kRecv && !p->unexpected.empty() &&
                 p->unexpected.count(r->tag) != 0;
  if ((p->byeSeen || p->closed) && !arrived) {
    return complete(r, remoteError(fmt::format("{} has left (its communicator was destroyed)",
                                               peerName(p->rank))));
  }
  const size_t eager = static_cast<size_t>(ctx_.cfg->eagerBytes);
  if (r->kind == NetRequest::Kind::kSend) {
    if (r->bytes <= eager) return sendData(p, r);
    // Every send above the eager limit tells the receiver its size (a receive posted at or
    // below the limit waits for data that would never come: it fails at once on a mismatch).
    p->tx.add(mp::announcement(static_cast<uint8_t>(FrameType::kRts), r->tag, r->bytes));
    auto it = p->rtrs.find(r->tag);
    if (it == p->rtrs.end()) {
      p->awaitingRtr[r->tag] = r;
      pump(p);
      return;
    }
    uint64_t want = it->second;
    p->rtrs.erase(it);
    if (want != r->bytes) {
      fail(sizeMismatch(peerName(p->rank), r->tag, r->bytes, want, true));
      return complete(r, failed_);
    }
    return sendData(p, r);
  }
  auto u = arrived ? p->unexpected.find(r->tag) : p->unexpected.end();
  if (u != p->unexpected.end()) {
    if (u->second.data.size() != r->bytes) {
      fail(sizeMismatch(peerName(p->rank), r->tag, r->bytes, u->second.data.size(), false));
      return complete(r, failed_);
    }
    if (u->second.got == r->bytes) {
      if (r->bytes > 0) std::memcpy(r->buf, u->second.data.data(), r->bytes);
      unexpectedBytes_ -= r->bytes;
      p->unexpected.erase(u);
      return complete(r, Status::ok());
    }
    u->second.waiting = r;
    return;
  }
  if (uint64_t total = 0; !p->announced.posted(r->tag, r->bytes, eager, &total)) {
    fail(sizeMismatch(peerName(p->rank), r->tag, r->bytes, total, false));
    return complete(r, failed_);
  }
  p->addPostedRecv(r);
  if (r->bytes > eager) {
    mp::Chunk c;
    c.type = static_cast<uint8_t>(FrameType::kRtr);
    c.tag = r->tag;
    c.total = r->bytes;
    std::vector<uint32_t> lkeys, rkeys;
    if (findKeys(r->buf, r->bytes, &lkeys, &rkeys)) {
      // A registered buffer: the sender may write into it directly.
      const uint64_t addr = reinterpret_cast<uint64_t>(r->buf);
      c.owned.assign(reinterpret_cast<const char*>(&addr), 8);
      for (auto& path : p->paths) {
        uint32_t key = rkeys[path->dev->index];
        c.owned.append(reinterpret_cast<const char*>(&key), 4);
      }
      c.len = static_cast<uint32_t>(c.owned.size());
    }
    p->tx.add(std::move(c));
    pump(p);
  }
}

void Transport::sendData(Peer* p, NetRequest* r) {
  size_t live = 0;
  for (auto& path : p->paths) live += path->dead ? 0 : 1;
  const size_t P = std::max<size_t>(1, live);
  // Zero-copy when the receiver sent its registered buffer and this one is registered too.
  bool zc = false;
  if (auto z = p->zcRtrs.empty() ? p->zcRtrs.end() : p->zcRtrs.find(r->tag); z != p->zcRtrs.end()) {
    std::vector<uint32_t> rkeys;
    zc = findKeys(r->buf, r->bytes, &z->second.lkeys, &rkeys);
    if (zc) p->zcSends[r->tag] = std::move(z->second);
    p->zcRtrs.erase(z);
  }
  // Small messages are copied and complete at once (not when a zero-copy send was set up: with
  // BRAID_EAGER_BYTES below kCopyBytes a registered one may be).
  const bool copy = r->bytes <= kCopyBytes && !zc;
  // Chunks small enough to spread the message over every path; a copied chunk fits a slot, a
  // zero-copy one (only its header takes a slot) may reach BRAID_PATH_CHUNK_BYTES.
  const size_t most =
      zc ? std::max(p->chunkMax, static_cast<size_t>(ctx_.cfg->pathChunkBytes)) : p->chunkMax;
  const size_t chunk =
      std::clamp((r->bytes + 2 * P - 1) / (2 * P), std::min<size_t>(64 << 10, most), most);
  const size_t nchunks = r->bytes == 0 ? 1 : (r->bytes + chunk - 1) / chunk;
  r->fragmentsLeft = nchunks;
  mp::Chunk* last = nullptr;
  for (size_t i = 0; i < nchunks; ++i) {
    mp::Chunk c;
    c.type = static_cast<uint8_t>(FrameType::kData);
    c.tag = r->tag;
    c.offset = i * chunk;
    c.len = static_cast<uint32_t>(std::min(chunk, r->bytes - c.offset));
    c.total = r->bytes;
    if (zc) {
      c.type = static_cast<uint8_t>(FrameType::kDataZc);
      c.payload = static_cast<const char*>(r->buf) + c.offset;
      c.req = r;
    } else if (copy) {
      c.owned.assign(static_cast<const char*>(r->buf) + c.offset, c.len);
    } else {
      c.payload = static_cast<const char*>(r->buf) + c.offset;
      c.req = r;
    }
    last = p->tx.add(std::move(c));
  }
  if (copy) complete(r, Status::ok());
  if (nchunks == 1 && copy && p->paths.size() == 1 && !failed()) {
    // A small message to a single-path peer: straight to the wire when the path can take it
    // now (what pump() would do, without its passes over paths and queue).
    Path* path = p->paths[0].get();
    if (!path->dead && !path->frozen && path->wire.empty() && path->canWrite() > 0 &&
        p->tx.sendAlone(last, mp::nowNs())) {
      path->wire.push_back(last);
      return drainWire(p, path);
    }
  }
  pump(p);
}

void Transport::pump(Peer* p) {
  if (failed()) return;
  if (p->tx.waiting()) {
    // Late binding: a path takes chunks only while it can write them at once; the others wait
    // in the sender's queue for whichever path frees a slot first (see mp::Sender::hold).
    for (auto& path : p->paths) {
      p->tx.hold(path->index, path->wire.size() >= path->canWrite());
    }
    p->tx.schedule(mp::nowNs(), [&](int k, mp::Chunk& c) {
      Path* path = p->paths[k].get();
      path->wire.push_back(&c);
      if (path->wire.size() >= path->canWrite()) p->tx.hold(k, true);
    });
  }
  for (auto& path : p->paths) {
    if (!path->wire.empty()) drainWire(p, path.get());
    if (failed()) return;
  }
}

// Writes the path's waiting chunks while the peer has free slots and the send queue room.
void Transport::drainWire(Peer* p, Path* path) {
  while (!path->wire.empty() && !path->dead && !path->frozen && path->canWrite() > 0) {
    if (!writeChunk(p, path, *path->wire.front())) {
      pathDown(p, path, fmt::format("posting a write failed: {}", std::strerror(errno)), true);
      return;
    }
    path->wire.pop_front();
  }
}

bool Transport::writeChunk(Peer* p, Path* path, const mp::Chunk& c) {
  const size_t slot = path->sendSeq % path->remoteSlots;
  char* dst = path->staging.base + slot * path->remoteSlotBytes;
  FrameHeader h;
  h.type = c.type;
  h.len = c.len;
  h.tag = c.tag;
  h.offset = c.offset;
  h.total = c.total;
  h.fid = c.fid;
  const bool credits = path->consumed != path->returned;
  if (credits) h.credit = kCreditImm | (static_cast<uint32_t>(path->consumed) & kSeqMask);
  std::memcpy(dst, &h, sizeof h);
  const bool zc = c.type == static_cast<uint8_t>(FrameType::kDataZc);
  const char* src = c.owned.empty() ? c.payload : c.owned.data();
  if (c.len > 0 && !zc) std::memcpy(dst + sizeof h, src, c.len);
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uint64_t>(dst);
  sge.length = static_cast<uint32_t>(sizeof h + (zc ? 0 : c.len));
  sge.lkey = path->staging.mr->lkey;
  // Zero-copy: the payload goes first by RDMA WRITE from the user's buffer into the receiver's;
  // the header follows on the same QP (RC keeps their order), so its arrival means the data's.
  ibv_sge dsge{};
  ibv_send_wr dwr{};
  if (zc) {
    const ZcTarget& z = p->zcSends.at(c.tag);
    dsge.addr = reinterpret_cast<uint64_t>(c.payload);
    dsge.length = c.len;
    dsge.lkey = z.lkeys[path->dev->index];
    dwr.wr_id = 0;
    dwr.opcode = IBV_WR_RDMA_WRITE;
    dwr.sg_list = &dsge;
    dwr.num_sge = 1;
    dwr.wr.rdma.remote_addr = z.addr + c.offset;
    dwr.wr.rdma.rkey = z.rkeys[path->index];
  }
  ibv_send_wr wr{}, *bad = nullptr;
  wr.wr_id = c.fid;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED | (sge.length <= path->maxInline ? IBV_SEND_INLINE : 0);
  wr.imm_data = htonl(static_cast<uint32_t>(path->sendSeq) & kSeqMask);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.wr.rdma.remote_addr = path->remoteRing + slot * path->remoteSlotBytes;
  wr.wr.rdma.rkey = path->remoteKey;
  if (zc) dwr.next = &wr;
  if (ibv_post_send(path->qp, zc ? &dwr : &wr, &bad) != 0) return false;
  ++path->sendSeq;
  if (credits) path->returned = path->consumed;
  path->inflight.push_back(c.fid);
  mp::PathCounters::bump(path->ctr.chunksSent, 1);
  mp::PathCounters::bump(path->ctr.bytesSent, c.len);
  if (faultsLeft_ > 0 && fault_.afterBytes != 0) {
    faultBytes_ += c.len;
    if (faultBytes_ >= fault_.afterBytes) {
      faultBytes_ = 0;
      ctx_.reactor->post([this] { injectFault(); });
    }
  }
  return true;
}

// Slots the peer may write again: returned in batches of half the ring (the peer is never
// starved: with all its slots used, at least that many are consumed here).
void Transport::returnCredits(Path* path, bool force) {
  const uint64_t pending = path->consumed - path->returned;
  if (pending == 0 || (!force && pending < std::max<size_t>(1, path->slots / 2))) return;
  if (path->dead || path->inflight.size() >= path->sqDepth) return;  // after a completion
  ibv_send_wr wr{}, *bad = nullptr;
  wr.wr_id = 0;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = htonl(kCreditImm | (static_cast<uint32_t>(path->consumed) & kSeqMask));
  wr.num_sge = 0;
  wr.wr.rdma.remote_addr = path->remoteRing;
  wr.wr.rdma.rkey = path->remoteKey;
  if (ibv_post_send(path->qp, &wr, &bad) != 0) return;  // the path is failing: found soon
  path->inflight.push_back(0);
  path->returned = path->consumed;
}

bool Transport::postRecvs(Path* path, size_t n) {
  // Receives carry no buffer (the data arrives by RDMA WRITE): a batch on the stack, posted as
  // one list, without an allocation per received chunk.
  ibv_recv_wr wrs[32];
  while (n > 0) {
    const size_t k = std::min(n, std::size(wrs));
    for (size_t i = 0; i < k; ++i) {
      wrs[i] = ibv_recv_wr{};
      wrs[i].wr_id = kRecvWrId;
      wrs[i].next = i + 1 < k ? &wrs[i + 1] : nullptr;
    }
    ibv_recv_wr* bad = nullptr;
    if (ibv_post_recv(path->qp, wrs, &bad) != 0) return false;
    n -= k;
  }
  return true;
}

// ---- completions ----

bool Transport::pollCq(Device* d) {
  ibv_wc wcs[32];
  int n = ibv_poll_cq(d->cq, 32, wcs);
  if (n <= 0) return false;
  for (int i = 0; i < n; ++i) {
    auto it = byQpn_.find(qpKey(d, wcs[i].qp_num));
    if (it == byQpn_.end()) continue;
    auto [p, path] = it->second;
    if (wcs[i].wr_id == kRecvWrId) {
      onRecvCompletion(p, path, wcs[i]);
    } else {
      onSendCompletion(p, path, wcs[i]);
    }
  }
  return true;
}

void Transport::onSendCompletion(Peer* p, Path* path, const ibv_wc& wc) {
  if (path->inflight.empty()) return;
  const uint64_t fid = path->inflight.front();
  path->inflight.pop_front();
  if (path->dead || failed()) return;
  if (wc.status != IBV_WC_SUCCESS) {
    return pathDown(p, path, fmt::format("a write failed: {}", ibv_wc_status_str(wc.status)), true);
  }
  if (fid != 0) {
    mp::Range r{fid, 1};
    p->tx.ack(path->index, 0, &r, 1, mp::nowNs(), [&](mp::Chunk& c) {
      if (c.req != nullptr && --c.req->fragmentsLeft == 0) {
        if (c.type == static_cast<uint8_t>(FrameType::kDataZc)) p->zcSends.erase(c.tag);
        complete(c.req, Status::ok());
      }
    });
  }
  if (failed()) return;
  returnCredits(path, false);
  drainWire(p, path);
  pump(p);
}

void Transport::onRecvCompletion(Peer* p, Path* path, const ibv_wc& wc) {
  // A write that completed was acknowledged to its sender, which will not send it again: it
  // is taken even on a path that is dead, being rebuilt or replaced, while its ring exists.
  if (failed() || path->ring.base == nullptr) return;
  if (wc.status != IBV_WC_SUCCESS) {
    return pathDown(p, path, fmt::format("a receive failed: {}", ibv_wc_status_str(wc.status)),
                    true);
  }
  if (wc.opcode != IBV_WC_RECV_RDMA_WITH_IMM) {
    return pathDown(p, path, "unexpected completion", true);
  }
  // The receives carry no buffer: they go back in batches (the queue has room for a batch
  // beyond every write that can be in flight), one call per kRecvBatch writes.
  if (++path->recvsOwed >= kRecvBatch) {
    if (!postRecvs(path, path->recvsOwed)) return pathDown(p, path, "receive queue error", true);
    path->recvsOwed = 0;
  }
  const uint32_t imm = ntohl(wc.imm_data);
  if (imm & kCreditImm) {
    takeCredits(path, imm);
    drainWire(p, path);
    return pump(p);
  }
  if ((imm & kSeqMask) != (static_cast<uint32_t>(path->recvSeq) & kSeqMask)) {
    // Not this path's next write (a stale packet of an earlier connection?): the data is not
    // trusted; the path goes and the peer re-sends its chunks elsewhere.
    return pathDown(p, path,
                    fmt::format("a write out of order (slot sequence {}, expected {})",
                                imm & kSeqMask, path->recvSeq & kSeqMask),
                    true);
  }
  const char* slot = path->ring.base + (path->recvSeq % path->slots) * path->slotBytes;
  FrameHeader h;
  std::memcpy(&h, slot, sizeof h);
  const bool zc = h.type == static_cast<uint8_t>(FrameType::kDataZc);
  if (wc.byte_len != sizeof h + (zc ? 0 : h.len) || (!zc && sizeof h + h.len > path->slotBytes) ||
      (h.type != static_cast<uint8_t>(FrameType::kData) &&
       h.type != static_cast<uint8_t>(FrameType::kRtr) &&
       h.type != static_cast<uint8_t>(FrameType::kRts) && !zc)) {
    return pathDown(
        p, path,
        fmt::format("a malformed chunk: {} bytes written into slot {} (sequence {}), "
                    "whose header says type {} and {} bytes",
                    wc.byte_len, path->recvSeq % path->slots, path->recvSeq, h.type, h.len),
        true);
  }
  ++path->recvSeq;
  const bool credited = (h.credit & kCreditImm) != 0 && takeCredits(path, h.credit);
  onChunk(p, path, h, slot + sizeof h);
  ++path->consumed;
  if (failed()) return;
  returnCredits(path, false);
  if (credited) {
    if (!path->wire.empty()) drainWire(p, path);
    if (p->tx.waiting()) pump(p);
  }
}

// The peer's count of slots consumed from our writes on this path (kCreditImm | count mod
// 2^31); true when it grew. Counts come in order (one QP), so a count never goes back.
bool Transport::takeCredits(Path* path, uint32_t count) {
  const uint64_t delta =
      ((count & kSeqMask) - static_cast<uint32_t>(path->peerConsumed)) & kSeqMask;
  path->peerConsumed += delta;
  return delta != 0;
}

void Transport::onChunk(Peer* p, Path* path, const FrameHeader& h, const char* payload) {
  int other = -1;
  // Chunks arrive whole, so a copy is never half-received elsewhere: kConflict cannot happen.
  if (p->rx.begin(h.fid, path->index, &other) != mp::Receiver::Verdict::kNew) return;
  p->rx.end(h.fid, path->index, false);
  mp::PathCounters::bump(path->ctr.chunksReceived, 1);
  mp::PathCounters::bump(path->ctr.bytesReceived, h.len);
  if (h.type == static_cast<uint8_t>(FrameType::kRtr)) return onRtr(p, h, payload);
  if (h.type == static_cast<uint8_t>(FrameType::kRts)) return onRts(p, h);
  if (h.type == static_cast<uint8_t>(FrameType::kDataZc)) {
    // The payload is already in the posted buffer (written before this header, same QP).
    auto it = p->postedRecvs.find(h.tag);
    if (it == p->postedRecvs.end() || it->second->bytes != h.total || h.offset > h.total ||
        h.len > h.total - h.offset) {
      return fail(remoteError(fmt::format("ib: {} wrote a chunk no receive asked for (tag {:#x})",
                                          peerName(p->rank), h.tag)));
    }
    NetRequest* r = it->second;
    r->progress += h.len;
    if (r->progress == r->bytes) {
      p->takePostedRecv(it);
      complete(r, Status::ok());
    }
    return;
  }
  onData(p, h, payload);
}

void Transport::onData(Peer* p, const FrameHeader& h, const char* payload) {
  if (h.offset > h.total || h.len > h.total - h.offset) {
    return fail(remoteError(fmt::format("ib: {} sent a chunk outside its message (tag {:#x})",
                                        peerName(p->rank), h.tag)));
  }
  auto it = p->postedRecvs.find(h.tag);
  if (it != p->postedRecvs.end()) {
    NetRequest* r = it->second;
    if (h.total != r->bytes)
      return fail(sizeMismatch(peerName(p->rank), h.tag, r->bytes, h.total, false));
    if (h.len > 0) std::memcpy(static_cast<char*>(r->buf) + h.offset, payload, h.len);
    r->progress += h.len;
    if (r->progress == r->bytes) {
      p->takePostedRecv(it);
      complete(r, Status::ok());
    }
    return;
  }
  auto [u, fresh] = p->unexpected.try_emplace(h.tag);
  if (fresh) {
    if (h.total > static_cast<uint64_t>(ctx_.cfg->eagerBytes)) {
      p->unexpected.erase(u);
      return fail(remoteError(fmt::format("{} sent {} bytes (tag {:#x}) that were not asked for",
                                          peerName(p->rank), h.total, h.tag)));
    }
    if (unexpectedBytes_ + h.total > kMaxUnexpectedBytes) {
      p->unexpected.erase(u);
      return fail(remoteError(fmt::format("{} sent more than {} bytes of unexpected messages",
                                          peerName(p->rank), kMaxUnexpectedBytes)));
    }
    unexpectedBytes_ += h.total;
    u->second.data.resize(h.total);
    reportEarly(ctx_, p->rank, h.tag);
  } else if (u->second.data.size() != h.total) {
    return fail(remoteError(
        fmt::format("{} sent inconsistent fragments (tag {:#x})", peerName(p->rank), h.tag)));
  }
  if (h.len > 0) std::memcpy(u->second.data.data() + h.offset, payload, h.len);
  u->second.got += h.len;
  if (u->second.got == u->second.data.size() && u->second.waiting != nullptr) {
    NetRequest* r = u->second.waiting;
    if (r->bytes > 0) std::memcpy(r->buf, u->second.data.data(), r->bytes);
    unexpectedBytes_ -= r->bytes;
    p->unexpected.erase(u);
    complete(r, Status::ok());
  }
}

void Transport::onRtr(Peer* p, const FrameHeader& h, const char* payload) {
  if (h.len == 8 + 4 * p->paths.size()) {
    ZcTarget z;
    std::memcpy(&z.addr, payload, 8);
    z.rkeys.resize(p->paths.size());
    std::memcpy(z.rkeys.data(), payload + 8, 4 * p->paths.size());
    p->zcRtrs[h.tag] = std::move(z);
  }
  auto it = p->awaitingRtr.find(h.tag);
  if (it == p->awaitingRtr.end()) {
    p->rtrs[h.tag] = h.total;
    reportEarly(ctx_, p->rank, h.tag);
    return;
  }
  NetRequest* r = it->second;
  if (r->bytes != h.total)
    return fail(sizeMismatch(peerName(p->rank), h.tag, r->bytes, h.total, true));
  p->awaitingRtr.erase(it);
  sendData(p, r);
}

void Transport::onRts(Peer* p, const FrameHeader& h) {
  auto it = p->postedRecvs.find(h.tag);
  const int64_t waiting = it == p->postedRecvs.end() ? -1 : static_cast<int64_t>(it->second->bytes);
  switch (p->announced.arrived(h.tag, h.total, waiting)) {
    case mp::Announcements::Verdict::kMismatch:
      return fail(sizeMismatch(peerName(p->rank), h.tag, it->second->bytes, h.total, false));
    case mp::Announcements::Verdict::kEarly:
      return reportEarly(ctx_, p->rank, h.tag);
    case mp::Announcements::Verdict::kExpected:
      return;
  }
}

// ---- failure and close ----

void Transport::fail(const Status& reason) {
  if (failed()) return;
  failed_ = reason;
  LOG_WARN(kIb, "communicator failed: {}", reason.message());
  if (ctx_.onFatal) ctx_.onFatal(reason);
  std::unordered_set<NetRequest*> reqs;
  const std::string text = reason.message().substr(0, kMaxAbortText);
  for (Peer* p : active_) {
    for (auto& [tag, r] : p->postedRecvs) reqs.insert(r);
    for (auto& [tag, r] : p->awaitingRtr) reqs.insert(r);
    for (auto& [tag, u] : p->unexpected) {
      if (u.waiting != nullptr) reqs.insert(u.waiting);
    }
    for (auto& path : p->paths) path->wire.clear();
    p->tx.clear([&](mp::Chunk& c) {
      if (c.req != nullptr) reqs.insert(c.req);
    });
    p->postedRecvs.clear();
    p->awaitingRtr.clear();
    p->unexpected.clear();
    p->rtrs.clear();
    p->announced.clear();
    p->zcRtrs.clear();
    p->zcSends.clear();
    p->sendSide(SideType::kAbort, text);
  }
  unexpectedBytes_ = 0;
  for (NetRequest* r : reqs) complete(r, reason);
}

void Transport::abort(const Status& reason) {
  ctx_.reactor->post([this, reason] { fail(reason); });
}

// Goodbye once every chunk to the peer has completed (the goodbye travels on the side
// channel, not behind the data; a path that fails meanwhile is repaired and its chunks go
// again, as during a call), then a short wait for the peers' goodbyes.
Status Transport::close(Deadline deadline) {
  std::string unacked;  // what is still out when the wait ends (read in the loop)
  Status failure;       // a failure meanwhile dropped it
  const bool answered = ctx_.reactor->waitUntil(ackWaitEnd(deadline), [&] {
    if (failed()) {
      failure = failed_;  // (the list stays)
      return true;
    }
    unacked.clear();
    for (Peer* p : active_) {
      if (p->byeSeen || p->closed || p->tx.idle()) continue;
      unacked += fmt::format("{}{} chunk(s) to {}", unacked.empty() ? "" : ", ", p->tx.unacked(),
                             peerName(p->rank));
    }
    return unacked.empty();
  });
  if (!answered) unacked = "(unknown: the progress loop did not answer)";
  closing_ = true;
  ctx_.reactor->post([this] {
    if (failed()) return;
    for (Peer* p : active_) p->sendSide(SideType::kBye, {});
  });
  ctx_.reactor->waitUntil(tailEnd(deadline, 200), [&] {
    if (failed()) return true;
    return std::all_of(active_.begin(), active_.end(),
                       [](const Peer* p) { return p->byeSeen || p->closed; });
  });
  if (unacked.empty()) return Status::ok();
  return unackedAtClose(unacked, ctx_.cfg->timeoutMs, failure);
}

bool Transport::poll() {
  bool moved = false;
  for (auto& d : devices_) {
    for (int i = 0; i < 4 && pollCq(d.get()); ++i) moved = true;
  }
  return moved;
}

bool Transport::armSleep() {
  for (auto& d : devices_) {
    if (!d->armed) {
      if (ibv_req_notify_cq(d->cq, 0) != 0) return false;
      d->armed = true;
    }
    // Completions that came before the request raise no event: take them now.
    if (pollCq(d.get())) return false;
  }
  return true;
}

void Transport::disarm() {}

}  // namespace braid::ib

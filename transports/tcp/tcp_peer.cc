// Socket I/O of the TCP transport (one socket per path): framing, writev batching,
// incremental parsing, acknowledgements riding on outgoing frames.
#include <fmt/format.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

namespace {

// A connection the peer's kernel closed or reset: its process may be gone.
bool peerClosed(int err) { return err == ECONNRESET || err == EPIPE || err == ECONNREFUSED; }

// A socket address's port (IPv4 or IPv6), 0 if it has none.
uint16_t portOf(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

}  // namespace

Socket::Socket(Peer* peer, int path, Fd fd) : peer_(peer), path_(path), fd_(std::move(fd)) {
  sockaddr_storage local{}, remote{};
  socklen_t ll = sizeof local, rl = sizeof remote;
  if (fd_.valid() && getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local), &ll) == 0 &&
      getpeername(fd_.get(), reinterpret_cast<sockaddr*>(&remote), &rl) == 0) {
    connId_ = (uint32_t{portOf(local)} << 16) | portOf(remote);
  }
}

void Socket::enqueue(const FrameHeader& h, const void* payload, std::string owned) {
  OutFrame f;
  f.h = h;
  f.len = h.len;
  f.owned = std::move(owned);
  out_.push_back(std::move(f));
  out_.back().payload = static_cast<const char*>(payload);
  queued_ += sizeof(FrameHeader) + h.len;
}

void Socket::enqueueUrgent(const FrameHeader& h, std::string owned) {
  auto at = out_.begin();
  if (at != out_.end() && at->sent > 0) ++at;
  OutFrame f;
  f.h = h;
  f.len = h.len;
  f.owned = std::move(owned);
  out_.insert(at, std::move(f));
  queued_ += sizeof(FrameHeader) + h.len;
}

void Socket::updateInterest() {
  bool want = !out_.empty();
  if (want == wantOut_ || !fd_.valid() || frozen_) return;
  wantOut_ = want;
  peer_->t->ctx().reactor->modify(
      fd_.get(), static_cast<uint32_t>(EPOLLIN) | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u),
      this);
}

void Socket::flush() {
  if (frozen_) return;
  if (!aborting_ && fd_.valid()) peer_->t->appendAck(peer_, this);
  while (!out_.empty() && fd_.valid() && !frozen_) {
    iovec iov[64];
    int n = 0;
    for (auto it = out_.begin(); it != out_.end() && n < 62; ++it) {
      size_t s = it->sent;
      if (s < sizeof(FrameHeader)) {
        iov[n++] = {reinterpret_cast<char*>(&it->h) + s, sizeof(FrameHeader) - s};
        s = sizeof(FrameHeader);
      }
      size_t p = s - sizeof(FrameHeader);
      if (p < it->len) iov[n++] = {const_cast<char*>(it->data()) + p, it->len - p};
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n);
    ssize_t w = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      int err = errno;
      peer_->t->onPathDown(peer_, path_, fmt::format("write failed: {}", std::strerror(err)),
                           peerClosed(err));
      return;
    }
    size_t left = static_cast<size_t>(w);
    queued_ -= left;
    written_ += left;
    lastSendNs_ = mp::nowNs();
    while (left > 0) {
      OutFrame& f = out_.front();
      size_t need = sizeof(FrameHeader) + f.len - f.sent;
      if (left < need) {
        f.sent += left;
        break;
      }
      left -= need;
      out_.pop_front();
    }
    if (!aborting_) peer_->t->onBytesSent(peer_, path_, static_cast<size_t>(w));
  }
  if (aborting_ && out_.empty() && fd_.valid()) ::shutdown(fd_.get(), SHUT_WR);
  updateInterest();
  if (!aborting_ && fd_.valid() && queued_ < Transport::kHoldBytes && peer_->tx.held(path_) &&
      peer_->paths[path_]->sock.get() == this) {
    peer_->t->onDrained(peer_, path_);
  }
}

void Socket::abandonFrame(uint64_t fid) {
  if (!inPayload_ || in_.fid != fid || static_cast<FrameType>(in_.type) != FrameType::kData) return;
  inDest_ = nullptr;
  inReq_ = nullptr;
  inNew_ = false;
}

void Socket::detachFront() {
  OutFrame& f = out_.front();
  if (f.sent == 0 || !f.owned.empty()) return;
  std::string rest;
  size_t s = f.sent;
  if (s < sizeof(FrameHeader)) {
    rest.append(reinterpret_cast<const char*>(&f.h) + s, sizeof(FrameHeader) - s);
    s = sizeof(FrameHeader);
  }
  rest.append(f.data() + (s - sizeof(FrameHeader)), f.len - (s - sizeof(FrameHeader)));
  // What is left goes out raw: the header counts as sent, the rest is the "payload".
  f.sent = sizeof(FrameHeader);
  f.len = rest.size();
  f.owned = std::move(rest);
  f.payload = f.owned.data();
}

void Socket::forget(uint64_t fid) {
  for (auto it = out_.begin(); it != out_.end(); ++it) {
    if (it->h.fid != fid || it->h.type != static_cast<uint8_t>(FrameType::kData)) continue;
    if (it == out_.begin() && it->sent > 0) {
      detachFront();
    } else if (it->owned.empty()) {
      queued_ -= sizeof(FrameHeader) + it->len;
      out_.erase(it);
    }
    return;
  }
}

void Socket::beginAbort(const FrameHeader& abortHdr, const std::string& text) {
  if (!fd_.valid() || aborting_) return;
  aborting_ = true;
  std::deque<OutFrame> keep;
  if (!out_.empty() && out_.front().sent > 0) {
    // Copy what is left of the frame on the wire: the user's buffer may go away now.
    detachFront();
    keep.push_back(std::move(out_.front()));
  }
  out_.swap(keep);
  queued_ = out_.empty() ? 0 : out_.front().len;
  enqueue(abortHdr, nullptr, text);
  flush();
}

void Socket::freeze() {
  if (!fd_.valid() || frozen_) return;
  frozen_ = true;
  peer_->t->ctx().reactor->modify(fd_.get(), 0, this);
}

void Socket::closeNow() { Fd gone = release(); }

Fd Socket::release() {
  if (!fd_.valid()) return Fd();
  peer_->t->ctx().reactor->remove(fd_.get());
  out_.clear();
  queued_ = 0;
  return Fd(fd_.release());
}

void Socket::onEvents(uint32_t events) {
  if (!fd_.valid() || frozen_) return;
  if (events & EPOLLIN) readSome();
  if (!fd_.valid() || frozen_) return;
  if (events & EPOLLOUT) flush();
  if (!fd_.valid() || frozen_) return;
  if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN) && aborting_) {
    closeNow();
    return;
  }
  if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    peer_->t->onPathDown(peer_, path_,
                         fmt::format("socket error: {}", err ? std::strerror(err) : "hangup"),
                         err == 0 || peerClosed(err));
  }
}

bool Socket::onHeader() {
  Transport* t = peer_->t;
  inDest_ = nullptr;
  inReq_ = nullptr;
  inNew_ = false;
  auto malformed = [&] {
    t->fail(remoteError(fmt::format("{} sent a malformed frame (type {}, length {})",
                                    t->peerName(peer_->rank), in_.type, in_.len)),
            true);
    return false;
  };
  switch (static_cast<FrameType>(in_.type)) {
    case FrameType::kData:
      if (in_.offset > in_.total || in_.len > in_.total - in_.offset || in_.fid == 0) {
        t->fail(remoteError(fmt::format("{} sent a malformed data frame (offset {} + {} > {})",
                                        t->peerName(peer_->rank), in_.offset, in_.len, in_.total)),
                true);
        return false;
      }
      inNew_ = t->acceptChunk(peer_, path_, in_);
      if (!fd_.valid()) return false;
      if (inNew_) t->onData(peer_, in_, &inDest_, &inReq_);
      if (t->failed()) return false;
      break;
    case FrameType::kRtr:
    case FrameType::kRts:
      if (in_.len != 0 || in_.fid == 0) return malformed();
      if (t->acceptChunk(peer_, path_, in_)) {
        t->chunkArrived(peer_, path_, in_);
        if (static_cast<FrameType>(in_.type) == FrameType::kRtr) {
          t->onRtr(peer_, in_);
        } else {
          t->onRts(peer_, in_);
        }
      }
      return fd_.valid() && !t->failed();
    case FrameType::kAck:
      if (in_.len % 16 != 0 || in_.len > kMaxAckRanges * 16) return malformed();
      inText_.assign(in_.len, '\0');
      break;
    case FrameType::kAbort:
      if (in_.len > kMaxAbortText) return malformed();
      inText_.assign(in_.len, '\0');
      break;
    case FrameType::kPathDown:
    case FrameType::kPathUp:
    case FrameType::kRehash:
      if (in_.len != 0) return malformed();
      if (static_cast<FrameType>(in_.type) == FrameType::kPathDown) {
        t->onPathDownNotice(peer_, in_.tag, in_.offset);
      } else if (static_cast<FrameType>(in_.type) == FrameType::kPathUp) {
        t->onPathUpNotice(peer_, in_.tag);
      } else {
        t->onRehashRequest(peer_, in_.tag);
      }
      return fd_.valid() && !t->failed();
    case FrameType::kBye:
      if (in_.len != 0) return malformed();
      byeReceived_ = true;
      t->appendAck(peer_, this);  // what it sent before leaving is acknowledged before we go
      flush();
      return fd_.valid();
    default:
      return malformed();
  }
  inLeft_ = in_.len;
  inPayload_ = true;
  if (inLeft_ == 0) onPayloadDone();
  return fd_.valid() && !t->failed();
}

void Socket::onPayloadDone() {
  inPayload_ = false;
  inHdrGot_ = 0;
  Transport* t = peer_->t;
  switch (static_cast<FrameType>(in_.type)) {
    case FrameType::kAbort:
      t->fail(remoteError(fmt::format("{} failed: {}", t->peerName(peer_->rank), inText_)), true);
      return;
    case FrameType::kAck:
      t->onAck(peer_, path_, in_.tag, inText_);
      return;
    default:
      break;
  }
  if (!inNew_) return;  // a duplicate: its payload went nowhere
  t->chunkArrived(peer_, path_, in_);
  t->onDataDone(peer_, in_.tag, inReq_, in_.len);
}

void Socket::readSome() {
  if (aborting_) {
    char sink[65536];
    while (fd_.valid()) {
      ssize_t r = ::recv(fd_.get(), sink, sizeof sink, 0);
      if (r > 0) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (r < 0 && errno == EINTR) continue;
      closeNow();
    }
    return;
  }
  for (int rounds = 0; rounds < 64 && fd_.valid() && !aborting_ && !frozen_; ++rounds) {
    if (!consumeBuffered()) return;
    // Large payload remainders go straight to their destination; everything else (headers,
    // small payloads, what follows them) is read in bulk into the staging buffer, so a small
    // message costs one recv.
    bool direct = inPayload_ && inDest_ != nullptr && inLeft_ >= kDirectReadBytes;
    if (rbuf_.empty()) rbuf_.resize(kStagingBytes);
    char* dst = direct ? inDest_ + (in_.len - inLeft_) : rbuf_.data();
    size_t want = direct ? inLeft_ : rbuf_.size();
    ssize_t r = ::recv(fd_.get(), dst, want, 0);
    if (r == 0) {
      if (byeReceived_ && !inPayload_ && inHdrGot_ == 0) {
        closeNow();
        peer_->t->onGracefulClose(peer_);
      } else {
        peer_->t->onPathDown(peer_, path_, "connection closed by the peer", true);
      }
      return;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      int err = errno;
      if (byeReceived_ && !inPayload_ && inHdrGot_ == 0) {
        closeNow();  // a reset after goodbye: the peer closed with our goodbye unread
        peer_->t->onGracefulClose(peer_);
      } else {
        peer_->t->onPathDown(peer_, path_, fmt::format("read failed: {}", std::strerror(err)),
                             peerClosed(err));
      }
      return;
    }
    size_t got = static_cast<size_t>(r);
    lastRecvNs_ = mp::nowNs();
    heard_ = true;
    mp::PathCounters::bump(peer_->paths[path_]->ctr.bytesReceived, got);
    if (direct) {
      inLeft_ -= got;
      if (inLeft_ == 0) onPayloadDone();
    } else {
      rbufPos_ = 0;
      rbufEnd_ = got;
    }
    // A short read drained the socket: epoll says when more comes (saves an EAGAIN recv).
    if (got < want) {
      if (!consumeBuffered()) return;
      break;
    }
  }
  // Chunks that need a prompt acknowledgement (large messages wait for it) get it now.
  if (fd_.valid() && !aborting_ && !frozen_ && peer_->rx.ackUrgent(path_)) flush();
}

// Parses what the staging buffer holds; false when the socket failed or closed meanwhile.
bool Socket::consumeBuffered() {
  while (rbufPos_ < rbufEnd_) {
    if (!fd_.valid() || aborting_ || frozen_) return false;
    size_t avail = rbufEnd_ - rbufPos_;
    const char* src = rbuf_.data() + rbufPos_;
    if (!inPayload_) {
      size_t n = std::min(avail, sizeof(FrameHeader) - inHdrGot_);
      std::memcpy(reinterpret_cast<char*>(&in_) + inHdrGot_, src, n);
      rbufPos_ += n;
      inHdrGot_ += n;
      if (inHdrGot_ == sizeof(FrameHeader)) {
        inHdrGot_ = 0;
        if (!onHeader()) return false;
      }
      continue;
    }
    size_t n = std::min(avail, inLeft_);
    size_t at = in_.len - inLeft_;
    if (inDest_ != nullptr) {
      std::memcpy(inDest_ + at, src, n);
    } else if (in_.type == static_cast<uint8_t>(FrameType::kAbort) ||
               in_.type == static_cast<uint8_t>(FrameType::kAck)) {
      std::memcpy(inText_.data() + at, src, n);
    }  // else: a payload nobody wants (a duplicate chunk) is skipped
    rbufPos_ += n;
    inLeft_ -= n;
    if (inLeft_ == 0) onPayloadDone();
  }
  return fd_.valid() && !aborting_ && !frozen_;
}

bool Socket::kernelAcked(uint64_t* acked, bool* empty) const {
  int outq = 0;
  if (!fd_.valid() || ioctl(fd_.get(), SIOCOUTQ, &outq) != 0) return false;
  *acked = written_ - std::min<uint64_t>(written_, static_cast<uint64_t>(outq));
  *empty = outq == 0;
  return true;
}

bool Socket::kernelProgress() {
  uint64_t acked = 0;
  bool empty = false;
  if (!kernelAcked(&acked, &empty)) return false;
  const bool moved = acked > kernelAcked_ || empty;
  kernelAcked_ = acked;
  return moved;
}

int64_t Socket::kernelQuietMs() const {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (!fd_.valid() || getsockopt(fd_.get(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -1;
  return ti.tcpi_last_data_recv;
}

bool Socket::kernelStalled(int64_t ageNs, int64_t nowNs) {
  if (!fd_.valid() || frozen_) return true;
  if (nowNs - stallCheckNs_ < kStallCheckNs) return stalledLast_;  // asked again at once
  stallCheckNs_ = nowNs;
  // Acknowledged bytes, not the time of the last ACK (TCP_INFO's last_ack_recv): duplicate
  // ACKs of a loss recovery and the ACK field of the peer's own data keep arriving while the
  // flow moves nothing.
  uint64_t acked = 0;
  bool empty = false;
  if (!kernelAcked(&acked, &empty)) return stalledLast_ = true;
  if (empty || acked != stallAcked_) {
    stallAcked_ = acked;
    stallSinceNs_ = nowNs;
    return stalledLast_ = false;
  }
  return stalledLast_ = nowNs - stallSinceNs_ >= ageNs;
}

}  // namespace braid::tcp

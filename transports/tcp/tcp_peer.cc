// Socket I/O of the TCP transport: framing, writev batching, incremental parsing.
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

void Socket::enqueue(const FrameHeader& h, const void* payload, NetRequest* req,
                     std::string owned) {
  OutFrame f;
  f.h = h;
  f.len = h.len;
  f.req = req;
  f.owned = std::move(owned);
  f.payload = f.owned.empty() ? static_cast<const char*>(payload) : nullptr;
  out_.push_back(std::move(f));
  if (!out_.back().owned.empty()) out_.back().payload = out_.back().owned.data();
  queued_ += sizeof(FrameHeader) + h.len;
}

void Socket::updateInterest() {
  bool want = !out_.empty();
  if (want == wantOut_ || !fd_.valid()) return;
  wantOut_ = want;
  peer_->t->ctx().reactor->modify(
      fd_.get(), static_cast<uint32_t>(EPOLLIN) | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u),
      this);
}

void Socket::flush() {
  while (!out_.empty() && fd_.valid()) {
    iovec iov[64];
    int n = 0;
    for (auto it = out_.begin(); it != out_.end() && n < 62; ++it) {
      size_t s = it->sent;
      if (s < sizeof(FrameHeader)) {
        iov[n++] = {reinterpret_cast<char*>(&it->h) + s, sizeof(FrameHeader) - s};
        s = sizeof(FrameHeader);
      }
      size_t p = s - sizeof(FrameHeader);
      if (p < it->len) iov[n++] = {const_cast<char*>(it->payload) + p, it->len - p};
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n);
    ssize_t w = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      peer_->t->onSocketDown(peer_, this, fmt::format("write failed: {}", std::strerror(errno)));
      return;
    }
    size_t left = static_cast<size_t>(w);
    queued_ -= left;
    while (left > 0) {
      OutFrame& f = out_.front();
      size_t need = sizeof(FrameHeader) + f.len - f.sent;
      if (left < need) {
        f.sent += left;
        break;
      }
      left -= need;
      NetRequest* r = f.req;
      out_.pop_front();
      if (r != nullptr && --r->fragmentsLeft == 0) peer_->t->complete(r, Status::ok());
    }
  }
  if (aborting_ && out_.empty() && fd_.valid()) ::shutdown(fd_.get(), SHUT_WR);
  updateInterest();
}

void Socket::beginAbort(const FrameHeader& abortHdr, const std::string& text) {
  if (!fd_.valid() || aborting_) return;
  aborting_ = true;
  std::deque<OutFrame> keep;
  if (!out_.empty() && out_.front().sent > 0) {
    // Copy what is left of the frame on the wire: the user's buffer may go away now.
    OutFrame& f = out_.front();
    std::string rest;
    size_t s = f.sent;
    if (s < sizeof(FrameHeader)) {
      rest.append(reinterpret_cast<const char*>(&f.h) + s, sizeof(FrameHeader) - s);
      s = sizeof(FrameHeader);
    }
    rest.append(f.payload + (s - sizeof(FrameHeader)), f.len - (s - sizeof(FrameHeader)));
    OutFrame raw;
    raw.sent = sizeof(FrameHeader);  // header already "sent": only the raw bytes follow
    raw.len = rest.size();
    raw.owned = std::move(rest);
    raw.payload = raw.owned.data();
    keep.push_back(std::move(raw));
  }
  out_.swap(keep);
  queued_ = out_.empty() ? 0 : out_.front().len;
  if (!out_.empty()) out_.front().payload = out_.front().owned.data();
  enqueue(abortHdr, nullptr, nullptr, text);
  flush();
}

void Socket::collectRequests(std::vector<NetRequest*>* out) const {
  for (const auto& f : out_) {
    if (f.req != nullptr) out->push_back(f.req);
  }
}

void Socket::closeNow() {
  if (!fd_.valid()) return;
  peer_->t->ctx().reactor->remove(fd_.get());
  fd_.reset();
  out_.clear();
  queued_ = 0;
}

void Socket::onEvents(uint32_t events) {
  if (!fd_.valid()) return;
  if (events & EPOLLIN) readSome();
  if (!fd_.valid()) return;
  if (events & EPOLLOUT) flush();
  if (!fd_.valid()) return;
  if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN) && aborting_) {
    closeNow();
    return;
  }
  if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    peer_->t->onSocketDown(peer_, this,
                           fmt::format("socket error: {}", err ? std::strerror(err) : "hangup"));
  }
}

bool Socket::onHeader() {
  Transport* t = peer_->t;
  switch (static_cast<FrameType>(in_.type)) {
    case FrameType::kData: {
      if (in_.offset > in_.total || in_.len > in_.total - in_.offset) {
        t->fail(remoteError(fmt::format("{} sent a malformed data frame (offset {} + {} > {})",
                                        t->peerName(peer_->rank), in_.offset, in_.len, in_.total)),
                true);
        return false;
      }
      t->onData(peer_, in_, &inDest_, &inReq_);
      if (t->failed()) return false;
      inLeft_ = in_.len;
      break;
    }
    case FrameType::kRtr:
      if (in_.len != 0) break;  // falls to the malformed check below
      t->onRtr(peer_, in_);
      return !t->failed();
    case FrameType::kAbort:
      if (in_.len > kMaxAbortText) break;
      inDest_ = nullptr;
      inReq_ = nullptr;
      inText_.assign(in_.len, '\0');
      inLeft_ = in_.len;
      break;
    case FrameType::kBye:
      if (in_.len != 0) break;
      byeReceived_ = true;
      return true;
    default:
      break;
  }
  if (in_.type == static_cast<uint8_t>(FrameType::kData) ||
      (in_.type == static_cast<uint8_t>(FrameType::kAbort) && in_.len <= kMaxAbortText)) {
    inPayload_ = true;
    if (inLeft_ == 0) onPayloadDone();
    return fd_.valid() && !t->failed();
  }
  t->fail(remoteError(fmt::format("{} sent a malformed frame (type {}, length {})",
                                  t->peerName(peer_->rank), in_.type, in_.len)),
          true);
  return false;
}

void Socket::onPayloadDone() {
  inPayload_ = false;
  inHdrGot_ = 0;
  Transport* t = peer_->t;
  if (in_.type == static_cast<uint8_t>(FrameType::kAbort)) {
    t->fail(remoteError(fmt::format("{} failed: {}", t->peerName(peer_->rank), inText_)), true);
    return;
  }
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
  for (int rounds = 0; rounds < 64 && fd_.valid() && !aborting_; ++rounds) {
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
      if (byeReceived_ && !inPayload_ && inHdrGot_ == 0 && out_.empty()) {
        closeNow();
        peer_->t->onGracefulClose(peer_);
      } else {
        peer_->t->onSocketDown(peer_, this, "connection closed by the peer");
      }
      return;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      if (byeReceived_ && !inPayload_ && inHdrGot_ == 0 && out_.empty()) {
        closeNow();  // a reset after goodbye: the peer closed with our goodbye unread
        peer_->t->onGracefulClose(peer_);
      } else {
        peer_->t->onSocketDown(peer_, this, fmt::format("read failed: {}", std::strerror(errno)));
      }
      return;
    }
    size_t got = static_cast<size_t>(r);
    if (direct) {
      inLeft_ -= got;
      if (inLeft_ == 0) onPayloadDone();
    } else {
      rbufPos_ = 0;
      rbufEnd_ = got;
    }
    // A short read drained the socket: epoll says when more comes (saves an EAGAIN recv).
    if (got < want) {
      consumeBuffered();
      return;
    }
  }
}

// Parses what the staging buffer holds; false when the socket failed or closed meanwhile.
bool Socket::consumeBuffered() {
  while (rbufPos_ < rbufEnd_) {
    if (!fd_.valid() || aborting_) return false;
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
    } else if (in_.type == static_cast<uint8_t>(FrameType::kAbort)) {
      std::memcpy(inText_.data() + at, src, n);
    }  // else: a payload nobody wants any more is skipped
    rbufPos_ += n;
    inLeft_ -= n;
    if (inLeft_ == 0) onPayloadDone();
  }
  return fd_.valid() && !aborting_;
}

}  // namespace braid::tcp

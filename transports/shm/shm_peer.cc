// Shared-memory transport: the rings of one peer pair (frames in, frames out, CMA copies) and
// its doorbell socket.
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transports/shm/shm_transport.h"

namespace braid::shm {
namespace {

uint64_t frameBytes(size_t payload) { return (sizeof(Frame) + payload + kLine - 1) & ~(kLine - 1); }

}  // namespace

Peer::~Peer() {
  if (map != nullptr) munmap(map, mapBytes);
}

size_t Peer::outFree() {
  if (cap - (outHead - outTailSeen) < cap / 2) {
    outTailSeen = outCtl().tail.load(std::memory_order_seq_cst);
  }
  return cap - (outHead - outTailSeen);
}

void Peer::put(const Frame& f, const void* payload, size_t len) {
  uint64_t at = outHead & (cap - 1);
  std::memcpy(outData + at, &f, sizeof f);  // frames start on a line: a header never wraps
  if (len > 0) {
    uint64_t p = (at + sizeof f) & (cap - 1);
    size_t first = std::min<size_t>(len, cap - p);
    std::memcpy(outData + p, payload, first);
    if (first < len) std::memcpy(outData, static_cast<const char*>(payload) + first, len - first);
  }
  outHead += frameBytes(len);
  // seq_cst, not release: with the sleep flags (notify, armSleep) this is Dekker's pattern,
  // which needs store-load order (and ThreadSanitizer does not model fences).
  outCtl().head.store(outHead, std::memory_order_seq_cst);
}

bool Peer::tryPut(const Frame& f, const void* payload, size_t len) {
  if (!out.empty() || outFree() < frameBytes(len)) return false;
  put(f, payload, len);
  notify();
  return true;
}

void Peer::sendControl(const Frame& f) {
  if (!tryPut(f, nullptr, 0)) out.push_back(OutItem{f, nullptr, nullptr, 0});
}

void Peer::copyOut(void* dst, uint64_t pos, size_t len) const {
  if (len == 0) return;
  uint64_t at = pos & (cap - 1);
  size_t first = std::min<size_t>(len, cap - at);
  std::memcpy(dst, inData + at, first);
  if (first < len) std::memcpy(static_cast<char*>(dst) + first, inData, len - first);
}

size_t Peer::frontNeeds() const {
  const OutItem& it = out.front();
  if (it.f.type != static_cast<uint8_t>(FrameType::kData)) return frameBytes(it.f.len);
  return frameBytes(std::min(it.req->bytes - it.offset, kMinDataFrame));
}

bool Peer::flushOut() {
  bool wrote = false;
  while (!out.empty() && !t->failed()) {
    OutItem& it = out.front();
    if (outFree() < frontNeeds()) break;
    NetRequest* done = nullptr;
    if (it.f.type == static_cast<uint8_t>(FrameType::kData)) {
      const size_t total = it.req->bytes;
      while (it.offset < total) {
        size_t room = outFree() & ~(kLine - 1);
        size_t left = total - it.offset;
        if (room < frameBytes(std::min(left, kMinDataFrame))) break;
        size_t len = std::min({left, kMaxDataFrame, room - sizeof(Frame)});
        Frame f = it.f;
        f.len = static_cast<uint32_t>(len);
        f.a = it.offset;
        put(f, it.payload + it.offset, len);
        it.offset += len;
        wrote = true;
        notify();  // the receiver copies this frame out while the next one is written
      }
      if (it.offset < total) break;
      done = it.req;
    } else {
      put(it.f, it.payload, it.f.len);
      wrote = true;
      done = it.req;
    }
    out.pop_front();
    if (done != nullptr) t->complete(done, Status::ok());
  }
  if (wrote) notify();
  return wrote;
}

bool Peer::consumeIn() {
  uint64_t head = inCtl().head.load(std::memory_order_acquire);
  if (head == inTail) return false;
  int frames = 0;
  while (inTail != head && frames < 64 && !t->failed()) {
    Frame f;
    std::memcpy(&f, inData + (inTail & (cap - 1)), sizeof f);
    if (frameBytes(f.len) > head - inTail) {
      t->fail(remoteError(fmt::format("{} wrote a malformed frame (type {}, length {})",
                                      t->peerName(rank), f.type, f.len)));
      return true;
    }
    t->onFrame(this, f, inTail + sizeof f);
    inTail += frameBytes(f.len);
    inCtl().tail.store(inTail, std::memory_order_seq_cst);  // see put()
    ++frames;
    if (frames % 8 == 0) notify();  // a producer waiting for room goes on
  }
  notify();
  return true;
}

bool Peer::runCma() {
  if (cma.empty() || t->failed()) return false;
  CmaJob& job = cma.front();
  NetRequest* r = job.req;
  size_t n = std::min(kCmaSliceBytes, r->bytes - job.done);
  iovec local{static_cast<char*>(r->buf) + job.done, n};
  iovec remote{reinterpret_cast<void*>(job.remote + job.done), n};
  ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (got < 0) {
    if (errno == EINTR) return true;
    t->fail(
        remoteError(fmt::format("reading a message of {} bytes from {} (process_vm_readv) "
                                "failed: {}",
                                r->bytes, t->peerName(rank), std::strerror(errno))));
    return true;
  }
  job.done += static_cast<size_t>(got);
  if (job.done < r->bytes && got > 0) return true;
  if (job.done < r->bytes) {
    t->fail(remoteError(
        fmt::format("reading a message from {}: its memory ended early", t->peerName(rank))));
    return true;
  }
  cma.pop_front();
  Frame fin;
  fin.type = static_cast<uint8_t>(FrameType::kFin);
  fin.tag = r->tag;
  fin.a = r->bytes;
  sendControl(fin);
  t->complete(r, Status::ok());
  return true;
}

void Peer::notify() {
  // After a seq_cst store of head or tail: the peer either sees it before it sleeps, or armed
  // its flag first and this load sees the flag.
  SideCtl& other = theirs();
  if (other.sleeping.load(std::memory_order_seq_cst) != 0 && other.sleeping.exchange(0) != 0) {
    doorbell();
  }
}

void Peer::doorbell() {
  if (!sock.valid()) return;
  char b = 1;
  // A full socket already holds unread doorbells; a dead peer shows up as EOF on our side.
  ssize_t r = ::send(sock.get(), &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)r;
}

bool Peer::hasWork() {
  if (inCtl().head.load(std::memory_order_seq_cst) != inTail) return true;
  if (!cma.empty()) return true;
  if (out.empty()) return false;
  // A fresh look at the tail (outFree may use an old one): room freed before we armed must
  // be seen here, as the consumer's doorbell check may have missed our flag.
  outTailSeen = outCtl().tail.load(std::memory_order_seq_cst);
  return outFree() >= frontNeeds();
}

void Peer::onEvents(uint32_t) {
  char buf[256];
  std::string why;
  for (;;) {
    ssize_t r = ::recv(sock.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) continue;  // doorbells: the rings are polled after every dispatch
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    why = r == 0 ? "end of stream" : std::strerror(errno);
    break;
  }
  // The peer is gone. Frames it wrote before (a goodbye, an abort reason) still count.
  while (!t->failed() && consumeIn()) {
  }
  t->onSocketDown(this, why);
}

}  // namespace braid::shm

// Shared-memory transport: connection setup (authenticated Unix socket, segment passed as a
// memfd, CMA probe), matching of tagged sends and receives, failure and goodbye.
#include "transports/shm/shm_transport.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <thread>
#include <unordered_set>

#include "src/bootstrap/auth.h"
#include "src/core/log.h"

namespace braid {
namespace shm {
namespace {

constexpr size_t kPage = 4096;

size_t boxesOffset() { return (sizeof(SegmentLayout) + kLine - 1) & ~(kLine - 1); }
size_t dataOffset(size_t fastBytes) {
  // The boxes, a line per side (its done, worked and stopped words), a line for the claims.
  size_t boxes = fastBytes == 0 ? 0 : 4 * fastBoxStride(fastBytes) + 3 * kLine;
  return (boxesOffset() + boxes + kPage - 1) & ~(kPage - 1);
}

sockaddr_un abstractAddr(const std::string& name, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), std::min(name.size(), sizeof a.sun_path - 1));
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

Status connectUnix(const std::string& name, Deadline deadline, const std::string& who, Fd* out) {
  if (name.empty() || name.size() > 100) {
    return remoteError(fmt::format("{} sent a malformed shm address", who));
  }
  for (;;) {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return systemError(fmt::format("socket(AF_UNIX): {}", std::strerror(errno)));
    socklen_t len;
    sockaddr_un a = abstractAddr(name, &len);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), len) == 0) {
      *out = std::move(fd);
      return Status::ok();
    }
    int e = errno;
    // The name holds the listener's pid (Transport::open): a process that is gone explains a
    // refused connection better than another host or namespace would.
    int pid = 0;
    if (e == ECONNREFUSED && std::sscanf(name.c_str(), "braid-shm-%d-", &pid) == 1 && pid > 0 &&
        ::kill(pid, 0) != 0 && errno == ESRCH) {
      return remoteError(fmt::format(
          "shm: cannot reach {} at its local socket ({}): its process (pid {}) has exited", who,
          std::strerror(e), pid));
    }
    if (e != EAGAIN && e != EINTR) {
      return remoteError(fmt::format(
          "shm: cannot reach {} at its local socket ({}): is it on this host and in this "
          "network namespace? (BRAID_TRANSPORTS=tcp avoids shared memory)",
          who, std::strerror(e)));
    }
    if (Clock::now() >= deadline) {
      return timeoutError(fmt::format("shm: connecting to {} timed out", who));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// One byte ('S') carrying one file descriptor (SCM_RIGHTS).
struct FdMessage {
  char byte = 'S';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  FdMessage() {
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

Status sendFd(int sock, int fd, Deadline deadline, const std::string& who) {
  FdMessage msg;
  msghdr& m = msg.m;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    if (::sendmsg(sock, &m, MSG_NOSIGNAL) == 1) return Status::ok();
    if (errno != EINTR && errno != EAGAIN) {
      return remoteError(
          fmt::format("shm: passing the segment to {}: {}", who, std::strerror(errno)));
    }
    if (Clock::now() >= deadline) return timeoutError(fmt::format("shm: {} timed out", who));
  }
}

Status recvFd(int sock, Deadline deadline, const std::string& who, Fd* out) {
  pollfd p{sock, POLLIN, 0};
  for (;;) {
    int n = ::poll(&p, 1, msUntil(deadline));
    if (n > 0) break;
    if (n < 0 && errno != EINTR) return systemError(fmt::format("poll: {}", std::strerror(errno)));
    if (n == 0) return timeoutError(fmt::format("shm: {} never sent its segment", who));
  }
  FdMessage msg;
  msg.byte = 0;
  msghdr& m = msg.m;
  ssize_t r = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  if (r < 0) {
    return systemError(fmt::format("shm: receiving {}'s segment: {}", who, std::strerror(errno)));
  }
  if (r == 1 && (m.msg_flags & MSG_CTRUNC) != 0) {
    // The kernel dropped the descriptor the peer passed: this process has no room for it.
    return systemError(fmt::format(
        "shm: the segment {} passed could not be received: this process is at its open-file "
        "limit (raise ulimit -n, RLIMIT_NOFILE)",
        who));
  }
  cmsghdr* c = r == 1 ? CMSG_FIRSTHDR(&m) : nullptr;
  if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
      c->cmsg_len != CMSG_LEN(sizeof(int)) || msg.byte != 'S') {
    return remoteError(fmt::format("shm: {} did not pass a segment", who));
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  out->reset(fd);
  return Status::ok();
}

// Whether this process may read `pid`'s memory at `addr`, which holds kMagic.
bool probeCma(int pid, uint64_t addr) {
  uint64_t v = 0;
  iovec local{&v, sizeof v};
  iovec remote{reinterpret_cast<void*>(addr), sizeof v};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == sizeof v && v == kMagic;
}

}  // namespace

size_t segmentBytes(size_t ringBytes, size_t fastBytes) {
  return dataOffset(fastBytes) + 2 * ringBytes;
}

Transport::Transport(const TransportContext& ctx) : ctx_(ctx) {}

Transport::~Transport() {
  if (!active_.empty()) ctx_.reactor->removePoller(this);
}

Status Transport::listen() {
  uint8_t rnd[8];
  BRAID_TRY(randomBytes(rnd, sizeof rnd));
  sockName_ = fmt::format("braid-shm-{}-{}", getpid(), toHex(rnd, sizeof rnd));
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  socklen_t len;
  sockaddr_un a = abstractAddr(sockName_, &len);
  if (!listener_.valid() || ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      ::listen(listener_.get(), 1024) != 0) {
    return systemError(fmt::format("shm: local socket {}: {}", sockName_, std::strerror(errno)));
  }
  return Status::ok();
}

std::string Transport::peerName(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(info_.size())) return fmt::format("rank {}", rank);
  const Peer* p = rank < static_cast<int>(peers_.size()) ? peers_[rank].get() : nullptr;
  return fmt::format("rank {} ({}, shm pid {})", rank, info_[rank].host, p ? p->pid : 0);
}

// Maps the pair's segment: the creator (the higher rank) makes it and passes it over the
// socket; the other side checks it. Each side then tries to read the other's memory (CMA).
Status Transport::setupPeer(Peer* p, Fd sock, bool creator, Deadline deadline) {
  const std::string who = peerName(p->rank);
  ucred cred{};
  socklen_t credLen = sizeof cred;
  if (getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &credLen) != 0) {
    return systemError(fmt::format("shm: SO_PEERCRED: {}", std::strerror(errno)));
  }
  p->pid = cred.pid;
  Fd seg;
  size_t bytes = 0;
  const int lo = std::min(ctx_.rank, p->rank), hi = std::max(ctx_.rank, p->rank);
  if (creator) {
    const size_t ring = static_cast<size_t>(ctx_.cfg->shmRingBytes);
    bytes = segmentBytes(ring, static_cast<size_t>(ctx_.cfg->shmFastBytes));
    seg.reset(memfd_create("braid-shm", MFD_CLOEXEC));
    if (!seg.valid() || ftruncate(seg.get(), static_cast<off_t>(bytes)) != 0) {
      return systemError(
          fmt::format("shm: a segment of {} bytes for {}: {}", bytes, who, std::strerror(errno)));
    }
  } else {
    BRAID_TRY(recvFd(sock.get(), deadline, who, &seg));
    struct stat st {};
    if (fstat(seg.get(), &st) != 0 || st.st_size < static_cast<off_t>(dataOffset(0)) ||
        st.st_size > static_cast<off_t>(segmentBytes(size_t{1} << 30, kMaxFastBytes))) {
      return remoteError(fmt::format("shm: {} passed a segment of the wrong size", who));
    }
    bytes = static_cast<size_t>(st.st_size);
  }
  // Populated now: the rings' pages are then not faulted in one by one, on both sides, by the
  // first megabytes of messages (about 140 calls of an 8 KiB allreduce ran 20 times slower
  // than the ones after them).
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, seg.get(), 0);
  if (m == MAP_FAILED) {
    return systemError(
        fmt::format("shm: mapping {} bytes shared with {}: {}", bytes, who, std::strerror(errno)));
  }
  p->map = static_cast<char*>(m);
  p->mapBytes = bytes;
  p->seg = reinterpret_cast<SegmentLayout*>(p->map);
  if (creator) {
    new (p->seg) SegmentLayout();
    p->seg->hdr.ringBytes = static_cast<uint64_t>(ctx_.cfg->shmRingBytes);
    p->seg->hdr.ranks[0] = lo;
    p->seg->hdr.ranks[1] = hi;
    p->seg->hdr.commTag = ctx_.commTag;
    p->seg->hdr.fastBytes = static_cast<uint64_t>(ctx_.cfg->shmFastBytes);
    p->seg->hdr.magic = kMagic;
  } else {
    const SegmentHeader& h = p->seg->hdr;
    if (h.magic != kMagic || h.ranks[0] != lo || h.ranks[1] != hi || h.commTag != ctx_.commTag ||
        h.ringBytes < 65536 || (h.ringBytes & (h.ringBytes - 1)) != 0 ||
        h.fastBytes > kMaxFastBytes || segmentBytes(h.ringBytes, h.fastBytes) != bytes) {
      return remoteError(fmt::format("shm: {} passed a segment that is not this pair's", who));
    }
    // Both ranks must pick the fast boxes for the same calls.
    if (h.fastBytes != static_cast<uint64_t>(ctx_.cfg->shmFastBytes)) {
      return invalidUsage(fmt::format(
          "BRAID_SHM_FAST_BYTES differs between ranks: {} uses {}, this rank {} (every rank "
          "of a job must use the same value)",
          who, h.fastBytes, ctx_.cfg->shmFastBytes));
    }
  }
  p->cap = p->seg->hdr.ringBytes;
  const size_t fastBytes = p->seg->hdr.fastBytes, data = dataOffset(fastBytes);
  p->outData = p->map + data + p->side * p->cap;
  p->inData = p->map + data + (1 - p->side) * p->cap;
  if (fastBytes > 0) {
    auto box = [&](int side, int parity) {
      return reinterpret_cast<FastBox*>(p->map + boxesOffset() +
                                        (2 * side + parity) * fastBoxStride(fastBytes));
    };
    for (int j = 0; j < 2; ++j) {
      p->fast.out[j] = box(p->side, j);
      p->fast.in[j] = box(1 - p->side, j);
    }
    // After the boxes, a line per side: the last call that side finished, the last whose
    // direct-allreduce chunks it finished, the last it stopped short; then the chunk claims.
    char* lines = p->map + boxesOffset() + 4 * fastBoxStride(fastBytes);
    auto word = [&](int side, size_t at) {
      return reinterpret_cast<std::atomic<uint32_t>*>(lines + side * kLine + at);
    };
    p->fast.doneOut = word(p->side, 0);
    p->fast.doneIn = word(1 - p->side, 0);
    auto word64 = [&](int side, size_t at) {
      return reinterpret_cast<std::atomic<uint64_t>*>(lines + side * kLine + at);
    };
    p->fast.workedOut = word64(p->side, 8);
    p->fast.workedIn = word64(1 - p->side, 8);
    p->fast.stoppedOut = word64(p->side, 16);
    p->fast.stoppedIn = word64(1 - p->side, 16);
    p->fast.claim = reinterpret_cast<std::atomic<uint64_t>*>(lines + 2 * kLine);
    p->fast.peerPid = p->pid;
  }
  p->mine().base.store(reinterpret_cast<uint64_t>(p->map), std::memory_order_release);
  char ack = 'A';
  if (creator) {
    BRAID_TRY(sendFd(sock.get(), seg.get(), deadline, who));
    BRAID_TRY(readFull(sock.get(), &ack, 1, deadline, who));  // the peer mapped it
  }
  bool cma = ctx_.cfg->shmCma != 0 && probeCma(p->pid, p->theirs().base.load());
  p->mine().canReadPeer.store(cma ? 1 : 0, std::memory_order_release);
  // Each side hears that the other stored its probe's result before it goes on: from then on
  // both read the same two flags (the direct allreduce depends on both, and both ranks must
  // make the same choice).
  BRAID_TRY(writeFull(sock.get(), &ack, 1, deadline, who));
  if (!creator) BRAID_TRY(readFull(sock.get(), &ack, 1, deadline, who));
  LOG_DEBUG(kShm, "shm: {} connected ({} KiB rings, {} copy for large messages)", who, p->cap >> 10,
            cma ? "single (CMA)" : "ring");
  p->sock = std::move(sock);
  return Status::ok();
}

Status Transport::connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int me = ctx_.rank, n = ctx_.nranks;
  info_ = peers;
  peers_.clear();
  peers_.resize(n);
  for (int r = 0; r < n; ++r) {
    if (r == me || !peers[r].serve) continue;
    peers_[r] = std::make_unique<Peer>();
    peers_[r]->rank = r;
    peers_[r]->side = me < r ? 0 : 1;
    peers_[r]->t = this;
  }
  // Higher ranks connect to lower ones (and create the pair's segment).
  std::vector<bool> wanted(n);
  for (int r = 0; r < n; ++r) wanted[r] = peers_[r] != nullptr;
  Status s = connectPairs(
      listener_.get(), ctx_.secret, ctx_.commTag, me, n, wanted, deadline,
      [&](int r, Fd* fd) { return connectUnix(peers[r].address, deadline, peerName(r), fd); },
      [&](int r, Fd fd, bool dialed) {
        return setupPeer(peers_[r].get(), std::move(fd), dialed, deadline);
      },
      [&](int r) { return peerName(r); }, "shm");
  listener_.reset();
  BRAID_TRY(s);
  for (auto& p : peers_) {
    if (!p) continue;
    BRAID_TRY(setNonBlocking(p->sock.get()));
    BRAID_TRY(ctx_.reactor->add(p->sock.get(), EPOLLIN, p.get()));
    active_.push_back(p.get());
  }
  if (!active_.empty()) ctx_.reactor->addPoller(this);
  LOG_INFO(kShm, "shm: connected to {} peers", active_.size());
  return Status::ok();
}

bool Transport::fastLink(int rank, FastLink* link, size_t* capacity) const {
  const Peer* p =
      rank >= 0 && rank < static_cast<int>(peers_.size()) ? peers_[rank].get() : nullptr;
  if (p == nullptr || p->fast.out[0] == nullptr) return false;
  *link = p->fast;
  link->left = &p->left;
  // Settled on both sides before either finished connecting (setupPeer); a side with
  // BRAID_SHM_CMA=0 stored 0.
  link->direct = p->seg->side[p->side].canReadPeer.load(std::memory_order_acquire) != 0 &&
                 p->seg->side[1 - p->side].canReadPeer.load(std::memory_order_acquire) != 0;
  *capacity = p->seg->hdr.fastBytes;
  return true;
}

void Transport::post(NetRequest* r) {
  ctx_.reactor->runOrPost([this, r] { postInLoop(r); });
}

void Transport::complete(NetRequest* r, Status s) { completeRequest(r, std::move(s)); }

void Transport::control(Peer* p, FrameType type, uint64_t tag, uint64_t a, uint64_t b) {
  Frame f;
  f.type = static_cast<uint8_t>(type);
  f.tag = tag;
  f.a = a;
  f.b = b;
  p->sendControl(f);
}

void Transport::postInLoop(NetRequest* r) {
  if (failed()) return complete(r, failed_);
  Peer* p =
      r->peer >= 0 && r->peer < static_cast<int>(peers_.size()) ? peers_[r->peer].get() : nullptr;
  if (p == nullptr) {
    return complete(r, internalError(fmt::format("shm does not serve rank {}", r->peer)));
  }
  const bool recv = r->kind == NetRequest::Kind::kRecv;
  if (p->byeSeen && !(recv && p->unexpected.count(r->tag) != 0)) {
    return complete(r, remoteError(fmt::format("{} has left (its communicator was destroyed)",
                                               peerName(p->rank))));
  }
  if (!p->goneWhy.empty() && !(recv && p->unexpected.count(r->tag) != 0)) {
    return complete(r, remoteError(p->goneWhy));
  }
  if (!recv) {
    if (r->bytes <= static_cast<size_t>(ctx_.cfg->eagerBytes)) {
      Frame f;
      f.tag = r->tag;
      f.a = r->bytes;
      f.type = static_cast<uint8_t>(FrameType::kEager);
      f.len = static_cast<uint32_t>(r->bytes);
      if (p->tryPut(f, r->buf, r->bytes)) return complete(r, Status::ok());
      p->out.push_back(OutItem{f, static_cast<const char*>(r->buf), r, 0});
      return;
    }
    // The receiver reads the message itself when it can (single copy), else asks for it.
    bool cma = cmaEnabled() && p->theirs().canReadPeer.load(std::memory_order_acquire) != 0;
    (cma ? p->awaitingFin : p->awaitingCts).put(r->tag, r);
    return control(p, FrameType::kRts, r->tag, r->bytes,
                   cma ? reinterpret_cast<uint64_t>(r->buf) : 0);
  }
  if (auto u = p->unexpected.find(r->tag); u != p->unexpected.end()) {
    if (u->second.size() != r->bytes) {
      fail(sizeMismatch(peerName(p->rank), r->tag, r->bytes, u->second.size(), false));
      return complete(r, failed_);
    }
    if (r->bytes > 0) std::memcpy(r->buf, u->second.data(), r->bytes);
    unexpectedBytes_ -= r->bytes;
    p->unexpected.erase(u);
    return complete(r, Status::ok());
  }
  if (auto a = p->rts.find(r->tag); a != p->rts.end()) {
    Pending announced = a->second;
    p->rts.erase(a);
    return startRecv(p, r, announced);
  }
  p->postedRecvs.put(r->tag, r);
}

void Transport::startRecv(Peer* p, NetRequest* r, const Pending& announced) {
  if (announced.total != r->bytes) {
    fail(sizeMismatch(peerName(p->rank), r->tag, r->bytes, announced.total, false));
    return complete(r, failed_);
  }
  if (announced.addr != 0) {
    p->cma.push_back(CmaJob{r, announced.addr, 0});
    return;
  }
  p->postedRecvs.put(r->tag, r);
  control(p, FrameType::kCts, r->tag, r->bytes);
}

void Transport::onFrame(Peer* p, const Frame& f, uint64_t pos) {
  auto bad = [&](const char* what) {
    fail(remoteError(fmt::format("{} broke the shm protocol: {} (frame type {}, tag {:#x})",
                                 peerName(p->rank), what, f.type, f.tag)));
  };
  switch (static_cast<FrameType>(f.type)) {
    case FrameType::kEager: {
      if (f.a != f.len) return bad("eager length");
      if (NetRequest* r = p->postedRecvs.find(f.tag)) {
        if (r->bytes != f.len) {
          return fail(sizeMismatch(peerName(p->rank), f.tag, r->bytes, f.len, false));
        }
        p->postedRecvs.take(f.tag);
        p->copyOut(r->buf, pos, f.len);
        return complete(r, Status::ok());
      }
      if (p->unexpected.count(f.tag) != 0) return bad("a tag sent twice");
      if (unexpectedBytes_ + f.len > kMaxUnexpectedBytes) {
        return fail(remoteError(fmt::format("{} sent more than {} bytes of unexpected messages",
                                            peerName(p->rank), kMaxUnexpectedBytes)));
      }
      unexpectedBytes_ += f.len;
      std::vector<char>& v = p->unexpected[f.tag];
      v.resize(f.len);
      p->copyOut(v.data(), pos, f.len);
      reportEarly(ctx_, p->rank, f.tag);
      return;
    }
    case FrameType::kRts: {
      if (f.b != 0 && !cmaEnabled()) return bad("a single-copy offer this rank did not make");
      NetRequest* r = p->postedRecvs.take(f.tag);
      if (r == nullptr) {
        if (!p->rts.emplace(f.tag, Pending{f.a, f.b}).second) return bad("a tag sent twice");
        reportEarly(ctx_, p->rank, f.tag);
        return;
      }
      return startRecv(p, r, Pending{f.a, f.b});
    }
    case FrameType::kCts: {
      NetRequest* r = p->awaitingCts.find(f.tag);
      if (r == nullptr) return bad("a CTS for no message");
      if (r->bytes != f.a) return fail(sizeMismatch(peerName(p->rank), f.tag, r->bytes, f.a, true));
      p->awaitingCts.take(f.tag);
      Frame d;
      d.type = static_cast<uint8_t>(FrameType::kData);
      d.tag = f.tag;
      d.b = r->bytes;
      p->out.push_back(OutItem{d, static_cast<const char*>(r->buf), r, 0});
      p->flushOut();
      return;
    }
    case FrameType::kData: {
      NetRequest* r = p->postedRecvs.find(f.tag);
      if (r == nullptr) return bad("data for no posted receive");
      if (f.b != r->bytes || f.a > r->bytes || f.len > r->bytes - f.a) return bad("data range");
      p->copyOut(static_cast<char*>(r->buf) + f.a, pos, f.len);
      r->progress += f.len;
      if (r->progress < r->bytes) return;
      p->postedRecvs.take(f.tag);
      return complete(r, Status::ok());
    }
    case FrameType::kFin: {
      NetRequest* r = p->awaitingFin.take(f.tag);
      if (r == nullptr) return bad("a FIN for no message");
      return complete(r, Status::ok());
    }
    case FrameType::kAbort: {
      std::string text(std::min<size_t>(f.len, kMaxAbortText), '\0');
      p->copyOut(text.data(), pos, text.size());
      return fail(remoteError(fmt::format("{} failed: {}", peerName(p->rank), text)));
    }
    case FrameType::kBye:
      p->byeSeen = true;
      p->left.store(true, std::memory_order_release);
      return onGracefulClose(p);
  }
  bad("unknown frame");
}

void Transport::onGracefulClose(Peer* p) {
  LOG_INFO(kShm, "{} left (its communicator was destroyed)", peerName(p->rank));
  if (p->awaited()) {
    fail(remoteError(fmt::format(
        "{} destroyed its communicator (or aborted it, idle) while this rank still waited "
        "for it (mismatched calls between ranks?)",
        peerName(p->rank))));
  }
}

void Transport::onSocketDown(Peer* p, const std::string& why) {
  ctx_.reactor->remove(p->sock.get());
  p->sock.reset();
  p->closed = true;
  if (p->byeSeen || failed()) return;
  std::string what = fmt::format(
      "{} closed its shared-memory connection unexpectedly ({}): the process died, aborted, was "
      "killed, or exited without destroying its communicator",
      peerName(p->rank), why);
  // Nothing here waits for it (its part of every call so far is done): as after a goodbye,
  // calls that need it fail naming it and the others go on, as tcp does with a peer gone for
  // good. A rank that returns from its last collective and exits without braidCommDestroy
  // (programs do) failed its peers' part of that call still running among themselves.
  if (!p->awaited() && p->out.empty()) {
    LOG_WARN(kShm, "{}; nothing waited for it here: calls with it will fail", what);
    p->goneWhy = std::move(what);
    p->left.store(true, std::memory_order_release);
    return;
  }
  fail(remoteError(what));
}

void Transport::fail(const Status& reason) {
  if (failed()) return;
  failed_ = reason;
  LOG_WARN(kShm, "communicator failed: {}", reason.message());
  // Record the error before waking anyone: a caller that sees its call fail must also see it
  // in braidCommGetAsyncError.
  if (ctx_.onFatal) ctx_.onFatal(reason);
  std::unordered_set<NetRequest*> reqs;
  std::string text = reason.message().substr(0, kMaxAbortText);
  Frame abortFrame;
  abortFrame.type = static_cast<uint8_t>(FrameType::kAbort);
  abortFrame.len = static_cast<uint32_t>(text.size());
  for (Peer* p : active_) {
    LOG_DEBUG(kShm,
              "shm state with {}: in head {} tail {} (read to {}), out head {} tail {}, "
              "sleeping me {} peer {}, queued {}, posted {}, unexpected {}, announced {}, "
              "awaiting cts {} fin {}, cma {}, bye {}, closed {}",
              peerName(p->rank), p->inCtl().head.load(), p->inCtl().tail.load(), p->inTail,
              p->outCtl().head.load(), p->outCtl().tail.load(), p->mine().sleeping.load(),
              p->theirs().sleeping.load(), p->out.size(), p->postedRecvs.size(),
              p->unexpected.size(), p->rts.size(), p->awaitingCts.size(), p->awaitingFin.size(),
              p->cma.size(), p->byeSeen, p->closed);
    for (const RequestTable* t : {&p->postedRecvs, &p->awaitingCts, &p->awaitingFin}) {
      for (const auto& [tag, r] : t->all()) reqs.insert(r);
    }
    for (auto& it : p->out) {
      if (it.req != nullptr) reqs.insert(it.req);
    }
    for (auto& j : p->cma) reqs.insert(j.req);
    p->postedRecvs.clear();
    p->awaitingCts.clear();
    p->awaitingFin.clear();
    p->out.clear();
    p->cma.clear();
    p->unexpected.clear();
    p->rts.clear();
    // Tell the peer why, if its ring has room (it also sees our socket close when we exit).
    if (!p->closed && p->outFree() >= sizeof(Frame) + text.size() + kLine) {
      p->put(abortFrame, text.data(), text.size());
      p->doorbell();
    }
  }
  unexpectedBytes_ = 0;
  for (NetRequest* r : reqs) complete(r, reason);
}

void Transport::abort(const Status& reason) {
  ctx_.reactor->post([this, reason] { fail(reason); });
}

Status Transport::close(Deadline deadline) {
  ctx_.reactor->post([this] {
    if (failed()) return;
    for (Peer* p : active_) {
      if (!p->closed) control(p, FrameType::kBye, 0, 0);
      p->doorbell();
    }
  });
  // Until everything queued (the goodbye last) is in the rings, and for a short while the
  // peers' goodbyes arrived (so that nobody mistakes our exit for a crash).
  // At most 2 s (a peer that stopped reading its ring while its communicator lives: seen in
  // a group whose other communicator failed), at least kCloseTailMs (a deadline used up by the
  // calls in flight, or by a transport closed before this one).
  const Deadline end = tailEnd(deadline, 2000);
  Deadline byeBy = std::min(end, deadlineIn(200));
  std::string stuck;  // peers whose queue did not fit in their ring by the deadline
  const bool answered = ctx_.reactor->waitUntil(end, [&] {
    stuck.clear();
    if (failed()) return true;
    bool byes = true;
    for (Peer* p : active_) {
      if (!p->out.empty() && !p->closed) stuck += (stuck.empty() ? "" : ", ") + peerName(p->rank);
      byes = byes && (p->byeSeen || p->closed);
    }
    return stuck.empty() && (byes || Clock::now() >= byeBy);
  });
  if (!answered) stuck = "(unknown: the progress loop did not answer)";
  if (stuck.empty()) return Status::ok();
  return timeoutError(
      fmt::format("closing: what this rank sent to {} did not fit in the shared-memory ring within "
                  "BRAID_TIMEOUT_MS ({} ms): the peer read nothing more, and it is lost",
                  stuck, ctx_.cfg->timeoutMs));
}

bool Transport::poll() {
  if (failed()) return false;
  bool moved = false;
  for (Peer* p : active_) {
    moved = p->consumeIn() || moved;
    if (failed()) break;
    moved = p->flushOut() || moved;
    moved = p->runCma() || moved;
    if (failed()) break;
  }
  return moved;
}

bool Transport::armSleep() {
  if (failed()) return true;
  // seq_cst store, then seq_cst loads in hasWork(): see Peer::notify.
  for (Peer* p : active_) p->mine().sleeping.store(1, std::memory_order_seq_cst);
  for (Peer* p : active_) {
    if (!p->closed && p->hasWork()) return false;
  }
  return true;
}

void Transport::disarm() {
  for (Peer* p : active_) p->mine().sleeping.store(0, std::memory_order_relaxed);
}

}  // namespace shm

std::unique_ptr<TransportFactory> makeShmTransportFactory() {
  return std::make_unique<ListeningFactory<shm::Transport>>("shm", /*nodeLocal=*/true);
}

}  // namespace braid

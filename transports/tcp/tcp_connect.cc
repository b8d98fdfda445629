// Connections of the TCP transport: the first ones (initialConnect), the listeners and
// handshakes of reconnections, the background prober (the higher rank of a pair reconnects
// a dead path, after a backoff and any flap hold); tcp_paths.cc: what happens on them.
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

using mp::nowNs;
using mp::PathState;

namespace {
// Rejected connections are strangers' doing: a port scan must not flood the log.
void logRejected(const std::string& why) {
  static LogLimiter limiter("rejected connections");
  if (std::string more; limiter.allow(&more))
    LOG_WARN(kPath, "rejected a connection: {}{}", why, more);
}
}  // namespace

// A listening socket of one NIC, in the loop after the first connections: reconnections.
class Transport::Listener : public Reactor::Handler {
 public:
  Listener(Transport* t, Fd fd, const SockAddr& bound) : t_(t), fd_(std::move(fd)), bound_(bound) {}
  void onEvents(uint32_t) override {
    for (int i = 0; i < 16; ++i) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      // Out of files: strangers' connections that send nothing go (a flood of them must not
      // end the job); while other handshakes are under way, new connections wait for them.
      if (ranOutOfFiles(c) && t_->dropStaleHandshakes("this process is out of files") > 0) {
        c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      }
      if (ranOutOfFiles(c) && t_->handshakesUnderWay() > 0) {
        pause();
        return;
      }
      if (ranOutOfFiles(c)) {
        // The peer's reconnection stays queued and would wake the loop forever: stop listening
        // and fail, saying why.
        const Status err = callError("accepting a reconnection", errno);
        t_->ctx().reactor->remove(fd_.get());
        t_->fail(err, true);
        return;
      }
      if (c < 0) return;
      t_->onIncoming(Fd(c));
    }
  }
  int fd() const { return fd_.get(); }
  const SockAddr& bound() const { return bound_; }
  // Out of the loop for a while (the queued connection would wake it at once).
  void pause() {
    t_->ctx().reactor->remove(fd_.get());
    pausedUntilNs_ = nowNs() + 100'000'000;
  }
  // On the ticker: back in the loop once the pause is over.
  void resumeIfDue(int64_t now) {
    if (pausedUntilNs_ == 0 || now < pausedUntilNs_) return;
    pausedUntilNs_ = 0;
    (void)t_->ctx().reactor->add(fd_.get(), EPOLLIN, this);
  }

 private:
  Transport* t_;
  Fd fd_;
  SockAddr bound_;
  int64_t pausedUntilNs_ = 0;
};

// The acceptor's handshake of one incoming reconnection, driven by the loop.
class Transport::Acceptance : public Reactor::Handler {
 public:
  Acceptance(Transport* t, Fd fd, Deadline d) : t_(t), hs_(std::move(fd), t->ctx().secret, d) {}
  Status start() { return hs_.start(); }
  void onEvents(uint32_t) override {
    if (done_) return;
    bool ok = false;
    Status s = hs_.onReadable(&ok);
    if (s.isOk() && !ok) return;
    finish();
    if (s.isOk() && hs_.hello().socketIndex == kLivenessIndex &&
        hs_.hello().commTag == t_->ctx().commTag) {
      LOG_DEBUG(kPath, "rank {} checked that this rank is alive", hs_.hello().rank);
      hs_.takeFd();
      return;
    }
    if (s.isOk()) s = t_->admitPath(hs_.hello());
    if (!s.isOk()) {
      logRejected(s.message());
      hs_.takeFd();  // closed here
      return;
    }
    t_->installPath(hs_.hello().rank, hs_.hello().socketIndex, hs_.takeFd(),
                    (hs_.hello().flags & kHelloRehash) != 0);
  }
  void finish() {
    if (done_) return;
    done_ = true;
    doneNs_ = nowNs();
    t_->ctx().reactor->remove(hs_.fd());
  }
  // Ends the handshake and closes the connection (this object stays until no event can name
  // it).
  void drop() {
    finish();
    hs_.takeFd();
  }
  bool done() const { return done_; }
  bool stale() const { return hs_.stale(); }
  const std::string& peerName() const { return hs_.peerName(); }
  int64_t doneNs() const { return doneNs_; }
  bool expired() const { return Clock::now() >= hs_.deadline(); }
  int fd() const { return hs_.fd(); }

 private:
  Transport* t_;
  AcceptorHandshake hs_;
  bool done_ = false;
  int64_t doneNs_ = 0;
};

// The periodic timer: stalls, lazy acknowledgements, unreachable peers, faults.
class Transport::Ticker : public Reactor::Handler {
 public:
  explicit Ticker(Transport* t)
      : t_(t), fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) {}
  Status arm(int64_t periodNs) {
    if (!fd_.valid()) return systemError(fmt::format("timerfd_create: {}", std::strerror(errno)));
    itimerspec its{};
    its.it_interval.tv_sec = periodNs / 1'000'000'000;
    its.it_interval.tv_nsec = periodNs % 1'000'000'000;
    its.it_value = its.it_interval;
    if (::timerfd_settime(fd_.get(), 0, &its, nullptr) != 0) {
      return systemError(fmt::format("timerfd_settime: {}", std::strerror(errno)));
    }
    return Status::ok();
  }
  void onEvents(uint32_t) override {
    uint64_t n = 0;
    if (::read(fd_.get(), &n, sizeof n) != sizeof n) return;
    t_->onTick();
  }
  int fd() const { return fd_.get(); }

 private:
  Transport* t_;
  Fd fd_;
};

// Reconnects dead paths in the background (blocking connects off the loop).
class Transport::Prober {
 public:
  struct Job {
    int rank = -1, path = 0;
    bool liveness = false;  // only: does the peer still accept connections? (lower rank)
    int64_t dueNs = 0;
    SockAddr to, from;
    Hello hello;
    std::string what;
  };
  Prober(Transport* t, int me) : t_(t), thread_([this, me] { run(me); }) {}
  ~Prober() {
    stop();
    thread_.join();
  }
  void add(Job j) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(j));
    cv_.notify_one();
  }
  // A probe under way gives up within 50 ms (its connection attempt and handshake ask): the
  // communicator's destroy joins this thread, and a probe of a dead rail could take 2 s.
  void stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    stopping_.store(true);
    cv_.notify_one();
  }
  // The reconnection of (rank, path) waiting for its backoff is due now (one under way goes on).
  void kick(int rank, int path) {
    std::lock_guard<std::mutex> lock(mu_);
    for (Job& j : jobs_) {
      if (j.rank == rank && j.path == path && !j.liveness) j.dueNs = std::min(j.dueNs, nowNs());
    }
    cv_.notify_one();
  }

 private:
  void run(int me) {
    logSetThreadRank(me);
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      auto due = std::min_element(jobs_.begin(), jobs_.end(),
                                  [](const Job& a, const Job& b) { return a.dueNs < b.dueNs; });
      if (due == jobs_.end()) {
        cv_.wait(lock);
        continue;
      }
      int64_t wait = due->dueNs - nowNs();
      if (wait > 0) {
        cv_.wait_for(lock, std::chrono::nanoseconds(wait));
        continue;
      }
      Job j = std::move(*due);
      jobs_.erase(due);
      lock.unlock();
      probe(j);
      lock.lock();
    }
  }
  void probe(const Job& j) {
    const AbandonCheck stopped = [this] {
      return stopping_.load() ? internalError("closing") : Status::ok();
    };
    AbandonScope scope(&stopped);
    Deadline d = deadlineIn(2000);
    Fd fd;
    // One attempt: a refusal is an answer (nothing listens: the process is gone).
    int err = 0;
    Status s = connectAttempt(j.to, d, &j.from, j.what, &fd, &err);
    const bool refused = err == ECONNREFUSED;
    if (s.isOk() && err != 0) {
      s = remoteError(fmt::format("connect to {}: {}", j.to.toString(), std::strerror(err)));
    }
    if (s.isOk()) s = connectorHandshake(fd.get(), t_->ctx().secret, j.hello, d, j.what);
    if (stopping_.load()) return;
    Reactor* r = t_->ctx().reactor;
    Transport* t = t_;
    int rank = j.rank, path = j.path;
    const bool rehash = (j.hello.flags & kHelloRehash) != 0;
    if (s.isOk() && !j.liveness) {
      auto owned = std::make_shared<Fd>(std::move(fd));
      r->post([t, rank, path, owned, rehash] {
        t->installPath(rank, path, std::move(*owned), rehash);
      });
      return;
    }
    std::string why = s.isOk() ? "alive" : s.message();
    bool ok = s.isOk();
    r->post([t, rank, path, ok, refused, why] { t->onProbeResult(rank, path, ok, refused, why); });
  }

  Transport* t_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job> jobs_;
  bool stop_ = false;
  std::atomic<bool> stopping_{false};  // stop_, read without the lock
  std::thread thread_;
};

Transport::Transport(const TransportContext& ctx) : ctx_(ctx) {}

Transport::~Transport() {
  prober_.reset();  // joins
}

Status Transport::addListener(Fd fd, const SockAddr& bound) {
  listeners_.push_back(std::make_unique<Listener>(this, std::move(fd), bound));
  return Status::ok();
}

std::string Transport::localAddress() const {
  // name@address per NIC (one listener each, in the order of nics_): peers pair NICs by name.
  std::string out;
  for (size_t i = 0; i < listeners_.size(); ++i) {
    if (!out.empty()) out += ',';
    if (i < nics_.size()) out += nics_[i].name + "@";
    out += listeners_[i]->bound().toString();
    if (i < nics_.size() && nics_[i].down) out += kNoLinkMark;
  }
  return out;
}

// The first connections. A path that does not connect within a few seconds (a black-holed
// rail: carrier but no traffic) is left dead rather than holding the whole job's start: the
// higher rank gives up on it, the lower rank stops waiting once every peer has a path and
// nothing arrived for as long, and the background probes make it later. A connection that
// arrives after the lower rank stopped waiting is taken by the loop like a reconnection.
// Only when no path to a peer connects at all does the start wait for BRAID_TIMEOUT_MS.
Status Transport::initialConnect(Deadline deadline) {
  const int me = ctx_.rank, n = ctx_.nranks;
  const int64_t budgetMs = std::max<int64_t>(3000, 4 * ctx_.cfg->pathTimeoutMs);
  // The longest a peer may still be in its start after this rank (see checkPaths).
  startGraceNs_ = 2 * (budgetMs + 1000) * 1'000'000;
  std::vector<std::vector<Fd>> fds(n);
  size_t expected = 0;
  for (int r = 0; r < n; ++r) {
    fds[r].resize(peers_[r].paths.size());
    if (r <= me) continue;
    for (const auto& pa : peers_[r].paths) expected += pa->startDead() ? 0 : 1;
  }
  // Higher ranks connect to lower ones; accept concurrently so nobody waits on a chain.
  Status acceptStatus;
  std::vector<AcceptedConn> accepted;
  const AbandonCheck* abandon = currentAbandonCheck();
  std::thread acceptor([&] {
    logSetThreadRank(me);
    AbandonScope scope(abandon);
    if (expected == 0) return;
    std::vector<int> lfds;
    for (const auto& l : listeners_) lfds.push_back(l->fd());
    auto admit = [&](const Hello& h) -> Status {
      BRAID_TRY(admitPath(h));
      if (peers_[h.rank].paths[h.socketIndex]->startDead()) {
        return remoteError(fmt::format("rank {} connected path {}, which starts dead here ({})",
                                       h.rank, h.socketIndex,
                                       peers_[h.rank].paths[h.socketIndex]->startWhy));
      }
      return Status::ok();
    };
    std::vector<size_t> got(static_cast<size_t>(n), 0);
    int64_t lastNs = nowNs();
    auto enough = [&] {
      for (int r = me + 1; r < n; ++r) {
        const auto& ps = peers_[r].paths;
        if (got[r] == 0 &&
            std::any_of(ps.begin(), ps.end(), [](auto& pa) { return !pa->startDead(); }))
          return false;
      }
      return nowNs() - lastNs > (budgetMs + 1000) * 1'000'000;
    };
    acceptStatus = acceptAuthenticated(
        lfds, ctx_.secret, deadline, admit,
        [&](AcceptedConn&& c) {
          lastNs = nowNs();
          // A path connected again: the peer gave up on the first connection (its handshake
          // timed out there) and keeps only the newest.
          for (auto& a : accepted) {
            if (a.hello.rank == c.hello.rank && a.hello.socketIndex == c.hello.socketIndex) {
              a = std::move(c);
              return false;
            }
          }
          ++got[c.hello.rank];
          accepted.push_back(std::move(c));
          return accepted.size() == expected;
        },
        "data connections from higher ranks", enough);
  });
  Status connectStatus;
  auto connectPath = [&](int r, size_t k, Deadline d) -> Status {
    const Path& pa = *peers_[r].paths[k];
    Hello h;
    h.kind = ConnKind::kData;
    h.socketIndex = static_cast<uint16_t>(k);
    h.rank = me;
    h.nranks = n;
    h.commTag = ctx_.commTag;
    // A handshake that does not finish soon is tried again on a new connection (a new source
    // port: on an ECMP fabric another path, where the first one's lost its bytes); the peer
    // keeps the newest connection of a path.
    for (int64_t handshakeMs = 500;; handshakeMs = std::min<int64_t>(2 * handshakeMs, 2000)) {
      Fd fd;
      BRAID_TRY(connectTo(remoteNics_[r][pa.remoteNic], d, &fd,
                          fmt::format("{} {}", peerName(r), pathName(&peers_[r], int(k))),
                          &nics_[pa.localNic].addr));
      Status s = connectorHandshake(fd.get(), ctx_.secret, h, std::min(d, deadlineIn(handshakeMs)),
                                    peerName(r));
      if (s.isOk()) {
        fds[r][k] = std::move(fd);
        return s;
      }
      if (s.code() != braidTimeout || Clock::now() >= d) return s;
      BRAID_TRY(checkAbandon());
      LOG_DEBUG(kPath, "{}: {}: handshake not answered within {} ms: a new connection", peerName(r),
                pathName(&peers_[r], int(k)), handshakeMs);
    }
  };
  // A NIC of this rank whose first connections time out is suspect: its next ones get a short
  // budget, and after kGiveUp timeouts in a row none (they start dead; the probes try them
  // later), so that a black-holed NIC costs its rank seconds, not seconds per peer. A success
  // clears the suspicion (the timeout may have been the peer's NIC).
  constexpr int kGiveUp = 4;
  std::vector<int> timeouts(nics_.size(), 0);
  for (int r = 0; r < me && connectStatus.isOk(); ++r) {
    std::vector<size_t> failed;
    size_t made = 0;
    for (size_t k = 0; k < peers_[r].paths.size(); ++k) {
      if (peers_[r].paths[k]->startDead()) continue;
      const int nic = peers_[r].paths[k]->localNic;
      if (timeouts[nic] >= kGiveUp) {
        failed.push_back(k);
        continue;
      }
      const int64_t budget = timeouts[nic] > 0 ? 500 : budgetMs;
      const int64_t t0 = nowNs();
      Status s = connectPath(r, k, std::min(deadline, deadlineIn(budget)));
      if (s.isOk()) {
        ++made;
        timeouts[nic] = 0;
      } else {
        if (nowNs() - t0 >= budget * 1'000'000) ++timeouts[nic];
        failed.push_back(k);
        LOG_DEBUG(kPath, "{}: first connection of {}: {}", peerName(r),
                  pathName(&peers_[r], int(k)), s.message());
      }
    }
    // No path at all: keep trying them until the start's deadline (the peer may be slow).
    while (made == 0 && !failed.empty() && connectStatus.isOk()) {
      for (size_t i = 0; i < failed.size() && made == 0; ++i) {
        connectStatus = connectPath(r, failed[i], std::min(deadline, deadlineIn(budgetMs)));
        if (connectStatus.isOk()) {
          ++made;
          failed.erase(failed.begin() + static_cast<std::ptrdiff_t>(i));
        } else if (Clock::now() < deadline && checkAbandon().isOk()) {
          connectStatus = Status::ok();  // (not when the set-up was abandoned: that error)
        }
      }
    }
    for (size_t k : failed) {
      Path& pa = *peers_[r].paths[k];
      pa.startWhy = "no connection at the start";
      LOG_WARN(kPath, "{}: {} did not connect at the start: it starts dead", peerName(r),
               pathName(&peers_[r], int(k)));
    }
  }
  acceptor.join();
  BRAID_TRY(connectStatus);
  if (!acceptStatus.isOk()) {
    std::string missing;
    for (int r = me + 1; r < n; ++r) {
      if (peers_[r].paths.empty()) continue;
      bool have = std::any_of(accepted.begin(), accepted.end(),
                              [&](const AcceptedConn& a) { return a.hello.rank == r; });
      if (!have) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    return Status(acceptStatus.code(), fmt::format("{}; no connection from rank(s) {}",
                                                   acceptStatus.message(), missing));
  }
  for (auto& a : accepted) fds[a.hello.rank][a.hello.socketIndex] = std::move(a.fd);
  for (int r = me + 1; r < n; ++r) {
    for (size_t k = 0; k < peers_[r].paths.size(); ++k) {
      Path& pa = *peers_[r].paths[k];
      if (pa.startDead() || fds[r][k].valid()) continue;
      // The peer gave up on it, or it comes late (then the loop takes it).
      pa.startWhy = "no connection at the start";
    }
  }
  for (int r = 0; r < n; ++r) {
    for (size_t k = 0; k < peers_[r].paths.size(); ++k) {
      if (peers_[r].paths[k]->startDead()) continue;
      BRAID_TRY(setNonBlocking(fds[r][k].get()));
      tunePathSocket(fds[r][k].get());
      auto sock = std::make_unique<Socket>(&peers_[r], static_cast<int>(k), std::move(fds[r][k]));
      BRAID_TRY(ctx_.reactor->add(sock->fd(), EPOLLIN, sock.get()));
      peers_[r].paths[k]->sock = std::move(sock);
      peers_[r].paths[k]->generation = 1;
      noteConnected(peers_[r].paths[k].get());
    }
  }
  return Status::ok();
}

void Transport::startDeadPaths() {
  const int64_t now = nowNs();
  for (Peer& p : peers_) {
    size_t dead = 0;
    for (size_t k = 0; k < p.paths.size(); ++k) {
      Path& pa = *p.paths[k];
      if (!pa.startDead()) continue;
      ++dead;
      setPathState(&p, static_cast<int>(k), PathState::kDead, nullptr);
      pa.downSinceNs = now;
      LOG_INFO(kPath, "{}: {} starts dead ({}); the background probes make it", peerName(p.rank),
               pathName(&p, static_cast<int>(k)), pa.startWhy);
      if (ctx_.rank > p.rank) scheduleProbe(&p, static_cast<int>(k), false);
    }
    // (Off: the paths of the own rail all dead is as good as all: standby ones never carry.)
    if (dead > 0 && !p.tx.anyUsable()) {
      LOG_WARN(kPath, "{}: no path this rank may send on could be made at the start (paths: {})",
               peerName(p.rank), pathsTried(&p));
      allPathsDown(&p);
    }
  }
}

Status Transport::admitPath(const Hello& h) const {
  const int me = ctx_.rank, n = ctx_.nranks;
  if (h.kind != ConnKind::kData || h.commTag != ctx_.commTag || h.nranks != n || h.rank <= me ||
      h.rank >= n || h.socketIndex >= peers_[h.rank].paths.size()) {
    return remoteError(
        fmt::format("unexpected data connection (rank {}, path {})", h.rank, h.socketIndex));
  }
  return Status::ok();
}

Status Transport::startBackground() {
  startNs_ = lastFaultNs_ = nowNs();
  if (fault_.enabled && (fault_.rank < 0 || fault_.rank == ctx_.rank)) {
    // A path number that no peer of this rank has (or not the peer it names) is a mistake.
    size_t most = 0;
    for (const Peer& p : peers_) {
      if (fault_.peer < 0 || p.rank == fault_.peer) most = std::max(most, p.paths.size());
    }
    BRAID_TRY(fault_.checkPath(static_cast<int>(most)));
  }
  faultsLeft_ = fault_.enabled && (fault_.rank < 0 || fault_.rank == ctx_.rank) ? fault_.times : 0;
  faultRng_.seed(fault_.seed * 1000003u + static_cast<uint64_t>(ctx_.rank));
  for (auto& l : listeners_) {
    BRAID_TRY(setNonBlocking(l->fd()));  // the loop accepts until EAGAIN
    BRAID_TRY(ctx_.reactor->add(l->fd(), EPOLLIN, l.get()));
  }
  ticker_ = std::make_unique<Ticker>(this);
  // A tick several times per path timeout; lazy acknowledgements wait at most one tick.
  int64_t period = std::clamp<int64_t>(pathTimeoutNs_ / 4, 2'000'000, 50'000'000);
  BRAID_TRY(ticker_->arm(period));
  BRAID_TRY(ctx_.reactor->add(ticker_->fd(), EPOLLIN, ticker_.get()));
  prober_ = std::make_unique<Prober>(this, ctx_.rank);
  BRAID_TRY(startLinkWatch());
  return Status::ok();
}

void Transport::stopBackground() {
  stopping_ = true;
  if (prober_) prober_->stop();
}

void Transport::tunePathSocket(int fd) const {
  tuneSocket(fd, static_cast<int>(ctx_.cfg->tcpBufferBytes));
  // A bounded amount of unsent data in the kernel: acknowledgements and keepalives, queued
  // ahead of data here, wait behind at most this much (the window in flight stays as large).
  // A quarter of the path's window (1 MiB by default): 8 ms at 1 Gbit/s, so that the socket
  // does not run dry while the loop thread waits for a core; at 128 KiB (1 ms) a 2-vCPU VM
  // lost 3-4% of a 1 Gbit/s link (benchmarks/results/2026-12-06-zen5-fabric).
  int lowat = static_cast<int>(std::clamp<size_t>(pathWindow() / 4, 128 << 10, 4 << 20));
  setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
  // Checked at listen(): cannot fail here but for a vanished module.
  if (!congestion_.empty()) {
    setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, congestion_.data(), congestion_.size());
  }
  // A segment lost at the end of a burst, with nothing behind it to reveal the loss, waits for
  // the retransmission timer; its 200 ms floor, meant for the Internet, would stall the whole
  // message on a fabric whose round trip is tens of microseconds (RTO stays >= srtt + 4 rttvar).
  if (ctx_.cfg->tcpRtoMinUs > 0) {
    int us = static_cast<int>(ctx_.cfg->tcpRtoMinUs);
    if (setsockopt(fd, IPPROTO_TCP, kTcpRtoMinUs, &us, sizeof us) != 0 &&
        !rtoMinNoted_.exchange(true)) {
      LOG_INFO(kNet,
               "tcp: cannot set TCP_RTO_MIN_US={} ({}; Linux 6.15+, at least 2 jiffies): the "
               "retransmission timeout floor stays the system's",
               us, std::strerror(errno));
    }
  }
}

size_t Transport::handshakesUnderWay() const {
  return std::count_if(acceptances_.begin(), acceptances_.end(),
                       [](const auto& a) { return !a->done(); });
}

size_t Transport::dropStaleHandshakes(const char* why) {
  size_t dropped = 0;
  for (auto& a : acceptances_) {
    if (a->done() || !a->stale()) continue;
    if (dropped++ == 0) {
      LOG_DEBUG(kPath, "{}: dropping connections that sent nothing, the first from {}", why,
                a->peerName());
    }
    a->drop();
  }
  return dropped;
}

void Transport::onIncoming(Fd fd) {
  if (stopping_ || failed()) return;
  if (handshakesUnderWay() >= handshakeCap(kMaxHandshakes / 8) &&
      dropStaleHandshakes("too many connections in their handshake") == 0) {
    LOG_DEBUG(kPath, "too many connections in their handshake: refused one");
    return;  // fd closes here
  }
  // A stranger gets a short while to prove itself; a known peer's reconnection is quick.
  auto a = std::make_unique<Acceptance>(this, std::move(fd), deadlineIn(5000));
  Status s = a->start();
  if (s.isOk()) s = ctx_.reactor->add(a->fd(), EPOLLIN, a.get());
  if (!s.isOk()) {
    LOG_WARN(kPath, "dropped an incoming connection: {}", s.message());
    return;
  }
  acceptances_.push_back(std::move(a));
}

void Transport::scheduleProbe(Peer* p, int path, bool liveness, bool rehash) {
  Path& pa = *p->paths[path];
  if (!prober_ || stopping_) return;
  int64_t& backoff = liveness ? p->livenessBackoffMs : pa.backoffMs;
  bool& busy = liveness ? p->livenessProbing : pa.probing;
  // (A peer taken for gone is still tried, at the slowest pace: it may come back.)
  if (busy || (p->left && p->goneWhy.empty())) return;
  busy = true;
  if (!rehash) {
    backoff = backoff == 0 ? (liveness ? 0 : 50) : std::clamp<int64_t>(backoff * 2, 50, 2000);
    // Refused connections are retried often: the peer is gone after BRAID_PEER_GONE_MS of them.
    if (p->refusedSinceNs != 0) backoff = std::min<int64_t>(backoff, 200);
  }
  Prober::Job j;
  j.rank = p->rank;
  j.path = path;
  j.liveness = liveness;
  j.dueNs = nowNs() + (rehash ? 0 : backoff * 1'000'000);
  // (No hold while every path to the peer is down: the reconnect tells whether it lives.)
  const int64_t holdUntilNs = flapHoldUntilNs(pa);
  if (!liveness && !rehash && p->allDownSinceNs == 0 && holdUntilNs > j.dueNs) {
    j.dueNs = holdUntilNs;
    LOG_INFO(kPath,
             "{}: {} failed {} time(s) in a row within {} s of coming back: next try in {} ms",
             peerName(p->rank), pathName(p, path), pa.flaps, Path::kFlapWindowNs / 1'000'000'000,
             (j.dueNs - nowNs()) / 1'000'000);
  }
  j.hello.flags = rehash ? kHelloRehash : 0;
  j.to = remoteNics_[p->rank][pa.remoteNic];
  j.from = nics_[pa.localNic].addr;
  j.hello.kind = ConnKind::kData;
  j.hello.socketIndex = static_cast<uint16_t>(liveness ? kLivenessIndex : path);
  j.hello.rank = ctx_.rank;
  j.hello.nranks = ctx_.nranks;
  j.hello.commTag = ctx_.commTag;
  j.what = fmt::format("{} {}", peerName(p->rank), pathName(p, path));
  prober_->add(std::move(j));
}

int64_t Transport::flapHoldUntilNs(const Path& pa) {
  if (pa.flaps <= 0) return 0;
  return pa.downSinceNs +
         std::min<int64_t>(Path::kFlapHoldNs << std::min(pa.flaps - 1, 10), Path::kFlapHoldMaxNs);
}

void Transport::probeNow(Peer* p, int path) {
  Path& pa = *p->paths[path];
  if (!prober_ || stopping_) return;
  // A link that flaps comes up again and again: its hold stands (the probe due then goes).
  if (p->allDownSinceNs == 0 && nowNs() < flapHoldUntilNs(pa)) return;
  pa.backoffMs = 0;  // the link is back: the retries start quick again
  LOG_DEBUG(kPath, "{}: a link of {} came up: probing it now", peerName(p->rank),
            pathName(p, path));
  if (pa.probing) return prober_->kick(p->rank, path);
  scheduleProbe(p, path, false);
}

// On the ticker: listeners out of the loop for a while, handshakes that took too long.
void Transport::tickConnections(int64_t now) {
  for (auto& l : listeners_) l->resumeIfDue(now);
  for (auto& a : acceptances_) {
    if (!a->done() && a->expired()) {
      LOG_DEBUG(kPath, "the connection from {} did not finish its handshake in time",
                a->peerName());
      a->drop();
    }
  }
  // Handlers out of the epoll set for a long while can no longer be named by a pending event.
  constexpr int64_t kLongAfterNs = 10'000'000'000;
  acceptances_.erase(
      std::remove_if(acceptances_.begin(), acceptances_.end(),
                     [&](const auto& a) { return a->done() && now - a->doneNs() > kLongAfterNs; }),
      acceptances_.end());
}

}  // namespace braid::tcp

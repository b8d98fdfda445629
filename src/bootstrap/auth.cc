#include "src/bootstrap/auth.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <span>

namespace braid {
namespace {

constexpr char kMagic[8] = {'B', 'R', 'A', 'I', 'D', 'v', '1', '\0'};

Mac hmac(const Secret& secret, std::initializer_list<std::span<const uint8_t>> parts) {
  Mac out{};
  unsigned int len = 0;
  // One-shot HMAC over the concatenation (parts are small).
  uint8_t buf[256];
  size_t n = 0;
  for (auto p : parts) {
    std::memcpy(buf + n, p.data(), p.size());
    n += p.size();
  }
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), buf, n, out.data(), &len);
  return out;
}

void putU16(uint8_t* p, uint16_t v) {
  p[0] = v & 0xff;
  p[1] = v >> 8;
}
void putU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = (v >> (8 * i)) & 0xff;
}
void putU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (v >> (8 * i)) & 0xff;
}
uint16_t getU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t getU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t getU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const uint8_t kTagC[1] = {'C'};
const uint8_t kTagA[1] = {'A'};

}  // namespace

Mac derive(const Secret& secret, const std::string& label) {
  Mac out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(label.data()), label.size(), out.data(), &len);
  return out;
}

Secret deriveSecret(const Secret& secret, const std::string& label) {
  const Mac d = derive(secret, label);
  Secret s{};
  std::memcpy(s.data(), d.data(), s.size());
  return s;
}

Status randomBytes(void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < n) {
    ssize_t r = getrandom(p + done, n - done, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return systemError(fmt::format("getrandom: {}", std::strerror(errno)));
    }
    done += static_cast<size_t>(r);
  }
  return Status::ok();
}

std::string toHex(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

bool fromHex(const std::string& hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    int hi = val(hex[2 * i]), lo = val(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

void Hello::serialize(uint8_t out[kBytes]) const {
  std::memset(out, 0, kBytes);
  putU16(out, static_cast<uint16_t>(kind));
  putU16(out + 2, socketIndex);
  putU32(out + 4, static_cast<uint32_t>(rank));
  putU32(out + 8, static_cast<uint32_t>(nranks));
  putU64(out + 12, commTag);
  out[20] = flags;
}

bool Hello::parse(const uint8_t in[kBytes], Hello* out) {
  Hello h;
  uint16_t k = getU16(in);
  if (k != static_cast<uint16_t>(ConnKind::kBootstrap) &&
      k != static_cast<uint16_t>(ConnKind::kData)) {
    return false;
  }
  h.kind = static_cast<ConnKind>(k);
  h.socketIndex = getU16(in + 2);
  h.rank = static_cast<int32_t>(getU32(in + 4));
  h.nranks = static_cast<int32_t>(getU32(in + 8));
  h.commTag = getU64(in + 12);
  h.flags = in[20];
  if (h.nranks <= 0 || h.rank < 0 || h.rank >= h.nranks) return false;
  *out = h;
  return true;
}

Status connectorHandshake(int fd, const Secret& secret, const Hello& hello, Deadline deadline,
                          const std::string& peerName, bool* greeted) {
  uint8_t challenge[8 + 32];
  BRAID_TRY(readFull(fd, challenge, sizeof challenge, deadline, peerName));
  if (greeted != nullptr) *greeted = true;
  if (std::memcmp(challenge, kMagic, 8) != 0) {
    return remoteError(fmt::format("{} is not a braid endpoint (bad greeting)", peerName));
  }
  uint8_t msg[Hello::kBytes + 32 + 32];
  hello.serialize(msg);
  BRAID_TRY(randomBytes(msg + Hello::kBytes, 32));
  std::span<const uint8_t> nonceA(challenge + 8, 32), nonceC(msg + Hello::kBytes, 32),
      helloBytes(msg, Hello::kBytes);
  Mac mac = hmac(secret, {kTagC, nonceA, nonceC, helloBytes});
  std::memcpy(msg + Hello::kBytes + 32, mac.data(), mac.size());
  BRAID_TRY(writeFull(fd, msg, sizeof msg, deadline, peerName));
  Mac reply{};
  Status s = readFull(fd, reply.data(), reply.size(), deadline, peerName);
  if (!s.isOk()) {
    return Status(s.code(), fmt::format("{} ended the connection during the handshake ({}): "
                                        "it does not know this job's secret, or it failed (its "
                                        "own error says why)",
                                        peerName, s.message()));
  }
  Mac expect = hmac(secret, {kTagA, nonceC, nonceA, helloBytes});
  if (CRYPTO_memcmp(reply.data(), expect.data(), expect.size()) != 0) {
    return remoteError(
        fmt::format("{} does not know the job secret (authentication failed)", peerName));
  }
  return Status::ok();
}

AcceptorHandshake::AcceptorHandshake(Fd fd, const Secret& secret, Deadline deadline)
    : fd_(std::move(fd)), secret_(secret), deadline_(deadline) {
  SockAddr a;
  a.len = sizeof a.ss;
  peerName_ = getpeername(fd_.get(), reinterpret_cast<sockaddr*>(&a.ss), &a.len) == 0
                  ? a.toString()
                  : "an unknown peer";
  // A Unix socket has no address to show: the kernel's word on who connected does.
  ucred cred{};
  socklen_t clen = sizeof cred;
  if ((a.len == 0 || a.family() == AF_UNIX) &&
      getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.pid > 0) {
    peerName_ = fmt::format("a local process (pid {}, uid {})", cred.pid, cred.uid);
  }
}

Status AcceptorHandshake::start() {
  BRAID_TRY(setNonBlocking(fd_.get()));
  BRAID_TRY(randomBytes(nonceA_.data(), nonceA_.size()));
  uint8_t out[8 + 32];
  std::memcpy(out, kMagic, 8);
  std::memcpy(out + 8, nonceA_.data(), 32);
  return writeFull(fd_.get(), out, sizeof out, deadline_, peerName());
}

Status AcceptorHandshake::onReadable(bool* done) {
  *done = false;
  while (got_ < in_.size()) {
    ssize_t r = ::recv(fd_.get(), in_.data() + got_, in_.size() - got_, MSG_DONTWAIT);
    if (r == 0) return remoteError(fmt::format("{} closed during the handshake", peerName()));
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Status::ok();
      return remoteError(fmt::format("{} handshake read: {}", peerName(), std::strerror(errno)));
    }
    got_ += static_cast<size_t>(r);
  }
  std::span<const uint8_t> helloBytes(in_.data(), Hello::kBytes),
      nonceC(in_.data() + Hello::kBytes, 32), nonceA(nonceA_.data(), 32);
  Mac expect = hmac(secret_, {kTagC, nonceA, nonceC, helloBytes});
  if (CRYPTO_memcmp(in_.data() + Hello::kBytes + 32, expect.data(), expect.size()) != 0) {
    return remoteError(fmt::format(
        "connection from {} failed authentication (wrong job secret or not braid)", peerName()));
  }
  if (!Hello::parse(in_.data(), &hello_)) {
    return remoteError(fmt::format("connection from {} sent a malformed hello", peerName()));
  }
  Mac reply = hmac(secret_, {kTagA, nonceC, nonceA, helloBytes});
  BRAID_TRY(writeFull(fd_.get(), reply.data(), reply.size(), deadline_, peerName()));
  *done = true;
  return Status::ok();
}

}  // namespace braid

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <list>
#include <thread>

#include "src/core/log.h"

namespace braid {

namespace {

// Rejected connections are strangers' doing: a port scan must not flood the log.
void logRejected(const std::string& what, const std::string& why) {
  static LogLimiter limiter("rejected connections");
  if (std::string more; limiter.allow(&more)) {
    LOG_WARN(kBoot, "{}: rejected a connection: {}{}", what, why, more);
  }
}

// Drops the handshakes under way that sent nothing for a while (strangers holding
// connections open): how many.
size_t dropStale(std::list<AcceptorHandshake>* pending, const std::string& what, const char* why) {
  size_t dropped = 0;
  std::string from;
  for (auto it = pending->begin(); it != pending->end();) {
    if (!it->stale()) {
      ++it;
      continue;
    }
    if (dropped++ == 0) from = it->peerName();
    it = pending->erase(it);
  }
  if (dropped > 0) {
    logRejected(
        what, fmt::format("{}: dropped {} connection(s) that sent nothing, the first from {}", why,
                          dropped, from));
  }
  return dropped;
}

}  // namespace

Status acceptAuthenticated(int listenFd, const Secret& secret, Deadline deadline,
                           const std::function<Status(const Hello&)>& admit,
                           const std::function<bool(AcceptedConn&&)>& onAccepted,
                           const std::string& what) {
  return acceptAuthenticated(std::vector<int>{listenFd}, secret, deadline, admit, onAccepted, what);
}

Status acceptAuthenticated(const std::vector<int>& listenFds, const Secret& secret,
                           Deadline deadline, const std::function<Status(const Hello&)>& admit,
                           const std::function<bool(AcceptedConn&&)>& onAccepted,
                           const std::string& what, const std::function<bool()>& enough) {
  const size_t L = listenFds.size();
  std::list<AcceptorHandshake> pending;
  // Out of files: no more connections are taken, but the handshakes under way finish (their
  // ranks are answered), and then the error is returned.
  Status outOfFiles;
  // Out of files while handshakes are under way: they may end (or turn out to be strangers'),
  // so new connections wait a little instead.
  Clock::time_point pausedUntil{};
  const bool abandonable = currentAbandonCheck() != nullptr;
  while (true) {
    if (enough && enough()) return Status::ok();
    BRAID_TRY(checkAbandon());
    if (!outOfFiles.isOk() && pending.empty()) return outOfFiles;
    int left = msUntil(deadline);
    if (left == 0) return timeoutError(fmt::format("timed out waiting for {}", what));
    const bool accepting = outOfFiles.isOk() && Clock::now() >= pausedUntil;
    std::vector<pollfd> fds;
    for (int l : listenFds) fds.push_back({l, static_cast<short>(accepting ? POLLIN : 0), 0});
    for (auto& h : pending) fds.push_back({h.fd(), POLLIN, 0});
    int n = ::poll(fds.data(), fds.size(),
                   std::min(left, enough || abandonable || !accepting ? 100 : 1000));
    if (n < 0 && errno != EINTR) return systemError(fmt::format("poll: {}", std::strerror(errno)));
    if (n <= 0) continue;
    // Existing handshakes first (fds[L..] line up with `pending`).
    size_t idx = L;
    for (auto it = pending.begin(); it != pending.end(); ++idx) {
      if (!(fds[idx].revents & (POLLIN | POLLERR | POLLHUP))) {
        ++it;
        continue;
      }
      bool done = false;
      Status s = it->onReadable(&done);
      if (s.isOk() && done) s = admit(it->hello());
      if (!s.isOk()) {
        if (it->silent()) {
          LOG_DEBUG(kBoot, "{}: a connection closed before sending anything: {}", what,
                    s.message());
        } else {
          logRejected(what, s.message());
        }
        it = pending.erase(it);
        continue;
      }
      if (done) {
        AcceptedConn c{it->hello(), it->takeFd()};
        it = pending.erase(it);
        if (onAccepted(std::move(c))) return Status::ok();
        continue;
      }
      ++it;
    }
    for (size_t l = 0; l < L; ++l) {
      if (!(fds[l].revents & POLLIN)) continue;
      int c = ::accept4(listenFds[l], nullptr, nullptr, SOCK_CLOEXEC);
      // Out of files: strangers' connections that send nothing go (a flood of them must not
      // end the job); while other handshakes are under way, new connections wait for them.
      if (ranOutOfFiles(c) && dropStale(&pending, what, "this process is out of files") > 0) {
        c = ::accept4(listenFds[l], nullptr, nullptr, SOCK_CLOEXEC);
      }
      if (ranOutOfFiles(c) && !pending.empty()) {
        pausedUntil = Clock::now() + std::chrono::milliseconds(100);
        break;
      }
      if (ranOutOfFiles(c)) {
        // The connection stays queued and poll() would keep reporting it: stop listening.
        const int err = errno;
        outOfFiles = callError("accepting " + what, err);
        break;
      }
      if (c >= 0) {
        // A stranger gets at most 10 s (or what is left) to prove itself.
        Deadline hd = std::min(deadline, deadlineIn(10000));
        if (pending.size() >= handshakeCap(kMaxHandshakes) &&
            dropStale(&pending, what, "too many connections in their handshake") == 0) {
          logRejected(what, "too many connections in their handshake: refused one");
          ::close(c);
          continue;
        }
        pending.emplace_back(Fd(c), secret, hd);
        Status s = pending.back().start();
        if (!s.isOk()) {
          LOG_WARN(kBoot, "{}: dropped a connection: {}", what, s.message());
          pending.pop_back();
        }
      }
    }
    // Expire handshakes that took too long.
    for (auto it = pending.begin(); it != pending.end();) {
      if (Clock::now() >= it->deadline()) {
        LOG_WARN(kBoot, "{}: connection from {} did not finish the handshake in time", what,
                 it->peerName());
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
  }
}

Status connectPairs(int listenFd, const Secret& secret, uint64_t commTag, int rank, int nranks,
                    const std::vector<bool>& wanted, Deadline deadline,
                    const std::function<Status(int peer, Fd* fd)>& dial,
                    const std::function<Status(int peer, Fd fd, bool dialed)>& setup,
                    const std::function<std::string(int peer)>& peerName, const std::string& what) {
  size_t expected = 0;
  for (int r = rank + 1; r < nranks; ++r) expected += wanted[r] ? 1 : 0;
  Status acceptStatus, setupStatus;
  std::vector<bool> accepted(nranks, false);
  size_t got = 0;
  const AbandonCheck* abandon = currentAbandonCheck();
  std::thread acceptor([&] {
    logSetThreadRank(rank);
    AbandonScope scope(abandon);
    if (expected == 0) return;
    auto admit = [&](const Hello& h) -> Status {
      if (h.kind != ConnKind::kData || h.commTag != commTag || h.nranks != nranks ||
          h.rank <= rank || h.rank >= nranks || !wanted[h.rank] || accepted[h.rank]) {
        return remoteError(fmt::format("unexpected {} connection (rank {})", what, h.rank));
      }
      return Status::ok();
    };
    acceptStatus = acceptAuthenticated(
        listenFd, secret, deadline, admit,
        [&](AcceptedConn&& c) {
          accepted[c.hello.rank] = true;
          ++got;
          Status s = setup(c.hello.rank, std::move(c.fd), false);
          if (!s.isOk() && setupStatus.isOk()) setupStatus = s;
          return got == expected || !setupStatus.isOk();
        },
        what + " connections from higher ranks");
  });
  Status connectStatus;
  for (int r = 0; r < rank && connectStatus.isOk(); ++r) {
    if (!wanted[r]) continue;
    Fd fd;
    connectStatus = dial(r, &fd);
    if (!connectStatus.isOk()) break;
    Hello h;
    h.kind = ConnKind::kData;
    h.rank = rank;
    h.nranks = nranks;
    h.commTag = commTag;
    connectStatus = connectorHandshake(fd.get(), secret, h, deadline, peerName(r));
    if (connectStatus.isOk()) connectStatus = setup(r, std::move(fd), true);
  }
  acceptor.join();
  BRAID_TRY(connectStatus);
  BRAID_TRY(setupStatus);
  if (!acceptStatus.isOk()) {
    std::string missing;
    for (int r = rank + 1; r < nranks; ++r) {
      if (wanted[r] && !accepted[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    return Status(acceptStatus.code(), fmt::format("{}; no {} connection from rank(s) {}",
                                                   acceptStatus.message(), what, missing));
  }
  return Status::ok();
}

}  // namespace braid

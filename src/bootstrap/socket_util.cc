#include "src/bootstrap/socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <thread>

#include "src/core/log.h"

namespace braid {

int msUntil(Deadline d) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  if (left <= 0) return 0;
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

int SockAddr::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

void SockAddr::setPort(int port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

bool SockAddr::isLoopback() const {
  if (family() == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr) >> 24) == 127;
  }
  if (family() == AF_INET6) {
    return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr);
  }
  return false;
}

std::string SockAddr::toString() const {
  char host[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, port());
  }
  if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, port());
  }
  return "<no address>";
}

Status SockAddr::parse(const std::string& text, SockAddr* out) {
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return invalidArgument(fmt::format("address '{}' is not [ipv6]:port", text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return invalidArgument(
          fmt::format("address '{}' is not host:port (write IPv6 as [addr]:port)", text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
    return invalidArgument(fmt::format("address '{}' has a bad port '{}'", text, port));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return invalidArgument(fmt::format("cannot resolve host '{}': {}", host, gai_strerror(rc)));
  }
  SockAddr a;
  std::memcpy(&a.ss, res->ai_addr, res->ai_addrlen);
  a.len = res->ai_addrlen;
  freeaddrinfo(res);
  a.setPort(static_cast<int>(p));
  *out = a;
  return Status::ok();
}

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Status setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return systemError(fmt::format("fcntl(O_NONBLOCK): {}", std::strerror(errno)));
  }
  return Status::ok();
}

void tuneSocket(int fd, int bufferBytes) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (bufferBytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof bufferBytes);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes);
  }
}

std::string readProcLine(const char* path) {
  std::string line;
  std::ifstream f(path);
  std::getline(f, line);
  return line;
}

Status checkCongestionControl(const std::string& name) {
  if (name.empty()) return Status::ok();
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) s = Fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return callError("socket()", errno);
  if (setsockopt(s.get(), IPPROTO_TCP, TCP_CONGESTION, name.data(), name.size()) == 0) {
    return Status::ok();
  }
  const int err = errno;
  return invalidArgument(fmt::format(
      "BRAID_TCP_CONGESTION='{}': {} (available: {}; allowed without CAP_NET_ADMIN: {})", name,
      std::strerror(err), readProcLine("/proc/sys/net/ipv4/tcp_available_congestion_control"),
      readProcLine("/proc/sys/net/ipv4/tcp_allowed_congestion_control")));
}

namespace {

std::string limitText(rlim_t v) {
  return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
}

}  // namespace

void raiseFileLimit(size_t want) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY ||
      lim.rlim_cur >= want) {
    return;
  }
  const rlim_t old = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, lim.rlim_max);
  if (lim.rlim_cur <= old || ::setrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  LOG_INFO(kInit, "raised the open-file limit from {} to {} (hard limit {})", old, lim.rlim_cur,
           limitText(lim.rlim_max));
}

size_t handshakeCap(size_t most) {
  rlimit lim{};
  size_t files = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    files = static_cast<size_t>(lim.rlim_cur);
  }
  return std::clamp<size_t>(files / 2, 64, most);
}

std::string fileLimitHint(int err) {
  if (err == ENFILE) return " (the system-wide open-file table is full: fs.file-max)";
  if (err != EMFILE) return "";
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return "";
  const bool atHard = lim.rlim_max != RLIM_INFINITY && lim.rlim_cur >= lim.rlim_max;
  return fmt::format(
      " (this process may open {} files, hard limit {}: each peer takes a socket per path and "
      "the rendezvous root one per rank; {})",
      lim.rlim_cur, limitText(lim.rlim_max),
      atHard ? "raise the hard limit: /etc/security/limits.conf, the service's LimitNOFILE, or "
               "ulimit -Hn as root"
             : "raise it with ulimit -n");
}

Status callError(const std::string& call, int err) {
  return systemError(fmt::format("{}: {}{}", call, std::strerror(err), fileLimitHint(err)));
}

Status listenOn(const SockAddr& addr, int backlog, Fd* fd, SockAddr* bound) {
  Fd s(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return callError("socket()", errno);
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&addr.ss), addr.len) != 0) {
    return systemError(fmt::format("cannot bind to {}: {}", addr.toString(), std::strerror(errno)));
  }
  if (::listen(s.get(), backlog) != 0) {
    return systemError(fmt::format("listen on {}: {}", addr.toString(), std::strerror(errno)));
  }
  SockAddr b;
  b.len = sizeof b.ss;
  getsockname(s.get(), reinterpret_cast<sockaddr*>(&b.ss), &b.len);
  *bound = b;
  *fd = std::move(s);
  return Status::ok();
}

namespace {
thread_local const AbandonCheck* tlsAbandon = nullptr;

// Waits (poll) for one socket, until `deadline`; with an abandon check in place, in slices
// after each of which it is asked. 1: ready; 0: the deadline passed; an error: abandoned.
Status pollUntil(pollfd* p, Deadline deadline, int* ready) {
  constexpr int kSliceMs = 50;
  for (;;) {
    const int left = msUntil(deadline);
    const int slice = tlsAbandon != nullptr ? std::min(left, kSliceMs) : left;
    const int rc = ::poll(p, 1, slice);
    if (rc != 0 ? !(rc < 0 && errno == EINTR) : slice == left) {
      *ready = rc != 0 ? 1 : 0;  // a poll error: the socket call that follows says which
      return Status::ok();
    }
    BRAID_TRY(checkAbandon());
  }
}
}  // namespace

AbandonScope::AbandonScope(const AbandonCheck* check) : saved_(tlsAbandon) { tlsAbandon = check; }
AbandonScope::~AbandonScope() { tlsAbandon = saved_; }
const AbandonCheck* currentAbandonCheck() { return tlsAbandon; }
Status checkAbandon() { return tlsAbandon != nullptr ? (*tlsAbandon)() : Status::ok(); }

Status connectAttempt(const SockAddr& addr, Deadline deadline, const SockAddr* from,
                      const std::string& what, Fd* fd, int* err, int maxSegment) {
  Fd s(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s.valid()) return callError("socket()", errno);
  if (maxSegment > 0) {
    (void)::setsockopt(s.get(), IPPROTO_TCP, TCP_MAXSEG, &maxSegment, sizeof maxSegment);
  }
  if (from != nullptr && from->port() == 0) {
    // The source port is chosen at connect, per destination, not at bind: many communicators
    // made and destroyed (their closed connections linger in TIME_WAIT) then do not run out
    // of ephemeral ports for the address.
    const int one = 1;
    (void)::setsockopt(s.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  }
  if (from != nullptr && ::bind(s.get(), reinterpret_cast<const sockaddr*>(&from->ss), from->len)) {
    return systemError(fmt::format("cannot bind to {} to connect to {}: {}", from->toString(), what,
                                   std::strerror(errno)));
  }
  int rc = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr.ss), addr.len);
  *err = rc == 0 ? 0 : errno;
  if (*err == EINPROGRESS) {
    pollfd p{s.get(), POLLOUT, 0};
    int ready = 0;
    BRAID_TRY(pollUntil(&p, deadline, &ready));
    if (ready == 1) {
      socklen_t len = sizeof *err;
      getsockopt(s.get(), SOL_SOCKET, SO_ERROR, err, &len);
    } else {
      *err = ETIMEDOUT;
    }
  }
  if (*err == 0) *fd = std::move(s);
  return Status::ok();
}

Status connectTo(const SockAddr& addr, Deadline deadline, Fd* fd, const std::string& what,
                 const SockAddr* from, int* lastErrno, int maxSegment) {
  int delayMs = 10;
  // Each attempt is bounded: the kernel re-sends a lost SYN on the same source port (after
  // 1 s, 3 s, 7 s...), which an ECMP fabric hashes onto the same path: a dead link not yet
  // withdrawn kept the connection from forming until the deadline. A new socket gets a new
  // source port, and so, likely, another path: attempts of 100, 200, 400 ms, four of 500 ms
  // (a fabric with half its paths dead connects within 3 s but for 1 time in 128), then
  // 1 s and 2 s (round trips that long connect too).
  int attempt = 0;
  auto attemptMs = [&attempt] {
    const int k = attempt++;
    return k < 3 ? 100 << k : k < 7 ? 500 : k < 8 ? 1000 : 2000;
  };
  std::string lastErr = "timed out";
  while (true) {
    int err = 0;
    BRAID_TRY(connectAttempt(addr, std::min(deadline, deadlineIn(attemptMs())), from, what, fd,
                             &err, maxSegment));
    if (err == 0) return Status::ok();
    lastErr = std::strerror(err);
    if (lastErrno != nullptr) *lastErrno = err;
    bool retry = err == ECONNREFUSED || err == ECONNRESET || err == ETIMEDOUT ||
                 err == EHOSTUNREACH || err == ENETUNREACH || err == EAGAIN;
    if (!retry || Clock::now() >= deadline) break;
    BRAID_TRY(checkAbandon());
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(delayMs, msUntil(deadline))));
    delayMs = std::min(delayMs * 2, 200);
  }
  braidResult_t code = Clock::now() >= deadline ? braidTimeout : braidSystemError;
  return Status(code,
                fmt::format("cannot connect to {} at {}: {}", what, addr.toString(), lastErr));
}

namespace {
template <typename Op>
Status transferFull(int fd, size_t n, Deadline deadline, const std::string& what, bool reading,
                    Op op) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = op(done);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0 && reading) {
      return remoteError(fmt::format("{} closed the connection", what));
    }
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return remoteError(fmt::format("{} {} failed: {}", reading ? "reading from" : "writing to",
                                     what, std::strerror(errno)));
    }
    pollfd p{fd, static_cast<short>(reading ? POLLIN : POLLOUT), 0};
    int ready = 0;
    BRAID_TRY(pollUntil(&p, deadline, &ready));
    if (ready == 0) {
      return timeoutError(
          fmt::format("timed out {} {}", reading ? "reading from" : "writing to", what));
    }
  }
  return Status::ok();
}
}  // namespace

Status readFull(int fd, void* buf, size_t n, Deadline deadline, const std::string& what) {
  auto* p = static_cast<char*>(buf);
  return transferFull(fd, n, deadline, what, true,
                      [&](size_t done) { return ::recv(fd, p + done, n - done, MSG_DONTWAIT); });
}

Status writeFull(int fd, const void* buf, size_t n, Deadline deadline, const std::string& what) {
  auto* p = static_cast<const char*>(buf);
  return transferFull(fd, n, deadline, what, false, [&](size_t done) {
    return ::send(fd, p + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
  });
}

}  // namespace braid

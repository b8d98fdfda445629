// Small socket helpers shared by the bootstrap and the TCP transport: addresses, listening,
// connecting and exact reads/writes, every one bounded by a deadline.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

#include "src/core/status.h"

namespace braid {

// Milliseconds left until d, clamped to [0, INT_MAX].
int msUntil(Deadline d);

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;

  int family() const { return ss.ss_family; }
  int port() const;
  void setPort(int port);
  bool isLoopback() const;
  std::string toString() const;  // "1.2.3.4:5" or "[::1]:5"
  // Parses "host:port", "[v6]:port" or "v6%scope" forms; host names are resolved.
  static Status parse(const std::string& text, SockAddr* out);
};

// RAII file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

Status setNonBlocking(int fd);
void tuneSocket(int fd, int bufferBytes);  // TCP_NODELAY, buffers, keepalive
// The first line of a /proc or /sys file without its newline ("" when unreadable).
std::string readProcLine(const char* path);
// Whether TCP sockets of this process may use congestion control `name` (empty: the system's
// default, always fine); the error names BRAID_TCP_CONGESTION and what the kernel offers.
Status checkCongestionControl(const std::string& name);

// Open files: a communicator of N ranks holds sockets (and shared-memory doorbells) to its
// peers, and the rendezvous root one connection per rank at once, while Debian's default soft
// limit is 1024. Raises the soft limit to at least `want` where the hard limit allows (the
// same as `ulimit -n`, as Open MPI's launcher and Go's runtime do); never lowers it.
void raiseFileLimit(size_t want);
// How many connections may be in their authentication handshake at once: half the open-file
// limit (at least 64, at most `most`), so that strangers' connections cannot take all the
// files the process needs for its own.
size_t handshakeCap(size_t most);
// Whether a call that returned rc failed for want of a file (EMFILE, ENFILE).
inline bool ranOutOfFiles(int rc) { return rc < 0 && (errno == EMFILE || errno == ENFILE); }
// For an errno of EMFILE or ENFILE, what to do about it (the limits, `ulimit -n`); else "".
std::string fileLimitHint(int err);
// "<call>: <strerror(err)><fileLimitHint(err)>", e.g. callError("socket()", errno).
Status callError(const std::string& call, int err);
// Listens on addr (port 0 picks one); *bound receives the actual address.
Status listenOn(const SockAddr& addr, int backlog, Fd* fd, SockAddr* bound);
// One connection attempt, waiting at most until the deadline: *err is 0 (then *fd is connected,
// non-blocking) or the attempt's errno. A non-ok status only when no attempt could be made
// (socket() or binding to `from` failed). maxSegment > 0: the connection's segments are at most
// that many bytes both ways (TCP_MAXSEG: the peer learns it from the SYN).
Status connectAttempt(const SockAddr& addr, Deadline deadline, const SockAddr* from,
                      const std::string& what, Fd* fd, int* err, int maxSegment = 0);
// Connects (blocking with deadline), retrying refused, reset, unreachable and timed-out
// attempts until the deadline, each attempt from a new socket (a new source port) after at
// most 100 ms to 2 s (socket_util.cc); from (port 0) binds the local end first, so the connection
// leaves through that address's NIC. lastErr (optional): the errno of the last attempt that failed.
Status connectTo(const SockAddr& addr, Deadline deadline, Fd* fd, const std::string& what,
                 const SockAddr* from = nullptr, int* lastErr = nullptr, int maxSegment = 0);
// Small segments for the few bytes of bootstrap exchanges: they then cross a path whose MTU is
// smaller than the NICs' and that drops the ICMP saying so (a path-MTU black hole).
constexpr int kBootstrapMaxSegment = 1200;
// Why a connection set-up under way should stop before its deadline: a split whose parent
// communicator failed (a rank died) has nobody left to wait for. Set for the current thread
// by AbandonScope; connect retries, the waits of a connection attempt and of readFull and
// writeFull, and accepting (and the accepting threads they start, which install the same
// check) ask it at least every 200 ms. Ok: go on.
using AbandonCheck = std::function<Status()>;
class AbandonScope {
 public:
  explicit AbandonScope(const AbandonCheck* check);
  ~AbandonScope();
  AbandonScope(const AbandonScope&) = delete;
  AbandonScope& operator=(const AbandonScope&) = delete;

 private:
  const AbandonCheck* saved_;
};
const AbandonCheck* currentAbandonCheck();
Status checkAbandon();
// Exact transfers on a blocking-or-not socket, bounded by the deadline.
Status readFull(int fd, void* buf, size_t n, Deadline deadline, const std::string& what);
Status writeFull(int fd, const void* buf, size_t n, Deadline deadline, const std::string& what);

}  // namespace braid

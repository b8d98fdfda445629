#include "src/bootstrap/rendezvous.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "src/core/log.h"

namespace braid {
namespace {

constexpr uint8_t kTableOk = 0;
constexpr uint8_t kTableError = 1;

// The unique ids whose root (in this process) takes no ranks any more: their communicator was
// made, or its init failed. A unique id makes one communicator.
std::mutex finishedMu;
std::set<Secret> finishedRoots;
void markRootFinished(const Secret& s) {
  std::lock_guard<std::mutex> lock(finishedMu);
  finishedRoots.insert(s);
}
bool rootFinished(const Secret& s) {
  std::lock_guard<std::mutex> lock(finishedMu);
  return finishedRoots.count(s) != 0;
}

Status writeBlob(int fd, const std::string& b, Deadline d, const std::string& what) {
  uint32_t len = htonl(static_cast<uint32_t>(b.size()));
  BRAID_TRY(writeFull(fd, &len, 4, d, what));
  return writeFull(fd, b.data(), b.size(), d, what);
}

Status readBlob(int fd, std::string* b, Deadline d, const std::string& what) {
  uint32_t len = 0;
  BRAID_TRY(readFull(fd, &len, 4, d, what));
  len = ntohl(len);
  if (len > kMaxBlobBytes) {
    return remoteError(
        fmt::format("{} sent a {}-byte record (limit {})", what, len, kMaxBlobBytes));
  }
  b->assign(len, '\0');
  return readFull(fd, b->data(), len, d, what);
}

void sendError(int fd, const std::string& msg, Deadline d) {
  uint8_t st = kTableError;
  if (writeFull(fd, &st, 1, d, "rank").isOk()) (void)writeBlob(fd, msg, d, "rank");
}

void serveRoot(Fd listener, Secret secret, int64_t timeoutMs) {
  // Give up a little before the ranks do, so that they hear which ranks never came instead of
  // timing out themselves (or seeing this thread die with rank 0's process).
  int64_t margin = std::min(std::max<int64_t>(100, timeoutMs / 20), timeoutMs / 2);
  Deadline deadline = deadlineIn(timeoutMs - margin);
  int nranks = -1;
  std::map<int, AcceptedConn> joined;
  std::map<int, std::string> blobs;
  auto admit = [&](const Hello& h) -> Status {
    if (h.kind != ConnKind::kBootstrap) return remoteError("not a bootstrap connection");
    return Status::ok();
  };
  // A rank that does not fit the job (another size, a rank number out of range or taken): the
  // rendezvous fails and every rank hears why, the misfit too. The root goes on taking ranks in
  // (`late`), so that handshakes under way are not cut, until all came or none for two seconds.
  Status usage;
  std::optional<AcceptedConn> misfit;
  std::vector<AcceptedConn> late;
  auto lastSeen = Clock::now();
  auto quiet = [&] { return Clock::now() - lastSeen > std::chrono::seconds(2); };
  std::string error;
  auto onAccepted = [&](AcceptedConn&& c) -> bool {
    std::string blob;
    Status rs = readBlob(c.fd.get(), &blob, std::min(deadline, deadlineIn(10000)),
                         fmt::format("rank {}", c.hello.rank));
    if (!rs.isOk()) {
      LOG_WARN(kBoot, "rendezvous root: {}", rs.message());
      return false;
    }
    lastSeen = Clock::now();
    if (!usage.isOk()) {
      late.push_back(std::move(c));
      return false;
    }
    const Hello& h = c.hello;
    if (nranks < 0) {
      nranks = h.nranks;
      raiseFileLimit(256 + static_cast<size_t>(std::max(nranks, 0)));  // a connection per rank
    }
    std::string others;
    for (const auto& [r, conn] : joined) others += (others.empty() ? "" : ", ") + std::to_string(r);
    if (h.nranks != nranks) {
      usage = invalidUsage(fmt::format(
          "rank {} says the job has {} ranks, rank(s) {} said {}: the launcher's world size "
          "(WORLD_SIZE, BRAID_WORLD_SIZE, ...) differs between ranks",
          h.rank, h.nranks, others.empty() ? "before it" : others, nranks));
    } else if (h.rank < 0 || h.rank >= nranks) {
      usage =
          invalidUsage(fmt::format("rank {} is not a rank of a job of {} ranks", h.rank, nranks));
    } else if (joined.count(h.rank) != 0) {
      usage = invalidUsage(
          fmt::format("rank {} joined twice: two processes were given the same rank", h.rank));
    }
    if (!usage.isOk()) {
      misfit = std::move(c);
      return false;
    }
    int r = h.rank;
    blobs[r] = std::move(blob);
    joined.emplace(r, std::move(c));
    return static_cast<int>(joined.size()) == nranks;
  };
  auto failedAndDone = [&] {
    return !usage.isOk() &&
           (quiet() || joined.size() + late.size() + 1 >= static_cast<size_t>(nranks));
  };
  Status s = acceptAuthenticated(std::vector<int>{listener.get()}, secret, deadline, admit,
                                 onAccepted, "the ranks at the rendezvous root", failedAndDone);
  markRootFinished(secret);
  if (s.isOk() && !usage.isOk()) s = usage;
  if (!s.isOk()) {
    std::string missing;
    for (int r = 0; r < nranks; ++r) {
      if (joined.count(r) == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    if (!usage.isOk()) {
      error = usage.message();
    } else if (s.code() != braidTimeout) {
      error = fmt::format("{} (rank(s) {} of {} had not joined)", s.message(), missing, nranks);
    } else {
      error = nranks < 0 ? "no rank joined the rendezvous in time"
                         : fmt::format("rank(s) {} of {} never joined the rendezvous within {} ms",
                                       missing, nranks, timeoutMs);
    }
  }
  if (error.empty()) {
    // A rank whose connection closed while it waited for the others (its process exited or
    // was killed) would never take its data connections: the others would wait for it until
    // their timeout. The rendezvous fails now, for everyone, naming it.
    std::string gone;
    for (auto& [r, c] : joined) {
      pollfd p{c.fd.get(), POLLRDHUP, 0};
      if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        gone += (gone.empty() ? "" : ", ") + std::to_string(r);
      }
    }
    if (!gone.empty()) {
      error = fmt::format(
          "rank(s) {} of {} left the rendezvous before every rank had joined (the process "
          "exited or was killed)",
          gone, nranks);
      s = remoteError(error);
    }
  }
  Deadline sendBy = deadlineIn(std::max<int64_t>(timeoutMs, 10000));
  if (!error.empty()) {
    LOG_WARN(kBoot, "rendezvous root: {}", error);
    // Highest rank first, rank 0 last: rank 0 usually lives in this process and may exit as
    // soon as it has its answer, taking this thread with it. When the root gave up early,
    // rank 0 hears it after the ranks not taken in yet, below.
    const bool early = s.code() != braidTimeout && nranks > 0;
    std::vector<AcceptedConn*> all;
    if (misfit) all.push_back(&*misfit);
    for (AcceptedConn& c : late) all.push_back(&c);
    for (auto it = joined.rbegin(); it != joined.rend(); ++it) all.push_back(&it->second);
    AcceptedConn* zero = nullptr;
    if (early) {
      auto it = std::find_if(all.begin(), all.end(),
                             [](const AcceptedConn* c) { return c->hello.rank == 0; });
      if (it != all.end()) zero = *it;
    }
    std::set<int> told;  // distinct ranks that know
    for (AcceptedConn* c : all) {
      if (c->hello.rank >= 0 && c->hello.rank < nranks) told.insert(c->hello.rank);
      if (c == zero) continue;
      sendError(c->fd.get(), error, sendBy);
      c->fd = Fd();  // closed now: frees what it held (the root may have run out of files)
    }
    if (early && told.size() < static_cast<size_t>(nranks)) {
      // The root gave up early (out of files, a rank that does not fit): the ranks it has not
      // taken in would wait for the timeout, queued or retrying. Take them in and tell them
      // too, until all were told or none came for two seconds (those whose handshake the
      // failure cut were told by the closed connection).
      lastSeen = Clock::now();
      auto tell = [&](AcceptedConn&& c) -> bool {
        std::string blob;  // read first: closing with it unread would reset the connection
        if (readBlob(c.fd.get(), &blob, std::min(deadline, deadlineIn(10000)), "rank").isOk()) {
          sendError(c.fd.get(), error, sendBy);
        }
        lastSeen = Clock::now();
        if (c.hello.rank >= 0 && c.hello.rank < nranks) told.insert(c.hello.rank);
        return told.size() >= static_cast<size_t>(nranks);
      };
      (void)acceptAuthenticated(std::vector<int>{listener.get()}, secret, deadline, admit, tell,
                                "the remaining ranks at the rendezvous root", quiet);
    }
    if (zero) sendError(zero->fd.get(), error, sendBy);
    return;
  }
  std::string table;
  uint32_t n = htonl(static_cast<uint32_t>(nranks));
  table.append(reinterpret_cast<const char*>(&n), 4);
  for (auto& [r, b] : blobs) {
    uint32_t len = htonl(static_cast<uint32_t>(b.size()));
    table.append(reinterpret_cast<const char*>(&len), 4);
    table += b;
  }
  for (auto it = joined.rbegin(); it != joined.rend(); ++it) {  // rank 0 last, as above
    auto& [r, c] = *it;
    uint8_t st = kTableOk;
    Status s = writeFull(c.fd.get(), &st, 1, sendBy, "rank");
    if (s.isOk()) s = writeFull(c.fd.get(), table.data(), table.size(), sendBy, "rank");
    if (!s.isOk())
      LOG_WARN(kBoot, "rendezvous root: sending the table to rank {}: {}", r, s.message());
  }
  LOG_INFO(kBoot, "rendezvous root: {} ranks joined", nranks);
}

}  // namespace

Status startRootServer(const SockAddr& bindAddr, const Secret& secret, int64_t timeoutMs,
                       SockAddr* bound) {
  Fd listener;
  BRAID_TRY(listenOn(bindAddr, 1024, &listener, bound));
  // The connections it accepts take small segments (socket_util.h: kBootstrapMaxSegment).
  const int mss = kBootstrapMaxSegment;
  (void)::setsockopt(listener.get(), IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
  std::thread(serveRoot, std::move(listener), secret, timeoutMs).detach();
  return Status::ok();
}

Status rendezvous(const SockAddr& root, const Secret& secret, int rank, int nranks,
                  const std::string& blob, Deadline deadline, std::vector<std::string>* table) {
  std::string what = fmt::format("the rendezvous root {}", root.toString());
  if (rootFinished(secret)) {
    return invalidUsage(
        "this unique id was used already: its rendezvous is over (a unique id makes one "
        "communicator; call braidGetUniqueId for each)");
  }
  Fd fd;
  Hello h;
  h.kind = ConnKind::kBootstrap;
  h.rank = rank;
  h.nranks = nranks;
  while (true) {
    int err = 0;
    Status c =
        connectTo(root, deadline, &fd, "the rendezvous root", nullptr, &err, kBootstrapMaxSegment);
    if (!c.isOk() && err == ECONNREFUSED) {
      return Status(c.code(),
                    c.message() +
                        " (nothing listens there: the process that runs the rendezvous root, the "
                        "one that called braidGetUniqueId or rank 0, has not started it or has "
                        "exited, or the unique id was used already: each makes one communicator)");
    }
    BRAID_TRY(c);
    bool greeted = false;
    Status s = connectorHandshake(fd.get(), secret, h, deadline, what, &greeted);
    if (s.isOk()) break;
    // Closed before the greeting: the root turned the connection away (too many others in
    // their handshake: a stranger's flood) and may take it in a moment.
    if (greeted || msUntil(deadline) < 200) return s;
    LOG_DEBUG(kBoot, "{} closed the connection before its greeting: trying again", what);
    fd = Fd();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  BRAID_TRY(writeBlob(fd.get(), blob, deadline, what));
  uint8_t st = 0;
  Status s = readFull(fd.get(), &st, 1, deadline, what);
  if (s.code() == braidTimeout) {
    return timeoutError(
        fmt::format("timed out waiting at {} for all {} ranks to join", what, nranks));
  }
  BRAID_TRY(s);
  if (st == kTableError) {
    std::string msg;
    BRAID_TRY(readBlob(fd.get(), &msg, deadline, what));
    const braidResult_t code = msg.find("never joined") != std::string::npos ? braidTimeout
                               : msg.find("left the rendezvous") != std::string::npos
                                   ? braidRemoteError
                                   : braidInvalidUsage;
    return Status(code, fmt::format("rendezvous failed: {}", msg));
  }
  if (st != kTableOk) return remoteError(fmt::format("{} sent a bad status byte", what));
  uint32_t n = 0;
  BRAID_TRY(readFull(fd.get(), &n, 4, deadline, what));
  if (ntohl(n) != static_cast<uint32_t>(nranks)) {
    return remoteError(
        fmt::format("{} sent a table of {} ranks, expected {}", what, ntohl(n), nranks));
  }
  table->assign(nranks, {});
  for (int r = 0; r < nranks; ++r) BRAID_TRY(readBlob(fd.get(), &(*table)[r], deadline, what));
  return Status::ok();
}

}  // namespace braid

// The C ABI: communicators, streams, errors, version. No exception crosses this boundary.
#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <new>

#include "src/bootstrap/rendezvous.h"
#include "src/bootstrap/unique_id.h"
#include "src/core/api_guard.h"
#include "src/core/handles.h"
#include "src/core/log.h"
#include "src/topology/netif.h"

using braid::guard;
using braid::invalidArgument;
using braid::invalidUsage;
using braid::Status;

extern "C" {

const char* braidGetErrorString(braidResult_t r) {
  switch (r) {
    case braidSuccess:
      return "no error";
    case braidUnhandledError:
      return "unhandled error";
    case braidSystemError:
      return "system error (a system call or the network stack failed)";
    case braidInternalError:
      return "internal error (a bug in braid)";
    case braidInvalidArgument:
      return "invalid argument";
    case braidInvalidUsage:
      return "invalid usage";
    case braidRemoteError:
      return "remote error (a peer failed, left, or the connection broke)";
    case braidInProgress:
      return "operation in progress";
    case braidTimeout:
      return "timeout";
    default:
      return "unknown result code";
  }
}

const char* braidGetLastError(braidComm_t comm) {
  // A copy per call, in a ring per thread: the text stays as it was when asked, through later
  // failing calls and the next three braidGetLastError calls of this thread (the thread's last
  // error itself is replaced by every failure: a pointer to it changed, or dangled, under a
  // caller who kept it).
  static thread_local std::array<std::string, 4> ring;
  static thread_local size_t next = 0;
  std::string& copy = ring[next++ % ring.size()];
  // In a child of fork() the parent's communicators refuse every call, and the refusal is the
  // thread's error (their own state, locks included, is the parent's: not touched there).
  const bool own = comm != nullptr && braid::handleAlive(comm) &&
                   comm->impl->forkGeneration() == braid::forkGeneration();
  copy = own ? comm->impl->lastError() : std::string(braid::threadLastError());
  return copy.c_str();
}

braidResult_t braidGetVersion(int* version) {
  if (version == nullptr) return braid::report(invalidArgument("version is NULL"));
  *version = BRAID_VERSION_CODE;
  return braidSuccess;
}

braidResult_t braidGetUniqueId(braidUniqueId* uniqueId) {
  return guard(nullptr, [&]() -> Status {
    if (uniqueId == nullptr) return invalidArgument("uniqueId is NULL");
    braid::Config cfg;
    BRAID_TRY(braid::Config::fromEnv(&cfg));
    braid::NetIf nif;
    BRAID_TRY(braid::chooseLocalAddress(cfg, nullptr, &nif));
    braid::UniqueIdData d;
    BRAID_TRY(braid::randomBytes(d.secret.data(), d.secret.size()));
    BRAID_TRY(braid::startRootServer(nif.addr, d.secret, cfg.timeoutMs, &d.root));
    braid::encodeUniqueId(d, uniqueId);
    LOG_INFO(kBoot, "unique id: rendezvous root at {} ({})", d.root.toString(), nif.name);
    return Status::ok();
  });
}

braidResult_t braidUniqueIdToString(const braidUniqueId* uniqueId, char* buf, size_t len) {
  if (uniqueId == nullptr || buf == nullptr) {
    return braid::report(invalidArgument("uniqueId and buf must not be NULL"));
  }
  if (len < 2 * BRAID_UNIQUE_ID_BYTES + 1) {
    return braid::report(invalidArgument(fmt::format("buffer of {} bytes is too small (need {})",
                                                     len, 2 * BRAID_UNIQUE_ID_BYTES + 1)));
  }
  std::string hex =
      braid::toHex(reinterpret_cast<const uint8_t*>(uniqueId->internal), BRAID_UNIQUE_ID_BYTES);
  std::memcpy(buf, hex.c_str(), hex.size() + 1);
  return braidSuccess;
}

braidResult_t braidUniqueIdFromString(const char* str, braidUniqueId* uniqueId) {
  if (str == nullptr || uniqueId == nullptr) {
    return braid::report(invalidArgument("str and uniqueId must not be NULL"));
  }
  braidUniqueId id;
  if (!braid::fromHex(str, reinterpret_cast<uint8_t*>(id.internal), BRAID_UNIQUE_ID_BYTES)) {
    return braid::report(
        invalidArgument(fmt::format("'{:.20}...' is not a unique id ({} hex digits expected)", str,
                                    2 * BRAID_UNIQUE_ID_BYTES)));
  }
  braid::UniqueIdData d;
  if (braidResult_t r = braid::report(braid::decodeUniqueId(id, &d)); r != braidSuccess) return r;
  *uniqueId = id;
  return braidSuccess;
}

braidResult_t braidCommInitRank(braidComm_t* comm, int nranks, braidUniqueId commId, int rank) {
  const bool inGroup = braid::groupOpen();
  const braidResult_t r = guard(nullptr, [&]() -> Status {
    if (comm == nullptr) return invalidArgument("comm (the output pointer) is NULL");
    *comm = nullptr;
    if (nranks < 1) return invalidArgument(fmt::format("nranks {} must be at least 1", nranks));
    if (rank < 0 || rank >= nranks) {
      return invalidArgument(fmt::format("rank {} is out of range [0, {})", rank, nranks));
    }
    braid::UniqueIdData d;
    BRAID_TRY(braid::decodeUniqueId(commId, &d));
    braid::Config cfg;
    BRAID_TRY(braid::Config::fromEnv(&cfg));
    auto init = [nranks, rank, d, cfg](std::shared_ptr<braid::Comm>* c) {
      return braid::Comm::initFromRoot(nranks, rank, d.root, d.secret, cfg, c);
    };
    if (braid::groupOpen()) {
      // NCCL's way of making several ranks' communicators from one thread: each init waits
      // for the others, so they all run at braidGroupEnd, together.
      braid::groupDeferInit(comm, std::move(init));
      return Status::ok();
    }
    std::shared_ptr<braid::Comm> c;
    BRAID_TRY(init(&c));
    *comm = braid::makeCommHandle(std::move(c));
    return Status::ok();
  });
  // Refused inside a group: the group's end runs nothing of it (the other inits neither: they
  // would wait for this rank until the timeout).
  if (inGroup && r != braidSuccess) braid::groupNoteError(Status(r, braid::threadLastError()));
  return r;
}

braidResult_t braidCommSplit(braidComm_t comm, int color, int key, braidComm_t* newcomm) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  return guard(c, [&]() -> Status {
    if (newcomm == nullptr) return invalidArgument("newcomm is NULL");
    *newcomm = nullptr;
    if (color < 0) color = BRAID_SPLIT_NOCOLOR;  // any negative color, as braid.h says
    if (braid::groupOpen()) {
      Status e = invalidUsage("braidCommSplit cannot be called inside a group");
      braid::groupNoteError(e);
      return e;
    }
    const braid::Comm::SoleCaller sole(c, "braidCommSplit");
    BRAID_TRY(sole.status());
    BRAID_TRY(c->asyncError());
    std::shared_ptr<braid::Comm> child;
    BRAID_TRY(sole.finish(c->split(color, key, &child)));
    if (child) *newcomm = braid::makeCommHandle(std::move(child));
    return Status::ok();
  });
}

braidResult_t braidCommDestroy(braidComm_t comm) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (!braid::unregisterHandle(comm)) {
    return braid::report(invalidUsage("comm was destroyed concurrently"));
  }
  braid::retireHandle(comm);
  // The handle is gone either way; an error says that what it sent last may not have arrived.
  return braid::report(c->shutdown());
}

braidResult_t braidCommAbort(braidComm_t comm) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  // With calls of this rank in flight (or queued), they fail now and the peers are told. With
  // none, what this rank's finished calls sent may still be on its way (a peer's call of the
  // same collective still receiving it): the communicator leaves as at destroy, its queues
  // written out, for at most a second.
  // (shutdown(why) fails the calls in flight.)
  const char* why = "the communicator was aborted by braidCommAbort";
  if (!braid::unregisterHandle(comm)) {
    c->abort(why);  // another thread destroys it: the calls in flight end now all the same
    return braidSuccess;
  }
  braid::retireHandle(comm);
  (void)c->shutdown(why);
  return braidSuccess;
}

braidResult_t braidCommCount(const braidComm_t comm, int* count) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (count == nullptr) return braid::report(invalidArgument("count is NULL"), c);
  *count = c->nranks();
  return braidSuccess;
}

braidResult_t braidCommUserRank(const braidComm_t comm, int* rank) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (rank == nullptr) return braid::report(invalidArgument("rank is NULL"), c);
  *rank = c->rank();
  return braidSuccess;
}

braidResult_t braidCommGetAsyncError(braidComm_t comm, braidResult_t* asyncError) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (asyncError == nullptr) return braid::report(invalidArgument("asyncError is NULL"), c);
  *asyncError = c->asyncError().code();
  return braidSuccess;
}

braidResult_t braidCommRegister(braidComm_t comm, void* buff, size_t size, void** handle) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (handle == nullptr) return braid::report(invalidArgument("handle is NULL"), c);
  *handle = nullptr;
  if (buff == nullptr || size == 0) {
    return braid::report(invalidArgument("buff is NULL or size is 0"), c);
  }
  if (c->transports() == nullptr) return braidSuccess;
  return braid::report(c->transports()->registerBuffer(buff, size, handle), c);
}

braidResult_t braidCommDeregister(braidComm_t comm, void* handle) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  // NULL: what braidCommRegister gives where nothing needs registration.
  if (handle == nullptr) return braidSuccess;
  if (c->transports() == nullptr) {
    return braid::report(
        invalidArgument(fmt::format("handle {} is not one braidCommRegister returned on this "
                                    "communicator (it has no transport)",
                                    handle)),
        c);
  }
  return braid::report(c->transports()->release(handle), c);
}

braidResult_t braidCommGetPathStats(braidComm_t comm, braidPathStats_t* stats, int capacity,
                                    int* count) {
  std::shared_ptr<braid::Comm> c;
  if (braidResult_t r = braid::report(braid::lookupComm(comm, &c)); r != braidSuccess) return r;
  if (count == nullptr) return braid::report(invalidArgument("count is NULL"), c);
  if (capacity < 0 || (capacity > 0 && stats == nullptr)) {
    return braid::report(invalidArgument("stats is NULL or capacity is negative"), c);
  }
  std::vector<braid::PathStatsRow> rows;
  if (c->transports() != nullptr) c->transports()->pathStats(&rows);
  for (size_t i = 0; i < rows.size() && static_cast<int>(i) < capacity; ++i) {
    const braid::PathStatsRow& r = rows[i];
    braidPathStats_t& o = stats[i];
    o = braidPathStats_t{};
    o.peer = r.peer;
    o.path = r.path;
    o.state = r.state == "up"        ? braidPathUp
              : r.state == "standby" ? braidPathStandby
                                     : braidPathDead;
    std::snprintf(o.transport, sizeof o.transport, "%s", r.transport.c_str());
    std::snprintf(o.local, sizeof o.local, "%s", r.local.c_str());
    std::snprintf(o.remote, sizeof o.remote, "%s", r.remote.c_str());
    o.bytesSent = r.bytesSent;
    o.bytesReceived = r.bytesReceived;
    o.chunksSent = r.chunksSent;
    o.chunksReceived = r.chunksReceived;
    o.retransmits = r.retransmits;
    o.failures = r.failures;
    o.readmissions = r.readmissions;
    o.rehashes = r.rehashes;
  }
  *count = static_cast<int>(rows.size());
  return braidSuccess;
}

braidResult_t braidStreamCreate(braidStream_t* stream) {
  return guard(nullptr, [&]() -> Status {
    if (stream == nullptr) return invalidArgument("stream (the output pointer) is NULL");
    auto* h = new braidStream{std::make_shared<braid::StreamQueue>()};
    braid::registerHandle(h);
    *stream = h;
    return Status::ok();
  });
}

braidResult_t braidStreamDestroy(braidStream_t stream) {
  if (stream == nullptr) return braid::report(invalidArgument("stream is NULL"));
  std::shared_ptr<braid::StreamQueue> s;
  if (braidResult_t r = braid::report(braid::lookupStream(stream, &s)); r != braidSuccess) return r;
  if (!braid::unregisterHandle(stream))
    return braid::report(invalidUsage("stream destroyed twice"));
  braid::retireHandle(stream);
  return braidSuccess;  // the worker finishes queued work when the last reference goes
}

braidResult_t braidStreamSynchronize(braidStream_t stream) {
  if (stream == nullptr) return braid::report(invalidArgument("stream is NULL"));
  std::shared_ptr<braid::StreamQueue> s;
  if (braidResult_t r = braid::report(braid::lookupStream(stream, &s)); r != braidSuccess) return r;
  return braid::report(s->synchronize());
}

braidResult_t braidStreamQuery(braidStream_t stream) {
  if (stream == nullptr) return braid::report(invalidArgument("stream is NULL"));
  std::shared_ptr<braid::StreamQueue> s;
  if (braidResult_t r = braid::report(braid::lookupStream(stream, &s)); r != braidSuccess) return r;
  if (s->busy()) return braidInProgress;
  return braid::report(s->takeError());
}

}  // extern "C"

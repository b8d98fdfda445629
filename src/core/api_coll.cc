// The C ABI of the collectives: every argument is checked before anything is built or sent;
// a bad call returns a clear error and consumes no sequence number.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "collectives/algorithms.h"
#include "src/core/api_guard.h"
#include "src/core/handles.h"
#include "src/core/log.h"
#include "src/engine/executor.h"

namespace braid {
namespace {

// No buffer may span more than half the address space (so pointer arithmetic cannot wrap).
constexpr size_t kMaxSpan = static_cast<size_t>(PTRDIFF_MAX);

bool mulOverflows(size_t a, size_t b, size_t* out) {
  return __builtin_mul_overflow(a, b, out) || *out > kMaxSpan;
}

bool overlaps(const void* a, size_t an, const void* b, size_t bn) {
  auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}

struct Call {
  braidComm_t comm;
  braidStream_t stream;
  CollArgs a;
  // Datatype and op as the caller passed them: read as plain ints (the C caller may pass any
  // value, and loading an out-of-range enum in C++ is undefined), validated before use.
  int dtRaw = 0;
  int opRaw = 0;
  bool reduces = false;  // op must be valid
  bool rooted = false;   // root must be in range
};

Status checkBuffer(const void* p, size_t bytes, const char* name, const char* coll) {
  if (p == nullptr && bytes > 0) {
    return invalidArgument(fmt::format("{}: {} is NULL with a non-zero count", coll, name));
  }
  return Status::ok();
}

// Buffers of the same size: the same (in place) or apart.
Status checkInPlace(const void* send, const void* recv, size_t bytes, const char* coll) {
  if (send != recv && overlaps(send, bytes, recv, bytes)) {
    return invalidArgument(fmt::format(
        "{}: send and receive buffers overlap partially (in place means sendbuff == recvbuff)",
        coll));
  }
  return Status::ok();
}

Status validate(const Call& c, Comm& comm, size_t* unitBytes) {
  const CollArgs& a = c.a;
  const char* coll = collName(a.kind);
  const int n = comm.nranks(), me = comm.rank();
  if (c.rooted && (a.root < 0 || a.root >= n)) {
    return invalidArgument(fmt::format(
        "{}: {} {} is out of range [0, {})", coll,
        a.kind == CollKind::kSend || a.kind == CollKind::kRecv ? "peer" : "root", a.root, n));
  }
  size_t bytes = 0, total = 0;
  if (mulOverflows(a.count, dtypeSize(a.dt), &bytes) ||
      mulOverflows(bytes, static_cast<size_t>(n), &total)) {
    return invalidArgument(fmt::format("{}: count {} of {} overflows the address space", coll,
                                       a.count, dtypeName(a.dt)));
  }
  *unitBytes = bytes;
  switch (a.kind) {
    case CollKind::kAllReduce:
      BRAID_TRY(checkBuffer(a.send, bytes, "sendbuff", coll));
      BRAID_TRY(checkBuffer(a.recv, bytes, "recvbuff", coll));
      BRAID_TRY(checkInPlace(a.send, a.recv, bytes, coll));
      break;
    case CollKind::kBroadcast:  // sendbuff is read at the root only
      BRAID_TRY(checkBuffer(a.recv, bytes, "recvbuff", coll));
      if (me == a.root) {
        BRAID_TRY(checkBuffer(a.send, bytes, "sendbuff (at the root)", coll));
        BRAID_TRY(checkInPlace(a.send, a.recv, bytes, coll));
      }
      break;
    case CollKind::kReduce:  // recvbuff is written at the root only
      BRAID_TRY(checkBuffer(a.send, bytes, "sendbuff", coll));
      if (me == a.root) {
        BRAID_TRY(checkBuffer(a.recv, bytes, "recvbuff (at the root)", coll));
        BRAID_TRY(checkInPlace(a.send, a.recv, bytes, coll));
      }
      break;
    case CollKind::kAllGather:
      BRAID_TRY(checkBuffer(a.send, bytes, "sendbuff", coll));
      BRAID_TRY(checkBuffer(a.recv, total, "recvbuff", coll));
      if (a.send != static_cast<char*>(a.recv) + me * bytes &&
          overlaps(a.send, bytes, a.recv, total)) {
        return invalidArgument(fmt::format(
            "{}: buffers overlap; in place means sendbuff == recvbuff + rank*sendcount", coll));
      }
      break;
    case CollKind::kReduceScatter:
      BRAID_TRY(checkBuffer(a.send, total, "sendbuff", coll));
      BRAID_TRY(checkBuffer(a.recv, bytes, "recvbuff", coll));
      if (a.recv != static_cast<const char*>(a.send) + me * bytes &&
          overlaps(a.send, total, a.recv, bytes)) {
        return invalidArgument(fmt::format(
            "{}: buffers overlap; in place means recvbuff == sendbuff + rank*recvcount", coll));
      }
      break;
    case CollKind::kAllToAll:
      BRAID_TRY(checkBuffer(a.send, total, "sendbuff", coll));
      BRAID_TRY(checkBuffer(a.recv, total, "recvbuff", coll));
      if (a.send != a.recv && overlaps(a.send, total, a.recv, total)) {
        return invalidArgument(fmt::format("{}: send and receive buffers overlap partially", coll));
      }
      break;
    case CollKind::kAllToAllv: {
      const size_t esz = dtypeSize(a.dt);
      size_t sendSpan = 0, recvSpan = 0;
      for (int p = 0; p < n; ++p) {
        size_t e1, e2;
        if (__builtin_add_overflow(a.sdispls[p], a.sendcounts[p], &e1) ||
            __builtin_add_overflow(a.rdispls[p], a.recvcounts[p], &e2) || e1 > kMaxSpan ||
            e2 > kMaxSpan || mulOverflows(e1, esz, &e1) || mulOverflows(e2, esz, &e2)) {
          return invalidArgument(
              fmt::format("{}: counts/displacements for peer {} overflow", coll, p));
        }
        sendSpan = std::max(sendSpan, e1);
        recvSpan = std::max(recvSpan, e2);
      }
      if (a.sendcounts[me] != a.recvcounts[me]) {
        return invalidArgument(
            fmt::format("{}: sendcounts[{}]={} differs from recvcounts[{}]={} "
                        "(this rank's own block)",
                        coll, me, a.sendcounts[me], me, a.recvcounts[me]));
      }
      BRAID_TRY(checkBuffer(a.send, sendSpan, "sendbuff", coll));
      BRAID_TRY(checkBuffer(a.recv, recvSpan, "recvbuff", coll));
      if (a.send != a.recv && overlaps(a.send, sendSpan, a.recv, recvSpan)) {
        return invalidArgument(fmt::format("{}: send and receive buffers overlap partially", coll));
      }
      // Two peers' blocks written to the same place: which one lands would depend on timing
      // (MPI calls it erroneous).
      std::vector<int> order;
      for (int p = 0; p < n; ++p) {
        if (a.recvcounts[p] > 0) order.push_back(p);
      }
      std::sort(order.begin(), order.end(),
                [&](int x, int y) { return a.rdispls[x] < a.rdispls[y]; });
      for (size_t i = 1; i < order.size(); ++i) {
        const int x = order[i - 1], y = order[i];
        if (a.rdispls[x] + a.recvcounts[x] > a.rdispls[y]) {
          return invalidArgument(fmt::format(
              "{}: the receive blocks of peers {} (rdispls {}, {} elements) and {} (rdispls {}, "
              "{} elements) overlap",
              coll, x, a.rdispls[x], a.recvcounts[x], y, a.rdispls[y], a.recvcounts[y]));
        }
      }
      break;
    }
    case CollKind::kSend:
      BRAID_TRY(checkBuffer(a.send, bytes, "sendbuff", coll));
      break;
    case CollKind::kRecv:
      BRAID_TRY(checkBuffer(a.recv, bytes, "recvbuff", coll));
      break;
    case CollKind::kBarrier:
      break;
  }
  return Status::ok();
}

Status issueChecked(Call& c, const std::shared_ptr<Comm>& comm) {
  std::shared_ptr<StreamQueue> stream;
  BRAID_TRY(lookupStream(c.stream, &stream));
  const char* coll = collName(c.a.kind);
  if (!validDtype(c.dtRaw)) {
    return invalidArgument(fmt::format("{}: datatype {} is not a braidDataType_t", coll, c.dtRaw));
  }
  if (c.reduces && !validOp(c.opRaw)) {
    return invalidArgument(fmt::format("{}: op {} is not a braidRedOp_t", coll, c.opRaw));
  }
  c.a.dt = static_cast<braidDataType_t>(c.dtRaw);
  if (c.reduces) c.a.op = static_cast<braidRedOp_t>(c.opRaw);
  size_t unit = 0;
  BRAID_TRY(validate(c, *comm, &unit));
  if (Status e = comm->hasAsyncError() ? comm->asyncError() : Status::ok(); !e.isOk()) {
    return Status(e.code(), fmt::format("the communicator failed earlier and cannot be used: {}",
                                        e.message()));
  }
  if (c.a.count == 0 && c.a.kind != CollKind::kAllToAllv && c.a.kind != CollKind::kBarrier &&
      c.a.kind != CollKind::kSend && c.a.kind != CollKind::kRecv) {
    // Nothing to move, and every rank passes the same count: done, as in NCCL and MPI. The
    // call still takes its number, so that every rank's next call has the same one.
    // (All-to-allv with zero counts is not skipped: its counts may differ between ranks.)
    // A peer that sends for this call made another one (call_check.h): the communicator
    // fails then, at the first message.
    return comm->checkCall(comm->nextCollectiveTagBase(c.a));
  }
  const bool p2p = c.a.kind == CollKind::kSend || c.a.kind == CollKind::kRecv;
  if (p2p && c.a.root == comm->rank() && !groupOpen()) {
    // Refused before it takes a number: a taken one would put every later send to self out
    // of step with the receives from self.
    return invalidUsage(fmt::format(
        "{} to or from self (rank {}) outside a group has no matching partner: put the send "
        "and the receive inside braidGroupStart/braidGroupEnd",
        coll, c.a.root));
  }
  if (p2p && !stream && !groupOpen() && c.a.root != comm->rank()) {
    // A blocking send or receive: the one step of collectives/p2p.cc (slot 0), run here.
    const bool send = c.a.kind == CollKind::kSend;
    const uint64_t tagBase =
        send ? comm->nextSendTagBase(c.a.root) : comm->nextRecvTagBase(c.a.root);
    Status s;
    {
      const Comm::InFlight call(comm.get());
      s = executeP2p(comm.get(), coll, send, c.a.root, tagBase,
                     send ? const_cast<void*>(c.a.send) : c.a.recv, unit);
    }
    if (!s.isOk()) LOG_WARN(kColl, "{}", s.message());  // guard() records it as last error
    return s;
  }
  if (c.a.kind == CollKind::kAllToAll) {
    // All-to-all is all-to-all(v) with uniform blocks.
    const size_t n = static_cast<size_t>(comm->nranks());
    c.a.sendcounts.assign(n, c.a.count);
    c.a.recvcounts.assign(n, c.a.count);
    c.a.sdispls.resize(n);
    c.a.rdispls.resize(n);
    for (size_t p = 0; p < n; ++p) c.a.sdispls[p] = c.a.rdispls[p] = p * c.a.count;
  }
  if (!stream && !groupOpen() && fastboxApplies(c.a, *comm)) {
    // Small, blocking, on a communicator whose ranks share memory: run it here and now. It
    // takes its call number as every call does (the peers' numbers stay in step), and
    // looks for peers' messages of another call only if it has to wait (fastbox.cc).
    const uint64_t tagBase = comm->nextCollectiveTagBase(c.a);
    Status s;
    {
      const Comm::InFlight call(comm.get());
      s = fastboxRun(c.a, *comm, tagBase);
    }
    if (!s.isOk()) LOG_WARN(kColl, "{}", s.message());
    return s;
  }
  uint64_t tagBase = c.a.kind == CollKind::kSend   ? comm->nextSendTagBase(c.a.root)
                     : c.a.kind == CollKind::kRecv ? comm->nextRecvTagBase(c.a.root)
                                                   : comm->nextCollectiveTagBase(c.a);
  if (!p2p) BRAID_TRY(comm->checkCall(tagBase));
  auto sched = std::make_unique<Schedule>(comm, collName(c.a.kind), tagBase);
  BRAID_TRY(buildCollective(c.a, sched.get()));
  Task t;
  t.schedules.push_back(std::move(sched));
  return submit(std::move(t), stream);
}

braidResult_t issue(Call&& c) {
  std::shared_ptr<Comm> comm;
  if (Status s = lookupComm(c.comm, &comm); !s.isOk()) {
    groupNoteError(s);
    return report(s);
  }
  const braidResult_t r = guard(comm, [&]() -> Status {
    // Sends and receives are numbered per peer and direction, and may come from several
    // threads at once (as in MPI); collectives are numbered in call order: one thread at a time.
    if (c.a.kind == CollKind::kSend || c.a.kind == CollKind::kRecv) return issueChecked(c, comm);
    const Comm::SoleCaller sole(comm, collName(c.a.kind));
    BRAID_TRY(sole.status());
    return sole.finish(issueChecked(c, comm));
  });
  // (Also an exception guard() turned into an error.)
  if (r != braidSuccess) groupNoteError(Status(r, threadLastError()));
  return r;
}

template <typename E>
int rawEnum(const E& e) {
  static_assert(sizeof(E) == sizeof(int));
  int r;
  std::memcpy(&r, &e, sizeof r);
  return r;
}

Call makeCall(CollKind kind, braidComm_t comm, braidStream_t stream, const void* send, void* recv,
              size_t count, int dtRaw) {
  Call c{comm, stream, {}};
  c.a.kind = kind;
  c.a.send = send;
  c.a.recv = recv;
  c.a.count = count;
  c.dtRaw = dtRaw;
  return c;
}

}  // namespace
}  // namespace braid

using braid::CollKind;
using braid::makeCall;
using braid::rawEnum;

extern "C" {

braidResult_t braidAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                             braidDataType_t datatype, braidRedOp_t op, braidComm_t comm,
                             braidStream_t stream) {
  auto c =
      makeCall(CollKind::kAllReduce, comm, stream, sendbuff, recvbuff, count, rawEnum(datatype));
  c.opRaw = rawEnum(op);
  c.reduces = true;
  return braid::issue(std::move(c));
}

braidResult_t braidBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                             braidDataType_t datatype, int root, braidComm_t comm,
                             braidStream_t stream) {
  auto c =
      makeCall(CollKind::kBroadcast, comm, stream, sendbuff, recvbuff, count, rawEnum(datatype));
  c.a.root = root;
  c.rooted = true;
  return braid::issue(std::move(c));
}

braidResult_t braidReduce(const void* sendbuff, void* recvbuff, size_t count,
                          braidDataType_t datatype, braidRedOp_t op, int root, braidComm_t comm,
                          braidStream_t stream) {
  auto c = makeCall(CollKind::kReduce, comm, stream, sendbuff, recvbuff, count, rawEnum(datatype));
  c.opRaw = rawEnum(op);
  c.a.root = root;
  c.reduces = c.rooted = true;
  return braid::issue(std::move(c));
}

braidResult_t braidAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                             braidDataType_t datatype, braidComm_t comm, braidStream_t stream) {
  return braid::issue(makeCall(CollKind::kAllGather, comm, stream, sendbuff, recvbuff, sendcount,
                               rawEnum(datatype)));
}

braidResult_t braidReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                 braidDataType_t datatype, braidRedOp_t op, braidComm_t comm,
                                 braidStream_t stream) {
  auto c = makeCall(CollKind::kReduceScatter, comm, stream, sendbuff, recvbuff, recvcount,
                    rawEnum(datatype));
  c.opRaw = rawEnum(op);
  c.reduces = true;
  return braid::issue(std::move(c));
}

braidResult_t braidAllToAll(const void* sendbuff, void* recvbuff, size_t count,
                            braidDataType_t datatype, braidComm_t comm, braidStream_t stream) {
  return braid::issue(
      makeCall(CollKind::kAllToAll, comm, stream, sendbuff, recvbuff, count, rawEnum(datatype)));
}

braidResult_t braidAllToAllv(const void* sendbuff, const size_t* sendcounts, const size_t* sdispls,
                             void* recvbuff, const size_t* recvcounts, const size_t* rdispls,
                             braidDataType_t datatype, braidComm_t comm, braidStream_t stream) {
  // Refused before issue(): inside a group, the group must fail too (as issue() does).
  std::shared_ptr<braid::Comm> c;
  braid::Status s = braid::lookupComm(comm, &c);
  if (s.isOk() && (!sendcounts || !sdispls || !recvcounts || !rdispls)) {
    s = braid::invalidArgument(
        "alltoallv: sendcounts, sdispls, recvcounts and rdispls must not be NULL");
  }
  if (!s.isOk()) {
    braid::groupNoteError(s);
    return braid::report(s, c);
  }
  auto call =
      makeCall(CollKind::kAllToAllv, comm, stream, sendbuff, recvbuff, 0, rawEnum(datatype));
  const size_t n = static_cast<size_t>(c->nranks());
  call.a.sendcounts.assign(sendcounts, sendcounts + n);
  call.a.sdispls.assign(sdispls, sdispls + n);
  call.a.recvcounts.assign(recvcounts, recvcounts + n);
  call.a.rdispls.assign(rdispls, rdispls + n);
  return braid::issue(std::move(call));
}

braidResult_t braidSend(const void* sendbuff, size_t count, braidDataType_t datatype, int peer,
                        braidComm_t comm, braidStream_t stream) {
  auto c = makeCall(CollKind::kSend, comm, stream, sendbuff, nullptr, count, rawEnum(datatype));
  c.a.root = peer;
  c.rooted = true;
  return braid::issue(std::move(c));
}

braidResult_t braidRecv(void* recvbuff, size_t count, braidDataType_t datatype, int peer,
                        braidComm_t comm, braidStream_t stream) {
  auto c = makeCall(CollKind::kRecv, comm, stream, nullptr, recvbuff, count, rawEnum(datatype));
  c.a.root = peer;
  c.rooted = true;
  return braid::issue(std::move(c));
}

braidResult_t braidBarrier(braidComm_t comm, braidStream_t stream) {
  return braid::issue(makeCall(CollKind::kBarrier, comm, stream, nullptr, nullptr, 0, braidUint8));
}

}  // extern "C"

// The collectives braid-perf measures: sizes, bus-bandwidth factors (nccl-tests' formulas),
// one call each, and exact data checks.
#include <cstring>

#include "benchmarks/perf/perf.h"
#include "harness/values.h"
#include "src/core/dtype.h"

namespace braid::perf {
namespace {

enum Kind { kAllReduce, kAllGather, kBroadcast, kReduce, kReduceScatter, kAllToAll, kSendRecv };

struct Entry {
  Coll coll;
  Kind kind;
};

const Entry kEntries[] = {
    {{"allreduce", true, false}, kAllReduce},         {{"allgather", false, false}, kAllGather},
    {{"broadcast", false, true}, kBroadcast},         {{"reduce", true, true}, kReduce},
    {{"reducescatter", true, false}, kReduceScatter}, {{"alltoall", false, false}, kAllToAll},
    {{"sendrecv", false, false}, kSendRecv},
};

Kind kindOf(const Coll& c) {
  for (const auto& e : kEntries) {
    if (&e.coll == &c) return e.kind;
  }
  return kAllReduce;
}

}  // namespace

const Coll* findColl(const std::string& name) {
  // nccl-tests spells it reduce_scatter (reduce_scatter_perf).
  const std::string n = name == "reduce_scatter" ? "reducescatter" : name;
  for (const auto& e : kEntries) {
    if (n == e.coll.name) return &e.coll;
  }
  return nullptr;
}

const std::vector<std::string>& collNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& e : kEntries) v.emplace_back(e.coll.name);
    return v;
  }();
  return names;
}

// nccl-tests: the size is the per-rank total for allgather (receive), reducescatter (send) and
// alltoall; the count passed to the call is then size / n.
size_t countFor(const Coll& c, size_t bytes, size_t esz, int n) {
  size_t elems = bytes / esz;
  switch (kindOf(c)) {
    case kAllGather:
    case kReduceScatter:
    case kAllToAll:
      return elems / static_cast<size_t>(n);
    default:
      return elems;
  }
}

size_t bytesFor(const Coll& c, size_t count, size_t esz, int n) {
  Kind k = kindOf(c);
  bool perRankTotal = k == kAllGather || k == kReduceScatter || k == kAllToAll;
  return count * esz * (perRankTotal ? static_cast<size_t>(n) : 1);
}

bool inPlaceBuffers(const Coll& c, char* send, char* recv, size_t count, size_t esz, int rank,
                    char** in, char** out) {
  switch (kindOf(c)) {
    case kSendRecv:
      return false;
    case kAllGather:  // sendbuff == recvbuff + rank * count
      *in = recv + rank * count * esz;
      *out = recv;
      return true;
    case kReduceScatter:  // recvbuff == sendbuff + rank * count
      *in = send;
      *out = send + rank * count * esz;
      return true;
    default:  // allreduce, broadcast, reduce, alltoall: the same buffer
      *in = *out = send;
      return true;
  }
}

size_t Coll::sendElems(size_t count, int n) const {
  Kind k = kindOf(*this);
  return (k == kReduceScatter || k == kAllToAll) ? count * n : count;
}

size_t Coll::recvElems(size_t count, int n) const {
  Kind k = kindOf(*this);
  return (k == kAllGather || k == kAllToAll) ? count * n : count;
}

double Coll::busFactor(int n) const {
  switch (kindOf(*this)) {
    case kAllReduce:
      return 2.0 * (n - 1) / n;
    case kAllGather:
    case kReduceScatter:
    case kAllToAll:
      return static_cast<double>(n - 1) / n;
    default:
      return 1.0;
  }
}

braidResult_t runOnce(const Coll& c, const void* send, void* recv, size_t count, braidDataType_t dt,
                      braidRedOp_t op, int root, braidComm_t comm, braidStream_t stream) {
  switch (kindOf(c)) {
    case kAllReduce:
      return braidAllReduce(send, recv, count, dt, op, comm, stream);
    case kAllGather:
      return braidAllGather(send, recv, count, dt, comm, stream);
    case kBroadcast:
      return braidBroadcast(send, recv, count, dt, root, comm, stream);
    case kReduce:
      return braidReduce(send, recv, count, dt, op, root, comm, stream);
    case kReduceScatter:
      return braidReduceScatter(send, recv, count, dt, op, comm, stream);
    case kAllToAll:
      return braidAllToAll(send, recv, count, dt, comm, stream);
    case kSendRecv: {
      int n = 0, r = 0;
      braidCommCount(comm, &n);
      braidCommUserRank(comm, &r);
      braidGroupStart();
      braidResult_t a = braidSend(send, count, dt, (r + 1) % n, comm, stream);
      braidResult_t b = braidRecv(recv, count, dt, (r + n - 1) % n, comm, stream);
      braidResult_t e = braidGroupEnd();
      return a != braidSuccess ? a : (b != braidSuccess ? b : e);
    }
  }
  return braidInternalError;
}

void fillInput(const Coll& c, void* send, size_t count, braidDataType_t dt, braidRedOp_t op,
               int rank, int n) {
  using test::a2aValue;
  using test::inputValue;
  using test::put;
  switch (kindOf(c)) {
    case kAllReduce:
    case kReduce:
    case kReduceScatter:
      for (size_t i = 0; i < c.sendElems(count, n); ++i)
        put(send, dt, i, inputValue(op, rank, n, i));
      break;
    case kAllGather:
    case kBroadcast:
      for (size_t i = 0; i < count; ++i) put(send, dt, i, inputValue(braidSum, rank, n, i));
      break;
    case kAllToAll:
      for (int q = 0; q < n; ++q) {
        for (size_t i = 0; i < count; ++i) put(send, dt, q * count + i, a2aValue(rank, q, i));
      }
      break;
    case kSendRecv:
      for (size_t i = 0; i < count; ++i) put(send, dt, i, a2aValue(rank, (rank + 1) % n, i));
      break;
  }
}

size_t countWrong(const Coll& c, const void* recv, size_t count, braidDataType_t dt,
                  braidRedOp_t op, int root, int rank, int n) {
  using test::a2aValue;
  using test::expectedValue;
  using test::inputValue;
  const size_t esz = dtypeSize(dt);
  std::vector<char> want(esz);
  size_t wrong = 0;
  auto check = [&](size_t i, int64_t v) {
    test::put(want.data(), dt, 0, v);
    if (std::memcmp(static_cast<const char*>(recv) + i * esz, want.data(), esz) != 0) ++wrong;
  };
  switch (kindOf(c)) {
    case kAllReduce:
      for (size_t i = 0; i < count; ++i) check(i, expectedValue(op, n, i));
      break;
    case kReduce:
      if (rank == root) {
        for (size_t i = 0; i < count; ++i) check(i, expectedValue(op, n, i));
      }
      break;
    case kReduceScatter:
      for (size_t i = 0; i < count; ++i) check(i, expectedValue(op, n, rank * count + i));
      break;
    case kBroadcast:
      for (size_t i = 0; i < count; ++i) check(i, inputValue(braidSum, root, n, i));
      break;
    case kAllGather:
      for (int q = 0; q < n; ++q) {
        for (size_t i = 0; i < count; ++i) check(q * count + i, inputValue(braidSum, q, n, i));
      }
      break;
    case kAllToAll:
      for (int q = 0; q < n; ++q) {
        for (size_t i = 0; i < count; ++i) check(q * count + i, a2aValue(q, rank, i));
      }
      break;
    case kSendRecv:
      for (size_t i = 0; i < count; ++i) check(i, a2aValue((rank + n - 1) % n, rank, i));
      break;
  }
  return wrong;
}

}  // namespace braid::perf

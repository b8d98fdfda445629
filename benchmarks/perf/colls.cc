// The collectives braid-perf measures: sizes, bus-bandwidth factors (nccl-tests' formulas),
// one call each, and exact data checks.
#include <algorithm>
#include <cstring>

#include "benchmarks/perf/perf.h"
#include "harness/values.h"
#include "src/core/dtype.h"

namespace braid::perf {
namespace {

const Coll kColls[] = {
    {kAllReduce, "allreduce", true, false},         {kAllGather, "allgather", false, false},
    {kBroadcast, "broadcast", false, true},         {kReduce, "reduce", true, true},
    {kReduceScatter, "reducescatter", true, false}, {kAllToAll, "alltoall", false, false},
    {kSendRecv, "sendrecv", false, false},
};

}  // namespace

const Coll* findColl(const std::string& name) {
  // nccl-tests' binaries spell them with underscores (all_reduce_perf, reduce_scatter_perf):
  // every name is also taken so, and with a _perf suffix.
  std::string n = name.ends_with("_perf") ? name.substr(0, name.size() - 5) : name;
  std::erase(n, '_');
  for (const auto& c : kColls) {
    if (n == c.name) return &c;
  }
  return nullptr;
}

const std::vector<std::string>& collNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& c : kColls) v.emplace_back(c.name);
    return v;
  }();
  return names;
}

// nccl-tests: the size is the per-rank total for allgather (receive), reducescatter (send) and
// alltoall; the count passed to the call is then size / n.
size_t countFor(const Coll& c, size_t bytes, size_t esz, int n) {
  size_t elems = bytes / esz;
  switch (c.kind) {
    case kAllGather:
    case kReduceScatter:
    case kAllToAll:
      // As current nccl-tests: each rank's block rounded down to a multiple of 16 bytes.
      return elems / static_cast<size_t>(n) & ~(std::max<size_t>(16 / esz, 1) - 1);
    default:
      return elems;
  }
}

size_t bytesFor(const Coll& c, size_t count, size_t esz, int n) {
  Kind k = c.kind;
  bool perRankTotal = k == kAllGather || k == kReduceScatter || k == kAllToAll;
  return count * esz * (perRankTotal ? static_cast<size_t>(n) : 1);
}

bool inPlaceBuffers(const Coll& c, char* send, char* recv, size_t count, size_t esz, int rank,
                    char** in, char** out) {
  switch (c.kind) {
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
  Kind k = kind;
  return (k == kReduceScatter || k == kAllToAll) ? count * n : count;
}

size_t Coll::recvElems(size_t count, int n) const {
  Kind k = kind;
  return (k == kAllGather || k == kAllToAll) ? count * n : count;
}

double Coll::busFactor(int n) const {
  switch (kind) {
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

void fillInput(const Coll& c, void* send, size_t count, braidDataType_t dt, braidRedOp_t op,
               int rank, int n) {
  using test::a2aValue;
  using test::inputValue;
  using test::put;
  switch (c.kind) {
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
  switch (c.kind) {
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

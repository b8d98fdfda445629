// One braid call per collective braid-perf measures (the only part of the collective table that
// needs the library: the rest is shared with benchmarks/compare).
#include "benchmarks/perf/perf.h"

namespace braid::perf {

braidResult_t runOnce(const Coll& c, const void* send, void* recv, size_t count, braidDataType_t dt,
                      braidRedOp_t op, int root, braidComm_t comm, braidStream_t stream) {
  switch (c.kind) {
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

}  // namespace braid::perf

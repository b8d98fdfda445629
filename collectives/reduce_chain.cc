// Pipelined chain reduce for large messages: partial sums flow root+n-1 -> ... -> root, chunk
// by chunk, each rank adding its own contribution before forwarding.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void reduceChain(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  const int vr = mod(r - a.root, n);
  const size_t K = chunksFor(a.count, esz, s);
  const int towardRoot = mod(r - 1, n), fromFar = mod(r + 1, n);
  const bool last = vr == n - 1;
  auto* in = static_cast<const char*>(a.send);
  char* acc = vr == 0 ? static_cast<char*>(a.recv)
                      : (last ? nullptr : static_cast<char*>(s->scratch(a.count * esz + 64)));
  char* tmp = last ? nullptr : static_cast<char*>(s->scratch(a.count * esz + 64));
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
    auto slot = static_cast<uint32_t>(k);
    if (n == 1) {
      s->copy(acc + off, in + off, cnt * esz);
      continue;
    }
    if (last) {
      s->send(towardRoot, slot, in + off, cnt * esz);
      continue;
    }
    NodeId rv = s->recv(fromFar, slot, tmp + off, cnt * esz);
    NodeId red = s->reduce(acc + off, in + off, tmp + off, cnt, a.dt, a.op, {rv});
    if (vr == 0) {
      if (a.op == braidAvg) s->avg(acc + off, cnt, a.dt, n, {red});
    } else {
      s->send(towardRoot, slot, acc + off, cnt * esz, {red});
    }
  }
}

}  // namespace braid

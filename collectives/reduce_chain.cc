// Pipelined chain reduce for large messages: partial sums flow root+n-1 -> ... -> root, chunk
// by chunk, each rank adding its own contribution before forwarding. Scratch is a few chunks.
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
  auto* out = static_cast<char*>(a.recv);
  // Received chunks and the partials sent on live in a few rotating buffers (a few chunks of
  // scratch, whatever the size); the root reduces into its output.
  const size_t chunkMax = partSize(a.count, K, 0) * esz;
  const size_t uses = n == 1 || last ? 0 : K;
  RotatingBuffers tmp(s, chunkMax, uses), acc(s, chunkMax, vr == 0 ? 0 : uses);
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
    auto slot = static_cast<uint32_t>(k);
    if (n == 1) {
      s->copy(out + off, in + off, cnt * esz);
      continue;
    }
    if (last) {
      s->send(towardRoot, slot, in + off, cnt * esz);
      continue;
    }
    NodeId tmpFree, accFree = kNoNode;
    char* t = tmp.next(&tmpFree);
    NodeId rv = s->recv(fromFar, slot, t, cnt * esz, {tmpFree});
    char* dst = vr == 0 ? out + off : acc.next(&accFree);
    NodeId red = s->reduce(dst, in + off, t, cnt, a.dt, a.op, {rv, accFree});
    tmp.readBy(red);
    if (vr == 0) {
      if (a.op == braidAvg) s->avg(dst, cnt, a.dt, n, {red});
    } else {
      acc.readBy(s->send(towardRoot, slot, dst, cnt * esz, {red}));
    }
  }
}

}  // namespace braid

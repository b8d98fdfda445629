// Ring reduce-scatter: n-1 steps; at step s rank r sends its partial of block (r-s-1) to the
// right and receives the partial of block (r-s-2) from the left, adding its own contribution.
// After the last step block r is complete on rank r. Chunked for pipelining.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void reduceScatterRing(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt), blockBytes = a.count * esz;
  auto* in = static_cast<const char*>(a.send);
  auto* out = static_cast<char*>(a.recv);
  if (n == 1) {
    s->copy(out, in, blockBytes);
    if (a.op == braidAvg) s->avg(out, a.count, a.dt, 1);
    return;
  }
  const size_t K = chunksFor(a.count, esz, s);
  const int left = mod(r - 1, n), right = mod(r + 1, n);
  // acc holds this rank's partials of every block; tmp the received ones of every step.
  char* acc = static_cast<char*>(s->scratch(n * blockBytes + 64));
  char* tmp = static_cast<char*>(s->scratch((n - 1) * blockBytes + 64));
  std::vector<NodeId> partial(K, kNoNode);  // partial of the block sent next, per chunk
  uint32_t slot = 0;
  for (int step = 0; step < n - 1; ++step) {
    int sb = mod(r - step - 1, n), rb = mod(r - step - 2, n);
    bool final = step == n - 2;
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
      if (cnt == 0) continue;
      const char* src = step == 0 ? in + sb * blockBytes + off : acc + sb * blockBytes + off;
      s->send(right, slot, src, cnt * esz, {partial[k]});
      char* t = tmp + step * blockBytes + off;
      NodeId rv = s->recv(left, slot, t, cnt * esz);
      char* dst = final ? out + off : acc + rb * blockBytes + off;
      partial[k] = s->reduce(dst, in + rb * blockBytes + off, t, cnt, a.dt, a.op, {rv});
      if (final && a.op == braidAvg) s->avg(out + off, cnt, a.dt, n, {partial[k]});
    }
  }
}

}  // namespace braid

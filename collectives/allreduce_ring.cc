// Ring allreduce: pipelined reduce-scatter then all-gather, 2(n-1) steps, each rank's segment
// cut into chunks so step s+1 of a chunk starts as soon as step s of that chunk is done.
// Every segment's final value is computed on one rank and then copied to all: results are
// bit-identical across ranks.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allReduceRing(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  auto* out = static_cast<char*>(a.recv);
  auto* in = static_cast<const char*>(a.send);
  if (n == 1) {
    s->copy(out, in, a.count * esz);
    return;
  }
  const size_t N = static_cast<size_t>(n);
  const size_t K = chunksFor(partSize(a.count, N, 0), esz, s);
  const int left = mod(r - 1, n), right = mod(r + 1, n);
  // Byte range of chunk k of segment g.
  auto range = [&](int g, size_t k, size_t* off, size_t* cnt) {
    size_t segOff = partStart(a.count, N, g), segCnt = partSize(a.count, N, g);
    *off = (segOff + partStart(segCnt, K, k)) * esz;
    *cnt = partSize(segCnt, K, k);
  };
  char* tmp = static_cast<char*>(s->scratch((N - 1) * partSize(a.count, N, 0) * esz + 64));
  const size_t tmpStride = partSize(a.count, N, 0) * esz;
  // lastReduce[g][k]: node producing the partial of segment g chunk k on this rank.
  std::vector<std::vector<NodeId>> last(N, std::vector<NodeId>(K, kNoNode));
  std::vector<std::vector<NodeId>> rsSend(N, std::vector<NodeId>(K, kNoNode));
  uint32_t slot = 0;
  for (int step = 0; step < n - 1; ++step) {
    int sg = mod(r - step, n), rg = mod(r - step - 1, n);
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off, cnt;
      range(sg, k, &off, &cnt);
      if (cnt > 0) {
        const char* src = step == 0 ? in + off : out + off;
        rsSend[sg][k] = s->send(right, slot, src, cnt * esz, {last[sg][k]});
      }
      range(rg, k, &off, &cnt);
      if (cnt > 0) {
        char* t = tmp + step * tmpStride + (off - partStart(a.count, N, rg) * esz);
        NodeId rv = s->recv(left, slot, t, cnt * esz);
        last[rg][k] = s->reduce(out + off, in + off, t, cnt, a.dt, a.op, {rv});
      }
    }
  }
  const int own = mod(r + 1, n);
  if (a.op == braidAvg) {
    for (size_t k = 0; k < K; ++k) {
      size_t off, cnt;
      range(own, k, &off, &cnt);
      if (cnt > 0) last[own][k] = s->avg(out + off, cnt, a.dt, n, {last[own][k]});
    }
  }
  for (int step = 0; step < n - 1; ++step) {
    int sg = mod(r + 1 - step, n), rg = mod(r - step, n);
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off, cnt;
      range(sg, k, &off, &cnt);
      if (cnt > 0) s->send(right, slot, out + off, cnt * esz, {last[sg][k]});
      range(rg, k, &off, &cnt);
      // The receive overwrites what this rank sent of that segment during reduce-scatter.
      if (cnt > 0) last[rg][k] = s->recv(left, slot, out + off, cnt * esz, {rsSend[rg][k]});
    }
  }
}

}  // namespace braid

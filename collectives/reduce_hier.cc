// Hierarchical, rail-aligned reduce for several nodes of L ranks each: inside every node the
// rank with the root's local rank sums its node's chunks, then a pipelined chain over that
// rail carries the partial sums node by node to the root. Unequal nodes use the flat chain.
// Scratch is a few chunks (rotating buffers), whatever the size.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void reduceHierarchical(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (!hierarchicalShape(nm)) return reduceChain(a, s);
  const int me = s->comm()->rank();
  const RootRail rr = rootRail(nm, me, a.root);
  const int L = rr.L, l = rr.local, lr = rr.rootLocal;
  const std::vector<int>& local = *rr.node;
  const size_t esz = dtypeSize(a.dt);
  const size_t K = chunksFor(a.count, esz, s);
  auto* in = static_cast<const char*>(a.send);
  const int v = rr.pos, towardRoot = rr.towardRoot, fromFar = rr.awayFromRoot;
  // Received chunks, and the partials sent on toward the root, in rotating buffers taken in
  // chunk order; the root sums into its output.
  const bool sums = l == lr;
  const size_t chunkMax = partSize(a.count, K, 0) * esz;
  const size_t recvs = static_cast<size_t>(L - 1 + (fromFar >= 0 ? 1 : 0));
  RotatingBuffers tmp(s, chunkMax, sums ? K * recvs : 0);
  RotatingBuffers partials(s, chunkMax, sums && me != a.root ? K : 0);
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
    const auto node = static_cast<uint32_t>(k), rail = static_cast<uint32_t>(K + k);
    if (l != lr) {
      s->send(local[lr], node, in + off, cnt * esz);
      continue;
    }
    // The node's sum, then the partial of the nodes farther from the root.
    NodeId dstFree = kNoNode;
    char* dst = me == a.root ? static_cast<char*>(a.recv) + off : partials.next(&dstFree);
    const char* first = in + off;
    NodeId red = kNoNode;
    auto add = [&](int from, uint32_t slot) {
      NodeId tmpFree;
      char* t = tmp.next(&tmpFree);
      NodeId rv = s->recv(from, slot, t, cnt * esz, {tmpFree});
      red = s->reduce(dst, first, t, cnt, a.dt, a.op, {rv, red, dstFree});
      tmp.readBy(red);
      first = dst;
    };
    for (int m = 1; m < L; ++m) add(local[(lr + m) % L], node);
    if (fromFar >= 0) add(fromFar, rail);
    if (first != dst) red = s->copy(dst, first, cnt * esz, {dstFree});
    if (v == 0) {
      if (a.op == braidAvg) s->avg(dst, cnt, a.dt, nm.nranks(), {red});
    } else {
      partials.readBy(s->send(towardRoot, rail, dst, cnt * esz, {red}));
    }
  }
}

}  // namespace braid

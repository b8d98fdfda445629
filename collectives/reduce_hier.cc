// Hierarchical, rail-aligned reduce for several nodes of L ranks each: inside every node the
// rank with the root's local rank sums its node's chunks, then a pipelined chain over that
// rail carries the partial sums node by node to the root. Unequal nodes use the flat chain.
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
  const size_t esz = dtypeSize(a.dt), bytes = a.count * esz;
  const size_t K = chunksFor(a.count, esz, s);
  auto* in = static_cast<const char*>(a.send);
  const int v = rr.pos, towardRoot = rr.towardRoot, fromFar = rr.awayFromRoot;
  char* acc = me == a.root ? static_cast<char*>(a.recv) : nullptr;
  char* tmp = nullptr;
  if (l == lr) {
    if (acc == nullptr) acc = static_cast<char*>(s->scratch(bytes + 64));
    tmp = static_cast<char*>(s->scratch(static_cast<size_t>(L) * bytes + 64));
  }
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
    const auto node = static_cast<uint32_t>(k), rail = static_cast<uint32_t>(K + k);
    if (l != lr) {
      s->send(local[lr], node, in + off, cnt * esz);
      continue;
    }
    // The node's sum, then the partial of the nodes farther from the root.
    NodeId red = s->copy(acc + off, in + off, cnt * esz);
    for (int m = 1; m < L; ++m) {
      char* t = tmp + (m - 1) * bytes + off;
      NodeId rv = s->recv(local[(lr + m) % L], node, t, cnt * esz);
      red = s->reduce(acc + off, acc + off, t, cnt, a.dt, a.op, {rv, red});
    }
    if (fromFar >= 0) {
      char* t = tmp + (L - 1) * bytes + off;
      NodeId rv = s->recv(fromFar, rail, t, cnt * esz);
      red = s->reduce(acc + off, acc + off, t, cnt, a.dt, a.op, {rv, red});
    }
    if (v == 0) {
      if (a.op == braidAvg) s->avg(acc + off, cnt, a.dt, nm.nranks(), {red});
    } else {
      s->send(towardRoot, rail, acc + off, cnt * esz, {red});
    }
  }
}

}  // namespace braid

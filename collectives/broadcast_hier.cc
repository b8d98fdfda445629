// Hierarchical, rail-aligned broadcast for several nodes of L ranks each: a pipelined chain
// over the root's rail (the ranks with the root's local rank, one per node) carries every
// chunk between nodes once; each of them hands the chunk on to its node's other ranks.
// Unequal nodes use the flat chain.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void broadcastHierarchical(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (!hierarchicalShape(nm)) return broadcastChain(a, s);
  const int me = s->comm()->rank();
  const RootRail rr = rootRail(nm, me, a.root);
  const int L = rr.L, l = rr.local, lr = rr.rootLocal;
  const std::vector<int>& local = *rr.node;
  const size_t esz = dtypeSize(a.dt);
  const size_t K = chunksFor(a.count, esz, s);
  auto* out = static_cast<char*>(a.recv);
  const char* src = me == a.root ? static_cast<const char*>(a.send) : out;
  if (me == a.root) s->copy(out, a.send, a.count * esz);
  const int v = rr.pos, prev = rr.towardRoot, next = rr.awayFromRoot;
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, bytes = partSize(a.count, K, k) * esz;
    const auto rail = static_cast<uint32_t>(k), node = static_cast<uint32_t>(K + k);
    if (l != lr) {
      s->recv(local[lr], node, out + off, bytes);
      continue;
    }
    NodeId have = v == 0 ? kNoNode : s->recv(prev, rail, out + off, bytes);
    if (next >= 0) s->send(next, rail, src + off, bytes, {have});
    for (int m = 1; m < L; ++m) s->send(local[(lr + m) % L], node, src + off, bytes, {have});
  }
}

}  // namespace braid

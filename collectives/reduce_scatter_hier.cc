// Hierarchical, rail-aligned reduce-scatter for several nodes of L ranks each:
//   1. inside the node, local rank l collects and reduces the blocks of every rank with local
//      rank l (one per node) from its node's ranks, chunk by chunk through a few rotating
//      buffers;
//   2. a ring reduce-scatter among the ranks of local rank l on every node (rail l) finishes
//      each rank's block.
// Between nodes, local rank l's traffic stays on rail l. Scratch: the N blocks that rail l
// reduces (1/L of the message) and a few chunks. Unequal nodes use the flat ring.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void reduceScatterHierarchical(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (!hierarchicalShape(nm)) return reduceScatterRing(a, s);
  const int me = s->comm()->rank();
  const std::vector<int>& local = nm.ranks[nm.nodeOf[me]];
  const size_t L = local.size(), N = nm.ranks.size();
  const size_t l = static_cast<size_t>(nm.localRank(me));
  const size_t esz = dtypeSize(a.dt), bb = a.count * esz;
  const size_t K = chunksFor(a.count, esz, s);
  auto* in = static_cast<const char*>(a.send);

  // 1. acc[i] = the node's sum of the blocks for rank (node i, local l); chunk k of block i
  //    travels in slot i*K+k.
  char* acc = static_cast<char*>(s->scratch(N * bb + 64));
  const size_t chunkMax = partSize(a.count, K, 0) * esz;
  RotatingBuffers tmp(s, chunkMax, bb > 0 ? (L - 1) * N * K : 0);
  for (size_t d = 1; d < L && bb > 0; ++d) {
    size_t to = (l + d) % L;
    for (size_t i = 0; i < N; ++i) {
      for (size_t k = 0; k < K; ++k) {
        const size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
        s->send(local[to], static_cast<uint32_t>(i * K + k), in + nm.ranks[i][to] * bb + off,
                cnt * esz);
      }
    }
  }
  std::vector<NodeId> reduced;
  for (size_t i = 0; i < N && bb > 0; ++i) {
    for (size_t k = 0; k < K; ++k) {
      const size_t off = partStart(a.count, K, k) * esz, cnt = partSize(a.count, K, k);
      char* dst = acc + i * bb + off;
      const char* first = in + nm.ranks[i][l] * bb + off;
      NodeId accN = kNoNode;
      for (size_t d = 1; d < L; ++d) {
        size_t from = (l + L - d) % L;
        NodeId tmpFree;
        char* t = tmp.next(&tmpFree);
        NodeId rv = s->recv(local[from], static_cast<uint32_t>(i * K + k), t, cnt * esz, {tmpFree});
        accN = s->reduce(dst, first, t, cnt, a.dt, a.op, {rv, accN});
        tmp.readBy(accN);
        first = dst;
      }
      reduced.push_back(accN);
    }
  }

  // 2. Ring reduce-scatter over rail l; block i of acc belongs to node i's rank l.
  RingGroup g = railGroup(nm, me);
  g.after = std::move(reduced);
  g.avgOver = nm.nranks();
  uint32_t slot = static_cast<uint32_t>(N * K);
  ringReduceScatter(s, g, acc, static_cast<char*>(a.recv), a.count, a.dt, a.op, &slot);
}

}  // namespace braid

// Hierarchical, rail-aligned reduce-scatter for several nodes of L ranks each:
//   1. inside the node, local rank l collects and reduces the blocks of every rank with local
//      rank l (one per node) from its node's ranks;
//   2. a ring reduce-scatter among the ranks of local rank l on every node (rail l) finishes
//      each rank's block.
// Between nodes, local rank l's traffic stays on rail l. Unequal nodes use the flat ring.
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
  auto* in = static_cast<const char*>(a.send);

  // 1. acc[i] = the node's sum of the blocks for rank (node i, local l); slot i per pair.
  char* acc = static_cast<char*>(s->scratch(N * bb + 64));
  char* tmp = static_cast<char*>(s->scratch((L - 1) * N * bb + 64));
  std::vector<NodeId> reduced;
  for (size_t d = 1; d < L && bb > 0; ++d) {
    size_t to = (l + d) % L;
    for (size_t i = 0; i < N; ++i) {
      s->send(local[to], static_cast<uint32_t>(i), in + nm.ranks[i][to] * bb, bb);
    }
  }
  for (size_t i = 0; i < N && bb > 0; ++i) {
    NodeId accN = kNoNode;
    const char* first = in + nm.ranks[i][l] * bb;
    for (size_t d = 1; d < L; ++d) {
      size_t from = (l + L - d) % L;
      char* t = tmp + ((d - 1) * N + i) * bb;
      NodeId rv = s->recv(local[from], static_cast<uint32_t>(i), t, bb);
      accN = s->reduce(acc + i * bb, first, t, a.count, a.dt, a.op, {rv, accN});
      first = acc + i * bb;
    }
    reduced.push_back(accN);
  }

  // 2. Ring reduce-scatter over rail l; block i of acc belongs to node i's rank l.
  RingGroup g = railGroup(nm, me);
  g.after = std::move(reduced);
  g.avgOver = nm.nranks();
  uint32_t slot = static_cast<uint32_t>(N);
  ringReduceScatter(s, g, acc, static_cast<char*>(a.recv), a.count, a.dt, a.op, &slot);
}

}  // namespace braid

// Hierarchical, rail-aligned all-gather for several nodes of L ranks each:
//   1. a ring among the ranks of local rank l on every node (rail l) gathers their blocks;
//   2. inside the node, each local rank sends the N blocks it gathered to the others.
// Between nodes, local rank l's traffic stays on rail l. Unequal nodes use the flat ring.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allGatherHierarchical(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (!hierarchicalShape(nm)) return allGatherRing(a, s);
  const int me = s->comm()->rank();
  const std::vector<int>& local = nm.ranks[nm.nodeOf[me]];
  const size_t L = local.size(), N = nm.ranks.size();
  const size_t l = static_cast<size_t>(nm.localRank(me));
  const size_t esz = dtypeSize(a.dt), bb = a.count * esz;
  auto* out = static_cast<char*>(a.recv);

  // 1. Ring over rail l.
  RingGroup g = railGroup(nm, me);
  std::vector<char*> blocks;
  for (int rank : g.ranks) blocks.push_back(out + rank * bb);
  g.after = {s->copy(out + me * bb, a.send, bb)};
  uint32_t slot = 0;
  std::vector<NodeId> arrived = ringAllGather(s, g, blocks.data(), a.count, esz, &slot);
  if (bb == 0) return;

  // 2. Inside the node: block of node i, rail l goes to every other local rank (slot i).
  for (size_t d = 1; d < L; ++d) {
    int to = local[(l + d) % L], from = local[(l + L - d) % L];
    size_t fromLocal = (l + L - d) % L;
    for (size_t i = 0; i < N; ++i) {
      const uint32_t sl = slot + static_cast<uint32_t>(i);
      s->send(to, sl, out + nm.ranks[i][l] * bb, bb, {arrived[i]});
      s->recv(from, sl, out + nm.ranks[i][fromLocal] * bb, bb);
    }
  }
}

}  // namespace braid

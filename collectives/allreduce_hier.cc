// Hierarchical, rail-aligned allreduce for jobs of several nodes with L ranks each:
//   1. intra-node reduce-scatter: local rank j gathers and reduces part j of its node's data
//      (every local rank sends part j straight to local rank j: shared memory);
//   2. inter-node ring allreduce of part j among the ranks of local rank j on every node: the
//      only traffic between nodes, so local rank j's data crosses only rail j;
//   3. intra-node all-gather: local rank j sends the final part j to its node's ranks.
// Every element's final value is computed once (in the ring of phase 2) and copied, so results
// are bit-identical across ranks. Nodes of unequal size fall back to the flat ring.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

bool hierarchicalShape(const NodeMap& nm) {
  if (nm.ranks.size() < 2) return false;
  for (const auto& node : nm.ranks) {
    if (node.size() != nm.ranks[0].size()) return false;
  }
  return nm.ranks[0].size() > 1;
}

RootRail rootRail(const NodeMap& nm, int me, int root) {
  const int N = static_cast<int>(nm.ranks.size());
  const int ni = nm.nodeOf[me];
  RootRail rr;
  rr.L = static_cast<int>(nm.ranks[0].size());
  rr.local = nm.localRank(me);
  rr.rootLocal = nm.localRank(root);
  rr.pos = mod(ni - nm.nodeOf[root], N);
  rr.towardRoot = nm.ranks[mod(ni - 1, N)][rr.rootLocal];
  rr.awayFromRoot = rr.pos + 1 < N ? nm.ranks[mod(ni + 1, N)][rr.rootLocal] : -1;
  rr.node = &nm.ranks[ni];
  return rr;
}

RingGroup railGroup(const NodeMap& nm, int me) {
  RingGroup g;
  const int l = nm.localRank(me);
  for (const auto& node : nm.ranks) g.ranks.push_back(node[l]);
  g.me = nm.nodeOf[me];
  return g;
}

void allReduceHierarchical(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (!hierarchicalShape(nm)) return allReduceRing(a, s);
  const int me = s->comm()->rank();
  const std::vector<int>& local = nm.ranks[nm.nodeOf[me]];
  const size_t L = local.size();
  const size_t l = static_cast<size_t>(nm.localRank(me));
  const size_t esz = dtypeSize(a.dt);
  auto* out = static_cast<char*>(a.recv);
  auto* in = static_cast<const char*>(a.send);
  const size_t K = chunksFor(partSize(a.count, L, 0), esz, s);
  // Elements of chunk k of part j.
  auto range = [&](size_t j, size_t k, size_t* off, size_t* cnt) {
    size_t pOff = partStart(a.count, L, j), pCnt = partSize(a.count, L, j);
    *off = (pOff + partStart(pCnt, K, k)) * esz;
    *cnt = partSize(pCnt, K, k);
  };

  // 1. Reduce-scatter inside the node; messages between two local ranks use slot k. Received
  //    chunks go through a few rotating buffers (taken in chunk order), not a part per peer.
  const size_t chunkMax = partSize(partSize(a.count, L, 0), K, 0) * esz;
  RotatingBuffers tmp(s, chunkMax, (L - 1) * K);
  std::vector<std::vector<NodeId>> sent1(L, std::vector<NodeId>(K, kNoNode));
  std::vector<NodeId> reduced;
  for (size_t k = 0; k < K; ++k) {
    size_t off, cnt;
    for (size_t d = 1; d < L; ++d) {  // staggered: local rank l+d first gets data from l
      size_t j = (l + d) % L;
      range(j, k, &off, &cnt);
      if (cnt > 0) sent1[j][k] = s->send(local[j], static_cast<uint32_t>(k), in + off, cnt * esz);
    }
    range(l, k, &off, &cnt);
    if (cnt == 0) continue;
    NodeId acc = kNoNode;
    const char* first = in + off;
    for (size_t d = 1; d < L; ++d) {
      size_t j = (l + L - d) % L;
      NodeId tmpFree;
      char* t = tmp.next(&tmpFree);
      NodeId rv = s->recv(local[j], static_cast<uint32_t>(k), t, cnt * esz, {tmpFree});
      acc = s->reduce(out + off, first, t, cnt, a.dt, a.op, {rv, acc});
      tmp.readBy(acc);
      first = out + off;
    }
    reduced.push_back(acc);
  }

  // 2. Ring allreduce of part l across the nodes, on rail l.
  RingGroup g = railGroup(nm, me);
  g.after = std::move(reduced);
  g.avgOver = nm.nranks();
  uint32_t slot = static_cast<uint32_t>(K);
  const size_t lOff = partStart(a.count, L, l) * esz;
  std::vector<NodeId> finals;
  ringAllReduce(s, g, out + lOff, out + lOff, partSize(a.count, L, l), a.dt, a.op, &slot, &finals);

  // 3. All-gather inside the node.
  NodeId done = s->copy(nullptr, nullptr, 0);
  for (NodeId f : finals) s->addDep(f, done);
  for (size_t k = 0; k < K; ++k) {
    size_t off, cnt;
    range(l, k, &off, &cnt);
    const uint32_t sl = slot + static_cast<uint32_t>(k);
    for (size_t d = 1; d < L; ++d) {
      if (cnt > 0) s->send(local[(l + d) % L], sl, out + off, cnt * esz, {done});
    }
    for (size_t d = 1; d < L; ++d) {
      size_t j = (l + L - d) % L;
      range(j, k, &off, &cnt);
      // In place, part j of the input may still be on its way to local rank j.
      if (cnt > 0) s->recv(local[j], sl, out + off, cnt * esz, {sent1[j][k]});
    }
  }
}

}  // namespace braid

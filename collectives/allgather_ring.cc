// Ring all-gather: n-1 steps, each forwarding the block received in the previous step, every
// block cut into chunks so the steps pipeline. May run over a group of the ranks (a rail of
// the hierarchical all-gather).
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

std::vector<NodeId> ringAllGather(Schedule* s, const RingGroup& g, char* const* blocks,
                                  size_t count, size_t esz, uint32_t* slotBase) {
  const int n = static_cast<int>(g.ranks.size()), r = g.me;
  std::vector<NodeId> arrived(n, kNoNode);
  NodeId mine = s->copy(nullptr, nullptr, 0);
  for (NodeId d : g.after) s->addDep(d, mine);
  arrived[r] = mine;
  if (n == 1) return arrived;
  const size_t K = chunksFor(count, esz, s);
  const int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  std::vector<NodeId> have(K, mine);
  uint32_t slot = *slotBase;
  for (int step = 0; step < n - 1; ++step) {
    int sb = mod(r - step, n), rb = mod(r - step - 1, n);
    NodeId done = s->copy(nullptr, nullptr, 0);  // all chunks of block rb are here
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off = partStart(count, K, k) * esz, bytes = partSize(count, K, k) * esz;
      if (bytes == 0) continue;
      s->send(right, slot, blocks[sb] + off, bytes, {have[k]});
      have[k] = s->recv(left, slot, blocks[rb] + off, bytes);
      s->addDep(have[k], done);
    }
    arrived[rb] = done;
  }
  *slotBase = slot;
  return arrived;
}

void allGatherRing(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt), blockBytes = a.count * esz;
  auto* out = static_cast<char*>(a.recv);
  RingGroup g;
  std::vector<char*> blocks(n);
  for (int i = 0; i < n; ++i) {
    g.ranks.push_back(i);
    blocks[i] = out + i * blockBytes;
  }
  g.me = r;
  g.after = {s->copy(out + r * blockBytes, a.send, blockBytes)};
  uint32_t slot = 0;
  ringAllGather(s, g, blocks.data(), a.count, esz, &slot);
}

}  // namespace braid

// Bruck all-gather for small blocks: ceil(log2 n) steps instead of the ring's n-1. Blocks are
// gathered rotated (slot i holds rank r+i's block) in scratch: at the step of distance d the
// rank sends its first min(d, n-d) slots to rank r-d and receives as many from rank r+d into
// slots d..; a final rotation puts every block in place. Any n.
#include <algorithm>

#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allGatherBruck(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt), block = a.count * esz;
  auto* out = static_cast<char*>(a.recv);
  if (n == 1 || block == 0) {
    s->copy(out + r * block, a.send, block);
    return;
  }
  char* tmp = static_cast<char*>(s->scratch(static_cast<size_t>(n) * block + 64));
  std::vector<NodeId> have{s->copy(tmp, a.send, block)};  // producers of slots 0..filled
  uint32_t slot = 0;
  for (int d = 1; d < n; d *= 2, ++slot) {
    const size_t cnt = static_cast<size_t>(std::min(d, n - d));
    NodeId sn = s->send(mod(r - d, n), slot, tmp, cnt * block);
    for (NodeId h : have) s->addDep(h, sn);
    have.push_back(s->recv(mod(r + d, n), slot, tmp + static_cast<size_t>(d) * block, cnt * block));
  }
  // Slot i holds the block of rank (r + i) % n: two contiguous copies put them in place.
  const size_t head = static_cast<size_t>(n - r);  // slots 0..head-1 -> ranks r..n-1
  NodeId c1 = s->copy(out + r * block, tmp, head * block);
  NodeId c2 = s->copy(out, tmp + head * block, static_cast<size_t>(r) * block);
  for (NodeId h : have) {
    s->addDep(h, c1);
    s->addDep(h, c2);
  }
}

}  // namespace braid

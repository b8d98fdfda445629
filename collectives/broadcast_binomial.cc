// Binomial-tree broadcast for small messages: log2(n) rounds from the root.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void broadcastBinomial(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t bytes = a.count * dtypeSize(a.dt);
  const int vr = mod(r - a.root, n);
  NodeId have = kNoNode;
  const void* src = a.recv;
  if (vr == 0) {
    src = a.send;
    s->copy(a.recv, a.send, bytes);
  }
  int mask = 1;
  while (mask < n) {
    if (vr & mask) {
      have = s->recv(mod(vr - mask + a.root, n), 0, a.recv, bytes);
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (vr + mask < n) s->send(mod(vr + mask + a.root, n), 0, src, bytes, {have});
  }
}

}  // namespace braid

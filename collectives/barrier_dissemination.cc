// Dissemination barrier: ceil(log2 n) rounds; in round k rank r signals r+2^k and waits for
// r-2^k. Nobody leaves before everybody arrived.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void barrierDissemination(const CollArgs&, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  NodeId prev = kNoNode;
  uint32_t round = 0;
  for (int d = 1; d < n; d <<= 1, ++round) {
    s->send(mod(r + d, n), round, nullptr, 0, {prev});
    prev = s->recv(mod(r - d, n), round, nullptr, 0, {prev});
  }
}

}  // namespace braid

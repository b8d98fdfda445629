// Binomial-tree reduce for small messages: log2(n) rounds towards the root.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void reduceBinomial(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t bytes = a.count * dtypeSize(a.dt);
  const int vr = mod(r - a.root, n);
  char* acc = vr == 0 ? static_cast<char*>(a.recv) : static_cast<char*>(s->scratch(bytes + 64));
  NodeId cur = s->copy(acc, a.send, bytes);
  int rounds = 0;
  while ((1 << rounds) < n) ++rounds;
  char* tmp = static_cast<char*>(s->scratch(rounds * bytes + 64));
  for (int k = 0, mask = 1; mask < n; ++k, mask <<= 1) {
    if (vr & mask) {
      s->send(mod(vr - mask + a.root, n), 0, acc, bytes, {cur});
      return;
    }
    if (vr + mask < n) {
      char* t = tmp + k * bytes;
      NodeId rv = s->recv(mod(vr + mask + a.root, n), 0, t, bytes);
      cur = s->reduce(acc, acc, t, a.count, a.dt, a.op, {cur, rv});
    }
  }
  if (a.op == braidAvg) s->avg(acc, a.count, a.dt, n, {cur});
}

}  // namespace braid

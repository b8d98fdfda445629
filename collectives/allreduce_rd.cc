// Recursive-doubling allreduce for small messages: log2(n) exchange steps. With n not a power
// of two, the extra ranks first fold into a partner and get the result back at the end.
// Both partners compute lower-half OP upper-half, so results are bit-identical on every rank.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allReduceRecursiveDoubling(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t bytes = a.count * dtypeSize(a.dt);
  auto* out = static_cast<char*>(a.recv);
  int p2 = 1;
  while (p2 * 2 <= n) p2 *= 2;
  const int rem = n - p2;
  // Ranks that take part in the first exchange as they are send straight from the input and
  // reduce into the output: no copy step ahead of the first message.
  const bool direct = n > 1 && r < p2 && r >= rem && a.send != a.recv;
  NodeId cur = direct ? kNoNode : s->copy(out, a.send, bytes);
  if (n == 1) return;
  constexpr uint32_t kFold = 0, kUnfold = 1, kFirstStep = 2;
  if (r >= p2) {
    NodeId sn = s->send(r - p2, kFold, out, bytes, {cur});
    s->recv(r - p2, kUnfold, out, bytes, {sn});
    return;
  }
  int steps = 0;
  while ((1 << steps) < p2) ++steps;
  char* tmp = static_cast<char*>(s->scratch((steps + 1) * bytes + 64));
  if (r < rem) {
    NodeId rv = s->recv(r + p2, kFold, tmp, bytes);
    cur = s->reduce(out, out, tmp, a.count, a.dt, a.op, {cur, rv});
  }
  for (int k = 0; k < steps; ++k) {
    int partner = r ^ (1 << k);
    char* t = tmp + (k + 1) * bytes;
    const char* mine = direct && k == 0 ? static_cast<const char*>(a.send) : out;
    NodeId sn = s->send(partner, kFirstStep + k, mine, bytes, {cur});
    NodeId rv = s->recv(partner, kFirstStep + k, t, bytes);
    cur = r < partner ? s->reduce(out, mine, t, a.count, a.dt, a.op, {sn, rv})
                      : s->reduce(out, t, mine, a.count, a.dt, a.op, {sn, rv});
  }
  if (a.op == braidAvg) cur = s->avg(out, a.count, a.dt, n, {cur});
  if (r < rem) s->send(r + p2, kUnfold, out, bytes, {cur});
}

}  // namespace braid

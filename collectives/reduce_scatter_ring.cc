// Ring reduce-scatter: n-1 steps; each rank adds its input to the partial it receives and
// passes it on, so block b's sum ends on rank b. Chunked for pipelining. May run over a group
// of the ranks (a rail of the hierarchical reduce-scatter).
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

NodeId ringReduceScatter(Schedule* s, const RingGroup& g, const char* in, char* out, size_t count,
                         braidDataType_t dt, braidRedOp_t op, uint32_t* slotBase) {
  const int n = static_cast<int>(g.ranks.size()), r = g.me;
  const size_t esz = dtypeSize(dt), blockBytes = count * esz;
  NodeId join = kNoNode;
  if (!g.after.empty()) {
    join = s->copy(nullptr, nullptr, 0);
    for (NodeId d : g.after) s->addDep(d, join);
  }
  const int avgOver = g.avgOver > 0 ? g.avgOver : n;
  NodeId done = s->copy(nullptr, nullptr, 0);
  if (n == 1) {
    NodeId c = s->copy(out, in, blockBytes, {join});
    if (op == braidAvg && count > 0) c = s->avg(out, count, dt, avgOver, {c});
    s->addDep(c, done);
    return done;
  }
  const size_t K = chunksFor(count, esz, s);
  const int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  // acc holds this rank's partials of every block; tmp the received ones of every step.
  char* acc = static_cast<char*>(s->scratch(n * blockBytes + 64));
  char* tmp = static_cast<char*>(s->scratch((n - 1) * blockBytes + 64));
  std::vector<NodeId> partial(K, kNoNode);  // partial of the block sent next, per chunk
  uint32_t slot = *slotBase;
  for (int step = 0; step < n - 1; ++step) {
    int sb = mod(r - step - 1, n), rb = mod(r - step - 2, n);
    bool final = step == n - 2;
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off = partStart(count, K, k) * esz, cnt = partSize(count, K, k);
      if (cnt == 0) continue;
      const char* src = step == 0 ? in + sb * blockBytes + off : acc + sb * blockBytes + off;
      s->send(right, slot, src, cnt * esz, {partial[k], step == 0 ? join : kNoNode});
      char* t = tmp + step * blockBytes + off;
      NodeId rv = s->recv(left, slot, t, cnt * esz);
      char* dst = final ? out + off : acc + rb * blockBytes + off;
      partial[k] = s->reduce(dst, in + rb * blockBytes + off, t, cnt, dt, op, {rv, join});
      if (final && op == braidAvg) partial[k] = s->avg(out + off, cnt, dt, avgOver, {partial[k]});
      if (final) s->addDep(partial[k], done);
    }
  }
  *slotBase = slot;
  return done;
}

void reduceScatterRing(const CollArgs& a, Schedule* s) {
  RingGroup g;
  for (int i = 0; i < s->comm()->nranks(); ++i) g.ranks.push_back(i);
  g.me = s->comm()->rank();
  uint32_t slot = 0;
  ringReduceScatter(s, g, static_cast<const char*>(a.send), static_cast<char*>(a.recv), a.count,
                    a.dt, a.op, &slot);
}

}  // namespace braid

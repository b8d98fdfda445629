// Ring reduce-scatter: n-1 steps; each rank adds its input to the partial it receives and
// passes it on, so block b's sum ends on rank b. Chunked for pipelining; scratch is a few
// chunks, whatever the size. May run over a group
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
  // Chunk by chunk, each through every step: a chunk's partial is sent on at its next step,
  // so received chunks and partials live in a few rotating buffers (taken in this order),
  // not a block per step.
  const size_t chunkMax = partSize(count, K, 0) * esz;
  RotatingBuffers tmp(s, chunkMax, (n - 1) * K), acc(s, chunkMax, (n - 2) * K);
  const uint32_t slot0 = *slotBase;
  for (size_t k = 0; k < K; ++k) {
    const size_t off = partStart(count, K, k) * esz, cnt = partSize(count, K, k);
    if (cnt == 0) continue;
    NodeId partial = kNoNode;    // the node that made this chunk's partial sent next
    const char* held = nullptr;  // where that partial is
    for (int step = 0; step < n - 1; ++step) {
      const uint32_t slot = slot0 + static_cast<uint32_t>(step * K + k);
      const int sb = mod(r - step - 1, n), rb = mod(r - step - 2, n);
      const bool final = step == n - 2;
      const char* src = step == 0 ? in + sb * blockBytes + off : held;
      NodeId sent = s->send(right, slot, src, cnt * esz, {partial, step == 0 ? join : kNoNode});
      if (step > 0) acc.readBy(sent);
      NodeId tmpFree, accFree = kNoNode;
      char* t = tmp.next(&tmpFree);
      NodeId rv = s->recv(left, slot, t, cnt * esz, {tmpFree});
      char* dst = final ? out + off : acc.next(&accFree);
      partial = s->reduce(dst, in + rb * blockBytes + off, t, cnt, dt, op, {rv, join, accFree});
      tmp.readBy(partial);
      held = dst;
      if (final && op == braidAvg) partial = s->avg(out + off, cnt, dt, avgOver, {partial});
      if (final) s->addDep(partial, done);
    }
  }
  *slotBase = slot0 + static_cast<uint32_t>((n - 1) * K);
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

// Ring allreduce: pipelined reduce-scatter then all-gather, 2(n-1) steps, each rank's segment
// cut into chunks so step s+1 of a chunk starts as soon as step s of that chunk is done.
// Every segment's final value is computed on one rank and then copied to all: results are
// bit-identical across ranks. The ring may run over a group of the ranks (a rail of the
// hierarchical allreduce).
#include <algorithm>

#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {
void ringAllReduce(Schedule* s, const RingGroup& g, const char* in, char* out, size_t count,
                   braidDataType_t dt, braidRedOp_t op, uint32_t* slotBase,
                   std::vector<NodeId>* finals) {
  const int n = static_cast<int>(g.ranks.size()), r = g.me;
  const size_t esz = dtypeSize(dt);
  // Steps that read `in` wait for g.after (one join node).
  NodeId join = kNoNode;
  if (!g.after.empty()) {
    join = s->copy(nullptr, nullptr, 0);
    for (NodeId d : g.after) s->addDep(d, join);
  }
  if (n == 1) {
    NodeId last = in == out ? join : s->copy(out, in, count * esz, {join});
    if (op == braidAvg && g.avgOver > 1 && count > 0) {
      last = s->avg(out, count, dt, g.avgOver, {last});
    }
    if (finals != nullptr && last != kNoNode) finals->push_back(last);
    return;
  }
  const size_t N = static_cast<size_t>(n);
  const size_t K = chunksFor(partSize(count, N, 0), esz, s);
  const int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  // Byte range of chunk k of segment seg.
  auto range = [&](int seg, size_t k, size_t* off, size_t* cnt) {
    size_t segOff = partStart(count, N, seg), segCnt = partSize(count, N, seg);
    *off = (segOff + partStart(segCnt, K, k)) * esz;
    *cnt = partSize(segCnt, K, k);
  };
  // Received chunks land in a few rotating buffers, reused once reduced: they stay in cache
  // for the reduction instead of streaming a whole segment per step through memory.
  RotatingBuffers tmp(s, partSize(partSize(count, N, 0), K, 0) * esz, (N - 1) * K);
  // last[seg][k]: node producing the partial of segment seg chunk k on this rank.
  std::vector<std::vector<NodeId>> last(N, std::vector<NodeId>(K, kNoNode));
  std::vector<std::vector<NodeId>> rsSend(N, std::vector<NodeId>(K, kNoNode));
  uint32_t slot = *slotBase;
  for (int step = 0; step < n - 1; ++step) {
    int sg = mod(r - step, n), rg = mod(r - step - 1, n);
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off, cnt;
      range(sg, k, &off, &cnt);
      if (cnt > 0) {
        const char* src = step == 0 ? in + off : out + off;
        rsSend[sg][k] =
            s->send(right, slot, src, cnt * esz, {last[sg][k], step == 0 ? join : kNoNode});
      }
      range(rg, k, &off, &cnt);
      if (cnt > 0) {
        NodeId free;
        char* t = tmp.next(&free);
        NodeId rv = s->recv(left, slot, t, cnt * esz, {free});
        last[rg][k] = s->reduce(out + off, in + off, t, cnt, dt, op, {rv, join});
        tmp.readBy(last[rg][k]);
      }
    }
  }
  const int own = mod(r + 1, n);
  const int avgOver = g.avgOver > 0 ? g.avgOver : n;
  for (size_t k = 0; k < K; ++k) {
    size_t off, cnt;
    range(own, k, &off, &cnt);
    if (cnt > 0 && op == braidAvg)
      last[own][k] = s->avg(out + off, cnt, dt, avgOver, {last[own][k]});
    if (cnt > 0 && finals != nullptr) finals->push_back(last[own][k]);
  }
  for (int step = 0; step < n - 1; ++step) {
    int sg = mod(r + 1 - step, n), rg = mod(r - step, n);
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off, cnt;
      range(sg, k, &off, &cnt);
      if (cnt > 0) s->send(right, slot, out + off, cnt * esz, {last[sg][k]});
      range(rg, k, &off, &cnt);
      // The receive overwrites what this rank sent of that segment during reduce-scatter.
      if (cnt > 0) {
        last[rg][k] = s->recv(left, slot, out + off, cnt * esz, {rsSend[rg][k]});
        if (finals != nullptr) finals->push_back(last[rg][k]);
      }
    }
  }
  *slotBase = slot;
}

void allReduceRing(const CollArgs& a, Schedule* s) {
  RingGroup g;
  g.ranks.resize(s->comm()->nranks());
  for (int i = 0; i < s->comm()->nranks(); ++i) g.ranks[i] = i;
  g.me = s->comm()->rank();
  uint32_t slot = 0;
  ringAllReduce(s, g, static_cast<const char*>(a.send), static_cast<char*>(a.recv), a.count, a.dt,
                a.op, &slot, nullptr);
}

}  // namespace braid

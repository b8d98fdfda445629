// Rail-aligned all-to-all for several nodes of L ranks each. Data for (node i', local rank m)
// first goes inside the node to local rank m, which sends everything its node has for node i'
// as one message over its own rail m. Between nodes every rank talks only to its own rail's
// peers, with N-1 messages of L blocks instead of (N-1)L small ones. Unequal nodes and
// all-to-allv use the flat pairwise exchange.
#include <cstring>

#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allToAllRail(const CollArgs& a, Schedule* s) {
  const NodeMap& nm = s->comm()->nodes();
  if (a.kind != CollKind::kAllToAll || !hierarchicalShape(nm)) return allToAllPairwise(a, s);
  const int me = s->comm()->rank();
  const size_t ni = static_cast<size_t>(nm.nodeOf[me]);
  const std::vector<int>& local = nm.ranks[ni];
  const size_t L = local.size(), N = nm.ranks.size();
  const size_t l = static_cast<size_t>(nm.localRank(me));
  const size_t bb = a.count * dtypeSize(a.dt);
  const auto* in = static_cast<const char*>(a.send);
  auto* out = static_cast<char*>(a.recv);
  if (bb == 0) return;
  if (a.send == a.recv) {
    // In place: receives must not overwrite what is still to be sent.
    char* staged = static_cast<char*>(s->scratch(nm.nranks() * bb + 64));
    std::memcpy(staged, in, nm.nranks() * bb);
    in = staged;
  }
  s->copy(out + me * bb, in + me * bb, bb);
  // stage[i][m]: the block local rank m has for (node i, local l), to go out on rail l.
  char* stage = static_cast<char*>(s->scratch(N * L * bb + 64));
  auto at = [&](size_t i, size_t m) { return stage + (i * L + m) * bb; };
  std::vector<NodeId> staged(N * L, kNoNode);

  // 1. Inside the node: slot 0 carries the block for the receiver itself, slot 1 + i the one
  //    for node i's rank of the receiver's rail.
  for (size_t d = 1; d < L; ++d) {
    const size_t m = (l + d) % L, from = (l + L - d) % L;
    s->send(local[m], 0, in + local[m] * bb, bb);
    s->recv(local[from], 0, out + local[from] * bb, bb);
    for (size_t i = 0; i < N; ++i) {
      if (i == ni) continue;
      s->send(local[m], static_cast<uint32_t>(1 + i), in + nm.ranks[i][m] * bb, bb);
      staged[i * L + from] = s->recv(local[from], static_cast<uint32_t>(1 + i), at(i, from), bb);
    }
  }
  for (size_t i = 0; i < N; ++i) {
    if (i != ni) staged[i * L + l] = s->copy(at(i, l), in + nm.ranks[i][l] * bb, bb);
  }

  // 2. Over rail l: one message of L blocks per other node.
  const uint32_t slot = static_cast<uint32_t>(1 + N);
  char* landing = static_cast<char*>(s->scratch(N * L * bb + 64));
  for (size_t i = 0; i < N; ++i) {
    if (i == ni) continue;
    const int peer = nm.ranks[i][l];
    NodeId ready = s->copy(nullptr, nullptr, 0);
    for (size_t m = 0; m < L; ++m) s->addDep(staged[i * L + m], ready);
    s->send(peer, slot, at(i, 0), L * bb, {ready});
    // The blocks of node i's ranks, in local order; straight into place when they are
    // consecutive ranks (the usual layout), else through a landing area.
    const std::vector<int>& from = nm.ranks[i];
    bool consecutive = true;
    for (size_t m = 1; m < L; ++m)
      consecutive = consecutive && from[m] == from[0] + static_cast<int>(m);
    if (consecutive) {
      s->recv(peer, slot, out + from[0] * bb, L * bb);
      continue;
    }
    NodeId rv = s->recv(peer, slot, landing + i * L * bb, L * bb);
    for (size_t m = 0; m < L; ++m)
      s->copy(out + from[m] * bb, landing + (i * L + m) * bb, bb, {rv});
  }
}

}  // namespace braid

// Pairwise-exchange all-to-all(v): at step s rank r sends to r+s and receives from r-s, so
// every rank talks to one peer per step; BRAID_ALLTOALL_WINDOW steps are in flight at once.
// In place (each peer's block received where this rank's block for it was), step k pairs r
// with k-r both ways, its outgoing block staged in one of a few rotating buffers: scratch is
// a few blocks, not the message.
#include <algorithm>
#include <cstring>

#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {
namespace {

void inPlacePairs(const CollArgs& a, Schedule* s, int window) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  auto* buf = static_cast<char*>(a.recv);
  size_t maxBlock = 0;
  for (int p = 0; p < n; ++p) {
    if (p != r) maxBlock = std::max(maxBlock, a.sendcounts[p] * esz);
  }
  // Two staging buffers: an exchange can be staged while the one before it is on the wire.
  RotatingBuffers stage(s, maxBlock, maxBlock > 0 ? std::min<size_t>(n - 1, 2) : 0);
  std::vector<NodeId> done(n, kNoNode);
  for (int k = 0; k < n; ++k) {
    const int p = mod(k - r, n);  // and p's partner at step k is r
    if (p == r) continue;         // this rank's own block stays where it is
    NodeId gate = k >= window ? done[k - window] : kNoNode;
    NodeId free = kNoNode;
    char* st = maxBlock > 0 ? stage.next(&free) : nullptr;
    NodeId copied = s->copy(st, buf + a.sdispls[p] * esz, a.sendcounts[p] * esz, {free, gate});
    NodeId sent = s->send(p, 0, st, a.sendcounts[p] * esz, {copied});
    if (maxBlock > 0) stage.readBy(sent);
    NodeId got = s->recv(p, 0, buf + a.rdispls[p] * esz, a.recvcounts[p] * esz, {copied, gate});
    done[k] = s->copy(nullptr, nullptr, 0, {sent, got});
  }
}

}  // namespace

void allToAllPairwise(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  const auto* in = static_cast<const char*>(a.send);
  auto* out = static_cast<char*>(a.recv);
  const int window = static_cast<int>(s->comm()->config().alltoallWindow);
  if (a.send == a.recv && a.sdispls == a.rdispls && a.sendcounts == a.recvcounts) {
    return inPlacePairs(a, s, window);
  }
  if (a.send == a.recv) {
    // In place with other layouts: stage the send side so receives cannot overwrite what is
    // still to be sent (builds run when the call does: a stream's earlier call has written it).
    size_t span = 0;
    for (int p = 0; p < n; ++p) span = std::max(span, (a.sdispls[p] + a.sendcounts[p]) * esz);
    char* staged = static_cast<char*>(s->scratch(span + 64));
    std::memcpy(staged, in, span);
    in = staged;
  }
  s->copy(out + a.rdispls[r] * esz, in + a.sdispls[r] * esz, a.recvcounts[r] * esz);
  std::vector<NodeId> sends(n, kNoNode), recvs(n, kNoNode);
  for (int step = 1; step < n; ++step) {
    int to = mod(r + step, n), from = mod(r - step, n);
    NodeId gateS = step > window ? sends[step - window] : kNoNode;
    NodeId gateR = step > window ? recvs[step - window] : kNoNode;
    sends[step] = s->send(to, 0, in + a.sdispls[to] * esz, a.sendcounts[to] * esz, {gateS, gateR});
    recvs[step] =
        s->recv(from, 0, out + a.rdispls[from] * esz, a.recvcounts[from] * esz, {gateS, gateR});
  }
}

}  // namespace braid

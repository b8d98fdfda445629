// Pairwise-exchange all-to-all(v): at step k rank r exchanges with rank k-r both ways (a rank
// paired with itself that step has its own block), so every step is a perfect matching;
// BRAID_ALLTOALL_WINDOW steps are in flight at once. Every rank takes the steps in this order,
// in place or not (a rank's order that depended on its own buffers hung the others).
// In place with the same layout both ways (each peer's block received where this rank's block
// for it was), the outgoing block is staged in one of two rotating buffers just before its
// exchange: scratch is two blocks, not the message. Other in-place layouts copy the input
// aside first.
#include <algorithm>
#include <cstring>

#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allToAllPairwise(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  const auto* in = static_cast<const char*>(a.send);
  auto* out = static_cast<char*>(a.recv);
  const int window = static_cast<int>(s->comm()->config().alltoallWindow);
  const bool inPlace = a.send == a.recv;
  const bool sameLayout = inPlace && a.sdispls == a.rdispls && a.sendcounts == a.recvcounts;
  if (inPlace && !sameLayout) {
    // Receives must not overwrite what is still to be sent (builds run when the call does: a
    // stream's earlier call has written the input).
    size_t span = 0;
    for (int p = 0; p < n; ++p) span = std::max(span, (a.sdispls[p] + a.sendcounts[p]) * esz);
    char* staged = static_cast<char*>(s->scratch(span + 64));
    std::memcpy(staged, in, span);
    in = staged;
  }
  if (!sameLayout) {
    s->copy(out + a.rdispls[r] * esz, in + a.sdispls[r] * esz, a.recvcounts[r] * esz);
  }
  size_t maxBlock = 0;
  for (int p = 0; p < n && sameLayout; ++p) {
    if (p != r) maxBlock = std::max(maxBlock, a.sendcounts[p] * esz);
  }
  // Two staging buffers: an exchange can be staged while the one before it is on the wire.
  RotatingBuffers stage(s, maxBlock, maxBlock > 0 ? std::min<size_t>(n - 1, 2) : 0);
  std::vector<NodeId> done(n, kNoNode);
  for (int k = 0; k < n; ++k) {
    const int p = mod(k - r, n);  // and p's partner at step k is r
    if (p == r) continue;
    NodeId ready = k >= window ? done[k - window] : kNoNode;
    const char* src = in + a.sdispls[p] * esz;
    const size_t bytes = a.sendcounts[p] * esz;
    char* st = nullptr;
    if (maxBlock > 0) {
      NodeId free;
      st = stage.next(&free);
      ready = s->copy(st, src, bytes, {free, ready});
      src = st;
    }
    NodeId sent = s->send(p, 0, src, bytes, {ready});
    if (st != nullptr) stage.readBy(sent);
    NodeId got = s->recv(p, 0, out + a.rdispls[p] * esz, a.recvcounts[p] * esz, {ready});
    done[k] = s->copy(nullptr, nullptr, 0, {sent, got});
  }
}

}  // namespace braid

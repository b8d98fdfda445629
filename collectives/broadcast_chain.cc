// Pipelined chain broadcast for large messages: the root streams chunks down the chain
// root -> root+1 -> ...; every rank forwards chunk k as soon as it has arrived.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void broadcastChain(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt);
  const int vr = mod(r - a.root, n);
  const size_t K = chunksFor(a.count, esz, s);
  const int next = vr + 1 < n ? mod(r + 1, n) : -1;
  const int prev = mod(r - 1, n);
  const char* src = static_cast<const char*>(vr == 0 ? a.send : a.recv);
  auto* out = static_cast<char*>(a.recv);
  if (vr == 0) s->copy(out, a.send, a.count * esz);
  for (size_t k = 0; k < K; ++k) {
    size_t off = partStart(a.count, K, k) * esz, bytes = partSize(a.count, K, k) * esz;
    NodeId have = vr == 0 ? kNoNode : s->recv(prev, static_cast<uint32_t>(k), out + off, bytes);
    if (next >= 0) s->send(next, static_cast<uint32_t>(k), src + off, bytes, {have});
  }
}

}  // namespace braid

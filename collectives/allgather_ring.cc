// Ring all-gather: n-1 steps; block (r-s) travels to the right at step s, chunked so that a
// chunk is forwarded as soon as it has arrived.
#include "collectives/algorithms.h"
#include "src/core/comm.h"

namespace braid {

void allGatherRing(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt), blockBytes = a.count * esz;
  auto* out = static_cast<char*>(a.recv);
  NodeId mine = s->copy(out + r * blockBytes, a.send, blockBytes);
  if (n == 1) return;
  const size_t K = chunksFor(a.count, esz, s);
  const int left = mod(r - 1, n), right = mod(r + 1, n);
  std::vector<NodeId> have(K, mine);
  uint32_t slot = 0;
  for (int step = 0; step < n - 1; ++step) {
    int sb = mod(r - step, n), rb = mod(r - step - 1, n);
    for (size_t k = 0; k < K; ++k, ++slot) {
      size_t off = partStart(a.count, K, k) * esz, bytes = partSize(a.count, K, k) * esz;
      if (bytes == 0) continue;
      s->send(right, slot, out + sb * blockBytes + off, bytes, {have[k]});
      have[k] = s->recv(left, slot, out + rb * blockBytes + off, bytes);
    }
  }
}

}  // namespace braid

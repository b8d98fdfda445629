// Pairwise-exchange all-to-all(v): at step s rank r sends to r+s and receives from r-s, so
// every rank talks to one peer per step; BRAID_ALLTOALL_WINDOW steps are in flight at once.
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
  if (a.send == a.recv) {
    // In place: stage the send side so receives cannot overwrite what is still to be sent.
    size_t span = 0;
    for (int p = 0; p < n; ++p) span = std::max(span, (a.sdispls[p] + a.sendcounts[p]) * esz);
    char* staged = static_cast<char*>(s->scratch(span + 64));
    std::memcpy(staged, in, span);
    in = staged;
  }
  s->copy(out + a.rdispls[r] * esz, in + a.sdispls[r] * esz, a.recvcounts[r] * esz);
  const int window = static_cast<int>(s->comm()->config().alltoallWindow);
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

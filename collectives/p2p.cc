// Point-to-point send and receive: one step each; matched in order per peer and direction.
#include "collectives/algorithms.h"

namespace braid {

void pointToPoint(const CollArgs& a, Schedule* s) {
  const size_t bytes = a.count * dtypeSize(a.dt);
  if (a.kind == CollKind::kSend) {
    s->send(a.root, 0, a.send, bytes);
  } else {
    s->recv(a.root, 0, a.recv, bytes);
  }
}

}  // namespace braid

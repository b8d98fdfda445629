// Rendezvous: every rank sends its transport address blob to the root, which answers with the
// full table once all ranks joined (or with an error naming the ranks that never came).
#pragma once

#include <string>
#include <vector>

#include "src/bootstrap/auth.h"
#include "src/bootstrap/socket_util.h"

namespace braid {

constexpr size_t kMaxBlobBytes = 64 << 10;

// Starts the root in a detached thread listening on bindAddr; it serves exactly one job and
// exits when the table was sent or after timeoutMs. *bound gets the address actually bound.
Status startRootServer(const SockAddr& bindAddr, const Secret& secret, int64_t timeoutMs,
                       SockAddr* bound);

Status rendezvous(const SockAddr& root, const Secret& secret, int rank, int nranks,
                  const std::string& blob, Deadline deadline, std::vector<std::string>* table);

}  // namespace braid

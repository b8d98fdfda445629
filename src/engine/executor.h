// Runs schedules: posts net steps to the transports, runs local steps (reductions, copies)
// on the calling thread, and waits for completions with the communicators' timeout.
#pragma once

#include <memory>
#include <vector>

#include "src/core/status.h"
#include "src/engine/schedule.h"

namespace braid {

// Runs every schedule (one call, or the fused calls of a group) to completion. On a failure or
// timeout the communicators involved are aborted, their peers told, and the first error
// returned naming the peer; no buffer is touched after this returns. The wait ends after the
// communicators' BRAID_TIMEOUT_MS, or at `limit` if that is sooner (the set-up's barrier: init
// keeps one deadline from its first step to its last).
Status executeSchedules(std::vector<std::unique_ptr<Schedule>>& schedules,
                        Deadline limit = Deadline::max());

class Comm;
// One blocking send or receive with another rank, run now on the calling thread (a NULL
// stream, outside a group): what executeSchedules does for the one-step schedule of
// collectives/p2p.cc, without building it (no schedule, no task; the thread's wait state is
// kept for its next call, so nothing is allocated). `name` is the call's name for errors
// ("send", "recv").
Status executeP2p(Comm* comm, const char* name, bool send, int peer, uint64_t tag, void* buf,
                  size_t bytes);

}  // namespace braid

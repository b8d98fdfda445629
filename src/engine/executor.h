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
// returned naming the peer; no buffer is touched after this returns.
Status executeSchedules(std::vector<std::unique_ptr<Schedule>>& schedules);

}  // namespace braid

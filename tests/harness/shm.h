// Helpers of the shared-memory tests: ranks restricted to shm, and what a communicator's
// transports sent (a call that moved nothing through them went through the fast boxes or
// the direct allreduce).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "harness/ranks.h"
#include "src/core/handles.h"

namespace braid::test {

inline RankOptions shmOnly(std::vector<std::pair<std::string, std::string>> more = {}) {
  RankOptions opt;
  opt.env = {{"BRAID_TRANSPORTS", "shm"}};
  for (auto& kv : more) opt.env.push_back(kv);
  return opt;
}

inline uint64_t sentBytes(braidComm_t comm) {
  uint64_t total = 0;
  for (const auto& c : comm->impl->transports()->counters()) total += c.sentBytes;
  return total;
}

}  // namespace braid::test

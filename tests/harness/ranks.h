// Multi-process test harness: every rank is a real forked process. Rank 0 makes the unique id
// (braidGetUniqueId, in the child, never in the parent) and hands it to the others over pipes.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "braid/braid.h"

namespace braid::test {

using RankBody = std::function<void(int rank, int nranks, const braidUniqueId& id)>;

struct RankOptions {
  int timeoutSec = 120;
  std::vector<std::pair<std::string, std::string>> env;  // set in every rank before body
  // Runs in each rank's process before anything else (e.g. entering a network namespace).
  std::function<void(int rank)> setup;
};

struct RankResult {
  bool exited = false;  // normal exit (else killed by a signal or by the harness)
  int code = -1;        // exit code when exited
  int signal = 0;
  bool hung = false;  // killed by the harness at the timeout
};

// Runs body in nranks processes and returns how each ended (no assertions).
std::vector<RankResult> runRanksRaw(int nranks, const RankBody& body, const RankOptions& opt = {});

// Runs body in nranks processes; the test fails if any rank fails an assertion, crashes,
// or hangs past the timeout.
void runRanks(int nranks, const RankBody& body, const RankOptions& opt = {});

// A communicator for this rank of a job made by runRanks; the test fails on error.
braidComm_t initComm(int rank, int nranks, const braidUniqueId& id);

// Seconds since an arbitrary point (steady clock).
double now();

// The communicator's multipath paths (braidCommGetPathStats), every call checked.
std::vector<braidPathStats_t> pathStats(braidComm_t comm);

// Runs `iters` float32 sum allreduces of `count` elements in place and checks every element.
void allreduceChecked(braidComm_t comm, int rank, int nranks, size_t count, int iters);

// Waits (bounded: ~10 s) until every multipath path of every rank is up; the ranks agree on it
// through an allreduce each round, so they make the same calls. Whether they all came up.
bool waitAllPathsUp(braidComm_t comm);

// Number of files in /dev/shm whose name starts with "braid".
int braidShmFiles();

// A TCP port that every address of `family` (AF_INET, AF_INET6) can bind now, for a
// rendezvous root (a loopback root listens on every address). Below the kernel's ephemeral
// range (32768 and up): a port from the kernel could become another test's source port.
int freeRootPort(int family);

}  // namespace braid::test

// Asserts a braid call succeeded; prints the communicator's last error otherwise.
#define BRAID_ASSERT_OK(call, comm)                                                           \
  do {                                                                                        \
    braidResult_t braid_r_ = (call);                                                          \
    ASSERT_EQ(braid_r_, braidSuccess)                                                         \
        << #call << ": " << braidGetErrorString(braid_r_) << ": " << braidGetLastError(comm); \
  } while (0)

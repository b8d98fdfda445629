// Small collectives through the shared-memory fast boxes (collectives/fastbox.cc): that they
// are used (no transport bytes), that ranks taking different paths to them (blocking call,
// group, stream, two streams) still meet, mismatched calls, a dead or silent peer, a sleeping
// waiter, and a BRAID_SHM_FAST_BYTES that differs between ranks. Every collective x dtype x op
// through them is covered by the shm instances of collectives_test.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"
#include "harness/shm.h"

namespace braid::test {
namespace {

// 1 + 2 + ... + n, the sum of (rank + 1) over the ranks.
float rankSum(int n) { return n * (n + 1) / 2.0f; }

TEST(FastBox, SmallCollectivesMoveNoTransportBytesUnlessAnAlgorithmIsForced) {
  for (bool forced : {false, true}) {
    runRanks(
        3,
        [forced](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          EXPECT_EQ(comm->impl->fastBoxes() != nullptr, true);
          uint64_t before = sentBytes(comm);
          float v[2] = {static_cast<float>(r + 1), 1};
          BRAID_ASSERT_OK(braidAllReduce(v, v, 2, braidFloat32, braidSum, comm, nullptr), comm);
          EXPECT_EQ(v[0], rankSum(n));
          EXPECT_EQ(v[1], n);
          uint64_t moved = sentBytes(comm) - before;
          if (forced) {
            EXPECT_GT(moved, 0u) << "BRAID_ALGO=allreduce=ring must keep the ring";
          } else {
            EXPECT_EQ(moved, 0u) << "an 8-byte allreduce should have gone through the boxes";
          }
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        shmOnly(forced ? std::vector<std::pair<std::string, std::string>>{{"BRAID_ALGO",
                                                                           "allreduce=ring"}}
                       : std::vector<std::pair<std::string, std::string>>{}));
  }
}

// Rank 0 calls blocking, rank 1 wraps each call in a group, rank 2 puts them on a stream and
// rank 3 alternates two streams; regular-size calls and point-to-point are mixed in.
TEST(FastBox, RanksMeetWhicheverWayTheyIssueTheCalls) {
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        braidStream_t s[2] = {nullptr, nullptr};
        BRAID_ASSERT_OK(braidStreamCreate(&s[0]), comm);
        BRAID_ASSERT_OK(braidStreamCreate(&s[1]), comm);
        constexpr int kCalls = 200;
        std::vector<float> small(kCalls * 3), big(100000, 1.0f);
        std::vector<int> gathered(kCalls * n), mine(kCalls);
        for (int k = 0; k < kCalls; ++k) {
          float* x = &small[k * 3];
          x[0] = static_cast<float>(r + 1);
          x[1] = static_cast<float>(k);
          x[2] = static_cast<float>(r * k);
          mine[k] = r * 1000 + k;  // read when the call runs (later, on a stream)
          braidStream_t st = r == 2 ? s[0] : r == 3 ? s[k % 2] : nullptr;
          if (r == 1) BRAID_ASSERT_OK(braidGroupStart(), comm);
          BRAID_ASSERT_OK(braidAllReduce(x, x, 3, braidFloat32, braidSum, comm, st), comm);
          BRAID_ASSERT_OK(braidAllGather(&mine[k], &gathered[k * n], 1, braidInt32, comm, st),
                          comm);
          if (r == 1) BRAID_ASSERT_OK(braidGroupEnd(), comm);
          if (k % 50 == 0) {
            // A regular-size call between the small ones (the schedule path).
            BRAID_ASSERT_OK(braidAllReduce(big.data(), big.data(), big.size(), braidFloat32,
                                           braidSum, comm, st),
                            comm);
          }
          if (k % 40 == 0) BRAID_ASSERT_OK(braidBarrier(comm, st), comm);
        }
        for (braidStream_t st : s) BRAID_ASSERT_OK(braidStreamSynchronize(st), comm);
        for (int k = 0; k < kCalls; ++k) {
          ASSERT_EQ(small[k * 3], rankSum(n)) << "call " << k;
          ASSERT_EQ(small[k * 3 + 1], static_cast<float>(n * k)) << "call " << k;
          ASSERT_EQ(small[k * 3 + 2], static_cast<float>(k * n * (n - 1) / 2)) << "call " << k;
          for (int q = 0; q < n; ++q) ASSERT_EQ(gathered[k * n + q], q * 1000 + k);
        }
        float expect = 1;
        for (int i = 0; i < (kCalls + 49) / 50; ++i) expect *= n;
        EXPECT_EQ(big[12345], expect);
        for (braidStream_t st : s) BRAID_ASSERT_OK(braidStreamDestroy(st), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

TEST(FastBox, SeveralSmallCallsInOneGroup) {
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        double a = r + 1, b = 10.0 * (r + 1), c = -1;
        int64_t root = r == 1 ? 77 : 0;
        BRAID_ASSERT_OK(braidGroupStart(), comm);
        BRAID_ASSERT_OK(braidAllReduce(&a, &a, 1, braidFloat64, braidMax, comm, nullptr), comm);
        BRAID_ASSERT_OK(braidReduce(&b, &c, 1, braidFloat64, braidSum, 2, comm, nullptr), comm);
        BRAID_ASSERT_OK(braidBroadcast(&root, &root, 1, braidInt64, 1, comm, nullptr), comm);
        BRAID_ASSERT_OK(braidGroupEnd(), comm);
        EXPECT_EQ(a, n);
        if (r == 2) {
          EXPECT_EQ(c, 10.0 * rankSum(n));
        }
        EXPECT_EQ(root, 77);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

// Thousands of small calls in one group (a framework fusing one call per tensor): they run in
// call order (the executor polls only the first pending fast-box call of the communicator),
// every result right.
TEST(FastBox, ThousandsOfCallsInOneGroup) {
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        constexpr int kCalls = 3000;
        std::vector<int64_t> v(kCalls);
        for (int k = 0; k < kCalls; ++k) v[k] = k % 3 == 2 ? (r == k % n ? k : -1) : k * (r + 1);
        BRAID_ASSERT_OK(braidGroupStart(), comm);
        for (int k = 0; k < kCalls; ++k) {
          if (k % 3 == 2) {
            BRAID_ASSERT_OK(braidBroadcast(&v[k], &v[k], 1, braidInt64, k % n, comm, nullptr),
                            comm);
          } else {
            BRAID_ASSERT_OK(braidAllReduce(&v[k], &v[k], 1, braidInt64, braidSum, comm, nullptr),
                            comm);
          }
        }
        BRAID_ASSERT_OK(braidGroupEnd(), comm);
        for (int k = 0; k < kCalls; ++k) {
          ASSERT_EQ(v[k], k % 3 == 2 ? k : k * rankSum(n)) << "call " << k;
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

// The root of a run of broadcasts hears from the others only their calls' descriptions: it
// must not overwrite a box that a slow reader has not read yet.
TEST(FastBox, ARunOfBroadcastsWaitsForTheSlowestReader) {
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (int k = 0; k < 600; ++k) {
          if (r == 2 && k % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
          int64_t v[3] = {r == 0 ? k : -1, r == 0 ? 3 * k : -1, r};
          BRAID_ASSERT_OK(braidBroadcast(v, v, 2, braidInt64, 0, comm, nullptr), comm);
          ASSERT_EQ(v[0], k) << "rank " << r << " call " << k;
          ASSERT_EQ(v[1], 3 * k) << "rank " << r << " call " << k;
          int64_t sum = -1;
          BRAID_ASSERT_OK(braidReduce(&v[2], &sum, 1, braidInt64, braidSum, k % n, comm, nullptr),
                          comm);
          if (r == k % n) {
            ASSERT_EQ(sum, n * (n - 1) / 2) << "call " << k;
          }
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

TEST(FastBox, MismatchedCallsAreNamedByBothRanks) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        float v[3] = {1, 2, 3};
        double t0 = now();
        braidResult_t rc =
            braidAllReduce(v, v, r == 0 ? 2 : 3, braidFloat32, braidSum, comm, nullptr);
        EXPECT_EQ(rc, braidInvalidUsage);
        EXPECT_LT(now() - t0, 5.0);
        std::string msg = braidGetLastError(comm);
        EXPECT_NE(msg.find("made a different call"), std::string::npos) << msg;
        EXPECT_NE(msg.find(r == 0 ? "12 bytes" : "8 bytes"), std::string::npos) << msg;
        // The communicator is broken now, and says so.
        braidResult_t async = braidSuccess;
        EXPECT_EQ(braidCommGetAsyncError(comm, &async), braidSuccess);
        EXPECT_NE(async, braidSuccess);
        EXPECT_NE(braidBarrier(comm, nullptr), braidSuccess);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "20000"}}));
}

// A rank that takes itself for a broadcast's root read nothing before: every rank returned
// success, with different data (the root's and its own). Now the root checks every rank's
// description of the call; the communicator fails everywhere, naming the roots.
TEST(FastBox, ABroadcastWithAnotherRootOnOneRankFailsTheCommunicator) {
  for (int n : {2, 4}) {
    runRanks(
        n,
        [](int r, int size, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, size, id);
          ASSERT_NE(comm, nullptr);
          std::vector<float> v(100, static_cast<float>(r + 1));
          const int root = r == 1 ? 1 : 0;  // rank 1 says root 1, the others 0
          braidResult_t rc =
              braidBroadcast(v.data(), v.data(), v.size(), braidFloat32, root, comm, nullptr);
          if (r <= 1) {
            EXPECT_EQ(rc, braidInvalidUsage) << "rank " << r;
            std::string msg = braidGetLastError(comm);
            EXPECT_NE(msg.find(r == 0 ? "root 1" : "root 0"), std::string::npos) << msg;
          }
          // Whoever got its root's data still learns that the communicator failed.
          float s = 1;
          EXPECT_NE(braidAllReduce(&s, &s, 1, braidFloat32, braidSum, comm, nullptr), braidSuccess)
              << "rank " << r;
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        },
        shmOnly({{"BRAID_TIMEOUT_MS", "20000"}}));
  }
}

TEST(FastBox, APeerThatDiesWhileOthersWaitIsNamed) {
  auto res = runRanksRaw(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        float v = 1;
        BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr), comm);
        if (r == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the others sleep
          raise(SIGKILL);
        }
        double t0 = now();
        braidResult_t rc = braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr);
        std::string msg = braidGetLastError(comm);
        EXPECT_EQ(rc, braidRemoteError) << msg;
        EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
        EXPECT_LT(now() - t0, 5.0) << "found by the timeout (30 s), not by the peer's death";
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "30000"}}));
  ASSERT_EQ(res.size(), 3u);
  EXPECT_EQ(res[1].signal, SIGKILL);
  for (int r : {0, 2}) EXPECT_TRUE(res[r].exited && res[r].code == 0) << "rank " << r;
}

// A rank that returns from its last collective and exits without braidCommDestroy (programs
// do) failed the others' part of that call still running among themselves ("closed its
// shared-memory connection unexpectedly": 5 of 5 runs, 3 ranks, 4 MB). Nothing waited for it:
// the call ends well, and the next call that needs it fails at once naming it.
TEST(FastBox, ARankThatExitsWithoutDestroyAfterItsLastCallLetsTheOthersFinishIt) {
  for (int round = 0; round < 3; ++round) {
    auto res = runRanksRaw(
        3,
        [](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          std::vector<float> v(1 << 20, static_cast<float>(r + 1));
          BRAID_ASSERT_OK(
              braidAllReduce(v.data(), v.data(), v.size(), braidFloat32, braidSum, comm, nullptr),
              comm);
          if (r == 1) _exit(0);  // no destroy
          EXPECT_EQ(v.front(), 6.0f);
          EXPECT_EQ(v.back(), 6.0f);
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          const double t0 = now();
          float x = 1;
          braidResult_t rc = braidAllReduce(&x, &x, 1, braidFloat32, braidSum, comm, nullptr);
          std::string msg = braidGetLastError(comm);
          EXPECT_EQ(rc, braidRemoteError) << msg;
          EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
          EXPECT_LT(now() - t0, 5.0) << msg;
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        },
        shmOnly({{"BRAID_TIMEOUT_MS", "30000"}}));
    ASSERT_EQ(res.size(), 3u);
    for (int r : {0, 1, 2}) EXPECT_TRUE(res[r].exited && res[r].code == 0) << "rank " << r;
  }
}

// A peer that destroys its communicator (before the others' call, or while they wait in it)
// writes no more boxes: the others fail at once naming it, not at BRAID_TIMEOUT_MS. Fast-box
// sizes on 2 and 3 ranks, and the direct allreduce of 2.
TEST(FastBox, APeerThatLeavesIsNamedAtOnce) {
  struct Case {
    int nranks;
    size_t count;
    int leaveAfterMs;
  };
  for (const Case c : {Case{2, 4, 0}, Case{2, 4, 300}, Case{3, 4, 0}, Case{3, 4, 300},
                       Case{2, 1 << 18, 0}, Case{2, 1 << 18, 300}}) {
    SCOPED_TRACE(::testing::Message() << c.nranks << " ranks, " << c.count
                                      << " floats, leaving after " << c.leaveAfterMs << " ms");
    runRanks(
        c.nranks,
        [c](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          if (r == 1) {
            std::this_thread::sleep_for(std::chrono::milliseconds(c.leaveAfterMs));
            EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
            return;
          }
          std::vector<float> v(c.count, 1.0f);
          double t0 = now();
          braidResult_t rc =
              braidAllReduce(v.data(), v.data(), c.count, braidFloat32, braidSum, comm, nullptr);
          std::string msg = braidGetLastError(comm);
          EXPECT_EQ(rc, braidRemoteError) << msg;
          EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
          EXPECT_NE(msg.find("destroyed its communicator"), std::string::npos) << msg;
          EXPECT_LT(now() - t0, 5.0) << "found by the timeout (30 s), not by the goodbye";
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        },
        shmOnly({{"BRAID_TIMEOUT_MS", "30000"}}));
  }
}

// A group spanning two communicators, where the fast-box call on one fails: the group's call
// on the other must end too (its peers are told), not wait for BRAID_TIMEOUT_MS; and the
// communicators must then close at once. The call on `half` fails because a peer destroys
// its communicator (leave) or because each rank's watchdog aborts it (abort) while rank 0
// never makes the calls.
TEST(FastBox, AGroupOverTwoCommunicatorsEndsWhenOnesFastBoxCallFails) {
  for (bool abort : {false, true}) {
    SCOPED_TRACE(abort ? "abort" : "leave");
    runRanks(
        4,
        [abort](int r, int n, const braidUniqueId& id) {
          braidComm_t world = initComm(r, n, id);
          ASSERT_NE(world, nullptr);
          braidComm_t half = nullptr;
          BRAID_ASSERT_OK(braidCommSplit(world, r % 2, r, &half), world);
          const int absent = abort ? 0 : 1;
          if (r == absent) {
            std::this_thread::sleep_for(std::chrono::milliseconds(abort ? 6000 : 300));
            braidCommDestroy(half);
            std::this_thread::sleep_for(std::chrono::milliseconds(3000));
            braidCommDestroy(world);  // (both failed by their peers meanwhile)
            return;
          }
          std::thread watchdog;
          if (abort) {
            watchdog = std::thread([half] {
              std::this_thread::sleep_for(std::chrono::milliseconds(500));
              double t0 = now();
              EXPECT_EQ(braidCommAbort(half), braidSuccess);
              EXPECT_LT(now() - t0, 2.0) << "abort waited for the group";
            });
          }
          float a = 1, b = 0, c = 0;
          double t0 = now();
          braidGroupStart();
          braidAllReduce(&a, &b, 1, braidFloat32, braidSum, half, nullptr);
          braidAllReduce(&a, &c, 1, braidFloat32, braidSum, world, nullptr);
          braidResult_t rc = braidGroupEnd();
          double took = now() - t0;
          std::string msg = braidGetLastError(nullptr);
          EXPECT_NE(rc, braidSuccess);
          EXPECT_LT(took, 5.0) << "the group waited for the timeout (30 s): " << msg;
          if (watchdog.joinable()) watchdog.join();
          t0 = now();
          if (!abort) braidCommDestroy(half);
          braidCommDestroy(world);
          EXPECT_LT(now() - t0, 5.0) << "closing the failed communicators";
        },
        shmOnly({{"BRAID_TIMEOUT_MS", "30000"}}));
  }
}

TEST(FastBox, ASilentPeerTimesOutAndAWaiterSleeps) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        if (r == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(3000));
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
          return;
        }
        rusage before{}, after{};
        getrusage(RUSAGE_THREAD, &before);
        double t0 = now();
        int64_t x = 5;
        braidResult_t rc = braidAllReduce(&x, &x, 1, braidInt64, braidSum, comm, nullptr);
        double took = now() - t0;
        getrusage(RUSAGE_THREAD, &after);
        EXPECT_EQ(rc, braidTimeout);
        std::string msg = braidGetLastError(comm);
        EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
        EXPECT_GT(took, 1.5);
        auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
        double cpu = secs(after.ru_utime) - secs(before.ru_utime) + secs(after.ru_stime) -
                     secs(before.ru_stime);
        // Spinning the whole wait would be ~2 s of CPU; sleeping on the box costs a little.
        EXPECT_LT(cpu, 0.5 * took) << "the waiting rank burned " << cpu << " s of CPU";
        EXPECT_EQ(x, 5) << "a failed call must leave the buffer alone";
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "2000"}}));
}

TEST(FastBox, BoxSizesThatDifferBetweenRanksFailInit) {
  auto res = runRanksRaw(2, [](int r, int n, const braidUniqueId& id) {
    setenv("BRAID_TRANSPORTS", "shm", 1);
    setenv("BRAID_TIMEOUT_MS", "5000", 1);
    setenv("BRAID_SHM_FAST_BYTES", r == 0 ? "4096" : "1024", 1);
    braidComm_t comm = nullptr;
    braidResult_t rc = braidCommInitRank(&comm, n, id, r);
    EXPECT_NE(rc, braidSuccess);
    if (r == 0) {
      // The lower rank checks the segment the higher one made.
      std::string msg = braidGetLastError(nullptr);
      EXPECT_NE(msg.find("BRAID_SHM_FAST_BYTES differs"), std::string::npos) << msg;
    }
    if (rc == braidSuccess) braidCommDestroy(comm);
  });
  for (const auto& x : res) EXPECT_TRUE(x.exited && x.code == 0 && !x.hung);
}

}  // namespace
}  // namespace braid::test

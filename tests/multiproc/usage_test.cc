// Streams, groups, several communicators and splits used at once, long runs of small calls.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"
#include "src/core/handles.h"

namespace braid::test {
namespace {

TEST(Usage, ThousandsOfSmallAllReduces) {
  runRanks(4, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    for (int k = 0; k < 3000; ++k) {
      float v = static_cast<float>(r + k);
      BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr), comm);
      ASSERT_EQ(v, static_cast<float>(n * k + n * (n - 1) / 2)) << "call " << k;
    }
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// Two threads making collective calls on one communicator at once: each rank numbered them in
// the order its threads came, so a thread's call was matched with the peer's other thread's
// (2-398 of 400 sums silently wrong). A call made while another thread's has not returned is
// refused, the call in flight fails too, and so does the peer's: no wrong sum, every rank told.
TEST(Usage, TwoThreadsCollectivesOnOneCommunicatorFailEveryRank) {
  for (const char* transports : {"shm", "tcp"}) {
    SCOPED_TRACE(transports);
    RankOptions opt;
    opt.env = {{"BRAID_TRANSPORTS", transports}, {"BRAID_TIMEOUT_MS", "20000"}};
    runRanks(
        2,
        [](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          int32_t a[4] = {1, 1, 1, 1}, b[4] = {1000, 1000, 1000, 1000};
          if (r == 1) {
            // Rank 0's first thread waits in its call meanwhile; then this one is the peer of a
            // failed communicator.
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            const double t0 = now();
            EXPECT_NE(braidAllReduce(a, a, 4, braidInt32, braidSum, comm, nullptr), braidSuccess);
            EXPECT_LT(now() - t0, 10.0) << "not told at once";
            EXPECT_NE(std::string(braidGetLastError(comm)).find("another thread"),
                      std::string::npos)
                << braidGetLastError(comm);
          } else {
            braidResult_t first = braidSuccess;
            std::thread t(
                [&] { first = braidAllReduce(a, a, 4, braidInt32, braidSum, comm, nullptr); });
            std::this_thread::sleep_for(std::chrono::milliseconds(200));  // it waits for rank 1
            EXPECT_EQ(braidAllReduce(b, b, 4, braidInt32, braidSum, comm, nullptr),
                      braidInvalidUsage);
            EXPECT_NE(std::string(braidGetLastError(nullptr)).find("another thread"),
                      std::string::npos)
                << braidGetLastError(nullptr);
            t.join();
            EXPECT_NE(first, braidSuccess) << "the call in flight meanwhile";
          }
          EXPECT_EQ(braidCommAbort(comm), braidSuccess);
        },
        opt);
  }
}

// A thread that ends with its group open: its calls took their numbers and never ran, so the
// next call on the communicator waited for the peers' until BRAID_TIMEOUT_MS on every rank.
// The communicator fails at once, saying why.
TEST(Usage, AThreadThatEndsWithAGroupOpenFailsItsCommunicatorAtOnce) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "20000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        std::vector<int32_t> a(1000, 1), b(1000, 0);
        std::thread([&] {
          EXPECT_EQ(braidGroupStart(), braidSuccess);
          // (Refused where the peer's thread ended first: the communicator failed then.)
          (void)braidAllReduce(a.data(), b.data(), a.size(), braidInt32, braidSum, comm, nullptr);
        }).join();
        const double t0 = now();
        EXPECT_NE(braidAllReduce(a.data(), b.data(), a.size(), braidInt32, braidSum, comm, nullptr),
                  braidSuccess);
        EXPECT_LT(now() - t0, 5.0);
        EXPECT_NE(std::string(braidGetLastError(comm)).find("group open"), std::string::npos)
            << braidGetLastError(comm);
        EXPECT_EQ(braidCommAbort(comm), braidSuccess);
      },
      opt);
}

// Sends and receives are matched per peer and direction: a thread that sends and another that
// receives on one communicator at once is fine (as in MPI), small and large messages.
TEST(Usage, ASendingThreadAndAReceivingThreadShareACommunicator) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    const int peer = 1 - r;
    constexpr int kCalls = 60;
    std::atomic<int> bad{0};
    std::thread sender([&] {
      for (int k = 0; k < kCalls; ++k) {
        std::vector<int32_t> v(k % 2 ? 100000 : 3, r * 1000 + k);
        if (braidSend(v.data(), v.size(), braidInt32, peer, comm, nullptr) != braidSuccess) ++bad;
      }
    });
    for (int k = 0; k < kCalls; ++k) {
      std::vector<int32_t> v(k % 2 ? 100000 : 3, -1);
      ASSERT_EQ(braidRecv(v.data(), v.size(), braidInt32, peer, comm, nullptr), braidSuccess)
          << braidGetLastError(comm);
      ASSERT_EQ(v.front(), peer * 1000 + k);
      ASSERT_EQ(v.back(), peer * 1000 + k);
    }
    sender.join();
    EXPECT_EQ(bad.load(), 0) << braidGetLastError(comm);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// Waits up to `seconds` for a child process: its wait status, or -1 when it hung (then it is
// killed and reaped).
int waitChild(pid_t child, double seconds) {
  int status = 0;
  for (const double t0 = now(); now() - t0 < seconds;) {
    if (waitpid(child, &status, WNOHANG) == child) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(child, SIGKILL);
  waitpid(child, &status, 0);
  return -1;
}

// A child of fork() holds copies of its parent's communicators: using one would join the
// parent's calls (the peers got wrong sums), destroying one waited forever for the parent's
// threads (a framework's static communicator destroyed at the child's exit hung it). Both
// are refused, at once, and the parent goes on.
TEST(Usage, AForkedChildCannotUseOrDestroyItsParentsCommunicator) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    braidStream_t stream = nullptr;
    BRAID_ASSERT_OK(braidStreamCreate(&stream), comm);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      float v = 100;
      int bad = 0;
      if (braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr) != braidInvalidUsage)
        bad |= 1;
      if (std::string(braidGetLastError(nullptr)).find("fork") == std::string::npos) bad |= 2;
      // Asked of the communicator too (braid.hpp's exceptions do): the same reason.
      if (std::string(braidGetLastError(comm)).find("fork") == std::string::npos) bad |= 64;
      if (braidStreamSynchronize(stream) != braidInvalidUsage) bad |= 4;
      if (braidCommAbort(comm) != braidInvalidUsage) bad |= 8;
      if (braidCommDestroy(comm) != braidInvalidUsage) bad |= 16;
      if (v != 100) bad |= 32;
      _exit(bad);
    }
    const int status = waitChild(child, 20);
    ASSERT_NE(status, -1) << "the child hung";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    // Forks while another thread looks the communicator up: no child finds braid's locks held.
    std::atomic<bool> stop{false};
    std::thread busy([&] {
      int k = 0;
      while (!stop.load()) (void)braidCommCount(comm, &k);
    });
    for (int f = 0; f < 20; ++f) {
      pid_t c = fork();
      ASSERT_GE(c, 0);
      if (c == 0) {
        int k = 0;
        _exit(braidCommCount(comm, &k) == braidInvalidUsage ? 0 : 1);
      }
      const int st = waitChild(c, 10);
      if (st == -1) {
        ADD_FAILURE() << "child " << f << " hung";
      } else {
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child " << f << " status " << st;
      }
    }
    stop = true;
    busy.join();
    float v = 1;
    BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr), comm);
    EXPECT_EQ(v, 2.0f);
    BRAID_ASSERT_OK(braidStreamDestroy(stream), comm);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

TEST(Usage, StreamsRunInOrderAsynchronously) {
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    braidStream_t s1, s2;
    BRAID_ASSERT_OK(braidStreamCreate(&s1), comm);
    BRAID_ASSERT_OK(braidStreamCreate(&s2), comm);
    const size_t count = 1 << 18;
    std::vector<int32_t> a(count, 1), b(count, r);
    // Ten dependent allreduces on s1: each doubles... multiplies by n; order matters.
    for (int k = 0; k < 5; ++k) {
      BRAID_ASSERT_OK(braidAllReduce(a.data(), a.data(), count, braidInt32, braidSum, comm, s1),
                      comm);
    }
    BRAID_ASSERT_OK(braidBroadcast(b.data(), b.data(), count, braidInt32, 1, comm, s2), comm);
    // The calls returned before completing (or completed very fast); either way, sync.
    braidResult_t q = braidStreamQuery(s1);
    EXPECT_TRUE(q == braidInProgress || q == braidSuccess) << q;
    BRAID_ASSERT_OK(braidStreamSynchronize(s1), comm);
    BRAID_ASSERT_OK(braidStreamSynchronize(s2), comm);
    EXPECT_EQ(braidStreamQuery(s1), braidSuccess);
    int32_t want = 1;
    for (int k = 0; k < 5; ++k) want *= n;
    EXPECT_EQ(a[0], want);
    EXPECT_EQ(a[count - 1], want);
    EXPECT_EQ(b[count / 2], 1);
    BRAID_ASSERT_OK(braidStreamDestroy(s1), comm);
    BRAID_ASSERT_OK(braidStreamDestroy(s2), comm);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// An in-place all-to-all(v) queued on a stream after a call that writes its buffer sends what
// that call wrote (its input is copied aside or staged when it runs, not when it is queued:
// here the earlier call waits for a late peer). Both in-place
// layouts (blocks received where they were sent from, and elsewhere) and the rail-aligned one.
TEST(Usage, AnInPlaceAllToAllOnAStreamSendsWhatTheCallBeforeItWrote) {
  for (const char* algo : {"alltoall=pairwise", "alltoall=rail"}) {
    SCOPED_TRACE(algo);
    RankOptions opt;
    opt.env = {{"BRAID_ALGO", algo}};
    if (std::string(algo) == "alltoall=rail") {
      std::string topo = ::testing::TempDir() + "a2a_stream_topo.json";
      std::ofstream(topo) << R"({"nodes": [{"ranks": [0, 1]}, {"ranks": [2, 3]}]})";
      opt.env.push_back({"BRAID_TOPO_FILE", topo});
    }
    runRanks(
        4,
        [](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          braidStream_t s;
          BRAID_ASSERT_OK(braidStreamCreate(&s), comm);
          const size_t per = 1000;
          std::vector<int32_t> src(per * n, -1), buf(per * n, -7);
          for (int q = 0; q < n && r == 0; ++q) {
            for (size_t i = 0; i < per; ++i) src[q * per + i] = q * 1000 + i;
          }
          std::vector<size_t> cnt(n, per), sd(n), rd(n);
          for (int q = 0; q < n; ++q) {
            sd[q] = q * per;
            rd[q] = (n - 1 - q) * per;  // received blocks land on others' blocks
          }
          for (int layout = 0; layout < 2; ++layout) {
            std::fill(buf.begin(), buf.end(), -7);
            // buf = rank 0's src, once rank 3 comes (the others' calls wait for it).
            if (r == 3) std::this_thread::sleep_for(std::chrono::milliseconds(300));
            BRAID_ASSERT_OK(
                braidAllReduce(src.data(), buf.data(), per * n, braidInt32, braidMax, comm, s),
                comm);
            if (layout == 0) {
              BRAID_ASSERT_OK(braidAllToAll(buf.data(), buf.data(), per, braidInt32, comm, s),
                              comm);
            } else {
              BRAID_ASSERT_OK(braidAllToAllv(buf.data(), cnt.data(), sd.data(), buf.data(),
                                             cnt.data(), rd.data(), braidInt32, comm, s),
                              comm);
            }
            BRAID_ASSERT_OK(braidStreamSynchronize(s), comm);
            // Every rank sent rank 0's block for it: block q of rank 0's src.
            for (int q = 0; q < n; ++q) {
              const size_t at = (layout == 0 ? q : n - 1 - q) * per;
              ASSERT_EQ(buf[at], r * 1000) << "layout " << layout << " from " << q;
              ASSERT_EQ(buf[at + per - 1], r * 1000 + static_cast<int>(per) - 1);
            }
          }
          BRAID_ASSERT_OK(braidStreamDestroy(s), comm);
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        opt);
  }
}

// Destroying a communicator completes what was queued on its streams first (as NCCL's destroy
// does): calls queued and never synchronized still run on both ranks, the stream then
// synchronizes cleanly. One rank destroys at once, the other later.
TEST(Usage, DestroyCompletesWhatWasQueuedOnAStream) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    braidStream_t s;
    BRAID_ASSERT_OK(braidStreamCreate(&s), comm);
    const size_t count = 1 << 16;
    std::vector<int32_t> a(count, 1);
    for (int k = 0; k < 4; ++k) {
      BRAID_ASSERT_OK(braidAllReduce(a.data(), a.data(), count, braidInt32, braidSum, comm, s),
                      comm);
    }
    if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
    EXPECT_EQ(braidStreamSynchronize(s), braidSuccess) << braidGetLastError(nullptr);
    EXPECT_EQ(a[0], 16);
    EXPECT_EQ(a[count - 1], 16);
    EXPECT_EQ(braidStreamDestroy(s), braidSuccess);
  });
}

// braidCommAbort right after a call that finished on this rank: what the rank sent must still
// reach the peers still receiving it (aborting the transport dropped its queued frames: the
// peers' same call failed, 26 of 100 on shm, and on tcp with part of its data missing). With
// nothing in flight, abort leaves as destroy does; calls in flight still fail at once
// (PeerFailure.AbortFromAnotherThreadUnblocksACollective).
TEST(Usage, AbortRightAfterACallLetsThePeersFinishIt) {
  for (const char* transport : {"shm", "tcp"}) {
    RankOptions opt;
    opt.env = {{"BRAID_TRANSPORTS", transport}, {"BRAID_TIMEOUT_MS", "20000"}};
    runRanks(
        3,
        [](int r, int n, const braidUniqueId& id) {
          braidComm_t world = initComm(r, n, id);
          ASSERT_NE(world, nullptr);
          for (size_t count : {size_t{65536}, size_t{1} << 20}) {
            std::vector<float> a(count, 1), b(count);
            for (int it = 0; it < 12; ++it) {
              braidComm_t c = nullptr;
              BRAID_ASSERT_OK(braidCommSplit(world, 0, r, &c), world);
              std::fill(b.begin(), b.end(), 0.f);
              ASSERT_EQ(
                  braidAllReduce(a.data(), b.data(), count, braidFloat32, braidSum, c, nullptr),
                  braidSuccess)
                  << "rank " << r << ", " << count << " floats, iteration " << it << ": "
                  << braidGetLastError(c);
              EXPECT_EQ(std::count(b.begin(), b.end(), float(n)), ptrdiff_t(count));
              EXPECT_EQ(braidCommAbort(c), braidSuccess);
              BRAID_ASSERT_OK(braidBarrier(world, nullptr), world);
            }
          }
          EXPECT_EQ(braidCommDestroy(world), braidSuccess);
        },
        opt);
  }
}

// A call refused inside a group (bad datatype) made braidGroupEnd return success and run the
// rest: the peer waited for the missing message until the timeout. As in NCCL, braidGroupEnd
// now returns the error and runs nothing; the communicator with calls in the group fails, so
// the peer hears why at once. A group whose only call was refused changes nothing.
TEST(Usage, AGroupWithARefusedCallRunsNothingAndSaysSo) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "20000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        int32_t x = 1, y = 0;
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        EXPECT_EQ(
            braidAllReduce(&x, &y, 1, braidInt32, static_cast<braidRedOp_t>(77), comm, nullptr),
            braidInvalidArgument);
        EXPECT_EQ(braidGroupEnd(), braidInvalidArgument);
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("nothing of the group ran"), std::string::npos) << msg;
        // The same with all-to-allv's own checks (NULL counts).
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        EXPECT_EQ(
            braidAllToAllv(&x, nullptr, nullptr, &y, nullptr, nullptr, braidInt32, comm, nullptr),
            braidInvalidArgument);
        EXPECT_EQ(braidGroupEnd(), braidInvalidArgument);
        msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("nothing of the group ran"), std::string::npos) << msg;
        EXPECT_EQ(y, 0);
        BRAID_ASSERT_OK(braidAllReduce(&x, &y, 1, braidInt32, braidSum, comm, nullptr), comm);
        EXPECT_EQ(y, 2);
        std::vector<int32_t> a(100, r), b(100, -1);
        const double t0 = now();
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        if (r == 0) {
          EXPECT_EQ(braidSend(a.data(), a.size(), braidInt32, 1, comm, nullptr), braidSuccess);
          EXPECT_EQ(
              braidSend(a.data(), a.size(), static_cast<braidDataType_t>(42), 1, comm, nullptr),
              braidInvalidArgument);
          EXPECT_EQ(braidGroupEnd(), braidInvalidArgument);
        } else {
          // (Refused already if rank 0's group failed the communicator first.)
          (void)braidRecv(b.data(), b.size(), braidInt32, 0, comm, nullptr);
          (void)braidRecv(b.data(), b.size(), braidInt32, 0, comm, nullptr);
          EXPECT_NE(braidGroupEnd(), braidSuccess);
          msg = braidGetLastError(nullptr);
          EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
          EXPECT_NE(msg.find("datatype 42"), std::string::npos) << msg;
        }
        EXPECT_LT(now() - t0, 10.0) << "rank " << r << " waited for the timeout";
        EXPECT_EQ(b[0], -1);  // nothing of rank 0's group was sent
        EXPECT_NE(braidCommDestroy(comm), braidInternalError);
      },
      opt);
}

// NCCL's way of making several ranks' communicators from one thread (nccl-tests' -g): inits
// inside a group run together at its end. Each blocked the thread for BRAID_TIMEOUT_MS,
// waiting for the next, before.
TEST(Usage, SeveralRanksCommunicatorsAreMadeFromOneThreadInAGroup) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "4000"}};
  runRanks(
      1,
      [](int, int, const braidUniqueId&) {
        constexpr int n = 3;
        braidUniqueId id;
        BRAID_ASSERT_OK(braidGetUniqueId(&id), nullptr);
        braidComm_t c[n];
        const double t0 = now();
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        for (int i = 0; i < n; ++i) {
          BRAID_ASSERT_OK(braidCommInitRank(&c[i], n, id, i), nullptr);
          EXPECT_EQ(c[i], nullptr);  // set at the group's end
        }
        BRAID_ASSERT_OK(braidGroupEnd(), nullptr);
        EXPECT_LT(now() - t0, 3.0);
        float v[n];
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        for (int i = 0; i < n; ++i) {
          int rank = -1;
          BRAID_ASSERT_OK(braidCommUserRank(c[i], &rank), c[i]);
          EXPECT_EQ(rank, i);
          v[i] = static_cast<float>(i + 1);
          BRAID_ASSERT_OK(braidAllReduce(&v[i], &v[i], 1, braidFloat32, braidSum, c[i], nullptr),
                          c[i]);
        }
        BRAID_ASSERT_OK(braidGroupEnd(), nullptr);
        for (int i = 0; i < n; ++i) {
          EXPECT_EQ(v[i], 6.0f);
          BRAID_ASSERT_OK(braidCommDestroy(c[i]), nullptr);
        }
        // A rank of the communicator missing: the group's end says so after the timeout.
        BRAID_ASSERT_OK(braidGetUniqueId(&id), nullptr);
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        for (int i = 0; i < n - 1; ++i)
          BRAID_ASSERT_OK(braidCommInitRank(&c[i], n, id, i), nullptr);
        EXPECT_EQ(braidGroupEnd(), braidTimeout);
        const std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("never joined"), std::string::npos) << msg;
        EXPECT_EQ(c[0], nullptr);
        // One init refused (rank out of range): the group's end runs none of them, at once.
        BRAID_ASSERT_OK(braidGetUniqueId(&id), nullptr);
        const double t1 = now();
        ASSERT_EQ(braidGroupStart(), braidSuccess);
        BRAID_ASSERT_OK(braidCommInitRank(&c[0], n, id, 0), nullptr);
        EXPECT_EQ(braidCommInitRank(&c[1], n, id, 7), braidInvalidArgument);
        EXPECT_EQ(braidGroupEnd(), braidInvalidArgument);
        EXPECT_EQ(c[0], nullptr);
        EXPECT_LT(now() - t1, 2.0);
      },
      opt);
}

// All-to-allv receive blocks of two peers that overlap (which lands would depend on timing):
// refused, changing nothing; the same call with separate blocks then runs.
TEST(Usage, AllToAllvWithOverlappingReceiveBlocksIsRefused) {
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    std::vector<size_t> counts(n, 4), sd(n), rd(n, 0);
    for (int p = 0; p < n; ++p) sd[p] = 4 * p;
    std::vector<int32_t> a(4 * n, r), b(4 * n, -1);
    EXPECT_EQ(braidAllToAllv(a.data(), counts.data(), sd.data(), b.data(), counts.data(), rd.data(),
                             braidInt32, comm, nullptr),
              braidInvalidArgument);
    std::string msg = braidGetLastError(comm);
    EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
    BRAID_ASSERT_OK(braidAllToAllv(a.data(), counts.data(), sd.data(), b.data(), counts.data(),
                                   sd.data(), braidInt32, comm, nullptr),
                    comm);
    for (int p = 0; p < n; ++p) EXPECT_EQ(b[4 * p], p);
    EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
  });
}

// After synchronous use (the caller runs its tasks in synchronize, so enqueue stops waking
// the worker) a call must still complete by itself: rank 0 polls braidStreamQuery, never
// synchronizes, while rank 1 waits for it in a blocking call.
TEST(Usage, StreamProgressesWithoutSynchronizeAfterSynchronousUse) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    braidStream_t s;
    BRAID_ASSERT_OK(braidStreamCreate(&s), comm);
    float v = 1;
    for (int k = 0; k < 50; ++k) {
      BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, s), comm);
      BRAID_ASSERT_OK(braidStreamSynchronize(s), comm);
    }
    v = 1;
    if (r == 0) {
      BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, s), comm);
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      braidResult_t q = braidInProgress;
      while (q == braidInProgress && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        q = braidStreamQuery(s);
      }
      EXPECT_EQ(q, braidSuccess) << "the queued call never ran without synchronize";
    } else {
      BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, comm, nullptr), comm);
    }
    EXPECT_EQ(v, 2.0f);
    BRAID_ASSERT_OK(braidStreamSynchronize(s), comm);
    BRAID_ASSERT_OK(braidStreamDestroy(s), comm);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

TEST(Usage, GroupedSendRecvRingOfLargeMessagesDoesNotDeadlock) {
  runRanks(4, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    const size_t count = size_t{2} << 20;  // 8 MiB of float
    std::vector<float> out(count, static_cast<float>(r)), in(count, -1);
    BRAID_ASSERT_OK(braidGroupStart(), comm);
    // Sends first on every rank: outside a group this order could deadlock.
    BRAID_ASSERT_OK(braidSend(out.data(), count, braidFloat32, (r + 1) % n, comm, nullptr), comm);
    BRAID_ASSERT_OK(braidRecv(in.data(), count, braidFloat32, (r + n - 1) % n, comm, nullptr),
                    comm);
    BRAID_ASSERT_OK(braidGroupEnd(), comm);
    EXPECT_EQ(in[0], static_cast<float>((r + n - 1) % n));
    EXPECT_EQ(in[count - 1], static_cast<float>((r + n - 1) % n));
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// A group whose calls are on the NULL stream and on a stream: the receive (NULL stream, run
// by braidGroupEnd itself) comes first in the group and needs the peer's send, which is on the
// stream: both progress together, whichever comes first in the group; small and large.
TEST(Usage, AGroupOverTheNullStreamAndAStreamProgressesTogether) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        braidStream_t s = nullptr;
        BRAID_ASSERT_OK(braidStreamCreate(&s), comm);
        const int peer = 1 - r;
        for (size_t count : {size_t{1}, size_t{1} << 20}) {
          for (bool sendFirst : {false, true}) {
            std::vector<int32_t> out(count, r + 1), in(count, -1);
            const double t0 = now();
            BRAID_ASSERT_OK(braidGroupStart(), comm);
            if (sendFirst) braidSend(out.data(), count, braidInt32, peer, comm, s);
            braidRecv(in.data(), count, braidInt32, peer, comm, nullptr);
            if (!sendFirst) braidSend(out.data(), count, braidInt32, peer, comm, s);
            BRAID_ASSERT_OK(braidGroupEnd(), comm);
            BRAID_ASSERT_OK(braidStreamSynchronize(s), comm);
            EXPECT_LT(now() - t0, 10.0) << count << (sendFirst ? " send first" : " receive first");
            EXPECT_EQ(in.front(), peer + 1);
            EXPECT_EQ(in.back(), peer + 1);
          }
        }
        BRAID_ASSERT_OK(braidStreamDestroy(s), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        (void)n;
      },
      RankOptions{30, {{"BRAID_TIMEOUT_MS", "20000"}}, {}});
}

TEST(Usage, NestedGroupAllToAllWithSelf) {
  runRanks(5, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    const size_t count = 1000;
    std::vector<int64_t> out(count * n), in(count * n, -1);
    for (int q = 0; q < n; ++q) {
      for (size_t i = 0; i < count; ++i) out[q * count + i] = r * 100000 + q * 1000 + i;
    }
    BRAID_ASSERT_OK(braidGroupStart(), comm);
    for (int q = 0; q < n; ++q) {
      BRAID_ASSERT_OK(braidGroupStart(), comm);  // nested
      BRAID_ASSERT_OK(braidSend(&out[q * count], count, braidInt64, q, comm, nullptr), comm);
      BRAID_ASSERT_OK(braidRecv(&in[q * count], count, braidInt64, q, comm, nullptr), comm);
      BRAID_ASSERT_OK(braidGroupEnd(), comm);
    }
    BRAID_ASSERT_OK(braidGroupEnd(), comm);
    for (int q = 0; q < n; ++q) {
      EXPECT_EQ(in[q * count + 7], q * 100000 + r * 1000 + 7) << "from " << q;
    }
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

TEST(Usage, TwoCommunicatorsAndASplitConcurrently) {
  runRanks(4, [](int r, int n, const braidUniqueId& id) {
    braidComm_t a = initComm(r, n, id);
    ASSERT_NE(a, nullptr);
    // A second communicator: rank 0 makes an id and broadcasts it over the first.
    braidUniqueId id2{};
    if (r == 0) {
      BRAID_ASSERT_OK(braidGetUniqueId(&id2), a);
    }
    BRAID_ASSERT_OK(braidBroadcast(&id2, &id2, sizeof id2, braidUint8, 0, a, nullptr), a);
    braidComm_t b = initComm(r, n, id2);
    ASSERT_NE(b, nullptr);
    // Split a: even/odd colors, key reverses the order.
    braidComm_t half = nullptr;
    BRAID_ASSERT_OK(braidCommSplit(a, r % 2, -r, &half), a);
    ASSERT_NE(half, nullptr);
    int hn = 0, hr = -1;
    BRAID_ASSERT_OK(braidCommCount(half, &hn), half);
    BRAID_ASSERT_OK(braidCommUserRank(half, &hr), half);
    EXPECT_EQ(hn, 2);
    EXPECT_EQ(hr, r < 2 ? 1 : 0);  // key -r: the higher parent rank comes first
    braidComm_t none = reinterpret_cast<braidComm_t>(0x1);
    BRAID_ASSERT_OK(braidCommSplit(a, r == 0 ? 0 : BRAID_SPLIT_NOCOLOR, 0, &none), a);
    EXPECT_EQ(none == nullptr, r != 0);
    if (none != nullptr) {
      BRAID_ASSERT_OK(braidCommDestroy(none), nullptr);
    }
    // Use the three communicators at once from three threads.
    std::vector<double> va(1 << 16, 1), vb(1 << 16, 2), vh(1 << 16, r);
    braidResult_t ra = braidSuccess, rb = braidSuccess, rh = braidSuccess;
    std::thread ta([&] {
      for (int k = 0; k < 20 && ra == braidSuccess; ++k) {
        ra = braidAllReduce(va.data(), va.data(), va.size(), braidFloat64, braidMax, a, nullptr);
      }
    });
    std::thread tb([&] {
      for (int k = 0; k < 20 && rb == braidSuccess; ++k) {
        rb = braidAllReduce(vb.data(), vb.data(), vb.size(), braidFloat64, braidMin, b, nullptr);
      }
    });
    std::thread th([&] {
      for (int k = 0; k < 20 && rh == braidSuccess; ++k) {
        rh = braidAllReduce(vh.data(), vh.data(), vh.size(), braidFloat64, braidMax, half, nullptr);
      }
    });
    ta.join();
    tb.join();
    th.join();
    EXPECT_EQ(ra, braidSuccess) << braidGetLastError(a);
    EXPECT_EQ(rb, braidSuccess) << braidGetLastError(b);
    EXPECT_EQ(rh, braidSuccess) << braidGetLastError(half);
    EXPECT_EQ(va[5], 1.0);
    EXPECT_EQ(vb[5], 2.0);
    EXPECT_EQ(vh[5], r % 2 == 0 ? 2.0 : 3.0);
    BRAID_ASSERT_OK(braidCommDestroy(half), nullptr);
    BRAID_ASSERT_OK(braidCommDestroy(b), nullptr);
    BRAID_ASSERT_OK(braidCommDestroy(a), nullptr);
  });
  EXPECT_EQ(braidShmFiles(), 0);
}

TEST(Usage, SeveralAlgorithmsForcedAgree) {
  for (const char* algo : {"allreduce=ring", "allreduce=rd,broadcast=chain,reduce=chain",
                           "broadcast=binomial,reduce=binomial"}) {
    RankOptions opt;
    opt.env = {{"BRAID_ALGO", algo}, {"BRAID_CHUNK_BYTES", "8192"}};
    runRanks(
        3,
        [algo](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          for (size_t count : {size_t{1}, size_t{5000}, size_t{100003}}) {
            std::vector<int32_t> v(count, r + 1), w(count, -1);
            BRAID_ASSERT_OK(
                braidAllReduce(v.data(), w.data(), count, braidInt32, braidSum, comm, nullptr),
                comm);
            EXPECT_EQ(w[count - 1], n * (n + 1) / 2) << algo;
            BRAID_ASSERT_OK(braidBroadcast(v.data(), w.data(), count, braidInt32, 2, comm, nullptr),
                            comm);
            EXPECT_EQ(w[0], 3) << algo;
            BRAID_ASSERT_OK(
                braidReduce(v.data(), w.data(), count, braidInt32, braidMax, 1, comm, nullptr),
                comm);
            if (r == 1) {
              EXPECT_EQ(w[count / 2], n) << algo;
            }
          }
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        opt);
  }
}

// A BRAID_ALGO entry that names no collective, or no algorithm of its collective, fails the
// communicator's creation on every rank at once (before any rank waits for another), with the
// names it could have used; before, such entries were ignored by every call they did not match.
TEST(Usage, AMisspeltAlgorithmFailsTheCommunicatorAtOnce) {
  const std::pair<const char*, const char*> cases[] = {
      {"send=ring", "'ring' is not an algorithm of send (known: p2p)"},
      {"allreduce=ring,allreduce=bogus", "'bogus' is not an algorithm of allreduce"},
      {"alreduce=ring", "'alreduce' names no collective (one of: allreduce,"},
      {"bogus", "'bogus' is not an algorithm of any collective (known: ring,"},
  };
  for (const auto& c : cases) {
    const char* spec = c.first;  // clang 14 captures no structured binding
    const char* want = c.second;
    RankOptions opt;
    opt.env = {{"BRAID_ALGO", spec}, {"BRAID_TIMEOUT_MS", "60000"}};
    runRanks(
        2,
        [spec, want](int r, int n, const braidUniqueId& id) {
          const double t0 = now();
          braidComm_t comm = nullptr;
          EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidInvalidArgument) << spec;
          EXPECT_EQ(comm, nullptr);
          const std::string msg = braidGetLastError(nullptr);
          EXPECT_NE(msg.find(std::string("BRAID_ALGO: ") + want), std::string::npos) << msg;
          EXPECT_LT(now() - t0, 10.0) << "no rank waits for the others";
        },
        opt);
  }
  // Valid entries, bare names included, still create it.
  RankOptions opt;
  opt.env = {{"BRAID_ALGO", "ring,alltoall=rail,send=p2p"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
}

}  // namespace
}  // namespace braid::test

// Multipath over the rails of an emulated fabric (tools/testbed: network namespaces, veth
// rails, TBF rates): every collective over 4 hosts x 2 rails, and correct results while a rail
// is cut, black-holed or flapping mid-operation, on one host or all; a cut path comes back and
// carries traffic again; a host that loses every rail is named by every rank within the
// timeout and the survivors build a new communicator (flows_test.cc: flows and ECMP).
// Needs root (skips otherwise); every test builds and removes its own uniquely named testbed.
#include "netns/fabric.h"

#include <numeric>

namespace braid::test {
namespace {

class Rails : public Fabric {
 protected:
  void railFailsBeforeTheJob(const std::string& fault);
};

TEST_F(Rails, EveryCollectiveIsCorrectAndSprayedOverBothRails) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t count = size_t{1} << 20;
        allreduceFor(comm, r, n, count, 0);
        std::vector<float> in(count), out(count * n);
        for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>(r * 1000 + i % 1000);
        BRAID_ASSERT_OK(braidAllGather(in.data(), out.data(), count, braidFloat32, comm, nullptr),
                        comm);
        for (int q = 0; q < n; ++q) {
          for (size_t i = 0; i < count; i += 4099) {
            ASSERT_EQ(out[q * count + i], static_cast<float>(q * 1000 + i % 1000));
          }
        }
        std::vector<float> rs(count);
        BRAID_ASSERT_OK(
            braidReduceScatter(out.data(), rs.data(), count, braidFloat32, braidSum, comm, nullptr),
            comm);
        for (size_t i = 0; i < count; i += 4099) {
          ASSERT_EQ(rs[i], static_cast<float>(n * (r * 1000 + i % 1000)));
        }
        std::vector<float> a2a(count * n), back(count * n);
        for (size_t i = 0; i < a2a.size(); ++i) a2a[i] = static_cast<float>(r * 7 + i / count);
        BRAID_ASSERT_OK(braidAllToAll(a2a.data(), back.data(), count, braidFloat32, comm, nullptr),
                        comm);
        for (int q = 0; q < n; ++q) ASSERT_EQ(back[q * count], static_cast<float>(q * 7 + r));
        std::vector<float> b(count, static_cast<float>(r));
        BRAID_ASSERT_OK(braidBroadcast(b.data(), b.data(), count, braidFloat32, 2, comm, nullptr),
                        comm);
        ASSERT_EQ(b[count - 1], 2.0f);
        // Both rails carried chunks.
        uint64_t rail[2] = {0, 0};
        for (const auto& s : pathStats(comm)) {
          rail[std::string(s.local).rfind("r1", 0) == 0 ? 1 : 0] += s.chunksSent;
        }
        EXPECT_GT(rail[0], 0u);
        EXPECT_GT(rail[1], 0u);
        EXPECT_EQ(failures(comm), 0u);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2));
}

// A rail that fails on one host before the job starts: its paths start dead on both ends (no
// pair crosses from one rail to the other, which the fabric would not route), the job runs on
// the other rail, and once the rail works again the background probes make those paths and
// they carry traffic. `fault`: "cut" (link down, address kept: every rank knows at once) or
// "blackhole" (carrier but no traffic: the first connections give up after a few seconds).
void Rails::railFailsBeforeTheJob(const std::string& fault) {
  // 4 hosts and ring allreduces: ranks 0 and 2 exchange no data, only keepalives, so a pair
  // that stays quiet across the uneven end of the start is covered too.
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  ASSERT_EQ(tb(fault + " 1 1"), 0);
  static constexpr int kRestoreMs = 15000;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread restore = later(kRestoreMs, {"restore 1 1"});
  RankOptions opt = options(2);
  opt.env.emplace_back("BRAID_ALGO", "allreduce=ring");
  runRanks(
      4,
      [t0](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{1} << 20, 0.5);
        ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(kRestoreMs))
            << "the first phase ran past the restore: its checks would race it";
        // Host 1's rail 1 is out: the r1 paths to and from it are dead and carried nothing.
        auto deadAtStart = [r](const braidPathStats_t& s) {
          return std::string(s.local).rfind("r1", 0) == 0 && (r == 1 || s.peer == 1);
        };
        int toPeer[4] = {0, 0, 0, 0};
        uint64_t toNext = 0;  // chunks to the ring's next rank
        for (const auto& s : pathStats(comm)) {
          ++toPeer[s.peer];
          const std::string local = s.local, remote = s.remote;
          EXPECT_EQ(local.substr(0, 2) == "r1", remote.rfind("10.101.", 0) == 0)
              << local << " -> " << remote;
          if (deadAtStart(s)) {
            EXPECT_NE(s.state, braidPathUp) << local << " -> " << remote;
            EXPECT_EQ(s.chunksSent, 0u) << local << " -> " << remote;
          } else {
            EXPECT_EQ(s.state, braidPathUp) << local << " -> " << remote;
          }
          if (s.peer == (r + 1) % n) toNext += s.chunksSent;
        }
        EXPECT_GT(toNext, 0u) << "rank " << r << " sent nothing to its ring successor";
        for (int q = 0; q < n; ++q) {
          if (q == r) continue;
          EXPECT_EQ(toPeer[q], 2) << "paths to rank " << q;
        }
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(kRestoreMs));
        // Now they carry data too, where this rank sends much (a ring sends to one peer).
        pathsComeBackAndCarry(comm, r, n, deadAtStart);
        EXPECT_EQ(failures(comm), 0u);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      opt);
  restore.join();
}

TEST_F(Rails, ARailDownAtStartStartsDeadAndJoinsWhenItComesUp) { railFailsBeforeTheJob("cut"); }

TEST_F(Rails, ARailBlackholedAtStartStartsDeadAndJoinsWhenItWorks) {
  railFailsBeforeTheJob("blackhole");
}

// Every rail of host 1 without a link as the job starts (its links come up 1.5 s later): its
// rank failed at once with "invalid argument: no rail is up with an address" and the others
// waited BRAID_TIMEOUT_MS for it. It waits for a rail, as for a late peer, and the job runs.
TEST_F(Rails, AHostWhoseRailsAllComeUpLateJoinsTheJob) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  ASSERT_EQ(tb("cut 1 0"), 0);
  ASSERT_EQ(tb("cut 1 1"), 0);
  std::thread restore = later(1500, {"restore 1 0", "restore 1 1"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{1} << 16, 0.5);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2, "15000"));
  restore.join();
}

// Ranks that share a host (shared memory between them) keep to their own rail by default
// (BRAID_MULTIRAIL=auto: failover; the other rail stands by) and with off; every pair is rail
// to rail, also between ranks of different rails (off paired this rank's NIC with the peer's
// own, on the other rail: the kernel sent the bytes out of the wrong NIC).
TEST_F(Rails, RanksSharingAHostKeepToTheirOwnRails) {
  if (!up(2, 2)) GTEST_SKIP() << "cannot build a testbed here";
  for (const char* mode : {"auto", "off"}) {
    SCOPED_TRACE(mode);
    RankOptions opt = options(2, "20000", 2);
    opt.env.push_back({"BRAID_MULTIRAIL", mode});
    runRanks(
        4,
        [](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          allreduceFor(comm, r, n, size_t{1} << 20, 0.3);
          // The rank of the other host and the other rail: r0 <-> r3, r1 <-> r2.
          const int cross = (1 - r / 2) * 2 + (1 - r % 2);
          std::vector<char> out(4 << 20, static_cast<char>(r)), in(4 << 20, -1);
          BRAID_ASSERT_OK(braidGroupStart(), nullptr);
          BRAID_ASSERT_OK(braidSend(out.data(), out.size(), braidInt8, cross, comm, nullptr), comm);
          BRAID_ASSERT_OK(braidRecv(in.data(), in.size(), braidInt8, cross, comm, nullptr), comm);
          BRAID_ASSERT_OK(braidGroupEnd(), nullptr);
          EXPECT_EQ(in[12345], static_cast<char>(cross));
          const std::string own = "r" + std::to_string(r % 2) + " ";
          auto st = pathStats(comm);
          ASSERT_EQ(st.size(), 4u);  // 2 ranks on the other host x 2 rails
          for (const auto& s : st) {
            const std::string local = s.local, remote = s.remote;
            // rail k's addresses are 10.(100+k).0.x
            EXPECT_EQ(local.substr(local.find(' ') + 1, 7), remote.substr(0, 7))
                << "rank " << r << ": " << local << " -> " << remote << " crosses rails";
            const bool mine = local.rfind(own, 0) == 0;
            EXPECT_EQ(s.state, mine ? braidPathUp : braidPathStandby)
                << "rank " << r << ": " << local << " -> " << remote;
            if (mine) {
              if (s.peer == cross) {
                EXPECT_GT(s.chunksSent, 0u) << "rank " << r << ": " << local;
              }
              continue;
            }
            EXPECT_EQ(s.chunksSent, 0u) << "rank " << r << ": " << local;
          }
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        },
        opt);
  }
}

// One path closed once (fault injection) between hosts of two ranks each, on a slow rail: the
// close is one failure on each end, and the path comes back once. The closing end tells the
// peer on the other rail, whose queue holds the chunks that go again; a notice that arrived
// after the path was connected anew took the new connection down too (both ends then counted
// two failures, each blaming the other).
TEST_F(Rails, AClosedPathFailsOnceAndComesBackOnce) {
  if (!up(2, 2, "--rate 200mbit")) GTEST_SKIP() << "cannot build a testbed here";
  RankOptions opt = options(2, "20000", 2);
  opt.env.push_back({"BRAID_FAULT", "rank=0,path=0,after_ms=500"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{1} << 20, 2.0);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        allreduceFor(comm, r, n, size_t{1} << 20, 0.5);  // after the re-admission too
        uint64_t failed = 0, back = 0;
        for (const auto& s : pathStats(comm)) {
          failed += s.failures;
          back += s.readmissions;
          EXPECT_NE(s.state, braidPathDead) << "rank " << r << ": " << s.local;
        }
        EXPECT_LE(failed, 1u) << "rank " << r;
        EXPECT_EQ(back, failed) << "rank " << r;
        if (r == 0) {
          EXPECT_EQ(failed, 1u) << "the fault did not fire";
        }
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      opt);
}

// An MTU black hole on one rail (jumbo frames on the hosts, 1500 on the rail's bridge port of
// host 1): the path's small handshake passes, its full segments vanish. It was found dead
// after 1 s of silence and re-admitted 50 ms later, over and over (about 7 failures in 8 s,
// each stalling the calls that had chunks on it for a second). Failures soon after a
// re-admission now hold the next one back, doubling each time. Also: paths name their
// connection's local port (it read ":0").
TEST_F(Rails, AnMtuBlackHoleIsNotReadmittedEverySecond) {
  if (!up(2, 2, "--mtu 9000")) GTEST_SKIP() << "cannot build a testbed here";
  ASSERT_EQ(std::system(("ip netns exec " + name_ + "-r1 ip link set h1 mtu 1500").c_str()), 0);
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (const auto& s : pathStats(comm)) {
          const std::string local = s.local;
          EXPECT_NE(local.substr(local.size() - 2), ":0") << "rank " << r << ": " << local;
        }
        allreduceFor(comm, r, n, size_t{1} << 20, 8.0);
        const uint64_t f = failures(comm);
        EXPECT_LE(f, 4u) << "rank " << r << ": the black-holed path kept coming back";
        if (r == 1) {
          EXPECT_GE(f, 1u) << "the black hole was not noticed";
        }
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2));
}

TEST_F(Rails, RailCutOnOneHostMidAllReduce) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread t = later(600, {"cut 1 0", "restore 1 0"}, 2000);
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{4} << 20, 2.0);
        if (r == 1) {
          EXPECT_GT(failures(comm), 0u) << "the cut was not noticed";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // restored by now
        pathsComeBackAndCarry(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2));
  t.join();
}

TEST_F(Rails, RailBlackholedOnOneHostMidAllReduce) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread t = later(600, {"blackhole 2 1", "restore 2 1"}, 2000);
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{4} << 20, 2.0);
        if (r == 2) {
          EXPECT_GT(failures(comm), 0u) << "the blackhole was not noticed";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        pathsComeBackAndCarry(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2));
  t.join();
}

TEST_F(Rails, RailCutOnEveryHostAndAFlappingRail) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread cut = later(500, {"cut 0 1", "cut 1 1", "cut 2 1", "cut 3 1"});
  // `status` says "flappers: none" once the six periods are over (a loaded machine runs the
  // testbed's commands late: a fixed wait raced them); then `done` tells the ranks.
  const std::string done = "/tmp/braid-" + name_ + "-flap-done";
  std::remove(done.c_str());
  std::thread restore = std::thread([&] {
    // After the last cut (a loaded machine runs them late: a restore at a fixed time could
    // come before a cut, and that rail then stayed cut).
    cut.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    for (const char* c :
         {"restore 0 1", "restore 1 1", "restore 2 1", "restore 3 1", "flap 3 0 150 6"}) {
      EXPECT_EQ(tb(c), 0) << c;
    }
    auto flapping = [this] { return tb("status | grep -qx 'flappers: none'") != 0; };
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (flapping() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(flapping()) << "the flapper did not end";
    std::fclose(std::fopen(done.c_str(), "w"));
  });
  runRanks(
      4,
      [done](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{4} << 20, 4.5);
        EXPECT_GT(failures(comm), 0u);
        for (int i = 0; i < 600 && access(done.c_str(), F_OK) != 0; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ASSERT_EQ(access(done.c_str(), F_OK), 0) << "the flapping did not end within 30 s";
        pathsComeBackAndCarry(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      options(2));
  restore.join();
  std::remove(done.c_str());
}

// Small sends return once their data is copied: a rank that sends and destroys its
// communicator at once, while the peer's host is cut off for a few seconds, waits until they
// are acknowledged (the paths come back, the chunks go again) instead of leaving them behind.
// It returned success after at most 2 s and the messages never arrived.
TEST_F(Rails, WhatARankSentJustBeforeDestroyArrivesAfterAnOutage) {
  if (!up(2, 2)) GTEST_SKIP() << "cannot build a testbed here";
  const std::string cut = "/tmp/braid-" + name_ + "-cut";
  const std::string restored = "/tmp/braid-" + name_ + "-restored";
  std::remove(cut.c_str());
  std::remove(restored.c_str());
  std::thread outage([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    for (const char* c : {"blackhole 1 0", "blackhole 1 1"}) EXPECT_EQ(tb(c), 0) << c;
    std::fclose(std::fopen(cut.c_str(), "w"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    for (const char* c : {"restore 1 0", "restore 1 1"}) EXPECT_EQ(tb(c), 0) << c;
    std::fclose(std::fopen(restored.c_str(), "w"));  // (no testbed command runs any more)
  });
  runRanks(
      2,
      [cut, restored](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        std::vector<int32_t> a(16), b(16);
        if (r == 0) {
          for (int i = 0; i < 200 && access(cut.c_str(), F_OK) != 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          ASSERT_EQ(access(cut.c_str(), F_OK), 0) << "no outage";
          std::iota(a.begin(), a.end(), 7);
          std::iota(b.begin(), b.end(), 70);
          BRAID_ASSERT_OK(braidSend(a.data(), a.size(), braidInt32, 1, comm, nullptr), comm);
          BRAID_ASSERT_OK(braidSend(b.data(), b.size(), braidInt32, 1, comm, nullptr), comm);
          const double t0 = now();
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess) << braidGetLastError(nullptr);
          EXPECT_GT(now() - t0, 1.0) << "destroy did not wait for the outage to end";
          (void)n;
          return;
        }
        BRAID_ASSERT_OK(braidRecv(a.data(), a.size(), braidInt32, 0, comm, nullptr), comm);
        BRAID_ASSERT_OK(braidRecv(b.data(), b.size(), braidInt32, 0, comm, nullptr), comm);
        EXPECT_EQ(a[15], 22);
        EXPECT_EQ(b[15], 85);
        for (int i = 0; i < 600 && access(restored.c_str(), F_OK) != 0; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess) << braidGetLastError(nullptr);
      },
      options(2));
  outage.join();
  std::remove(cut.c_str());
  std::remove(restored.c_str());
}

TEST_F(Rails, AHostThatLosesEveryRailIsNamedAndTheOthersStartOver) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::string idFile = "/tmp/braid-" + name_ + "-second.id";
  std::remove(idFile.c_str());
  std::thread cut = later(500, {"cut 3 0", "cut 3 1"});
  RankOptions opt = options(2, "4000");
  auto res = runRanksRaw(
      4,
      [idFile](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        std::vector<float> v(size_t{4} << 20, 1);
        braidResult_t rc = braidSuccess;
        double t0 = now(), failedAt = 0;
        while (rc == braidSuccess && now() - t0 < 30) {
          rc = braidAllReduce(v.data(), v.data(), v.size(), braidFloat32, braidSum, comm, nullptr);
          failedAt = now() - t0;
        }
        ASSERT_NE(rc, braidSuccess) << "rank " << r << " never noticed";
        std::string msg = braidGetLastError(comm);
        EXPECT_LT(failedAt, 15.0) << "rank " << r << " took too long";
        if (r != 3) {
          EXPECT_NE(msg.find("rank 3"), std::string::npos) << "rank " << r << ": " << msg;
        }
        EXPECT_EQ(braidCommAbort(comm), braidSuccess);
        if (r == 3) return;
        // The survivors start over without host 3.
        setenv("BRAID_RANK", std::to_string(r).c_str(), 1);
        setenv("BRAID_WORLD_SIZE", "3", 1);
        setenv("BRAID_UNIQUE_ID_FILE", idFile.c_str(), 1);
        braidComm_t again = nullptr;
        BRAID_ASSERT_OK(braidCommInitFromEnv(&again), nullptr);
        float x = 1;
        BRAID_ASSERT_OK(braidAllReduce(&x, &x, 1, braidFloat32, braidSum, again, nullptr), again);
        EXPECT_EQ(x, 3.0f);
        EXPECT_EQ(braidCommDestroy(again), braidSuccess);
      },
      opt);
  cut.join();
  std::remove(idFile.c_str());
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(res[r].exited && res[r].code == 0)
        << "rank " << r << " code " << res[r].code << " signal " << res[r].signal
        << (res[r].hung ? " (hung)" : "");
  }
}

// A bad --mtu is refused before anything is touched: the testbed that is up stays up as it was.
}  // namespace
}  // namespace braid::test

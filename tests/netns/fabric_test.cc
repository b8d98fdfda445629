// Multipath on an emulated fabric (tools/testbed: network namespaces, veth rails, TBF rates,
// ECMP leaf-spine): every collective over 4 hosts x 2 rails, and correct results while a rail
// is cut, black-holed or flapping mid-operation, on one host or all; a cut path comes back and
// carries traffic again; a host that loses every rail is named by every rank within the
// timeout and the survivors build a new communicator; an ECMP spine link dies mid-transfer.
// Needs root (skips otherwise); every test builds and removes its own uniquely named testbed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"

namespace braid::test {
namespace {

std::string testbedTool() {
  const char* t = std::getenv("TESTBED");
  return t != nullptr ? t : "tools/testbed";
}

class Fabric : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    name_ = "bt" + std::to_string(getpid() % 100000);
  }
  void TearDown() override {
    if (up_) tb("down");
  }
  int tb(const std::string& args) const {
    std::string cmd = testbedTool() + " --name " + name_ + " " + args + " >/dev/null 2>&1";
    return std::system(cmd.c_str());
  }
  // Returns false (after GTEST_SKIP) when the testbed cannot be built here.
  bool up(int hosts, int rails, const std::string& extra = "") {
    std::string args = "up --hosts " + std::to_string(hosts) + " --rails " + std::to_string(rails) +
                       " --rate 1gbit " + extra;
    if (tb(args) != 0) return false;
    up_ = true;
    return true;
  }
  // Rank r runs in host r's namespace with the host's rails.
  // perHost > 1: ranks r*perHost.. share host r (local ranks 0..perHost-1) and reach each
  // other through shared memory, as by default.
  RankOptions options(int rails, const std::string& timeoutMs = "20000", int perHost = 1) const {
    RankOptions opt;
    opt.timeoutSec = 240;
    std::string railList;
    for (int r = 0; r < rails; ++r) railList += (r ? ",r" : "r") + std::to_string(r);
    opt.env = {{"BRAID_TRANSPORTS", perHost > 1 ? "shm,tcp" : "tcp"},
               {"BRAID_RAILS", railList},
               {"BRAID_PATH_TIMEOUT_MS", "500"},
               {"BRAID_TIMEOUT_MS", timeoutMs},
               {"BRAID_SOCKET_IFNAME", ""}};
    std::string prefix = name_;
    opt.setup = [prefix, perHost](int rank) {
      setenv("BRAID_LOCAL_RANK", std::to_string(rank % perHost).c_str(), 1);
      std::string ns = "/run/netns/" + prefix + "-h" + std::to_string(rank / perHost);
      int fd = open(ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "rank %d: cannot enter %s\n", rank, ns.c_str());
        _exit(5);
      }
      close(fd);
    };
    return opt;
  }
  // Runs `cmds` (testbed commands) one after another in the background, the first after
  // `delayMs`, each `gapMs` after the previous.
  std::thread later(int delayMs, std::vector<std::string> cmds, int gapMs = 0) {
    return std::thread([this, delayMs, cmds, gapMs] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
      for (const auto& c : cmds) {
        EXPECT_EQ(tb(c), 0) << c;
        std::this_thread::sleep_for(std::chrono::milliseconds(gapMs));
      }
    });
  }

  void railFailsBeforeTheJob(const std::string& fault);
  void laggingFlow(bool peerRehashes);

  std::string name_;
  bool up_ = false;
};

uint64_t failures(braidComm_t comm) {
  uint64_t f = 0;
  for (const auto& s : pathStats(comm)) f += s.failures;
  return f;
}

// Allreduces of `count` floats, every element checked, until rank 0 has spent `seconds` (the
// ranks agree on the number of calls: rank 0's verdict travels in the last element).
void allreduceFor(braidComm_t comm, int r, int n, size_t count, double seconds) {
  std::vector<float> v(count + 1);
  double t0 = now();
  for (int it = 0;; ++it) {
    for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>((r + 1) * ((i + it) % 89));
    v[count] = r == 0 && now() - t0 >= seconds ? 1.0f : 0.0f;
    BRAID_ASSERT_OK(
        braidAllReduce(v.data(), v.data(), count + 1, braidFloat32, braidSum, comm, nullptr), comm);
    const float ranks = static_cast<float>(n * (n + 1) / 2);
    size_t bad = 0;
    for (size_t i = 0; i < count; ++i) bad += v[i] != ranks * static_cast<float>((i + it) % 89);
    ASSERT_EQ(bad, 0u) << "iteration " << it;
    if (v[count] != 0) break;
  }
}

// Waits until every path is up (exercising the communicator), then checks that every path
// that died came back, and that those to peers this rank sends data to carry chunks again
// (with `mustCarry`: those it names, instead of the re-admitted ones), and stay up.
void pathsComeBackAndCarry(braidComm_t comm, int r, int n,
                           const std::function<bool(const braidPathStats_t&)>& mustCarry = {}) {
  bool allUp = false;  // on every rank
  for (int i = 0; i < 200 && !allUp; ++i) {
    auto st = pathStats(comm);
    float down = std::all_of(st.begin(), st.end(), [](auto& s) { return s.state == braidPathUp; })
                     ? 0.0f
                     : 1.0f;
    BRAID_ASSERT_OK(braidAllReduce(&down, &down, 1, braidFloat32, braidSum, comm, nullptr), comm);
    allUp = down == 0;
    if (!allUp) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(allUp) << "rank " << r << ": paths did not come back";
  auto before = pathStats(comm);
  allreduceFor(comm, r, n, size_t{4} << 20, 0);
  auto after = pathStats(comm);
  std::vector<uint64_t> toPeer(static_cast<size_t>(n), 0);
  uint64_t failed = 0, readmitted = 0;
  for (size_t k = 0; k < after.size(); ++k) {
    toPeer[after[k].peer] += after[k].bytesSent - before[k].bytesSent;
    failed += after[k].failures;
    readmitted += after[k].readmissions;
  }
  EXPECT_EQ(readmitted, failed) << "rank " << r << ": not every dead path came back";
  for (size_t k = 0; k < after.size(); ++k) {
    EXPECT_EQ(after[k].state, braidPathUp) << after[k].local << " -> " << after[k].remote;
    const bool must = mustCarry ? mustCarry(after[k]) : after[k].readmissions > 0;
    if (!must || toPeer[after[k].peer] < (1u << 20)) continue;
    EXPECT_GT(after[k].chunksSent, before[k].chunksSent)
        << "rank " << r << ": path " << after[k].local << " -> " << after[k].remote
        << " carries nothing; to that peer: " << [&] {
             std::string d;
             for (size_t j = 0; j < after.size(); ++j) {
               if (after[j].peer != after[k].peer) continue;
               d += std::to_string(after[j].path) + ":" +
                    std::to_string(after[j].chunksSent - before[j].chunksSent) + " chunks " +
                    std::to_string(after[j].bytesSent - before[j].bytesSent) + " B; ";
             }
             return d;
           }();
  }
}

TEST_F(Fabric, EveryCollectiveIsCorrectAndSprayedOverBothRails) {
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
void Fabric::railFailsBeforeTheJob(const std::string& fault) {
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

TEST_F(Fabric, ARailDownAtStartStartsDeadAndJoinsWhenItComesUp) { railFailsBeforeTheJob("cut"); }

TEST_F(Fabric, ARailBlackholedAtStartStartsDeadAndJoinsWhenItWorks) {
  railFailsBeforeTheJob("blackhole");
}

// Ranks that share a host (shared memory between them) keep to their own rail by default
// (BRAID_MULTIRAIL=auto: failover; the other rail stands by) and with off; every pair is rail
// to rail, also between ranks of different rails (off paired this rank's NIC with the peer's
// own, on the other rail: the kernel sent the bytes out of the wrong NIC).
TEST_F(Fabric, RanksSharingAHostKeepToTheirOwnRails) {
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
TEST_F(Fabric, AClosedPathFailsOnceAndComesBackOnce) {
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
TEST_F(Fabric, AnMtuBlackHoleIsNotReadmittedEverySecond) {
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

TEST_F(Fabric, RailCutOnOneHostMidAllReduce) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread t = later(600, {"cut 1 0"});
  std::thread restore = later(2600, {"restore 1 0"});
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
  restore.join();
}

TEST_F(Fabric, RailBlackholedOnOneHostMidAllReduce) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread t = later(600, {"blackhole 2 1"});
  std::thread restore = later(2600, {"restore 2 1"});
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
  restore.join();
}

TEST_F(Fabric, RailCutOnEveryHostAndAFlappingRail) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread cut = later(500, {"cut 0 1", "cut 1 1", "cut 2 1", "cut 3 1"});
  // `status` says "flappers: none" once the six periods are over (a loaded machine runs the
  // testbed's commands late: a fixed wait raced them); then `done` tells the ranks.
  const std::string done = "/tmp/braid-" + name_ + "-flap-done";
  std::remove(done.c_str());
  std::thread restore = std::thread([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));
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
  cut.join();
  restore.join();
  std::remove(done.c_str());
}

TEST_F(Fabric, AHostThatLosesEveryRailIsNamedAndTheOthersStartOver) {
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
// Re-hashing (transports/multipath/rehash.h): one of two flows between two hosts loses 10% of
// its packets (an iptables rule on its source port: as if ECMP had hashed it onto a congested
// link), so it carries far less than its sibling while data waits for it. The sender (rank 0,
// the lower rank: it asks rank 1, which connects) has it moved to a new connection, whose new
// port the rule does not match; nothing fails and the data arrives intact.
// peerRehashes false: rank 1 runs with BRAID_PATH_REHASH=0 and ignores rank 0's requests; rank 0
// stops asking after a few, its paths come back from draining, and the stream still arrives.
void Fabric::laggingFlow(bool peerRehashes) {
  // 200 Mbit/s, not 1 Gbit/s, and 10% loss, not 3%: the healthy flow is held back by the
  // network, not by a CPU busy with other tests, and the lossy one must carry well under 0.6 of
  // it even when both share a bottleneck (with 3% it carried 10 MB/s against 14 at 200 Mbit/s;
  // at 1 Gbit/s beside another test binary, once nothing was re-hashed).
  if (!up(2, 1, "--rate 200mbit")) GTEST_SKIP() << "cannot build a testbed here";
  RankOptions opt = options(1);
  opt.env.push_back({"BRAID_TCP_SOCKETS_PER_PEER", "2"});
  opt.env.push_back({"BRAID_PATH_REHASH", "1"});
  // With 10% loss TCP sometimes loses a retransmission too and backs off (200 ms, then 400):
  // the lossy flow then makes no progress past 500 ms and is rightly declared dead, which is
  // not what this test is about. 3 s needs four losses of one segment in a row.
  for (auto& [key, value] : opt.env)
    if (key == "BRAID_PATH_TIMEOUT_MS") value = "3000";
  auto enter = opt.setup;
  opt.setup = [enter, peerRehashes](int rank) {
    enter(rank);
    if (rank == 1 && !peerRehashes) setenv("BRAID_PATH_REHASH", "0", 1);
  };
  const std::string portFile = "/tmp/" + name_ + "-port";
  std::remove(portFile.c_str());
  runRanks(
      2,
      [portFile, peerRehashes](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        if (r == 1) {
          // Rank 1's ephemeral port of its first connection to rank 0's listener.
          const std::string listener = pathStats(comm).at(0).remote;
          const std::string port = listener.substr(listener.rfind(':') + 1);
          const std::string cmd = "ss -Htn state established '( dport = :" + port +
                                  " )' | awk '{print $3}' | sed 's/.*://' | head -1 > " + portFile;
          ASSERT_EQ(std::system(cmd.c_str()), 0);
        }
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        std::string eph;
        if (FILE* f = std::fopen(portFile.c_str(), "r")) {
          char buf[16] = {0};
          if (std::fgets(buf, sizeof buf, f) != nullptr) eph = std::string(buf, strcspn(buf, "\n"));
          std::fclose(f);
        }
        ASSERT_FALSE(eph.empty());
        const std::string rule = "OUTPUT -p tcp --dport " + eph +
                                 " -m statistic --mode random --probability 0.1 -j DROP";
        if (r == 0) {
          ASSERT_EQ(std::system(("iptables -I " + rule).c_str()), 0);
        }
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        // Rank 0 streams 64 MiB messages to rank 1 for 8 s; each is checked.
        const size_t count = 16 << 20;
        std::vector<float> v(count);
        const double t0 = now();
        for (int it = 0;; ++it) {
          float more = 0;
          if (r == 0) {
            for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>((i + it) % 97);
            more = now() - t0 < 8 ? 1.0f : 0.0f;
            BRAID_ASSERT_OK(braidSend(v.data(), count, braidFloat32, 1, comm, nullptr), comm);
            BRAID_ASSERT_OK(braidSend(&more, 1, braidFloat32, 1, comm, nullptr), comm);
          } else {
            BRAID_ASSERT_OK(braidRecv(v.data(), count, braidFloat32, 0, comm, nullptr), comm);
            size_t bad = 0;
            for (size_t i = 0; i < count; ++i) bad += v[i] != static_cast<float>((i + it) % 97);
            ASSERT_EQ(bad, 0u) << "message " << it;
            BRAID_ASSERT_OK(braidRecv(&more, 1, braidFloat32, 0, comm, nullptr), comm);
          }
          if (more == 0) break;
        }
        if (r == 0) (void)std::system(("iptables -D " + rule).c_str());
        uint64_t rehashes = 0, failed = 0;
        for (const auto& s : pathStats(comm)) {
          rehashes += s.rehashes;
          failed += s.failures;
        }
        EXPECT_EQ(failed, 0u) << "rank " << r << ": a re-hash is not a failure";
        if (!peerRehashes) {
          EXPECT_EQ(rehashes, 0u) << "rank " << r;
        } else {
          EXPECT_GE(rehashes, 1u) << "rank " << r << ": the lagging flow was not moved";
        }
        if (r == 1 && peerRehashes) {
          // The old connection (port `eph`) is gone, replaced.
          const std::string cmd = "ss -Htn state established | grep -q ':" + eph + " '";
          EXPECT_NE(std::system(cmd.c_str()), 0) << "port " << eph << " still carries a flow";
        }
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
  std::remove(portFile.c_str());
}

TEST_F(Fabric, ALaggingFlowMovesToANewSourcePort) { laggingFlow(true); }

TEST_F(Fabric, APeerThatDoesNotRehashIsAskedNoMoreAndNothingFails) { laggingFlow(false); }

TEST_F(Fabric, ABadMtuIsRefusedAndChangesNothing) {
  if (!up(2, 1)) GTEST_SKIP() << "cannot build a testbed here";
  for (const char* bad : {"99", "65536", "9k", ""}) {
    EXPECT_NE(tb(std::string("up --hosts 2 --rails 1 --mtu ") + bad), 0) << "--mtu '" << bad << "'";
  }
  EXPECT_EQ(tb("status | grep -q 'rate 1gbit, mtu 1500$'"), 0) << "the testbed changed";
  EXPECT_EQ(tb("exec 0 ping -c 1 -W 2 $(" + testbedTool() + " --name " + name_ + " addr 1 0)"), 0);
}

TEST_F(Fabric, EcmpSpineLinkDiesAndIsWithdrawnLate) {
  // Jumbo frames, as AI fabrics run: a full 9000-byte packet that must not be fragmented
  // crosses host, leaf and spine links (host 1 sits on the other leaf).
  if (!up(4, 1, "--ecmp 2,2 --mtu 9000")) GTEST_SKIP() << "cannot build an ECMP testbed here";
  const std::string to = " $(" + testbedTool() + " --name " + name_ + " addr 1 0)";
  EXPECT_EQ(tb("exec 0 ping -c 1 -W 2 -M do -s 8972" + to), 0);
  EXPECT_NE(tb("exec 0 ping -c 1 -W 2 -M do -s 8973" + to), 0);
  std::thread t = later(700, {"cut-spine 0 0 --withdraw-after 800"});
  RankOptions opt = options(1);
  opt.env.push_back({"BRAID_TCP_SOCKETS_PER_PEER", "4"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{4} << 20, 3.0);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      opt);
  t.join();
}

}  // namespace
}  // namespace braid::test

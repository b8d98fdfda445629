// Setting a job up: the transport list, open-file limits, settings and versions that must
// agree, rails, topology files (launch_test.cc: starting from the environment).
#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"
#include "src/bootstrap/rendezvous.h"
#include "src/bootstrap/socket_util.h"
#include "src/bootstrap/unique_id.h"
#include "src/core/handles.h"

namespace braid::test {
namespace {

TEST(Setup, TransportListIsCheckedAtInit) {
  RankOptions opt;
  opt.env = {{"BRAID_TRANSPORTS", "warp,tcp"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidInvalidArgument);
        EXPECT_EQ(comm, nullptr);
        EXPECT_NE(std::string(braidGetLastError(nullptr)).find("'warp' is not a known transport"),
                  std::string::npos)
            << braidGetLastError(nullptr);
      },
      opt);
  opt.env = {{"BRAID_TRANSPORTS", ",tcp"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
}

// Sixteen ranks over tcp take more files than a soft limit of 16 allows (the rendezvous root
// alone holds a connection per rank): braid raises the soft limit where the hard limit lets it
// (as `ulimit -n` would).
TEST(Setup, ALowSoftOpenFileLimitIsRaised) {
  RankOptions opt;
  opt.env = {{"BRAID_TRANSPORTS", "tcp"}, {"BRAID_TIMEOUT_MS", "20000"}};
  opt.setup = [](int) {
    rlimit lim{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < 1024) GTEST_SKIP() << "hard limit too low";
    lim.rlim_cur = 16;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  };
  runRanks(
      16,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, 1000, 3);
        rlimit lim{};
        ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
        EXPECT_GT(lim.rlim_cur, 16u);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
}

// Where the hard limit is too low, every rank fails init at once; the ranks the root could
// take in hear which limit to raise, the others that the root closed their connection. Before,
// the root spun on the connection it could not accept and every rank waited for the timeout to
// hear "rank(s) ... never joined".
TEST(Setup, AnOpenFileLimitTooLowFailsInitSayingSo) {
  RankOptions opt;
  opt.env = {{"BRAID_TRANSPORTS", "tcp"}, {"BRAID_TIMEOUT_MS", "60000"}};
  opt.setup = [](int r) {
    if (r != 0) return;  // the rendezvous root lives in rank 0's process
    rlimit lim{24, 24};
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  };
  runRanks(
      32,
      [](int r, int n, const braidUniqueId& id) {
        // Rank 0 joins first, so that it is among the ranks the root took in.
        if (r != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        const double t0 = now();
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, n, id, r), braidSuccess);
        EXPECT_EQ(comm, nullptr);
        EXPECT_LT(now() - t0, 30.0);
        std::string msg = braidGetLastError(nullptr);
        const bool told = msg.find("Too many open files") != std::string::npos &&
                          msg.find("hard limit 24") != std::string::npos;
        if (r == 0) {
          EXPECT_TRUE(told) << msg;
        }
        EXPECT_TRUE(told || msg.find("rendezvous root") != std::string::npos) << msg;
      },
      opt);
}

// One rank told a different world size (a launcher variable that differs between ranks):
// every rank fails init at once, naming the sizes; before, the root closed the misfit's
// connection without a word and the others read "connection reset" or timed out.
TEST(Setup, AWorldSizeThatDiffersBetweenRanksFailsEveryRankSayingSo) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "60000"}};
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        const double t0 = now();
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, r == 2 ? n + 1 : n, id, r), braidSuccess);
        EXPECT_EQ(comm, nullptr);
        EXPECT_LT(now() - t0, 30.0);
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("differs between ranks"), std::string::npos) << msg;
      },
      opt);
}

// Settings each rank acts on alone but all must share (a forced algorithm, the fast boxes'
// size, the algorithms' thresholds and chunks, the transports, the eager limit; a topology
// file on some ranks only): every rank fails init at once naming the variable, where the
// calls would later have waited for each other until the timeout (or blamed the counts).
TEST(Setup, SettingsThatMustAgreeButDifferFailEveryRankSayingWhich) {
  const std::pair<const char*, const char*> kDiffering[] = {{"BRAID_SHM_FAST_BYTES", "0"},
                                                            {"BRAID_ALGO", "allreduce=ring"},
                                                            {"BRAID_SMALL_ALLGATHER_BYTES", "100M"},
                                                            {"BRAID_CHAIN_MIN_BYTES", "1000"},
                                                            {"BRAID_CHUNK_BYTES", "65536"},
                                                            {"BRAID_TRANSPORTS", "tcp"},
                                                            {"BRAID_EAGER_BYTES", "1024"}};
  for (const auto& [var, value] : kDiffering) {
    SCOPED_TRACE(var);
    RankOptions opt;
    opt.env = {{"BRAID_TIMEOUT_MS", "60000"}};
    const std::string name = var, v = value;
    opt.setup = [name, v](int rank) {
      if (rank == 1) setenv(name.c_str(), v.c_str(), 1);
    };
    runRanks(
        3,
        [name](int r, int n, const braidUniqueId& id) {
          const double t0 = now();
          braidComm_t comm = nullptr;
          EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidInvalidUsage);
          EXPECT_EQ(comm, nullptr);
          EXPECT_LT(now() - t0, 30.0);
          std::string msg = braidGetLastError(nullptr);
          EXPECT_NE(msg.find(name + " differs between ranks"), std::string::npos) << msg;
          EXPECT_NE(msg.find("on rank 1"), std::string::npos) << msg;
        },
        opt);
  }
}

// A rank of another braid build (an older library on one node, a stale container image): the
// others fail init at once naming both versions, before any data could be misread. Rank 1 is a
// process that joins the rendezvous as such a build would, its row saying another version.
TEST(Setup, ARankRunningAnotherBraidBuildFailsInitNamingBothVersions) {
  // A build that says its version, and one from before builds said it (no "braid=" line).
  const std::pair<const char*, const char*> kRows[] = {
      {"braid=0.0.7 (wire protocol 1)\nBRAID_ALGO=\nBRAID_SHM_FAST_BYTES=0\nBRAID_TOPO_FILE=none",
       "rank 1 (otherhost) braid 0.0.7 (wire protocol 1)"},
      {"BRAID_ALGO=\nBRAID_SHM_FAST_BYTES=4096\nBRAID_TOPO_FILE=none",
       "rank 1 (otherhost) braid from before wire protocol 2"},
  };
  for (const auto& [settings, expected] : kRows) {
    SCOPED_TRACE(expected);
    RankOptions opt;
    opt.env = {{"BRAID_TIMEOUT_MS", "60000"}};
    const std::string row = std::string("otherhost\nother-id\n127.0.0.1:1\n") + settings;
    const std::string want = expected;
    runRanks(
        3,
        [row, want](int r, int n, const braidUniqueId& id) {
          const double t0 = now();
          if (r == 1) {
            braid::UniqueIdData d;
            ASSERT_TRUE(braid::decodeUniqueId(id, &d).isOk());
            std::vector<std::string> rows;
            ASSERT_TRUE(
                braid::rendezvous(d.root, d.secret, r, n, row, braid::deadlineIn(30000), &rows)
                    .isOk());
            EXPECT_EQ(rows.size(), 3u);
            return;
          }
          braidComm_t comm = nullptr;
          EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidInvalidUsage);
          EXPECT_EQ(comm, nullptr);
          EXPECT_LT(now() - t0, 30.0);
          const std::string msg = braidGetLastError(nullptr);
          EXPECT_NE(msg.find(fmt::format("runs braid {}.{}.{} (wire protocol", BRAID_MAJOR,
                                         BRAID_MINOR, BRAID_PATCH)),
                    std::string::npos)
              << msg;
          EXPECT_NE(msg.find(want), std::string::npos) << msg;
        },
        opt);
  }
}

// A rank killed at the rendezvous while it waits for the others: once the last rank joins,
// every rank that is left fails at once naming it, instead of waiting for its data
// connections until the timeout.
TEST(Setup, ARankThatDiesAtTheRendezvousIsNamedAtOnce) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "60000"}};
  auto res = runRanksRaw(
      4,
      [](int r, int n, const braidUniqueId& id) {
        // Rank 2 dies once it has joined (300 ms was too soon for an ASan build on a loaded CI
        // machine: it died before joining, and the others rightly waited for the timeout),
        // rank 3 joins after that.
        if (r == 2) {
          std::thread([] {
            std::this_thread::sleep_for(std::chrono::milliseconds(1500));
            raise(SIGKILL);
          }).detach();
        }
        if (r == 3) std::this_thread::sleep_for(std::chrono::milliseconds(3000));
        const double t0 = now();
        braidComm_t comm = nullptr;
        EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidRemoteError);
        EXPECT_EQ(comm, nullptr);
        EXPECT_LT(now() - t0, 20.0) << "rank " << r << " waited for the timeout (60 s)";
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("rank(s) 2 of 4 left the rendezvous"), std::string::npos) << msg;
      },
      opt);
  ASSERT_EQ(res.size(), 4u);
  EXPECT_EQ(res[2].signal, SIGKILL);
  for (int r : {0, 1, 3}) EXPECT_TRUE(res[r].exited && res[r].code == 0) << "rank " << r;
}

// braidrun's BRAID_UNIQUE_ID makes one communicator: a second braidCommInitFromEnv from it
// fails at once saying so (its root is gone: it would retry a refused connection until the
// timeout), and the first communicator still works.
TEST(Setup, ASecondInitFromTheSameUniqueIdFailsAtOnce) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "60000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        char hex[2 * BRAID_UNIQUE_ID_BYTES + 1];
        ASSERT_EQ(braidUniqueIdToString(&id, hex, sizeof hex), braidSuccess);
        setenv("BRAID_UNIQUE_ID", hex, 1);
        setenv("BRAID_RANK", std::to_string(r).c_str(), 1);
        setenv("BRAID_WORLD_SIZE", std::to_string(n).c_str(), 1);
        braidComm_t first = nullptr, second = nullptr;
        BRAID_ASSERT_OK(braidCommInitFromEnv(&first), nullptr);
        const double t0 = now();
        EXPECT_EQ(braidCommInitFromEnv(&second), braidInvalidUsage);
        EXPECT_LT(now() - t0, 5.0);
        EXPECT_EQ(second, nullptr);
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("already made a communicator from its BRAID_UNIQUE_ID"),
                  std::string::npos)
            << msg;
        float v = 1;
        BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, first, nullptr), first);
        EXPECT_EQ(v, 2.0f);
        BRAID_ASSERT_OK(braidCommDestroy(first), nullptr);
      },
      opt);
}

// braidCommInitRank twice with one unique id (a common mistake: an id makes one communicator):
// the process that made the id knows its rendezvous is over and fails at once; the others find
// nothing listening at its root and say what that may mean.
TEST(Setup, ASecondInitRankFromOneUniqueIdFailsSayingWhy) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "20000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t first = nullptr, second = nullptr;
        BRAID_ASSERT_OK(braidCommInitRank(&first, n, id, r), nullptr);
        setenv("BRAID_TIMEOUT_MS", "2000", 1);  // the second init's (the first keeps 20 s)
        const double t0 = now();
        EXPECT_NE(braidCommInitRank(&second, n, id, r), braidSuccess);
        EXPECT_EQ(second, nullptr);
        std::string msg = braidGetLastError(nullptr);
        if (r == 0) {  // (the harness makes the id in rank 0's process)
          EXPECT_LT(now() - t0, 1.0);
          EXPECT_NE(msg.find("this unique id was used already"), std::string::npos) << msg;
        } else {
          EXPECT_NE(msg.find("the unique id was used already"), std::string::npos) << msg;
        }
        float v = 1;
        BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidFloat32, braidSum, first, nullptr), first);
        EXPECT_EQ(v, 2.0f);
        BRAID_ASSERT_OK(braidCommDestroy(first), nullptr);
      },
      opt);
}

// A congestion control the kernel lacks fails init on every rank, naming the variable.
TEST(Setup, UnknownTcpCongestionControlFailsInit) {
  RankOptions opt;
  opt.env = {{"BRAID_TRANSPORTS", "tcp"},
             {"BRAID_TCP_CONGESTION", "nosuchcc"},
             {"BRAID_TIMEOUT_MS", "5000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, n, id, r), braidSuccess);
        EXPECT_EQ(comm, nullptr);
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("BRAID_TCP_CONGESTION"), std::string::npos) << msg;
        EXPECT_NE(msg.find("nosuchcc"), std::string::npos) << msg;
      },
      opt);
}

// Each peer gets the most local transport that reaches it: shm inside a (virtual) node, tcp
// between nodes; the per-transport counters show where the bytes went.
TEST(Setup, TransportsArePickedPerPeer) {
  std::string path = ::testing::TempDir() + "usage_route.json";
  std::ofstream(path) << R"({"nodes": [{"ranks": [0, 1]}, {"ranks": [2, 3]}]})";
  RankOptions opt;
  opt.env = {{"BRAID_TOPO_FILE", path}};
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        TransportSet* t = comm->impl->transports();
        for (int q = 0; q < n; ++q) {
          std::string want = q == r ? "self" : (q / 2 == r / 2 ? "shm" : "tcp");
          EXPECT_EQ(t->routeName(q), want) << "rank " << r << " to rank " << q;
        }
        std::vector<float> v(size_t{1} << 18, 1.0f);
        BRAID_ASSERT_OK(
            braidAllReduce(v.data(), v.data(), v.size(), braidFloat32, braidSum, comm, nullptr),
            comm);
        EXPECT_EQ(v[12345], 4.0f);
        for (const TransportCounters& c : t->counters()) {
          EXPECT_GT(c.sentBytes, 0u) << c.name;
          EXPECT_GT(c.recvBytes, 0u) << c.name;
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
  // shm alone cannot reach the other node: every rank says so at init.
  opt.env.push_back({"BRAID_TRANSPORTS", "shm"});
  opt.env.push_back({"BRAID_TIMEOUT_MS", "10000"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, n, id, r), braidSuccess);
        EXPECT_NE(std::string(braidGetLastError(nullptr)).find("no transport that reaches rank"),
                  std::string::npos)
            << braidGetLastError(nullptr);
      },
      opt);
  // One host, no file: shared memory carries everything.
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    std::vector<float> v(size_t{1} << 18, 1.0f);
    BRAID_ASSERT_OK(
        braidAllReduce(v.data(), v.data(), v.size(), braidFloat32, braidSum, comm, nullptr), comm);
    for (const TransportCounters& c : comm->impl->transports()->counters()) {
      EXPECT_EQ(c.sentBytes > 0, c.name == "shm") << c.name << " sent " << c.sentBytes;
    }
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// BRAID_RAILS: local rank i listens and sends on rail i mod R. Two veth pairs stand for the
// rails (root only).
TEST(Setup, RailsBindEachLocalRankToItsInterface) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create veth interfaces";
  auto sh = [](const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); };
  for (int i = 0; i < 2; ++i) {
    std::string dev = "braidrail" + std::to_string(i);
    sh("ip link del " + dev);
    if (sh("ip link add " + dev + " type veth peer name " + dev + "p") != 0) {
      GTEST_SKIP() << "cannot create veth interfaces here";
    }
    ASSERT_EQ(sh("ip addr add 10.77." + std::to_string(i) + ".1/24 dev " + dev), 0);
    ASSERT_EQ(sh("ip link set " + dev + "p up"), 0);
    ASSERT_EQ(sh("ip link set " + dev + " up"), 0);
  }
  RankOptions opt;
  opt.env = {{"BRAID_RAILS", "braidrail0,braidrail1"}, {"BRAID_TRANSPORTS", "tcp"}};
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        setenv("BRAID_LOCAL_RANK", std::to_string(r).c_str(), 1);
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        // It listens on both rails; its own rail carries its paths and the other rail stands
        // by (ranks that share a node fail over rather than spray on each other's rails).
        std::string addr = comm->impl->transports()->localAddress();
        EXPECT_NE(addr.find("10.77.0.1:"), std::string::npos) << "rank " << r << ": " << addr;
        EXPECT_NE(addr.find("10.77.1.1:"), std::string::npos) << "rank " << r << ": " << addr;
        int count = 0;
        ASSERT_EQ(braidCommGetPathStats(comm, nullptr, 0, &count), braidSuccess);
        std::vector<braidPathStats_t> st(static_cast<size_t>(count));
        ASSERT_EQ(braidCommGetPathStats(comm, st.data(), count, &count), braidSuccess);
        ASSERT_EQ(count, 3 * 2);  // 3 peers x 2 rails x 1 flow (BRAID_TCP_SOCKETS_PER_PEER)
        const std::string mine = "braidrail" + std::to_string(r % 2) + " ";
        for (const braidPathStats_t& s : st) {
          bool own = std::string(s.local).rfind(mine, 0) == 0;
          EXPECT_EQ(s.state, own ? braidPathUp : braidPathStandby)
              << "rank " << r << " path " << s.local << " -> " << s.remote;
        }
        EXPECT_EQ(comm->impl->nodes().rails, 2);
        int v = r + 1;
        BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidInt32, braidSum, comm, nullptr), comm);
        EXPECT_EQ(v, 10);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
  sh("ip link del braidrail0");
  sh("ip link del braidrail1");
}

TEST(Setup, TopologyFileDeclaresVirtualNodesAndSplitsKeepThem) {
  std::string path = ::testing::TempDir() + "usage_topo.json";
  std::ofstream(path)
      << R"({"nodes": [{"name": "a", "ranks": [0, 3]}, {"name": "b", "ranks": [1, 2]}],
                           "rails": 2})";
  RankOptions opt;
  opt.env = {{"BRAID_TOPO_FILE", path}};
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const NodeMap& m = comm->impl->nodes();
        ASSERT_EQ(m.names.size(), 2u);
        EXPECT_EQ(m.names[m.nodeOf[r]], (r == 0 || r == 3) ? "a" : "b");
        EXPECT_EQ(m.localRank(r), (r == 0 || r == 1) ? 0 : 1);
        EXPECT_EQ(m.rails, 2);
        // Ranks 2 and 3 (nodes b and a) split off: still two nodes of one rank each.
        braidComm_t half = nullptr;
        BRAID_ASSERT_OK(braidCommSplit(comm, r >= 2 ? 0 : 1, r, &half), comm);
        const NodeMap& h = half->impl->nodes();
        EXPECT_EQ(h.names.size(), 2u);
        EXPECT_EQ(h.localSize(0), 1);
        EXPECT_EQ(h.rails, 2);
        BRAID_ASSERT_OK(braidCommDestroy(half), nullptr);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
  // Without a file, ranks of one machine share one node.
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(comm->impl->nodes().names.size(), 1u);
    EXPECT_EQ(comm->impl->nodes().localRank(r), r);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
  // A file that does not fit the job fails every rank at once, naming the file.
  opt.env = {{"BRAID_TOPO_FILE", path}};
  runRanks(
      2,
      [path](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_EQ(braidCommInitRank(&comm, n, id, r), braidInvalidArgument);
        EXPECT_NE(std::string(braidGetLastError(nullptr)).find(path), std::string::npos);
      },
      opt);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace braid::test

// The multipath layer between real processes over loopback TCP (no root needed): a path killed
// or black-holed mid-allreduce by fault injection; the collective finishes with the right
// result, the path's chunks were re-sent, and the path is reconnected and carries traffic again.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"

namespace braid::test {
namespace {

struct Totals {
  uint64_t failures = 0, retransmits = 0, readmissions = 0, up = 0, chunks = 0;
};
Totals totals(braidComm_t comm) {
  Totals t;
  for (const auto& s : pathStats(comm)) {
    t.failures += s.failures;
    t.retransmits += s.retransmits;
    t.readmissions += s.readmissions;
    t.up += s.state == braidPathUp;
    t.chunks += s.chunksSent;
  }
  return t;
}

// Every path of every rank comes back.
void waitAllUp(braidComm_t comm, int, int) {
  EXPECT_TRUE(waitAllPathsUp(comm)) << "paths did not come back";
}

RankOptions tcpPaths(const std::string& fault, const std::string& flows = "3") {
  RankOptions opt;
  opt.timeoutSec = 120;
  opt.env = {{"BRAID_TRANSPORTS", "tcp"},
             {"BRAID_TCP_SOCKETS_PER_PEER", flows},
             {"BRAID_PATH_TIMEOUT_MS", "300"},
             {"BRAID_TIMEOUT_MS", "30000"},
             {"BRAID_FAULT", fault}};
  return opt;
}

TEST(Paths, StatsListEveryPathAndCountTraffic) {
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{1} << 20, 2);
        auto st = pathStats(comm);
        ASSERT_EQ(st.size(), 6u);  // 2 peers x 3 flows
        std::map<int, uint64_t> toPeer;
        for (const auto& s : st) toPeer[s.peer] += s.bytesSent;
        for (const auto& s : st) {
          EXPECT_NE(s.peer, r);
          EXPECT_EQ(s.state, braidPathUp);
          EXPECT_STREQ(s.transport, "tcp");
          EXPECT_EQ(s.failures, 0u);
          // Data went to the ring neighbour (only control frames to the other peer): sprayed
          // over every path.
          if (toPeer[s.peer] > (1u << 20)) {
            EXPECT_GT(s.chunksSent, 0u) << "path " << s.path << " to " << s.peer << " unused";
          }
        }
        int count = -1;
        EXPECT_EQ(braidCommGetPathStats(comm, nullptr, 0, nullptr), braidInvalidArgument);
        EXPECT_EQ(braidCommGetPathStats(comm, nullptr, 5, &count), braidInvalidArgument);
        EXPECT_EQ(braidCommGetPathStats(comm, st.data(), -1, &count), braidInvalidArgument);
        EXPECT_EQ(braidCommGetPathStats(nullptr, nullptr, 0, &count), braidInvalidArgument);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      tcpPaths(""));
}

TEST(Paths, AKilledPathsChunksAreResentAndThePathComesBack) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{16} << 20, 3);
        Totals t = totals(comm);
        EXPECT_GE(t.failures, 1u) << "the fault never fired";
        waitAllUp(comm, r, n);
        t = totals(comm);
        EXPECT_GE(t.readmissions, 1u);
        // The re-admitted path carries chunks again.
        auto before = pathStats(comm);
        allreduceChecked(comm, r, n, size_t{4} << 20, 1);
        auto after = pathStats(comm);
        for (size_t k = 0; k < after.size(); ++k) {
          EXPECT_GT(after[k].chunksSent, before[k].chunksSent) << "path " << k << " idle";
        }
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      tcpPaths("path=0,after_bytes=24M"));
}

// A timed fault (after_ms) on a rank whose first peers share its node (shared memory, no TCP
// path): it goes to the first peer reached over TCP instead of never firing.
TEST(Paths, ATimedFaultGoesToAPeerReachedOverTcp) {
  const std::string topo = "/tmp/braid-paths-test-" + std::to_string(getpid()) + ".json";
  {
    std::FILE* f = std::fopen(topo.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("{\"nodes\": 2, \"ranks_per_node\": 2}", f);
    std::fclose(f);
  }
  RankOptions opt = tcpPaths("rank=0,path=0,after_ms=200", "2");
  for (auto& [key, value] : opt.env) {
    if (key == "BRAID_TRANSPORTS") value = "shm,tcp";  // ranks 0-1 and 2-3 share memory
  }
  opt.env.push_back({"BRAID_TOPO_FILE", topo});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        // For a second by rank 0's clock (it tells the others when to stop).
        const double t0 = now();
        for (int32_t more = 1; more != 0;) {
          allreduceChecked(comm, r, n, size_t{1} << 20, 1);
          more = r == 0 ? now() - t0 < 1.0 : 0;
          BRAID_ASSERT_OK(braidBroadcast(&more, &more, 1, braidInt32, 0, comm, nullptr), comm);
        }
        if (r == 0) {
          EXPECT_GE(totals(comm).failures, 1u) << "the timed fault never fired";
          for (const auto& s : pathStats(comm)) EXPECT_GE(s.peer, 2) << "a path to a shm peer";
        }
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      opt);
  std::remove(topo.c_str());
}

TEST(Paths, ABlackholedPathIsFoundByItsTimeout) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{16} << 20, 2);
        // The allreduce need not wait for it: at the end of each transfer the chunks stuck on
        // the silent path go again on the others. The path itself is declared dead by its
        // timeout (or its silence, once nothing is outstanding on it), then rebuilt.
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (totals(comm).failures < 1 && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        EXPECT_GE(totals(comm).failures, 1u) << "the silent path was never declared dead";
        waitAllUp(comm, r, n);
        allreduceChecked(comm, r, n, size_t{4} << 20, 1);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      tcpPaths("path=1,after_bytes=16M,mode=blackhole"));
}

TEST(Paths, RepeatedFaultsOnRandomPathsStillGiveTheRightResult) {
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{4} << 20, 8);
        EXPECT_GE(totals(comm).failures, 1u);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      tcpPaths("path=rand,peer=rand,after_bytes=6M,times=6,seed=5", "2"));
}

}  // namespace
}  // namespace braid::test

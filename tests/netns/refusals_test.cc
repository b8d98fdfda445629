// Refused connections on an emulated fabric (tools/testbed): a peer whose every path is reset
// and whose connections are refused may have died, or a firewall may reject for a while (rules
// reloaded, a host being isolated); or it destroyed its communicator while this host was cut
// off and could not hear its goodbye. Only refusals that last BRAID_PEER_GONE_MS make it gone,
// and a peer gone that nobody waits for fails nothing. Needs root (skips otherwise).
#include "netns/fabric.h"

namespace braid::test {
namespace {

using Refusals = Fabric;

// Host 1 rejects TCP on both rails (resets, refused connections) for 1.5 s during allreduces:
// every process lives, so the job waits it out like a cut and every result is right.
TEST_F(Refusals, AFirewallThatRejectsForAWhileIsWaitedOut) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread firewall = later(1500, {"reject 1 0", "reject 1 1"});
  std::thread lifted = later(3000, {"restore 1 0", "restore 1 1"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceFor(comm, r, n, size_t{1} << 18, 6.0);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess) << braidGetLastError(nullptr);
      },
      options(2, "20000"));
  firewall.join();
  lifted.join();
}

// Rank 3 destroys its communicator while host 1 is cut off (its goodbye to rank 1 is lost);
// when host 1 comes back, rank 3's connections are refused. Ranks 0..2 then exchange among
// themselves: that works, and only a call with rank 3 fails, naming it.
TEST_F(Refusals, APeerThatLeftWhileThisHostWasCutOffFailsOnlyCallsWithIt) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  const std::string cut = "/tmp/braid-" + name_ + "-cut";
  std::remove(cut.c_str());
  std::thread outage([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    for (const char* c : {"cut 1 0", "cut 1 1"}) EXPECT_EQ(tb(c), 0) << c;
    std::fclose(std::fopen(cut.c_str(), "w"));
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    for (const char* c : {"restore 1 0", "restore 1 1"}) EXPECT_EQ(tb(c), 0) << c;
  });
  runRanks(
      4,
      [cut](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        for (int i = 0; i < 200 && access(cut.c_str(), F_OK) != 0; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ASSERT_EQ(access(cut.c_str(), F_OK), 0) << "no outage";
        if (r == 3) {
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess) << braidGetLastError(nullptr);
          return;
        }
        // Well after the restore, and after rank 1 found rank 3's connections refused for
        // BRAID_PEER_GONE_MS.
        std::this_thread::sleep_for(std::chrono::milliseconds(8000));
        const int m = n - 1, to = (r + 1) % m, from = (r + m - 1) % m;
        std::vector<int32_t> a(size_t{1} << 18, r + 1), b(a.size(), -1);
        braidGroupStart();
        braidSend(a.data(), a.size(), braidInt32, to, comm, nullptr);
        braidRecv(b.data(), b.size(), braidInt32, from, comm, nullptr);
        BRAID_ASSERT_OK(braidGroupEnd(), comm);
        EXPECT_EQ(b.front(), from + 1);
        EXPECT_EQ(b.back(), from + 1);
        if (r == 1) {
          int32_t x = 0;
          EXPECT_NE(braidRecv(&x, 1, braidInt32, 3, comm, nullptr), braidSuccess);
          std::string msg = braidGetLastError(comm);
          EXPECT_NE(msg.find("rank 3"), std::string::npos) << msg;
        }
        braidCommDestroy(comm);
      },
      options(2, "20000"));
  outage.join();
  std::remove(cut.c_str());
}

// Host 1 rejects for 5 s while the ranks are idle, longer than BRAID_PEER_GONE_MS: the ranks on
// either side take each other for gone. The peers go on trying to reconnect; when the
// firewall is lifted their connections are taken, which says they live: collectives work.
TEST_F(Refusals, APeerTakenForGoneThatComesBackIsTakenBack) {
  if (!up(4, 2)) GTEST_SKIP() << "cannot build a testbed here";
  std::thread firewall = later(1000, {"reject 1 0", "reject 1 1"});
  std::thread lifted = later(6000, {"restore 1 0", "restore 1 1"});
  runRanks(
      4,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        std::this_thread::sleep_for(std::chrono::milliseconds(10000));
        allreduceFor(comm, r, n, size_t{1} << 16, 1.0);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess) << braidGetLastError(nullptr);
      },
      options(2, "30000"));
  firewall.join();
  lifted.join();
}

}  // namespace
}  // namespace braid::test

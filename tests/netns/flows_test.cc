// Flows and ECMP on an emulated fabric (tools/testbed): a flow that lags behind its siblings
// (as if hashed onto a congested link) moves to a new source port, or stays where the peer
// does not re-hash; an ECMP spine link dies mid-transfer and is withdrawn late; the testbed
// refuses a bad MTU. Needs root (skips otherwise).
#include "netns/fabric.h"

namespace braid::test {
namespace {

class Flows : public Fabric {
 protected:
  void laggingFlow(bool peerRehashes);
};

// Re-hashing (transports/multipath/rehash.h): one of two flows between two hosts loses 10% of
// its packets (an iptables rule on its source port: as if ECMP had hashed it onto a congested
// link), so it carries far less than its sibling while data waits for it. The sender (rank 0,
// the lower rank: it asks rank 1, which connects) has it moved to a new connection, whose new
// port the rule does not match; nothing fails and the data arrives intact.
// peerRehashes false: rank 1 runs with BRAID_PATH_REHASH=0 and ignores rank 0's requests; rank 0
// stops asking after a few, its paths come back from draining, and the stream still arrives.
void Flows::laggingFlow(bool peerRehashes) {
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
          // The old connection (port `eph`) is gone, replaced (both ends keep a re-hashed
          // connection open for 2 s after the move: a move late in the stream is still
          // lingering when it ends).
          const std::string cmd = "ss -Htn state established | grep -q ':" + eph + " '";
          bool gone = false;
          for (int i = 0; i < 50 && !gone; ++i) {
            gone = std::system(cmd.c_str()) != 0;
            if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
          EXPECT_TRUE(gone) << "port " << eph << " still carries a flow 5 s after the stream";
        }
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
  std::remove(portFile.c_str());
}

TEST_F(Flows, ALaggingFlowMovesToANewSourcePort) { laggingFlow(true); }

TEST_F(Flows, APeerThatDoesNotRehashIsAskedNoMoreAndNothingFails) { laggingFlow(false); }

TEST_F(Flows, ABadMtuIsRefusedAndChangesNothing) {
  if (!up(2, 1)) GTEST_SKIP() << "cannot build a testbed here";
  for (const char* bad : {"99", "65536", "9k", ""}) {
    EXPECT_NE(tb(std::string("up --hosts 2 --rails 1 --mtu ") + bad), 0) << "--mtu '" << bad << "'";
  }
  EXPECT_EQ(tb("status | grep -q 'rate 1gbit, mtu 1500$'"), 0) << "the testbed changed";
  EXPECT_EQ(tb("exec 0 ping -c 1 -W 2 $(" + testbedTool() + " --name " + name_ + " addr 1 0)"), 0);
}

TEST_F(Flows, EcmpSpineLinkDiesAndIsWithdrawnLate) {
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

// A job that starts while a spine link is dead and not withdrawn: leaf 1 still hashes half of
// its flows towards leaf 0 onto it. Each connection's SYN was re-sent by the kernel on the same
// source port (the same dead path) until the deadline: half the starts failed after
// BRAID_TIMEOUT_MS, and some ranks' init returned a communicator while others' failed. Attempts
// are now bounded and retried from new ports, and a rank returns from init only once every
// rank has connected.
TEST_F(Flows, AJobStartsWhileAnEcmpSpineLinkIsDeadAndNotWithdrawn) {
  if (!up(4, 1, "--ecmp 2,2 --rate 200mbit")) GTEST_SKIP() << "cannot build an ECMP testbed here";
  ASSERT_EQ(tb("cut-spine 0 0 --withdraw-after 600000"), 0);
  for (int job = 0; job < 3; ++job) {
    SCOPED_TRACE(::testing::Message() << "job " << job);
    RankOptions opt = options(1, "10000");
    opt.env.push_back({"BRAID_TCP_SOCKETS_PER_PEER", "2"});
    runRanks(
        4,
        [](int r, int n, const braidUniqueId& id) {
          const double t0 = now();
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          EXPECT_LT(now() - t0, 8.0) << "init";
          allreduceFor(comm, r, n, size_t{1} << 20, 0.5);
          EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        },
        opt);
  }
}

}  // namespace
}  // namespace braid::test

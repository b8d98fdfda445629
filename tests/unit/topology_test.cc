// Machine discovery (hwloc), grouping ranks into nodes, and the topology file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "src/topology/machine.h"
#include "src/topology/netif.h"
#include "src/topology/nodes.h"

namespace braid {
namespace {

TEST(Machine, HwlocSeesThisMachine) {
  MachineInfo m;
  Status s = discoverMachine(&m);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_GE(m.cores, 1);
  EXPECT_GE(m.threads, m.cores);
  EXPECT_GE(m.numaNodes, 1);
  for (const PciDevice& d : m.nics) EXPECT_FALSE(d.name.empty());
}

TEST(Rails, LocalRankPicksRailModuloTheirNumber) {
  Config cfg;
  cfg.rails = "none";
  std::string ifname;
  ASSERT_TRUE(railInterface(cfg, 3, &ifname).isOk());
  EXPECT_EQ(ifname, "");  // no rails: the usual interface choice
  cfg.rails = "eth1,eth2";
  ASSERT_TRUE(railInterface(cfg, 0, &ifname).isOk());
  EXPECT_EQ(ifname, "eth1");
  ASSERT_TRUE(railInterface(cfg, 3, &ifname).isOk());
  EXPECT_EQ(ifname, "eth2");
  Status s = railInterface(cfg, -1, &ifname);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("local rank"), std::string::npos) << s.message();
  cfg.socketIfname = "ib0";  // a per-rank choice wins
  ASSERT_TRUE(railInterface(cfg, 1, &ifname).isOk());
  EXPECT_EQ(ifname, "");
}

// A rail that is down at start is left out, but a name that is no interface at all is a
// mistake in BRAID_RAILS: init fails naming it (the loopback stands in for an up rail).
TEST(Rails, ARailThatIsNoInterfaceIsAnErrorNamingIt) {
  Config cfg;
  cfg.rails = "lo,braidnosuchnic0";
  std::vector<NetIf> nics;
  int primary = -1;
  Status s = chooseNics(cfg, 0, &nics, &primary);
  EXPECT_EQ(s.code(), braidInvalidArgument);
  EXPECT_NE(s.message().find("there is no interface braidnosuchnic0"), std::string::npos)
      << s.message();
  cfg.rails = "lo";
  s = chooseNics(cfg, 0, &nics, &primary);
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_EQ(nics.size(), 1u);
  EXPECT_EQ(nics[0].name, "lo");
  EXPECT_EQ(primary, 0);
}

// An exclude-only BRAID_SOCKET_IFNAME ('^r1') leaves out what the default leaves out too:
// loopback became a path to a peer on another host (to this host's own 127.0.0.1, dead at the
// start, seconds of connect timeouts). Loopback stays when nothing else is left.
TEST(Rails, AnExcludeOnlyIfnameLeavesLoopbackOut) {
  std::vector<std::string> others;
  for (const NetIf& n : listInterfaces()) {
    if (!n.addr.isLoopback()) others.push_back(n.name);
  }
  if (others.empty()) GTEST_SKIP() << "no interface besides loopback";
  Config cfg;
  cfg.socketIfname = "^braidnosuchnic";
  std::vector<NetIf> nics;
  int primary = -1;
  ASSERT_TRUE(chooseNics(cfg, 0, &nics, &primary).isOk());
  ASSERT_FALSE(nics.empty());
  for (const NetIf& n : nics) EXPECT_FALSE(n.addr.isLoopback()) << n.name;
  NetIf one;
  ASSERT_TRUE(chooseLocalAddress(cfg, nullptr, &one).isOk());
  EXPECT_FALSE(one.addr.isLoopback()) << one.name;
  // Everything but loopback excluded: loopback it is (a job on one host).
  cfg.socketIfname = "^";
  for (const std::string& o : others)
    cfg.socketIfname += (cfg.socketIfname.size() > 1 ? "," : "") + o;
  ASSERT_TRUE(chooseNics(cfg, 0, &nics, &primary).isOk()) << cfg.socketIfname;
  ASSERT_FALSE(nics.empty());
  for (const NetIf& n : nics) EXPECT_TRUE(n.addr.isLoopback()) << n.name;
  // Named on purpose, loopback is used.
  cfg.socketIfname = "lo";
  ASSERT_TRUE(chooseNics(cfg, 0, &nics, &primary).isOk());
  EXPECT_EQ(nics[0].name, "lo");
}

TEST(Rails, AutoTakesTheDiscoveredNicsWhenThereAreSeveral) {
  Config cfg;
  cfg.rails = "auto";
  std::vector<std::string> found = discoveredRails(), used = configuredRails(cfg);
  if (found.size() < 2) {
    EXPECT_TRUE(used.empty()) << "one NIC is no rail set";
  } else {
    EXPECT_EQ(used, found);
  }
  cfg.rails = "ib0,ib1";
  EXPECT_EQ(configuredRails(cfg), (std::vector<std::string>{"ib0", "ib1"}));
  cfg.rails = "none";
  EXPECT_TRUE(configuredRails(cfg).empty());
  // Discovered rails never fail a rank that does not know its local rank.
  cfg.rails = "auto";
  std::string ifname;
  EXPECT_TRUE(railInterface(cfg, -1, &ifname).isOk());
  EXPECT_EQ(ifname, "");
}

TEST(Rails, LauncherLocalRankFromTheEnvironment) {
  unsetenv("BRAID_LOCAL_RANK");
  unsetenv("LOCAL_RANK");
  unsetenv("SLURM_LOCALID");
  unsetenv("MPI_LOCALRANKID");
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "5", 1);
  EXPECT_EQ(launcherLocalRank(), 5);
  setenv("BRAID_LOCAL_RANK", "2", 1);
  EXPECT_EQ(launcherLocalRank(), 2);
  setenv("BRAID_LOCAL_RANK", "x", 1);
  EXPECT_EQ(launcherLocalRank(), 5);
  unsetenv("BRAID_LOCAL_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(launcherLocalRank(), -1);
}

TEST(Machine, HostIdentityIsStableAndCarriesTheBootId) {
  std::string a = hostIdentity(), b = hostIdentity();
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find('/'), std::string::npos) << a;  // hostname/boot-id prefix
}

TEST(Nodes, GroupByHostNumbersNodesByLowestRank) {
  NodeMap m = groupByHost({"b", "a", "b", "c", "a"});
  ASSERT_EQ(m.names.size(), 3u);
  EXPECT_EQ(m.names[0], "b");
  EXPECT_EQ(m.ranks[0], (std::vector<int>{0, 2}));
  EXPECT_EQ(m.ranks[1], (std::vector<int>{1, 4}));
  EXPECT_EQ(m.localRank(4), 1);
  EXPECT_EQ(m.localSize(3), 1);
  EXPECT_TRUE(m.sameNode(1, 4));
  EXPECT_FALSE(m.sameNode(0, 1));
}

TEST(Nodes, TopologyFileExplicitNodesRailsAndLinks) {
  NodeMap m;
  Status s = parseTopology(R"({
      // two virtual nodes of two ranks, two rails
      "nodes": [{"name": "a", "ranks": [2, 0]}, {"name": "b", "ranks": [1, 3]}],
      "rails": 2,
      "links": {"intra": {"latency_us": 1, "gbps": 200}, "inter": {"latency_us": 5, "gbps": 25}}
    })",
                           "test", 4, &m);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(m.ranks[0], (std::vector<int>{0, 2}));
  EXPECT_EQ(m.nodeOf[3], 1);
  EXPECT_EQ(m.railOf(2), 1);
  EXPECT_EQ(m.railOf(1), 0);
  EXPECT_EQ(m.inter.gbps, 25);
  EXPECT_EQ(m.intra.latencyUs, 1);
}

TEST(Nodes, TopologyFileUnevenBlocksAndCounts) {
  NodeMap m;
  ASSERT_TRUE(parseTopology(R"({"nodes": 3, "ranks_per_node": 3, "rails": 3})", "t", 9, &m).isOk());
  EXPECT_EQ(m.ranks[2], (std::vector<int>{6, 7, 8}));
  EXPECT_EQ(m.railOf(7), 1);
  // Uneven nodes are declared explicitly.
  ASSERT_TRUE(
      parseTopology(R"({"nodes": [{"ranks": [0, 1, 2]}, {"ranks": [3]}]})", "t", 4, &m).isOk());
  EXPECT_EQ(m.localSize(3), 1);
  EXPECT_EQ(m.names[1], "node1");
}

TEST(Nodes, TopologyFileErrorsSayWhatIsWrong) {
  NodeMap m;
  auto err = [&](const char* text, int n) {
    Status s = parseTopology(text, "f.json", n, &m);
    EXPECT_EQ(s.code(), braidInvalidArgument) << text;
    return s.message();
  };
  // A truncated file: where the parser stopped.
  EXPECT_NE(err("{", 2).find("not valid JSON"), std::string::npos);
  EXPECT_NE(err("{", 2).find("line 1, column 2"), std::string::npos) << err("{", 2);
  EXPECT_NE(err("[1, 2]", 2).find("not a JSON object"), std::string::npos);
  EXPECT_NE(err(R"({"nodes": 2, "ranks_per_node": 2})", 3).find("not the job's 3"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"ranks": [0, 1]}, {"ranks": [1]}]})", 2).find("two nodes"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"ranks": [0]}]})", 2).find("rank 1 is in no node"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"ranks": [0, 5]}]})", 2).find("outside"), std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"ranks": [0, 1]}], "rails": 0})", 2).find("rails"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"name": "x", "ranks": [0]}, {"name": "x", "ranks": [1]}]})", 2)
                .find("'x' twice"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": []})", 1).find("non-empty"), std::string::npos);
  EXPECT_NE(err(R"({"nodes": 1, "ranks_per_node": 1, "links": {"inter": {"gbps": -1}}})", 1)
                .find("gbps > 0"),
            std::string::npos);
  // A rate of 0, a rate that is no number (it threw), a misspelt key: each said.
  EXPECT_NE(err(R"({"nodes": 1, "ranks_per_node": 1, "links": {"inter": {"gbps": 0}}})", 1)
                .find("gbps > 0"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": 1, "ranks_per_node": 1, "links": {"intra": {"gbps": "fast"}}})", 1)
                .find("links.intra.gbps must be a number"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": 1, "ranks_per_node": 1, "links": {"inter": {"gbit": 5}}})", 1)
                .find("unknown key 'gbit'"),
            std::string::npos);
  EXPECT_NE(err("[1]", 1).find("f.json"), std::string::npos);
  // Numbers that are not whole or out of any job's range (2.7 read as 2, 2^32 as rank 0, a
  // product that overflowed), a misspelt top-level key, links that are no object.
  EXPECT_NE(err(R"({"nodes": 2, "ranks_per_node": 2.7})", 4).find("whole number"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"ranks": [0, 4294967296]}]})", 2).find("bad rank"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": 2147483647, "ranks_per_node": 2147483647})", 0).find("whole number"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": 2, "ranks_per_node": 1, "rail": 2})", 2).find("unknown key 'rail'"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": 2, "ranks_per_node": 1, "links": 5})", 2).find("\"links\""),
            std::string::npos);
  // Values of the wrong type (they threw out of the JSON library: braid-info died).
  EXPECT_NE(err(R"({"nodes": 2, "ranks_per_node": "x"})", 2).find("whole number"),
            std::string::npos);
  EXPECT_NE(err(R"({"nodes": [{"name": 5, "ranks": [0, 1]}]})", 2).find("wrong type"),
            std::string::npos);
}

TEST(Nodes, TopologyFileThatCannotBeRead) {
  NodeMap m;
  Status s = loadTopologyFile("/nonexistent/braid-topo.json", 2, &m);
  EXPECT_EQ(s.code(), braidInvalidArgument);
  EXPECT_NE(s.message().find("cannot be read"), std::string::npos);
}

}  // namespace
}  // namespace braid

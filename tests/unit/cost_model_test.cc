// The alpha-beta model that picks the allreduce algorithm, and braid-info --explain.
#include "collectives/cost_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "src/topology/nodes.h"

namespace braid {
namespace {

std::string cheapestAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  return cheapest(predict(CollKind::kAllReduce, Config{}, m, nm, bytes));
}

std::vector<Candidate> predictAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  std::vector<Candidate> out;
  for (const Candidate& c : predict(CollKind::kAllReduce, Config{}, m, nm, bytes)) {
    if (c.algo != nullptr) out.push_back(c);
  }
  return out;
}

NodeMap shape(int nodes, int perNode) {
  std::vector<std::string> ids;
  for (int r = 0; r < nodes * perNode; ++r) ids.push_back(std::to_string(r / perNode));
  return groupByHost(ids);
}

TEST(CostModel, LatencyBoundSizesTakeRecursiveDoubling) {
  Config cfg;
  for (int n : {2, 3, 4, 8}) {
    NodeMap nm = shape(1, n);
    EXPECT_EQ((cheapestAllReduce(costModel(cfg, nm), nm, 8)), "rd") << n;
  }
}

TEST(CostModel, LargeOnOneNodeTakesABandwidthOptimalOne) {
  Config cfg;
  NodeMap nm = shape(1, 4);
  std::string a = cheapestAllReduce(costModel(cfg, nm), nm, size_t{256} << 20);
  EXPECT_TRUE(a == "rhd" || a == "ring") << a;
  // Between nodes of equal size the hierarchical one moves least over the slow links.
  NodeMap multi = shape(4, 2);
  EXPECT_EQ((cheapestAllReduce(costModel(cfg, multi), multi, size_t{1} << 20)), "hier");
  for (const Candidate& p : predictAllReduce(costModel(cfg, multi), multi, size_t{1} << 20)) {
    EXPECT_TRUE(p.applies) << p.algo;
    EXPECT_GT(p.us, 0) << p.algo;
  }
}

TEST(CostModel, UnevenNodesRuleOutTheHierarchicalOne) {
  Config cfg;
  NodeMap nm = groupByHost({"a", "a", "a", "b", "b"});
  for (const Candidate& p : predictAllReduce(costModel(cfg, nm), nm, size_t{16} << 20)) {
    if (std::string(p.algo) == "hier") {
      EXPECT_FALSE(p.applies);
      std::string why = explainCandidate(CollKind::kAllReduce, p, cfg, nm);
      EXPECT_NE(why.find("same number"), std::string::npos) << why;
    }
  }
  EXPECT_NE((cheapestAllReduce(costModel(cfg, nm), nm, size_t{16} << 20)), "hier");
}

TEST(CostModel, TopologyFileLinksReplaceTheDefaults) {
  Config cfg;
  NodeMap nm;
  ASSERT_TRUE(parseTopology(R"({"nodes": 2, "ranks_per_node": 2,
      "links": {"intra": {"latency_us": 1, "gbps": 800}, "inter": {"latency_us": 5, "gbps": 100}}})",
                            "test", 4, &nm)
                  .isOk());
  CostModel m = costModel(cfg, nm);
  EXPECT_DOUBLE_EQ(m.intra.gbitPerS, 800);
  EXPECT_DOUBLE_EQ(m.inter.alphaUs, 5);
  // Faster links predict less time for the same algorithm.
  CostModel slow = costModel(cfg, shape(2, 2));
  auto rail = [](const CostModel& c, const NodeMap& n) {
    for (const Candidate& p : predictAllReduce(c, n, size_t{64} << 20)) {
      if (std::string(p.algo) == "hier") return p.us;
    }
    return 0.0;
  };
  EXPECT_LT(rail(m, nm), rail(slow, shape(2, 2)));
  // Without shared memory, the node's own link is TCP.
  cfg.transports = "tcp";
  EXPECT_DOUBLE_EQ(costModel(cfg, shape(2, 2)).intra.alphaUs,
                   costModel(cfg, shape(2, 2)).inter.alphaUs);
}

TEST(CostModel, EveryCollectiveHasCandidatesAndRulesForSmallSizes) {
  Config cfg;
  NodeMap one = shape(1, 4), multi = shape(4, 2);
  auto pick = [&](CollKind k, const NodeMap& nm, size_t bytes) {
    return std::string(cheapest(predict(k, cfg, costModel(cfg, nm), nm, bytes)));
  };
  EXPECT_EQ(pick(CollKind::kAllGather, one, 64), "bruck");  // within BRAID_SMALL_ALLGATHER_BYTES
  EXPECT_EQ(pick(CollKind::kAllGather, one, size_t{1} << 20), "ring");
  EXPECT_EQ(pick(CollKind::kAllGather, multi, size_t{1} << 20), "hier");
  EXPECT_EQ(pick(CollKind::kBroadcast, one, 1024), "binomial");  // below BRAID_CHAIN_MIN_BYTES
  EXPECT_EQ(pick(CollKind::kReduce, one, size_t{16} << 20), "chain");
  EXPECT_EQ(pick(CollKind::kBroadcast, multi, size_t{16} << 20), "hier");
  EXPECT_EQ(pick(CollKind::kReduceScatter, one, size_t{1} << 20), "ring");
  // All-to-all between nodes: aggregating over the rail pays for small blocks; for large ones
  // the extra hop through the node costs more than the messages it saves.
  EXPECT_EQ(pick(CollKind::kAllToAll, multi, 1024), "rail");
  EXPECT_EQ(pick(CollKind::kAllToAll, multi, size_t{16} << 20), "pairwise");
  EXPECT_EQ(pick(CollKind::kAllToAll, one, 1024), "pairwise");
  EXPECT_EQ(pick(CollKind::kAllToAllv, multi, 1024), "pairwise");
}

TEST(CostModel, BraidInfoExplainsTheChoice) {
  const char* info = std::getenv("BRAID_INFO");
  if (info == nullptr) GTEST_SKIP() << "BRAID_INFO (path of braid-info) not set";
  std::string cmd = std::string(info) + " --explain allreduce 1M --ranks 8 --nodes 4 --json";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("\"chosen\": \"hier\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"predicted_us\""), std::string::npos) << out;
  cmd = std::string(info) + " --explain alltoall 1K --ranks 8 --nodes 4";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("* rail"), std::string::npos) << out;
  // Small calls on one node go through the fast boxes, unless BRAID_ALGO forces an algorithm.
  for (const char* env : {"", "BRAID_ALGO=allreduce=ring "}) {
    cmd = std::string(env) + info + " --explain allreduce 8 --ranks 4";
    p = popen(cmd.c_str(), "r");
    out.clear();
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << out;
    EXPECT_NE(out.find(*env ? "BRAID_ALGO forces" : "* fastbox"), std::string::npos) << cmd << "\n"
                                                                                     << out;
  }
  cmd = std::string(info) + " --explain allreduce 8 --ranks 4 --nodes 2";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("needs every rank on one node"), std::string::npos) << out;
  cmd = std::string(info) + " --explain barrier 1M 2>&1";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("allgather"), std::string::npos) << out;
  // A BRAID_ALGO no communicator would accept is reported, not explained.
  cmd = std::string("BRAID_ALGO=broadcast=ring ") + info + " --explain broadcast 1M 2>&1";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("'ring' is not an algorithm of broadcast (known: binomial, chain, hier)"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace braid

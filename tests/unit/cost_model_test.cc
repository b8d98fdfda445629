// The alpha-beta model that picks the allreduce algorithm, and braid-info --explain.
#include "collectives/cost_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "src/topology/nodes.h"

namespace braid {
namespace {

NodeMap shape(int nodes, int perNode) {
  std::vector<std::string> ids;
  for (int r = 0; r < nodes * perNode; ++r) ids.push_back(std::to_string(r / perNode));
  return groupByHost(ids);
}

TEST(CostModel, LatencyBoundSizesTakeRecursiveDoubling) {
  Config cfg;
  for (int n : {2, 3, 4, 8}) {
    NodeMap nm = shape(1, n);
    EXPECT_EQ(std::string(cheapestAllReduce(costModel(cfg, nm), nm, 8)), "rd") << n;
  }
}

TEST(CostModel, LargeOnOneNodeTakesABandwidthOptimalOne) {
  Config cfg;
  NodeMap nm = shape(1, 4);
  std::string a = cheapestAllReduce(costModel(cfg, nm), nm, size_t{256} << 20);
  EXPECT_TRUE(a == "rhd" || a == "ring") << a;
  // Between nodes of equal size the hierarchical one moves least over the slow links.
  NodeMap multi = shape(4, 2);
  EXPECT_EQ(std::string(cheapestAllReduce(costModel(cfg, multi), multi, size_t{1} << 20)), "hier");
  for (const Prediction& p : predictAllReduce(costModel(cfg, multi), multi, size_t{1} << 20)) {
    EXPECT_TRUE(p.applies) << p.algo;
    EXPECT_GT(p.us, 0) << p.algo;
  }
}

TEST(CostModel, UnevenNodesRuleOutTheHierarchicalOne) {
  Config cfg;
  NodeMap nm = groupByHost({"a", "a", "a", "b", "b"});
  for (const Prediction& p : predictAllReduce(costModel(cfg, nm), nm, size_t{16} << 20)) {
    if (p.algo == "hier") {
      EXPECT_FALSE(p.applies);
      EXPECT_NE(p.why.find("same number"), std::string::npos) << p.why;
    }
  }
  EXPECT_NE(std::string(cheapestAllReduce(costModel(cfg, nm), nm, size_t{16} << 20)), "hier");
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
    for (const Prediction& p : predictAllReduce(c, n, size_t{64} << 20)) {
      if (p.algo == "hier") return p.us;
    }
    return 0.0;
  };
  EXPECT_LT(rail(m, nm), rail(slow, shape(2, 2)));
  // Without shared memory, the node's own link is TCP.
  cfg.transports = "tcp";
  EXPECT_DOUBLE_EQ(costModel(cfg, shape(2, 2)).intra.alphaUs,
                   costModel(cfg, shape(2, 2)).inter.alphaUs);
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
  cmd = std::string(info) + " --explain alltoall 1M 2>&1";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("allreduce"), std::string::npos) << out;
}

}  // namespace
}  // namespace braid

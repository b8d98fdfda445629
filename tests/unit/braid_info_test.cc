// braid-info: machine, transports, topology file and configuration, as text and as JSON.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Output {
  int code = -1;
  std::string out;
};

// Runs braid-info with `env` (shell assignments) and `args`, stdout captured, bounded.
// With `errors`, stderr is captured instead of stdout.
Output info(const std::string& env, const std::string& args, bool errors = false) {
  const char* bin = std::getenv("BRAID_INFO");
  Output r;
  std::string cmd =
      env + " timeout 60 " + bin + " " + args + (errors ? " 2>&1 >/dev/null" : " 2>/dev/null");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class BraidInfo : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("BRAID_INFO");
    if (bin == nullptr || *bin == '\0') GTEST_SKIP() << "BRAID_INFO is not set";
  }
};

TEST_F(BraidInfo, JsonHasMachineTransportsAndConfig) {
  Output r = info("BRAID_TIMEOUT_MS=1234", "--json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["machine"]["cores"].get<int>(), 1);
  EXPECT_FALSE(j["host"].get<std::string>().empty());
  bool tcp = false;
  for (const auto& t : j["transports"]) tcp = tcp || (t["name"] == "tcp" && t["usable"] == true);
  EXPECT_TRUE(tcp);
  bool timeout = false;
  for (const auto& e : j["config"]) {
    timeout = timeout || (e["variable"] == "BRAID_TIMEOUT_MS" && e["current"] == "1234");
  }
  EXPECT_TRUE(timeout);
}

// A misspelt setting would be ignored without a word: it is named, with the setting meant.
TEST_F(BraidInfo, AMisspeltSettingIsNamedWithTheClosestSetting) {
  Output r = info("BRAID_TRANSPORT=tcp BRAID_TIMEOUTMS=5 BRAID_RANK=0 BRAID_WORLD_SIZE=1", "",
                  /*errors=*/true);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("BRAID_TRANSPORT is not a braid setting and is ignored (did you mean "
                       "BRAID_TRANSPORTS?)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("BRAID_TIMEOUTMS is not a braid setting and is ignored (did you mean "
                       "BRAID_TIMEOUT_MS?)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("BRAID_RANK is not"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("BRAID_WORLD_SIZE is not"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("BRAID_INFO is not"), std::string::npos) << r.out;
}

// What braidCommInitFromEnv would make of the environment: launcher, rank, size, rendezvous.
TEST_F(BraidInfo, ShowsHowInitFromEnvWouldJoinTheJob) {
  Output r = info("RANK=1 WORLD_SIZE=4 MASTER_ADDR=h1 MASTER_PORT=29500", "--json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto l = nlohmann::json::parse(r.out)["launch"];
  EXPECT_EQ(l["launcher"], "torchrun") << l;
  EXPECT_EQ(l["rank"], 1) << l;
  EXPECT_EQ(l["size"], 4) << l;
  EXPECT_NE(l["rendezvous"].get<std::string>().find("h1:29501"), std::string::npos) << l;
  r = info("", "--json");
  ASSERT_EQ(r.code, 0) << r.out;
  l = nlohmann::json::parse(r.out)["launch"];
  EXPECT_EQ(l["launcher"], "no launcher") << l;
  EXPECT_EQ(l["size"], 1) << l;
  r = info("RANK=1", "", /*errors=*/true);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("RANK is set but WORLD_SIZE is not"), std::string::npos) << r.out;
}

TEST_F(BraidInfo, ShowsTheNodesOfATopologyFile) {
  std::string path = ::testing::TempDir() + "braid_info_topo.json";
  std::ofstream(path) << R"({"nodes": 2, "ranks_per_node": 2, "rails": 2})";
  Output r = info("BRAID_TOPO_FILE=" + path, "");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("2 node(s), 2 rail(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("node1: ranks [2,3]"), std::string::npos) << r.out;
  Output bad = info("BRAID_WORLD_SIZE=3 BRAID_TOPO_FILE=" + path, "--json");
  EXPECT_EQ(bad.code, 1);
  auto j = nlohmann::json::parse(bad.out);
  EXPECT_NE(j["topology"]["error"].get<std::string>().find("not the job's 3"), std::string::npos);
  std::remove(path.c_str());
}

TEST_F(BraidInfo, SaysWhetherLaggingFlowsAreRehashed) {
  Output on = info("BRAID_TCP_SOCKETS_PER_PEER=4", "--json");
  ASSERT_EQ(on.code, 0) << on.out;
  EXPECT_TRUE(nlohmann::json::parse(on.out)["multipath"]["rehash"].get<bool>());
  Output off = info("BRAID_PATH_REHASH=0", "");
  ASSERT_EQ(off.code, 0) << off.out;
  EXPECT_NE(off.out.find("(lagging ones re-hashed: off)"), std::string::npos) << off.out;
  Output bad = info("BRAID_PATH_REHASH=2", "");  // (why: on stderr)
  EXPECT_EQ(bad.code, 1);
}

TEST_F(BraidInfo, InvalidSettingIsReportedWithExitCode1) {
  Output r = info("BRAID_TIMEOUT_MS=soon", "");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("BRAID_TIMEOUT_MS"), std::string::npos);
}

// Settings of the right type that a communicator's creation refuses: said here too, exit 1.
TEST_F(BraidInfo, SettingsTheCommunicatorWouldRefuseGiveExitCode1) {
  for (const char* env :
       {"BRAID_TRANSPORTS=tcp,foo", "BRAID_ALGO=foo=bar", "BRAID_RAILS=nonexist0 LOCAL_RANK=0",
        "BRAID_RAILS=nonexist0", "BRAID_FAULT=garbage", "BRAID_FAULT=rank=0,path=0"}) {
    EXPECT_EQ(info(env, "").code, 1) << env;
  }
  EXPECT_EQ(info("BRAID_TRANSPORTS=tcp,shm BRAID_ALGO=allreduce=ring", "").code, 0);
}

TEST_F(BraidInfo, UnknownFlagIsAUsageError) {
  Output r = info("", "--bogus");
  EXPECT_NE(r.code, 0);
}

// --explain refuses what it cannot mean instead of explaining something else: a negative or
// overflowing size, a job of no ranks, more nodes than ranks.
TEST_F(BraidInfo, ExplainRefusesBadSizesAndShapes) {
  EXPECT_EQ(info("", "--explain allreduce 1M --ranks 4 --nodes 2").code, 0);
  for (const char* bad :
       {"--explain allreduce -5", "--explain allreduce 99999999999999999999",
        "--explain allreduce 17179869184G", "--explain allreduce 1M --ranks 0",
        "--explain allreduce 1M --ranks -3", "--explain allreduce 1M --ranks 4 --nodes 8"}) {
    Output r = info("", bad);
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_EQ(r.out, "") << bad;
  }
}

}  // namespace

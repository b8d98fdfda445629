// The fixture of the emulated-fabric tests (tools/testbed: network namespaces, veth rails, TBF
// rates, ECMP leaf-spine) and their checks. Needs root (skips otherwise); every test builds and
// removes its own uniquely named testbed.
#pragma once

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

inline std::string testbedTool() {
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

  std::string name_;
  bool up_ = false;
};

inline uint64_t failures(braidComm_t comm) {
  uint64_t f = 0;
  for (const auto& s : pathStats(comm)) f += s.failures;
  return f;
}

// Allreduces of `count` floats, every element checked, until rank 0 has spent `seconds` (the
// ranks agree on the number of calls: rank 0's verdict travels in the last element).
inline void allreduceFor(braidComm_t comm, int r, int n, size_t count, double seconds) {
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
inline void pathsComeBackAndCarry(
    braidComm_t comm, int r, int n,
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

}  // namespace braid::test

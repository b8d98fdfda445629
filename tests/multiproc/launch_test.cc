// Starting a job from its environment: IPv6 rendezvous, a stale unique-id file, mpirun and
// srun environments, leftover launcher variables, a job of one rank, log files.
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

bool haveIpv6Loopback() {
  int s = socket(AF_INET6, SOCK_STREAM, 0);
  if (s < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(s);
  return ok;
}

TEST(Launch, Ipv6RendezvousAndDataFromTheEnvironment) {
  if (!haveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this machine";
  const int port = freeRootPort(AF_INET6);
  ASSERT_NE(port, 0);
  const std::string root = "[::1]:" + std::to_string(port);
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "20000"}};
  runRanks(
      3,
      [&](int r, int n, const braidUniqueId&) {
        setenv("BRAID_RANK", std::to_string(r).c_str(), 1);
        setenv("BRAID_WORLD_SIZE", std::to_string(n).c_str(), 1);
        setenv("BRAID_ROOT_ADDR", root.c_str(), 1);
        setenv("BRAID_JOB_SECRET", "00112233445566778899aabbccddeeff", 1);
        setenv("BRAID_SOCKET_IFNAME", "lo", 1);
        setenv("BRAID_SOCKET_FAMILY", "AF_INET6", 1);
        braidComm_t c = nullptr;
        BRAID_ASSERT_OK(braidCommInitFromEnv(&c), nullptr);
        std::vector<float> v(100000, 1.0f);
        BRAID_ASSERT_OK(
            braidAllReduce(v.data(), v.data(), v.size(), braidFloat32, braidSum, c, nullptr), c);
        EXPECT_EQ(v[99999], 3.0f);
        BRAID_ASSERT_OK(braidCommDestroy(c), nullptr);
      },
      opt);
}

// An elastic restart inside the process: destroy (or abort) the communicator and make a new one
// from the same launcher variables (torchrun's). Rank 0 refused the second at once ("this
// unique id was used already") and the others retried its refused connection until
// BRAID_TIMEOUT_MS. Each init from the same root address now meets the others' init of the same
// number under a secret of its own, rank 0 serving it on the same port.
TEST(Launch, InitFromTheSameLauncherVariablesAgainInTheProcess) {
  const int port = freeRootPort(AF_INET);
  ASSERT_NE(port, 0);
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "20000"}};
  runRanks(
      3,
      [&](int r, int n, const braidUniqueId&) {
        setenv("RANK", std::to_string(r).c_str(), 1);
        setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", std::to_string(port - 1).c_str(), 1);
        for (int cycle = 0; cycle < 3; ++cycle) {
          const double t0 = now();
          braidComm_t c = nullptr;
          BRAID_ASSERT_OK(braidCommInitFromEnv(&c), nullptr);
          EXPECT_LT(now() - t0, 10.0) << "init " << cycle;
          float x = static_cast<float>(r + cycle);
          BRAID_ASSERT_OK(braidAllReduce(&x, &x, 1, braidFloat32, braidSum, c, nullptr), c);
          EXPECT_EQ(x, static_cast<float>(3 + 3 * cycle));
          EXPECT_EQ(cycle % 2 ? braidCommAbort(c) : braidCommDestroy(c), braidSuccess);
        }
      },
      opt);
}

// BRAID_UNIQUE_ID_FILE left behind by a job that crashed (its root gone): the next job's ranks
// pass over it until its rank 0, started last, writes a fresh id, readable by the owner only,
// and the file is gone once every rank joined, so a rerun finds no stale file either.
TEST(Launch, UniqueIdFileLeftByACrashedJobIsReplacedAndRemoved) {
  char dir[] = "/tmp/braid-idfile-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/job.id";
  // The stale file: an id whose root lived in a process that has exited.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    braidUniqueId id;
    char hex[2 * BRAID_UNIQUE_ID_BYTES + 1] = {};
    if (braidGetUniqueId(&id) == braidSuccess) braidUniqueIdToString(&id, hex, sizeof hex);
    ssize_t w = write(fds[1], hex, sizeof hex);
    _exit(w == static_cast<ssize_t>(sizeof hex) ? 0 : 1);
  }
  char stale[2 * BRAID_UNIQUE_ID_BYTES + 1] = {};
  ASSERT_EQ(read(fds[0], stale, sizeof stale), static_cast<ssize_t>(sizeof stale));
  close(fds[0]);
  close(fds[1]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(std::string(stale).size(), 2u * BRAID_UNIQUE_ID_BYTES);
  std::ofstream(path) << stale << "\n";
  auto contents = [&] {
    std::ifstream f(path);
    std::string hex;
    f >> hex;
    return hex;
  };
  for (int job = 0; job < 2; ++job) {
    runRanks(3, [&](int r, int n, const braidUniqueId&) {
      setenv("BRAID_RANK", std::to_string(r).c_str(), 1);
      setenv("BRAID_WORLD_SIZE", std::to_string(n).c_str(), 1);
      setenv("BRAID_UNIQUE_ID_FILE", path.c_str(), 1);
      setenv("BRAID_TIMEOUT_MS", "20000", 1);
      if (job == 0 && r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1000));
      if (job == 0 && r == 1) {
        // Waits for rank 0's id, then looks at the file before joining.
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
        while (contents() == stale && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        struct stat st {};
        ASSERT_EQ(stat(path.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u) << "the file holds the job secret";
      }
      braidComm_t c = nullptr;
      BRAID_ASSERT_OK(braidCommInitFromEnv(&c), nullptr);
      if (r == 0) {
        EXPECT_NE(access(path.c_str(), F_OK), 0) << "rank 0 removes the file";
      }
      float x = 1;
      BRAID_ASSERT_OK(braidAllReduce(&x, &x, 1, braidFloat32, braidSum, c, nullptr), c);
      EXPECT_EQ(x, 3.0f);
      BRAID_ASSERT_OK(braidCommDestroy(c), nullptr);
    });
  }
  rmdir(dir);
}

// mpirun or srun on one node, no rendezvous in the environment: the ranks meet through a
// file of this user's named by the job, gone afterwards. Spread over several nodes, they
// still need an address, and the error says so.
TEST(Launch, OneNodeMpirunOrSrunJobNeedsNoRendezvousAddress) {
  char dir[] = "/tmp/braid-tmpdir-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string job = "test-" + std::to_string(getpid());
  auto launch = [&](bool slurm, bool oneNode, bool pmi = false) {
    runRanks(3, [&](int r, int n, const braidUniqueId&) {
      for (const char* v : {"BRAID_RANK", "BRAID_WORLD_SIZE", "BRAID_ROOT_ADDR", "BRAID_UNIQUE_ID",
                            "BRAID_UNIQUE_ID_FILE", "MASTER_ADDR", "RANK", "WORLD_SIZE"}) {
        unsetenv(v);
      }
      setenv("TMPDIR", dir, 1);
      setenv("BRAID_TIMEOUT_MS", "20000", 1);
      if (slurm) {
        setenv("SLURM_PROCID", std::to_string(r).c_str(), 1);
        setenv("SLURM_NTASKS", std::to_string(n).c_str(), 1);
        setenv("SLURM_NNODES", oneNode ? "1" : "2", 1);
        setenv("SLURM_JOB_ID", job.c_str(), 1);
        setenv("SLURM_STEP_ID", "0", 1);
        if (pmi) {  // srun --mpi=pmi2 sets these too
          setenv("PMI_RANK", std::to_string(r).c_str(), 1);
          setenv("PMI_SIZE", std::to_string(n).c_str(), 1);
        }
      } else {
        setenv("OMPI_COMM_WORLD_RANK", std::to_string(r).c_str(), 1);
        setenv("OMPI_COMM_WORLD_SIZE", std::to_string(n).c_str(), 1);
        setenv("OMPI_COMM_WORLD_LOCAL_SIZE", oneNode ? "3" : "2", 1);
        setenv("PMIX_NAMESPACE", job.c_str(), 1);
      }
      braidComm_t c = nullptr;
      if (!oneNode) {
        EXPECT_NE(braidCommInitFromEnv(&c), braidSuccess);
        std::string msg = braidGetLastError(nullptr);
        EXPECT_NE(msg.find("BRAID_ROOT_ADDR"), std::string::npos) << msg;
        return;
      }
      BRAID_ASSERT_OK(braidCommInitFromEnv(&c), nullptr);
      int64_t x = r;
      BRAID_ASSERT_OK(braidAllReduce(&x, &x, 1, braidInt64, braidSum, c, nullptr), c);
      EXPECT_EQ(x, 3);
      BRAID_ASSERT_OK(braidCommDestroy(c), nullptr);
    });
  };
  launch(false, true);
  launch(true, true);
  launch(true, true, /*pmi=*/true);
  launch(false, false);
  launch(true, false);
  EXPECT_EQ(rmdir(dir), 0) << "an id file was left in " << dir;
}

// Variables left over in the environment must not make each process a job of its own: an
// exported RANK=0 WORLD_SIZE=1 under mpirun -np 3 gave three one-rank jobs, each "reducing"
// its own data. And a root address with port 0 names no port to the other ranks.
TEST(Launch, LeftoverLauncherVariablesAndPortZeroFailSayingSo) {
  runRanks(3, [&](int r, int n, const braidUniqueId&) {
    for (const char* v : {"BRAID_RANK", "BRAID_WORLD_SIZE", "BRAID_UNIQUE_ID"}) unsetenv(v);
    setenv("RANK", "0", 1);
    setenv("WORLD_SIZE", "1", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", "29500", 1);
    setenv("OMPI_COMM_WORLD_RANK", std::to_string(r).c_str(), 1);
    setenv("OMPI_COMM_WORLD_SIZE", std::to_string(n).c_str(), 1);
    braidComm_t c = nullptr;
    EXPECT_EQ(braidCommInitFromEnv(&c), braidInvalidArgument);
    std::string msg = braidGetLastError(nullptr);
    EXPECT_NE(msg.find("OMPI_COMM_WORLD_SIZE=3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("left over"), std::string::npos) << msg;
    for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) unsetenv(v);
    setenv("BRAID_ROOT_ADDR", "127.0.0.1:0", 1);
    EXPECT_EQ(braidCommInitFromEnv(&c), braidInvalidArgument);
    msg = braidGetLastError(nullptr);
    EXPECT_NE(msg.find("port 0"), std::string::npos) << msg;
    EXPECT_EQ(c, nullptr);
  });
}

// A program started without a launcher is a job of one rank (MPI's singleton), and a job of
// one rank needs no rendezvous address: it meets no one (torchrun's MASTER_PORT+1 may even
// be taken). Two such programs at once are two jobs.
TEST(Launch, AJobOfOneRankNeedsNoLauncherOrRendezvous) {
  Fd taken(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(bind(taken.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(taken.get(), 1), 0);
  ASSERT_EQ(getsockname(taken.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string masterPort = std::to_string(ntohs(a.sin_port) - 1);
  for (bool torchrun : {false, true}) {
    runRanks(2, [&](int r, int, const braidUniqueId&) {
      for (const char* v : {"BRAID_RANK", "BRAID_WORLD_SIZE", "BRAID_ROOT_ADDR", "BRAID_UNIQUE_ID",
                            "BRAID_UNIQUE_ID_FILE", "MASTER_ADDR", "MASTER_PORT", "RANK",
                            "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                            "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS"}) {
        unsetenv(v);
      }
      if (torchrun) {
        setenv("RANK", "0", 1);
        setenv("WORLD_SIZE", "1", 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", masterPort.c_str(), 1);
      }
      braidComm_t c = nullptr;
      BRAID_ASSERT_OK(braidCommInitFromEnv(&c), nullptr);
      int rank = -1, count = 0;
      BRAID_ASSERT_OK(braidCommUserRank(c, &rank), c);
      BRAID_ASSERT_OK(braidCommCount(c, &count), c);
      EXPECT_EQ(rank, 0);
      EXPECT_EQ(count, 1);
      std::vector<int32_t> x(1000, r + 7), y(1000, 0);
      BRAID_ASSERT_OK(
          braidAllReduce(x.data(), y.data(), x.size(), braidInt32, braidSum, c, nullptr), c);
      EXPECT_EQ(y, x);
      BRAID_ASSERT_OK(braidCommDestroy(c), nullptr);
      // A rendezvous without rank and size is a launch that lost them, not a singleton.
      unsetenv("RANK");
      unsetenv("WORLD_SIZE");
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      c = nullptr;
      EXPECT_EQ(braidCommInitFromEnv(&c), braidInvalidArgument);
      std::string msg = braidGetLastError(nullptr);
      EXPECT_NE(msg.find("MASTER_ADDR is set but no rank and size"), std::string::npos) << msg;
      EXPECT_EQ(c, nullptr);
    });
  }
}

TEST(Launch, LogFileNamedByHostPidAndRank) {
  char dir[] = "/tmp/braid-log-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string pattern = std::string(dir) + "/%h-%p-rank%r.log";
  RankOptions opt;
  opt.env = {
      {"BRAID_LOG_LEVEL", "INFO"}, {"BRAID_LOG_SUBSYS", "INIT"}, {"BRAID_LOG_FILE", pattern}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t c = initComm(r, n, id);
        ASSERT_NE(c, nullptr);
        BRAID_ASSERT_OK(braidCommDestroy(c), nullptr);
      },
      opt);
  int files = 0, withRank = 0;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name[0] == '.') continue;
      ++files;
      if (name.find("-rank0.log") != std::string::npos ||
          name.find("-rank1.log") != std::string::npos) {
        ++withRank;
        std::string path = std::string(dir) + "/" + name;
        FILE* f = std::fopen(path.c_str(), "r");
        char line[512] = {};
        ASSERT_NE(f, nullptr);
        ASSERT_NE(std::fgets(line, sizeof line, f), nullptr);
        std::fclose(f);
        EXPECT_NE(std::string(line).find("INIT"), std::string::npos) << line;
      }
      std::remove((std::string(dir) + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(dir);
  EXPECT_EQ(files, 2);
  EXPECT_EQ(withRank, 2);
}

}  // namespace
}  // namespace braid::test

#include "harness/ranks.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace braid::test {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int braidShmFiles() {
  int n = 0;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, "braid", 5) == 0) ++n;
    }
    closedir(d);
  }
  return n;
}

braidComm_t initComm(int rank, int nranks, const braidUniqueId& id) {
  braidComm_t c = nullptr;
  braidResult_t r = braidCommInitRank(&c, nranks, id, rank);
  EXPECT_EQ(r, braidSuccess) << "rank " << rank << ": " << braidGetLastError(nullptr);
  return c;
}

namespace {

[[noreturn]] void runChild(int rank, int nranks, const RankBody& body, const RankOptions& opt,
                           int idRead, int idWrite) {
  for (const auto& [k, v] : opt.env) setenv(k.c_str(), v.c_str(), 1);
  if (opt.setup) opt.setup(rank);
  braidUniqueId id{};
  if (rank == 0) {
    if (braidGetUniqueId(&id) != braidSuccess) {
      std::fprintf(stderr, "rank 0: braidGetUniqueId: %s\n", braidGetLastError(nullptr));
      _exit(3);
    }
    for (int r = 1; r < nranks; ++r) {
      if (write(idWrite, &id, sizeof id) != static_cast<ssize_t>(sizeof id)) _exit(3);
    }
  } else {
    size_t got = 0;
    while (got < sizeof id) {
      pollfd p{idRead, POLLIN, 0};
      if (poll(&p, 1, opt.timeoutSec * 1000) <= 0) _exit(4);
      ssize_t n = read(idRead, reinterpret_cast<char*>(&id) + got, sizeof id - got);
      if (n <= 0) _exit(4);
      got += static_cast<size_t>(n);
    }
  }
  close(idRead);
  close(idWrite);
  int code = 0;
  try {
    body(rank, nranks, id);
    if (::testing::Test::HasFailure()) code = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: exception: %s\n", rank, e.what());
    code = 2;
  } catch (...) {
    code = 2;
  }
  if (code != 0) std::fprintf(stderr, "rank %d of %d failed (see above)\n", rank, nranks);
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(code);
}

}  // namespace

std::vector<RankResult> runRanksRaw(int nranks, const RankBody& body, const RankOptions& opt) {
  std::fflush(stdout);
  std::fflush(stderr);
  int pipeFds[2];
  if (pipe(pipeFds) != 0) {
    ADD_FAILURE() << "pipe failed";
    return {};
  }
  std::vector<pid_t> pids(nranks, -1);
  for (int r = 0; r < nranks; ++r) {
    pid_t pid = fork();
    if (pid == 0) runChild(r, nranks, body, opt, pipeFds[0], pipeFds[1]);
    pids[r] = pid;
  }
  close(pipeFds[0]);
  close(pipeFds[1]);
  std::vector<RankResult> res(nranks);
  std::vector<bool> done(nranks, false);
  int left = nranks;
  double deadline = now() + opt.timeoutSec;
  while (left > 0) {
    // Each rank by its pid: other children of the test (a fault injector's shell) are not ours.
    bool reaped = false;
    for (int r = 0; r < nranks; ++r) {
      int status = 0;
      if (done[r] || waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      res[r].exited = WIFEXITED(status);
      res[r].code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      res[r].signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      done[r] = true;
      --left;
      reaped = true;
    }
    if (reaped) continue;
    if (now() > deadline) {
      for (int r = 0; r < nranks; ++r) {
        if (!done[r]) {
          res[r].hung = true;
          kill(pids[r], SIGKILL);
        }
      }
      for (int r = 0; r < nranks; ++r) {
        if (!done[r]) waitpid(pids[r], nullptr, 0);
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return res;
}

void runRanks(int nranks, const RankBody& body, const RankOptions& opt) {
  auto res = runRanksRaw(nranks, body, opt);
  errno = 0;
  EXPECT_TRUE(waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD)
      << "a process of the test is still running";
  for (int r = 0; r < static_cast<int>(res.size()); ++r) {
    if (res[r].hung) {
      ADD_FAILURE() << "rank " << r << " of " << nranks << " hung (killed after " << opt.timeoutSec
                    << " s)";
    } else if (!res[r].exited) {
      ADD_FAILURE() << "rank " << r << " of " << nranks << " died of signal " << res[r].signal;
    } else if (res[r].code != 0) {
      ADD_FAILURE() << "rank " << r << " of " << nranks << " failed (exit " << res[r].code
                    << "; its messages are above)";
    }
  }
}

std::vector<braidPathStats_t> pathStats(braidComm_t comm) {
  int n = 0;
  EXPECT_EQ(braidCommGetPathStats(comm, nullptr, 0, &n), braidSuccess);
  std::vector<braidPathStats_t> v(static_cast<size_t>(n));
  EXPECT_EQ(braidCommGetPathStats(comm, v.data(), n, &n), braidSuccess);
  v.resize(static_cast<size_t>(n));
  return v;
}

bool waitAllPathsUp(braidComm_t comm) {
  int32_t up = 0;
  for (int i = 0; i < 200 && up == 0; ++i) {
    auto st = pathStats(comm);
    up = std::all_of(st.begin(), st.end(), [](auto& s) { return s.state == braidPathUp; });
    braidResult_t r = braidAllReduce(&up, &up, 1, braidInt32, braidMin, comm, nullptr);
    EXPECT_EQ(r, braidSuccess) << braidGetLastError(comm);
    if (r != braidSuccess) return false;
    if (up == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return up == 1;
}

void allreduceChecked(braidComm_t comm, int rank, int nranks, size_t count, int iters) {
  std::vector<float> v(count);
  for (int it = 0; it < iters; ++it) {
    for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>((rank + 1) * ((i + it) % 97));
    BRAID_ASSERT_OK(
        braidAllReduce(v.data(), v.data(), count, braidFloat32, braidSum, comm, nullptr), comm);
    const float ranks = static_cast<float>(nranks * (nranks + 1) / 2);
    size_t bad = 0;
    for (size_t i = 0; i < count; ++i) bad += v[i] != ranks * static_cast<float>((i + it) % 97);
    ASSERT_EQ(bad, 0u) << "iteration " << it;
  }
}

int freeRootPort(int family) {
  for (int p = 20000 + getpid() % 10000, k = 0; k < 500; ++k, p = p + 1 < 32768 ? p + 1 : 20000) {
    int s = socket(family, SOCK_STREAM, 0);
    sockaddr_storage a{};
    socklen_t len = 0;
    if (family == AF_INET6) {
      auto* a6 = reinterpret_cast<sockaddr_in6*>(&a);
      a6->sin6_family = AF_INET6;
      a6->sin6_addr = in6addr_any;
      a6->sin6_port = htons(static_cast<uint16_t>(p));
      len = sizeof *a6;
    } else {
      auto* a4 = reinterpret_cast<sockaddr_in*>(&a);
      a4->sin_family = AF_INET;
      a4->sin_addr.s_addr = htonl(INADDR_ANY);
      a4->sin_port = htons(static_cast<uint16_t>(p));
      len = sizeof *a4;
    }
    const bool ok = bind(s, reinterpret_cast<sockaddr*>(&a), len) == 0;
    close(s);
    if (ok) return p;
  }
  return 0;
}

}  // namespace braid::test

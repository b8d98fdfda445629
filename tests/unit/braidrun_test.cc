// Tests of the braidrun launcher (path in $BRAIDRUN, set by CTest) with /bin/sh ranks: no
// communicator is created, only braidrun's own unique id.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace braid {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string readFile(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> sortedLines(const std::string& text) {
  std::vector<std::string> out = lines(text);
  std::sort(out.begin(), out.end());
  return out;
}

// A process is gone when kill() cannot find it, or it is a zombie nobody reaps (an orphaned
// grandchild in a container whose init does not reap).
bool processGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

bool waitGone(pid_t pid, std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  while (!processGone(pid)) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

struct Result {
  int status = -1;  // as from waitpid
  std::string out, err;
  double seconds = 0;
  int exitCode() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

class BraidrunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* path = std::getenv("BRAIDRUN");
    if (path == nullptr || *path == '\0') GTEST_SKIP() << "BRAIDRUN is not set";
    braidrun_ = path;
    std::string tmpl = (fs::temp_directory_path() / "braidrun_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (running_ > 0) {
      ::kill(running_, SIGKILL);
      ::waitpid(running_, nullptr, 0);
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  // Starts braidrun with args, stdout/stderr into files of dir_.
  pid_t start(const std::vector<std::string>& args) {
    std::vector<std::string> all{braidrun_};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string outPath = (dir_ / "stdout").string(), errPath = (dir_ / "stderr").string();
    pid_t pid = ::fork();
    if (pid == 0) {
      int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int in = ::open("/dev/null", O_RDONLY);
      if (out < 0 || err < 0 || in < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    running_ = pid;
    return pid;
  }

  // Waits for the braidrun started last (killing it after limit) and collects its output.
  Result finish(pid_t pid, Clock::time_point began, std::chrono::seconds limit) {
    Result r;
    auto end = began + limit;
    while (true) {
      pid_t got = ::waitpid(pid, &r.status, WNOHANG);
      if (got == pid) break;
      if (Clock::now() >= end) {
        ADD_FAILURE() << "braidrun did not finish within " << limit.count() << " s";
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &r.status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    running_ = -1;
    r.seconds = std::chrono::duration<double>(Clock::now() - began).count();
    r.out = readFile(dir_ / "stdout");
    r.err = readFile(dir_ / "stderr");
    return r;
  }

  Result run(const std::vector<std::string>& args,
             std::chrono::seconds limit = std::chrono::seconds(8)) {
    auto began = Clock::now();
    return finish(start(args), began, limit);
  }

  // Waits until every rank wrote its pid file pid.<rank> and returns the pids.
  std::vector<pid_t> rankPids(int n, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    std::vector<pid_t> pids;
    auto end = Clock::now() + limit;
    for (int i = 0; i < n; ++i) {
      fs::path p = dir_ / ("pid." + std::to_string(i));
      while (true) {
        std::string text = readFile(p);
        if (!text.empty() && text.back() == '\n') {
          pids.push_back(static_cast<pid_t>(std::stol(text)));
          break;
        }
        if (Clock::now() >= end) {
          ADD_FAILURE() << "no pid file from rank " << i;
          return pids;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    return pids;
  }

  void expectAllGone(const std::vector<pid_t>& pids) {
    for (pid_t p : pids) {
      EXPECT_TRUE(waitGone(p, std::chrono::seconds(2))) << "process " << p << " survived";
    }
  }

  std::string braidrun_;
  fs::path dir_;
  pid_t running_ = -1;
};

TEST_F(BraidrunTest, RanksGetTheirRankAndWorldSize) {
  Result r = run({"-np", "4", "/bin/sh", "-c",
                  "echo \"rank=$BRAID_RANK size=$BRAID_WORLD_SIZE local=$BRAID_LOCAL_RANK/"
                  "$BRAID_LOCAL_SIZE idlen=${#BRAID_UNIQUE_ID}\""});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  std::vector<std::string> want;
  for (int i = 0; i < 4; ++i) {
    want.push_back("[" + std::to_string(i) + "] rank=" + std::to_string(i) +
                   " size=4 local=" + std::to_string(i) + "/4 idlen=256");
  }
  EXPECT_EQ(sortedLines(r.out), want);
}

// braidrun keeps two pipes per rank: 30 ranks need more than a soft limit of 24 open files.
// It raises its own limit where the hard limit allows and gives each rank the limit it found.
TEST_F(BraidrunTest, ALowSoftOpenFileLimitIsRaisedForBraidrunOnly) {
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 1024) GTEST_SKIP() << "hard limit";
  rlimit low = saved;
  low.rlim_cur = 24;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  Result r = run({"-np", "30", "/bin/sh", "-c", "ulimit -n"});
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  std::vector<std::string> lines = sortedLines(r.out);
  ASSERT_EQ(lines.size(), 30u) << r.out;
  for (const std::string& l : lines) EXPECT_EQ(l.substr(l.find(' ') + 1), "24") << l;
}

TEST_F(BraidrunTest, AllRanksShareOneUniqueId) {
  Result r = run({"-np", "3", "/bin/sh", "-c", "echo \"$BRAID_UNIQUE_ID\""});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  std::set<std::string> ids;
  for (const std::string& l : lines(r.out)) ids.insert(l.substr(l.find(' ') + 1));
  ASSERT_EQ(ids.size(), 1u) << r.out;
  EXPECT_EQ(ids.begin()->size(), 256u);
}

TEST_F(BraidrunTest, ShortOptionAliasAndSeparator) {
  Result r = run({"-n", "2", "--", "/bin/echo", "hi"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(sortedLines(r.out), (std::vector<std::string>{"[0] hi", "[1] hi"}));
}

TEST_F(BraidrunTest, PrefixesStdoutAndStderrLinesAndFlushesPartialLines) {
  Result r = run({"-np", "2", "/bin/sh", "-c", "echo out; echo err >&2; printf partial"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(sortedLines(r.out),
            (std::vector<std::string>{"[0] out", "[0] partial", "[1] out", "[1] partial"}));
  EXPECT_EQ(sortedLines(r.err), (std::vector<std::string>{"[0] err", "[1] err"}));
  // Lines of one rank keep their order.
  std::vector<std::string> outLines = lines(r.out);
  auto first = std::find(outLines.begin(), outLines.end(), "[0] out");
  auto second = std::find(outLines.begin(), outLines.end(), "[0] partial");
  EXPECT_LT(first, second);
}

// A line of a megabyte (a JSON record) reaches the output whole, prefixed once; and without
// prefixes the bytes pass unchanged.
TEST_F(BraidrunTest, LongLinesStayWhole) {
  const std::string cmd = "head -c 1000000 /dev/zero | tr '\\0' x; echo";
  for (bool prefix : {true, false}) {
    std::vector<std::string> args{"-np", "2", "/bin/sh", "-c", cmd};
    if (!prefix) args.insert(args.begin(), "--no-prefix");
    Result r = run(args);
    ASSERT_EQ(r.exitCode(), 0) << r.err;
    std::vector<std::string> got = lines(r.out);
    ASSERT_EQ(got.size(), 2u) << "prefix " << prefix;
    for (const std::string& l : got) {
      EXPECT_EQ(l.size(), 1000000u + (prefix ? 4 : 0)) << l.substr(0, 8);
      EXPECT_EQ(l.find_first_not_of('x', prefix ? 4 : 0), std::string::npos);
    }
  }
}

// BRAID_LOG_FILE's %r: each rank its own file, and braidrun's own lines (it hosts the
// rendezvous, with no rank) in one named by its pid, not in a "-1" file.
TEST_F(BraidrunTest, LogFilesAreNamedByRankAndBraidrunsByItsPid) {
  const char* example = std::getenv("BRAID_EXAMPLE");
  if (example == nullptr || *example == '\0') GTEST_SKIP() << "BRAID_EXAMPLE is not set";
  ::setenv("BRAID_LOG_FILE", (dir_ / "%r.log").c_str(), 1);
  ::setenv("BRAID_LOG_LEVEL", "INFO", 1);
  pid_t pid = start({"-np", "2", example});
  Result r = finish(pid, Clock::now(), std::chrono::seconds(60));
  ::unsetenv("BRAID_LOG_FILE");
  ::unsetenv("BRAID_LOG_LEVEL");
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
  EXPECT_TRUE(names.count("0.log") == 1 && names.count("1.log") == 1) << r.err;
  EXPECT_EQ(names.count("-1.log"), 0u);
  const std::string own = "p" + std::to_string(pid) + ".log";
  EXPECT_EQ(names.count(own), 1u) << own;
}

// A progress bar's '\r' ends a piece too (it went out only with the next '\n' or at 4 MiB);
// "\r\n" is one line end.
TEST_F(BraidrunTest, CarriageReturnsEndAPiece) {
  Result r = run({"-np", "1", "/bin/sh", "-c", "printf '10%%\\r20%%\\rdone\\r\\nend\\n'"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(r.out, "[0] 10%\r[0] 20%\r[0] done\r\n[0] end\n");
}

TEST_F(BraidrunTest, NoPrefix) {
  Result r = run({"--no-prefix", "-np", "2", "/bin/sh", "-c", "echo out; echo err >&2"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(lines(r.out), (std::vector<std::string>{"out", "out"}));
  EXPECT_EQ(lines(r.err), (std::vector<std::string>{"err", "err"}));
}

TEST_F(BraidrunTest, ArgumentsAfterTheProgramBelongToIt) {
  Result r = run(
      {"-np", "2", "/bin/sh", "-c", "echo \"$#:$*\"", "sh", "-n", "5", "--timeout", "3", "-np"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(sortedLines(r.out),
            (std::vector<std::string>{"[0] 5:-n 5 --timeout 3 -np", "[1] 5:-n 5 --timeout 3 -np"}));
}

TEST_F(BraidrunTest, ProgramIsFoundOnPath) {
  Result r = run({"-np", "1", "echo", "found"});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(r.out, "[0] found\n");
}

TEST_F(BraidrunTest, EnvOptionSetsVariables) {
  Result r = run({"-np", "2", "--env", "BRAIDRUN_TEST_A=hello", "--env", "BRAIDRUN_TEST_B=x=y",
                  "/bin/sh", "-c", "echo \"$BRAIDRUN_TEST_A $BRAIDRUN_TEST_B\""});
  ASSERT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(sortedLines(r.out), (std::vector<std::string>{"[0] hello x=y", "[1] hello x=y"}));
}

TEST_F(BraidrunTest, BadCommandLinesAreRejected) {
  EXPECT_NE(run({"-np", "0", "true"}).exitCode(), 0);
  EXPECT_NE(run({"true"}).exitCode(), 0);      // no -np
  EXPECT_NE(run({"-np", "2"}).exitCode(), 0);  // no program
  EXPECT_NE(run({"-np", "2", "--env", "NOEQUALS", "true"}).exitCode(), 0);
  EXPECT_NE(run({"-np", "2", "--bogus", "true"}).exitCode(), 0);
  EXPECT_EQ(run({"--help"}).exitCode(), 0);
}

TEST_F(BraidrunTest, MissingProgramExits127) {
  Result r = run({"-np", "2", "/nonexistent/braidrun-test-program"});
  EXPECT_EQ(r.exitCode(), 127);
  EXPECT_NE(r.err.find("/nonexistent/braidrun-test-program"), std::string::npos) << r.err;
}

TEST_F(BraidrunTest, FailingRankStopsTheOthers) {
  // Rank 1 fails; rank 0 is a sleep itself, rank 2 a shell waiting for a sleep it started (the
  // sleep must die with it: it is in the rank's process group).
  std::string script =
      "case $BRAID_RANK in "
      "0) echo $$ > \"$D/pid.0\"; exec sleep 100;; "
      "1) echo $$ > \"$D/pid.1\"; sleep 1; echo failing; exit 3;; "
      "2) sleep 100 & echo $! > \"$D/pid.2\"; wait;; "
      "esac";
  auto began = Clock::now();
  pid_t pid = start({"-np", "3", "--env", "D=" + dir_.string(), "/bin/sh", "-c", script});
  std::vector<pid_t> pids = rankPids(3);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 3) << r.err;
  EXPECT_LT(r.seconds, 5.0);
  EXPECT_NE(r.err.find("rank 1 exited with code 3"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("[1] failing"), std::string::npos) << r.out;
  expectAllGone(pids);
}

TEST_F(BraidrunTest, RankKilledBySignal) {
  std::string script =
      "echo $$ > \"$D/pid.$BRAID_RANK\"; "
      "if [ \"$BRAID_RANK\" = 1 ]; then sleep 0.5; kill -KILL $$; fi; exec sleep 100";
  auto began = Clock::now();
  pid_t pid = start({"-np", "2", "--env", "D=" + dir_.string(), "/bin/sh", "-c", script});
  std::vector<pid_t> pids = rankPids(2);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 128 + SIGKILL) << r.err;
  EXPECT_NE(r.err.find("rank 1 killed by signal 9"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 4.0);
  expectAllGone(pids);
}

TEST_F(BraidrunTest, TimeoutKillsTheJob) {
  auto began = Clock::now();
  pid_t pid = start({"-np", "2", "--timeout", "1", "--env", "D=" + dir_.string(), "/bin/sh", "-c",
                     "echo $$ > \"$D/pid.$BRAID_RANK\"; exec sleep 100"});
  std::vector<pid_t> pids = rankPids(2);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 124) << r.err;
  EXPECT_NE(r.err.find("timeout"), std::string::npos) << r.err;
  EXPECT_GE(r.seconds, 0.9);
  EXPECT_LT(r.seconds, 4.0);
  expectAllGone(pids);
}

TEST_F(BraidrunTest, RanksIgnoringSigtermGetSigkillAfterTheGrace) {
  auto began = Clock::now();
  pid_t pid =
      start({"-np", "2", "--timeout", "0.5", "--kill-grace", "0.5", "--env", "D=" + dir_.string(),
             "/bin/sh", "-c", "trap '' TERM; echo $$ > \"$D/pid.$BRAID_RANK\"; exec sleep 100"});
  std::vector<pid_t> pids = rankPids(2);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 124) << r.err;
  EXPECT_NE(r.err.find("SIGKILL"), std::string::npos) << r.err;
  EXPECT_GE(r.seconds, 0.9);
  EXPECT_LT(r.seconds, 4.0);
  expectAllGone(pids);
}

TEST_F(BraidrunTest, SigtermToBraidrunEndsTheRanks) {
  auto began = Clock::now();
  pid_t pid = start({"-np", "3", "--env", "D=" + dir_.string(), "/bin/sh", "-c",
                     "echo $$ > \"$D/pid.$BRAID_RANK\"; exec sleep 100"});
  std::vector<pid_t> pids = rankPids(3);
  ASSERT_EQ(pids.size(), 3u);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 128 + SIGTERM) << r.err;
  expectAllGone(pids);
}

TEST_F(BraidrunTest, SigintIsForwardedAndRanksMayExitCleanly) {
  // The ranks catch SIGINT and exit on their own: braidrun still reports the interruption.
  auto began = Clock::now();
  pid_t pid = start({"-np", "2", "--env", "D=" + dir_.string(), "/bin/sh", "-c",
                     "trap 'echo caught; exit 0' INT; echo $$ > \"$D/pid.$BRAID_RANK\"; "
                     "while :; do sleep 0.05; done"});
  std::vector<pid_t> pids = rankPids(2);
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  Result r = finish(pid, began, std::chrono::seconds(8));
  EXPECT_EQ(r.exitCode(), 128 + SIGINT) << r.err;
  EXPECT_EQ(sortedLines(r.out), (std::vector<std::string>{"[0] caught", "[1] caught"}));
  expectAllGone(pids);
}

TEST_F(BraidrunTest, ExitCodeZeroWhenAllRanksSucceedAtDifferentTimes) {
  Result r = run({"-np", "3", "/bin/sh", "-c", "sleep 0.$BRAID_RANK; echo done"});
  EXPECT_EQ(r.exitCode(), 0) << r.err;
  EXPECT_EQ(lines(r.out).size(), 3u);
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace braid

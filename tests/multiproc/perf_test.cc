// braid-perf itself: the nccl-tests table parses, sizes step as asked, #wrong catches an
// injected corruption (non-zero exit), JSON lines hold every row, a dying rank fails the job.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness/shell.h"

namespace {

using braid::test::sh;
using braid::test::Shell;

class Perf : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* run = std::getenv("BRAIDRUN");
    const char* perf = std::getenv("BRAID_PERF");
    if (run == nullptr || perf == nullptr) GTEST_SKIP() << "BRAIDRUN/BRAID_PERF not set";
    launcher_ = std::string(run) + " -np 3 --no-prefix --timeout 60 ";
    perf_ = perf;
  }
  // Data rows of the table: lines that do not start with '#'.
  static std::vector<std::vector<std::string>> rows(const std::string& out) {
    std::vector<std::vector<std::string>> v;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#' || line.find_first_not_of(' ') == std::string::npos) {
        continue;
      }
      std::istringstream ls(line);
      std::vector<std::string> cols;
      std::string c;
      while (ls >> c) cols.push_back(c);
      // Table rows start with the size; anything else (launcher messages) is not a row.
      if (!cols.empty() && cols[0].find_first_not_of("0123456789") == std::string::npos) {
        v.push_back(cols);
      }
    }
    return v;
  }
  std::string launcher_, perf_;
};

TEST_F(Perf, TableAndFooterParseAndSizesStepByFactor) {
  Shell r = sh(launcher_ + perf_ + " allreduce -b 8 -e 8K -f 4 -n 3 -w 1");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 6u) << r.out;  // 8 32 128 512 2048 8192
  size_t want = 8;
  for (const auto& cols : rs) {
    ASSERT_EQ(cols.size(), 13u) << r.out;  // size count type redop root + 4 + 4
    EXPECT_EQ(std::stoull(cols[0]), want);
    EXPECT_EQ(std::stoull(cols[1]), want / 4);
    EXPECT_EQ(cols[2], "float");  // nccl-tests' name
    EXPECT_EQ(cols[3], "sum");
    EXPECT_EQ(cols[8], "0");   // out-of-place #wrong
    EXPECT_EQ(cols[12], "0");  // in-place #wrong
    EXPECT_GT(std::stod(cols[5]), 0.0);
    want *= 4;
  }
  EXPECT_NE(r.out.find("# Out of bounds values : 0 OK"), std::string::npos);
  EXPECT_NE(r.out.find("# Avg bus bandwidth"), std::string::npos);
}

TEST_F(Perf, StepBytesAndAliasName) {
  // The nccl-tests name (a symlink next to braid-perf) picks the collective.
  std::string alias = perf_.substr(0, perf_.rfind('/') + 1) + "all_gather_perf";
  Shell r = sh(launcher_ + alias + " -b 3K -e 9K -i 3K -n 2 -w 1 -d int8");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 3u) << r.out;
  EXPECT_EQ(rs[0][0], "3072");
  EXPECT_EQ(rs[2][0], "9216");
  EXPECT_EQ(rs[1][3], "none");
  // count is what each call passes, as nccl-tests prints it: size / ranks for allgather.
  EXPECT_EQ(rs[0][1], "1024");
  EXPECT_EQ(rs[2][1], "3072");
}

// CI gates on nccl-tests' NCCL_TESTS_MIN_BW (GB/s): an average bus bandwidth under 0.9 of it
// says FAILED and exits 1; -C 1 names the time columns "cputime"; collectives are also taken
// in nccl-tests' spelling (all_reduce).
TEST_F(Perf, MinimumBandwidthCpuTimeHeaderAndUnderscoredNames) {
  Shell low = sh("NCCL_TESTS_MIN_BW=100000 " + launcher_ + perf_ +
                 " all_reduce -b 1K -e 1K -n 2 -w 1 -C 1");
  EXPECT_EQ(low.exitCode, 1) << low.out;
  EXPECT_EQ(rows(low.out).size(), 1u) << low.out;
  EXPECT_NE(low.out.find("cputime"), std::string::npos) << low.out;
  const size_t avg = low.out.find("# Avg bus bandwidth");
  ASSERT_NE(avg, std::string::npos) << low.out;
  EXPECT_NE(low.out.find("FAILED", avg), std::string::npos) << low.out;
  Shell ok = sh("NCCL_TESTS_MIN_BW=0.000001 " + launcher_ + perf_ + " all_gather -b 1K -e 1K -n 2");
  EXPECT_EQ(ok.exitCode, 0) << ok.out;
  EXPECT_NE(ok.out.find(" OK\n#", ok.out.find("# Avg bus bandwidth")), std::string::npos) << ok.out;
}

// nccl-tests' long option names; -b 0 with a factor goes on from 1 byte instead of stopping.
TEST_F(Perf, NcclTestsLongOptionsAndAFactorFromZero) {
  Shell r = sh(launcher_ + perf_ +
               " reducescatter --minbytes 0 --maxbytes 96 --stepfactor 4 --iters 2 "
               "--warmup_iters 1 --op max --datatype int32 --check 1 --average 1 --blocking 0");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 5u) << r.out;  // 0 1 4 16 64
  EXPECT_EQ(rs[0][0], "0");
  // 64 B of int32 over 3 ranks: 5 per rank, rounded down to 16 bytes as nccl-tests does.
  EXPECT_EQ(rs[4][0], "48");
  EXPECT_EQ(rs[4][1], "4");
  EXPECT_EQ(rs[4][2], "int32");
  EXPECT_EQ(rs[4][3], "max");
}

TEST_F(Perf, WithoutAFactorSizesGrowByOneMebibyteAsInNcclTests) {
  // nccl-tests' defaults: -f 1 and -i 1M, so `-b 8 -e 2M` runs 8, 8+1M and 8+2M... up to -e.
  Shell r = sh(launcher_ + perf_ + " allreduce -b 8 -e 2M -n 1 -w 0");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 2u) << r.out;
  EXPECT_EQ(rs[0][0], "8");
  EXPECT_EQ(rs[1][0], "1048584");
  EXPECT_NE(r.out.find("step: 1048576(bytes)"), std::string::npos) << r.out;
  // A factor above 1 wins over -i, whatever the order of the flags.
  r = sh(launcher_ + perf_ + " allreduce -f 4 -i 3 -b 8 -e 128 -n 1 -w 0");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(rows(r.out).size(), 3u) << r.out;  // 8 32 128
  r = sh(launcher_ + perf_ + " allreduce -b 8 -e 64 -f -2");
  EXPECT_EQ(r.exitCode, 2) << r.out;
  EXPECT_NE(r.out.find("-f must be > 1"), std::string::npos) << r.out;
}

TEST_F(Perf, CyclesRepeatTheSweep) {
  Shell r = sh(launcher_ + perf_ + " allreduce -b 8 -e 64 -f 8 -n 1 -w 0 -N 3");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 6u) << r.out;  // 8 64, three times
  EXPECT_EQ(rs[4][0], "8");
  EXPECT_EQ(rs[5][0], "64");
}

// -m as in nccl-tests: each timed iteration fuses that many calls in one group (the time is per
// call); braid-perf used to accept and ignore it, timing single calls.
TEST_F(Perf, AggregatedIterationsRunInGroups) {
  Shell r = sh(launcher_ + perf_ + " allreduce -b 8K -e 8K -n 3 -w 1 -m 3");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("agg iters: 3"), std::string::npos) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 1u) << r.out;
  EXPECT_EQ(rs[0][8], "0") << r.out;
  // Checked, at a size the ring runs: each fused call has its own buffers (calls of one group
  // must not write the same one), so nothing is counted wrong (it was, in and out of place).
  Shell big = sh(launcher_ + perf_ + " allreduce -b 256K -e 256K -n 2 -w 1 -m 3 -c 1 -o prod");
  ASSERT_EQ(big.exitCode, 0) << big.out;
  auto brs = rows(big.out);
  ASSERT_EQ(brs.size(), 1u) << big.out;
  EXPECT_EQ(brs[0][8], "0") << big.out;
  EXPECT_EQ(brs[0][12], "0") << big.out;
  Shell bad = sh(launcher_ + perf_ + " allreduce -b 8 -e 8 -m 0");
  EXPECT_NE(bad.exitCode, 0) << bad.out;
  EXPECT_NE(bad.out.find("-m: '0' is not"), std::string::npos) << bad.out;
}

// Values nccl-tests users mistype, and runs that cannot fit: each fails before any call with
// a message naming the flag (atoi made "-r all" root 0; "inf" read as "-b must not exceed -e";
// buffers larger than memory aborted with std::bad_alloc, SIGABRT, on every rank).
TEST_F(Perf, BadValuesAndRunsThatCannotFitFailClearly) {
  const std::pair<const char*, const char*> kBad[] = {
      {"-b 8 -e inf", "-e: bad size 'inf'"},
      {"-b 8 -e 1e19", "-e: bad size '1e19'"},
      {"-r all", "-r: 'all' is not a rank number"},
      {"-n 2x", "-n: '2x' is not"},
      {"-f abc", "-f: 'abc' is not a step factor"},
      {"-b 9 -e 8", "minbytes 9) must not exceed -e (maxbytes 8)"},
  };
  for (const auto& [flags, text] : kBad) {
    Shell r = sh(perf_ + " broadcast " + flags);
    EXPECT_EQ(r.exitCode, 2) << flags << "\n" << r.out;
    EXPECT_NE(r.out.find(text), std::string::npos) << flags << "\n" << r.out;
  }
  // A petabyte of receive buffers: refused on every rank alike, no abort.
  Shell big = sh(launcher_ + perf_ + " allreduce -b 1G -e 1G -m 1000000 -n 1 -w 0");
  EXPECT_NE(big.exitCode, 0) << big.out;
  EXPECT_EQ(big.out.find("bad_alloc"), std::string::npos) << big.out;
  EXPECT_EQ(big.out.find("SIGABRT"), std::string::npos) << big.out;
  EXPECT_NE(big.out.find("do not fit"), std::string::npos) << big.out;
  // An unwritable -J file: known before the first call, every rank stops alike.
  Shell json = sh(launcher_ + perf_ + " allreduce -b 8 -e 8 -J /nonexistent-dir/x.json");
  EXPECT_EQ(json.exitCode, 2) << json.out;
  EXPECT_NE(json.out.find("cannot write the -J file /nonexistent-dir/x.json"), std::string::npos)
      << json.out;
  EXPECT_EQ(json.out.find("died"), std::string::npos) << json.out;
}

TEST_F(Perf, DashTIsNcclTestsTimeoutAndTimePerSizeAdaptsTheIterations) {
  // -T 3 (nccl-tests' timeout): rank 1 stops (SIGSTOP) two seconds in, in the middle of a long
  // run; the others' wait for it ends 3 s later with the library's timeout error, not at the
  // default BRAID_TIMEOUT_MS (300 s), and the run fails.
  const auto t0 = std::chrono::steady_clock::now();
  Shell r =
      sh(launcher_ + "sh -c 'if [ \"$BRAID_RANK\" = 1 ]; then (sleep 2; kill -STOP $$) & fi; " +
         "exec " + perf_ + " allreduce -b 64K -e 64K -n 100000000 -w 1 -T 3'");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("timed out after 3000 ms"), std::string::npos) << r.out;
  EXPECT_LT(s, 40) << r.out;
  // The calls queued on braid-perf's stream behind the one that timed out fail for the same
  // reason: each rank says so once, not once per queued call (hundreds).
  size_t warns = 0;
  for (size_t at = r.out.find("WARN COLL"); at != std::string::npos;
       at = r.out.find("WARN COLL", at + 1)) {
    ++warns;
  }
  EXPECT_LE(warns, 4u) << r.out.substr(0, 4000);
  // The adaptive iteration count has its own flag.
  Shell a = sh(launcher_ + perf_ + " allreduce -b 8 -e 8K -f 32 -w 1 --time-per-size 0.05");
  ASSERT_EQ(a.exitCode, 0) << a.out;
  EXPECT_NE(a.out.find("(adaptive, 0.05 s per size)"), std::string::npos) << a.out;
  EXPECT_EQ(rows(a.out).size(), 3u) << a.out;
  Shell bad = sh(launcher_ + perf_ + " allreduce -b 8 -e 8 -T -1");
  EXPECT_NE(bad.exitCode, 0) << bad.out;
  EXPECT_NE(bad.out.find("-T must be 0"), std::string::npos) << bad.out;
}

// Buffers are sized for the largest size of each type (as nccl-tests does), not -e elements of
// the widest type: -e 64M with every type once took 1 GiB per rank (64M elements x 8 bytes x
// send and receive), all of it touched.
TEST_F(Perf, BuffersHoldTheLargestSizeNotThatManyElements) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string cmd =
        launcher_ + perf_ + " allreduce -b 64M -e 64M -n 1 -w 0 -c 0 -d all >/dev/null";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  rusage ru{};
  ASSERT_EQ(wait4(pid, &st, 0, &ru), pid);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  // The largest rank's peak (ru_maxrss covers the reaped descendants): 2 x 64 MiB of buffers
  // and the library, against 1 GiB before.
  EXPECT_LT(ru.ru_maxrss, 320 * 1024) << "peak resident KiB of a rank";
  EXPECT_GT(ru.ru_maxrss, 100 * 1024) << "the buffers were not even touched?";
}

TEST_F(Perf, InjectedCorruptionIsCountedAndFailsTheRun) {
  Shell r = sh(launcher_ + perf_ + " allreduce -b 1K -e 1K -n 2 -w 1 --corrupt-for-test");
  EXPECT_NE(r.exitCode, 0) << r.out;
  auto rs = rows(r.out);
  ASSERT_EQ(rs.size(), 1u) << r.out;
  EXPECT_NE(rs[0][8], "0") << r.out;
  EXPECT_NE(r.out.find("FAILED"), std::string::npos);
}

TEST_F(Perf, JsonLinesHoldEveryRow) {
  char path[] = "/tmp/braid-perf-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  Shell r = sh(launcher_ + perf_ +
               " reducescatter -b 96 -e 384 -f 2 -n 2 -w 0 -o all -d float -J " + path);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  std::ifstream in(path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    for (const char* key : {"\"coll\":\"reducescatter\"", "\"size\":", "\"redop\":",
                            "\"out_of_place\":{\"time_us\":", "\"busbw_gbs\":", "\"wrong\":0"}) {
      EXPECT_NE(line.find(key), std::string::npos) << key << " missing in " << line;
    }
    EXPECT_EQ(line.front(), '{');
    EXPECT_EQ(line.back(), '}');
  }
  EXPECT_EQ(lines, 3 * 5);  // 3 sizes x 5 ops
  std::remove(path);
}

TEST_F(Perf, ADyingRankFailsTheJobQuickly) {
  // BRAID_TIMEOUT_MS bounds the wait; the launcher reports the dead rank and exits non-zero.
  Shell r = sh("BRAID_TIMEOUT_MS=10000 " + launcher_ +
               "sh -c 'if [ \"$BRAID_RANK\" = 1 ]; then exit 7; fi; exec " + perf_ +
               " allreduce -b 1M -e 1M -n 1000'");
  EXPECT_NE(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("rank 1 exited with code 7"), std::string::npos) << r.out;
}

TEST_F(Perf, MpirunLaunchesTwoRanksAndBroadcastsTheIdWithMpi) {
  if (std::getenv("BRAID_PERF_MPI") == nullptr) GTEST_SKIP() << "braid-perf built without MPI";
  if (sh("command -v mpirun").exitCode != 0) GTEST_SKIP() << "no mpirun";
  // Open MPI refuses root without these; --oversubscribe: 2 ranks may exceed the slots here.
  // Its TCP on loopback only: tests running beside this one add and remove interfaces
  // (setup_test's veth rails), which Open MPI otherwise picks up and fails to bind to.
  Shell r =
      sh("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun -np 2 "
         "--oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo "
         "--mca oob_tcp_if_include lo " +
         perf_ + " allreduce -b 8 -e 64K -f 8 -n 3 -w 1");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("nranks 2"), std::string::npos) << r.out;
  EXPECT_EQ(rows(r.out).size(), 5u) << r.out;  // 8, 64, 512, 4K, 32K
  EXPECT_NE(r.out.find("# Out of bounds values : 0 OK"), std::string::npos) << r.out;
}

}  // namespace

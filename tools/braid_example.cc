// braid-example: a first job for a new installation, through the public C API only.
//
//   braidrun -np 4 braid-example [-n COUNT] [-i ITERS]
//
// Runs an allreduce (float32 sum of COUNT elements) and an all-to-all (int32, COUNT/nranks
// elements per peer), checks every element exactly, prints each rank's times, and on rank 0 a
// table with the slowest rank's time and the algorithm bandwidth (buffer bytes / time). Exits
// non-zero on any braid error or wrong data.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "braid/braid.h"

namespace braid {
namespace {

struct Args {
  size_t count = size_t{1} << 20;
  int iters = 5;
};

braidComm_t gComm = nullptr;
int gRank = -1;

// Reports a failed call and ends the process (the launcher stops the other ranks).
void check(braidResult_t r, const char* what) {
  if (r == braidSuccess) return;
  std::string who = gRank >= 0 ? "rank " + std::to_string(gRank) : "braid-example";
  std::fprintf(stderr, "%s: %s failed: %s: %s\n", who.c_str(), what, braidGetErrorString(r),
               braidGetLastError(gComm));
  std::fflush(stderr);
  if (gComm != nullptr) (void)braidCommAbort(gComm);
  std::exit(1);
}
#define CHECK(call) check((call), #call)

void usage(const char* prog) {
  std::printf(
      "usage: %s [-n|--count COUNT] [-i|--iters ITERS]\n"
      "  -n, --count  allreduce elements (float32); the all-to-all sends COUNT/nranks int32\n"
      "               elements to each peer (default 1048576)\n"
      "  -i, --iters  timed iterations of each operation (default 5)\n"
      "Start it with a launcher, e.g. braidrun -np 4 %s\n",
      prog, prog);
}

bool parseNumber(const char* text, long long min, long long max, long long* out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) return false;
  *out = v;
  return true;
}

// Returns -1 to go on, otherwise the exit code.
int parseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(argv[0]);
      return 0;
    }
    long long v = 0;
    bool isCount = a == "-n" || a == "--count";
    bool isIters = a == "-i" || a == "--iters";
    if ((isCount || isIters) && i + 1 < argc) {
      const char* text = argv[++i];
      if (isCount && parseNumber(text, 1, int64_t{1} << 32, &v)) {
        args->count = static_cast<size_t>(v);
        continue;
      }
      if (isIters && parseNumber(text, 1, 1000000, &v)) {
        args->iters = static_cast<int>(v);
        continue;
      }
      std::fprintf(stderr, "%s: bad value '%s' for %s\n", argv[0], text, a.c_str());
      return 2;
    }
    std::fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", argv[0], a.c_str());
    return 2;
  }
  return -1;
}

// Small integers: every partial sum is an integer below 2^24, so float addition is exact in any
// order and the result can be compared with ==.
float allreduceInput(int rank, size_t i) {
  return static_cast<float>((static_cast<size_t>(rank) + i) % 16);
}

float allreduceExpected(int nranks, size_t i) {
  int64_t sum = 0;
  for (int r = 0; r < nranks; ++r) sum += static_cast<int64_t>((static_cast<size_t>(r) + i) % 16);
  return static_cast<float>(sum);
}

// What rank `from` sends to rank `to` at element j of its block for `to`.
int32_t alltoallValue(int from, int to, size_t j) {
  uint32_t v = static_cast<uint32_t>(from) * 2654435761u + static_cast<uint32_t>(to) * 40503u +
               static_cast<uint32_t>(j);
  int32_t out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

// Counts wrong elements and describes the first one.
int64_t verifyAllreduce(const std::vector<float>& recv, int nranks) {
  int64_t wrong = 0;
  for (size_t i = 0; i < recv.size(); ++i) {
    float want = allreduceExpected(nranks, i);
    if (recv[i] != want) {
      if (wrong == 0) {
        std::fprintf(stderr, "rank %d: allreduce element %zu is %g, expected %g\n", gRank, i,
                     static_cast<double>(recv[i]), static_cast<double>(want));
      }
      ++wrong;
    }
  }
  return wrong;
}

int64_t verifyAlltoall(const std::vector<int32_t>& recv, int nranks, size_t perPeer) {
  int64_t wrong = 0;
  for (int from = 0; from < nranks; ++from) {
    for (size_t j = 0; j < perPeer; ++j) {
      int32_t got = recv[static_cast<size_t>(from) * perPeer + j];
      int32_t want = alltoallValue(from, gRank, j);
      if (got != want) {
        if (wrong == 0) {
          std::fprintf(stderr,
                       "rank %d: all-to-all element %zu from rank %d is %" PRId32
                       ", expected %" PRId32 "\n",
                       gRank, j, from, got, want);
        }
        ++wrong;
      }
    }
  }
  return wrong;
}

// Runs op once to check it, then times iters runs; returns microseconds per run.
template <typename Op>
double timeOp(int iters, Op op) {
  op();
  CHECK(braidBarrier(gComm, nullptr));
  auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < iters; ++k) op();
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / iters;
}

int exampleMain(int argc, char** argv) {
  Args args;
  if (int rc = parseArgs(argc, argv, &args); rc >= 0) return rc;

  CHECK(braidCommInitFromEnv(&gComm));
  int nranks = 0;
  CHECK(braidCommUserRank(gComm, &gRank));
  CHECK(braidCommCount(gComm, &nranks));
  int version = 0;
  CHECK(braidGetVersion(&version));
  if (gRank == 0) {
    std::printf(
        "braid %d.%d.%d: %d ranks, allreduce of %zu floats, all-to-all of %zu ints per "
        "peer, %d iterations\n",
        version / 10000, version / 100 % 100, version % 100, nranks, args.count,
        std::max<size_t>(1, args.count / static_cast<size_t>(nranks)), args.iters);
    std::fflush(stdout);
  }

  // Allreduce: float32 sum.
  std::vector<float> arSend(args.count), arRecv(args.count);
  for (size_t i = 0; i < args.count; ++i) arSend[i] = allreduceInput(gRank, i);
  std::fill(arRecv.begin(), arRecv.end(), std::numeric_limits<float>::quiet_NaN());
  int64_t wrong = 0;
  double arUs = timeOp(args.iters, [&] {
    CHECK(braidAllReduce(arSend.data(), arRecv.data(), args.count, braidFloat32, braidSum, gComm,
                         nullptr));
  });
  wrong += verifyAllreduce(arRecv, nranks);

  // All-to-all: int32, perPeer elements to each rank.
  size_t perPeer = std::max<size_t>(1, args.count / static_cast<size_t>(nranks));
  size_t total = perPeer * static_cast<size_t>(nranks);
  std::vector<int32_t> aaSend(total), aaRecv(total, -1);
  for (int to = 0; to < nranks; ++to) {
    for (size_t j = 0; j < perPeer; ++j) {
      aaSend[static_cast<size_t>(to) * perPeer + j] = alltoallValue(gRank, to, j);
    }
  }
  double aaUs = timeOp(args.iters, [&] {
    CHECK(braidAllToAll(aaSend.data(), aaRecv.data(), perPeer, braidInt32, gComm, nullptr));
  });
  wrong += verifyAlltoall(aaRecv, nranks, perPeer);

  std::printf("rank %d: allreduce %.1f us, all-to-all %.1f us, %s\n", gRank, arUs, aaUs,
              wrong == 0 ? "data OK" : "DATA WRONG");
  std::fflush(stdout);

  // The slowest rank's times and the total number of wrong elements.
  double times[2] = {arUs, aaUs}, slowest[2] = {0, 0};
  CHECK(braidAllReduce(times, slowest, 2, braidFloat64, braidMax, gComm, nullptr));
  int64_t wrongAll = 0;
  CHECK(braidAllReduce(&wrong, &wrongAll, 1, braidInt64, braidSum, gComm, nullptr));

  if (gRank == 0) {
    struct Row {
      const char* op;
      size_t bytes;
      double us;
    } rows[] = {{"allreduce", args.count * sizeof(float), slowest[0]},
                {"alltoall", total * sizeof(int32_t), slowest[1]}};
    std::printf("%-10s %14s %12s %12s\n", "op", "bytes", "time(us)", "algbw(GB/s)");
    for (const Row& r : rows) {
      double gbs = r.us > 0 ? static_cast<double>(r.bytes) / (r.us * 1e3) : 0;
      std::printf("%-10s %14zu %12.1f %12.3f\n", r.op, r.bytes, r.us, gbs);
    }
    if (wrongAll == 0) {
      std::printf("OK\n");
    } else {
      std::printf("FAILED: %" PRId64 " wrong elements\n", wrongAll);
    }
    std::fflush(stdout);
  }
  CHECK(braidCommDestroy(gComm));
  gComm = nullptr;
  return wrongAll == 0 ? 0 : 1;
}

}  // namespace
}  // namespace braid

int main(int argc, char** argv) { return braid::exampleMain(argc, argv); }

// The benchmark driver shared by mpi_bench and gloo_bench (see bench_common.h). Sizes, counts,
// bus-bandwidth factors and data checks mirror benchmarks/perf/colls.cc exactly, so that the
// numbers of the three implementations can be put side by side.
#include "benchmarks/compare/bench_common.h"

#include <fmt/format.h>
#include <getopt.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "benchmarks/perf/perf.h"
#include "src/core/dtype.h"

namespace braid::compare {

void die(const char* prog, const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", prog, msg.c_str());
  std::exit(2);
}

// Every table entry comes from braid-perf's (benchmarks/perf/colls.cc), so sizes, counts,
// bus-bandwidth factors and data checks are the same code.
const perf::Coll& perfColl(Coll c) {
  static const char* const kNames[] = {"allreduce", "allgather", "reducescatter", "alltoall",
                                       "broadcast"};
  return *perf::findColl(kNames[static_cast<int>(c)]);
}

const char* collName(Coll c) { return perfColl(c).name; }
bool reduces(Coll c) { return perfColl(c).reduces; }
bool rooted(Coll c) { return perfColl(c).rooted; }
double busFactor(Coll c, int n) { return perfColl(c).busFactor(n); }
size_t countFor(Coll c, size_t bytes, size_t esz, int n) {
  return perf::countFor(perfColl(c), bytes, esz, n);
}
size_t bytesFor(Coll c, size_t count, size_t esz, int n) {
  return perf::bytesFor(perfColl(c), count, esz, n);
}
size_t sendElems(Coll c, size_t count, int n) { return perfColl(c).sendElems(count, n); }
size_t recvElems(Coll c, size_t count, int n) { return perfColl(c).recvElems(count, n); }

// ---- command line ----

namespace {

braidDataType_t parseType(const char* prog, const std::string& s) {
  static const std::pair<const char*, braidDataType_t> kNames[] = {
      {"float32", braidFloat32}, {"float", braidFloat32}, {"float64", braidFloat64},
      {"double", braidFloat64},  {"int32", braidInt32},   {"int", braidInt32},
      {"int64", braidInt64}};
  for (const auto& [name, t] : kNames) {
    if (s == name) return t;
  }
  die(prog, fmt::format("unsupported datatype '{}' (float32, float64, int32, int64)", s));
}

Coll parseColl(const char* prog, const std::string& s) {
  static const std::pair<const char*, Coll> kNames[] = {
      {"allreduce", Coll::kAllReduce},         {"all_reduce", Coll::kAllReduce},
      {"allgather", Coll::kAllGather},         {"all_gather", Coll::kAllGather},
      {"reducescatter", Coll::kReduceScatter}, {"reduce_scatter", Coll::kReduceScatter},
      {"alltoall", Coll::kAllToAll},           {"broadcast", Coll::kBroadcast}};
  for (const auto& [name, c] : kNames) {
    if (s == name) return c;
  }
  die(prog, fmt::format("unknown collective '{}'", s));
}

void usage(const char* prog, bool gloo) {
  std::printf(
      "usage: %s COLL [flags]\n"
      "COLL: allreduce allgather reduce_scatter (reducescatter) alltoall broadcast\n"
      "  -b minbytes  -e maxbytes  -f stepfactor  -i stepbytes  -n iters  -w warmup iters\n"
      "  -c check (0/1, default 1)  -d dtype (float32 float64 int32 int64)  -o op (sum)\n"
      "  -r root (broadcast)  -J FILE (JSON lines)  -T timeout: seconds a call may take\n"
      "  before the rank exits with an error (0: none)  --time-per-size SECONDS (adapts -n)\n"
      "Sizes as braid-perf (nccl-tests): per-rank bytes for allreduce and broadcast, the\n"
      "per-rank total for allgather, reduce_scatter and alltoall. Times are the slowest rank's.\n",
      prog);
  if (gloo) {
    std::printf(
        "  --algo ring_chunked|halving_doubling (allreduce)  --timeout SECONDS (default 300)\n"
        "  --store DIR (FileStore; default $BRAID_COMPARE_STORE or /tmp/braid-compare-store)\n"
        "  --run-id ID (key prefix; default from $BRAID_COMPARE_RUN_ID, braidrun's\n"
        "  BRAID_UNIQUE_ID or Open MPI's job id)\n"
        "Rank and size: BRAID_RANK/BRAID_WORLD_SIZE (braidrun) or OMPI_COMM_WORLD_RANK/SIZE.\n"
        "Address: $GLOO_HOST (default 127.0.0.1) or interface $GLOO_IFACE.\n");
  }
}

}  // namespace

Options parseArgs(int argc, char** argv, const char* prog, bool gloo) {
  if (argc < 2 || argv[1][0] == '-') {
    usage(prog, gloo);
    std::exit(argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)
                  ? 0
                  : 2);
  }
  Options o;
  o.coll = parseColl(prog, argv[1]);
  static const option kLong[] = {
      {"algo", required_argument, nullptr, 1000},
      {"store", required_argument, nullptr, 1001},
      {"run-id", required_argument, nullptr, 1002},
      {"timeout", required_argument, nullptr, 1003},
      {"corrupt-for-test", no_argument, nullptr, 999},
      {"time-per-size", required_argument, nullptr, perf::kTimePerSizeFlag},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0}};
  optind = 2;
  int c;
  while ((c = getopt_long(argc, argv, "b:e:f:i:n:w:c:d:o:r:J:T:h", kLong, nullptr)) != -1) {
    if (c >= 1000 && !gloo) die(prog, "--algo, --store, --run-id, --timeout are gloo_bench flags");
    std::string err;
    if (perf::applyCommonFlag(c, optarg, &o, &err)) {
      if (!err.empty()) die(prog, err);
      continue;
    }
    switch (c) {
      case 'd':
        o.dtype = parseType(prog, optarg);
        break;
      case 'o':
        if (std::strcmp(optarg, "sum") != 0) die(prog, "only -o sum is supported");
        break;
      case 'r':
        o.root = std::atoi(optarg);
        break;
      case 1000:
        o.algo = optarg;
        if (o.algo != "ring_chunked" && o.algo != "halving_doubling") {
          die(prog,
              fmt::format("--algo must be ring_chunked or halving_doubling, not '{}'", o.algo));
        }
        break;
      case 1001:
        o.store = optarg;
        break;
      case 1002:
        o.runId = optarg;
        break;
      case 1003:
        o.timeoutS = std::atof(optarg);
        if (!(o.timeoutS > 0) || !std::isfinite(o.timeoutS)) die(prog, "--timeout must be > 0");
        break;
      case 999:
        o.corrupt = true;
        break;
      case 'h':
        usage(prog, gloo);
        std::exit(0);
      default:
        usage(prog, gloo);
        std::exit(2);
    }
  }
  if (optind < argc) die(prog, fmt::format("unexpected argument '{}'", argv[optind]));
  if (std::string err = perf::checkCommonOptions(o); !err.empty()) die(prog, err);
  // -T bounds every Gloo operation too, so that a stuck one fails with Gloo's own message.
  if (gloo && o.timeoutSeconds > 0) o.timeoutS = o.timeoutSeconds;
  return o;
}

// ---- data ----

// braid-perf's data (op sum).
void fillInput(Coll c, void* in, size_t count, braidDataType_t dt, int rank, int n) {
  perf::fillInput(perfColl(c), in, count, dt, braidSum, rank, n);
}

size_t countWrong(Coll c, const void* out, size_t count, braidDataType_t dt, int root, int rank,
                  int n) {
  return perf::countWrong(perfColl(c), out, count, dt, braidSum, root, rank, n);
}

// ---- timing ----

namespace {

using perf::Result;

// -T (nccl-tests' timeout): a thread that ends the rank when one call runs longer. MPI has no
// timeout of its own; a launcher ends the job when one rank exits with an error.
class Watchdog {
 public:
  Watchdog(const char* prog, int rank, double seconds)
      : prog_(prog), rank_(rank), limitNs_(static_cast<int64_t>(seconds * 1e9)) {
    thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() {
    stop_.store(true);
    thread_.join();
  }
  void arm(size_t bytes) {
    bytes_.store(bytes, std::memory_order_relaxed);
    deadlineNs_.store(nowNs() + limitNs_, std::memory_order_release);
  }
  void disarm() { deadlineNs_.store(0, std::memory_order_release); }

 private:
  static int64_t nowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void watch() {
    while (!stop_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const int64_t d = deadlineNs_.load(std::memory_order_acquire);
      if (d != 0 && nowNs() > d) {
        std::fprintf(stderr, "%s: rank %d: a call of %zu bytes did not finish within -T %g s\n",
                     prog_, rank_, bytes_.load(), static_cast<double>(limitNs_) / 1e9);
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  }
  const char* prog_;
  int rank_;
  int64_t limitNs_;
  std::atomic<int64_t> deadlineNs_{0};
  std::atomic<size_t> bytes_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One call, under the watchdog when there is one.
void runOnce(const Op& op, Watchdog* w, size_t bytes) {
  if (w != nullptr) w->arm(bytes);
  op.run();
  if (w != nullptr) w->disarm();
}

double maxOf(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// Warmup, barrier, `iters` back-to-back calls. time_us is elapsed / iters of the slowest rank:
// a collective is not done before every rank is done with it (braid-perf -a 3; the compare
// script runs braid-perf with -a 3 too, so all three report the same statistic).
Result measure(Backend& b, const Options& o, const Op& op, size_t count, size_t bytes, int iters,
               bool check, Watchdog* w) {
  const int rank = b.rank(), n = b.size();
  fillInput(o.coll, op.in, count, o.dtype, rank, n);
  for (int i = 0; i < o.warmup; ++i) runOnce(op, w, bytes);
  b.barrier();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) runOnce(op, w, bytes);
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      iters;
  Result r;
  r.us = maxOf(b.allgather(us));
  r.algbw = r.us > 0 ? static_cast<double>(bytes) / (r.us * 1e3) : 0;  // GB/s (1e9)
  r.busbw = r.algbw * busFactor(o.coll, n);
  if (check) {
    // In place, the timed calls reduced their own output: refill and run once more.
    if (op.inPlace) {
      fillInput(o.coll, op.in, count, o.dtype, rank, n);
      runOnce(op, w, bytes);
    }
    if (o.corrupt && rank == 0 && recvElems(o.coll, count, n) > 0) op.out[0] ^= 0x40;
    double w = static_cast<double>(countWrong(o.coll, op.out, count, o.dtype, o.root, rank, n));
    double total = 0;
    for (double x : b.allgather(w)) total += x;
    r.wrong = static_cast<size_t>(total);
  }
  return r;
}

}  // namespace

int runBench(Backend& b, const Options& o, const char* prog) {
  const int rank = b.rank(), n = b.size();
  const Coll c = o.coll;
  if (rooted(c) && (o.root < 0 || o.root >= n))
    die(prog, fmt::format("-r {} is not a rank", o.root));
  const size_t esz = dtypeSize(o.dtype);
  FILE* json = nullptr;
  if (rank == 0) {
    std::printf("# %s %s: nranks %d impl %s (%s)\n", prog, collName(c), n, b.impl().c_str(),
                b.version().c_str());
    std::printf("%s\n", perf::steppingLine(o).c_str());
    std::printf("# time: the slowest rank's (max over ranks)\n#\n");
    perf::printTableHeader();
    std::fflush(stdout);
    if (!o.jsonPath.empty()) {
      json = std::fopen(o.jsonPath.c_str(), "w");
      if (json == nullptr) die(prog, fmt::format("cannot write {}", o.jsonPath));
    }
  }
  // Buffers sized for the largest case, allocated and pre-faulted (written) once.
  size_t maxCount = countFor(c, o.maxBytes, esz, n) + 1;
  std::vector<char> send(sendElems(c, maxCount, n) * esz + 64, 1);
  std::vector<char> recv(recvElems(c, maxCount, n) * esz + 64, 1);
  std::unique_ptr<Watchdog> watchdog;
  if (o.timeoutSeconds > 0) watchdog = std::make_unique<Watchdog>(prog, rank, o.timeoutSeconds);
  size_t totalWrong = 0;
  double busSum = 0;
  int busRows = 0;
  for (size_t bytes : perf::sizes(o.minBytes, o.maxBytes, o.stepFactor, o.stepBytes)) {
    size_t count = countFor(c, bytes, esz, n);
    size_t realBytes = bytesFor(c, count, esz, n);
    Op op = b.prepare(o, count, send.data(), recv.data());
    int iters = o.iters;
    Result res;
    if (op.valid) {
      if (o.secondsPerSize > 0) {
        // A short timed probe; every rank gets the same (slowest rank's) time, so all agree.
        Result probe = measure(b, o, op, count, realBytes, 2, false, watchdog.get());
        double k = probe.us > 0 ? o.secondsPerSize * 1e6 / probe.us : o.iters;
        iters = static_cast<int>(std::clamp(k, 1.0, 1e6));
      }
      res = measure(b, o, op, count, realBytes, iters, o.check, watchdog.get());
      totalWrong += res.wrong;
      busSum += res.busbw;
      ++busRows;
    }
    const Result na{0, 0, 0, 0, false};
    const Result& oop = op.valid && !op.inPlace ? res : na;
    const Result& ip = op.valid && op.inPlace ? res : na;
    if (rank == 0) {
      perf::printRow(
          perf::Row{b.impl(), collName(c), n, realBytes, count, dtypeName(o.dtype),
                    reduces(c) ? "sum" : "none", rooted(c) ? o.root : -1, iters, oop, ip},
          o.check, json);
    }
  }
  if (rank == 0) {
    perf::printFooter(totalWrong, busSum, busRows);
    if (json != nullptr) std::fclose(json);
  }
  // Everyone waits for rank 0's report: a launcher ends the job at the first non-zero exit.
  b.barrier();
  return totalWrong == 0 ? 0 : 1;
}

}  // namespace braid::compare

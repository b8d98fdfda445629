// braid-perf COLL [nccl-tests flags] — or invoked as all_reduce_perf, all_gather_perf, ...
// Prints the nccl-tests table (size count type redop root | out-of-place time algbw busbw
// #wrong | in-place ...) and footer; exits non-zero on a wrong element or an error.
#include <fmt/format.h>

#if BRAID_PERF_WITH_MPI
#include <mpi.h>
#endif
#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmarks/perf/perf.h"
#include "src/core/dtype.h"
#include "src/core/handles.h"

namespace braid::perf {
namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "braid-perf: %s\n", msg.c_str());
  std::exit(2);
}

// The type column as nccl-tests prints it (scripts that read its tables match on these).
const char* ncclTestsTypeName(braidDataType_t dt) {
  switch (dt) {
    case braidFloat16:
      return "half";
    case braidFloat32:
      return "float";
    case braidFloat64:
      return "double";
    default:
      return dtypeName(dt);  // int8, uint8, int32, uint32, int64, uint64, bfloat16
  }
}

std::vector<braidDataType_t> parseTypes(const std::string& s) {
  static const std::pair<const char*, braidDataType_t> kNames[] = {
      {"int8", braidInt8},       {"char", braidInt8},       {"uint8", braidUint8},
      {"int32", braidInt32},     {"int", braidInt32},       {"uint32", braidUint32},
      {"int64", braidInt64},     {"uint64", braidUint64},   {"half", braidFloat16},
      {"float16", braidFloat16}, {"float", braidFloat32},   {"float32", braidFloat32},
      {"double", braidFloat64},  {"float64", braidFloat64}, {"bfloat16", braidBfloat16}};
  if (s == "all") {
    return {braidInt8,   braidUint8,   braidInt32,   braidUint32,  braidInt64,
            braidUint64, braidFloat16, braidFloat32, braidFloat64, braidBfloat16};
  }
  for (const auto& [n, t] : kNames) {
    if (s == n) return {t};
  }
  die(fmt::format("unknown datatype '{}'", s));
}

std::vector<braidRedOp_t> parseOps(const std::string& s) {
  if (s == "all") return {braidSum, braidProd, braidMax, braidMin, braidAvg};
  static const std::pair<const char*, braidRedOp_t> kNames[] = {{"sum", braidSum},
                                                                {"prod", braidProd},
                                                                {"max", braidMax},
                                                                {"min", braidMin},
                                                                {"avg", braidAvg}};
  for (const auto& [n, o] : kNames) {
    if (s == n) return {o};
  }
  die(fmt::format("unknown op '{}'", s));
}

std::string collFromArgv0(const char* argv0) {
  std::string base = argv0;
  if (auto slash = base.rfind('/'); slash != std::string::npos) base = base.substr(slash + 1);
  static const std::pair<const char*, const char*> kAliases[] = {
      {"all_reduce_perf", "allreduce"},
      {"all_gather_perf", "allgather"},
      {"broadcast_perf", "broadcast"},
      {"reduce_perf", "reduce"},
      {"reduce_scatter_perf", "reducescatter"},
      {"alltoall_perf", "alltoall"},
      {"sendrecv_perf", "sendrecv"}};
  for (const auto& [alias, coll] : kAliases) {
    if (base == alias) return coll;
  }
  return "";
}

void usage() {
  std::printf(
      "usage: braid-perf COLL [flags]   (or all_reduce_perf, all_gather_perf, broadcast_perf,\n"
      "       reduce_perf, reduce_scatter_perf, alltoall_perf, sendrecv_perf [flags])\n"
      "COLL: allreduce allgather broadcast reduce reducescatter alltoall sendrecv\n"
      "  -b minbytes  -e maxbytes  -f stepfactor  -i stepbytes  -n iters  -w warmup iters\n"
      "  -m agg iters (calls fused in one group per iteration; time per call; each call has\n"
      "     its own receive buffer, as calls of one group must not share one: m x the memory)\n"
      "  -c check (0/1)  -o op (sum|prod|min|max|avg|all)  -d dtype (int8..float64, half,\n"
      "  bfloat16, all)  -r root  -z blocking (0/1)  -a average (0 rank0, 1 avg, 2 min, 3 max)\n"
      "  -R register buffers (1: braidCommRegister, zero-copy over RDMA)  -J FILE (JSON lines)\n"
      "  -T timeout: seconds a call may take before the test fails (0: BRAID_TIMEOUT_MS)\n"
      "  --time-per-size SECONDS (adapts -n per size)  -N sweeps (0: until stopped)\n"
      "  -C 1: time to issue the calls, as nccl-tests' CPU time (with streams: before they "
      "complete)\n"
      "  -t/-g (accepted, must be 1)  -p -y -G (accepted from nccl-tests command lines, no "
      "effect)\n"
      "  nccl-tests' long names too: --minbytes --maxbytes --stepbytes --stepfactor --iters\n"
      "  --warmup_iters --agg_iters --check --op --datatype --root --blocking --timeout --average\n"
      "  --local_register --run_cycles --nthreads --ngpus --parallel_init --stream_null\n"
      "  --cudagraph --report_cputime --output_file\n"
      "  --inject SPEC  kill a path mid-run (BRAID_FAULT syntax, e.g. rank=0,path=0,after_ms=500\n"
      "                 or rank=1,path=rand,after_bytes=256M,mode=blackhole)\n"
      "Ranks come from the launcher: braidrun -np N, mpirun (+BRAID_ROOT_ADDR), torchrun, srun.\n");
}

// A flag's integer value in [lo, hi], or exit naming the flag and what it takes.
int intFlag(char flag, long lo, long hi, const char* what) {
  int v = 0;
  if (!parseInt(optarg, lo, hi, &v)) {
    die(fmt::format("-{}: '{}' is not {}", flag, optarg, what));
  }
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  std::string coll = collFromArgv0(argv[0]);
  int first = 1;
  if (coll.empty()) {
    if (argc < 2 || argv[1][0] == '-') {
      usage();
      const bool help =
          argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0);
      std::exit(help ? 0 : 2);
    }
    coll = argv[1];
    first = 2;
  }
  o.coll = coll;
  static const option kLong[] = {
      // nccl-tests' long names of its short flags.
      {"nthreads", required_argument, nullptr, 't'},
      {"ngpus", required_argument, nullptr, 'g'},
      {"minbytes", required_argument, nullptr, 'b'},
      {"maxbytes", required_argument, nullptr, 'e'},
      {"stepbytes", required_argument, nullptr, 'i'},
      {"stepfactor", required_argument, nullptr, 'f'},
      {"iters", required_argument, nullptr, 'n'},
      {"agg_iters", required_argument, nullptr, 'm'},
      {"warmup_iters", required_argument, nullptr, 'w'},
      {"parallel_init", required_argument, nullptr, 'p'},
      {"check", required_argument, nullptr, 'c'},
      {"op", required_argument, nullptr, 'o'},
      {"datatype", required_argument, nullptr, 'd'},
      {"root", required_argument, nullptr, 'r'},
      {"blocking", required_argument, nullptr, 'z'},
      {"stream_null", required_argument, nullptr, 'y'},
      {"timeout", required_argument, nullptr, 'T'},
      {"cudagraph", required_argument, nullptr, 'G'},
      {"report_cputime", required_argument, nullptr, 'C'},
      {"average", required_argument, nullptr, 'a'},
      {"local_register", required_argument, nullptr, 'R'},
      {"run_cycles", required_argument, nullptr, 'N'},
      {"output_file", required_argument, nullptr, 'J'},
      {"corrupt-for-test", no_argument, nullptr, 1000},
      {"inject", required_argument, nullptr, 1001},
      {"time-per-size", required_argument, nullptr, perf::kTimePerSizeFlag},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0}};
  optind = first;
  int c;
  while ((c = getopt_long(argc, argv, "b:e:f:i:n:w:c:o:d:r:z:a:R:J:T:t:g:m:p:y:G:C:N:h", kLong,
                          nullptr)) != -1) {
    std::string err;
    if (applyCommonFlag(c, optarg, &o, &err)) {
      if (!err.empty()) die(err);
      continue;
    }
    switch (c) {
      case 'o':
        o.ops = parseOps(optarg);
        break;
      case 'd':
        o.types = parseTypes(optarg);
        break;
      case 'r':
        o.root = intFlag('r', 0, INT32_MAX, "a rank number (the root of broadcast and reduce)");
        break;
      case 'z':
        o.blocking = intFlag('z', 0, 1, "0 or 1") != 0;
        break;
      case 'a':
        o.average = intFlag('a', 0, 3, "0..3 (0 rank 0, 1 average, 2 min, 3 max)");
        break;
      case 'R':
        o.registerBuffers = intFlag('R', 0, 1, "0 or 1") != 0;
        break;
      case 'N':
        o.cycles = intFlag('N', 0, INT32_MAX, "a number of sweeps (0: repeat until stopped)");
        break;
      case 't':
      case 'g':
        (void)intFlag(static_cast<char>(c), 1, 1,
                      "1 (braid-perf runs one rank per process: -t and -g must be 1)");
        break;
      case 'm':
        o.aggIters = intFlag('m', 1, 1 << 20, "a number of calls fused per iteration (1 or more)");
        break;
      case 'C':
        o.reportCpuTime = intFlag('C', 0, 1, "0 or 1") == 1;
        break;
      case 'p':
      case 'y':
      case 'G':
        break;  // nccl-tests flags without effect here
      case 1000:
        o.corrupt = true;
        break;
      case 1001:
        // A path fault during the run (BRAID_FAULT's syntax), for re-send and recovery timing.
        setenv("BRAID_FAULT", optarg, 1);
        break;
      case 'h':
        usage();
        std::exit(0);
      default:
        usage();
        std::exit(2);
    }
  }
  if (optind < argc) die(fmt::format("unexpected argument '{}'", argv[optind]));
  if (findColl(o.coll) == nullptr) die(fmt::format("unknown collective '{}'", o.coll));
  if (std::string err = checkCommonOptions(o); !err.empty()) die(err);
  if (o.timeoutSeconds > 0) {
    // nccl-tests' -T: every wait of the run is bounded by it (the library's timeout).
    const auto ms = static_cast<long long>(std::ceil(o.timeoutSeconds * 1000));
    setenv("BRAID_TIMEOUT_MS", std::to_string(std::max(1LL, ms)).c_str(), 1);
  }
  return o;
}

struct Ctx {
  braidComm_t comm = nullptr;
  braidStream_t stream = nullptr;
  int rank = -1, n = 1;  // -1 until the communicator says
};

void checkOk(braidResult_t r, const Ctx& c, const char* what) {
  if (r != braidSuccess) {
    const std::string who = c.rank >= 0 ? fmt::format("rank {}: ", c.rank) : "";
    // This thread's last error: the call that failed may not be one of the communicator's
    // (stream, group).
    std::fprintf(stderr, "braid-perf: %s%s failed: %s: %s\n", who.c_str(), what,
                 braidGetErrorString(r), braidGetLastError(nullptr));
    std::exit(1);
  }
}

// Combines a per-rank value the way -a asks (every rank gets the same answer).
double combine(const Ctx& c, double v, int mode) {
  double x = v;
  braidRedOp_t op = mode == 2 ? braidMin : (mode == 3 ? braidMax : braidSum);
  checkOk(braidAllReduce(&x, &x, 1, braidFloat64, op, c.comm, nullptr), c, "allreduce of times");
  if (mode == 1) x /= c.n;
  if (mode == 0) {
    double r0 = v;
    checkOk(braidBroadcast(&r0, &r0, 1, braidFloat64, 0, c.comm, nullptr), c, "broadcast");
    x = r0;
  }
  return x;
}

// Times `iters` calls (after the warmup) and checks the result. recvs: one receive buffer per
// call fused in a group (-m): calls of one group must not write the same buffer (braid.h).
Result measure(const Ctx& c, const Options& o, const Coll& coll, size_t count, braidDataType_t dt,
               braidRedOp_t op, bool inPlace, char* send, const std::vector<char*>& recvs,
               size_t bytes, int iters) {
  const size_t esz = dtypeSize(dt);
  const int agg = o.aggIters;
  std::vector<char*> ins(static_cast<size_t>(agg), send), outs(recvs.begin(), recvs.begin() + agg);
  for (int a = 0; a < agg && inPlace; ++a) {
    // In place, each fused call works in its own buffer (sized for both send and receive).
    if (!inPlaceBuffers(coll, recvs[a], recvs[a], count, esz, c.rank, &ins[a], &outs[a])) {
      return Result{0, 0, 0, 0, false};
    }
  }
  auto runOne = [&](int a) {
    checkOk(runOnce(coll, ins[a], outs[a], count, dt, op, o.root, c.comm, c.stream), c, coll.name);
  };
  auto run = [&] {
    if (agg > 1) checkOk(braidGroupStart(), c, "group start");
    for (int a = 0; a < agg; ++a) runOne(a);
    if (agg > 1) checkOk(braidGroupEnd(), c, "group end");
  };
  auto fill = [&] {
    for (int a = 0; a < (inPlace ? agg : 1); ++a)
      fillInput(coll, ins[a], count, dt, op, c.rank, c.n);
  };
  auto sync = [&] {
    if (c.stream != nullptr) checkOk(braidStreamSynchronize(c.stream), c, "stream synchronize");
  };
  fill();
  for (int i = 0; i < o.warmup; ++i) run();
  sync();
  checkOk(braidBarrier(c.comm, nullptr), c, "barrier");
  // -m: as nccl-tests, each timed iteration fuses aggIters calls in one group, and the time
  // is per call.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run();
  auto issued = std::chrono::steady_clock::now();
  sync();
  // -C 1: the time the calls took to issue, as nccl-tests reports CPU time.
  double us = std::chrono::duration<double, std::micro>(
                  (o.reportCpuTime ? issued : std::chrono::steady_clock::now()) - t0)
                  .count() /
              (static_cast<double>(iters) * agg);
  Result r;
  r.us = combine(c, us, o.average);
  r.algbw = r.us > 0 ? static_cast<double>(bytes) / (r.us * 1e3) : 0;  // GB/s (1e9)
  r.busbw = r.algbw * coll.busFactor(c.n);
  if (o.check) {
    // One more run, checked: the outputs are first overwritten with bytes no result has (a
    // call that wrote nothing would pass on an earlier run's results, as nccl-tests' zeroing
    // prevents), then the inputs written (in place, the input was overwritten).
    const size_t outBytes = coll.recvElems(count, c.n) * esz;
    for (int a = 0; a < agg; ++a) std::memset(outs[a], 0xff, outBytes);
    fill();
    run();
    sync();
    // (On a rank whose output is checked: a reduce's root.)
    const int checked = coll.kind == kReduce ? o.root : 0;
    if (o.corrupt && c.rank == checked && outBytes > 0) outs[0][0] ^= 0x40;
    double w = 0;
    for (int a = 0; a < agg; ++a) {
      w += static_cast<double>(countWrong(coll, outs[a], count, dt, op, o.root, c.rank, c.n));
    }
    checkOk(braidAllReduce(&w, &w, 1, braidFloat64, braidSum, c.comm, nullptr), c, "allreduce");
    r.wrong = static_cast<size_t>(w);
  }
  return r;
}

// Rank 0's multipath paths (braidCommGetPathStats): in the header a summary, after the run
// one line per path (the first 32) with bytes, chunks, re-sends, failures, re-admissions and
// re-hashes (moves to a new flow).
void printPaths(braidComm_t comm, bool detail) {
  int n = 0;
  if (braidCommGetPathStats(comm, nullptr, 0, &n) != braidSuccess || n == 0) return;
  std::vector<braidPathStats_t> st(static_cast<size_t>(n));
  if (braidCommGetPathStats(comm, st.data(), n, &n) != braidSuccess) return;
  st.resize(static_cast<size_t>(n));
  static const char* kState[] = {"up", "standby", "dead"};
  int peers = 0, up = 0, last = -1;
  unsigned long long fails = 0, resent = 0, back = 0, moved = 0;
  for (const auto& s : st) {
    if (s.peer != last) ++peers;
    last = s.peer;
    up += s.state == braidPathUp;
    fails += s.failures;
    resent += s.retransmits;
    back += s.readmissions;
    moved += s.rehashes;
  }
  std::printf(
      "# rank 0 paths: %d to %d peer%s, %d up; failures %llu, chunks re-sent %llu, "
      "re-admitted %llu, re-hashed %llu\n",
      n, peers, peers == 1 ? "" : "s", up, fails, resent, back, moved);
  if (!detail) return;
  std::printf("#  %4s %4s %-7s %-28s %-22s %12s %9s %7s %5s %5s %6s\n", "peer", "path", "state",
              "local", "remote", "bytes sent", "chunks", "resent", "fail", "back", "rehash");
  for (size_t i = 0; i < st.size() && i < 32; ++i) {
    const auto& s = st[i];
    std::printf("#  %4d %4d %-7s %-28s %-22s %12llu %9llu %7llu %5llu %5llu %6llu\n", s.peer,
                s.path, kState[static_cast<int>(s.state) % 3], s.local, s.remote, s.bytesSent,
                s.chunksSent, s.retransmits, s.failures, s.readmissions, s.rehashes);
  }
  if (st.size() > 32) std::printf("#  ... %zu more\n", st.size() - 32);
  std::printf("#\n");
  std::fflush(stdout);
}

// Under mpirun (and without a braid rendezvous in the environment) the unique id travels by
// MPI_Bcast, like nccl-tests built with MPI=1; otherwise the launcher's environment is used.
braidResult_t initComm(braidComm_t* comm) {
#if BRAID_PERF_WITH_MPI
  bool underMpi =
      std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
  bool braidRendezvous = std::getenv("BRAID_UNIQUE_ID") || std::getenv("BRAID_UNIQUE_ID_FILE") ||
                         std::getenv("BRAID_ROOT_ADDR");
  if (underMpi && !braidRendezvous) {
    MPI_Init(nullptr, nullptr);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    braidUniqueId id{};
    braidResult_t r = rank == 0 ? braidGetUniqueId(&id) : braidSuccess;
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (r != braidSuccess) return r;
    r = braidCommInitRank(comm, size, id, rank);
    std::atexit([] { MPI_Finalize(); });
    return r;
  }
#endif
  return braidCommInitFromEnv(comm);
}

// Every rank says whether it can go on (`error` empty) and all learn the same: each rank with
// an error prints it (before the exchange: a launcher may end the others at the first exit),
// and every rank exits 2, rather than one rank exiting and the others failing on a dead peer.
void agreeOrDie(const Ctx& c, const std::string& error) {
  if (!error.empty()) {
    std::fprintf(stderr, "braid-perf: rank %d: %s\n", c.rank, error.c_str());
    std::fflush(stderr);
  }
  int32_t ok = error.empty() ? 1 : 0;
  checkOk(braidAllReduce(&ok, &ok, 1, braidInt32, braidMin, c.comm, nullptr), c, "allreduce");
  if (ok == 0) {
    (void)braidCommDestroy(c.comm);
    std::exit(2);
  }
}

// MemAvailable of /proc/meminfo in bytes, or less when this process's memory cgroup (v2:
// containers, Slurm, Kubernetes) allows less; 0 when unknown.
size_t memAvailable() {
  auto readNumber = [](const char* path, const char* format, unsigned long long* v) {
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) return false;
    char line[256];
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f) != nullptr) {
      found = std::sscanf(line, format, v) == 1;
    }
    std::fclose(f);
    return found;
  };
  unsigned long long kb = 0, max = 0, current = 0;
  size_t avail = readNumber("/proc/meminfo", "MemAvailable: %llu kB", &kb) ? kb * 1024 : 0;
  // The cgroup of this process (cgroup v2: one "0::/path" line).
  char cg[512] = {};
  if (FILE* f = std::fopen("/proc/self/cgroup", "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::strncmp(line, "0::", 3) == 0) {
        std::snprintf(cg, sizeof cg, "%s", line + 3);
        cg[std::strcspn(cg, "\n")] = '\0';
      }
    }
    std::fclose(f);
  }
  const std::string dir = std::string("/sys/fs/cgroup") + (std::strcmp(cg, "/") == 0 ? "" : cg);
  if (cg[0] != '\0' && readNumber((dir + "/memory.max").c_str(), "%llu", &max) &&
      readNumber((dir + "/memory.current").c_str(), "%llu", &current)) {
    const size_t left = max > current ? static_cast<size_t>(max - current) : 0;
    avail = avail == 0 ? left : std::min(avail, left);
  }
  return avail;
}

// The send buffer and the -m receive buffers (pre-faulted), or why they cannot be had: more
// than the host has available (allocating would wake the OOM killer, not fail), or refused.
std::string allocateBuffers(const Options& o, size_t sendBytes, size_t recvStride, int ranksOnHost,
                            std::vector<char>* send, std::vector<char>* recv) {
  const auto agg = static_cast<size_t>(o.aggIters);
  const double need = static_cast<double>(sendBytes) + static_cast<double>(recvStride) * agg;
  // This rank's share of what the host (or its memory cgroup) has left.
  const size_t avail = memAvailable() / static_cast<size_t>(std::max(1, ranksOnHost));
  const std::string sizes =
      fmt::format("buffers of {:.1f} MiB for -e {}{} (send, and one receive buffer per fused call)",
                  need / (1 << 20), o.maxBytes, agg > 1 ? fmt::format(" and -m {}", agg) : "");
  if (need >= 0x1p62 || (avail > 0 && need > static_cast<double>(avail))) {
    return fmt::format(
        "{} do not fit: {:.1f} MiB available per rank ({} rank(s) on this host; lower -e or -m)",
        sizes, static_cast<double>(avail) / (1 << 20), ranksOnHost);
  }
  try {
    send->assign(sendBytes, 1);
    recv->assign(recvStride * agg, 1);
  } catch (const std::exception& e) {
    return fmt::format("{} cannot be allocated: {}", sizes, e.what());
  }
  return "";
}

int run(const Options& o) {
  Ctx c;
  checkOk(initComm(&c.comm), c, "communicator init");
  checkOk(braidCommUserRank(c.comm, &c.rank), c, "rank");
  checkOk(braidCommCount(c.comm, &c.n), c, "size");
  if (!o.blocking) checkOk(braidStreamCreate(&c.stream), c, "stream create");
  const Coll& coll = *findColl(o.coll);
  if (coll.rooted && (o.root < 0 || o.root >= c.n)) die(fmt::format("-r {} is not a rank", o.root));
  // Host names of all ranks for the header.
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  std::vector<char> hosts(64 * c.n);
  checkOk(braidAllGather(host, hosts.data(), 64, braidInt8, c.comm, nullptr), c, "allgather");
  int ranksOnHost = 0;
  for (int r = 0; r < c.n; ++r) ranksOnHost += std::strcmp(&hosts[64 * r], host) == 0;
  // Rank 0 writes the JSON file: every rank learns whether it could open it, and all stop
  // alike if not (one rank's exit would leave the others blaming a dead peer).
  FILE* json = nullptr;
  if (c.rank == 0 && !o.jsonPath.empty()) json = std::fopen(o.jsonPath.c_str(), "w");
  const std::string jsonError =
      o.jsonPath.empty() || c.rank != 0 || json != nullptr
          ? ""
          : fmt::format("cannot write the -J file {}: {}", o.jsonPath, std::strerror(errno));
  agreeOrDie(c, jsonError);
  if (c.rank == 0) {
    std::vector<std::string> distinct;
    for (int r = 0; r < c.n; ++r) {
      std::string h(&hosts[64 * r]);
      if (std::find(distinct.begin(), distinct.end(), h) == distinct.end()) distinct.push_back(h);
    }
    // Which transport carries rank 0's traffic with how many peers.
    const TransportSet* ts = c.comm->impl->transports();
    std::vector<std::pair<std::string, int>> routes;
    for (int r = 1; r < c.n; ++r) {
      std::string name = ts->routeName(r);
      auto it =
          std::find_if(routes.begin(), routes.end(), [&](auto& p) { return p.first == name; });
      if (it == routes.end()) {
        routes.emplace_back(name, 1);
      } else {
        ++it->second;
      }
    }
    std::string via;
    for (auto& [name, count] : routes) {
      via += fmt::format("{}{} to {} peer{}", via.empty() ? "" : ", ", name, count,
                         count == 1 ? "" : "s");
      if (name == "tcp") {
        via += fmt::format(" ({} sockets each)", c.comm->impl->config().tcpSocketsPerPeer);
      }
    }
    // Nodes as braid groups them (host identity: hostname, boot id and network namespace, or
    // BRAID_TOPO_FILE): what decides shared memory against the network, and can differ from
    // the hostnames (the testbed's namespaces share one).
    const size_t nodes = c.comm->impl->nodes().names.size();
    std::printf(
        "# braid-perf %s: nranks %d nodes %zu%s transports %s%s%s\n", coll.name, c.n, nodes,
        nodes == distinct.size() ? "" : fmt::format(" (hostnames {})", distinct.size()).c_str(),
        ts->name(), via.empty() ? "" : ": rank 0 uses ", via.c_str());
    printPaths(c.comm, false);
    std::printf("%s blocking: %d agg iters: %d\n", steppingLine(o).c_str(), o.blocking ? 1 : 0,
                o.aggIters);
    std::printf("#\n# Using ranks\n");
    for (int r = 0; r < c.n; ++r) std::printf("#  Rank %2d on %s\n", r, &hosts[64 * r]);
    std::printf("#\n");
    printTableHeader(o.reportCpuTime);
    std::fflush(stdout);
  }
  // Buffers sized for the largest case, allocated and pre-faulted once.
  // The largest case of each type is about maxBytes (its count is maxBytes / the type's size),
  // not maxBytes elements of the widest type: that was 4-8 x the memory, all of it faulted in.
  size_t sendBytes = 0, recvBytes = 0;
  for (auto t : o.types) {
    const size_t esz = dtypeSize(t);
    const size_t maxCount = countFor(coll, o.maxBytes, esz, c.n) + 1;
    sendBytes = std::max(sendBytes, coll.sendElems(maxCount, c.n) * esz);
    recvBytes = std::max(recvBytes, coll.recvElems(maxCount, c.n) * esz);
  }
  // One receive buffer per call fused in a group (-m), each also the buffer of an in-place call.
  const size_t recvStride = (std::max(sendBytes, recvBytes) + 64 + 63) / 64 * 64;
  std::vector<char> send, recv;
  agreeOrDie(c, allocateBuffers(o, sendBytes + 64, recvStride, ranksOnHost, &send, &recv));
  std::vector<char*> recvs;
  for (int a = 0; a < o.aggIters; ++a) recvs.push_back(recv.data() + recvStride * a);
  void* sendReg = nullptr;
  void* recvReg = nullptr;
  if (o.registerBuffers) {
    checkOk(braidCommRegister(c.comm, send.data(), send.size(), &sendReg), c, "register");
    checkOk(braidCommRegister(c.comm, recv.data(), recv.size(), &recvReg), c, "register");
  }
  size_t totalWrong = 0;
  double busSum = 0;
  int busRows = 0;
  const std::vector<size_t> sweep = sizes(o.minBytes, o.maxBytes, o.stepFactor, o.stepBytes);
  for (int cycle = 0; o.cycles == 0 || cycle < o.cycles; ++cycle) {
    for (size_t bytes : sweep) {
      for (braidDataType_t dt : o.types) {
        const size_t esz = dtypeSize(dt);
        size_t count = countFor(coll, bytes, esz, c.n);
        size_t realBytes = bytesFor(coll, count, esz, c.n);
        for (braidRedOp_t op : coll.reduces ? o.ops : std::vector<braidRedOp_t>{braidSum}) {
          int iters = o.iters;
          if (o.secondsPerSize > 0) {
            // Estimate from a short timed probe; rank 0 decides so every rank agrees.
            Result probe = measure(c, Options{o}, coll, count, dt, op, false, send.data(), recvs,
                                   realBytes, 2);
            double n = probe.us > 0 ? o.secondsPerSize * 1e6 / probe.us : o.iters;
            n = std::clamp(n, 1.0, 1e6);
            checkOk(braidBroadcast(&n, &n, 1, braidFloat64, 0, c.comm, nullptr), c, "broadcast");
            iters = static_cast<int>(n);
          }
          Result oop =
              measure(c, o, coll, count, dt, op, false, send.data(), recvs, realBytes, iters);
          Result ip =
              measure(c, o, coll, count, dt, op, true, send.data(), recvs, realBytes, iters);
          totalWrong += oop.wrong + (ip.valid ? ip.wrong : 0);
          busSum += oop.busbw + (ip.valid ? ip.busbw : 0);
          busRows += ip.valid ? 2 : 1;
          if (c.rank == 0) {
            printRow(
                Row{"", coll.name, c.n, realBytes, count, ncclTestsTypeName(dt),
                    coll.reduces ? opName(op) : "none", coll.rooted ? o.root : -1, iters, oop, ip},
                o.check, json);
          }
        }
      }
    }
  }
  bool fastEnough = true;
  if (c.rank == 0) {
    const char* minBw = std::getenv("NCCL_TESTS_MIN_BW");
    fastEnough = printFooter(totalWrong, busSum, busRows, minBw ? std::atof(minBw) : -1.0);
    printPaths(c.comm, true);
    if (json != nullptr) std::fclose(json);
  }
  std::fflush(stdout);
  // Everyone waits for rank 0's report: a launcher ends the job at the first non-zero exit.
  checkOk(braidBarrier(c.comm, nullptr), c, "barrier");
  if (c.stream != nullptr) braidStreamDestroy(c.stream);
  checkOk(braidCommDeregister(c.comm, sendReg), c, "deregister");
  checkOk(braidCommDeregister(c.comm, recvReg), c, "deregister");
  checkOk(braidCommDestroy(c.comm), c, "destroy");
  return totalWrong == 0 && fastEnough ? 0 : 1;
}

}  // namespace
}  // namespace braid::perf

int main(int argc, char** argv) { return braid::perf::run(braid::perf::parse(argc, argv)); }

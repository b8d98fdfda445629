// braid-perf: the nccl-tests-compatible benchmark (same flags, table and bus bandwidth).
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "braid/braid.h"

namespace braid::perf {

// The flags every benchmark of the project shares (braid-perf and the peer programs of
// benchmarks/compare), with nccl-tests' meaning.
struct CommonOptions {
  size_t minBytes = 32 << 20, maxBytes = 32 << 20, stepBytes = 1 << 20;  // -b -e -i
  double stepFactor = 1;                                                 // -f; <= 1: use -i
  int iters = 20, warmup = 5;                                            // -n -w
  bool check = true;                                                     // -c
  std::string jsonPath;                                                  // -J
  // -T, as nccl-tests: seconds a call may take before the test fails (0: the library's own
  // bound). braid-perf makes it BRAID_TIMEOUT_MS; the peer programs watch every call.
  double timeoutSeconds = 0;
  double secondsPerSize = 0;  // --time-per-size: adapt the iteration count to this time
  bool corrupt = false;       // --corrupt-for-test: flip one received byte (tests #wrong)
};
// getopt_long's value for --time-per-size (every program's long-option table names it).
constexpr int kTimePerSizeFlag = 2000;
// Applies one of -b -e -f -i -n -w -c -J -T --time-per-size: true when `flag` is one of them
// (*err says what is wrong with its value, if anything).
bool applyCommonFlag(int flag, const char* arg, CommonOptions* o, std::string* err);
// "" when the combination is valid, else what is wrong.
std::string checkCommonOptions(const CommonOptions& o);

struct Options : CommonOptions {
  std::string coll = "allreduce";
  std::vector<braidRedOp_t> ops = {braidSum};
  std::vector<braidDataType_t> types = {braidFloat32};
  int root = 0;
  bool blocking = false;         // -z: NULL stream (run now) instead of a stream
  int average = 1;               // -a: 0 rank 0, 1 average, 2 min, 3 max across ranks
  bool registerBuffers = false;  // -R 1: braidCommRegister both buffers (zero-copy over RDMA)
  int cycles = 1;                // -N: sweeps over the sizes, 0 = until stopped
  int aggIters = 1;              // -m: calls fused in one group per timed iteration
  bool reportCpuTime = false;    // -C 1: the time to issue the calls (not to complete them)
};

enum Kind { kAllReduce, kAllGather, kBroadcast, kReduce, kReduceScatter, kAllToAll, kSendRecv };

struct Coll {
  Kind kind;
  const char* name;
  bool reduces;  // op matters
  bool rooted;   // root matters
  // Bytes in the send and receive buffers for `count` elements of `esz` bytes, n ranks.
  size_t sendElems(size_t count, int n) const;
  size_t recvElems(size_t count, int n) const;
  double busFactor(int n) const;
};

const Coll* findColl(const std::string& name);
const std::vector<std::string>& collNames();

// Elements per rank for a size in bytes (nccl-tests semantics per collective).
size_t countFor(const Coll& c, size_t bytes, size_t esz, int n);

// Bytes the row reports for `count` elements per call (nccl-tests: the per-rank total for
// allgather, reducescatter and alltoall).
size_t bytesFor(const Coll& c, size_t count, size_t esz, int n);

// The in-place form of the call (NCCL's rules): input and output inside send/recv. False when
// the collective has no in-place form (sendrecv).
bool inPlaceBuffers(const Coll& c, char* send, char* recv, size_t count, size_t esz, int rank,
                    char** in, char** out);

// Runs the collective once. sendbuf/recvbuf as sized by sendElems/recvElems.
braidResult_t runOnce(const Coll& c, const void* send, void* recv, size_t count, braidDataType_t dt,
                      braidRedOp_t op, int root, braidComm_t comm, braidStream_t stream);

// Fills the send buffer with this rank's exact test data, and counts wrong elements of the
// receive buffer against the exactly computed expectation.
void fillInput(const Coll& c, void* send, size_t count, braidDataType_t dt, braidRedOp_t op,
               int rank, int n);
size_t countWrong(const Coll& c, const void* recv, size_t count, braidDataType_t dt,
                  braidRedOp_t op, int root, int rank, int n);

// Sizes with K/M/G suffixes ("64K"); false when malformed, not finite or 4 EiB and more.
bool parseSize(const char* text, size_t* out);
// A decimal integer in [lo, hi], nothing after it; false otherwise.
bool parseInt(const char* text, long lo, long hi, int* out);
// -b/-e with -f factor (or -i step bytes when the factor is 0).
std::vector<size_t> sizes(size_t minBytes, size_t maxBytes, double stepFactor, size_t stepBytes);

// One measured cell: time per call (µs), bandwidths (GB/s = 1e9 B/s), wrong elements.
struct Result {
  double us = 0, algbw = 0, busbw = 0;
  size_t wrong = 0;
  bool valid = true;  // false: the case does not exist (N/A / null)
};
// "# minBytes .. maxBytes .. step: .. warmup iters: .. iters: .. validation: .." (no newline).
std::string steppingLine(const CommonOptions& o);
// The two column-title lines of nccl-tests' table.
void printTableHeader(bool cpuTime = false);
std::string fmtResult(const Result& r, bool check);  // the table's four columns
std::string jsonResult(const Result& r);             // {"time_us":..,...} or null

// One size of one run: the table line on stdout and, with `json`, the JSON line (with "impl"
// first when impl is not empty).
struct Row {
  std::string impl;
  const char* coll;
  int nranks;
  size_t bytes, count;
  const char* type;
  const char* redop;
  int root, iters;
  Result oop, ip;
};
void printRow(const Row& r, bool check, FILE* json);
// nccl-tests' footer: "# Out of bounds values" and "# Avg bus bandwidth".
// The table's last lines; false when the average bus bandwidth is under 0.9 of minBusBw
// (NCCL_TESTS_MIN_BW, GB/s; negative: none), as nccl-tests fails it.
bool printFooter(size_t wrong, double busSum, int busRows, double minBusBw = -1);

}  // namespace braid::perf

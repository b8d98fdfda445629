// What mpi_bench and gloo_bench share: braid-perf's flags, sizes, bus-bandwidth formulas, exact
// data checks (tests/harness/values.h), timing loop, table and JSON lines. Each program supplies
// a Backend: its rank and size, a barrier, an allgather of one double, and one collective call.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/perf/perf.h"
#include "braid/braid.h"

namespace braid::compare {

// The collectives compared. Names follow braid-perf ("reducescatter"); the command line also
// takes nccl-tests' spelling "reduce_scatter".
enum class Coll { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kBroadcast };

// braid-perf's shared flags (-b -e -f -i -n -w -c -J -T, --corrupt-for-test) plus these.
struct Options : perf::CommonOptions {
  Coll coll = Coll::kAllReduce;
  braidDataType_t dtype = braidFloat32;  // -d
  int root = 0;                          // -r (broadcast)
  // gloo_bench only.
  std::string algo = "ring_chunked";  // --algo (allreduce)
  std::string store;                  // --store (FileStore directory)
  std::string runId;                  // --run-id (key prefix in the store)
  double timeoutS = 300;              // --timeout (every Gloo operation)
};

const char* collName(Coll c);  // braid-perf's name
bool reduces(Coll c);
bool rooted(Coll c);
double busFactor(Coll c, int n);
// nccl-tests semantics, as braid-perf: elements per call for a size in bytes, the bytes a row
// reports, and the elements of the send and receive buffers.
size_t countFor(Coll c, size_t bytes, size_t esz, int n);
size_t bytesFor(Coll c, size_t count, size_t esz, int n);
size_t sendElems(Coll c, size_t count, int n);
size_t recvElems(Coll c, size_t count, int n);

// Parses argv (COLL first); exits with a usage message on an error. `gloo` enables the
// Gloo-only flags.
Options parseArgs(int argc, char** argv, const char* prog, bool gloo);

// Writes this rank's exact test data for `c` to `in` (`count` elements per call) and counts
// the elements of `out` that differ from the exactly computed expectation.
void fillInput(Coll c, void* in, size_t count, braidDataType_t dt, int rank, int n);
size_t countWrong(Coll c, const void* out, size_t count, braidDataType_t dt, int root, int rank,
                  int n);

// One prepared collective: run() calls it once. `in` is where the input is written and `out`
// where the result is read; inPlace says the implementation reduces inside its input buffer
// (then the timed calls work on their own output and the check refills and runs once more).
struct Op {
  std::function<void()> run;
  char* in = nullptr;
  char* out = nullptr;
  bool inPlace = false;
  bool valid = true;  // false: the implementation cannot run this case (row shows N/A)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string impl() const = 0;     // JSON "impl"
  virtual std::string version() const = 0;  // for the table header
  virtual void barrier() = 0;
  virtual std::vector<double> allgather(double v) = 0;  // every rank's value, on every rank
  // Builds the call for `count` elements per call over buffers sized by sendElems/recvElems.
  virtual Op prepare(const Options& o, size_t count, char* send, char* recv) = 0;
};

// Runs every size; rank 0 prints the table and writes the JSON lines. Returns the exit code:
// 0 when every check passed, 1 when an element was wrong.
int runBench(Backend& b, const Options& o, const char* prog);

[[noreturn]] void die(const char* prog, const std::string& msg);

}  // namespace braid::compare

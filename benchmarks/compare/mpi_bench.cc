// mpi_bench COLL [braid-perf flags]: the same measurement as braid-perf, through Open MPI's C
// API (MPI_Allreduce, MPI_Allgather, MPI_Reduce_scatter_block, MPI_Alltoall, MPI_Bcast).
// Out of place; JSON lines carry "impl":"mpi". Run it with mpirun (benchmarks/compare/run).
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "benchmarks/compare/bench_common.h"
#include "src/core/dtype.h"

namespace braid::compare {
namespace {

constexpr const char* kProg = "mpi_bench";

void ok(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, text, &len);
    std::fprintf(stderr, "%s: %s failed: %s\n", kProg, what, text);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
}

MPI_Datatype mpiType(braidDataType_t dt) {
  switch (dt) {
    case braidFloat32:
      return MPI_FLOAT;
    case braidFloat64:
      return MPI_DOUBLE;
    case braidInt32:
      return MPI_INT32_T;
    case braidInt64:
      return MPI_INT64_T;
    default:
      die(kProg, "unsupported datatype");
  }
}

class MpiBackend : public Backend {
 public:
  MpiBackend() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string impl() const override { return "mpi"; }
  std::string version() const override {
    char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int len = 0;
    MPI_Get_library_version(text, &len);
    std::string v(text, static_cast<size_t>(len));
    if (auto comma = v.find(','); comma != std::string::npos) v.resize(comma);
    return v;
  }
  void barrier() override { ok(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  std::vector<double> allgather(double v) override {
    std::vector<double> all(static_cast<size_t>(size_));
    ok(MPI_Allgather(&v, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD),
       "MPI_Allgather");
    return all;
  }
  Op prepare(const Options& o, size_t count, char* send, char* recv) override {
    if (count > static_cast<size_t>(INT_MAX)) die(kProg, "count exceeds INT_MAX");
    const int cnt = static_cast<int>(count);
    const MPI_Datatype t = mpiType(o.dtype);
    const int root = o.root;
    Op op;
    op.in = send;
    op.out = recv;
    switch (o.coll) {
      case Coll::kAllReduce:
        op.run = [=] {
          ok(MPI_Allreduce(send, recv, cnt, t, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
        };
        break;
      case Coll::kAllGather:
        op.run = [=] {
          ok(MPI_Allgather(send, cnt, t, recv, cnt, t, MPI_COMM_WORLD), "MPI_Allgather");
        };
        break;
      case Coll::kReduceScatter:
        op.run = [=] {
          ok(MPI_Reduce_scatter_block(send, recv, cnt, t, MPI_SUM, MPI_COMM_WORLD),
             "MPI_Reduce_scatter_block");
        };
        break;
      case Coll::kAllToAll:
        op.run = [=] {
          ok(MPI_Alltoall(send, cnt, t, recv, cnt, t, MPI_COMM_WORLD), "MPI_Alltoall");
        };
        break;
      case Coll::kBroadcast:
        // Out of place as braid's: the root sends its input; every rank receives into recv
        // (the root copies its input there, which braid's broadcast does as well).
        op.run = [=, rank = rank_, bytes = count * dtypeSize(o.dtype)] {
          if (rank == root) std::memcpy(recv, send, bytes);
          ok(MPI_Bcast(recv, cnt, t, root, MPI_COMM_WORLD), "MPI_Bcast");
        };
        break;
    }
    return op;
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace
}  // namespace braid::compare

int main(int argc, char** argv) {
  using namespace braid::compare;
  Options o = parseArgs(argc, argv, kProg, false);
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    MpiBackend b;
    rc = runBench(b, o, kProg);
  }
  MPI_Finalize();
  return rc;
}

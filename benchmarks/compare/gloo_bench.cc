// gloo_bench COLL [braid-perf flags] [--algo ring_chunked|halving_doubling]: the same
// measurement as braid-perf, through Gloo over its TCP transport. Rank and size come from the
// launcher (braidrun: BRAID_RANK/BRAID_WORLD_SIZE; mpirun: OMPI_COMM_WORLD_RANK/SIZE); ranks
// meet in a gloo::rendezvous::FileStore under a per-run key prefix.
//
// Gloo's allreduce (AllreduceRingChunked, AllreduceHalvingDoubling) and reduce-scatter
// (ReduceScatterHalvingDoubling) reduce inside their buffer: they are reported as in-place
// (the JSON "in_place" result, "out_of_place" null). Allgather, alltoall and broadcast are out
// of place. JSON lines carry "impl":"gloo-<algo>" for allreduce and "gloo" for the others.
#include <fmt/format.h>
#include <gloo/allgather.h>
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/config.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "benchmarks/compare/bench_common.h"

namespace braid::compare {
namespace {

constexpr const char* kProg = "gloo_bench";
// Distinct tags keep the driver's own messages (barrier, exchange of times and #wrong) apart
// from the measured collectives'.
constexpr uint32_t kDataTag = 1;
constexpr uint32_t kControlTag = 2;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

// Rank or size from the first launcher variable that is set.
int envInt(std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (const char* v = env(n)) return std::atoi(v);
  }
  std::string list;
  for (const char* n : names) list += std::string(list.empty() ? "" : ", ") + n;
  die(kProg, "none of " + list + " is set: launch with braidrun -np N or mpirun");
}

// FNV-1a: the same short id on every rank for the same launcher-provided string.
std::string shortHash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

// A key prefix that is the same on all ranks of one launch and differs between launches.
std::string runId(const Options& o) {
  if (!o.runId.empty()) return o.runId;
  if (const char* v = env("BRAID_COMPARE_RUN_ID")) return v;
  if (const char* v = env("BRAID_UNIQUE_ID")) return "braidrun-" + shortHash(v);
  if (const char* v = env("OMPI_MCA_ess_base_jobid")) return std::string("ompi-") + v;
  if (const char* v = env("OMPI_MCA_orte_hnp_uri")) return "ompi-" + shortHash(v);
  die(kProg, "no run id: pass --run-id or set BRAID_COMPARE_RUN_ID (the same on every rank)");
}

template <typename F>
auto byType(braidDataType_t dt, F&& f) {
  switch (dt) {
    case braidFloat64:
      return f(double{});
    case braidInt32:
      return f(int32_t{});
    case braidInt64:
      return f(int64_t{});
    default:
      return f(float{});
  }
}

int toInt(size_t v) {
  if (v > static_cast<size_t>(INT_MAX)) die(kProg, "element count exceeds INT_MAX");
  return static_cast<int>(v);
}

class GlooBackend : public Backend {
 public:
  GlooBackend(const Options& o, int rank, int size) : opts_(o) {
    gloo::transport::tcp::attr attr;
    if (const char* iface = env("GLOO_IFACE")) {
      attr.iface = iface;
    } else {
      attr.hostname = env("GLOO_HOST") ? env("GLOO_HOST") : "127.0.0.1";
    }
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    std::string dir = !o.store.empty()             ? o.store
                      : env("BRAID_COMPARE_STORE") ? env("BRAID_COMPARE_STORE")
                                                   : "/tmp/braid-compare-store";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) die(kProg, "cannot create the store directory " + dir + ": " + ec.message());
    store_ = std::make_unique<gloo::rendezvous::FileStore>(dir);
    gloo::rendezvous::PrefixStore prefix(runId(o), *store_);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
    ctx->setTimeout(timeout());
    ctx->connectFullMesh(prefix, dev);
    ctx_ = ctx;
  }

  // Removes the rendezvous keys this rank wrote (call after a final barrier).
  void removeKeys() {
    for (const std::string& path : store_->getAllKeyFilePaths()) {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  }

  int rank() const override { return ctx_->rank; }
  int size() const override { return ctx_->size; }
  std::string impl() const override {
    return opts_.coll == Coll::kAllReduce ? "gloo-" + opts_.algo : "gloo";
  }
  std::string version() const override {
    return fmt::format("Gloo {}.{}.{}, tcp transport", GLOO_VERSION_MAJOR, GLOO_VERSION_MINOR,
                       GLOO_VERSION_PATCH);
  }

  void barrier() override {
    gloo::BarrierOptions b(ctx_);
    b.setTag(kControlTag);
    b.setTimeout(timeout());
    gloo::barrier(b);
  }

  std::vector<double> allgather(double v) override {
    std::vector<double> all(static_cast<size_t>(size()));
    gloo::AllgatherOptions a(ctx_);
    a.setInput(&v, 1);
    a.setOutput(all.data(), all.size());
    a.setTag(kControlTag);
    a.setTimeout(timeout());
    gloo::allgather(a);
    return all;
  }

  Op prepare(const Options& o, size_t count, char* send, char* recv) override {
    return byType(o.dtype,
                  [&](auto zero) { return prepareT<decltype(zero)>(o, count, send, recv); });
  }

 private:
  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(opts_.timeoutS * 1000));
  }

  template <typename T>
  Op prepareT(const Options& o, size_t count, char* send, char* recv) {
    const int n = size();
    T* in = reinterpret_cast<T*>(send);
    T* out = reinterpret_cast<T*>(recv);
    Op op;
    op.in = send;
    op.out = recv;
    switch (o.coll) {
      case Coll::kAllReduce: {
        // In place in the send buffer, as Gloo's algorithms work (built once per size, like
        // Gloo's own benchmark: the constructor sets up the pairs' buffers).
        std::shared_ptr<gloo::Algorithm> a;
        if (o.algo == "halving_doubling") {
          a = std::make_shared<gloo::AllreduceHalvingDoubling<T>>(ctx_, std::vector<T*>{in},
                                                                  toInt(count));
        } else {
          a = std::make_shared<gloo::AllreduceRingChunked<T>>(ctx_, std::vector<T*>{in},
                                                              toInt(count));
        }
        op.run = [a] { a->run(); };
        op.out = send;
        op.inPlace = true;
        break;
      }
      case Coll::kReduceScatter: {
        // In place over the n * count input; this rank's block lands at the start.
        std::vector<int> recvCounts(static_cast<size_t>(n), toInt(count));
        auto a = std::make_shared<gloo::ReduceScatterHalvingDoubling<T>>(
            ctx_, std::vector<T*>{in}, toInt(count * n), recvCounts);
        op.run = [a] { a->run(); };
        op.out = send;
        op.inPlace = true;
        break;
      }
      case Coll::kAllGather: {
        // Gloo's allgather divides by the input size: zero elements (the smallest sizes on
        // many ranks) cannot run, and the row says N/A.
        if (count == 0) {
          op.valid = false;
          break;
        }
        auto a = std::make_shared<gloo::AllgatherOptions>(ctx_);
        a->setInput(in, count);
        a->setOutput(out, count * n);
        a->setTag(kDataTag);
        a->setTimeout(timeout());
        op.run = [a] { gloo::allgather(*a); };
        break;
      }
      case Coll::kAllToAll: {
        auto a = std::make_shared<gloo::AlltoallOptions>(ctx_);
        a->setInput(in, count * n);
        a->setOutput(out, count * n);
        a->setTag(kDataTag);
        a->setTimeout(timeout());
        op.run = [a] { gloo::alltoall(*a); };
        break;
      }
      case Coll::kBroadcast: {
        auto a = std::make_shared<gloo::BroadcastOptions>(ctx_);
        if (rank() == o.root) a->setInput(in, count);
        a->setOutput(out, count);
        a->setRoot(o.root);
        a->setTag(kDataTag);
        a->setTimeout(timeout());
        op.run = [a] { gloo::broadcast(*a); };
        break;
      }
    }
    return op;
  }

  Options opts_;
  std::unique_ptr<gloo::rendezvous::FileStore> store_;
  std::shared_ptr<gloo::Context> ctx_;
};

}  // namespace
}  // namespace braid::compare

int main(int argc, char** argv) {
  using namespace braid::compare;
  Options o = parseArgs(argc, argv, kProg, true);
  int rank = envInt({"BRAID_RANK", "OMPI_COMM_WORLD_RANK", "RANK"});
  int size = envInt({"BRAID_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"});
  if (size < 1 || rank < 0 || rank >= size) die(kProg, "bad rank or world size");
  try {
    GlooBackend b(o, rank, size);
    int rc = runBench(b, o, kProg);  // ends with a barrier: every rank is done with the store
    b.removeKeys();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: rank %d: %s\n", kProg, rank, e.what());
    return 3;
  }
}

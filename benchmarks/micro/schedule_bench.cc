// Cost of turning one call into its schedule (Google Benchmark): the algorithm chooses chunks
// and builds the DAG of steps on the thread that runs the call, so this is per-call overhead
// that no network time hides. Items/s counts steps (nodes) built.
// Run: build/benchmarks/schedule_bench --benchmark_min_time=0.2 (results: benchmarks/results/).
#include <benchmark/benchmark.h>

#include <vector>

#include "collectives/algorithms.h"
#include "src/core/comm.h"
#include "src/engine/schedule.h"

namespace {

using braid::CollArgs;
using braid::CollKind;

// Args: collective kind, ranks, bytes per rank.
void BM_Build(benchmark::State& state) {
  const auto kind = static_cast<CollKind>(state.range(0));
  const int n = static_cast<int>(state.range(1));
  const size_t bytes = static_cast<size_t>(state.range(2));
  braid::Config cfg;
  if (!braid::Config::fromEnv(&cfg).isOk()) {
    state.SkipWithError("bad BRAID_* environment");
    return;
  }
  auto comm = braid::Comm::detached(n / 2, n, cfg);
  const size_t count = bytes / sizeof(float);
  const size_t total = kind == CollKind::kAllReduce ? count : count * static_cast<size_t>(n);
  std::vector<float> send(total), recv(total);
  CollArgs a;
  a.kind = kind;
  a.send = send.data();
  a.recv = recv.data();
  a.count = count;
  if (kind == CollKind::kAllToAll) {
    const auto N = static_cast<size_t>(n);
    a.sendcounts.assign(N, count);
    a.recvcounts.assign(N, count);
    for (size_t p = 0; p < N; ++p) {
      a.sdispls.push_back(p * count);
      a.rdispls.push_back(p * count);
    }
  }
  {
    // Once untimed: the first large build pre-faults the communicator's scratch pool.
    braid::Schedule warm(comm, braid::collName(kind), 0);
    if (!braid::buildCollective(a, &warm).isOk()) {
      state.SkipWithError("build failed");
      return;
    }
    warm.prepare();
  }
  size_t nodes = 0;
  for (auto _ : state) {
    braid::Schedule s(comm, braid::collName(kind), 0);
    if (!braid::buildCollective(a, &s).isOk()) {
      state.SkipWithError("build failed");
      return;
    }
    s.prepare();
    nodes = s.nodes().size();
    benchmark::DoNotOptimize(s.nodes().data());
  }
  state.SetLabel(braid::collName(kind));
  state.counters["steps"] = static_cast<double>(nodes);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(nodes));
}

void Args(benchmark::internal::Benchmark* b) {
  for (auto kind : {CollKind::kAllReduce, CollKind::kAllGather, CollKind::kAllToAll}) {
    for (int64_t n : {2, 8, 64}) {
      for (int64_t bytes : {int64_t{8}, int64_t{1} << 20, int64_t{64} << 20}) {
        // Large all-gather / all-to-all at 64 ranks would need 4 GiB of buffers: skipped.
        if (kind != CollKind::kAllReduce && n * bytes > (int64_t{256} << 20)) continue;
        b->Args({static_cast<int64_t>(kind), n, bytes});
      }
    }
  }
  b->ArgNames({"coll", "ranks", "bytes"});
}

BENCHMARK(BM_Build)->Apply(Args);

}  // namespace

BENCHMARK_MAIN();

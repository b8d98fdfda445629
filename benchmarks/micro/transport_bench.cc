// Transport microbenchmarks through the public API (BRAID_TRANSPORTS picks the transport), two real
// processes on this machine: ping-pong round trip (one-way latency is half) and one-way streaming
// bandwidth, per message size: one blocking send after the other, or (StreamWindow) kWindow
// messages in flight at a time, each batch one group on both sides, as a verbs bandwidth test
// keeps several writes posted. The benchmark process is rank 0; it forks rank 1, which mirrors
// every benchmark run as told by a small control message (size, iterations, mode). Run:
// build/benchmarks/transport_bench
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "braid/braid.h"

namespace {

braidComm_t gComm = nullptr;
constexpr uint64_t kPingPong = 1, kStream = 2, kQuit = 3, kStreamRegistered = 4, kStreamWindow = 5,
                   kGroupedAllReduce = 6;
constexpr size_t kWindow = 4;  // messages in flight in StreamWindow (registered buffers)

void must(braidResult_t r, const char* what) {
  if (r != braidSuccess) {
    std::fprintf(stderr, "transport_bench: %s: %s\n", what, braidGetLastError(gComm));
    std::exit(1);
  }
}

void control(uint64_t mode, uint64_t bytes, uint64_t iters) {
  uint64_t msg[3] = {mode, bytes, iters};
  must(braidSend(msg, 3, braidUint64, 1, gComm, nullptr), "control send");
}

// `iters` groups of `calls` allreduces of one float each (each its own buffer), both ranks.
void groupedAllReduces(uint64_t calls, uint64_t iters) {
  std::vector<float> v(calls, 1.0f);
  for (uint64_t i = 0; i < iters; ++i) {
    must(braidGroupStart(), "group start");
    for (auto& x : v) must(braidAllReduce(&x, &x, 1, braidFloat32, braidSum, gComm, nullptr), "");
    must(braidGroupEnd(), "group end");
  }
}

// Rank 1: does its half of whatever rank 0 announces, until told to quit.
void mirror() {
  std::vector<char> buf;
  while (true) {
    uint64_t msg[3];
    must(braidRecv(msg, 3, braidUint64, 0, gComm, nullptr), "control recv");
    if (msg[0] == kQuit) return;
    if (msg[0] == kGroupedAllReduce) {
      groupedAllReduces(msg[1], msg[2]);
      continue;
    }
    const size_t w = msg[0] == kStreamWindow ? kWindow : 1;  // messages per iteration
    buf.resize(msg[1] * w + 1);
    void* handle = nullptr;
    if (msg[0] == kStreamRegistered || msg[0] == kStreamWindow)
      must(braidCommRegister(gComm, buf.data(), buf.size(), &handle), "register");
    for (uint64_t i = 0; i < msg[2]; ++i) {
      if (w > 1) must(braidGroupStart(), "group start");
      for (size_t k = 0; k < w; ++k) {
        must(braidRecv(buf.data() + k * msg[1], msg[1], braidUint8, 0, gComm, nullptr), "recv");
      }
      if (w > 1) must(braidGroupEnd(), "group end");
      if (msg[0] == kPingPong)
        must(braidSend(buf.data(), msg[1], braidUint8, 0, gComm, nullptr), "send");
    }
    if (msg[0] != kPingPong) must(braidSend(buf.data(), 1, braidUint8, 0, gComm, nullptr), "ack");
    must(braidCommDeregister(gComm, handle), "deregister");
  }
}

void BM_PingPong(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> buf(bytes + 1, 1);
  std::vector<double> rtt;
  rtt.reserve(static_cast<size_t>(state.max_iterations));
  control(kPingPong, bytes, state.max_iterations);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    must(braidSend(buf.data(), bytes, braidUint8, 1, gComm, nullptr), "send");
    must(braidRecv(buf.data(), bytes, braidUint8, 1, gComm, nullptr), "recv");
    rtt.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  // Time per iteration is one round trip: the one-way latency is half of it (a mean). The
  // median of the round trips, halved, is perftest's t_typical, reported as typical_us.
  if (!rtt.empty()) {
    std::nth_element(rtt.begin(), rtt.begin() + rtt.size() / 2, rtt.end());
    state.counters["typical_us"] = rtt[rtt.size() / 2] / 2;
  }
}

// mode kStream, kStreamRegistered or kStreamWindow (kWindow registered messages per iteration,
// sent and received as one group); the others send one message at a time, blocking.
void stream(benchmark::State& state, uint64_t mode) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const size_t w = mode == kStreamWindow ? kWindow : 1;
  std::vector<char> buf(bytes * w + 1, 1);
  void* handle = nullptr;
  if (mode != kStream) must(braidCommRegister(gComm, buf.data(), buf.size(), &handle), "register");
  control(mode, bytes, state.max_iterations);
  for (auto _ : state) {
    if (w > 1) must(braidGroupStart(), "group start");
    for (size_t k = 0; k < w; ++k) {
      must(braidSend(buf.data() + k * bytes, bytes, braidUint8, 1, gComm, nullptr), "send");
    }
    if (w > 1) must(braidGroupEnd(), "group end");
  }
  must(braidRecv(buf.data(), 1, braidUint8, 1, gComm, nullptr), "ack");
  must(braidCommDeregister(gComm, handle), "deregister");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(bytes * w));
}

// A group of N tiny allreduces (a framework reducing one small tensor per parameter, fused):
// the time per call should not grow with N (it did: quadratic in N before fast-box calls got
// their own lane in the executor).
void BM_GroupOfSmallAllReduces(benchmark::State& state) {
  const uint64_t calls = static_cast<uint64_t>(state.range(0));
  control(kGroupedAllReduce, calls, state.max_iterations);
  for (auto _ : state) groupedAllReduces(calls, 1);
  state.counters["per_call_us"] = benchmark::Counter(
      static_cast<double>(state.iterations() * calls),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert, benchmark::Counter::kIs1000);
}

void BM_Stream(benchmark::State& state) { stream(state, kStream); }
// Both buffers registered (braidCommRegister): zero-copy where the transport can (ib).
void BM_StreamRegistered(benchmark::State& state) { stream(state, kStreamRegistered); }
void BM_StreamWindow(benchmark::State& state) { stream(state, kStreamWindow); }

BENCHMARK(BM_PingPong)->Arg(8)->Arg(1 << 10)->Arg(64 << 10)->UseRealTime();
BENCHMARK(BM_Stream)->Arg(1 << 10)->Arg(64 << 10)->Arg(1 << 20)->Arg(16 << 20)->UseRealTime();
BENCHMARK(BM_StreamRegistered)->Arg(1 << 20)->Arg(16 << 20)->UseRealTime();
BENCHMARK(BM_StreamWindow)->Arg(1 << 20)->Arg(16 << 20)->UseRealTime();
BENCHMARK(BM_GroupOfSmallAllReduces)->Arg(100)->Arg(1000)->Arg(10000)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  int ready[2];
  if (pipe(ready) != 0) return 1;
  pid_t child = fork();
  const int rank = child == 0 ? 1 : 0;
  braidUniqueId id;
  if (rank == 0) {
    must(braidGetUniqueId(&id), "unique id");
    if (write(ready[1], &id, sizeof id) != static_cast<ssize_t>(sizeof id)) return 1;
  } else if (read(ready[0], &id, sizeof id) != static_cast<ssize_t>(sizeof id)) {
    _exit(1);
  }
  must(braidCommInitRank(&gComm, 2, id, rank), "init");
  if (rank == 1) {
    mirror();
    braidCommDestroy(gComm);
    _exit(0);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  control(kQuit, 0, 0);
  braidCommDestroy(gComm);
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

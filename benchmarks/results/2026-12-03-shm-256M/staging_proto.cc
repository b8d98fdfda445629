// Measurement prototype, not part of braid: a 2-process float32 sum allreduce of 256 MiB
// through shared staging slots (NCCL's shared-memory ring pattern), to see what such a data
// path could reach on this machine against braid's single-copy (CMA) path.
// Rank r owns half r. Per chunk the peer copies its contribution into a slot; the owner
// reduces its own data with the slot into a result slot and its own receive buffer; the peer
// copies the result slot into its receive buffer. Slots are 4 x C bytes per direction.
//   MODE 0: plain memcpy/loops; MODE 1: non-temporal stores into the receive buffers;
//   MODE 2: as 1, with the reduction writing the result slot and the receive buffer at once.
// Build: g++ -O3 -march=native -std=c++20 -DMODE=2 staging_proto.cc -o proto; ./proto C
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#ifndef MODE
#define MODE 2
#endif

struct alignas(64) Counter {
  std::atomic<uint64_t> v{0};
};
struct Shared {
  Counter contribWritten[2], contribRead[2], resultWritten[2], resultRead[2];
};

static void sum(float* d, const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = a[i] + b[i];
}

static void ntCopy(char* d, const char* s, size_t n) {
  for (size_t i = 0; i < n; i += 32) {
    _mm256_stream_ps(reinterpret_cast<float*>(d + i),
                     _mm256_load_ps(reinterpret_cast<const float*>(s + i)));
  }
  _mm_sfence();
}

static void sumTwice(float* slot, float* nt, const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    __m256 x = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_load_ps(b + i));
    _mm256_store_ps(slot + i, x);
    _mm256_stream_ps(nt + i, x);
  }
  _mm_sfence();
}

static void copyOut(char* d, const char* s, size_t n) {
  if (MODE == 0) {
    std::memcpy(d, s, n);
  } else {
    ntCopy(d, s, n);
  }
}

int main(int argc, char** argv) {
  const size_t C = argc > 1 ? std::atol(argv[1]) : (1 << 20), K = 4;
  const size_t bytes = size_t{256} << 20, half = bytes / 2, chunks = half / C;
  char* shm = static_cast<char*>(
      mmap(nullptr, 4096 + 4 * K * C, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  Shared* S = new (shm) Shared();
  auto slot = [&](int kind, int r, size_t i) {
    return shm + 4096 + ((kind * 2 + r) * K + i % K) * C;
  };
  const int r = fork() == 0 ? 1 : 0, p = 1 - r;
  char* send = static_cast<char*>(std::aligned_alloc(2 << 20, bytes));
  char* recv = static_cast<char*>(std::aligned_alloc(2 << 20, bytes));
  madvise(send, bytes, MADV_HUGEPAGE);
  madvise(recv, bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < bytes / 4; ++i) reinterpret_cast<float*>(send)[i] = 1.0f;
  std::memset(recv, 0, bytes);
  uint64_t base = 0;
  double best = 1e9;
  for (int it = 0; it < 12; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    char* mine = send + r * half;
    char* theirs = send + p * half;
    size_t made = 0, reduced = 0, got = 0;
    while (got < chunks || reduced < chunks) {
      if (made < chunks && S->contribRead[p].v.load(std::memory_order_acquire) + K > base + made) {
        std::memcpy(slot(0, r, made), theirs + made * C, C);
        S->contribWritten[r].v.store(base + ++made, std::memory_order_release);
      }
      if (reduced < chunks &&
          S->contribWritten[p].v.load(std::memory_order_acquire) > base + reduced &&
          S->resultRead[p].v.load(std::memory_order_acquire) + K > base + reduced) {
        float* out = reinterpret_cast<float*>(slot(1, r, reduced));
        float* dst = reinterpret_cast<float*>(recv + r * half + reduced * C);
        const float* a = reinterpret_cast<const float*>(mine + reduced * C);
        const float* b = reinterpret_cast<const float*>(slot(0, p, reduced));
        if (MODE == 2) {
          sumTwice(out, dst, a, b, C / 4);
        } else {
          sum(out, a, b, C / 4);
          copyOut(reinterpret_cast<char*>(dst), reinterpret_cast<char*>(out), C);
        }
        ++reduced;
        S->contribRead[r].v.store(base + reduced, std::memory_order_release);
        S->resultWritten[r].v.store(base + reduced, std::memory_order_release);
      }
      if (got < chunks && S->resultWritten[p].v.load(std::memory_order_acquire) > base + got) {
        copyOut(recv + p * half + got * C, slot(1, p, got), C);
        S->resultRead[r].v.store(base + ++got, std::memory_order_release);
      }
    }
    base += chunks;
    while (S->resultRead[p].v.load() < base || S->contribRead[p].v.load() < base) _mm_pause();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (it >= 2 && t < best) best = t;
  }
  const float* out = reinterpret_cast<const float*>(recv);
  if (out[12345] != 2.0f || out[bytes / 4 - 7] != 2.0f) std::printf("WRONG RESULT\n");
  if (r == 0) {
    std::printf("MODE=%d C=%zu best %.1f ms busbw %.2f GB/s\n", MODE, C, best * 1e3,
                bytes / best / 1e9);
    wait(nullptr);
  }
  return 0;
}

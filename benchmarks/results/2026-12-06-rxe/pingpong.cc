// braid 8 B ping-pong between two processes (blocking braidSend/braidRecv), a fixed number of
// iterations, each round trip timed: prints the median (perftest's t_typical) and the mean
// one-way time. Build: g++ -O2 -std=c++20 -Iinclude pingpong.cc -Lbuild -lbraid -o bpp
// Run: BRAID_TRANSPORTS=ib ./bpp ITERS [BYTES]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "braid/braid.h"
int main(int argc, char** argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 5000;
  int bytes = argc > 2 ? atoi(argv[2]) : 8;
  int ready[2];
  if (pipe(ready) != 0) return 1;
  pid_t child = fork();
  int rank = child == 0 ? 1 : 0;
  braidUniqueId id;
  if (rank == 0) {
    braidGetUniqueId(&id);
    if (write(ready[1], &id, sizeof id) < 0) return 1;
  } else if (read(ready[0], &id, sizeof id) < 0)
    return 1;
  braidComm_t c;
  if (braidCommInitRank(&c, 2, id, rank) != braidSuccess) {
    fprintf(stderr, "init\n");
    return 1;
  }
  std::vector<char> buf(bytes + 1, 1);
  std::vector<double> t(iters);
  for (int w = 0; w < 2; ++w)
    for (int i = 0; i < iters; ++i) {
      auto a = std::chrono::steady_clock::now();
      if (rank == 0) {
        braidSend(buf.data(), bytes, braidUint8, 1, c, nullptr);
        braidRecv(buf.data(), bytes, braidUint8, 1, c, nullptr);
      } else {
        braidRecv(buf.data(), bytes, braidUint8, 0, c, nullptr);
        braidSend(buf.data(), bytes, braidUint8, 0, c, nullptr);
      }
      t[i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() /
          2;
    }
  if (rank == 0) {
    double sum = 0;
    for (double x : t) sum += x;
    std::sort(t.begin(), t.end());
    printf("braid pp %d B: typical %.2f avg %.2f p99 %.2f us one-way\n", bytes, t[iters / 2],
           sum / iters, t[iters * 99 / 100]);
  }
  braidCommDestroy(c);
  if (rank == 0) waitpid(child, nullptr, 0);
  return 0;
}

#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char** argv) {
  int secs = argc > 1 ? atoi(argv[1]) : 20;
  size_t n = 64 << 20;
  for (int c = 0; c < 2; c++)
    if (fork() == 0) {
      cpu_set_t s;
      CPU_ZERO(&s);
      CPU_SET(c, &s);
      sched_setaffinity(0, sizeof s, &s);
      char *a = aligned_alloc(1 << 21, n), *b = aligned_alloc(1 << 21, n);
      memset(a, 1, n);
      memset(b, 2, n);
      double t0 = now(), end = t0 + secs;
      double last = t0;
      size_t bytes = 0;
      while (1) {
        memcpy(b, a, n);
        bytes += n;
        double t = now();
        if (t - last >= 1.0) {
          printf("%d %.1f %.2f\n", c, t - t0, bytes / (t - last) / 1e9);
          fflush(stdout);
          bytes = 0;
          last = t;
        }
        if (t > end) break;
      }
      _exit(0);
    }
  while (wait(0) > 0)
    ;
  return 0;
}

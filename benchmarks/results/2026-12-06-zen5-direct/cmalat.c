#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
int main() {
  size_t n = 1 << 20;
  char* buf = mmap(0, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  memset(buf, 1, n);
  char* remote = malloc(n);
  memset(remote, 2, n);
  pid_t c = fork();
  if (c == 0) {
    while (1) pause();
  }
  char* loc = malloc(n);
  memset(loc, 0, n);
  for (size_t sz = 4096; sz <= n; sz *= 4) {
    int it = 2000;
    double t0 = now();
    for (int i = 0; i < it; i++) {
      struct iovec l = {loc, sz}, r = {remote, sz};
      if (process_vm_readv(c, &l, 1, &r, 1, 0) != (ssize_t)sz) {
        perror("rv");
        return 1;
      }
    }
    double t = (now() - t0) / it;
    printf("readv %7zu: %.2f us  %.2f GB/s\n", sz, t * 1e6, sz / t / 1e9);
    t0 = now();
    for (int i = 0; i < it; i++) {
      memcpy(loc, remote, sz);
    }
    t = (now() - t0) / it;
    printf("memcpy %7zu: %.2f us  %.2f GB/s\n", sz, t * 1e6, sz / t / 1e9);
  }
  kill(c, 9);
  wait(0);
  return 0;
}

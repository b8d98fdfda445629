/* A downstream program: a job of one rank (no launcher), one allreduce, destroy. Prints "ok". */
#include <braid/braid.h>
#include <stdio.h>

int main(void) {
  braidComm_t comm;
  float x = 3.0f, y = 0.0f;
  int version = 0;
  if (braidGetVersion(&version) != braidSuccess || version != BRAID_VERSION_CODE) return 1;
  if (braidCommInitFromEnv(&comm) != braidSuccess) {
    fprintf(stderr, "init: %s\n", braidGetLastError(NULL));
    return 1;
  }
  if (braidAllReduce(&x, &y, 1, braidFloat32, braidSum, comm, NULL) != braidSuccess || y != 3.0f) {
    fprintf(stderr, "allreduce: %s\n", braidGetLastError(comm));
    return 1;
  }
  if (braidCommDestroy(comm) != braidSuccess) return 1;
  puts("ok");
  return 0;
}

// A downstream C++ program (braid.hpp): a job of one rank, one allreduce. Prints "ok".
#include <braid/braid.hpp>
#include <cstdio>
#include <vector>

int main() {
  auto comm = braid::Communicator::fromEnv();
  std::vector<float> x(4, 2.0f), y(4);
  comm.allReduce(x, y);
  if (y[3] != 2.0f) return 1;
  std::puts("ok");
  return 0;
}

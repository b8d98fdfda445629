// braidCommInitFromEnv's reading of the environment, for braid-info.
#pragma once

#include <string>

namespace braid {

// How braidCommInitFromEnv would join its job in this environment (nothing is started).
struct LaunchDescription {
  bool ok = false;
  std::string launcher;  // whose variables gave rank and size ("no launcher": none)
  int rank = -1, size = -1;
  std::string rendezvous;  // how the ranks meet, when ok
  std::string error;       // what init would refuse, when not ok
};
LaunchDescription describeLaunch();

}  // namespace braid

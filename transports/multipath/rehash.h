// Flow re-hashing, as Google's PLB does it: an ECMP switch picks one of its equal-cost links
// per flow from the flow's headers, so two flows can share a link while another idles, and a
// flow stays where its hash put it for its whole life. When one of a peer's flows carries
// clearly less than its siblings (the other flows between the same two NICs: they cross the
// same fabric) although the sender has data waiting for it, window after window, the policy
// names it; the transport moves it onto new headers (tcp: a new connection from a new source
// port), which the switches hash afresh. The sender's scheduler already gives a slow flow less;
// re-hashing gives the fabric's idle links a chance to carry its share.
//
// Transport-independent and single-threaded; the transport feeds it every tick and carries
// out what it returns. Unit-tested with synthetic rates (tests/unit/multipath_test.cc).
#pragma once

#include <cstdint>
#include <vector>

namespace braid::mp {

struct RehashOptions {
  int64_t windowNs = 200'000'000;  // rates are compared over windows this long
  double lagShare = 0.6;           // below this share of the best sibling's rate: lagging
  int windows = 2;                 // lagging in this many windows in a row: re-hashed
  // A re-hashed flow (and its siblings) is left alone this long: the new flow starts slowly and
  // must show its rate before it is judged again.
  int64_t holdoffNs = 1'000'000'000;
};

class RehashPolicy {
 public:
  RehashPolicy() = default;
  // group[k]: the siblings of path k share a group (same local NIC, same remote NIC).
  RehashPolicy(std::vector<int> group, RehashOptions opt);

  // One tick: bytes[k] handed to path k so far (cumulative), backlogged[k] whether data waited
  // for path k (the network took less than the sender had for it), usable[k] whether it is up.
  // Appends to *out the paths to re-hash now: at most one per group per window.
  void sample(int64_t nowNs, const std::vector<uint64_t>& bytes,
              const std::vector<bool>& backlogged, const std::vector<bool>& usable,
              std::vector<int>* out);
  // Path k was re-hashed or reconnected: its group starts over (with the holdoff).
  void restarted(int path, int64_t nowNs);
  int paths() const { return static_cast<int>(flows_.size()); }
  // Of the last window (bytes/s): path k's rate, and the best of its siblings'.
  double rate(int path) const { return flows_[path].rate; }
  double bestSibling(int path) const { return best_[flows_[path].group]; }

 private:
  struct Flow {
    int group = 0;
    uint64_t startBytes = 0;  // bytes at the window's start
    bool backlogged = true;   // at every tick of the window so far
    bool usable = true;
    int lagging = 0;  // windows in a row
    double rate = 0;  // of the last window, bytes/s
  };
  void closeWindow(int64_t nowNs, std::vector<int>* out);
  RehashOptions opt_;
  std::vector<Flow> flows_;
  std::vector<int64_t> groupQuietUntilNs_;  // holdoff per group
  std::vector<double> best_;                // per group, of the last window
  int64_t windowStartNs_ = -1;
  int groups_ = 0;
};

}  // namespace braid::mp

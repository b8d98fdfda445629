// The sizes that sends above the eager limit announce (an RTS chunk each), matched with the
// receives of a peer, for tcp and ib: a receive at or below the limit waits for eagerly sent
// data and asks for nothing, so without the announcement a larger send to it would wait for
// the receiver's RTR until the timeout. Every send above the limit announces once; a receive
// above it expects exactly one announcement, before or after its data (the chunks may
// overtake the RTS on other paths), so none is left behind.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "transports/multipath/multipath.h"

namespace braid::mp {

// The RTS chunk of a send (`type`: the transport's frame type for it).
inline Chunk announcement(uint8_t type, uint64_t tag, uint64_t bytes) {
  Chunk c;
  c.type = type;
  c.tag = tag;
  c.total = bytes;
  return c;
}

class Announcements {
 public:
  // A receive of `bytes` is posted for `tag`: false when an announcement of another size came
  // before it (*announced: that size).
  bool posted(uint64_t tag, uint64_t bytes, uint64_t eagerBytes, uint64_t* announced) {
    if (auto a = early_.find(tag); a != early_.end()) {
      *announced = a->second;
      early_.erase(a);
      return *announced == bytes;
    }
    if (bytes > eagerBytes) ++owed_[tag];  // its announcement is still to come
    return true;
  }

  enum class Verdict {
    kExpected,  // a receive above the eager limit was posted for it (it may even be done)
    kEarly,     // no receive yet: kept for the one to come
    kMismatch,  // the receive waiting on the tag (`waiting`) has another size
  };
  // An announcement of `bytes` came for `tag`; waiting: the size of the receive posted on
  // that tag and not done, if any (else negative).
  Verdict arrived(uint64_t tag, uint64_t bytes, int64_t waiting) {
    if (waiting >= 0 && static_cast<uint64_t>(waiting) != bytes) return Verdict::kMismatch;
    if (auto o = owed_.find(tag); o != owed_.end()) {
      if (--o->second == 0) owed_.erase(o);
      return Verdict::kExpected;
    }
    early_[tag] = bytes;
    return Verdict::kEarly;
  }

  void clear() {
    early_.clear();
    owed_.clear();
  }

 private:
  std::unordered_map<uint64_t, uint64_t> early_;  // tag -> size, no receive posted yet
  std::unordered_map<uint64_t, uint32_t> owed_;   // tag -> receives whose announcement is due
};

}  // namespace braid::mp

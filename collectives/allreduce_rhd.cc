// Halving-doubling allreduce (Rabenseifner): reduce-scatter by recursive halving, then
// all-gather by recursive doubling. It moves the same 2(n-1)/n of the data as the ring but in
// log2(n) steps of large messages instead of 2(n-1) steps, which pays off when ranks share
// cores or when per-message latency is high. Every step's message is cut into chunks and each
// chunk's reduction (and the next step's sends of that range) start as soon as it arrives.
// With n not a power of two, the extra ranks first fold into a partner and get the result
// back at the end. Each element's final value is computed on one rank and then copied to all,
// and partners always compute lower rank OP upper rank: results are bit-identical on every
// rank.
#include <algorithm>

#include "collectives/algorithms.h"
#include "collectives/cost_model.h"
#include "src/core/comm.h"

namespace braid {
namespace {

// A node that produced (or last read) elements [lo, hi).
struct Span {
  size_t lo, hi;
  NodeId node;
};

// Makes `node` wait for every span overlapping [lo, hi).
void after(Schedule* s, const std::vector<Span>& spans, size_t lo, size_t hi, NodeId node) {
  for (const Span& sp : spans) {
    if (sp.lo < hi && lo < sp.hi) s->addDep(sp.node, node);
  }
}

// The chunks of [lo, hi) as ranges (the same on both partners of a step).
std::vector<std::pair<size_t, size_t>> chunks(size_t lo, size_t hi, size_t esz, Schedule* s) {
  std::vector<std::pair<size_t, size_t>> out;
  const size_t len = hi - lo, k = chunksFor(len, esz, s);
  for (size_t j = 0; j < k; ++j) {
    size_t a = lo + partStart(len, k, j), b = a + partSize(len, k, j);
    if (b > a) out.emplace_back(a, b);
  }
  return out;
}

struct Step {
  int partner;
  size_t keepLo, keepHi, sendLo, sendHi;
  std::vector<Span> sends;  // reads of [sendLo, sendHi) from out (empty when read from in)
};

}  // namespace

void allReduceHalvingDoubling(const CollArgs& a, Schedule* s) {
  const int n = s->comm()->nranks(), r = s->comm()->rank();
  const size_t esz = dtypeSize(a.dt), count = a.count, bytes = count * esz;
  auto* out = static_cast<char*>(a.recv);
  const auto* in = static_cast<const char*>(a.send);
  if (n == 1) {
    s->copy(out, in, bytes);
    return;
  }
  int p2 = 1, steps = 0;
  while (p2 * 2 <= n) {
    p2 *= 2;
    ++steps;
  }
  const int rem = n - p2;
  constexpr uint32_t kUnfold = 1;  // slot 0 is unused (the fold's was)
  // Slot of chunk j of step k in phase 0 (reduce-scatter) or 1 (all-gather); phase 2: the
  // fold's chunks.
  auto slot = [&](int phase, int k, size_t j) {
    return static_cast<uint32_t>(2 + ((phase * 32 + k) << 16) + j);
  };
  if (r >= p2) {
    NodeId sent = s->copy(nullptr, nullptr, 0);
    auto fc = chunks(0, count, esz, s);
    for (size_t j = 0; j < fc.size(); ++j) {
      auto [x, y] = fc[j];
      s->addDep(s->send(r - p2, slot(2, 0, j), in + x * esz, (y - x) * esz), sent);
    }
    s->recv(r - p2, kUnfold, out, bytes, {sent});
    return;
  }
  // Received chunks (the fold's, then every step's) go through a few rotating buffers, taken
  // in the order of the steps (a chunk's send waits only on earlier steps): scratch is a few
  // chunks, whatever the size.
  const size_t chunkElems =
      std::max<size_t>(1, chunkBytes(s->comm()->config(), s->comm()->nodes()) / esz);
  RotatingBuffers tmp(s, std::min(count, chunkElems) * esz,
                      count > 0 ? RotatingBuffers::kCount : 0);
  // Receives chunk j of [x, y) from `from` and reduces it with mine (lower rank's first).
  auto reduceIn = [&](int from, uint32_t sl, size_t x, size_t y, const char* own) {
    NodeId tmpFree;
    char* theirs = tmp.next(&tmpFree);
    NodeId rv = s->recv(from, sl, theirs, (y - x) * esz, {tmpFree});
    NodeId red = s->reduce(out + x * esz, r < from ? own : theirs, r < from ? theirs : own, y - x,
                           a.dt, a.op, {rv});
    tmp.readBy(red);
    return red;
  };
  std::vector<Span> ready;  // producers of my current data in `mine`
  const char* mine = in;    // where my partial values live (out once anything was reduced)
  if (r < rem) {
    auto fc = chunks(0, count, esz, s);
    for (size_t j = 0; j < fc.size(); ++j) {
      auto [x, y] = fc[j];
      ready.push_back({x, y, reduceIn(r + p2, slot(2, 0, j), x, y, in + x * esz)});
    }
    mine = out;
  }
  // Reduce-scatter: at step k (partner r ^ mask, mask from p2/2 down to 1) keep one half of
  // the current range, send the other; in the end rank r owns segment r.
  std::vector<Step> done;
  size_t lo = 0, hi = count;
  int k = 0;
  for (int mask = p2 / 2; mask >= 1; mask /= 2, ++k) {
    Step st;
    st.partner = r ^ mask;
    size_t mid = lo + (hi - lo) / 2;
    bool lower = (r & mask) == 0;
    st.keepLo = lower ? lo : mid;
    st.keepHi = lower ? mid : hi;
    st.sendLo = lower ? mid : lo;
    st.sendHi = lower ? hi : mid;
    auto sc = chunks(st.sendLo, st.sendHi, esz, s);
    for (size_t j = 0; j < sc.size(); ++j) {
      auto [x, y] = sc[j];
      NodeId sn = s->send(st.partner, slot(0, k, j), mine + x * esz, (y - x) * esz);
      after(s, ready, x, y, sn);
      if (mine == out) st.sends.push_back({x, y, sn});
    }
    std::vector<Span> next;
    auto kc = chunks(st.keepLo, st.keepHi, esz, s);
    for (size_t j = 0; j < kc.size(); ++j) {
      auto [x, y] = kc[j];
      NodeId red = reduceIn(st.partner, slot(0, k, j), x, y, mine + x * esz);
      after(s, ready, x, y, red);
      next.push_back({x, y, red});
    }
    ready = std::move(next);
    mine = out;
    lo = st.keepLo;
    hi = st.keepHi;
    done.push_back(std::move(st));
  }
  if (a.op == braidAvg) {
    for (Span& sp : ready) {
      sp.node = s->avg(out + sp.lo * esz, sp.hi - sp.lo, a.dt, n, {sp.node});
    }
  }
  // All-gather: the steps in reverse; send what I own, receive the partner's half.
  for (int j = static_cast<int>(done.size()) - 1; j >= 0; --j) {
    const Step& st = done[j];
    auto kc = chunks(st.keepLo, st.keepHi, esz, s);
    for (size_t c = 0; c < kc.size(); ++c) {
      auto [x, y] = kc[c];
      NodeId sn = s->send(st.partner, slot(1, j, c), out + x * esz, (y - x) * esz);
      after(s, ready, x, y, sn);
    }
    auto sc = chunks(st.sendLo, st.sendHi, esz, s);
    for (size_t c = 0; c < sc.size(); ++c) {
      auto [x, y] = sc[c];
      // Overwrites what this rank sent of that range during the reduce-scatter.
      NodeId rv = s->recv(st.partner, slot(1, j, c), out + x * esz, (y - x) * esz);
      after(s, st.sends, x, y, rv);
      ready.push_back({x, y, rv});
    }
  }
  if (r < rem) {
    NodeId sn = s->send(r + p2, kUnfold, out, bytes);
    for (const Span& sp : ready) s->addDep(sp.node, sn);
  }
}

}  // namespace braid

// Flow re-hashing policy (rehash.h).
#include "transports/multipath/rehash.h"

#include <algorithm>

namespace braid::mp {

RehashPolicy::RehashPolicy(std::vector<int> group, RehashOptions opt) : opt_(opt) {
  flows_.resize(group.size());
  for (size_t k = 0; k < group.size(); ++k) {
    flows_[k].group = group[k];
    groups_ = std::max(groups_, group[k] + 1);
  }
  groupQuietUntilNs_.assign(groups_, 0);
  best_.assign(groups_, 0);
}

void RehashPolicy::sample(int64_t nowNs, const std::vector<uint64_t>& bytes,
                          const std::vector<bool>& backlogged, const std::vector<bool>& usable,
                          std::vector<int>* out) {
  if (flows_.empty() || bytes.size() < flows_.size() || backlogged.size() < flows_.size() ||
      usable.size() < flows_.size()) {
    return;
  }
  if (windowStartNs_ >= 0) {
    for (size_t k = 0; k < flows_.size(); ++k) {
      flows_[k].backlogged = flows_[k].backlogged && backlogged[k];
      flows_[k].usable = flows_[k].usable && usable[k];
    }
    if (nowNs - windowStartNs_ < opt_.windowNs) return;
    for (size_t k = 0; k < flows_.size(); ++k) {
      Flow& f = flows_[k];
      // A counter that went back (a new connection counts from zero) gives no rate.
      f.rate = bytes[k] >= f.startBytes ? static_cast<double>(bytes[k] - f.startBytes) * 1e9 /
                                              static_cast<double>(nowNs - windowStartNs_)
                                        : -1;
    }
    closeWindow(nowNs, out);
  }
  windowStartNs_ = nowNs;
  for (size_t k = 0; k < flows_.size(); ++k) {
    flows_[k].startBytes = bytes[k];
    flows_[k].backlogged = backlogged[k];
    flows_[k].usable = usable[k];
  }
}

void RehashPolicy::closeWindow(int64_t nowNs, std::vector<int>* out) {
  // The best rate of each group among its flows that had data waiting the whole window (the
  // network, not the sender, set their pace).
  std::fill(best_.begin(), best_.end(), 0.0);
  std::vector<int> members(groups_, 0);
  for (const Flow& f : flows_) {
    if (!f.usable) continue;
    ++members[f.group];
    if (f.backlogged && f.rate > best_[f.group]) best_[f.group] = f.rate;
  }
  std::vector<int> worst(groups_, -1);
  for (size_t k = 0; k < flows_.size(); ++k) {
    Flow& f = flows_[k];
    const int g = f.group;
    const bool lagging = f.usable && f.backlogged && f.rate >= 0 && members[g] > 1 &&
                         best_[g] > 0 && f.rate < opt_.lagShare * best_[g] &&
                         nowNs >= groupQuietUntilNs_[g];
    f.lagging = lagging ? f.lagging + 1 : 0;
    if (f.lagging < opt_.windows) continue;
    if (worst[g] < 0 || f.rate < flows_[worst[g]].rate) worst[g] = static_cast<int>(k);
  }
  for (int g = 0; g < groups_; ++g) {
    if (worst[g] < 0) continue;
    out->push_back(worst[g]);
    restarted(worst[g], nowNs);
  }
}

void RehashPolicy::restarted(int path, int64_t nowNs) {
  if (path < 0 || static_cast<size_t>(path) >= flows_.size()) return;
  const int g = flows_[path].group;
  groupQuietUntilNs_[g] = std::max(groupQuietUntilNs_[g], nowNs + opt_.holdoffNs);
  for (Flow& f : flows_) {
    if (f.group == g) f.lagging = 0;
  }
}

}  // namespace braid::mp

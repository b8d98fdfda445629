// Reusable, pre-faulted scratch buffers. First-touch page faults cost ~13 us per 4 KiB page on
// the machines we measured, so a collective must not allocate fresh memory on every call.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace braid {

class ScratchPool;

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(std::shared_ptr<ScratchPool> pool, void* p, size_t cap)
      : pool_(std::move(pool)), p_(p), cap_(cap) {}
  ScratchBuffer(ScratchBuffer&& o) noexcept : pool_(std::move(o.pool_)), p_(o.p_), cap_(o.cap_) {
    o.p_ = nullptr;
  }
  ScratchBuffer& operator=(ScratchBuffer&&) = delete;
  ~ScratchBuffer();
  void* data() const { return p_; }

 private:
  std::shared_ptr<ScratchPool> pool_;
  void* p_ = nullptr;
  size_t cap_ = 0;
};

class ScratchPool : public std::enable_shared_from_this<ScratchPool> {
 public:
  ~ScratchPool() {
    for (auto& [p, cap] : free_) std::free(p);
  }
  ScratchBuffer get(size_t bytes) {
    // Whole pages; the best-fitting free buffer is reused when it wastes at most half.
    const size_t cap = (std::max<size_t>(bytes, 1) + 4095) & ~size_t{4095};
    std::vector<void*> smaller;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i) {
        size_t c = free_[i].second;
        if (c >= cap && c / 2 <= cap && (best == free_.size() || c < free_[best].second)) best = i;
      }
      if (best != free_.size()) {
        auto [p, c] = free_[best];
        free_.erase(free_.begin() + static_cast<long>(best));
        return ScratchBuffer(shared_from_this(), p, c);
      }
      // A new buffer: the kept ones smaller than it go (calls growing by steps, as a size
      // sweep does, kept one buffer per step: 5 times the message in all).
      for (auto it = free_.begin(); it != free_.end();) {
        if (it->second < cap) {
          smaller.push_back(it->first);
          it = free_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (void* p : smaller) std::free(p);
    // Large buffers are 2 MiB aligned and asked to be transparent huge pages: fewer faults and
    // TLB misses, and single-copy (CMA) reads of them pin a few folios instead of many pages.
    const bool huge = cap >= kHugeBytes;
    void* p = std::aligned_alloc(huge ? kHugeBytes : 4096,
                                 huge ? (cap + kHugeBytes - 1) & ~(kHugeBytes - 1) : cap);
    if (p == nullptr) throw std::bad_alloc();
    if (huge) madvise(p, cap, MADV_HUGEPAGE);  // advice only: ignored where THP is off
    std::memset(p, 0, cap);                    // pre-fault once
    return ScratchBuffer(shared_from_this(), p, cap);
  }
  // Bytes held for reuse (not in use by a call).
  size_t freeBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t total = 0;
    for (const auto& [p, cap] : free_) total += cap;
    return total;
  }
  void put(void* p, size_t cap) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() >= kKeep) {
      std::free(free_.front().first);
      free_.erase(free_.begin());
    }
    free_.emplace_back(p, cap);
  }

 private:
  static constexpr size_t kKeep = 8;
  static constexpr size_t kHugeBytes = size_t{2} << 20;
  std::mutex mu_;
  std::vector<std::pair<void*, size_t>> free_;
};

inline ScratchBuffer::~ScratchBuffer() {
  if (p_ != nullptr) pool_->put(p_, cap_);
}

}  // namespace braid

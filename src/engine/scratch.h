// Reusable, pre-faulted scratch buffers. First-touch page faults cost ~13 us per 4 KiB page on
// the machines we measured, so a collective must not allocate fresh memory on every call.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
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
    size_t cap = 4096;
    while (cap < bytes) cap <<= 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].second == cap) {
          void* p = free_[i].first;
          free_.erase(free_.begin() + static_cast<long>(i));
          return ScratchBuffer(shared_from_this(), p, cap);
        }
      }
    }
    void* p = std::aligned_alloc(4096, cap);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, cap);  // pre-fault once
    return ScratchBuffer(shared_from_this(), p, cap);
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
  std::mutex mu_;
  std::vector<std::pair<void*, size_t>> free_;
};

inline ScratchBuffer::~ScratchBuffer() {
  if (p_ != nullptr) pool_->put(p_, cap_);
}

}  // namespace braid

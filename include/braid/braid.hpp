// braid C++ wrapper: RAII handles, span-based calls, errors as exceptions (C++ side only).
#pragma once

#if __cplusplus < 202002L
#error "braid.hpp needs C++20 (std::span); braid.h works from C and from any C++ standard"
#endif

#include <braid/braid.h>

#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace braid {

class Error : public std::runtime_error {
 public:
  Error(braidResult_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  braidResult_t code() const noexcept { return code_; }

 private:
  braidResult_t code_;
};

inline void check(braidResult_t r, braidComm_t comm = nullptr) {
  if (r != braidSuccess) {
    throw Error(r, std::string(braidGetErrorString(r)) + ": " + braidGetLastError(comm));
  }
}

// The datatype of T: float, double, and every integer type of 1, 4 or 8 bytes (int, long,
// long long, their unsigned forms, char, int8_t ...). float16 and bfloat16 data go through the
// C API.
template <typename T>
constexpr braidDataType_t dataType() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, char>)
    return braidInt8;
  else if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool> && sizeof(U) == 1)
    return std::is_signed_v<U> ? braidInt8 : braidUint8;
  else if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool> && sizeof(U) == 4)
    return std::is_signed_v<U> ? braidInt32 : braidUint32;
  else if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool> && sizeof(U) == 8)
    return std::is_signed_v<U> ? braidInt64 : braidUint64;
  else if constexpr (std::is_same_v<U, float>)
    return braidFloat32;
  else if constexpr (std::is_same_v<U, double>)
    return braidFloat64;
  else
    static_assert(sizeof(T) == 0, "no braid datatype for this type; use the C API");
}

inline braidUniqueId uniqueId() {
  braidUniqueId id;
  check(braidGetUniqueId(&id));
  return id;
}

class Stream {
 public:
  Stream() { check(braidStreamCreate(&s_)); }
  ~Stream() {
    if (s_ != nullptr) braidStreamDestroy(s_);
  }
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void synchronize() { check(braidStreamSynchronize(s_)); }
  bool done() {
    braidResult_t r = braidStreamQuery(s_);
    if (r == braidInProgress) return false;
    check(r);
    return true;
  }
  braidStream_t get() const { return s_; }

 private:
  braidStream_t s_ = nullptr;
};

// A group: calls made while it lives are fused and start when it ends.
class Group {
 public:
  Group() { check(braidGroupStart()); }
  ~Group() noexcept(false) {
    if (std::uncaught_exceptions() == 0)
      check(braidGroupEnd());
    else
      braidGroupEnd();
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;
};

class Communicator {
 public:
  Communicator(int nranks, const braidUniqueId& id, int rank) {
    check(braidCommInitRank(&c_, nranks, id, rank));
  }
  static Communicator fromEnv() {
    braidComm_t c = nullptr;
    check(braidCommInitFromEnv(&c));
    return Communicator(c);
  }
  ~Communicator() {
    if (c_ != nullptr) braidCommDestroy(c_);
  }
  Communicator(Communicator&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Communicator& operator=(Communicator&& o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const {
    int r;
    check(braidCommUserRank(c_, &r), c_);
    return r;
  }
  int size() const {
    int n;
    check(braidCommCount(c_, &n), c_);
    return n;
  }
  // Collective; an empty result for color BRAID_SPLIT_NOCOLOR.
  Communicator split(int color, int key) {
    braidComm_t child = nullptr;
    check(braidCommSplit(c_, color, key, &child), c_);
    return Communicator(child);
  }
  void abort() {
    if (c_ != nullptr) braidCommAbort(std::exchange(c_, nullptr));
  }
  explicit operator bool() const { return c_ != nullptr; }
  braidComm_t get() const { return c_; }

  template <typename T>
  void allReduce(std::span<const T> send, std::span<T> recv, braidRedOp_t op = braidSum,
                 Stream* s = nullptr) {
    sameSize("allReduce", "recv", recv.size(), send.size());
    check(braidAllReduce(send.data(), recv.data(), send.size(), dataType<T>(), op, c_, st(s)), c_);
  }
  template <typename T>
  void allReduce(std::span<T> inplace, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    check(braidAllReduce(inplace.data(), inplace.data(), inplace.size(), dataType<T>(), op, c_,
                         st(s)),
          c_);
  }
  template <typename T>
  void broadcast(std::span<T> buf, int root, Stream* s = nullptr) {
    check(braidBroadcast(buf.data(), buf.data(), buf.size(), dataType<T>(), root, c_, st(s)), c_);
  }
  // recv is written on the root only (it may be empty elsewhere).
  template <typename T>
  void reduce(std::span<const T> send, std::span<T> recv, int root, braidRedOp_t op = braidSum,
              Stream* s = nullptr) {
    if (root == rank()) sameSize("reduce", "recv (on the root)", recv.size(), send.size());
    check(braidReduce(send.data(), recv.data(), send.size(), dataType<T>(), op, root, c_, st(s)),
          c_);
  }
  template <typename T>
  void allGather(std::span<const T> send, std::span<T> recv, Stream* s = nullptr) {
    sameSize("allGather", "recv", recv.size(), send.size() * size());
    check(braidAllGather(send.data(), recv.data(), send.size(), dataType<T>(), c_, st(s)), c_);
  }
  template <typename T>
  void reduceScatter(std::span<const T> send, std::span<T> recv, braidRedOp_t op = braidSum,
                     Stream* s = nullptr) {
    sameSize("reduceScatter", "send", send.size(), recv.size() * size());
    check(braidReduceScatter(send.data(), recv.data(), recv.size(), dataType<T>(), op, c_, st(s)),
          c_);
  }
  // send and recv hold size() blocks of equal size, one per rank.
  template <typename T>
  void allToAll(std::span<const T> send, std::span<T> recv, Stream* s = nullptr) {
    sameSize("allToAll", "recv", recv.size(), send.size());
    if (send.size() % size() != 0) {
      throw Error(braidInvalidArgument, "allToAll: send has " + std::to_string(send.size()) +
                                            " elements, not a multiple of the " +
                                            std::to_string(size()) + " ranks");
    }
    check(braidAllToAll(send.data(), recv.data(), send.size() / size(), dataType<T>(), c_, st(s)),
          c_);
  }
  // send[sdispls[p], +sendcounts[p]) goes to rank p, which receives it at
  // recv[rdispls[me], +recvcounts[me]); one count and displacement (in elements) per rank.
  template <typename T>
  void allToAllv(std::span<const T> send, std::span<const size_t> sendcounts,
                 std::span<const size_t> sdispls, std::span<T> recv,
                 std::span<const size_t> recvcounts, std::span<const size_t> rdispls,
                 Stream* s = nullptr) {
    const size_t n = static_cast<size_t>(size());
    sameSize("allToAllv", "sendcounts", sendcounts.size(), n);
    sameSize("allToAllv", "sdispls", sdispls.size(), n);
    sameSize("allToAllv", "recvcounts", recvcounts.size(), n);
    sameSize("allToAllv", "rdispls", rdispls.size(), n);
    fits("allToAllv", "send", send.size(), sendcounts, sdispls);
    fits("allToAllv", "recv", recv.size(), recvcounts, rdispls);
    check(braidAllToAllv(send.data(), sendcounts.data(), sdispls.data(), recv.data(),
                         recvcounts.data(), rdispls.data(), dataType<T>(), c_, st(s)),
          c_);
  }
  template <typename T>
  void send(std::span<const T> buf, int peer, Stream* s = nullptr) {
    check(braidSend(buf.data(), buf.size(), dataType<T>(), peer, c_, st(s)), c_);
  }
  template <typename T>
  void recv(std::span<T> buf, int peer, Stream* s = nullptr) {
    check(braidRecv(buf.data(), buf.size(), dataType<T>(), peer, c_, st(s)), c_);
  }
  void barrier(Stream* s = nullptr) { check(braidBarrier(c_, st(s)), c_); }

  // The same calls on std::vector, the element type deduced (allReduce(sendVec, recvVec)).
  template <typename T, typename A, typename B>
  void allReduce(const std::vector<T, A>& send, std::vector<T, B>& recv, braidRedOp_t op = braidSum,
                 Stream* s = nullptr) {
    allReduce(std::span<const T>(send), std::span<T>(recv), op, s);
  }
  template <typename T, typename A>
  void allReduce(std::vector<T, A>& inplace, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    allReduce(std::span<T>(inplace), op, s);
  }
  template <typename T, typename A>
  void broadcast(std::vector<T, A>& buf, int root, Stream* s = nullptr) {
    broadcast(std::span<T>(buf), root, s);
  }
  template <typename T, typename A, typename B>
  void reduce(const std::vector<T, A>& send, std::vector<T, B>& recv, int root,
              braidRedOp_t op = braidSum, Stream* s = nullptr) {
    reduce(std::span<const T>(send), std::span<T>(recv), root, op, s);
  }
  template <typename T, typename A, typename B>
  void allGather(const std::vector<T, A>& send, std::vector<T, B>& recv, Stream* s = nullptr) {
    allGather(std::span<const T>(send), std::span<T>(recv), s);
  }
  template <typename T, typename A, typename B>
  void reduceScatter(const std::vector<T, A>& send, std::vector<T, B>& recv,
                     braidRedOp_t op = braidSum, Stream* s = nullptr) {
    reduceScatter(std::span<const T>(send), std::span<T>(recv), op, s);
  }
  template <typename T, typename A, typename B>
  void allToAll(const std::vector<T, A>& send, std::vector<T, B>& recv, Stream* s = nullptr) {
    allToAll(std::span<const T>(send), std::span<T>(recv), s);
  }
  template <typename T, typename A, typename B>
  void allToAllv(const std::vector<T, A>& send, const std::vector<size_t>& sendcounts,
                 const std::vector<size_t>& sdispls, std::vector<T, B>& recv,
                 const std::vector<size_t>& recvcounts, const std::vector<size_t>& rdispls,
                 Stream* s = nullptr) {
    allToAllv(std::span<const T>(send), std::span<const size_t>(sendcounts),
              std::span<const size_t>(sdispls), std::span<T>(recv),
              std::span<const size_t>(recvcounts), std::span<const size_t>(rdispls), s);
  }
  template <typename T, typename A>
  void send(const std::vector<T, A>& buf, int peer, Stream* s = nullptr) {
    send(std::span<const T>(buf), peer, s);
  }
  template <typename T, typename A>
  void recv(std::vector<T, A>& buf, int peer, Stream* s = nullptr) {
    recv(std::span<T>(buf), peer, s);
  }

  // braidCommRegister / braidCommDeregister (zero-copy over RDMA); the memory must outlive
  // the registration.
  void* registerBuffer(void* buf, size_t bytes) {
    void* h = nullptr;
    check(braidCommRegister(c_, buf, bytes, &h), c_);
    return h;
  }
  void deregisterBuffer(void* handle) { check(braidCommDeregister(c_, handle), c_); }

 private:
  explicit Communicator(braidComm_t c) : c_(c) {}
  static braidStream_t st(Stream* s) { return s ? s->get() : nullptr; }
  static void sameSize(const char* call, const char* what, size_t got, size_t want) {
    if (got != want) {
      throw Error(braidInvalidArgument,
                  std::string(call) + ": " + what + " has " + std::to_string(got) +
                      " elements where the call needs " + std::to_string(want));
    }
  }
  // Every block [displs[p], +counts[p]) lies inside a buffer of `have` elements.
  static void fits(const char* call, const char* what, size_t have, std::span<const size_t> counts,
                   std::span<const size_t> displs) {
    for (size_t p = 0; p < counts.size(); ++p) {
      if (displs[p] > have || counts[p] > have - displs[p]) {
        throw Error(braidInvalidArgument,
                    std::string(call) + ": " + what + "'s block for rank " + std::to_string(p) +
                        " (" + std::to_string(displs[p]) + " + " + std::to_string(counts[p]) +
                        " elements) goes past its " + std::to_string(have) + " elements");
      }
    }
  }
  braidComm_t c_ = nullptr;
};

}  // namespace braid

// braid C++ wrapper: RAII handles, span-based calls, errors as exceptions (C++ side only).
#pragma once

#if __cplusplus < 202002L
#error "braid.hpp needs C++20 (concepts, ranges, std::span); braid.h works from C99 and C++11 on"
#else

#include <braid/braid.h>

#include <concepts>
#include <cstddef>
#include <exception>
#include <ranges>
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
    static_assert(sizeof(T) == 0,
                  "no braid datatype for this element type: braid.hpp maps 8-, 32- and 64-bit "
                  "integers, float and double (float16 and bfloat16 data: the C API with "
                  "braidFloat16 or braidBfloat16; 16-bit integers have no braid datatype)");
}

namespace detail {

// A buffer: a contiguous range with a size (std::vector, std::array, std::span, a C array...).
template <typename B>
concept Input = std::ranges::contiguous_range<const B> && std::ranges::sized_range<const B>;
// A buffer calls write: its elements are not const, and it is an lvalue or a view (a span),
// not a temporary container whose results would be lost.
template <typename B>
concept Output = std::ranges::contiguous_range<B> && std::ranges::sized_range<B> &&
                 !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<B> > > &&
                 (std::is_lvalue_reference_v<B> || std::ranges::borrowed_range<B>);
template <typename B>
using Element = std::remove_cv_t<std::ranges::range_value_t<std::remove_reference_t<B> > >;
template <typename S, typename R>
concept SameElement = std::same_as<Element<S>, Element<R> >;
template <typename B>
concept Counts = Input<B> && std::same_as<Element<B>, size_t>;

template <typename B>
auto* ptr(B&& b) {
  return std::ranges::data(b);
}
template <typename B>
size_t len(const B& b) {
  return static_cast<size_t>(std::ranges::size(b));
}

}  // namespace detail

// A buffer as the (pointer, element count) arguments of the calls below.
#define BRAID_HPP_BUF(b) ::braid::detail::ptr(b), ::braid::detail::len(b)

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
  Group() : exceptions_(std::uncaught_exceptions()) { check(braidGroupStart()); }
  // An exception leaving the group's scope (a wrapper's size check, or the program's own)
  // abandons the group: nothing of it runs, and communicators with calls in it fail, so their
  // peers are told instead of waiting for calls this rank will not make.
  ~Group() noexcept(false) {
    if (std::uncaught_exceptions() > exceptions_) {
      braidGroupAbandon("an exception left the scope of a braid::Group");
      braidGroupEnd();
    } else {
      check(braidGroupEnd());
    }
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

 private:
  int exceptions_;  // in flight when it began (a Group made in a destructor during unwinding)
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
  // Destroys it now (the destructor does too, and cannot report): throws braid::Error when
  // some of what this rank sent last may not have arrived.
  void destroy() {
    if (c_ != nullptr) check(braidCommDestroy(std::exchange(c_, nullptr)));
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

  // Buffers are any contiguous range: std::vector, std::array, std::span, a C array...; the
  // element type gives the datatype (dataType), the same for send and receive. Receive
  // buffers must be writable (a std::span<const T> there does not compile). With the element
  // type given, std::span parameters take pointer and count too: send<int>({&x, 1}, peer).
  template <detail::Input S, detail::Output R>
  requires detail::SameElement<S, R>
  void allReduce(const S& send, R&& recv, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doAllReduce(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), type<S>(), op, s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void allReduce(std::span<const T> send, std::span<T> recv,
                                               braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doAllReduce(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), dataType<T>(), op, s);
  }
  template <detail::Output B>
  void allReduce(B&& inplace, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doAllReduce(BRAID_HPP_BUF(inplace), BRAID_HPP_BUF(inplace), type<B>(), op, s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void allReduce(std::span<T> inplace, braidRedOp_t op = braidSum,
                                               Stream* s = nullptr) {
    doAllReduce(BRAID_HPP_BUF(inplace), BRAID_HPP_BUF(inplace), dataType<T>(), op, s);
  }
  template <detail::Output B>
  void broadcast(B&& buf, int root, Stream* s = nullptr) {
    check(braidBroadcast(detail::ptr(buf), detail::ptr(buf), detail::len(buf), type<B>(), root, c_,
                         st(s)),
          c_);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void broadcast(std::span<T> buf, int root, Stream* s = nullptr) {
    check(braidBroadcast(buf.data(), buf.data(), buf.size(), dataType<T>(), root, c_, st(s)), c_);
  }
  // recv is written on the root only (it may be empty elsewhere).
  template <detail::Input S, detail::Output R>
  requires detail::SameElement<S, R>
  void reduce(const S& send, R&& recv, int root, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doReduce(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), type<S>(), root, op, s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void reduce(std::span<const T> send, std::span<T> recv, int root,
                                            braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doReduce(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), dataType<T>(), root, op, s);
  }
  // The root comes before the op, as in braidReduce: reduce(send, recv, braidMax) would have
  // summed to the root numbered braidMax (the C enum converts to int), so it does not compile.
  template <detail::Input S, detail::Output R>
  void reduce(const S&, R&&, braidRedOp_t, braidRedOp_t = braidSum, Stream* = nullptr) = delete;
  template <typename T>
  void reduce(std::span<const T>, std::span<T>, braidRedOp_t, braidRedOp_t = braidSum,
              Stream* = nullptr) = delete;
  template <detail::Input S, detail::Output R>
  requires detail::SameElement<S, R>
  void allGather(const S& send, R&& recv, Stream* s = nullptr) {
    doAllGather(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), type<S>(), s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void allGather(std::span<const T> send, std::span<T> recv,
                                               Stream* s = nullptr) {
    doAllGather(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), dataType<T>(), s);
  }
  template <detail::Input S, detail::Output R>
  requires detail::SameElement<S, R>
  void reduceScatter(const S& send, R&& recv, braidRedOp_t op = braidSum, Stream* s = nullptr) {
    doReduceScatter(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), type<S>(), op, s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void reduceScatter(std::span<const T> send, std::span<T> recv,
                                                   braidRedOp_t op = braidSum,
                                                   Stream* s = nullptr) {
    doReduceScatter(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), dataType<T>(), op, s);
  }
  // send and recv hold size() blocks of equal size, one per rank.
  template <detail::Input S, detail::Output R>
  requires detail::SameElement<S, R>
  void allToAll(const S& send, R&& recv, Stream* s = nullptr) {
    doAllToAll(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), type<S>(), s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void allToAll(std::span<const T> send, std::span<T> recv,
                                              Stream* s = nullptr) {
    doAllToAll(BRAID_HPP_BUF(send), BRAID_HPP_BUF(recv), dataType<T>(), s);
  }
  // send[sdispls[p], +sendcounts[p]) goes to rank p, which receives it at
  // recv[rdispls[me], +recvcounts[me]); one count and displacement (in elements) per rank,
  // each a range of size_t.
  template <detail::Input S, detail::Counts SC, detail::Counts SD, detail::Output R,
            detail::Counts RC, detail::Counts RD>
  requires detail::SameElement<S, R>
  void allToAllv(const S& send, const SC& sendcounts, const SD& sdispls, R&& recv,
                 const RC& recvcounts, const RD& rdispls, Stream* s = nullptr) {
    doAllToAllv(BRAID_HPP_BUF(send), BRAID_HPP_BUF(sendcounts), BRAID_HPP_BUF(sdispls),
                BRAID_HPP_BUF(recv), BRAID_HPP_BUF(recvcounts), BRAID_HPP_BUF(rdispls), type<S>(),
                s);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void allToAllv(std::span<const T> send,
                                               std::span<const size_t> sendcounts,
                                               std::span<const size_t> sdispls, std::span<T> recv,
                                               std::span<const size_t> recvcounts,
                                               std::span<const size_t> rdispls,
                                               Stream* s = nullptr) {
    doAllToAllv(BRAID_HPP_BUF(send), BRAID_HPP_BUF(sendcounts), BRAID_HPP_BUF(sdispls),
                BRAID_HPP_BUF(recv), BRAID_HPP_BUF(recvcounts), BRAID_HPP_BUF(rdispls),
                dataType<T>(), s);
  }
  template <detail::Input B>
  void send(const B& buf, int peer, Stream* s = nullptr) {
    check(braidSend(detail::ptr(buf), detail::len(buf), type<B>(), peer, c_, st(s)), c_);
  }
  template <typename T>
  void send(std::span<const T> buf, int peer, Stream* s = nullptr) {
    check(braidSend(buf.data(), buf.size(), dataType<T>(), peer, c_, st(s)), c_);
  }
  template <detail::Output B>
  void recv(B&& buf, int peer, Stream* s = nullptr) {
    check(braidRecv(detail::ptr(buf), detail::len(buf), type<B>(), peer, c_, st(s)), c_);
  }
  template <typename T>
  requires(!std::is_const_v<T>) void recv(std::span<T> buf, int peer, Stream* s = nullptr) {
    check(braidRecv(buf.data(), buf.size(), dataType<T>(), peer, c_, st(s)), c_);
  }
  void barrier(Stream* s = nullptr) { check(braidBarrier(c_, st(s)), c_); }

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
  void doAllReduce(const void* in, size_t n, void* out, size_t outN, braidDataType_t dt,
                   braidRedOp_t op, Stream* s) {
    sameSize("allReduce", "recv", outN, n);
    check(braidAllReduce(in, out, n, dt, op, c_, st(s)), c_);
  }
  void doReduce(const void* in, size_t n, void* out, size_t outN, braidDataType_t dt, int root,
                braidRedOp_t op, Stream* s) {
    if (root == rank()) sameSize("reduce", "recv (on the root)", outN, n);
    check(braidReduce(in, out, n, dt, op, root, c_, st(s)), c_);
  }
  void doAllGather(const void* in, size_t n, void* out, size_t outN, braidDataType_t dt,
                   Stream* s) {
    sameSize("allGather", "recv", outN, n * static_cast<size_t>(size()));
    check(braidAllGather(in, out, n, dt, c_, st(s)), c_);
  }
  void doReduceScatter(const void* in, size_t n, void* out, size_t outN, braidDataType_t dt,
                       braidRedOp_t op, Stream* s) {
    sameSize("reduceScatter", "send", n, outN * static_cast<size_t>(size()));
    check(braidReduceScatter(in, out, outN, dt, op, c_, st(s)), c_);
  }
  void doAllToAll(const void* in, size_t n, void* out, size_t outN, braidDataType_t dt, Stream* s) {
    const auto ranks = static_cast<size_t>(size());
    sameSize("allToAll", "recv", outN, n);
    if (n % ranks != 0) {
      throw Error(braidInvalidArgument,
                  "invalid argument: allToAll: send has " + std::to_string(n) +
                      " elements, not a multiple of the " + std::to_string(ranks) + " ranks");
    }
    check(braidAllToAll(in, out, n / ranks, dt, c_, st(s)), c_);
  }
  void doAllToAllv(const void* in, size_t n, const size_t* sc, size_t scN, const size_t* sd,
                   size_t sdN, void* out, size_t outN, const size_t* rc, size_t rcN,
                   const size_t* rd, size_t rdN, braidDataType_t dt, Stream* s) {
    const auto ranks = static_cast<size_t>(size());
    sameSize("allToAllv", "sendcounts", scN, ranks);
    sameSize("allToAllv", "sdispls", sdN, ranks);
    sameSize("allToAllv", "recvcounts", rcN, ranks);
    sameSize("allToAllv", "rdispls", rdN, ranks);
    fits("allToAllv", "send", n, sc, sd, ranks);
    fits("allToAllv", "recv", outN, rc, rd, ranks);
    check(braidAllToAllv(in, sc, sd, out, rc, rd, dt, c_, st(s)), c_);
  }
  template <typename B>
  static constexpr braidDataType_t type() {
    return dataType<detail::Element<B> >();
  }
  // (Errors found here carry the C API's "invalid argument: " prefix too.)
  static void sameSize(const char* call, const char* what, size_t got, size_t want) {
    if (got != want) {
      throw Error(braidInvalidArgument, std::string("invalid argument: ") + call + ": " + what +
                                            " has " + std::to_string(got) +
                                            " elements where the call needs " +
                                            std::to_string(want));
    }
  }
  // Every block [displs[p], +counts[p]) lies inside a buffer of `have` elements.
  static void fits(const char* call, const char* what, size_t have, const size_t* counts,
                   const size_t* displs, size_t n) {
    for (size_t p = 0; p < n; ++p) {
      if (displs[p] > have || counts[p] > have - displs[p]) {
        throw Error(braidInvalidArgument,
                    std::string("invalid argument: ") + call + ": " + what + "'s block for rank " +
                        std::to_string(p) + " (" + std::to_string(displs[p]) + " + " +
                        std::to_string(counts[p]) + " elements) goes past its " +
                        std::to_string(have) + " elements");
      }
    }
  }
  braidComm_t c_ = nullptr;
};

}  // namespace braid

#undef BRAID_HPP_BUF

#endif  // C++20

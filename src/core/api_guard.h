// Wraps the body of a C entry point: exceptions become error codes, errors are recorded.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <new>

#include "src/core/handles.h"

namespace braid {

template <typename Fn>
braidResult_t guard(const std::shared_ptr<Comm>& comm, Fn&& fn) {
  try {
    return report(fn(), comm);
  } catch (const std::bad_alloc&) {
    return report(systemError("out of memory"), comm);
  } catch (const std::exception& e) {
    return report(Status(braidUnhandledError, fmt::format("unexpected exception: {}", e.what())),
                  comm);
  } catch (...) {
    return report(Status(braidUnhandledError, "unexpected exception"), comm);
  }
}

inline braidComm_t makeCommHandle(std::shared_ptr<Comm> c) {
  auto* h = new braidComm{std::move(c)};
  registerHandle(h);
  return h;
}

}  // namespace braid

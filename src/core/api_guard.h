// Wraps the body of a C entry point: exceptions become error codes, errors are recorded.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <new>
#include <system_error>

#include "src/core/handles.h"
#include "src/core/log.h"

namespace braid {

// Runs fn, exceptions turned into errors (a thread or memory the system refused).
template <typename Fn>
Status statusOf(Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return systemError("out of memory");
  } catch (const std::system_error& e) {
    // A thread or lock the system refused (std::thread: EAGAIN at a process/thread or memory
    // limit).
    const bool limit = e.code() == std::errc::resource_unavailable_try_again;
    return systemError(fmt::format("{}{}", e.what(),
                                   limit ? " (a system limit: threads or processes "
                                           "(ulimit -u), address space (ulimit -v), or "
                                           "memory?)"
                                         : ""));
  } catch (const std::exception& e) {
    return Status(braidUnhandledError, fmt::format("unexpected exception: {}", e.what()));
  } catch (...) {
    return Status(braidUnhandledError, "unexpected exception");
  }
}

template <typename Fn>
braidResult_t guard(const std::shared_ptr<Comm>& comm, Fn&& fn) {
  // Log lines of this thread carry the rank of the communicator it works for (an application's
  // second thread, or one that serves several communicators).
  if (comm) logSetThreadRank(comm->rank());
  return report(statusOf(std::forward<Fn>(fn)), comm);
}

inline braidComm_t makeCommHandle(std::shared_ptr<Comm> c) {
  auto* h = new braidComm{std::move(c)};
  registerHandle(h);
  return h;
}

}  // namespace braid

// Wraps the body of a C entry point: exceptions become error codes, errors are recorded.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <new>
#include <system_error>

#include "src/core/handles.h"
#include "src/core/log.h"

namespace braid {

template <typename Fn>
braidResult_t guard(const std::shared_ptr<Comm>& comm, Fn&& fn) {
  // Log lines of this thread carry the rank of the communicator it works for (an application's
  // second thread, or one that serves several communicators).
  if (comm) logSetThreadRank(comm->rank());
  try {
    return report(fn(), comm);
  } catch (const std::bad_alloc&) {
    return report(systemError("out of memory"), comm);
  } catch (const std::system_error& e) {
    // A thread or lock the system refused (std::thread: EAGAIN at a process/thread or memory
    // limit).
    const bool limit = e.code() == std::errc::resource_unavailable_try_again;
    return report(systemError(fmt::format("{}{}", e.what(),
                                          limit ? " (a system limit: threads or processes "
                                                  "(ulimit -u), address space (ulimit -v), or "
                                                  "memory?)"
                                                : "")),
                  comm);
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

// The C ABI's error boundary: the thread-local last-error message and the guard that turns every
// C++ exception into an sf_status, so that none crosses into C.
#pragma once
#include <new>
#include <string>

#include "core/error.hpp"
#include "sparseflow/sparseflow.h"

namespace sf::capi {

// The message sf_last_error() returns on this thread.
const char* last_error() noexcept;
void clear_error() noexcept;
// Sets the message to "<fn>: <what>" (what alone when it already starts with fn) and returns
// status. Never throws: without memory for the message it is left empty.
sf_status set_error(sf_status status, const char* fn, const char* what) noexcept;

// Throws Error(InvalidArgument) "<fn>: <message>" from argument checks.
template <typename... Args>
[[noreturn]] void reject(const char* fn, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(Status::InvalidArgument,
              fmt::format("{}: {}", fn, fmt::format(f, std::forward<Args>(args)...)));
}

// Runs body(), which throws on failure. Returns SF_OK (clearing the message) or the exception's
// status with its message.
template <typename Body>
sf_status guard(const char* fn, Body&& body) noexcept {
  try {
    body();
    clear_error();
    return SF_OK;
  } catch (const Error& e) {
    return set_error(static_cast<sf_status>(e.status()), fn, e.what());
  } catch (const std::bad_alloc&) {
    return set_error(SF_ERR_OUT_OF_MEMORY, fn, "out of host memory");
  } catch (const std::exception& e) {
    return set_error(SF_ERR_INTERNAL, fn, e.what());
  } catch (...) {
    return set_error(SF_ERR_INTERNAL, fn, "unknown exception");
  }
}

}  // namespace sf::capi

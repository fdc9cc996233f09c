#include "capi/error_state.hpp"

#include <cstring>

namespace sf::capi {

namespace {
// One message per thread: a failing call on one thread never changes what another one reads.
thread_local std::string t_last_error;
}  // namespace

const char* last_error() noexcept {
  return t_last_error.c_str();
}

void clear_error() noexcept {
  t_last_error.clear();
}

sf_status set_error(sf_status status, const char* fn, const char* what) noexcept {
  try {
    const size_t n = std::strlen(fn);
    const bool named = std::strncmp(what, fn, n) == 0 && what[n] == ':';
    t_last_error.clear();
    if (!named) t_last_error.append(fn).append(": ");
    t_last_error.append(what);
  } catch (...) {
    t_last_error.clear();  // no memory for the message: the status still says what happened
  }
  return status;
}

}  // namespace sf::capi

#include "core/error.hpp"

namespace sf {

const char* status_name(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::InvalidArgument: return "invalid argument";
    case Status::UnsupportedShape: return "unsupported shape";
    case Status::Io: return "i/o error";
    case Status::Format: return "malformed file";
    case Status::OutOfMemory: return "out of memory";
    case Status::Cuda: return "CUDA error";
    case Status::NoDevice: return "no GPU device";
    case Status::NotFound: return "not found";
    case Status::Internal: return "internal error";
  }
  return "unknown status";
}

}  // namespace sf

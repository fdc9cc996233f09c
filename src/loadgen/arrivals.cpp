#include "loadgen/arrivals.hpp"

#include <cmath>
#include <random>

#include "core/error.hpp"

namespace sf::loadgen {

std::vector<double> poisson_arrivals(int64_t n, double rate, uint64_t seed) {
  if (n < 0) fail(Status::InvalidArgument, "the number of requests must be >= 0, got {}", n);
  if (!(rate > 0))
    fail(Status::InvalidArgument, "the request rate must be > 0 requests/s (or inf), got {}", rate);
  std::vector<double> at(size_t(n), 0.0);
  if (std::isinf(rate)) return at;
  std::mt19937_64 rng(seed);
  double t = 0;
  for (int64_t i = 1; i < n; ++i) {
    const double u = double(rng() >> 11) * 0x1p-53;  // [0, 1) with 53 random bits
    t += -std::log1p(-u) / rate;
    at[size_t(i)] = t;
  }
  return at;
}

}  // namespace sf::loadgen

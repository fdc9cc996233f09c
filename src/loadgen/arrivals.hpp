// When each request of a load test is sent: a Poisson process at a given rate, or all at once.
// Deterministic from the seed on every platform: the gaps come from mt19937_64 (whose output the
// standard fixes) through -log(1 - u) / rate, not from std::exponential_distribution (whose
// algorithm each standard library picks).
#pragma once
#include <cstdint>
#include <vector>

namespace sf::loadgen {

// Seconds from the start of the run at which each of `n` requests arrives, ascending. The first
// arrives at 0 and the gaps after it are exponential with mean 1 / rate; rate = +infinity sends
// every request at 0. Throws Error(InvalidArgument) for n < 0 or a rate that is not > 0.
std::vector<double> poisson_arrivals(int64_t n, double rate, uint64_t seed);

}  // namespace sf::loadgen

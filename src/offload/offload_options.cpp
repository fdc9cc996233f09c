#include "offload/offload_options.hpp"

namespace sf::offload {

namespace {
constexpr std::pair<OffloadPolicy, std::string_view> kPolicies[] = {
    {OffloadPolicy::Fetch, "fetch"}, {OffloadPolicy::Cpu, "cpu"}, {OffloadPolicy::Auto, "auto"},
    {OffloadPolicy::Stream, "stream"}};
constexpr std::pair<PredictorMode, std::string_view> kPredictors[] = {{PredictorMode::Model, "model"},
                                                                     {PredictorMode::Exact, "exact"}};
}  // namespace

std::string_view policy_name(OffloadPolicy p) {
  for (auto [v, n] : kPolicies)
    if (v == p) return n;
  return "?";
}
std::optional<OffloadPolicy> policy_from_name(std::string_view s) {
  for (auto [v, n] : kPolicies)
    if (n == s) return v;
  return std::nullopt;
}
std::string_view predictor_mode_name(PredictorMode p) {
  for (auto [v, n] : kPredictors)
    if (v == p) return n;
  return "?";
}
std::optional<PredictorMode> predictor_mode_from_name(std::string_view s) {
  for (auto [v, n] : kPredictors)
    if (n == s) return v;
  return std::nullopt;
}

}  // namespace sf::offload

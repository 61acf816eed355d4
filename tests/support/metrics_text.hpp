#pragma once

// Reading Prometheus' text exposition format in tests.

#include <sstream>
#include <string>
#include <vector>

namespace hive::test {

/// The sum of the samples of metric `name` in a text exposition (`GET /metrics`) whose label
/// set contains every one of `labels` (e.g. `kind="counter"`); all samples if none.
inline double metric_sum(const std::string& scrape, const std::string& name,
                         const std::vector<std::string>& labels = {}) {
  std::istringstream in{scrape};
  std::string line;
  double sum = 0;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size())
      continue;
    auto next = line[name.size()];
    if (next != '{' && next != ' ')
      continue;
    bool all = true;
    for (auto& l : labels)
      all = all && line.find(l) != std::string::npos;
    if (all)
      sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

} // namespace hive::test

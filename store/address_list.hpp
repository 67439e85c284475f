// Internal to store/: the rule for a device's local address list, which the SQL store keeps as
// one '\n'-joined column (no JSON, portable SQL) and the memory store checks the same way.
#pragma once
#include <string>
#include <vector>

#include "core/store/store.hpp"

namespace torii::store::detail {

// An empty entry or one containing '\n' could not be told apart after joining, so both stores
// refuse them with StoreError(invalid) instead of storing something that reads back differently.
inline void check_local_addresses(const std::vector<std::string>& addrs) {
  for (const auto& a : addrs)
    if (a.empty() || a.find('\n') != std::string::npos)
      throw StoreError(StoreError::Kind::invalid,
                       "local address must be non-empty and contain no line break");
}

inline std::string join_addresses(const std::vector<std::string>& addrs) {
  std::string out;
  for (const auto& a : addrs) {
    if (!out.empty()) out += '\n';
    out += a;
  }
  return out;
}

inline std::vector<std::string> split_addresses(const std::string& joined) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < joined.size()) {
    size_t nl = joined.find('\n', start);
    if (nl == std::string::npos) nl = joined.size();
    out.push_back(joined.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

}  // namespace torii::store::detail

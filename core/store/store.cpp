#include "core/store/store.hpp"

namespace torii::store {

const char* to_string(DeviceState s) {
  switch (s) {
    case DeviceState::pending:
      return "pending";
    case DeviceState::active:
      return "active";
    case DeviceState::revoked:
      return "revoked";
  }
  return "unknown";
}

}  // namespace torii::store

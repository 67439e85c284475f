// Runs the Store conformance suite against MemoryStore, so the core's unit tests use a fake
// that behaves like the real store.
#include "store/memory_store.hpp"

#include "store/store_conformance.hpp"

namespace torii::store::conformance {

struct MemoryFactory {
  static std::unique_ptr<Store> make(const std::filesystem::path&) {
    return std::make_unique<MemoryStore>();
  }
  static std::vector<uint8_t> cert_der(Store& s, const std::string& id) {
    return dynamic_cast<MemoryStore&>(s).cert_der(id);
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(MemoryStore, StoreConformance, MemoryFactory);

}  // namespace torii::store::conformance

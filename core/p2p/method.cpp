// Connection-method choice (see method.hpp). A6, A11.
#include "core/p2p/method.hpp"

namespace torii::p2p {

using stun::NatBehaviour;

const char* to_string(Method m) {
  switch (m) {
    case Method::direct:
      return "direct";
    case Method::hole_punch:
      return "hole-punch";
    case Method::port_prediction:
      return "port-prediction";
    case Method::relay:
      return "relay";
  }
  return "?";
}

namespace {

bool reachable(const NatView& v) {
  return v.mapping == NatBehaviour::no_nat || v.filtering == NatBehaviour::endpoint_independent;
}
bool dependent_mapping(const NatView& v) {
  return v.mapping == NatBehaviour::address_dependent ||
         v.mapping == NatBehaviour::address_and_port_dependent;
}
bool blocked(const NatView& v) {
  return v.mapping == NatBehaviour::udp_blocked || v.filtering == NatBehaviour::udp_blocked;
}

}  // namespace

Method choose_method(const NatView& a, const NatView& b) {
  if (blocked(a) || blocked(b)) return Method::relay;
  if (a.public_endpoint && b.public_endpoint && a.public_endpoint->same_address(*b.public_endpoint))
    return Method::direct;
  if (reachable(a) || reachable(b)) return Method::direct;
  const bool da = dependent_mapping(a), db = dependent_mapping(b);
  if (da && db) return Method::relay;
  if (!da && !db) return Method::hole_punch;
  const NatView& cone = da ? b : a;
  if (cone.filtering == NatBehaviour::address_dependent) return Method::hole_punch;
  return Method::port_prediction;
}

}  // namespace torii::p2p

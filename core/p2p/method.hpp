// How two devices should connect (A6, A11): the server picks the connection method of the
// connection instruction from both sides' NAT behaviour (RFC 4787 mapping and filtering learned by
// STUN, A3) and public addresses. Agents try every candidate whatever the method and fall back to
// the relay; the method decides what they try first and how long before relaying.
#pragma once
#include <optional>

#include "core/endpoint.hpp"
#include "core/stun/nat_probe.hpp"

namespace torii::p2p {

enum class Method : uint8_t { direct, hole_punch, port_prediction, relay };
const char* to_string(Method m);

struct NatView {
  stun::NatBehaviour mapping = stun::NatBehaviour::unknown;
  stun::NatBehaviour filtering = stun::NatBehaviour::unknown;
  std::optional<Endpoint> public_endpoint;  // server-reflexive, as the server saw it
};

// - same public address (one NAT, same LAN) -> direct (host candidates; hairpin otherwise);
// - either side not NATed or full cone (endpoint-independent filtering) -> direct;
// - UDP blocked on either side -> relay;
// - both mappings endpoint-independent -> hole_punch;
// - one dependent ("symmetric") mapping: hole_punch if the other side filters by address only
//   (the symmetric side's new port passes an address filter), else port_prediction;
// - both mappings dependent -> relay.
// Unknown behaviour is treated as the hardest plausible case (port-restricted cone).
Method choose_method(const NatView& a, const NatView& b);

}  // namespace torii::p2p

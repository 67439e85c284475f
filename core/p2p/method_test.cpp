// The connection-method table (A6, A11): every pair of NAT kinds gets the expected method.
#include "core/p2p/method.hpp"

#include <gtest/gtest.h>

namespace torii::p2p {
namespace {

using B = stun::NatBehaviour;

NatView nat(B m, B f, const char* pub) {
  return NatView{m, f, Endpoint::parse(pub)};
}

const NatView kNone = nat(B::no_nat, B::no_nat, "10.200.0.5:4000");
const NatView kFull = nat(B::endpoint_independent, B::endpoint_independent, "10.200.0.11:4000");
const NatView kRestricted = nat(B::endpoint_independent, B::address_dependent, "10.200.0.12:4000");
const NatView kPort = nat(B::endpoint_independent, B::address_and_port_dependent, "10.200.0.13:1");
const NatView kSym =
    nat(B::address_and_port_dependent, B::address_and_port_dependent, "10.200.0.14:1");
const NatView kSym2 = nat(B::address_dependent, B::address_and_port_dependent, "10.200.0.16:1");
const NatView kBlocked = nat(B::udp_blocked, B::udp_blocked, "10.200.0.15:1");

TEST(ChooseMethod, Table) {
  struct Case {
    const NatView& a;
    const NatView& b;
    Method want;
  } cases[] = {
      {kNone, kNone, Method::direct},
      {kNone, kSym, Method::direct},
      {kFull, kSym, Method::direct},
      {kFull, kPort, Method::direct},
      {kRestricted, kRestricted, Method::hole_punch},
      {kRestricted, kPort, Method::hole_punch},
      {kPort, kPort, Method::hole_punch},
      {kRestricted, kSym, Method::hole_punch},
      {kPort, kSym, Method::port_prediction},
      {kSym, kSym2, Method::relay},
      {kBlocked, kNone, Method::relay},
      {kBlocked, kFull, Method::relay},
  };
  for (const auto& c : cases) {
    NatView b = c.b;  // same kind, but behind another NAT (another public address)
    if (b.public_endpoint) b.public_endpoint->addr[3] ^= 0x80;
    EXPECT_EQ(choose_method(c.a, b), c.want) << to_string(c.want);
    EXPECT_EQ(choose_method(b, c.a), c.want) << "symmetric in its arguments";
  }
}

TEST(ChooseMethod, SameNatIsDirect) {
  NatView a = kSym, b = kSym;
  b.public_endpoint->port = 5555;
  EXPECT_EQ(choose_method(a, b), Method::direct);
}

TEST(ChooseMethod, UnknownIsTreatedAsPortRestricted) {
  NatView u{B::unknown, B::unknown, std::nullopt};
  EXPECT_EQ(choose_method(u, kRestricted), Method::hole_punch);
  EXPECT_EQ(choose_method(u, kSym), Method::port_prediction);
  EXPECT_EQ(choose_method(u, kNone), Method::direct);
}

}  // namespace
}  // namespace torii::p2p

// Conversions between the core's Endpoint and Asio's addresses/endpoints (IPv4-mapped IPv6
// addresses from dual-stack sockets become plain IPv4), shared by every socket adapter.
#pragma once
#include <boost/asio/ip/address.hpp>

#include "core/endpoint.hpp"

namespace torii::net {

inline boost::asio::ip::address to_address(const Endpoint& e) {
  namespace ip = boost::asio::ip;
  if (e.is_v4()) return ip::address_v4(e.v4_host_order());
  ip::address_v6::bytes_type b;
  std::copy(e.addr.begin(), e.addr.end(), b.begin());
  return ip::address_v6(b);
}

inline Endpoint from_address(boost::asio::ip::address a, uint16_t port) {
  namespace ip = boost::asio::ip;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = ip::make_address_v4(ip::v4_mapped, a.to_v6());
  if (a.is_v4()) return Endpoint::v4(a.to_v4().to_uint(), port);
  return Endpoint::v6(a.to_v6().to_bytes(), port);
}

template <typename Protocol>
typename Protocol::endpoint to_asio(const Endpoint& e) {
  return {to_address(e), e.port};
}

template <typename AsioEndpoint>
Endpoint from_asio(const AsioEndpoint& ep) {
  return from_address(ep.address(), ep.port());
}

}  // namespace torii::net

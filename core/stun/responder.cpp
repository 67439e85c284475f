// STUN Binding responder: chooses the reply's attributes by protocol generation (RFC 8489 vs
// RFC 3489) and its source socket from CHANGE-REQUEST.
//
// CHANGE-REQUEST policy (RFC 5780 6.1): a server without any alternate address answers an
// RFC 5389+ request carrying CHANGE-REQUEST with 420 (Unknown Attribute) listing 0x0003, so the
// client learns that behaviour discovery is unsupported instead of misreading a reply from the
// primary socket as "filtering passed". With an alternate configured, a requested change is made
// when the target socket exists, otherwise likewise 420. RFC 3489 clients predate 420 for this
// case and treat any reply to a change test as "it got through", so for them an impossible
// change is dropped: "no reply" is the answer they interpret correctly.
#include "core/stun/responder.hpp"

#include <algorithm>

#include "core/stun/message.hpp"

namespace torii::stun {
namespace {

// An unspecified (wildcard) address says nothing about where the reply comes from, so it is
// better left out of RESPONSE-ORIGIN / SOURCE-ADDRESS than advertised as 0.0.0.0.
bool is_unspecified(const Endpoint& e) {
  size_t n = e.is_v4() ? 4 : 16;
  return std::all_of(e.addr.begin(), e.addr.begin() + n, [](uint8_t b) { return b == 0; });
}

// Keeps a 420 reply small whatever the request listed: the reply should never be a useful
// amplifier, and a client needs only the first few types to understand.
constexpr size_t kMaxUnknownListed = 16;

}  // namespace

Responder::Responder(Endpoint primary, std::optional<Endpoint> alternate, std::string software)
    : software_(std::move(software)) {
  sockets_[kPrimaryIpPrimaryPort] = primary;
  present_[kPrimaryIpPrimaryPort] = true;
  // An alternate of the other family could never answer the same client, so it is ignored.
  if (!alternate || alternate->family != primary.family) return;
  bool other_ip = !alternate->same_address(primary);
  bool other_port = alternate->port != primary.port;
  Endpoint e = primary;
  e.port = alternate->port;
  sockets_[kPrimaryIpAltPort] = e;
  present_[kPrimaryIpAltPort] = other_port;
  e = *alternate;
  e.port = primary.port;
  sockets_[kAltIpPrimaryPort] = e;
  present_[kAltIpPrimaryPort] = other_ip;
  sockets_[kAltIpAltPort] = *alternate;
  present_[kAltIpAltPort] = other_ip && other_port;
}

bool Responder::has_socket(size_t index) const {
  return index < kMaxSockets && present_[index];
}

std::vector<size_t> Responder::socket_indexes() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < kMaxSockets; ++i)
    if (present_[i]) out.push_back(i);
  return out;
}

std::optional<Responder::Reply> Responder::handle(const uint8_t* data, size_t size,
                                                  const Endpoint& source, size_t socket_index) {
  ++counters_.requests;
  if (!has_socket(socket_index)) {
    ++counters_.dropped_other;
    return std::nullopt;
  }
  ParseResult parsed = parse(data, size);
  if (!parsed) {
    ++counters_.dropped_malformed;
    return std::nullopt;
  }
  const Message& req = *parsed.message;
  // Responses and indications never get an answer (that could loop between two servers), and
  // Binding is the only method torii serves.
  if (req.cls != MessageClass::request || req.method != kMethodBinding) {
    ++counters_.dropped_other;
    return std::nullopt;
  }
  const bool classic = req.is_rfc3489();

  Message resp;
  resp.method = kMethodBinding;
  resp.transaction_id = req.transaction_id;  // for RFC 3489 this also echoes the "cookie" bytes
  if (!classic) {
    resp.software = software_;
    resp.fingerprint = true;
  }
  auto error_420 = [&](std::vector<uint16_t> unknown) {
    resp.cls = MessageClass::error;
    resp.error_code = ErrorCode{420, "Unknown Attribute"};
    if (unknown.size() > kMaxUnknownListed) unknown.resize(kMaxUnknownListed);
    resp.unknown_attributes = std::move(unknown);
    ++counters_.answered;
    return Reply{serialize(resp), socket_index};
  };

  if (!req.unknown_comprehension_required.empty()) {
    return error_420(req.unknown_comprehension_required);
  }

  size_t from = socket_index;
  if (req.change_request) {
    from ^= (req.change_request->change_ip ? 2u : 0u) | (req.change_request->change_port ? 1u : 0u);
    bool no_alternate = !has_socket(kPrimaryIpAltPort) && !has_socket(kAltIpPrimaryPort);
    if (!classic && (no_alternate || !has_socket(from))) return error_420({attr::kChangeRequest});
    if (classic && !has_socket(from)) {
      ++counters_.dropped_other;
      return std::nullopt;
    }
  }

  resp.cls = MessageClass::success;
  const Endpoint& origin = sockets_[from];
  // OTHER-ADDRESS / CHANGED-ADDRESS describe the socket differing from the one the request
  // reached in both IP and port (RFC 5780 6.1 table 1, RFC 3489 11.2.3).
  std::optional<Endpoint> other;
  if (full_rfc5780()) other = sockets_[socket_index ^ 3];
  if (classic) {
    // RFC 3489 clients reject unknown comprehension-required attributes, and XOR-MAPPED-ADDRESS
    // (0x0020) is one for them, so only the attributes they know are sent (RFC 5389 12.2).
    resp.mapped_address = source;
    if (!is_unspecified(origin)) resp.source_address = origin;
    resp.changed_address = other;
  } else {
    // MAPPED-ADDRESS as well, as RFC 5780 6.1 requires for clients of the older drafts.
    resp.xor_mapped_address = source;
    resp.mapped_address = source;
    if (!is_unspecified(origin)) resp.response_origin = origin;
    resp.other_address = other;
  }
  ++counters_.answered;
  return Reply{serialize(resp), from};
}

}  // namespace torii::stun

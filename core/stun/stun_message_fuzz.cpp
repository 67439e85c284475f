// libFuzzer target for the STUN codec and responder: whatever arrives on UDP port 3478 must
// neither crash them nor make them emit a reply that they themselves cannot parse.
#include <array>
#include <cstdint>
#include <cstdlib>

#include "core/stun/message.hpp"
#include "core/stun/nat_probe.hpp"
#include "core/stun/responder.hpp"

using namespace torii;
using namespace torii::stun;

namespace {

// Invariant violations abort so that libFuzzer (and the corpus replay test) report them.
void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ParseResult r = parse(data, size);
  if (r) {
    // Re-encoding what we understood must give a message that parses to the same thing (minus
    // the unknown attributes, which are not re-encoded).
    Message m = *r.message;
    m.unknown_comprehension_required.clear();
    auto bytes = serialize(m);
    ParseResult again = parse(bytes.data(), bytes.size());
    check(again.message.has_value());
    check(*again.message == m);
  }

  static const Endpoint primary = Endpoint::v4(0xC6336401, 3478);  // 198.51.100.1
  static const Endpoint alt = Endpoint::v4(0xC6336402, 3479);      // 198.51.100.2
  static Responder full(primary, alt);
  static Responder single(primary);
  const Endpoint client4 = Endpoint::v4(0xCB007109, 50000);
  const Endpoint client6 =
      Endpoint::v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9}, 50000);
  size_t socket = size ? data[0] % 5 : 0;  // 4 = nonexistent socket
  for (Responder* resp : {&full, &single}) {
    for (const Endpoint& client : {client4, client6}) {
      auto reply = resp->handle(data, size, client, socket);
      if (!reply) continue;
      check(reply->socket_index < kMaxSockets && resp->has_socket(reply->socket_index));
      ParseResult p = parse(reply->bytes.data(), reply->bytes.size());
      check(p.message.has_value());
      check(p.message->cls == MessageClass::success || p.message->cls == MessageClass::error);
      check(p.message->transaction_id == r.message->transaction_id);
    }
  }

  // The probe must also shrug off anything as a "response".
  NatProbe probe(primary, Endpoint::v4(0xC0A8010A, 5000), {},
                 [] { return std::array<uint8_t, 12>{}; });
  probe.start(instant_from_ms(0));
  probe.on_response(instant_from_ms(1), data, size, primary);
  return 0;
}

// I/O-free RFC 5780 NAT behaviour discovery (requirement A3): a state machine fed (now, input)
// that tells its adapter what to send and when to wake it, and ends with a NatReport.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/endpoint.hpp"
#include "core/stun/message.hpp"
#include "core/time.hpp"

namespace torii::stun {

// RFC 5780 behaviour classes, used for both mapping (4.3) and filtering (4.4).
enum class NatBehaviour : uint8_t {
  unknown,
  no_nat,
  endpoint_independent,
  address_dependent,
  address_and_port_dependent,
  udp_blocked,
};
// "unknown", "no-nat", "endpoint-independent", "address-dependent",
// "address-and-port-dependent", "udp-blocked".
const char* to_string(NatBehaviour b);

struct NatReport {
  NatBehaviour mapping = NatBehaviour::unknown;
  NatBehaviour filtering = NatBehaviour::unknown;
  std::optional<Endpoint> public_endpoint;  // XOR-MAPPED-ADDRESS of test I
  Endpoint local_endpoint;                  // the probing socket's own address
  bool rfc5780_supported = false;           // server gave a usable OTHER-ADDRESS
};

// Classic cone vocabulary for operators: "none", "full-cone", "restricted-cone",
// "port-restricted-cone", "symmetric", "udp-blocked" or "unknown". Without NAT but behind a
// filtering firewall the cone name of that filtering is given, since hole punching then behaves
// exactly as through such a NAT.
std::string nat_type_summary(const NatReport& r);

struct ProbeConfig {
  // First retransmission timeout, doubled after every transmission (RFC 8489 6.2.1). Shorter
  // than the RFC's 500 ms because the agent blocks on the result at start-up.
  Duration initial_rto{200};
  // A test with no answer after this long counts as "no response" (sends at 0, 200, 600,
  // 1400 ms with the defaults).
  Duration test_timeout{1600};
  std::string software;  // SOFTWARE in requests; empty: not sent
};

struct Datagram {
  Endpoint to;
  std::vector<uint8_t> bytes;
};

struct ProbeOutput {
  std::vector<Datagram> send;       // send these now, in order, from the probing socket
  std::optional<Instant> deadline;  // call on_tick() at this time; nullopt once done()
};

// Runs, in this order: test I (binding to the server), filtering tests II and III (CHANGE-REQUEST
// IP+port, then port only) and mapping tests II and III (binding to the alternate IP with the
// primary port, then to OTHER-ADDRESS). Filtering goes first on purpose: the mapping tests send
// to the alternate IP themselves and would open an address-dependent filter for filtering test II,
// making such a NAT look endpoint-independent. Tests run one at a time so that one test's
// traffic cannot open the NAT for another's reply. Not thread-safe; one probe per socket.
class NatProbe {
 public:
  // Yields 96 random bits per transaction. Default: OpenSSL RAND_bytes (transaction IDs are
  // what stops off-path spoofing of responses, RFC 8489 6). Tests pass a deterministic one.
  using IdSource = std::function<std::array<uint8_t, 12>()>;

  // `server`: the STUN server's primary endpoint. `local`: the probing socket's bound address
  // (specific, not a wildcard), compared with the mapped address to detect "no NAT".
  NatProbe(Endpoint server, Endpoint local, ProbeConfig cfg = {}, IdSource ids = {});

  ProbeOutput start(Instant now);
  // Any datagram received on the probing socket; unrelated or malformed ones are ignored.
  ProbeOutput on_response(Instant now, const uint8_t* data, size_t size, const Endpoint& from);
  ProbeOutput on_tick(Instant now);

  bool done() const { return test_ == Test::done; }
  // Final once done(); before that, what has been learnt so far.
  const NatReport& report() const { return report_; }

 private:
  enum class Test { idle, basic, filter_ip_port, filter_port, map_alt_ip, map_alt_both, done };

  void begin(Instant now, Test test, const Endpoint& to, std::optional<ChangeRequest> change,
             ProbeOutput& out);
  void on_success(Instant now, const Message& m, const Endpoint& from, ProbeOutput& out);
  void on_no_answer(Instant now, ProbeOutput& out);  // timeout or error response
  void start_mapping_tests(Instant now, ProbeOutput& out);
  void finish();
  std::optional<Instant> deadline() const;

  Endpoint server_;
  ProbeConfig cfg_;
  IdSource ids_;
  NatReport report_;

  Test test_ = Test::idle;
  TransactionId id_{};
  Datagram request_;
  Instant test_started_{};
  Instant next_send_{};
  Duration rto_{};

  Endpoint other_;                         // OTHER-ADDRESS from test I
  std::optional<Endpoint> mapped_alt_ip_;  // mapping test II result
};

}  // namespace torii::stun

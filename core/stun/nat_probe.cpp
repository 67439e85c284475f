// NAT behaviour discovery state machine: one outstanding STUN transaction at a time, RFC 8489
// retransmission, RFC 5780 4.3/4.4 classification.
#include "core/stun/nat_probe.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <random>

namespace torii::stun {
namespace {

std::array<uint8_t, 12> random_id() {
  std::array<uint8_t, 12> id{};
  if (RAND_bytes(id.data(), int(id.size())) != 1) {
    // Only reached if the OpenSSL RNG is broken; a weaker ID beats not probing at all.
    std::random_device rd;
    for (auto& b : id) b = uint8_t(rd());
  }
  return id;
}

}  // namespace

const char* to_string(NatBehaviour b) {
  switch (b) {
    case NatBehaviour::unknown:
      return "unknown";
    case NatBehaviour::no_nat:
      return "no-nat";
    case NatBehaviour::endpoint_independent:
      return "endpoint-independent";
    case NatBehaviour::address_dependent:
      return "address-dependent";
    case NatBehaviour::address_and_port_dependent:
      return "address-and-port-dependent";
    case NatBehaviour::udp_blocked:
      return "udp-blocked";
  }
  return "unknown";
}

std::string nat_type_summary(const NatReport& r) {
  using B = NatBehaviour;
  if (r.mapping == B::udp_blocked || r.filtering == B::udp_blocked) return "udp-blocked";
  if (r.mapping == B::address_dependent || r.mapping == B::address_and_port_dependent)
    return "symmetric";
  if (r.mapping != B::no_nat && r.mapping != B::endpoint_independent) return "unknown";
  switch (r.filtering) {
    case B::endpoint_independent:
      return r.mapping == B::no_nat ? "none" : "full-cone";
    case B::address_dependent:
      return "restricted-cone";
    case B::address_and_port_dependent:
      return "port-restricted-cone";
    default:
      // No NAT and filtering unmeasured (server without RFC 5780): nothing suggests a firewall.
      return r.mapping == B::no_nat ? "none" : "unknown";
  }
}

NatProbe::NatProbe(Endpoint server, Endpoint local, ProbeConfig cfg, IdSource ids)
    : server_(server), cfg_(std::move(cfg)), ids_(ids ? std::move(ids) : IdSource(random_id)) {
  report_.local_endpoint = local;
  if (cfg_.initial_rto <= Duration::zero()) cfg_.initial_rto = Duration(1);
}

ProbeOutput NatProbe::start(Instant now) {
  ProbeOutput out;
  if (test_ != Test::idle) {
    out.deadline = deadline();
    return out;
  }
  begin(now, Test::basic, server_, std::nullopt, out);
  out.deadline = deadline();
  return out;
}

void NatProbe::begin(Instant now, Test test, const Endpoint& to,
                     std::optional<ChangeRequest> change, ProbeOutput& out) {
  // A fresh transaction per test: a late answer to an earlier test must never be taken for this
  // test's answer.
  Message m;
  m.cls = MessageClass::request;
  m.method = kMethodBinding;
  m.transaction_id = make_transaction_id(ids_());
  m.change_request = change;
  if (!cfg_.software.empty()) m.software = cfg_.software;
  m.fingerprint = true;

  test_ = test;
  id_ = m.transaction_id;
  request_ = Datagram{to, serialize(m)};
  test_started_ = now;
  rto_ = cfg_.initial_rto;
  next_send_ = now + rto_;
  out.send.push_back(request_);
}

std::optional<Instant> NatProbe::deadline() const {
  if (test_ == Test::idle || test_ == Test::done) return std::nullopt;
  return std::min(next_send_, test_started_ + cfg_.test_timeout);
}

ProbeOutput NatProbe::on_tick(Instant now) {
  ProbeOutput out;
  if (test_ == Test::idle || test_ == Test::done) return out;
  if (now >= test_started_ + cfg_.test_timeout) {
    on_no_answer(now, out);
  } else if (now >= next_send_) {
    out.send.push_back(request_);
    rto_ *= 2;
    // Scheduled from the previous send time, not `now`, so a late tick does not stretch the
    // schedule.
    next_send_ += rto_;
    if (next_send_ <= now) next_send_ = now + rto_;
  }
  out.deadline = deadline();
  return out;
}

ProbeOutput NatProbe::on_response(Instant now, const uint8_t* data, size_t size,
                                  const Endpoint& from) {
  ProbeOutput out;
  if (test_ != Test::idle && test_ != Test::done) {
    ParseResult r = parse(data, size);
    if (r && r.message->method == kMethodBinding && r.message->transaction_id == id_) {
      if (r.message->cls == MessageClass::success) {
        on_success(now, *r.message, from, out);
      } else if (r.message->cls == MessageClass::error) {
        // E.g. 420 for CHANGE-REQUEST: the server cannot run this test, so what it would have
        // measured stays unknown. Unlike silence it proves that UDP gets through.
        if (test_ == Test::filter_ip_port || test_ == Test::filter_port) {
          report_.filtering = NatBehaviour::unknown;
          start_mapping_tests(now, out);
        } else {
          finish();
        }
      }
    }
  }
  out.deadline = deadline();
  return out;
}

void NatProbe::on_success(Instant now, const Message& m, const Endpoint& from, ProbeOutput& out) {
  std::optional<Endpoint> mapped = m.xor_mapped_address ? m.xor_mapped_address : m.mapped_address;
  switch (test_) {
    case Test::basic: {
      if (!mapped) {
        finish();  // a success without any address tells us nothing
        return;
      }
      report_.public_endpoint = mapped;
      if (*mapped == report_.local_endpoint) report_.mapping = NatBehaviour::no_nat;
      std::optional<Endpoint> other = m.other_address ? m.other_address : m.changed_address;
      // RFC 5780 needs an alternate differing in both IP and port; anything else cannot run
      // mapping test II (different IP) and filtering test III (different port).
      if (!other || other->family != server_.family || other->same_address(server_) ||
          other->port == server_.port) {
        finish();
        return;
      }
      report_.rfc5780_supported = true;
      other_ = *other;
      begin(now, Test::filter_ip_port, server_, ChangeRequest{true, true}, out);
      return;
    }
    case Test::filter_ip_port:
      // A reply from anywhere but the alternate IP and port means the server ignored the
      // CHANGE-REQUEST, which says nothing about our filter.
      report_.filtering =
          from == other_ ? NatBehaviour::endpoint_independent : NatBehaviour::unknown;
      start_mapping_tests(now, out);
      return;
    case Test::filter_port: {
      Endpoint expected = server_;
      expected.port = other_.port;
      report_.filtering =
          from == expected ? NatBehaviour::address_dependent : NatBehaviour::unknown;
      start_mapping_tests(now, out);
      return;
    }
    case Test::map_alt_ip:
      if (!mapped) {
        finish();
        return;
      }
      if (*mapped == *report_.public_endpoint) {
        report_.mapping = NatBehaviour::endpoint_independent;
        finish();
        return;
      }
      mapped_alt_ip_ = mapped;
      begin(now, Test::map_alt_both, other_, std::nullopt, out);
      return;
    case Test::map_alt_both:
      if (mapped) {
        report_.mapping = *mapped == *mapped_alt_ip_ ? NatBehaviour::address_dependent
                                                     : NatBehaviour::address_and_port_dependent;
      }
      finish();
      return;
    case Test::idle:
    case Test::done:
      return;
  }
}

void NatProbe::on_no_answer(Instant now, ProbeOutput& out) {
  switch (test_) {
    case Test::basic:
      // Nothing came back from the primary address in test_timeout: UDP to the server is blocked
      // (or the server is down, which the agent cannot tell apart).
      report_.mapping = NatBehaviour::udp_blocked;
      report_.filtering = NatBehaviour::udp_blocked;
      finish();
      return;
    case Test::filter_ip_port:
      begin(now, Test::filter_port, server_, ChangeRequest{false, true}, out);
      return;
    case Test::filter_port:
      report_.filtering = NatBehaviour::address_and_port_dependent;
      start_mapping_tests(now, out);
      return;
    case Test::map_alt_ip:
    case Test::map_alt_both:
      // The alternate address is unreachable: mapping behaviour stays unknown.
      finish();
      return;
    case Test::idle:
    case Test::done:
      return;
  }
}

void NatProbe::start_mapping_tests(Instant now, ProbeOutput& out) {
  // With no NAT there is no mapping to characterise (RFC 5780 4.3).
  if (report_.mapping == NatBehaviour::no_nat) {
    finish();
    return;
  }
  Endpoint alt_ip = other_;
  alt_ip.port = server_.port;
  begin(now, Test::map_alt_ip, alt_ip, std::nullopt, out);
}

void NatProbe::finish() {
  test_ = Test::done;
}

}  // namespace torii::stun

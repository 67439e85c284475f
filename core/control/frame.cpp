// Framing and validation of control messages (see frame.hpp).
#include "core/control/frame.hpp"

namespace torii::control {

std::vector<uint8_t> encode_frame(const pb::Envelope& env) {
  const size_t n = env.ByteSizeLong();
  std::vector<uint8_t> out(4 + n);
  out[0] = uint8_t(n >> 24);
  out[1] = uint8_t(n >> 16);
  out[2] = uint8_t(n >> 8);
  out[3] = uint8_t(n);
  env.SerializeWithCachedSizesToArray(out.data() + 4);
  return out;
}

const char* to_string(DecodeError e) {
  switch (e) {
    case DecodeError::none:
      return "ok";
    case DecodeError::bad_protobuf:
      return "malformed message";
    case DecodeError::unsupported_version:
      return "unsupported protocol version";
    case DecodeError::empty_body:
      return "message without body";
    case DecodeError::bad_field:
      return "field out of limits";
  }
  return "?";
}

namespace {
bool short_enough(const std::string& s, size_t max) {
  return s.size() <= max;
}

bool versions_ok(const pb::Versions& v) {
  return short_enough(v.agent(), limits::kMaxVersionStringLength) &&
         short_enough(v.firmware(), limits::kMaxVersionStringLength) &&
         short_enough(v.os(), limits::kMaxVersionStringLength);
}

template <typename List>
bool addresses_ok(const List& l) {
  if (size_t(l.size()) > limits::kMaxLocalAddresses) return false;
  for (const auto& a : l)
    if (!short_enough(a, limits::kMaxAddressStringLength)) return false;
  return true;
}

template <typename List>
bool candidates_ok(const List& l) {
  if (size_t(l.size()) > limits::kMaxCandidates) return false;
  for (const auto& a : l)
    if (!short_enough(a, limits::kMaxAddressStringLength)) return false;
  return true;
}

bool key_ok(const std::string& k) {
  return k.empty() || k.size() == limits::kTunnelKeyBytes;
}

bool offer_ok(const pb::TunnelOffer& o) {
  const auto& p = o.peer();
  return candidates_ok(o.candidates()) && key_ok(o.punch_key()) && key_ok(o.relay_key()) &&
         short_enough(p.device_id(), limits::kMaxDeviceIdLength) &&
         short_enough(p.overlay_ipv4(), limits::kMaxAddressStringLength) &&
         short_enough(p.overlay_ipv6(), limits::kMaxAddressStringLength) &&
         short_enough(p.cert_serial(), 64) && o.relay_port() <= 65535 && o.predict_ports() <= 256;
}

bool fields_ok(const pb::Envelope& env) {
  switch (env.body_case()) {
    case pb::Envelope::kEnrollRequest: {
      const auto& r = env.enroll_request();
      return short_enough(r.device_id(), limits::kMaxDeviceIdLength) &&
             short_enough(r.token(), limits::kMaxTokenLength) &&
             short_enough(r.csr_der(), limits::kMaxCsrBytes);
    }
    case pb::Envelope::kHello: {
      const auto& h = env.hello();
      return short_enough(h.device_id(), limits::kMaxDeviceIdLength) && versions_ok(h.versions()) &&
             addresses_ok(h.local_addresses());
    }
    case pb::Envelope::kAttributes: {
      const auto& a = env.attributes();
      return versions_ok(a.versions()) && addresses_ok(a.local_addresses()) &&
             short_enough(a.public_endpoint(), limits::kMaxAddressStringLength);
    }
    case pb::Envelope::kPeerRequest: {
      const auto& r = env.peer_request();
      return short_enough(r.peer_id(), limits::kMaxDeviceIdLength) &&
             short_enough(r.peer_address(), limits::kMaxAddressStringLength) &&
             candidates_ok(r.candidates());
    }
    case pb::Envelope::kConnectInstruction:
      return offer_ok(env.connect_instruction().offer());
    case pb::Envelope::kPeerConfirm: {
      const auto& c = env.peer_confirm();
      return candidates_ok(c.candidates()) && short_enough(c.reason(), 1024);
    }
    case pb::Envelope::kPeerResponse: {
      const auto& r = env.peer_response();
      return short_enough(r.message(), 1024) && offer_ok(r.offer());
    }
    case pb::Envelope::kPeerClose: {
      const auto& c = env.peer_close();
      return short_enough(c.peer_id(), limits::kMaxDeviceIdLength) &&
             short_enough(c.reason(), 1024);
    }
    case pb::Envelope::kRelayData:
      return short_enough(env.relay_data().packet(), limits::kMaxRelayPacket);
    case pb::Envelope::kClose:
      return short_enough(env.close().detail(), 1024);
    case pb::Envelope::kError:
      return short_enough(env.error().message(), 1024);
    default:
      return true;
  }
}
}  // namespace

DecodeError decode_envelope(const uint8_t* data, size_t len, pb::Envelope& out) {
  out.Clear();
  if (!out.ParseFromArray(data, int(len))) return DecodeError::bad_protobuf;
  if (out.version() != limits::kProtocolVersion) return DecodeError::unsupported_version;
  if (out.body_case() == pb::Envelope::BODY_NOT_SET) return DecodeError::empty_body;
  if (!fields_ok(out)) return DecodeError::bad_field;
  return DecodeError::none;
}

bool FrameDecoder::feed(const uint8_t* data, size_t len) {
  if (corrupt_) return false;
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.append(reinterpret_cast<const char*>(data), len);
  if (buffered() >= 4) {
    const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + pos_);
    const size_t n = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) | (size_t(p[2]) << 8) | p[3];
    if (n > max_frame_) corrupt_ = true;
  }
  return !corrupt_;
}

std::optional<std::string_view> FrameDecoder::next() {
  if (corrupt_ || buffered() < 4) {
    if (buffered() == 0 && buf_.capacity() > 4096)
      buf_ = std::string();  // idle sessions stay small
    if (buffered() == 0) pos_ = 0, buf_.clear();
    return std::nullopt;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + pos_);
  const size_t n = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) | (size_t(p[2]) << 8) | p[3];
  if (n > max_frame_) {
    corrupt_ = true;
    return std::nullopt;
  }
  if (buffered() < 4 + n) return std::nullopt;
  std::string_view frame(buf_.data() + pos_ + 4, n);
  pos_ += 4 + n;
  return frame;
}

}  // namespace torii::control

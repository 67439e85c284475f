// Control-protocol framing: a 4-byte big-endian length, then a serialized Envelope (protobuf
// lite). The decoder reassembles frames from arbitrary stream chunks and refuses oversize ones.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/session/limits.hpp"
#include "torii/control.pb.h"

namespace torii::control {

namespace pb = ::torii::control::v1;

std::vector<uint8_t> encode_frame(const pb::Envelope& env);
// Wraps a body into a versioned Envelope and frames it.
template <typename Set>
std::vector<uint8_t> make_frame(Set&& set_body) {
  pb::Envelope env;
  env.set_version(limits::kProtocolVersion);
  set_body(env);
  return encode_frame(env);
}

enum class DecodeError { none, bad_protobuf, unsupported_version, empty_body, bad_field };
const char* to_string(DecodeError e);

// Parses one frame payload and checks field limits (lengths of IDs, strings, list sizes).
DecodeError decode_envelope(const uint8_t* data, size_t len, pb::Envelope& out);

class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame = limits::kMaxFrameBytes) : max_frame_(max_frame) {}
  // Appends stream bytes. Returns false once a frame header announces more than max_frame
  // (the stream is unusable from then on).
  bool feed(const uint8_t* data, size_t len);
  // The next complete frame payload, if any. The view is valid until the next feed()/next().
  std::optional<std::string_view> next();
  bool corrupt() const { return corrupt_; }
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  size_t max_frame_;
  std::string buf_;
  size_t pos_ = 0;
  bool corrupt_ = false;
};

}  // namespace torii::control

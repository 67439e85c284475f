// I/O-free STUN message codec (RFC 8489) with the RFC 5780 NAT-discovery attributes and RFC 3489
// ("classic STUN") compatibility, shared by the server responder and the agent's NAT probe.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/endpoint.hpp"

namespace torii::stun {

inline constexpr uint32_t kMagicCookie = 0x2112A442;
inline constexpr size_t kHeaderSize = 20;
// XOR'ed into the CRC-32 so a FINGERPRINT cannot be mistaken for another protocol's checksum.
inline constexpr uint32_t kFingerprintXor = 0x5354554e;
// Longest SOFTWARE / reason phrase value the RFC allows (128 characters of up to 6 UTF-8 bytes,
// rounded as in RFC 8489 14.14 / 14.8).
inline constexpr size_t kMaxTextBytes = 763;

inline constexpr uint16_t kMethodBinding = 0x001;

// Attribute types this codec knows about.
namespace attr {
inline constexpr uint16_t kMappedAddress = 0x0001;
inline constexpr uint16_t kResponseAddress = 0x0002;  // RFC 3489, deliberately unsupported
inline constexpr uint16_t kChangeRequest = 0x0003;
inline constexpr uint16_t kSourceAddress = 0x0004;   // RFC 3489
inline constexpr uint16_t kChangedAddress = 0x0005;  // RFC 3489
inline constexpr uint16_t kUsername = 0x0006;
inline constexpr uint16_t kMessageIntegrity = 0x0008;
inline constexpr uint16_t kErrorCode = 0x0009;
inline constexpr uint16_t kUnknownAttributes = 0x000A;
inline constexpr uint16_t kRealm = 0x0014;
inline constexpr uint16_t kNonce = 0x0015;
inline constexpr uint16_t kMessageIntegritySha256 = 0x001C;
inline constexpr uint16_t kUserhash = 0x001E;
inline constexpr uint16_t kXorMappedAddress = 0x0020;
inline constexpr uint16_t kResponsePort = 0x0027;  // RFC 5780, deliberately unsupported
inline constexpr uint16_t kSoftware = 0x8022;
inline constexpr uint16_t kFingerprint = 0x8028;
inline constexpr uint16_t kResponseOrigin = 0x802B;
inline constexpr uint16_t kOtherAddress = 0x802C;
}  // namespace attr

enum class MessageClass : uint8_t { request = 0, indication = 1, success = 2, error = 3 };

// Header bytes 4..19 exactly as on the wire. RFC 5389+ messages start with the magic cookie
// followed by a 96-bit transaction ID; RFC 3489 messages use all 128 bits as the ID. Keeping the
// 16 bytes together makes both the RFC 3489 echo and the IPv6 XOR key (cookie || ID) trivial.
using TransactionId = std::array<uint8_t, 16>;

// A modern (RFC 5389+) transaction ID: magic cookie followed by the given 96 random bits.
TransactionId make_transaction_id(const std::array<uint8_t, 12>& random);
// True when bytes 4..7 are not the magic cookie, i.e. the peer speaks RFC 3489.
bool is_rfc3489(const TransactionId& id);

struct ChangeRequest {
  bool change_ip = false;
  bool change_port = false;
  friend bool operator==(const ChangeRequest&, const ChangeRequest&) = default;
};

struct ErrorCode {
  uint16_t code = 0;  // 300..699
  std::string reason;
  friend bool operator==(const ErrorCode&, const ErrorCode&) = default;
};

// A decoded (or to-be-encoded) message. Attributes are kept as typed optional fields rather than
// a generic list because only this fixed set matters to torii; serialize() writes them in the
// order declared here, FINGERPRINT last.
struct Message {
  MessageClass cls = MessageClass::request;
  uint16_t method = kMethodBinding;
  TransactionId transaction_id{};

  std::optional<Endpoint> xor_mapped_address;
  std::optional<Endpoint> mapped_address;
  std::optional<Endpoint> source_address;   // RFC 3489 responses
  std::optional<Endpoint> changed_address;  // RFC 3489 responses
  std::optional<Endpoint> response_origin;  // RFC 5780 responses
  std::optional<Endpoint> other_address;    // RFC 5780 responses
  std::optional<ChangeRequest> change_request;
  std::optional<ErrorCode> error_code;
  std::vector<uint16_t> unknown_attributes;  // the UNKNOWN-ATTRIBUTES attribute (420 responses)
  std::optional<std::string> software;
  // serialize(): append a FINGERPRINT. parse(): a FINGERPRINT was present (and was valid, or
  // parsing would have failed).
  bool fingerprint = false;

  // Filled by parse() only: comprehension-required types (< 0x8000) this codec does not
  // understand, in order of appearance, without duplicates. A server answers 420 listing them.
  std::vector<uint16_t> unknown_comprehension_required;

  bool is_rfc3489() const { return stun::is_rfc3489(transaction_id); }

  friend bool operator==(const Message&, const Message&) = default;
};

enum class ParseError : uint8_t {
  none,
  too_short,            // fewer than 20 bytes
  not_stun,             // top two bits of the type set: another protocol on the same port
  bad_length,           // length field not a multiple of 4 or not equal to the datagram size - 20
  truncated_attribute,  // attribute header or padded value runs past the end of the message
  bad_attribute,        // a known attribute with an impossible value (size, family, code, ...)
  bad_fingerprint,      // FINGERPRINT present but wrong, or not the last attribute
};
const char* to_string(ParseError e);

// Parse outcome: the message, or why there is none.
struct ParseResult {
  std::optional<Message> message;
  ParseError error = ParseError::none;
  explicit operator bool() const { return message.has_value(); }
};

// Decodes one datagram. Never throws on any input and never reads outside [data, data + size).
ParseResult parse(const uint8_t* data, size_t size) noexcept;

// Encodes a message. Endpoints with a family that the attribute cannot carry are still written
// (IPv6 addresses in RFC 3489 attributes are the caller's business).
std::vector<uint8_t> serialize(const Message& m);

// CRC-32 (IEEE 802.3, as used by FINGERPRINT before the XOR).
uint32_t crc32(const uint8_t* data, size_t size);

// Encoded STUN message type for a method and class (RFC 8489 5: class bits are interleaved).
uint16_t message_type(uint16_t method, MessageClass cls);

}  // namespace torii::stun

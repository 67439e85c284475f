// STUN codec implementation: bounds-checked attribute walk, (XOR-)address encoding for both
// families, and the FINGERPRINT CRC. Nothing here allocates per byte or throws on input.
#include "core/stun/message.hpp"

#include <algorithm>
#include <cstring>

namespace torii::stun {
namespace {

constexpr uint8_t kFamilyV4 = 0x01;
constexpr uint8_t kFamilyV6 = 0x02;
constexpr uint32_t kChangeIpFlag = 0x04;
constexpr uint32_t kChangePortFlag = 0x02;

uint16_t get16(const uint8_t* p) {
  return uint16_t((uint16_t(p[0]) << 8) | p[1]);
}
uint32_t get32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  put16(out, uint16_t(v >> 16));
  put16(out, uint16_t(v));
}
void set16(std::vector<uint8_t>& out, size_t at, uint16_t v) {
  out[at] = uint8_t(v >> 8);
  out[at + 1] = uint8_t(v);
}

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

// The XOR key for an address: the port uses the cookie's top 16 bits, IPv4 the cookie, IPv6
// cookie || transaction ID. Bytes 4..19 of the header are exactly that key.
void xor_endpoint(Endpoint& e, const TransactionId& key) {
  e.port ^= uint16_t(kMagicCookie >> 16);
  size_t n = e.is_v4() ? 4 : 16;
  for (size_t i = 0; i < n; ++i) e.addr[i] ^= key[i];
}

std::optional<Endpoint> decode_address(const uint8_t* v, size_t len) {
  if (len < 4) return std::nullopt;
  uint8_t family = v[1];
  uint16_t port = get16(v + 2);
  if (family == kFamilyV4 && len == 8) {
    return Endpoint::v4(std::array<uint8_t, 4>{v[4], v[5], v[6], v[7]}, port);
  }
  if (family == kFamilyV6 && len == 20) {
    std::array<uint8_t, 16> a{};
    std::memcpy(a.data(), v + 4, 16);
    return Endpoint::v6(a, port);
  }
  return std::nullopt;
}

void encode_address(std::vector<uint8_t>& out, uint16_t type, Endpoint e, bool xored,
                    const TransactionId& key) {
  if (xored) xor_endpoint(e, key);
  put16(out, type);
  put16(out, e.is_v4() ? 8 : 20);
  out.push_back(0);
  out.push_back(e.is_v4() ? kFamilyV4 : kFamilyV6);
  put16(out, e.port);
  out.insert(out.end(), e.addr.begin(), e.addr.begin() + (e.is_v4() ? 4 : 16));
}

void encode_bytes(std::vector<uint8_t>& out, uint16_t type, const uint8_t* v, size_t len) {
  put16(out, type);
  put16(out, uint16_t(len));
  out.insert(out.end(), v, v + len);
  while (out.size() % 4) out.push_back(0);
}

// Stores the first occurrence only: RFC 8489 14 says later duplicates are to be ignored.
template <typename T>
void keep_first(std::optional<T>& slot, T value) {
  if (!slot) slot = std::move(value);
}

}  // namespace

TransactionId make_transaction_id(const std::array<uint8_t, 12>& random) {
  TransactionId id{};
  id[0] = uint8_t(kMagicCookie >> 24);
  id[1] = uint8_t(kMagicCookie >> 16);
  id[2] = uint8_t(kMagicCookie >> 8);
  id[3] = uint8_t(kMagicCookie);
  std::memcpy(id.data() + 4, random.data(), 12);
  return id;
}

bool is_rfc3489(const TransactionId& id) {
  return get32(id.data()) != kMagicCookie;
}

uint16_t message_type(uint16_t method, MessageClass cls) {
  uint16_t c = uint16_t(cls);
  return uint16_t((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) |
                  ((c & 1) << 4) | ((c & 2) << 7));
}

uint32_t crc32(const uint8_t* data, size_t size) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = kCrcTable[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

const char* to_string(ParseError e) {
  switch (e) {
    case ParseError::none:
      return "none";
    case ParseError::too_short:
      return "too short";
    case ParseError::not_stun:
      return "not STUN";
    case ParseError::bad_length:
      return "bad length";
    case ParseError::truncated_attribute:
      return "truncated attribute";
    case ParseError::bad_attribute:
      return "bad attribute";
    case ParseError::bad_fingerprint:
      return "bad fingerprint";
  }
  return "?";
}

ParseResult parse(const uint8_t* data, size_t size) noexcept {
  auto fail = [](ParseError e) { return ParseResult{std::nullopt, e}; };
  if (data == nullptr || size < kHeaderSize) return fail(ParseError::too_short);
  uint16_t type = get16(data);
  if (type & 0xC000) return fail(ParseError::not_stun);
  size_t length = get16(data + 2);
  // One UDP datagram carries exactly one message, so anything but an exact fit is malformed.
  if (length % 4 != 0 || kHeaderSize + length != size) return fail(ParseError::bad_length);

  // std::vector/std::string allocation is the only thing that could throw below; treat
  // exhaustion as an unparseable message rather than let it escape a noexcept parser.
  try {
    Message m;
    m.method = uint16_t((type & 0x000F) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0F80));
    m.cls = MessageClass(((type >> 4) & 1) | ((type >> 7) & 2));
    std::memcpy(m.transaction_id.data(), data + 4, 16);

    size_t pos = kHeaderSize;
    while (pos < size) {
      if (m.fingerprint) return fail(ParseError::bad_fingerprint);  // must be the last one
      if (size - pos < 4) return fail(ParseError::truncated_attribute);
      uint16_t t = get16(data + pos);
      size_t len = get16(data + pos + 2);
      size_t padded = (len + 3) & ~size_t(3);
      if (padded > size - pos - 4) return fail(ParseError::truncated_attribute);
      const uint8_t* v = data + pos + 4;

      switch (t) {
        case attr::kMappedAddress:
        case attr::kXorMappedAddress:
        case attr::kSourceAddress:
        case attr::kChangedAddress:
        case attr::kResponseOrigin:
        case attr::kOtherAddress: {
          auto e = decode_address(v, len);
          if (!e) return fail(ParseError::bad_attribute);
          if (t == attr::kXorMappedAddress) xor_endpoint(*e, m.transaction_id);
          auto& slot = t == attr::kMappedAddress      ? m.mapped_address
                       : t == attr::kXorMappedAddress ? m.xor_mapped_address
                       : t == attr::kSourceAddress    ? m.source_address
                       : t == attr::kChangedAddress   ? m.changed_address
                       : t == attr::kResponseOrigin   ? m.response_origin
                                                      : m.other_address;
          keep_first(slot, *e);
          break;
        }
        case attr::kChangeRequest: {
          if (len != 4) return fail(ParseError::bad_attribute);
          uint32_t flags = get32(v);
          keep_first(m.change_request,
                     ChangeRequest{(flags & kChangeIpFlag) != 0, (flags & kChangePortFlag) != 0});
          break;
        }
        case attr::kErrorCode: {
          if (len < 4 || len > 4 + kMaxTextBytes) return fail(ParseError::bad_attribute);
          unsigned cls = v[2] & 0x07;
          unsigned number = v[3];
          if (cls < 3 || cls > 6 || number > 99) return fail(ParseError::bad_attribute);
          keep_first(m.error_code,
                     ErrorCode{uint16_t(cls * 100 + number),
                               std::string(reinterpret_cast<const char*>(v + 4), len - 4)});
          break;
        }
        case attr::kUnknownAttributes: {
          if (len % 2 != 0) return fail(ParseError::bad_attribute);
          if (m.unknown_attributes.empty()) {
            for (size_t i = 0; i < len; i += 2) m.unknown_attributes.push_back(get16(v + i));
          }
          break;
        }
        case attr::kSoftware: {
          if (len > kMaxTextBytes) return fail(ParseError::bad_attribute);
          keep_first(m.software, std::string(reinterpret_cast<const char*>(v), len));
          break;
        }
        case attr::kFingerprint: {
          if (len != 4) return fail(ParseError::bad_attribute);
          // Computed over everything before this attribute, with the header length already
          // covering it -- which holds because the header length must reach exactly this far.
          if ((crc32(data, pos) ^ kFingerprintXor) != get32(v)) {
            return fail(ParseError::bad_fingerprint);
          }
          m.fingerprint = true;
          break;
        }
        // Authentication attributes belong to the base protocol, so they are "understood" and do
        // not trigger 420; torii's STUN is unauthenticated (it only reveals the caller's own
        // address), so their values are not checked.
        case attr::kUsername:
        case attr::kMessageIntegrity:
        case attr::kMessageIntegritySha256:
        case attr::kRealm:
        case attr::kNonce:
        case attr::kUserhash:
          break;
        default:
          if (t < 0x8000 && std::find(m.unknown_comprehension_required.begin(),
                                      m.unknown_comprehension_required.end(),
                                      t) == m.unknown_comprehension_required.end()) {
            m.unknown_comprehension_required.push_back(t);
          }
          break;
      }
      pos += 4 + padded;
    }
    return ParseResult{std::move(m), ParseError::none};
  } catch (...) {
    return fail(ParseError::bad_attribute);
  }
}

std::vector<uint8_t> serialize(const Message& m) {
  std::vector<uint8_t> out;
  out.reserve(128);
  put16(out, message_type(m.method, m.cls));
  put16(out, 0);  // length, patched below
  out.insert(out.end(), m.transaction_id.begin(), m.transaction_id.end());

  const auto& key = m.transaction_id;
  if (m.xor_mapped_address)
    encode_address(out, attr::kXorMappedAddress, *m.xor_mapped_address, true, key);
  if (m.mapped_address) encode_address(out, attr::kMappedAddress, *m.mapped_address, false, key);
  if (m.source_address) encode_address(out, attr::kSourceAddress, *m.source_address, false, key);
  if (m.changed_address) encode_address(out, attr::kChangedAddress, *m.changed_address, false, key);
  if (m.response_origin) encode_address(out, attr::kResponseOrigin, *m.response_origin, false, key);
  if (m.other_address) encode_address(out, attr::kOtherAddress, *m.other_address, false, key);
  if (m.change_request) {
    put16(out, attr::kChangeRequest);
    put16(out, 4);
    put32(out, (m.change_request->change_ip ? kChangeIpFlag : 0) |
                   (m.change_request->change_port ? kChangePortFlag : 0));
  }
  if (m.error_code) {
    std::vector<uint8_t> v = {0, 0, uint8_t((m.error_code->code / 100) & 0x07),
                              uint8_t(m.error_code->code % 100)};
    size_t n = std::min(m.error_code->reason.size(), kMaxTextBytes);
    v.insert(v.end(), m.error_code->reason.begin(), m.error_code->reason.begin() + n);
    encode_bytes(out, attr::kErrorCode, v.data(), v.size());
  }
  if (!m.unknown_attributes.empty()) {
    std::vector<uint8_t> v;
    // 16-bit entries; cap so the attribute length still fits its 16-bit field.
    size_t n = std::min<size_t>(m.unknown_attributes.size(), 0x7FFC);
    for (size_t i = 0; i < n; ++i) put16(v, m.unknown_attributes[i]);
    encode_bytes(out, attr::kUnknownAttributes, v.data(), v.size());
  }
  if (m.software) {
    size_t n = std::min(m.software->size(), kMaxTextBytes);
    encode_bytes(out, attr::kSoftware, reinterpret_cast<const uint8_t*>(m.software->data()), n);
  }
  if (m.fingerprint) {
    set16(out, 2, uint16_t(out.size() + 8 - kHeaderSize));
    uint32_t crc = crc32(out.data(), out.size()) ^ kFingerprintXor;
    put16(out, attr::kFingerprint);
    put16(out, 4);
    put32(out, crc);
  }
  set16(out, 2, uint16_t(out.size() - kHeaderSize));
  return out;
}

}  // namespace torii::stun

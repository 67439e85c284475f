// Internal to pki/: reading files that may hold private keys, shared by the CA and the
// FileKeyStore so both apply the same permission rule and wipe key text after use.
#pragma once
#include <openssl/crypto.h>

#include <filesystem>
#include <string>

namespace torii::pki::detail {

// Reads a whole file. With `secret`, refuses a file that group or others can access
// (PkiError "key file <p> is readable by others; chmod 600 <p>"); the mode is checked on the
// opened descriptor so the file cannot be swapped between check and read.
std::string read_file(const std::filesystem::path& path, bool secret);

// Key text that is wiped from memory when it goes out of scope.
struct SecretText {
  std::string text;
  SecretText() = default;
  explicit SecretText(std::string t) : text(std::move(t)) {}
  SecretText(const SecretText&) = delete;
  SecretText& operator=(const SecretText&) = delete;
  ~SecretText() { OPENSSL_cleanse(text.data(), text.size()); }
};

}  // namespace torii::pki::detail

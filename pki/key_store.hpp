// Where a device keeps its private key. The key is generated on the device and never leaves it
// (A1). The interface is what the agent needs from a key: make a CSR, sign in TLS. A file store
// exists today; PKCS#11 and TPM stores implement the same interface with non-exportable keys
// (EVP_PKEY from an OpenSSL 3 provider), so no caller changes.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "pki/pki.hpp"

namespace torii::pki {

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  virtual bool has_key() const = 0;
  // Creates a new P-256 key; throws PkiError if one exists (never overwrites).
  virtual void generate() = 0;
  // The key as an EVP_PKEY usable with SSL_CTX_use_PrivateKey and make_csr. Throws if absent.
  virtual PkeyPtr load() const = 0;
  virtual std::string describe() const = 0;  // e.g. "file:/var/lib/torii-agent/device.key"
};

// PEM file, created 0600 with O_EXCL; refuses to load a key file readable by group/others.
class FileKeyStore final : public KeyStore {
 public:
  explicit FileKeyStore(std::filesystem::path path) : path_(std::move(path)) {}
  bool has_key() const override;
  void generate() override;
  PkeyPtr load() const override;
  std::string describe() const override { return "file:" + path_.string(); }

 private:
  std::filesystem::path path_;
};

// Writes `data` to `path` atomically (temp file + fsync + rename) with the given mode.
// `durable` false: readers still see the old or the new file, never a mix, but nothing waits
// for the disk (no fsync of the file or the directory): for snapshots rewritten often.
void write_file_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode,
                       bool durable = true);

}  // namespace torii::pki

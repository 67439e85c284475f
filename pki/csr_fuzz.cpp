// libFuzzer target: arbitrary bytes as a device CSR into CertificateAuthority::issue_device_cert,
// the first parser an unauthenticated enrolling device reaches. Only PkiError may come out.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "pki/pki.hpp"

namespace {

// One CA for the whole run, in a private temp dir removed at exit.
struct FuzzCa {
  std::filesystem::path dir;
  torii::pki::CertificateAuthority ca;
  FuzzCa() : dir(make_dir()), ca(torii::pki::CertificateAuthority::open(dir)) {}
  ~FuzzCa() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  static std::filesystem::path make_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "torii-csr-fuzz-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    return tmpl;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  static FuzzCa fuzz_ca;
  std::vector<uint8_t> csr(d, d + n);
  try {
    auto issued = fuzz_ca.ca.issue_device_cert(csr, "fuzz-device", "fuzz", 1700000000000,
                                               std::chrono::hours(24));
    // Whatever was accepted must come out as a well-formed device certificate.
    auto id = torii::pki::device_identity(issued.cert.get());
    if (!id || id->device_id != "fuzz-device" || id->group != "fuzz") std::abort();
  } catch (const torii::pki::PkiError&) {
  }
  return 0;
}

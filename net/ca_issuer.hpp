// The core's CertIssuer implemented by the local CA (A1): turns PKI errors about the request
// into the invalid_argument the enrollment logic reports to the device as "bad CSR".
#pragma once
#include "core/server/enrollment.hpp"
#include "core/session/limits.hpp"
#include "pki/pki.hpp"

namespace torii::net {

class CaIssuer final : public server::CertIssuer {
 public:
  explicit CaIssuer(const pki::CertificateAuthority& ca,
                    Duration validity = limits::kDeviceCertValidity)
      : ca_(ca), validity_(validity) {}
  server::Issued issue(const std::vector<uint8_t>& csr_der, const std::string& device_id,
                       const std::string& group, UnixMs now) override {
    try {
      auto ic = ca_.issue_device_cert(csr_der, device_id, group, now, validity_);
      return server::Issued{pki::to_der(ic.cert.get()), pki::to_der(ca_.cert()), ic.serial_hex,
                            ic.not_after};
    } catch (const pki::PkiError& e) {
      throw std::invalid_argument(e.what());
    }
  }

 private:
  const pki::CertificateAuthority& ca_;
  Duration validity_;
};

}  // namespace torii::net

#include "https/certificate.h"

#include <stdexcept>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace natfwd {
namespace {

std::time_t to_time(const ASN1_TIME* time) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(time, &tm) != 1) throw std::runtime_error("certificate has a bad date");
  return timegm(&tm);
}

X509Ptr read_from(BIO* bio, const std::string& what) {
  if (!bio) throw std::runtime_error("cannot read " + what);
  X509Ptr certificate(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!certificate) throw std::runtime_error(what + " holds no PEM certificate");
  return certificate;
}

}  // namespace

X509Ptr read_pem_certificate_file(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  ERR_clear_error();
  return read_from(bio.get(), path);
}

X509Ptr read_pem_certificate(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return read_from(bio.get(), "the certificate");
}

Validity certificate_validity(X509* certificate) {
  return {to_time(X509_get0_notBefore(certificate)), to_time(X509_get0_notAfter(certificate))};
}

std::string utc_date(std::time_t when) {
  std::tm tm{};
  gmtime_r(&when, &tm);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", &tm);
  return text;
}

bool certificate_covers(X509* certificate, const std::string& host_name) {
  return X509_check_host(certificate, host_name.data(), host_name.size(), 0, nullptr) == 1;
}

}  // namespace natfwd

// Facts about a certificate the peer serves: where its validity ends, which names it
// covers. OpenSSL does the parsing.
#pragma once

#include <ctime>
#include <memory>
#include <string>

#include <openssl/x509.h>

#include "openssl_handles.h"

namespace natfwd {

// The first certificate (the leaf) of a PEM file or text; throws with a one-line
// reason when there is none.
X509Ptr read_pem_certificate_file(const std::string& path);
X509Ptr read_pem_certificate(const std::string& pem);

struct Validity {
  std::time_t not_before = 0;  // seconds since the epoch, UTC
  std::time_t not_after = 0;
};
Validity certificate_validity(X509* certificate);
// "2027-03-01" (UTC).
std::string utc_date(std::time_t when);
// The certificate's subjectAltName (or, without one, its CN) covers `host_name`.
bool certificate_covers(X509* certificate, const std::string& host_name);

}  // namespace natfwd

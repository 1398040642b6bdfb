// The --publish spec of a serving peer: a local service that the relay's publishing
// front door carries to visitors who have only a browser.
//
//   --publish http:[HOST:]PORT     HTTP/1.1 at http://NAME.DOMAIN/ (DOMAIN: the relay's
//                                  --publish-domain), routed by the relay by Host
//   --publish tls:[HOST:]PORT      TLS at https://NAME.DOMAIN/, routed by the relay by
//                                  the ClientHello's SNI and passed through untouched:
//                                  HOST:PORT terminates TLS with its own certificate
//   --publish https:[HOST:]PORT[,cert=FILE,key=FILE]
//                                  TLS at https://NAME.DOMAIN/ passed through by SNI
//                                  as for tls, but terminated by this peer with the
//                                  PEM certificate chain FILE and its key, or without
//                                  them one from ACME (--acme-directory); HOST:PORT
//                                  gets the plaintext (HTTP/1.1)
//   --publish https:DOMAIN=[HOST:]PORT,cert=FILE,key=FILE
//   --publish tls:DOMAIN=[HOST:]PORT
//                                  the same at https://DOMAIN/, a custom domain (such
//                                  as www.example.org) in place of NAME.DOMAIN: the
//                                  relay routes it once the DNS says so (DOMAIN resolves
//                                  to the relay, TXT _natfwd.DOMAIN holds `peer id`)
//   --publish tcp:[PUBLICPORT:][HOST:]PORT
//                                  raw TCP on the relay's PUBLICPORT (0 or none: any
//                                  free one of its --publish-ports), like ssh -g -R
//
// HOST defaults to 127.0.0.1: the common case is a web server on this machine.
// Options follow the target after commas:
//   ,proxy-protocol                (tcp, tls, https) the relay puts a PROXY protocol v2 header
//                                  with the visitor's address before the visitor's bytes;
//                                  http always gets X-Forwarded-For instead
//   ,allow-from=CIDR               (repeatable) only visitors from these ranges
//                                  ("192.168.0.0/16", "2001:db8::/32", a bare IP) get
//                                  through; the relay refuses the others
//   ,auth=FILE                     (http) HTTP basic auth at home: only requests with
//                                  a user and password of FILE (htpasswd format) reach
//                                  the target; the peer checks every request
//   ,cert=FILE ,key=FILE           (https) the certificate chain and key to serve
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "address.h"

namespace natfwd {

struct PublishSpec {
  enum class Kind { kHttp, kTls, kTcp, kHttps };
  Kind kind = Kind::kHttp;
  HostPort target;  // HOST:PORT at home, reached by the serving peer
  uint16_t public_port = 0;  // tcp: the relay's port asked for; 0: any
  bool proxy_protocol = false;  // tcp, tls: PROXY v2 header first; default off
  std::vector<std::string> allow_from;  // visitor ranges as written; empty: everyone
  std::string auth_file;  // http: the htpasswd file of basic auth; empty: none
  std::string cert_file;  // https: PEM certificate chain to serve; empty: from ACME
  std::string key_file;   // https: its PEM private key; given with cert_file
  std::string custom_domain;  // tls, https: the name visitors use; empty: NAME.DOMAIN
};

Parsed<PublishSpec> parse_publish_spec(std::string_view text);
// "http", "tls", "tcp" or "https", as the spec spells it.
const char* publish_kind_name(PublishSpec::Kind kind);

}  // namespace natfwd

// Custom domains for publishing (`peer --publish https:www.example.org=PORT`): whether
// the DNS says that the peer claiming a name may have the relay route it. I/O free:
// the resolver glue (domain_resolver.h) looks the records up and hands the answers
// here; the rendezvous core (RendezvousCore::on_domains_checked) acts on the verdict.
//
// A claim of DOMAIN by a key passes when both hold:
//  - DOMAIN resolves (through any CNAMEs, which the resolver follows) to at least one
//    of the relay's public addresses, so visitors who type it reach this relay;
//  - a TXT record at _natfwd.DOMAIN holds the key's id (`peer id`), so whoever owns
//    the zone said which peer gets the name. This is the proof of RFC 8555 section
//    8.4's dns-01 challenge with the key id as the value: the id is already a digest
//    of a public key, and it never changes, so the record is set once.
// A record that is missing or says something else refuses the claim with the record
// text to add; a look-up that did not answer (timeout, server failure) decides
// nothing and is tried again.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "rendezvous/rendezvous_core.h"

namespace natfwd::relay::front_door {

// One DNS look-up's answer.
struct DnsAnswer {
  enum class Status {
    kFound,     // `values` holds the records
    kNotFound,  // no such name, or no record of the type (NXDOMAIN, NODATA)
    kFailed,    // no answer: timeout, server failure, refused
  };
  Status status = Status::kFailed;
  // kFound: numeric addresses (A/AAAA) or TXT record texts (a record's strings joined).
  std::vector<std::string> values;
  std::string error;  // kFailed: why, for the log line
};

class DomainClaimCheck {
 public:
  // `relay_addresses`: the relay's public IPv4/IPv6 addresses as numeric text (relay
  // --publish-address). Throws std::invalid_argument for an empty list or one that is
  // not an IP address.
  explicit DomainClaimCheck(const std::vector<std::string>& relay_addresses);

  DomainVerdict judge(const DomainCheck& check, const DnsAnswer& addresses,
                      const DnsAnswer& txt) const;

  // Where the TXT record of `domain`'s claim lives.
  static std::string txt_name(const std::string& domain) { return "_natfwd." + domain; }

 private:
  using Address = std::array<uint8_t, 16>;  // IPv4 as IPv4-mapped IPv6
  static bool parse(const std::string& text, Address& out);
  bool is_relay(const std::string& text) const;

  std::vector<Address> relay_;
  std::string address_record_;  // "A 192.0.2.1" or "AAAA 2001:db8::1", for refusals
};

}  // namespace natfwd::relay::front_door

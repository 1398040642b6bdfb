#include "front_door/domain_claims.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace natfwd::relay::front_door {

namespace {

std::string lower_trimmed(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  std::string out = text.substr(first, text.find_last_not_of(" \t") - first + 1);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string joined(const std::vector<std::string>& values, const char* separator) {
  std::string out;
  for (const std::string& value : values) out += (out.empty() ? "" : separator) + value;
  return out;
}

}  // namespace

DomainClaimCheck::DomainClaimCheck(const std::vector<std::string>& relay_addresses) {
  if (relay_addresses.empty())
    throw std::invalid_argument("custom domains need the relay's public address");
  for (const std::string& text : relay_addresses) {
    Address address{};
    if (!parse(text, address))
      throw std::invalid_argument("'" + text + "' is not an IP address");
    relay_.push_back(address);
  }
  const bool v6 = relay_addresses.front().find(':') != std::string::npos;
  address_record_ = std::string(v6 ? "AAAA " : "A ") + relay_addresses.front();
}

bool DomainClaimCheck::parse(const std::string& text, Address& out) {
  if (inet_pton(AF_INET6, text.c_str(), out.data()) == 1) return true;
  out.fill(0);
  out[10] = out[11] = 0xff;
  return inet_pton(AF_INET, text.c_str(), out.data() + 12) == 1;
}

bool DomainClaimCheck::is_relay(const std::string& text) const {
  Address address{};
  return parse(text, address) && std::find(relay_.begin(), relay_.end(), address) != relay_.end();
}

DomainVerdict DomainClaimCheck::judge(const DomainCheck& check, const DnsAnswer& addresses,
                                      const DnsAnswer& txt) const {
  const std::string& domain = check.domain;
  const std::string txt_at = txt_name(domain);
  // Zone-file lines, as the user types them into a DNS provider's form.
  const std::string address_fix = "`" + domain + ". CNAME " + check.cname_target + ".` (or `" +
                                  domain + ". " + address_record_ + "`)";
  const std::string txt_fix = "`" + txt_at + ". TXT \"" + check.key_id + "\"`";
  std::vector<std::string> missing;  // what the DNS says that refuses the claim
  std::vector<std::string> unknown;  // look-ups that did not answer
  using Status = DnsAnswer::Status;

  if (addresses.status == Status::kFailed) {
    unknown.push_back("no answer for " + domain + " (" + addresses.error + ")");
  } else if (addresses.status == Status::kNotFound || addresses.values.empty()) {
    missing.push_back(domain + " has no address record: add " + address_fix);
  } else if (std::none_of(addresses.values.begin(), addresses.values.end(),
                          [this](const std::string& value) { return is_relay(value); })) {
    missing.push_back(domain + " resolves to " + joined(addresses.values, ", ") +
                      ", not to this relay: make it " + address_fix);
  }

  if (txt.status == Status::kFailed) {
    unknown.push_back("no answer for " + txt_at + " (" + txt.error + ")");
  } else if (txt.status == Status::kNotFound || txt.values.empty()) {
    missing.push_back("there is no TXT record " + txt_at + ": add " + txt_fix);
  } else if (std::none_of(txt.values.begin(), txt.values.end(), [&](const std::string& value) {
               return lower_trimmed(value) == check.key_id;
             })) {
    std::vector<std::string> quoted;
    for (const std::string& value : txt.values) quoted.push_back("\"" + value.substr(0, 80) + "\"");
    missing.push_back("the TXT record " + txt_at + " holds " + joined(quoted, ", ") +
                      ", not this peer's key id: make it " + txt_fix);
  }

  if (!missing.empty())
    return {DomainVerdict::Outcome::kRefused,
            "custom domain " + domain + " is not this peer's: " + joined(missing, "; ")};
  if (!unknown.empty())
    return {DomainVerdict::Outcome::kRetry, "custom domain " + domain + ": the DNS did not "
                                            "answer: " + joined(unknown, "; ") +
                                            "; trying again later"};
  return {DomainVerdict::Outcome::kPass, ""};
}

}  // namespace natfwd::relay::front_door

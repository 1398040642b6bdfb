#include "acme/acme_order.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <memory>

#include "acme/acme_crypto.h"

namespace natfwd::acme {
namespace {

// Tries of one step that the CA may get over (no answer, 5xx, rateLimited) before the
// order fails; the pause doubles from kFirstRetryUs.
constexpr int kMaxFailures = 4;
constexpr int64_t kFirstRetryUs = 2'000'000;
// badNonce answers in a row (RFC 8555 section 6.5: retry with the nonce it carried).
constexpr int kMaxBadNonces = 5;
// Polls of an authorization or an order (RFC 8555 section 7.5.1: the client polls;
// Retry-After says when), doubling from one second to kMaxPollUs.
constexpr int kMaxPolls = 30;
constexpr int64_t kFirstPollUs = 1'000'000;
constexpr int64_t kMaxPollUs = 10'000'000;
constexpr int64_t kMicrosPerSecond = 1'000'000;
constexpr std::string_view kProblemPrefix = "urn:ietf:params:acme:error:";

struct ObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};

// A JSON object's members, as json-glib parsed them; empty when the text is no object.
class JsonDoc {
 public:
  explicit JsonDoc(const std::string& text) : parser_(json_parser_new()) {
    if (!json_parser_load_from_data(parser_.get(), text.data(), static_cast<gssize>(text.size()),
                                    nullptr))
      return;
    JsonNode* root = json_parser_get_root(parser_.get());
    if (root && JSON_NODE_HOLDS_OBJECT(root)) object_ = json_node_get_object(root);
  }
  bool ok() const { return object_ != nullptr; }
  JsonObject* object() const { return object_; }
  std::string string(const char* member) const { return string_of(object_, member); }
  static std::string string_of(JsonObject* object, const char* member) {
    if (!object || !json_object_has_member(object, member)) return {};
    JsonNode* node = json_object_get_member(object, member);
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING) return {};
    return json_node_get_string(node);
  }
  static JsonArray* array_of(JsonObject* object, const char* member) {
    if (!object || !json_object_has_member(object, member)) return nullptr;
    JsonNode* node = json_object_get_member(object, member);
    return JSON_NODE_HOLDS_ARRAY(node) ? json_node_get_array(node) : nullptr;
  }
  static JsonObject* object_of(JsonObject* object, const char* member) {
    if (!object || !json_object_has_member(object, member)) return nullptr;
    JsonNode* node = json_object_get_member(object, member);
    return JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : nullptr;
  }

 private:
  std::unique_ptr<JsonParser, ObjectUnref> parser_;
  JsonObject* object_ = nullptr;
};

// "detail (type)" of an RFC 7807 problem document.
std::string problem_text(JsonObject* problem) {
  std::string type = JsonDoc::string_of(problem, "type");
  if (type.starts_with(kProblemPrefix)) type = type.substr(kProblemPrefix.size());
  const std::string detail = JsonDoc::string_of(problem, "detail");
  if (detail.empty() && type.empty()) return "no reason given";
  return detail + (type.empty() ? "" : " (" + type + ")");
}

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

const char* phase_name(int phase) {
  static constexpr const char* kNames[] = {
      "the directory",        "a nonce",        "the account",      "the order",
      "the authorization",    "the challenge",  "the authorization", "finalize",
      "the order",            "the certificate", "done"};
  return kNames[phase];
}

}  // namespace

const char* step_name(AcmeOrder::Step step) {
  switch (step) {
    case AcmeOrder::Step::kOrdering: return "ordering";
    case AcmeOrder::Step::kAnsweringChallenge: return "answering tls-alpn-01";
    case AcmeOrder::Step::kFinalizing: return "finalizing";
    case AcmeOrder::Step::kIssued: return "issued";
    case AcmeOrder::Step::kFailed: return "failed";
  }
  return "?";
}

const char* AcmeOrder::progress() const {
  switch (phase_) {
    case Phase::kAccount: return "registering the account key";
    case Phase::kNewOrder: return "ordering a certificate";
    case Phase::kChallenge: return "answering the tls-alpn-01 challenge";
    case Phase::kPollAuthorization: return "waiting for the CA to validate";
    case Phase::kFinalize: return "finalizing with a CSR";
    case Phase::kCertificate: return "downloading the certificate";
    default: return nullptr;
  }
}

AcmeOrder::AcmeOrder(Config config) : config_(std::move(config)) {}

void AcmeOrder::start(int64_t) { send(Phase::kDirectory); }

std::optional<AcmeOrder::Request> AcmeOrder::take_request() {
  if (!request_) return std::nullopt;
  in_flight_ = true;
  auto request = std::move(request_);
  request_.reset();
  return request;
}

std::string AcmeOrder::post(const std::string& url, const std::string& payload) {
  const std::string nonce = std::move(nonce_);
  nonce_.clear();
  const bool with_jwk = phase_ == Phase::kAccount;
  return sign_jws(config_.account_key, with_jwk ? "" : config_.account_url, nonce, url, payload);
}

void AcmeOrder::send(Phase phase) {
  phase_ = phase;
  deadline_us_.reset();
  const bool needs_nonce = phase != Phase::kDirectory && phase != Phase::kNonce;
  if (needs_nonce && nonce_.empty()) {
    resume_ = phase;
    phase_ = Phase::kNonce;
    request_ = Request{"HEAD", new_nonce_url_, ""};
    return;
  }
  switch (phase) {
    case Phase::kDirectory:
      request_ = Request{"GET", config_.directory_url, ""};
      return;
    case Phase::kNonce:
      request_ = Request{"HEAD", new_nonce_url_, ""};
      return;
    case Phase::kAccount: {
      std::string payload = R"({"termsOfServiceAgreed":true)";
      if (!config_.email.empty())
        payload += R"(,"contact":[)" + json_quote("mailto:" + config_.email) + "]";
      request_ = Request{"POST", new_account_url_, post(new_account_url_, payload + "}")};
      return;
    }
    case Phase::kNewOrder:
      request_ = Request{"POST", new_order_url_,
                         post(new_order_url_, R"({"identifiers":[{"type":"dns","value":)" +
                                                  json_quote(config_.host_name) + "}]}")};
      return;
    case Phase::kAuthorization:
    case Phase::kPollAuthorization:
      request_ = Request{"POST", authorizations_.front(), post(authorizations_.front(), "")};
      return;
    case Phase::kChallenge:
      request_ = Request{"POST", challenge_url_, post(challenge_url_, "{}")};
      return;
    case Phase::kFinalize:
      request_ = Request{
          "POST", finalize_url_,
          post(finalize_url_, R"({"csr":")" +
                                  base64url(make_csr_der(config_.certificate_key, config_.host_name)) +
                                  "\"}")};
      return;
    case Phase::kPollOrder:
      request_ = Request{"POST", order_url_, post(order_url_, "")};
      return;
    case Phase::kCertificate:
      request_ = Request{"POST", certificate_url_, post(certificate_url_, "")};
      return;
    case Phase::kDone:
      return;
  }
}

void AcmeOrder::on_response(const Response& response, int64_t now_us) {
  if (!in_flight_ || phase_ == Phase::kDone) return;
  in_flight_ = false;
  if (!response.replay_nonce.empty()) nonce_ = response.replay_nonce;
  handle(response, now_us);
}

void AcmeOrder::on_timer(int64_t now_us) {
  if (!deadline_us_ || now_us < *deadline_us_ || phase_ == Phase::kDone) return;
  deadline_us_.reset();
  send(phase_);
}

void AcmeOrder::handle(const Response& response, int64_t now_us) {
  const std::string what = phase_name(static_cast<int>(phase_));
  if (response.status == 0 || response.status >= 500) {
    retry_later(response, now_us,
                response.status == 0
                    ? "no answer from the CA for " + what +
                          (response.body.empty() ? "" : " (" + response.body + ")")
                    : "the CA failed on " + what + " (HTTP " +
                                           std::to_string(response.status) + ")");
    return;
  }
  if (response.status >= 300) {
    const JsonDoc problem(response.body);
    const std::string type = problem.string("type");
    if (type == std::string(kProblemPrefix) + "badNonce" && ++bad_nonces_ <= kMaxBadNonces) {
      send(phase_);
      return;
    }
    if (type == std::string(kProblemPrefix) + "rateLimited") {
      retry_later(response, now_us, "the CA limits our rate: " + problem_text(problem.object()));
      return;
    }
    fail("the CA refused " + what + ": " + problem_text(problem.object()));
    return;
  }
  bad_nonces_ = 0;
  failures_ = 0;
  retrying_.clear();
  switch (phase_) {
    case Phase::kDirectory:
      if (!handle_directory(response.body)) return;
      send(config_.account_url.empty() ? Phase::kAccount : Phase::kNewOrder);
      return;
    case Phase::kNonce:
      if (nonce_.empty()) return fail("the CA's newNonce answer has no Replay-Nonce");
      send(resume_);
      return;
    case Phase::kAccount:
      if (response.location.empty()) return fail("the CA's newAccount answer has no Location");
      config_.account_url = response.location;
      send(Phase::kNewOrder);
      return;
    case Phase::kNewOrder:
      order_url_ = response.location;
      if (order_url_.empty()) return fail("the CA's newOrder answer has no Location");
      handle_order(response.body, now_us, response);
      return;
    case Phase::kAuthorization:
    case Phase::kPollAuthorization:
      handle_authorization(response.body, now_us, response);
      return;
    case Phase::kChallenge:
      polls_ = 0;
      phase_ = Phase::kPollAuthorization;
      poll_later(response, now_us);
      return;
    case Phase::kFinalize:
    case Phase::kPollOrder:
      handle_order(response.body, now_us, response);
      return;
    case Phase::kCertificate:
      if (response.body.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
        return fail("the CA's certificate download holds no PEM certificate");
      certificate_ = response.body;
      step_ = Step::kIssued;
      phase_ = Phase::kDone;
      return;
    case Phase::kDone:
      return;
  }
}

bool AcmeOrder::handle_directory(const std::string& body) {
  const JsonDoc directory(body);
  new_nonce_url_ = directory.string("newNonce");
  new_account_url_ = directory.string("newAccount");
  new_order_url_ = directory.string("newOrder");
  if (new_nonce_url_.empty() || new_account_url_.empty() || new_order_url_.empty()) {
    fail("the ACME directory at " + config_.directory_url +
         " lacks newNonce, newAccount or newOrder");
    return false;
  }
  return true;
}

bool AcmeOrder::handle_order(const std::string& body, int64_t now_us, const Response& response) {
  const JsonDoc order(body);
  const std::string status = order.string("status");
  if (phase_ == Phase::kNewOrder) {
    authorizations_.clear();
    if (JsonArray* list = JsonDoc::array_of(order.object(), "authorizations"))
      for (guint i = 0; i < json_array_get_length(list); ++i) {
        JsonNode* node = json_array_get_element(list, i);
        if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING)
          authorizations_.emplace_back(json_node_get_string(node));
      }
    finalize_url_ = order.string("finalize");
    if (authorizations_.size() != 1 || finalize_url_.empty()) {
      fail("the CA's order for " + config_.host_name +
           " does not have one authorization and a finalize URL");
      return false;
    }
  }
  if (status == "valid") {
    certificate_url_ = order.string("certificate");
    if (certificate_url_.empty()) {
      fail("the CA's valid order has no certificate URL");
      return false;
    }
    step_ = Step::kFinalizing;
    send(Phase::kCertificate);
  } else if (status == "ready") {
    step_ = Step::kFinalizing;
    send(Phase::kFinalize);
  } else if (status == "pending" && phase_ == Phase::kNewOrder) {
    send(Phase::kAuthorization);
  } else if (status == "processing" || status == "pending") {
    if (phase_ == Phase::kFinalize) polls_ = 0;
    phase_ = Phase::kPollOrder;
    poll_later(response, now_us);
  } else {
    fail("the CA's order for " + config_.host_name + " is " +
         (status.empty() ? "unreadable" : status) + ": " +
         problem_text(JsonDoc::object_of(order.object(), "error")));
    return false;
  }
  return true;
}

bool AcmeOrder::handle_authorization(const std::string& body, int64_t now_us,
                                     const Response& response) {
  const JsonDoc authorization(body);
  const std::string status = authorization.string("status");
  JsonArray* challenges = JsonDoc::array_of(authorization.object(), "challenges");
  JsonObject* tls_alpn = nullptr;
  for (guint i = 0; challenges && i < json_array_get_length(challenges); ++i) {
    JsonNode* node = json_array_get_element(challenges, i);
    if (JSON_NODE_HOLDS_OBJECT(node) &&
        JsonDoc::string_of(json_node_get_object(node), "type") == "tls-alpn-01")
      tls_alpn = json_node_get_object(node);
  }
  if (status == "valid") {
    // The order becomes ready once its one authorization is valid (RFC 8555 7.1.6).
    step_ = Step::kFinalizing;
    send(Phase::kFinalize);
    return true;
  }
  if (status == "pending" && phase_ == Phase::kAuthorization) {
    if (!tls_alpn) {
      fail("the CA offers no tls-alpn-01 challenge for " + config_.host_name);
      return false;
    }
    const std::string token = JsonDoc::string_of(tls_alpn, "token");
    challenge_url_ = JsonDoc::string_of(tls_alpn, "url");
    if (token.empty() || challenge_url_.empty()) {
      fail("the CA's tls-alpn-01 challenge has no token or URL");
      return false;
    }
    // RFC 8555 section 8.1.
    key_authorization_ = token + "." + jwk_thumbprint(config_.account_key);
    step_ = Step::kAnsweringChallenge;
    send(Phase::kChallenge);
    return true;
  }
  if (status == "pending" || status == "processing") {
    poll_later(response, now_us);
    return true;
  }
  fail("the CA did not validate " + config_.host_name + " (authorization " +
       (status.empty() ? "unreadable" : status) + "): " +
       problem_text(JsonDoc::object_of(tls_alpn, "error")));
  return false;
}

void AcmeOrder::retry_later(const Response& response, int64_t now_us, const std::string& why) {
  retrying_ = why;
  if (++failures_ > kMaxFailures) {
    fail(why + " (" + std::to_string(kMaxFailures) + " retries)");
    return;
  }
  const int64_t pause = response.retry_after_seconds
                            ? *response.retry_after_seconds * kMicrosPerSecond
                            : kFirstRetryUs << (failures_ - 1);
  deadline_us_ = now_us + pause;
}

void AcmeOrder::poll_later(const Response& response, int64_t now_us) {
  if (++polls_ > kMaxPolls) {
    fail("the CA did not decide on " + config_.host_name + " within " +
         std::to_string(kMaxPolls) + " polls");
    return;
  }
  const int64_t pause =
      response.retry_after_seconds
          ? std::clamp<int64_t>(*response.retry_after_seconds * kMicrosPerSecond, 0, kMaxPollUs)
          : std::min(kMaxPollUs, kFirstPollUs << std::min(polls_ - 1, 4));
  deadline_us_ = now_us + pause;
}

void AcmeOrder::fail(const std::string& why) {
  error_ = why;
  step_ = Step::kFailed;
  phase_ = Phase::kDone;
  deadline_us_.reset();
  request_.reset();
}

}  // namespace natfwd::acme

// One certificate order with an ACME CA (RFC 8555), without I/O: responses and `now`
// in, one request at a time and the next deadline out. The glue (acme_agent.h) sends
// the requests over HTTPS, answers the TLS-ALPN-01 challenge (RFC 8737) with
// challenge_key_authorization() while step() is kAnsweringChallenge, and stores what
// comes out.
//
//   directory (GET) -> nonce (HEAD newNonce) -> account (newAccount, or the stored
//   one) -> order (newOrder) -> authorization (POST-as-GET) -> challenge (POST {})
//   -> poll authorization -> finalize (POST csr) -> poll order -> certificate
//
// Every POST carries the last Replay-Nonce (RFC 8555 section 6.5); a badNonce error
// is retried at once with the fresh one. A failure the CA may get over (no answer,
// 5xx, rateLimited) is retried after a doubling pause; anything else, or too many
// tries, fails the order with the CA's problem detail (section 6.7).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <openssl/evp.h>

namespace natfwd::acme {

class AcmeOrder {
 public:
  struct Config {
    std::string directory_url;
    std::string host_name;      // the one identifier ordered (NAME.DOMAIN)
    std::string email;          // contact for newAccount; empty: none
    EVP_PKEY* account_key = nullptr;      // borrowed, outlives the order
    std::string account_url;              // from an earlier order; empty: newAccount
    EVP_PKEY* certificate_key = nullptr;  // borrowed: the key the CSR carries
  };
  struct Request {
    std::string method;  // GET, HEAD or POST
    std::string url;
    std::string body;    // POST: the JWS (application/jose+json)
  };
  struct Response {
    int status = 0;  // HTTP status; 0: no answer (connection failed, timeout)
    std::string body;
    std::string location;
    std::string replay_nonce;
    std::optional<int64_t> retry_after_seconds;
  };
  enum class Step { kOrdering, kAnsweringChallenge, kFinalizing, kIssued, kFailed };

  explicit AcmeOrder(Config config);

  // Starts the order: request() has the first request.
  void start(int64_t now_us);
  // The answer to the request last taken.
  void on_response(const Response& response, int64_t now_us);
  // The deadline passed: a pause before a retry or a poll is over.
  void on_timer(int64_t now_us);

  // The request to send now, once (empty while one is out or while waiting).
  std::optional<Request> take_request();
  // When on_timer() wants to run; empty: not waiting.
  std::optional<int64_t> deadline_us() const { return deadline_us_; }

  Step step() const { return step_; }
  // kAnsweringChallenge: a TLS-ALPN-01 handshake for host_name with ALPN acme-tls/1
  // gets a certificate made from this (RFC 8737 section 3).
  const std::string& challenge_key_authorization() const { return key_authorization_; }
  // The account's URL once known: store it to skip newAccount next time.
  const std::string& account_url() const { return config_.account_url; }
  // kIssued: the PEM certificate chain.
  const std::string& certificate_pem() const { return certificate_; }
  // kFailed: why, for one line.
  const std::string& error() const { return error_; }
  // Why the request now waiting for deadline_us() is a retry; empty once one succeeds.
  const std::string& retrying() const { return retrying_; }
  // The step under way, for a progress line ("ordering a certificate"); null for the
  // steps not worth one (the directory, nonces, polls).
  const char* progress() const;

 private:
  enum class Phase {
    kDirectory, kNonce, kAccount, kNewOrder, kAuthorization, kChallenge, kPollAuthorization,
    kFinalize, kPollOrder, kCertificate, kDone
  };

  void send(Phase phase);
  void handle(const Response& response, int64_t now_us);
  bool handle_directory(const std::string& body);
  bool handle_order(const std::string& body, int64_t now_us, const Response& response);
  bool handle_authorization(const std::string& body, int64_t now_us, const Response& response);
  void retry_later(const Response& response, int64_t now_us, const std::string& why);
  void poll_later(const Response& response, int64_t now_us);
  void fail(const std::string& why);
  std::string post(const std::string& url, const std::string& payload);

  Config config_;
  Step step_ = Step::kOrdering;
  Phase phase_ = Phase::kDirectory;
  Phase resume_ = Phase::kDirectory;  // the request a nonce fetch is for
  std::optional<Request> request_;
  bool in_flight_ = false;
  std::optional<int64_t> deadline_us_;
  int failures_ = 0;       // in a row, for the current phase
  int bad_nonces_ = 0;     // in a row
  int polls_ = 0;
  std::string nonce_;
  std::string new_nonce_url_, new_account_url_, new_order_url_;
  std::string order_url_, finalize_url_, certificate_url_;
  std::vector<std::string> authorizations_;
  std::string challenge_url_;
  std::string key_authorization_;
  std::string certificate_;
  std::string error_;
  std::string retrying_;
};

const char* step_name(AcmeOrder::Step step);

}  // namespace natfwd::acme

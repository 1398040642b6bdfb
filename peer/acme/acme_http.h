// The ACME client's HTTPS (libsoup 3 on the GLib main loop): sends one
// AcmeOrder::Request at a time and hands back its AcmeOrder::Response. A request that
// gets no answer within kRequestTimeoutSeconds, or whose connection fails, answers
// with status 0, which the order treats as a CA it may retry later.
#pragma once

#include <functional>
#include <string>

#include <libsoup/soup.h>

#include "acme/acme_order.h"
#include "glib_ptr.h"

namespace natfwd::acme {

class AcmeHttp {
 public:
  using Done = std::function<void(const AcmeOrder::Response& response)>;

  // A CA stalls at most this long per request before the order's retry takes over.
  static constexpr unsigned kRequestTimeoutSeconds = 20;

  // `ca_file`: PEM roots that alone are trusted for the directory's HTTPS (a test CA
  // such as pebble); empty: the system's. `proxy_url`: http://HOST:PORT of an HTTP
  // CONNECT proxy every request goes through; empty: none. Throws when the file cannot
  // be read.
  AcmeHttp(const std::string& ca_file, const std::string& proxy_url);
  ~AcmeHttp();
  AcmeHttp(const AcmeHttp&) = delete;
  AcmeHttp& operator=(const AcmeHttp&) = delete;

  // `done` runs later from the main loop, never inside send() and never after this
  // object is gone; a send() while one is out cancels that one.
  void send(const AcmeOrder::Request& request, Done done);

 private:
  static gboolean on_unsendable(gpointer data);
  static void on_sent(GObject* source, GAsyncResult* result, gpointer data);
  void finish(SoupMessage* message, GBytes* body, GError* error);

  GObjectPtr<SoupSession> session_;
  GCancellablePtr cancellable_;  // the request out, if any
  GObjectPtr<SoupMessage> message_;
  Done done_;
  SourceId idle_;  // an unsendable request's answer, from the main loop
};

}  // namespace natfwd::acme

// TLS byte streams over a local socket pair: an OpenSSL error left in the thread's
// queue by some other connection must not fail this one.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <fstream>
#include <string>

#include "byte_stream.h"
#include "identity.h"

using natfwd::ByteStream;
using Io = ByteStream::Io;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

struct TlsPair {
  natfwd::SslCtxPtr server_ctx;
  natfwd::SslCtxPtr client_ctx = natfwd::make_tls_client_context();
  std::unique_ptr<ByteStream> client;
  std::unique_ptr<ByteStream> server;

  TlsPair() {
    gchar* dir = g_dir_make_tmp("natfwd-tls-XXXXXX", nullptr);
    REQUIRE(dir);
    const std::string cert = std::string(dir) + "/c.pem", key = std::string(dir) + "/k.pem";
    auto identity = natfwd::Identity::generate();
    write_file(cert, identity.self_signed_certificate_pem("test"));
    write_file(key, identity.private_key_pem());
    server_ctx = natfwd::make_tls_server_context(cert, key);
    unlink(cert.c_str());
    unlink(key.c_str());
    rmdir(dir);
    g_free(dir);
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    GSocket* a = g_socket_new_from_fd(fds[0], nullptr);
    GSocket* b = g_socket_new_from_fd(fds[1], nullptr);
    client = natfwd::make_tls_stream(a, client_ctx.get(), false);
    server = natfwd::make_tls_stream(b, server_ctx.get(), true);
    g_object_unref(a);
    g_object_unref(b);
  }

  // Handshake and one byte each way, by turns (both ends are non-blocking).
  void connect() {
    std::array<std::byte, 16> buffer{};
    const std::byte one{1};
    bool client_sent = false, server_got = false, server_sent = false, client_got = false;
    std::string error;
    for (int round = 0; round < 100 && !client_got; ++round) {
      size_t n = 0;
      if (!client_sent) client_sent = client->write({&one, 1}, n, error) == Io::kOk;
      else client_got = client->read(buffer, n, error) == Io::kOk;
      REQUIRE(error.empty());
      if (!server_got) server_got = server->read(buffer, n, error) == Io::kOk;
      else if (!server_sent) server_sent = server->write({&one, 1}, n, error) == Io::kOk;
      REQUIRE(error.empty());
    }
    REQUIRE(client_got);
  }
};

}  // namespace

TEST_CASE("a TLS stream with nothing to read says would-block, whatever the thread's "
          "OpenSSL error queue holds") {
  TlsPair pair;
  pair.connect();
  // What another connection's failed SSL_shutdown leaves behind.
  ERR_put_error(ERR_LIB_SSL, 0, SSL_R_SHUTDOWN_WHILE_IN_INIT, __FILE__, __LINE__);
  std::array<std::byte, 16> buffer{};
  size_t n = 0;
  std::string error;
  CHECK(pair.client->read(buffer, n, error) == Io::kWouldBlock);
  CHECK(error.empty());
  ERR_put_error(ERR_LIB_SSL, 0, SSL_R_SHUTDOWN_WHILE_IN_INIT, __FILE__, __LINE__);
  CHECK(pair.server->read(buffer, n, error) == Io::kWouldBlock);
  CHECK(error.empty());
  ERR_clear_error();
}

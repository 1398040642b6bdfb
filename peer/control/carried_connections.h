// A second connecting peer beside a running one with the same state dir (a laptop's
// user service): its -L and -D connections go through the running peer's tunnel
// instead of a tunnel of its own, one control connection each (control_server.h,
// `connect NAME HOST:PORT status`), as `peer nc` does. No relay link, no ICE, no
// second tunnel for the serving peer to keep.
//
// Per connection: connect to STATE_DIR/control and send the request; read the answer
// line without blocking the loop; on "ok" copy bytes both ways between the local
// connection and the control connection (FIN half-closes, a reset resets); on
// "error N: why" hand N to the connection's handler (a SOCKS reply) or reset it (-L).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"
#include "tunnel/stream_opening.h"

namespace natfwd {

class StdioSplice;

class CarriedConnections {
 public:
  // The running peer of `state_dir` when it carries connections to `peer` (NAME or
  // NAME@KEYID; its `carries` answer is yes); nullptr when none runs there, it keeps no
  // tunnel to `peer` or does not know the request.
  static std::unique_ptr<CarriedConnections> through_running_peer(const std::string& state_dir,
                                                                  const std::string& peer);
  ~CarriedConnections();
  CarriedConnections(const CarriedConnections&) = delete;
  CarriedConnections& operator=(const CarriedConnections&) = delete;

  // Carries `tcp` (a reference is taken) to `target`. `on_result` gets the serving
  // peer's answer as RemotePeer::forward_connection's handler does; without one a
  // refused connection is reset.
  void forward(GSocketConnection* tcp, const HostPort& target, OpenResultHandler on_result = {});

  const std::string& control_path() const { return control_path_; }
  const std::string& peer() const { return peer_; }

 private:
  struct Carried;
  CarriedConnections(std::string state_dir, std::string peer);
  static gboolean on_answer_readable(gint fd, GIOCondition, gpointer carried);
  static gboolean on_answer_timeout(gpointer carried);
  void read_answer(Carried& carried);
  void answered(Carried& carried, const std::string& line);
  void fail(Carried& carried, int status, const std::string& why);
  void finish(Carried& carried);

  std::string state_dir_;
  std::string peer_;
  std::string control_path_;
  std::vector<std::unique_ptr<Carried>> carried_;
};

}  // namespace natfwd

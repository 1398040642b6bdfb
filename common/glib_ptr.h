// Owners for the GLib/GIO/libnice handles both programs hold, and the guard every C
// callback runs its body under (HACKING.md, "Handle ownership").
//
// GObjects (GSocket, GSocketConnection, GCancellable, NiceAgent, GSocketAddress, ...)
// live in GObjectPtr<T>; attached sources in GSourcePtr (detached and released
// together); numeric source ids from g_timeout_add and friends in SourceId.
#pragma once

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

#include <gio/gio.h>
#include <unistd.h>

#include "log.h"

namespace natfwd {

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// Takes a new reference on `object` (for handles GLib lends us, such as the
// GSocket of a GSocketConnection); null stays null.
template <typename T>
GObjectPtr<T> ref_object(T* object) {
  return GObjectPtr<T>(object ? static_cast<T*>(g_object_ref(object)) : nullptr);
}

// Detaches the source from its main context, then drops our reference.
struct GSourceDestroy {
  void operator()(GSource* source) const {
    g_source_destroy(source);
    g_source_unref(source);
  }
};
using GSourcePtr = std::unique_ptr<GSource, GSourceDestroy>;

struct GErrorFree {
  void operator()(GError* error) const { g_error_free(error); }
};
using GErrorPtr = std::unique_ptr<GError, GErrorFree>;

struct GFree {
  void operator()(gpointer memory) const { g_free(memory); }
};
using GCharPtr = std::unique_ptr<gchar, GFree>;

struct GMainLoopUnref {
  void operator()(GMainLoop* loop) const { g_main_loop_unref(loop); }
};
using GMainLoopPtr = std::unique_ptr<GMainLoop, GMainLoopUnref>;

struct GMainContextUnref {
  void operator()(GMainContext* context) const { g_main_context_unref(context); }
};
using GMainContextPtr = std::unique_ptr<GMainContext, GMainContextUnref>;

// Cancels outstanding operations before dropping the reference: their callbacks then
// run with G_IO_ERROR_CANCELLED instead of reaching an owner that is gone.
struct GCancellableCancel {
  void operator()(GCancellable* cancellable) const {
    g_cancellable_cancel(cancellable);
    g_object_unref(cancellable);
  }
};
using GCancellablePtr = std::unique_ptr<GCancellable, GCancellableCancel>;

// A source id from g_timeout_add / g_idle_add / g_unix_fd_add, removed when the owner
// goes or re-arms. A callback that returns G_SOURCE_REMOVE must release() its id first.
class SourceId {
 public:
  SourceId() = default;
  explicit SourceId(guint id) : id_(id) {}
  SourceId(SourceId&& other) noexcept : id_(std::exchange(other.id_, 0)) {}
  SourceId& operator=(SourceId&& other) noexcept {
    if (this != &other) reset(std::exchange(other.id_, 0));
    return *this;
  }
  SourceId(const SourceId&) = delete;
  SourceId& operator=(const SourceId&) = delete;
  ~SourceId() { reset(); }

  void reset(guint id = 0) {
    if (id_) g_source_remove(id_);
    id_ = id;
  }
  // Forgets the id without removing it (the source is already gone or going).
  void release() { id_ = 0; }
  guint get() const { return id_; }
  explicit operator bool() const { return id_ != 0; }

 private:
  guint id_ = 0;
};

// A file descriptor of our own (an epoll set, a socket outside GSocket), closed with
// its owner; -1 holds none.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// For a socket source on a data path: GLib blocks a source that may not recurse for
// the length of each dispatch, taking its descriptor out of the context's poll set and
// putting it back, and each of the two writes the context's wakeup eventfd, so every
// wakeup of a busy socket cost two writes, a read and one more loop iteration (6 % of
// a relay data thread's CPU under a flood). Only for a source whose callback never
// iterates the main context itself, or it could be dispatched again inside itself.
inline void keep_polled_while_dispatched(GSource* source) {
  g_source_set_can_recurse(source, TRUE);
}

// Deletes `object` from an idle callback: for an object whose own callback is running
// (a connection that reported its end), which must not be destroyed under its feet.
template <typename T>
void delete_later(std::unique_ptr<T> object) {
  if (!object) return;
  g_idle_add_full(G_PRIORITY_DEFAULT, [](gpointer doomed) -> gboolean {
    delete static_cast<T*>(doomed);
    return G_SOURCE_REMOVE;
  }, object.release(), nullptr);
}

// Runs a C callback's body; an exception is logged as an error under `where` and
// dropped, and the callback returns `on_exception` (never unwinds through GLib).
template <typename Result, typename Body>
Result guard_callback(const char* where, Result on_exception, Body&& body) noexcept {
  try {
    return std::forward<Body>(body)();
  } catch (const std::exception& e) {
    log::error("%s: %s", where, e.what());
  } catch (...) {
    log::error("%s: unknown exception", where);
  }
  return on_exception;
}

template <typename Body>
void guard_callback(const char* where, Body&& body) noexcept {
  try {
    std::forward<Body>(body)();
  } catch (const std::exception& e) {
    log::error("%s: %s", where, e.what());
  } catch (...) {
    log::error("%s: unknown exception", where);
  }
}

}  // namespace natfwd

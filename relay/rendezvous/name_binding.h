// Who may hold a name. Today any key may register a free name, and a name held by a
// live connection can only be taken over by the same key. A later issue makes
// bindings persistent (a name, once bound to a key, stays with that key) and proves
// possession of the key with a signed challenge; it plugs in here.
#pragma once

#include <string>
#include <string_view>

namespace natfwd::relay {

class NameBindingPolicy {
 public:
  virtual ~NameBindingPolicy() = default;
  // May the connection holding `public_key` (raw 32 bytes) register `name`?
  // Called after the live-connection check; false sends Error NAME_TAKEN.
  virtual bool may_bind(std::string_view name, std::string_view public_key) = 0;
  // The name is now held by `public_key`.
  virtual void bound(std::string_view name, std::string_view public_key) = 0;
};

// Names live only as long as the connection that registered them.
class EphemeralNameBinding final : public NameBindingPolicy {
 public:
  bool may_bind(std::string_view, std::string_view) override { return true; }
  void bound(std::string_view, std::string_view) override {}
};

}  // namespace natfwd::relay

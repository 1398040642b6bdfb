// Name bindings kept in the relay's state dir, in an SQLite database (STATE_DIR/names.db,
// mode 0600), one row per name:
//
//   name TEXT PRIMARY KEY, public_key BLOB (32 bytes), bound_unix, last_seen_unix,
//   bound_from TEXT (the address that registered it first),
//   handover_to TEXT (the key id its holder handed it to, `peer handover`; '' when none)
//
// Why a database: a registration changes one record, and with a text file rewritten
// whole on every new binding, 100,000 names blocked the relay's one event loop for
// about 200 ms per registration. SQLite (Debian's libsqlite3) updates one row in
// place, crash-safe (WAL journal), and lets `relay names` list and release names
// while the relay runs: every lookup reads the database, so a released name is free at
// once.
//
// A name unused for `expiry` (no registration and no connection holding it) is free
// again for any key; the core still refuses a name that a live connection holds.
// The old text file (STATE_DIR/names: "NAME KEYID BASE64KEY" lines) is imported once,
// when the database is first made, and renamed names.imported.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rendezvous/name_binding.h"

namespace natfwd::relay {

// Reads a names text file: name -> raw 32-byte key. Throws std::runtime_error
// ("PATH:LINE: reason") on a malformed line, or with the reason when it cannot be read;
// a missing file is no bindings.
std::map<std::string, std::string> read_names_file(const std::string& path);

class NameStore final : public NameBindingPolicy {
 public:
  struct Options {
    // Free again after this long unused; zero: never.
    std::chrono::seconds expiry{std::chrono::hours(24 * 365)};
    // Wall-clock unix seconds; injectable for tests. Default: time().
    std::function<int64_t()> unix_now;
  };
  struct Binding {
    std::string name;
    std::string public_key;  // raw 32 bytes
    int64_t bound_unix = 0;
    int64_t last_seen_unix = 0;
    std::string bound_from;
    std::string handover_to;  // key id, '' when none
    bool expired = false;
  };

  // Opens or makes `db_path`; imports `legacy_file` when the database is new. Throws
  // std::runtime_error with a one-line reason.
  NameStore(const std::string& db_path, const std::string& legacy_file, Options options);
  ~NameStore() override;
  NameStore(const NameStore&) = delete;
  NameStore& operator=(const NameStore&) = delete;

  std::optional<std::string> bound_key(std::string_view name) const override;
  bool bind(std::string_view name, std::string_view public_key,
            std::string_view from_address) override;
  void used(std::string_view name) override;
  bool hand_over(std::string_view name, std::string_view to_key_id) override;
  std::optional<std::string> handed_over_to(std::string_view name) const override;

  // `relay names`: every binding, by name.
  std::vector<Binding> list() const;
  // Frees `name`; false when it was not bound.
  bool release(std::string_view name);
  size_t size() const;
  // Many bindings in one transaction (tests and imports).
  void bind_many(const std::map<std::string, std::string>& bindings, std::string_view from);

 private:
  struct StatementFree {
    void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
  };
  using Statement = std::unique_ptr<sqlite3_stmt, StatementFree>;
  Statement prepare(const char* sql) const;
  void exec(const char* sql) const;
  bool has_column(const char* table, const char* column) const;
  void finalize_statements();
  int64_t now() const;
  bool is_expired(int64_t last_seen) const;

  Options options_;
  std::string path_;
  sqlite3* db_ = nullptr;
  Statement select_;
  Statement upsert_;
  Statement touch_;
  Statement hand_over_;
  Statement select_heir_;
};

}  // namespace natfwd::relay

#include "server/name_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "identity.h"
#include "log.h"
#include "rendezvous/rendezvous_core.h"
#include "turn/credentials.h"

namespace natfwd::relay {
namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS names ("
    " name TEXT PRIMARY KEY,"
    " public_key BLOB NOT NULL,"
    " bound_unix INTEGER NOT NULL,"
    " last_seen_unix INTEGER NOT NULL,"
    " bound_from TEXT NOT NULL DEFAULT '',"
    " handover_to TEXT NOT NULL DEFAULT '')";

// Databases made before `peer handover` existed lack its column.
constexpr const char* kAddHandoverColumn =
    "ALTER TABLE names ADD COLUMN handover_to TEXT NOT NULL DEFAULT ''";

constexpr size_t kKeySize = 32;
// base64 of 32 bytes: 44 characters, the last one '='.
constexpr size_t kKeyBase64Size = 44;

std::string key_id_of(std::string_view raw) {
  PublicKey key{};
  public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), key);
  return key_id(key);
}

std::string encode_key(std::string_view raw) {
  return turn::base64(std::as_bytes(std::span(raw.data(), raw.size())));
}

// The raw key, or "" when `text` is not the canonical base64 of 32 bytes.
std::string decode_key(std::string_view text) {
  if (text.size() != kKeyBase64Size) return {};
  unsigned char out[kKeyBase64Size] = {};
  const int n = EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n != static_cast<int>(kKeySize + 1)) return {};  // 33: the padding counts as a byte
  std::string raw(reinterpret_cast<const char*>(out), kKeySize);
  if (encode_key(raw) != text) return {};  // non-canonical spellings are refused
  return raw;
}

}  // namespace

std::map<std::string, std::string> read_names_file(const std::string& path) {
  std::map<std::string, std::string> bindings;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return bindings;
    throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  }
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    auto malformed = [&](const std::string& why) {
      return std::runtime_error(path + ":" + std::to_string(number) + ": " + why);
    };
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, id, key_text, extra;
    fields >> name >> id >> key_text;
    if (key_text.empty() || (fields >> extra))
      throw malformed("expected 'NAME KEYID BASE64KEY'");
    if (!is_valid_peer_name(name)) throw malformed("'" + name + "' is not a valid name");
    const std::string raw = decode_key(key_text);
    if (raw.empty()) throw malformed("the key is not base64 of 32 bytes");
    if (key_id_of(raw) != id) throw malformed("key id " + id + " does not match the key");
    if (bindings.contains(name)) throw malformed("'" + name + "' is bound twice");
    bindings.emplace(name, raw);
  }
  if (in.bad()) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  return bindings;
}

NameStore::NameStore(const std::string& db_path, const std::string& legacy_file,
                     Options options)
    : options_(std::move(options)), path_(db_path) {
  const bool fresh = access(db_path.c_str(), F_OK) != 0;
  // Read the old file before making anything, so a malformed one stops the start.
  const auto legacy = fresh ? read_names_file(legacy_file) : std::map<std::string, std::string>{};
  if (fresh) {
    const int fd = open(db_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + db_path + ": " + std::strerror(errno));
    close(fd);
  }
  if (sqlite3_open_v2(db_path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open " + db_path + ": " + why);
  }
  try {
    // WAL: a writer does not block `relay names` readers, and a commit is one append.
    // synchronous=NORMAL in WAL mode may lose the last commits on power loss, never
    // corrupt the database; a lost binding is registered again at the next connect.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA busy_timeout=1000");
    exec(kSchema);
    if (!has_column("names", "handover_to")) exec(kAddHandoverColumn);
    select_ = prepare("SELECT public_key, last_seen_unix FROM names WHERE name = ?1");
    upsert_ = prepare(
        "INSERT INTO names (name, public_key, bound_unix, last_seen_unix, bound_from) "
        "VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT(name) DO UPDATE SET "
        "public_key = ?2, bound_unix = ?3, last_seen_unix = ?3, bound_from = ?4, "
        "handover_to = ''");
    touch_ = prepare("UPDATE names SET last_seen_unix = ?2 WHERE name = ?1");
    // Handing over is a use of the name by its holder.
    hand_over_ =
        prepare("UPDATE names SET handover_to = ?2, last_seen_unix = ?3 WHERE name = ?1");
    select_heir_ = prepare("SELECT handover_to, last_seen_unix FROM names WHERE name = ?1");
  } catch (...) {
    finalize_statements();
    sqlite3_close(db_);
    throw;
  }
  // The WAL and shared-memory files take the database's mode from the umask.
  chmod(db_path.c_str(), 0600);
  if (!legacy.empty()) {
    bind_many(legacy, "imported");
    const std::string moved = legacy_file + ".imported";
    if (rename(legacy_file.c_str(), moved.c_str()) != 0)
      log::warn("cannot rename %s to %s: %s", legacy_file.c_str(), moved.c_str(),
                std::strerror(errno));
    log::info("imported %zu name binding%s from %s into %s", legacy.size(),
              legacy.size() == 1 ? "" : "s", legacy_file.c_str(), db_path.c_str());
  }
}

NameStore::~NameStore() {
  finalize_statements();
  sqlite3_close(db_);
}

void NameStore::finalize_statements() {
  for (Statement* statement : {&select_, &upsert_, &touch_, &hand_over_, &select_heir_})
    statement->reset();
}

bool NameStore::has_column(const char* table, const char* column) const {
  Statement info = prepare((std::string("PRAGMA table_info(") + table + ")").c_str());
  while (sqlite3_step(info.get()) == SQLITE_ROW)
    if (std::strcmp(reinterpret_cast<const char*>(sqlite3_column_text(info.get(), 1)), column) ==
        0)
      return true;
  return false;
}

NameStore::Statement NameStore::prepare(const char* sql) const {
  sqlite3_stmt* statement = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &statement, nullptr) != SQLITE_OK)
    throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
  return Statement(statement);
}

void NameStore::exec(const char* sql) const {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    throw std::runtime_error(path_ + ": " + why);
  }
}

int64_t NameStore::now() const {
  return options_.unix_now ? options_.unix_now() : static_cast<int64_t>(std::time(nullptr));
}

bool NameStore::is_expired(int64_t last_seen) const {
  return options_.expiry.count() > 0 && now() - last_seen > options_.expiry.count();
}

std::optional<std::string> NameStore::bound_key(std::string_view name) const {
  sqlite3_stmt* select = select_.get();
  sqlite3_reset(select);
  sqlite3_bind_text(select, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  std::optional<std::string> key;
  const int step = sqlite3_step(select);
  if (step == SQLITE_ROW && sqlite3_column_bytes(select, 0) == static_cast<int>(kKeySize) &&
      !is_expired(sqlite3_column_int64(select, 1)))
    key.emplace(static_cast<const char*>(sqlite3_column_blob(select, 0)), kKeySize);
  else if (step != SQLITE_ROW && step != SQLITE_DONE)
    log::error("%s: reading '%.*s': %s", path_.c_str(), static_cast<int>(name.size()),
               name.data(), sqlite3_errmsg(db_));
  sqlite3_reset(select);
  return key;
}

bool NameStore::bind(std::string_view name, std::string_view public_key,
                     std::string_view from_address) {
  sqlite3_stmt* upsert = upsert_.get();
  sqlite3_reset(upsert);
  sqlite3_bind_text(upsert, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  sqlite3_bind_blob(upsert, 2, public_key.data(), static_cast<int>(public_key.size()),
                    SQLITE_STATIC);
  sqlite3_bind_int64(upsert, 3, now());
  sqlite3_bind_text(upsert, 4, from_address.data(), static_cast<int>(from_address.size()),
                    SQLITE_STATIC);
  const bool ok = sqlite3_step(upsert) == SQLITE_DONE;
  if (!ok)
    log::error("%s: cannot record '%.*s': %s", path_.c_str(), static_cast<int>(name.size()),
               name.data(), sqlite3_errmsg(db_));
  sqlite3_reset(upsert);
  return ok;
}

void NameStore::used(std::string_view name) {
  sqlite3_stmt* touch = touch_.get();
  sqlite3_reset(touch);
  sqlite3_bind_text(touch, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  sqlite3_bind_int64(touch, 2, now());
  if (sqlite3_step(touch) != SQLITE_DONE)
    log::warn("%s: cannot note the use of '%.*s': %s", path_.c_str(),
              static_cast<int>(name.size()), name.data(), sqlite3_errmsg(db_));
  sqlite3_reset(touch);
}

bool NameStore::hand_over(std::string_view name, std::string_view to_key_id) {
  sqlite3_stmt* update = hand_over_.get();
  sqlite3_reset(update);
  sqlite3_bind_text(update, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  sqlite3_bind_text(update, 2, to_key_id.data(), static_cast<int>(to_key_id.size()),
                    SQLITE_STATIC);
  sqlite3_bind_int64(update, 3, now());
  const bool ok = sqlite3_step(update) == SQLITE_DONE && sqlite3_changes(db_) == 1;
  if (!ok)
    log::error("%s: cannot record the hand-over of '%.*s': %s", path_.c_str(),
               static_cast<int>(name.size()), name.data(), sqlite3_errmsg(db_));
  sqlite3_reset(update);
  return ok;
}

std::optional<std::string> NameStore::handed_over_to(std::string_view name) const {
  sqlite3_stmt* select = select_heir_.get();
  sqlite3_reset(select);
  sqlite3_bind_text(select, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  std::optional<std::string> heir;
  if (sqlite3_step(select) == SQLITE_ROW && sqlite3_column_bytes(select, 0) > 0 &&
      !is_expired(sqlite3_column_int64(select, 1)))
    heir.emplace(reinterpret_cast<const char*>(sqlite3_column_text(select, 0)));
  sqlite3_reset(select);
  return heir;
}

std::vector<NameStore::Binding> NameStore::list() const {
  std::vector<Binding> out;
  Statement all = prepare(
      "SELECT name, public_key, bound_unix, last_seen_unix, bound_from, handover_to FROM names "
      "ORDER BY name");
  while (sqlite3_step(all.get()) == SQLITE_ROW) {
    Binding binding;
    binding.name = reinterpret_cast<const char*>(sqlite3_column_text(all.get(), 0));
    binding.public_key.assign(static_cast<const char*>(sqlite3_column_blob(all.get(), 1)),
                              static_cast<size_t>(sqlite3_column_bytes(all.get(), 1)));
    binding.bound_unix = sqlite3_column_int64(all.get(), 2);
    binding.last_seen_unix = sqlite3_column_int64(all.get(), 3);
    binding.bound_from = reinterpret_cast<const char*>(sqlite3_column_text(all.get(), 4));
    binding.handover_to = reinterpret_cast<const char*>(sqlite3_column_text(all.get(), 5));
    binding.expired = is_expired(binding.last_seen_unix);
    out.push_back(std::move(binding));
  }
  return out;
}

bool NameStore::release(std::string_view name) {
  Statement erase = prepare("DELETE FROM names WHERE name = ?1");
  sqlite3_bind_text(erase.get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  if (sqlite3_step(erase.get()) != SQLITE_DONE)
    throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
  return sqlite3_changes(db_) > 0;
}

size_t NameStore::size() const {
  Statement count = prepare("SELECT COUNT(*) FROM names");
  return sqlite3_step(count.get()) == SQLITE_ROW
             ? static_cast<size_t>(sqlite3_column_int64(count.get(), 0))
             : 0;
}

void NameStore::bind_many(const std::map<std::string, std::string>& bindings,
                          std::string_view from) {
  exec("BEGIN");
  for (const auto& [name, key] : bindings)
    if (!bind(name, key, from)) {
      exec("ROLLBACK");
      throw std::runtime_error(path_ + ": cannot record '" + name + "'");
    }
  exec("COMMIT");
}

}  // namespace natfwd::relay

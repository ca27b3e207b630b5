#include "engine/sources.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "common/numbers.h"
#include "common/env.h"
#include "engine/message.h"
#include "engine/pst.h"

namespace fs = std::filesystem;

namespace mailark {
namespace {

// Files a Maildir keeps beside its messages.
bool is_mail_store_metadata(const std::string& name) {
  static const char* kNames[] = {
      "maildirfolder", "dovecot-uidlist",  "dovecot-keywords",    "dovecot-uidvalidity", "subscriptions",
      ".uidvalidity",  "courierimapuiddb", "courierimapkeywords", ".mh_sequences",       ".DS_Store"};
  for (const char* n : kNames)
    if (name == n) return true;
  return name.rfind("dovecot.", 0) == 0 || name.rfind("dovecot-uidvalidity.", 0) == 0 ||
         name.rfind("courierimap", 0) == 0;
}

// Maildir names start with the delivery time: "1234567890.M1P2.host:2,S".
std::int64_t maildir_time(const std::string& name) {
  std::size_t i = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  if (i < 9 || i > 11 || i >= name.size() || name[i] != '.') return 0;
  return static_cast<std::int64_t>(parse_decimal(std::string_view(name).substr(0, i)).value_or(0));
}

// "From sender@example.com Thu Jan  1 00:00:00 2001" -> sender and time.
void parse_from_line(const std::string& line, std::string& sender, std::int64_t& when) {
  std::string rest = line.substr(5);
  std::size_t sp = rest.find(' ');
  sender = rest.substr(0, sp);
  if (sender == "MAILER-DAEMON") sender.clear();
  when = 0;
  if (sp == std::string::npos) return;
  std::string date = rest.substr(sp + 1);
  std::tm tm{};
  const char* end = strptime(date.c_str(), "%a %b %d %H:%M:%S %Y", &tm);
  if (end) when = static_cast<std::int64_t>(timegm(&tm));
}

// An mbox starts with "From ", possibly behind a UTF-8 byte order mark some editors add.
bool starts_with_from_line(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[8] = {};
  in.read(buf, 8);
  std::string_view head(buf, static_cast<std::size_t>(in.gcount()));
  if (head.substr(0, 3) == "\xEF\xBB\xBF") head.remove_prefix(3);
  return head.substr(0, 5) == "From ";
}

void read_mbox(const std::string& path, const Limits& limits, const SourceCallbacks& cb) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    cb.on_error(path, std::string("cannot open: ") + std::strerror(errno));
    return;
  }
  std::string line, current, sender;
  std::int64_t when = 0;
  if (in.peek() == 0xEF) {
    char bom[3];
    in.read(bom, 3);
  }
  std::size_t index = 0;
  bool in_message = false, too_large = false, prev_blank = true;
  auto flush = [&] {
    if (!in_message) return;
    std::string origin = path + "#" + std::to_string(index);
    if (too_large) {
      cb.on_error(origin, "message larger than " + std::to_string(limits.max_message_bytes) + " bytes");
    } else {
      // The blank line before the next "From " belongs to the mbox framing, not to the message.
      if (current.size() >= 2 && current.compare(current.size() - 2, 2, "\n\n") == 0) current.pop_back();
      SourceMessage m{origin, std::move(current), when ? when : file_mtime(path), sender, path};
      if (std::string why = not_mail_reason(m.raw); !why.empty())
        cb.on_error(origin, why);
      else
        cb.on_message(std::move(m));
    }
    current.clear();
    too_large = false;
  };
  while (true) {
    line.clear();
    // Bounded line read: a single line longer than the limit is cut and the message marked too large.
    bool got = false;
    char c;
    while (in.get(c)) {
      got = true;
      if (line.size() < limits.max_line_bytes)
        line.push_back(c);
      else
        too_large = true;
      if (c == '\n') break;
    }
    if (!got) break;
    if (prev_blank && line.rfind("From ", 0) == 0) {
      flush();
      if (cb.stop && cb.stop()) return;
      in_message = true;
      ++index;
      std::string l = line;
      while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
      parse_from_line(l, sender, when);
      prev_blank = false;
      continue;
    }
    prev_blank = line == "\n" || line == "\r\n";
    if (!in_message) continue;
    if (current.size() + line.size() > limits.max_message_bytes) {
      too_large = true;
      current.clear();
      current.shrink_to_fit();
    }
    if (!too_large) current += line;
  }
  flush();
  if (index == 0) cb.on_error(path, "mbox file holds no message");
}

void read_single(const std::string& path, const Limits& limits, const SourceCallbacks& cb) {
  auto raw = Env::standard()->read_file(path, limits.max_message_bytes);
  if (!raw) {
    cb.on_error(path, raw.error().context);
    return;
  }
  // A file saved by a Windows tool may begin with a UTF-8 byte-order mark: it is the file's, not the
  // message's (as an mbox's, read_mbox), so the message is what follows it
  // (Sources.ByteOrderMarkBeforeASingleMessageIsTheFilesNotTheMessages).
  if (std::string_view(*raw).substr(0, 3) == "\xEF\xBB\xBF") raw->erase(0, 3);
  if (std::string why = not_mail_reason(*raw); !why.empty()) {
    cb.on_error(path, why);
    return;
  }
  std::string name = fs::path(path).filename().string();
  std::int64_t when = maildir_time(name);
  SourceMessage m{path, std::move(raw).value(), when ? when : file_mtime(path), {}, path};
  cb.on_message(std::move(m));
}

void read_file(const std::string& path, const Limits& limits, const SourceCallbacks& cb) {
  if (is_pst_file(path)) {
    if (cb.pst_helper.empty())
      read_pst(path, limits, cb);
    else
      read_pst_in_child(cb.pst_helper, path, limits, cb);
  } else if (starts_with_from_line(path)) {
    read_mbox(path, limits, cb);
  } else {
    read_single(path, limits, cb);
  }
}

}  // namespace

Status walk_sources(const std::vector<std::string>& paths, const Limits& limits, const SourceCallbacks& cb) {
  for (const auto& p : paths) {
    std::error_code ec;
    if (!fs::exists(p, ec)) return make_error(ErrorCode::kNotFound, p + " does not exist");
  }
  auto stopped = [&] { return cb.stop && cb.stop(); };
  for (const auto& p : paths) {
    if (stopped()) break;
    std::error_code ec;
    if (!fs::is_directory(p, ec)) {
      read_file(p, limits, cb);
      continue;
    }
    std::vector<std::string> files;
    auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
    if (ec) {
      cb.on_error(p, "cannot read directory: " + ec.message());
      continue;
    }
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) {
        cb.on_error(it->path().string(), "cannot read: " + ec.message());
        ec.clear();
        continue;
      }
      const auto& entry = *it;
      std::string name = entry.path().filename().string();
      if (entry.is_directory(ec)) {
        // A Maildir's tmp/ holds deliveries in progress, never finished messages.
        if (name == "tmp" && fs::is_directory(entry.path().parent_path() / "cur", ec))
          it.disable_recursion_pending();
        continue;
      }
      if (!entry.is_regular_file(ec)) continue;
      if (is_mail_store_metadata(name)) {
        if (cb.on_skipped) cb.on_skipped(entry.path().string(), "mail store metadata");
        continue;
      }
      files.push_back(entry.path().string());
    }
    // Natural order (2 before 10) so imports are reproducible and read like the folder.
    std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
      std::size_t i = 0, j = 0;
      while (i < a.size() && j < b.size()) {
        if (std::isdigit(static_cast<unsigned char>(a[i])) &&
            std::isdigit(static_cast<unsigned char>(b[j]))) {
          std::size_t ie = i, je = j;
          while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
          while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
          std::string_view na(a.data() + i, ie - i), nb(b.data() + j, je - j);
          while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
          while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
          if (na.size() != nb.size()) return na.size() < nb.size();
          if (na != nb) return na < nb;
          i = ie;
          j = je;
        } else {
          if (a[i] != b[j]) return a[i] < b[j];
          ++i;
          ++j;
        }
      }
      return a.size() - i < b.size() - j;
    });
    for (const auto& f : files) {
      if (stopped()) break;
      read_file(f, limits, cb);
    }
  }
  return ok_status();
}

}  // namespace mailark

// libarchive translation point: every archive_* call of mailark is in this file.
#include "engine/export.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/dates.h"
#include "common/json_text.h"
#include "common/merkle.h"
#include "common/utf8.h"
#include "engine/checkpoint.h"
#include "engine/message.h"
#include "engine/message_view.h"
#include "engine/record.h"
#include "engine/record_json.h"
#include "indexer/index.h"

namespace mailark {
namespace {

// v3 (this release): v2 and the load file (loadfile.csv). v2: every record holding a message's bytes
// (custodians' copies) with its proof. Exports of earlier releases still verify (test_upgrade.py
// test_an_export_of_the_release_before_still_verifies: v1; test_an_export_without_a_load_file_still_verifies: v2).
constexpr const char* kFormat = "mailark-export-v3";
constexpr const char* kFormatV2 = "mailark-export-v2";
constexpr const char* kFormatV1 = "mailark-export-v1";
constexpr const char* kLoadFile = "loadfile.csv";
constexpr const char* kSigContext = "mailark.export/v1";
constexpr const char* kSealContext = "mailark.export-zip/v1";
constexpr std::size_t kChunk = 1 << 16;
constexpr std::size_t kMaxManifestLine = std::size_t{64} << 20;
// The archive's pages an export may hold mapped beyond what the process held when it began, and how
// often (in messages) that is looked at (MappedPages).
constexpr std::uint64_t kMappedBudget = std::uint64_t{16} << 20;
constexpr std::uint64_t kMappedCheckEvery = 32;
// Message-IDs asked of the index at a time.
constexpr std::size_t kMessageIdBatch = 1024;

// Every message read faults the pages it touches into the process through LMDB's map, and the
// kernel maps up to 64 KiB of cached pages around each fault: the blob index and the holdings are
// looked up at random places, so an export of a million messages would come to hold the whole main
// environment (1.3 GB) in its RSS. They are clean page-cache pages: released (madvise, through
// Archive::release_mapped_pages) whenever the process's file-backed resident pages pass the budget,
// so the RSS stays flat whatever the archive's or the export's size (docs/BENCHMARKS.md "Exports").
class MappedPages {
 public:
  explicit MappedPages(const Archive& archive) : archive_(archive), fd_(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC)) {
    base_ = file_resident();
  }
  ~MappedPages() {
    if (fd_ >= 0) ::close(fd_);
  }
  MappedPages(const MappedPages&) = delete;
  MappedPages& operator=(const MappedPages&) = delete;
  // After each message.
  void tick() {
    if (++n_ % kMappedCheckEvery != 0) return;
    // Without /proc, every few hundred messages.
    if (fd_ < 0 ? n_ % (8 * kMappedCheckEvery) == 0 : file_resident() > base_ + kMappedBudget)
      archive_.release_mapped_pages();
  }

 private:
  // Resident pages backed by files (statm's third field), in bytes.
  std::uint64_t file_resident() const {
    char buf[128];
    const ssize_t n = fd_ < 0 ? -1 : ::pread(fd_, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = '\0';
    unsigned long long size = 0, resident = 0, shared = 0;
    if (std::sscanf(buf, "%llu %llu %llu", &size, &resident, &shared) != 3) return 0;
    return shared * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  }
  const Archive& archive_;
  int fd_;
  std::uint64_t base_ = 0, n_ = 0;
};

struct ExportItem {
  std::uint64_t id = 0;
  std::string message_id;  // from the index ("" when it has none)
};

std::string entry_name(std::uint64_t id) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "messages/%010llu.eml", static_cast<unsigned long long>(id));
  return buf;
}

// The manifest's account of a record, derived from the record alone: the exporter writes it and the
// verifier rebuilds it from the proven record, so no field can say something the record does not.
// v2 names custodians over all of a message's records (add_custodians), v1 named the record's
// source (or listener) alone.
nlohmann::json record_fields(const ArchiveRecord& r, int version) {
  nlohmann::json j = {{"id", r.seq},
                      {"sha256", to_hex(r.content_sha256)},
                      {"size", r.raw_size},
                      {"envelope", envelope_json(r.envelope)},
                      {"archived_at", iso8601_date(r.archived_at)},
                      {"verdict",
                       {{"kind", scanner::verdict_name(r.verdict.kind)},
                        {"signatures", r.verdict.signatures},
                        {"reason", r.verdict.reason}}},
                      {"malformed", (r.flags & kFlagMalformed) != 0},
                      {"quarantined", (r.flags & kFlagQuarantined) != 0}};
  if (version == 1)
    j["custodians"] = std::vector<std::string>{r.envelope.source.empty() ? r.envelope.connector : r.envelope.source};
  return j;
}

// A copy of the message (another record of the same bytes), as a v2 manifest line lists it.
nlohmann::json copy_fields(const ArchiveRecord& r) {
  return {{"id", r.seq},
          {"envelope", envelope_json(r.envelope)},
          {"archived_at", iso8601_date(r.archived_at)},
          {"custodians", custodians_of(r)}};
}

// v2's "custodians": every custodian of the message's records, in the order of their ids, each once.
void add_custodians(const ArchiveRecord& r, std::vector<std::string>& out) {
  for (auto& c : custodians_of(r))
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(std::move(c));
}

nlohmann::json hex_proof(const std::vector<Digest>& proof) {
  nlohmann::json hashes = nlohmann::json::array();
  for (const auto& d : proof) hashes.push_back(to_hex(d));
  return hashes;
}

// mboxrd: a line beginning with zero or more '>' and "From " gets one more '>'.
bool from_line(std::string_view s, std::size_t i) {
  while (i < s.size() && s[i] == '>') ++i;
  return s.substr(i, 5) == "From ";
}
std::string mboxrd_quote(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() + 16);
  for (std::size_t i = 0; i < raw.size();) {
    if (from_line(raw, i)) out += '>';
    const auto nl = raw.find('\n', i);
    const std::size_t end = nl == std::string_view::npos ? raw.size() : nl + 1;
    out.append(raw.substr(i, end - i));
    i = end;
  }
  return out;
}
std::string mboxrd_unquote(std::string_view quoted) {
  std::string out;
  out.reserve(quoted.size());
  for (std::size_t i = 0; i < quoted.size();) {
    const auto nl = quoted.find('\n', i);
    const std::size_t end = nl == std::string_view::npos ? quoted.size() : nl + 1;
    if (quoted[i] == '>' && from_line(quoted, i)) ++i;
    out.append(quoted.substr(i, end - i));
    i = end;
  }
  return out;
}
// The load file (v3). Its columns, in order; those marked checked are the manifest's (the verifier
// holds them to the manifest line of the same message), the others are read from the message by
// mailark for reviewers (load_file_row): sealed with the export, not proved against the message.
struct LoadFileColumn {
  const char* name;
  bool checked;
};
constexpr LoadFileColumn kLoadFileColumns[] = {
    {"DocID", true},           {"DateSent", false},     {"From", false},           {"To", false},
    {"CC", false},             {"BCC", false},          {"Subject", false},        {"AttachmentCount", false},
    {"AttachmentNames", false}, {"MessageID", true},     {"InReplyTo", false},      {"Custodians", true},
    {"Folder", true},          {"NativeFile", true},    {"MboxOffset", true},      {"MboxLength", true},
    {"FileSize", true},        {"SHA256", true},        {"EnvelopeFrom", true},    {"EnvelopeRecipients", true},
    {"ArchivedAt", true},      {"Verdict", true},       {"VerdictDetail", true},   {"CopyIDs", true}};
constexpr std::size_t kLoadFileWidth = std::size(kLoadFileColumns);
// Excel's limit for one cell: longer text is cut there (at a character's boundary).
constexpr std::size_t kMaxCellBytes = 32767;
constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF";

// What one cell of the load file says. Mail is bytes and the file is read by spreadsheets and review
// platforms, so the text is made safe for them: bytes that are not UTF-8 become U+FFFD, control
// characters (line ends and tabs among them) spaces, so that a row is always one line; text past
// kMaxCellBytes is cut; and a cell that begins with '=', '+', '-' or '@' gets a leading apostrophe, so
// that a spreadsheet shows it instead of running it as a formula (a hostile subject "=HYPERLINK(...)";
// OWASP's CSV injection). Tests: tests/e2e/test_export.py
// test_the_load_file_reads_in_a_csv_reader_and_says_what_the_manifest_says, Utf8.*.
std::string cell_text(std::string_view raw) {
  std::string text = valid_utf8(raw);
  for (char& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = ' ';
  if (text.size() > kMaxCellBytes) {
    std::size_t cut = kMaxCellBytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
  }
  if (!text.empty() && (text[0] == '=' || text[0] == '+' || text[0] == '-' || text[0] == '@')) text.insert(0, 1, '\'');
  return text;
}

// A row of cells (cell_text's), each quoted (RFC 4180: every '"' doubled), CRLF after it.
std::string csv_row(const std::vector<std::string>& cells) {
  std::string row;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    row += i ? ",\"" : "\"";
    for (char c : cells[i]) {
      if (c == '"') row += '"';
      row += c;
    }
    row += '"';
  }
  return row + "\r\n";
}

// The cells of one line of a load file (its "\r\n" already dropped), unquoted; nullopt when it is not
// RFC 4180 (a quote inside an unquoted cell, text after a closing quote, a quote left open).
std::optional<std::vector<std::string>> csv_cells(std::string_view line) {
  std::vector<std::string> cells;
  std::size_t i = 0;
  for (;;) {
    std::string cell;
    if (i < line.size() && line[i] == '"') {
      for (++i;; ++i) {
        if (i >= line.size()) return std::nullopt;
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cell += '"';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        cell += line[i];
      }
      if (i < line.size() && line[i] != ',') return std::nullopt;
    } else {
      const std::size_t end = std::min(line.find(',', i), line.size());
      cell.assign(line.substr(i, end - i));
      if (cell.find('"') != std::string::npos) return std::nullopt;
      i = end;
    }
    cells.push_back(std::move(cell));
    if (i >= line.size()) return cells;
    ++i;  // the comma
  }
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : "; ") + s;
  return out;
}

// The load file's header row.
std::string load_file_head() {
  std::vector<std::string> names;
  for (const auto& c : kLoadFileColumns) names.push_back(c.name);
  return std::string(kByteOrderMark) + csv_row(names);
}

// The checked cells of a message's row (cell_text's), from its manifest line: what the writer writes
// and the verifier holds the load file to. The others empty.
std::vector<std::string> load_file_checked_cells(const nlohmann::json& line) {
  std::vector<std::string> cells(kLoadFileWidth);
  auto text = [&](const nlohmann::json& j, const char* key) -> std::string {
    if (!j.is_object() || !j.contains(key)) return "";
    const auto& v = j[key];
    return v.is_string() ? v.get<std::string>() : v.is_number_unsigned() ? std::to_string(v.get<std::uint64_t>()) : "";
  };
  auto strings = [](const nlohmann::json& j) {
    std::vector<std::string> out;
    if (j.is_array())
      for (const auto& v : j)
        if (v.is_string()) out.push_back(v.get<std::string>());
    return out;
  };
  const nlohmann::json empty;
  const nlohmann::json& envelope = line.contains("envelope") ? line["envelope"] : empty;
  const nlohmann::json& verdict = line.contains("verdict") ? line["verdict"] : empty;
  std::vector<std::string> copies;
  if (line.contains("copies") && line["copies"].is_array())
    for (const auto& c : line["copies"]) copies.push_back(text(c, "id"));
  std::string detail = verdict.is_object() && verdict.contains("signatures") ? joined(strings(verdict["signatures"])) : "";
  if (detail.empty()) detail = text(verdict, "reason");
  const bool in_mbox = line.contains("mbox_offset");
  const std::string values[] = {text(line, "id"),
                                text(line, "message_id"),
                                joined(strings(line.contains("custodians") ? line["custodians"] : empty)),
                                text(envelope, "folder"),
                                in_mbox ? "messages.mbox" : text(line, "file"),
                                text(line, "mbox_offset"),
                                text(line, "mbox_length"),
                                text(line, "size"),
                                text(line, "sha256"),
                                text(envelope, "mail_from"),
                                joined(strings(envelope.is_object() && envelope.contains("rcpt_to") ? envelope["rcpt_to"] : empty)),
                                text(line, "archived_at"),
                                text(verdict, "kind"),
                                detail,
                                joined(copies)};
  std::size_t v = 0;
  for (std::size_t i = 0; i < kLoadFileWidth; ++i)
    if (kLoadFileColumns[i].checked) cells[i] = cell_text(values[v++]);
  return cells;
}

// A list of addresses as RFC 5322 writes them, so that a list reads back unambiguously: a display
// name holding a comma or another special is quoted (`"Doe, Jane" <jane@example.com>`), its quotes
// and backslashes escaped; names are the decoded text (UTF-8), not RFC 2047 words.
std::string address_list(const std::vector<Address>& list) {
  std::string out;
  for (const auto& a : list) {
    if (!out.empty()) out += ", ";
    std::string name = a.name;
    if (name.find_first_of("()<>[]:;@\\,.\"") != std::string::npos) {
      std::string quoted = "\"";
      for (char c : name) {
        if (c == '"' || c == '\\') quoted += '\\';
        quoted += c;
      }
      name = quoted + "\"";
    }
    out += name.empty() ? a.addr : a.addr.empty() ? name : name + " <" + a.addr + ">";
  }
  return out;
}

// The first <id> of an In-Reply-To field, without its angle brackets (as MessageID is written); the
// field as it stands when it has none.
std::string bare_message_id(const std::string& field) {
  const auto open = field.find('<');
  const auto close = open == std::string::npos ? std::string::npos : field.find('>', open);
  return close == std::string::npos ? field : field.substr(open + 1, close - open - 1);
}

// A message's row: its manifest line's cells (load_file_checked_cells) and its header's, read from its
// bytes as the web portal's message view reads them (engine/message_view.h: the same fields, the
// same attachments).
std::string load_file_row(std::vector<std::string> cells, std::string_view raw) {
  const MessageView v = view_message_fields(raw);
  std::vector<std::string> names;
  for (const auto& p : v.attachments)
    if (!p.filename.empty()) names.push_back(p.filename);
  const std::string header[] = {v.date ? iso8601_date(*v.date) : "",
                                address_list(v.from),
                                address_list(v.to),
                                address_list(v.cc),
                                address_list(v.bcc),
                                v.subject,
                                std::to_string(v.attachments.size()),
                                joined(names),
                                bare_message_id(v.in_reply_to)};
  std::size_t h = 0;
  for (std::size_t i = 0; i < kLoadFileWidth; ++i)
    if (!kLoadFileColumns[i].checked) cells[i] = cell_text(header[h++]);
  return csv_row(cells);
}

// Writes the load file's rows on a thread of its own, in the order they are handed over: reading a
// message's header fields (GMime) costs about as much as everything else an export does for it, so
// the manifest and the rows are made side by side on two cores. Messages wait here for at most
// kRowBudget bytes (one message larger than that at a time), so memory stays flat whatever the
// export's size.
class LoadFileWriter {
 public:
  static constexpr std::size_t kRowBudget = std::size_t{32} << 20;

  explicit LoadFileWriter(const std::string& path) : out_(path, std::ios::binary | std::ios::trunc) {
    if (!out_) failed_ = "cannot write " + path;
    write(load_file_head());
    thread_ = std::thread([this] { run(); });
  }
  ~LoadFileWriter() { static_cast<void>(finish()); }  // an export that failed before its finish: the thread joined

  // A message's row, to come: its checked cells and its bytes.
  void add(std::vector<std::string> cells, std::string raw) {
    std::unique_lock lock(mu_);
    room_.wait(lock, [&] { return waiting_.empty() || bytes_ + raw.size() <= kRowBudget; });
    bytes_ += raw.size();
    waiting_.push_back({std::move(cells), std::move(raw)});
    work_.notify_one();
  }
  // Every row written; the bytes of the whole file, or why it could not be written.
  Result<std::uint64_t> finish() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
      work_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    if (failed_.empty()) {
      out_.flush();
      if (!out_) failed_ = "cannot write the load file";
    }
    if (!failed_.empty()) return make_error(ErrorCode::kIo, failed_);
    return written_;
  }

 private:
  struct Item {
    std::vector<std::string> cells;
    std::string raw;
  };
  void write(const std::string& text) {
    out_ << text;
    written_ += text.size();
  }
  void run() {
    for (;;) {
      Item item;
      {
        std::unique_lock lock(mu_);
        work_.wait(lock, [&] { return done_ || !waiting_.empty(); });
        if (waiting_.empty()) return;
        item = std::move(waiting_.front());
        waiting_.pop_front();
      }
      std::string row;
      try {
        row = load_file_row(std::move(item.cells), item.raw);
      } catch (const std::exception& e) {
        if (failed_.empty()) failed_ = std::string("a load file row: ") + e.what();
      }
      if (failed_.empty()) write(row);
      std::lock_guard lock(mu_);
      bytes_ -= item.raw.size();
      room_.notify_one();
    }
  }

  std::ofstream out_;
  std::string failed_;  // the row thread's, read after it is joined
  std::uint64_t written_ = 0;
  std::mutex mu_;
  std::condition_variable work_, room_;
  std::deque<Item> waiting_;
  std::size_t bytes_ = 0;
  bool done_ = false;
  std::thread thread_;
};

std::string from_separator(const ArchiveRecord& r) {
  std::string sender = r.envelope.mail_from.empty() ? "MAILER-DAEMON" : r.envelope.mail_from;
  for (char& c : sender)
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') c = '_';
  std::time_t tt = static_cast<std::time_t>(r.envelope.received_at);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
  return "From " + sender + " " + date + "\n";
}

std::string sig_text(const std::string& origin, const std::string& manifest_hex) {
  return std::string(kSigContext) + "\n" + origin + "\n" + manifest_hex + "\n";
}

struct ArchiveWriteFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct ArchiveReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// A zip written entry by entry, stored (never compressed): each message keeps its exact bytes.
class ZipWriter {
 public:
  Status open(const std::string& path) {
    path_ = path;
    a_.reset(archive_write_new());
    if (!a_ || archive_write_set_format_zip(a_.get()) != ARCHIVE_OK ||
        archive_write_zip_set_compression_store(a_.get()) != ARCHIVE_OK ||
        archive_write_open_filename(a_.get(), path.c_str()) != ARCHIVE_OK)
      return fail("opening");
    return ok_status();
  }
  Status begin(const std::string& name, std::uint64_t size, std::int64_t mtime) {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_mtime(e.get(), mtime, 0);
    if (archive_write_header(a_.get(), e.get()) != ARCHIVE_OK) return fail("writing " + name + " to");
    return ok_status();
  }
  Status data(std::string_view bytes) {
    while (!bytes.empty()) {
      const la_ssize_t n = archive_write_data(a_.get(), bytes.data(), bytes.size());
      if (n <= 0) return fail("writing to");
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return ok_status();
  }
  Status add(const std::string& name, std::string_view bytes, std::int64_t mtime) {
    MAILARK_TRY(begin(name, bytes.size(), mtime));
    return data(bytes);
  }
  Status close() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return fail("finishing");
    return ok_status();
  }

 private:
  Error fail(const std::string& what) {
    return make_error(ErrorCode::kIo, what + " " + path_ + ": " +
                                          (a_ && archive_error_string(a_.get()) ? archive_error_string(a_.get()) : "libarchive failed"));
  }
  std::string path_;
  std::unique_ptr<struct archive, ArchiveWriteFree> a_;
};

// A file written beside the export, as one entry of `size` bytes.
Status copy_into_zip(ZipWriter& zip, const std::string& name, const std::string& path, std::uint64_t size,
                     std::int64_t mtime) {
  MAILARK_TRY(zip.begin(name, size, mtime));
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, "cannot read " + path);
  std::string buf(kChunk, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) MAILARK_TRY(zip.data(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount()))));
  }
  return ok_status();
}

// Reads a zip's entries in order, streaming.
class ZipReader {
 public:
  Status open(const std::string& path) {
    path_ = path;
    a_.reset(archive_read_new());
    // The streaming reader: entries in file order, no central directory held in memory (the seekable
    // one reads it whole: 92 MB for 306,642 messages). What it does not read (the directory that zip
    // tools go by) is covered by the seal over the whole file (seal_zip, check_seal).
    if (!a_ || archive_read_support_format_zip_streamable(a_.get()) != ARCHIVE_OK ||
        archive_read_open_filename(a_.get(), path.c_str(), kChunk) != ARCHIVE_OK)
      return make_error(ErrorCode::kIo, "cannot read " + path + " as a zip: " + err());
    return ok_status();
  }
  // The next entry's name and size; nullopt at the end. Errors: a damaged zip.
  Result<std::optional<std::pair<std::string, std::int64_t>>> next() {
    archive_entry* e = nullptr;
    const int rc = archive_read_next_header(a_.get(), &e);
    if (rc == ARCHIVE_EOF) return std::optional<std::pair<std::string, std::int64_t>>();
    if (rc != ARCHIVE_OK) return make_error(ErrorCode::kCorrupt, path_ + ": " + err());
    const char* name = archive_entry_pathname(e);
    return std::optional<std::pair<std::string, std::int64_t>>(
        std::pair<std::string, std::int64_t>(name ? name : "", archive_entry_size_is_set(e) ? archive_entry_size(e) : -1));
  }
  // Up to n bytes of the current entry (fewer only at its end).
  Result<std::string> read(std::size_t n) {
    std::string out(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      const la_ssize_t r = archive_read_data(a_.get(), out.data() + got, n - got);
      if (r < 0) return make_error(ErrorCode::kCorrupt, path_ + ": " + err());
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    out.resize(got);
    return out;
  }
  // One line of the current entry, its newline dropped; nullopt at the entry's end.
  Result<std::optional<std::string>> line() {
    std::string out;
    for (;;) {
      if (pos_ == buf_.size()) {
        MAILARK_ASSIGN_OR_RETURN(buf_, read(kChunk));
        pos_ = 0;
        if (buf_.empty()) return out.empty() ? std::optional<std::string>() : std::optional<std::string>(out);
      }
      const auto nl = buf_.find('\n', pos_);
      if (nl == std::string::npos) {
        out.append(buf_, pos_, std::string::npos);
        pos_ = buf_.size();
      } else {
        out.append(buf_, pos_, nl - pos_);
        pos_ = nl + 1;
        return std::optional<std::string>(std::move(out));
      }
      if (out.size() > kMaxManifestLine) return make_error(ErrorCode::kCorrupt, "a manifest line is too long");
    }
  }

 private:
  std::string err() { return a_ && archive_error_string(a_.get()) ? archive_error_string(a_.get()) : "not a zip"; }
  std::string path_;
  std::unique_ptr<struct archive, ArchiveReadFree> a_;
  std::string buf_;
  std::size_t pos_ = 0;
};

// SHA-256 of the first `bytes` bytes of the file; false when they cannot be read.
bool hash_prefix(std::istream& f, std::streamoff bytes, Sha256& h) {
  f.clear();
  f.seekg(0);
  std::string buf(kChunk, '\0');
  for (std::streamoff left = bytes; left > 0;) {
    const auto n = static_cast<std::streamsize>(std::min<std::streamoff>(left, kChunk));
    if (!f.read(buf.data(), n)) return false;
    h.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    left -= n;
  }
  return true;
}

std::string seal_text(const std::string& origin, const std::string& hex) {
  return std::string(kSealContext) + "\n" + origin + "\n" + hex + "\n";
}

// The zip's end record (APPNOTE.TXT 4.3.16) ends with the archive comment's length and the comment.
// The seal is a signed note over the SHA-256 of every byte of the file before the comment (the
// comment's length included), put in the comment: no byte of the export changes unseen, the
// directory zip tools go by included.
Status seal_zip(const std::string& path, const std::string& origin, const SigningKey& key) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  if (!f) return make_error(ErrorCode::kIo, "cannot seal " + path);
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  unsigned char eocd[22];
  f.seekg(size - 22);
  if (size < 22 || !f.read(reinterpret_cast<char*>(eocd), 22) || eocd[0] != 0x50 || eocd[1] != 0x4b ||
      eocd[2] != 0x05 || eocd[3] != 0x06 || eocd[20] != 0 || eocd[21] != 0)
    return make_error(ErrorCode::kInternal, path + ": libarchive wrote no plain end record");
  // The note's length does not depend on the hash: sign a stand-in to learn it.
  const std::size_t length = sign_note(seal_text(origin, std::string(64, '0')), origin, key).size();
  if (length > 0xFFFF) return make_error(ErrorCode::kInternal, "the seal is longer than a zip comment");
  const char len_bytes[2] = {static_cast<char>(length & 0xFF), static_cast<char>(length >> 8)};
  f.seekp(size - 2);
  f.write(len_bytes, 2);
  f.flush();
  Sha256 h;
  if (!hash_prefix(f, size, h)) return make_error(ErrorCode::kIo, "cannot read " + path);
  const std::string note = sign_note(seal_text(origin, to_hex(h.finish())), origin, key);
  f.seekp(size);
  f.write(note.data(), static_cast<std::streamsize>(note.size()));
  f.flush();
  if (!f || note.size() != length) return make_error(ErrorCode::kIo, "cannot seal " + path);
  return ok_status();
}

// Checks the seal: "" when it holds, else why not.
std::string check_seal(const std::string& path, const std::string& origin, const NoteVerifier& verifier) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  // The end record is the last 22 bytes before a comment of at most 64 KiB: find the one whose
  // comment runs exactly to the end of the file.
  const std::streamoff tail = std::min<std::streamoff>(size, 22 + 0xFFFF);
  std::string t(static_cast<std::size_t>(tail), '\0');
  f.seekg(size - tail);
  if (!f.read(t.data(), tail)) return "the export cannot be read";
  bool end_record = false;
  for (std::streamoff i = tail - 22; i >= 0; --i) {
    const auto* e = reinterpret_cast<const unsigned char*>(t.data() + i);
    if (e[0] != 0x50 || e[1] != 0x4b || e[2] != 0x05 || e[3] != 0x06) continue;
    end_record = true;
    const std::streamoff comment = e[20] | (e[21] << 8);
    if (i + 22 + comment != tail) continue;
    auto note = parse_note(std::string_view(t).substr(static_cast<std::size_t>(i + 22)));
    if (!note || !note_signed_by(*note, verifier)) return "the export's seal (its zip comment) does not check with " + verifier.text();
    Sha256 h;
    if (!hash_prefix(f, size - comment, h)) return "the export cannot be read";
    if (note->text != seal_text(origin, to_hex(h.finish())))
      return "the export's bytes are not those sealed: the zip was changed";
    return "";
  }
  // A file cut short (a download that stopped) has no end record at all: said as such.
  if (!end_record) return "the export is not a readable zip: it has no end record (was it cut short?)";
  return "the export has no seal (a signed zip comment)";
}

}  // namespace

void ExportIds::add(std::uint64_t id) {
  if (id == 0) return;  // archive ids start at 1
  const std::size_t w = static_cast<std::size_t>(id / 64);
  if (w >= words_.size()) words_.resize(w + 1, 0);
  const std::uint64_t bit = std::uint64_t{1} << (id % 64);
  if (!(words_[w] & bit)) {
    words_[w] |= bit;
    ++count_;
  }
}

void ExportIds::remove(std::uint64_t id) {
  const std::size_t w = static_cast<std::size_t>(id / 64);
  const std::uint64_t bit = std::uint64_t{1} << (id % 64);
  if (w < words_.size() && (words_[w] & bit)) {
    words_[w] &= ~bit;
    --count_;
  }
}

bool ExportIds::contains(std::uint64_t id) const {
  const std::size_t w = static_cast<std::size_t>(id / 64);
  return w < words_.size() && (words_[w] >> (id % 64) & 1) != 0;
}

std::uint64_t ExportIds::next(std::uint64_t after) const {
  std::uint64_t id = after + 1;
  if (id == 0) return 0;
  std::size_t w = static_cast<std::size_t>(id / 64);
  if (w >= words_.size()) return 0;
  std::uint64_t bits = words_[w] & (~std::uint64_t{0} << (id % 64));
  while (bits == 0) {
    if (++w == words_.size()) return 0;
    bits = words_[w];
  }
  return std::uint64_t{w} * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
}

std::uint64_t ExportIds::largest() const {
  for (std::size_t w = words_.size(); w-- > 0;)
    if (words_[w] != 0) return std::uint64_t{w} * 64 + 63 - static_cast<std::uint64_t>(std::countl_zero(words_[w]));
  return 0;
}

Result<SearchExceptions> search_exceptions(indexer::IndexReader& reader) {
  MAILARK_ASSIGN_OR_RETURN(auto unindexed, reader.unindexed(0));
  return SearchExceptions{unindexed.first, reader.documents_read_before_repairs()};
}

Result<ExportIds> export_matches(indexer::IndexReader& reader, const std::string& query, bool one_per_message,
                                 indexer::FieldSource* fields) {
  // A part of the index at a time, every match of it at once (no paging: a page deep in the results
  // costs Xapian every result before it, in time and memory).
  indexer::SearchOptions opts;
  opts.exact_total = true;
  opts.one_per_message = one_per_message;
  opts.parts = indexer::parts_for(reader.documents());
  opts.limit = std::numeric_limits<std::uint32_t>::max();
  opts.bounded = false;  // an export's query: a case's searches OR'ed, or an administrator's own
  ExportIds ids;
  for (opts.part = 0; opts.part < opts.parts; ++opts.part) {
    MAILARK_ASSIGN_OR_RETURN(indexer::SearchResults res, reader.search(query, opts, fields));
    for (const auto& h : res.hits) ids.add(h.id);
  }
  return ids;
}

Result<ExportReport> write_export(const Archive& archive, const SigningKey& key, const ExportRequest& request) {
  MAILARK_ASSIGN_OR_RETURN(auto snap, archive.snapshot());
  const ArchiveSnapshot& s = *snap;
  MAILARK_ASSIGN_OR_RETURN(SignedCheckpoint cp, sign_checkpoint(s, key, unix_now()));
  const std::string id = s.archive_id();
  const NoteVerifier verifier = archive_verifier(id, key);
  const std::int64_t now = cp.checkpoint.time;
  const bool mbox = request.container == ExportContainer::kMbox;
  const merkle::NodeFn nodes = s.tree_nodes();
  MappedPages mapped(archive);

  // Each message once: an id whose bytes an id below it in the export also holds is that one's copy,
  // listed with it, not again (search shows one record a message, but a query naming per-record fields
  // counts the copies of documents indexed before archive format 7 apart, and a caller may name ids).
  // Only an archive holding some message twice has copies to look for. Ascending, so the lowest
  // record of each message stays.
  ExportIds ids = request.ids;
  if (ids.largest() > cp.checkpoint.size)
    return make_error(ErrorCode::kNotFound, "no message with id " + std::to_string(ids.largest()) + " in the archive");
  if (const ArchiveCounters counts = s.counters(); counts.records > counts.blobs) {
    for (std::uint64_t id = ids.next(0); id != 0; id = ids.next(id)) {
      MAILARK_ASSIGN_OR_RETURN(ArchiveRecord r, s.record(id));
      MAILARK_ASSIGN_OR_RETURN(std::vector<std::uint64_t> holders, s.copies(r.content_sha256));
      for (std::uint64_t h : holders) {
        if (h >= id) break;
        if (ids.contains(h)) {
          ids.remove(id);
          break;
        }
      }
      mapped.tick();
    }
  }
  const std::uint64_t count = ids.count();

  // Pass 1: the manifest, to a file beside the export (flat memory however many messages), and its hash.
  // The load file beside it, the same way.
  const std::string manifest_path = request.path + ".manifest.tmp", zip_tmp = request.path + ".tmp",
                    load_path = request.path + ".loadfile.tmp";
  struct Cleanup {
    std::vector<std::string> paths;
    ~Cleanup() {
      std::error_code ec;
      for (const auto& p : paths) std::filesystem::remove(p, ec);
    }
  } cleanup{{manifest_path, zip_tmp, load_path}};
  Sha256 manifest_hash;
  std::uint64_t manifest_bytes = 0, mbox_bytes = 0, message_bytes = 0, load_bytes = 0;
  {
    std::ofstream m(manifest_path, std::ios::binary | std::ios::trunc);
    if (!m) return make_error(ErrorCode::kIo, "cannot write " + manifest_path);
    LoadFileWriter load(load_path);
    auto put = [&](const nlohmann::json& j) {
      const std::string line = json_text(j) + "\n";
      manifest_hash.update(line);
      manifest_bytes += line.size();
      m << line;
    };
    put({{"format", kFormat},
         {"container", mbox ? "mbox" : "eml"},
         {"origin", cp.checkpoint.origin},
         {"verifier_key", verifier.text()},
         {"tree_size", cp.checkpoint.size},
         {"tree_root", to_hex(cp.checkpoint.root)},
         {"query", request.query},
         {"case", request.case_name},
         {"created_at", iso8601_date(now)},
         {"created_by", request.created_by},
         {"count", count}});
    std::uint64_t done = 0;
    std::vector<std::uint64_t> batch;  // the next ids, with their Message-IDs
    std::vector<std::string> batch_message_ids;
    std::size_t in_batch = 0;
    for (std::uint64_t id = ids.next(0); id != 0; id = ids.next(id)) {
      if (in_batch == batch.size()) {
        batch.clear();
        for (std::uint64_t b = id; b != 0 && batch.size() < kMessageIdBatch; b = ids.next(b)) batch.push_back(b);
        batch_message_ids.clear();
        if (request.message_ids) {
          MAILARK_ASSIGN_OR_RETURN(batch_message_ids, request.message_ids(batch));
        }
        batch_message_ids.resize(batch.size());
        in_batch = 0;
      }
      const ExportItem item{id, std::move(batch_message_ids[in_batch++])};
      MAILARK_ASSIGN_OR_RETURN(std::string value, s.record_value(item.id));
      MAILARK_ASSIGN_OR_RETURN(ArchiveRecord r, decode_record(item.id, value));
      MAILARK_ASSIGN_OR_RETURN(std::vector<Digest> proof, merkle::inclusion_proof(item.id - 1, cp.checkpoint.size, nodes));
      nlohmann::json j = record_fields(r, 2);
      j["message_id"] = item.message_id;
      // Everyone who held the message: every other record of its bytes, proved in the same tree.
      MAILARK_ASSIGN_OR_RETURN(std::vector<std::uint64_t> holders, s.copies(r.content_sha256));
      if (std::find(holders.begin(), holders.end(), item.id) == holders.end())
        holders.insert(std::lower_bound(holders.begin(), holders.end(), item.id), item.id);
      std::vector<std::string> custodians;
      nlohmann::json copies = nlohmann::json::array();
      for (std::uint64_t other : holders) {
        if (other == item.id) {
          add_custodians(r, custodians);
          continue;
        }
        if (other > cp.checkpoint.size) continue;
        MAILARK_ASSIGN_OR_RETURN(std::string other_value, s.record_value(other));
        MAILARK_ASSIGN_OR_RETURN(ArchiveRecord o, decode_record(other, other_value));
        MAILARK_ASSIGN_OR_RETURN(std::vector<Digest> other_proof, merkle::inclusion_proof(other - 1, cp.checkpoint.size, nodes));
        add_custodians(o, custodians);
        nlohmann::json c = copy_fields(o);
        c["record"] = base64_encode(other_value);
        c["proof"] = hex_proof(other_proof);
        copies.push_back(std::move(c));
      }
      j["custodians"] = custodians;
      j["copies"] = std::move(copies);
      MAILARK_ASSIGN_OR_RETURN(std::string raw, s.raw(r));
      if (mbox) {
        const std::string quoted = mboxrd_quote(raw);
        mbox_bytes += from_separator(r).size();
        j["mbox_offset"] = mbox_bytes;
        j["mbox_length"] = quoted.size();
        mbox_bytes += quoted.size() + (quoted.empty() || quoted.back() != '\n' ? 1 : 0) + 1;
      } else {
        j["file"] = entry_name(item.id);
      }
      j["record"] = base64_encode(value);
      j["proof"] = hex_proof(proof);
      load.add(load_file_checked_cells(j), std::move(raw));
      put(j);
      message_bytes += r.raw_size;
      ++done;
      mapped.tick();
      if (done % 256 == 0) {
        if (request.progress) request.progress(done, 2 * count);
        if (request.cancelled && request.cancelled()) return make_error(ErrorCode::kInternal, "the export was cancelled");
      }
    }
    m.flush();
    if (!m) return make_error(ErrorCode::kIo, "cannot write " + manifest_path);
    MAILARK_ASSIGN_OR_RETURN(load_bytes, load.finish());
  }
  const std::string manifest_hex = to_hex(manifest_hash.finish());

  // Pass 2: the zip.
  ZipWriter zip;
  MAILARK_TRY(zip.open(zip_tmp));
  MAILARK_TRY(zip.add("checkpoint", cp.note, now));
  MAILARK_TRY(copy_into_zip(zip, "manifest.jsonl", manifest_path, manifest_bytes, now));
  MAILARK_TRY(zip.add("manifest.sig", sign_note(sig_text(cp.checkpoint.origin, manifest_hex), cp.checkpoint.origin, key), now));
  MAILARK_TRY(copy_into_zip(zip, kLoadFile, load_path, load_bytes, now));
  if (mbox) MAILARK_TRY(zip.begin("messages.mbox", mbox_bytes, now));
  std::uint64_t done = 0;
  for (std::uint64_t id = ids.next(0); id != 0; id = ids.next(id)) {
    MAILARK_ASSIGN_OR_RETURN(ArchiveRecord r, s.record(id));
    MAILARK_ASSIGN_OR_RETURN(std::string raw, s.raw(r));
    if (mbox) {
      std::string quoted = mboxrd_quote(raw);
      MAILARK_TRY(zip.data(from_separator(r)));
      if (quoted.empty() || quoted.back() != '\n') quoted += '\n';
      quoted += '\n';
      MAILARK_TRY(zip.data(quoted));
    } else {
      MAILARK_TRY(zip.add(entry_name(id), raw, r.archived_at));
    }
    ++done;
    mapped.tick();
    if (done % 256 == 0) {
      if (request.progress) request.progress(count + done, 2 * count);
      if (request.cancelled && request.cancelled()) return make_error(ErrorCode::kInternal, "the export was cancelled");
    }
  }
  MAILARK_TRY(zip.close());
  MAILARK_TRY(seal_zip(zip_tmp, cp.checkpoint.origin, key));
  if (std::rename(zip_tmp.c_str(), request.path.c_str()) != 0)
    return make_error(ErrorCode::kIo, "cannot write " + request.path + ": " + std::strerror(errno));
  if (request.progress) request.progress(2 * count, 2 * count);
  ExportReport rep;
  rep.messages = count;
  rep.bytes = message_bytes;
  rep.checkpoint = cp.checkpoint;
  rep.manifest_sha256 = manifest_hex;
  return rep;
}

namespace {

// crypto false (fuzzing only): every parse and comparison runs, but signatures, the seal and the
// proofs' results are not required to check, so that a fuzzer reaches the message loop.
Result<ExportCheck> check_export(const std::string& path, const std::string& verifier_key,
                                 const std::function<void(std::uint64_t, std::uint64_t)>& progress, bool crypto) {
  ExportCheck out;
  auto problem = [&](std::string why) -> ExportCheck {
    out.ok = false;
    out.problem = std::move(why);
    return out;
  };

  // The head of the zip: the checkpoint, the manifest (hashed whole; its first line kept), its signature.
  std::string cp_note, sig_note, header_line, manifest_hex;
  {
    ZipReader z;
    MAILARK_TRY(z.open(path));
    const char* expected[] = {"checkpoint", "manifest.jsonl", "manifest.sig"};
    for (const char* name : expected) {
      MAILARK_ASSIGN_OR_RETURN(auto entry, z.next());
      if (!entry || entry->first != name)
        return problem(std::string("the export's entries do not begin with ") + "checkpoint, manifest.jsonl, manifest.sig" +
                       (entry ? " (found " + entry->first + ")" : ""));
      if (std::string_view(name) == "manifest.jsonl") {
        Sha256 h;
        bool first = true;
        for (;;) {
          MAILARK_ASSIGN_OR_RETURN(std::string chunk, z.read(kChunk));
          if (chunk.empty()) break;
          h.update(chunk);
          if (first) {
            header_line += chunk.substr(0, chunk.find('\n'));
            if (chunk.find('\n') != std::string::npos) first = false;
            if (header_line.size() > kMaxManifestLine) return problem("the manifest's first line is too long");
          }
        }
        manifest_hex = to_hex(h.finish());
      } else {
        MAILARK_ASSIGN_OR_RETURN(std::string note, z.read(kMaxNoteBytes + 1));
        (std::string_view(name) == "checkpoint" ? cp_note : sig_note) = std::move(note);
      }
    }
  }
  nlohmann::json header = nlohmann::json::parse(header_line, nullptr, false);
  const std::string format = header.is_object() ? header.value("format", "") : "";
  if (format != kFormat && format != kFormatV2 && format != kFormatV1)
    return problem("the manifest's first line is not a mailark-export-v1, -v2 or -v3 header");
  const int version = format == kFormatV1 ? 1 : format == kFormatV2 ? 2 : 3;
  out.origin = header.value("origin", "");
  out.query = header.value("query", "");
  out.case_name = header.value("case", "");
  out.created_at = header.value("created_at", "");
  const bool mbox = header.value("container", "") == "mbox";
  if (!mbox && header.value("container", "") != "eml") return problem("the manifest names an unknown container");
  const std::uint64_t count = header.value("count", std::uint64_t{0});

  std::string key_text = verifier_key;
  if (key_text.empty()) {
    key_text = header.value("verifier_key", "");
    out.key_from_export = true;
  }
  auto verifier = parse_verifier_key(key_text);
  if (!verifier) return problem("the verifier key: " + verifier.error().context);
  auto note = parse_note(cp_note);
  if (!note) return problem("the checkpoint: " + note.error().context);
  if (!note_signed_by(*note, *verifier) && crypto)
    return problem("the checkpoint's signature does not check with " + verifier->text());
  auto cp = parse_checkpoint_text(note->text);
  if (!cp) return problem("the checkpoint: " + cp.error().context);
  out.checkpoint = *cp;
  if (cp->origin != out.origin) return problem("the checkpoint is of " + cp->origin + ", the manifest of " + out.origin);
  if (header.value("tree_size", std::uint64_t{0}) != cp->size || header.value("tree_root", "") != to_hex(cp->root))
    return problem("the manifest's tree size or root is not the checkpoint's");
  auto sig = parse_note(sig_note);
  if (!sig || (!note_signed_by(*sig, *verifier) && crypto))
    return problem("the manifest's signature does not check with " + verifier->text());
  if (sig->text != sig_text(out.origin, manifest_hex) && crypto)
    return problem("the manifest was changed: its SHA-256 is not the one signed");
  if (std::string why = check_seal(path, out.origin, *verifier); !why.empty() && crypto) return problem(why);

  // The messages, in step with the manifest's lines (a second reader on the same file).
  ZipReader lines, messages;
  MAILARK_TRY(lines.open(path));
  MAILARK_TRY(messages.open(path));
  for (int i = 0; i < 2; ++i) {
    auto skip = lines.next();
    if (!skip) return skip.error();
  }
  if (auto header_again = lines.line(); !header_again) return header_again.error();
  for (int i = 0; i < 3; ++i) {
    auto skip = messages.next();
    if (!skip) return skip.error();
  }
  // v3: the load file, after the manifest's signature; its rows read in step from a third reader.
  ZipReader rows;
  if (version >= 3) {
    MAILARK_ASSIGN_OR_RETURN(auto entry, messages.next());
    if (!entry || entry->first != kLoadFile)
      return problem(std::string("the export has no ") + kLoadFile + " after manifest.sig" + (entry ? " (found " + entry->first + ")" : ""));
    MAILARK_TRY(rows.open(path));
    for (int i = 0; i < 4; ++i) {
      auto skip = rows.next();
      if (!skip) return skip.error();
    }
    MAILARK_ASSIGN_OR_RETURN(auto head, rows.line());
    if (!head || *head + "\n" != load_file_head()) return problem(std::string(kLoadFile) + "'s first row is not its header row");
  }
  std::uint64_t mbox_pos = 0;
  std::int64_t mbox_size = -1;
  std::string trailer;  // what the previous message's end must be followed by (mbox)
  if (mbox) {
    MAILARK_ASSIGN_OR_RETURN(auto entry, messages.next());
    if (!entry || entry->first != "messages.mbox") return problem("the export has no messages.mbox");
    mbox_size = entry->second;
  }
  for (std::uint64_t n = 0;; ++n) {
    MAILARK_ASSIGN_OR_RETURN(auto line, lines.line());
    if (!line) {
      if (n != count) return problem("the manifest lists " + std::to_string(n) + " messages, its header " + std::to_string(count));
      break;
    }
    nlohmann::json j = nlohmann::json::parse(*line, nullptr, false);
    if (!j.is_object()) return problem("manifest line " + std::to_string(n + 2) + " is not a message entry");
    const std::uint64_t id = j.value("id", std::uint64_t{0});
    const std::string what = "message " + std::to_string(id) + " (manifest line " + std::to_string(n + 2) + ")";
    // A record of the manifest: base64, decodes as record `id`, its own hash holds, and it is in the
    // signed tree at its place. "" when all hold, else why not.
    auto proven = [&](const nlohmann::json& entry, std::uint64_t rid, std::string* value_out,
                      ArchiveRecord* record_out) -> std::string {
      if (!entry.contains("record") || !entry["record"].is_string() || !entry.contains("proof") || !entry["proof"].is_array())
        return "it has no record and proof";
      auto value = base64_decode(entry["record"].get<std::string>(), kMaxManifestLine);
      if (!value) return "its record is not base64";
      auto record = decode_record(rid, *value);
      if (!record) return "its record does not decode: " + record.error().context;
      if (record->seq != rid) return "its record is another id's";
      if (record_hash(record->prev_hash, rid, std::string_view(*value).substr(0, value->size() - 32)) != record->hash)
        return "its record's hash does not match the record";
      std::vector<Digest> proof;
      for (const auto& h : entry["proof"]) {
        Digest d;
        if (!h.is_string() || !from_hex(h.get<std::string>(), d)) return "its proof is not hex hashes";
        proof.push_back(d);
      }
      if (rid == 0 || (!merkle::verify_inclusion(rid - 1, cp->size, merkle::leaf_hash(*value), proof, cp->root) && crypto))
        return "its record is not in the signed tree (the inclusion proof fails)";
      *value_out = std::move(*value);
      *record_out = std::move(*record);
      return "";
    };
    std::string value;
    ArchiveRecord main_record;
    if (std::string why = proven(j, id, &value, &main_record); !why.empty()) return problem(what + ": " + why);
    const ArchiveRecord* record = &main_record;
    nlohmann::json fields = record_fields(*record, version);
    for (auto& [k, v] : fields.items())
      if (!j.contains(k) || j[k] != v) return problem(what + ": the manifest's \"" + k + "\" is not what its record says");
    if (version >= 2) {
      // Every other record of these bytes, proved; and the custodians of them all.
      if (!j.contains("copies") || !j["copies"].is_array()) return problem(what + ": it lists no copies");
      std::vector<std::pair<std::uint64_t, ArchiveRecord>> all{{id, main_record}};
      std::uint64_t last = 0;
      for (const auto& c : j["copies"]) {
        const std::uint64_t cid = c.is_object() ? c.value("id", std::uint64_t{0}) : 0;
        const std::string cwhat = what + ", its copy " + std::to_string(cid);
        if (cid <= last || cid == id) return problem(cwhat + ": copies are not in ascending order of id, each once");
        last = cid;
        std::string cvalue;
        ArchiveRecord crecord;
        if (std::string why = proven(c, cid, &cvalue, &crecord); !why.empty()) return problem(cwhat + ": " + why);
        if (crecord.content_sha256 != main_record.content_sha256) return problem(cwhat + ": it is a record of other bytes");
        const nlohmann::json cfields = copy_fields(crecord);
        for (auto& [k, v] : cfields.items())
          if (!c.contains(k) || c[k] != v) return problem(cwhat + ": the manifest's \"" + k + "\" is not what its record says");
        all.emplace_back(cid, std::move(crecord));
      }
      std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<std::string> custodians;
      for (const auto& [rid, rec] : all) add_custodians(rec, custodians);
      if (!j.contains("custodians") || j["custodians"] != nlohmann::json(custodians))
        return problem(what + ": the manifest's \"custodians\" are not those its records name");
    }
    std::string bytes;
    if (mbox) {
      const std::uint64_t offset = j.value("mbox_offset", std::uint64_t{0}), length = j.value("mbox_length", std::uint64_t{0});
      if (offset < mbox_pos || offset + length > static_cast<std::uint64_t>(mbox_size))
        return problem(what + ": its place in messages.mbox is out of order or past the end");
      MAILARK_ASSIGN_OR_RETURN(std::string gap, messages.read(offset - mbox_pos));
      if (gap != trailer + from_separator(*record))
        return problem(what + ": the mbox lines before it are not its separator (\"From <sender> <date>\")");
      MAILARK_ASSIGN_OR_RETURN(std::string quoted, messages.read(length));
      if (quoted.size() != length) return problem(what + ": messages.mbox ends inside it");
      mbox_pos = offset + length;
      trailer = std::string(quoted.empty() || quoted.back() != '\n' ? "\n" : "") + "\n";
      bytes = mboxrd_unquote(quoted);
    } else {
      MAILARK_ASSIGN_OR_RETURN(auto entry, messages.next());
      if (!entry || entry->first != j.value("file", "") || entry->first != entry_name(id))
        return problem(what + ": the next file in the export is " + (entry ? entry->first : "none") + ", not " + entry_name(id));
      if (entry->second != static_cast<std::int64_t>(record->raw_size))
        return problem(what + ": its file is " + std::to_string(entry->second) + " bytes, the record says " +
                       std::to_string(record->raw_size));
      MAILARK_ASSIGN_OR_RETURN(bytes, messages.read(record->raw_size + 1));
    }
    if (bytes.size() != record->raw_size || sha256(bytes) != record->content_sha256)
      return problem(what + ": its bytes are not those archived (SHA-256 or size differs)");
    if (version >= 3) {
      // Its row: as wide as the header, and what the manifest says in every checked column.
      MAILARK_ASSIGN_OR_RETURN(auto row, rows.line());
      if (!row) return problem(std::string(kLoadFile) + " ends before " + what);
      if (row->empty() || row->back() != '\r') return problem(std::string(kLoadFile) + "'s row of " + what + " does not end with CR LF");
      row->pop_back();
      auto cells = csv_cells(*row);
      if (!cells || cells->size() != kLoadFileWidth)
        return problem(std::string(kLoadFile) + "'s row of " + what + " is not " + std::to_string(kLoadFileWidth) + " CSV cells");
      const std::vector<std::string> expected = load_file_checked_cells(j);
      for (std::size_t i = 0; i < kLoadFileWidth; ++i) {
        if (kLoadFileColumns[i].checked && expected[i] != (*cells)[i])
          return problem(std::string(kLoadFile) + "'s " + kLoadFileColumns[i].name + " of " + what + " is not the manifest's");
      }
    }
    out.messages++;
    out.bytes += bytes.size();
    if (progress && out.messages % 256 == 0) progress(out.messages, count);
  }
  if (!mbox) {
    MAILARK_ASSIGN_OR_RETURN(auto extra, messages.next());
    if (extra) return problem("the export has a file the manifest does not list: " + extra->first);
  } else {
    MAILARK_ASSIGN_OR_RETURN(std::string rest, messages.read(kChunk));
    if (rest != trailer) return problem("messages.mbox does not end where the manifest's last message ends");
    MAILARK_ASSIGN_OR_RETURN(auto extra, messages.next());
    if (extra) return problem("the export has a file the manifest does not list: " + extra->first);
  }
  if (version >= 3) {
    MAILARK_ASSIGN_OR_RETURN(auto extra_row, rows.line());
    if (extra_row) return problem(std::string(kLoadFile) + " has rows the manifest does not list");
    out.load_file = true;
  }
  if (progress) progress(out.messages, count);
  out.ok = true;
  return out;
}

}  // namespace

Result<ExportCheck> verify_export(const std::string& path, const std::string& verifier_key,
                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return make_error(ErrorCode::kNotFound, "no export at " + path);
  auto checked = check_export(path, verifier_key, progress, /*crypto=*/true);
  if (checked || checked.error().code == ErrorCode::kNotFound) return checked;
  // A zip that cannot be read (truncated, damaged, not a zip at all) does not check: said as such,
  // not as an error of the machine.
  ExportCheck out;
  out.problem = "the export is not a readable zip: " + checked.error().context;
  return out;
}

Result<ExportCheck> verify_export_for_fuzzing(const std::string& path) {
  auto checked = check_export(path, "", nullptr, /*crypto=*/false);
  if (checked || checked.error().code == ErrorCode::kNotFound) return checked;
  ExportCheck out;
  out.problem = checked.error().context;
  return out;
}

}  // namespace mailark

#include "engine/pst.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpst/libpst.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/file_util.h"
#include "common/frames.h"
#include "common/numbers.h"
#include "engine/message.h"

extern "C" {
#include <libpst/lzfu.h>
#include <libpst/timeconv.h>
}

extern char** environ;

namespace mailark {
namespace {

constexpr unsigned kMaxFolderDepth = 64;
constexpr unsigned kMaxEmbeddedDepth = 8;
constexpr int kIdleSeconds = 300;  // a PST reader that sends nothing this long is stopped

std::string hex_id(std::uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(id));
  return buf;
}

// A folder's name inside a path: "%" and "/" escaped, so the path splits back into names.
std::string escape_folder_name(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == '%')
      out += "%25";
    else if (c == '/')
      out += "%2F";
    else if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f)
      out.push_back(c);
  }
  return out;
}

// What a skipped item is, with its message class ("IPM.Contact") when it has one.
std::string item_kind(const pst_item* item) {
  std::string kind;
  switch (item->type) {
    case PST_TYPE_APPOINTMENT: kind = "an appointment"; break;
    case PST_TYPE_CONTACT: kind = "a contact"; break;
    case PST_TYPE_JOURNAL: kind = "a journal entry"; break;
    case PST_TYPE_STICKYNOTE: kind = "a sticky note"; break;
    case PST_TYPE_TASK: kind = "a task"; break;
    default: kind = item->email ? "an item" : "an item without mail properties"; break;
  }
  std::string cls;
  for (const char* c = item->ascii_type; c && *c && cls.size() < 80; ++c)
    if (static_cast<unsigned char>(*c) > 0x20 && *c != 0x7f) cls.push_back(*c);
  return kind + (cls.empty() ? "" : " (" + cls + ")") + ", not mail";
}

std::int64_t unix_time(const FILETIME* ft) { return ft ? static_cast<std::int64_t>(pst_fileTimeToUnixTime(ft)) : 0; }

struct ItemRef {
  pst_item* p;
  explicit ItemRef(pst_item* item) : p(item) {}
  ~ItemRef() {
    if (p) pst_freeItem(p);
  }
  ItemRef(const ItemRef&) = delete;
  ItemRef& operator=(const ItemRef&) = delete;
};

// A property string as UTF-8 (libpst converts one in the item's code page in place).
std::string utf8(pst_item* item, pst_string& s) {
  if (!s.str) return {};
  pst_convert_utf8(item, &s);
  return s.str ? std::string(s.str) : std::string();
}

// Outlook's display lists ("Ann Lee; bob@example.com"): an address where one is written, else the
// name alone.
std::vector<Address> display_list(const std::string& list) {
  std::vector<Address> out;
  std::size_t pos = 0;
  while (pos <= list.size() && out.size() < 10000) {
    std::size_t end = list.find(';', pos);
    std::string piece = list.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? list.size() + 1 : end + 1;
    std::size_t b = piece.find_first_not_of(" \t\r\n"), e = piece.find_last_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    piece = piece.substr(b, e - b + 1);
    if (piece.find('@') != std::string::npos) {
      auto parsed = parse_address_list(piece, 1);
      if (!parsed.empty() && !parsed[0].addr.empty()) {
        out.push_back(parsed[0]);
        continue;
      }
    }
    out.push_back(Address{piece, ""});
  }
  return out;
}

// A header section worth keeping: starts with a header field ("Name: value").
bool looks_like_headers(const std::string& h) {
  std::size_t colon = h.find(':');
  if (colon == 0 || colon == std::string::npos || colon > 76) return false;
  for (std::size_t i = 0; i < colon; ++i) {
    unsigned char c = static_cast<unsigned char>(h[i]);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

class Reader {
 public:
  Reader(const std::string& path, const Limits& limits, const SourceCallbacks& cb)
      : path_(path), limits_(limits), cb_(cb) {}

  void run() {
    std::memset(&pf_, 0, sizeof pf_);
    if (pst_open(&pf_, path_.c_str(), nullptr) != 0) {
      cb_.on_error(path_, "libpst cannot open it as a PST file (not a PST, or its header is damaged)");
      return;
    }
    struct Closer {
      pst_file* f;
      ~Closer() { pst_close(f); }
    } closer{&pf_};
    if (pst_load_index(&pf_) != 0) {
      cb_.on_error(path_, "libpst cannot read the PST's index (the file is damaged or truncated)");
      return;
    }
    pst_load_extended_attributes(&pf_);
    pst_desc_tree* d = pf_.d_head;
    if (!d) {
      cb_.on_error(path_, "the PST has no items (its descriptor tree is empty)");
      return;
    }
    ItemRef root(pst_parse_item(&pf_, d, nullptr));
    if (!root.p || !root.p->message_store) {
      cb_.on_error(path_, "the PST has no message store (its root item cannot be read)");
      return;
    }
    pst_desc_tree* top = pst_getTopOfFolders(&pf_, root.p);
    if (!top) {
      cb_.on_error(path_, "the PST has no top of folders (the store's folder tree cannot be found)");
      return;
    }
    folder(top->child, "", 0);
    if (mail_ == 0 && items_ == 0 && !halted_) skip(path_, "a PST that holds folders only, no items");
  }

 private:
  // SourceCallbacks::stop, asked before each item: once true, nothing more is read.
  bool halted() {
    if (!halted_ && cb_.stop && cb_.stop()) halted_ = true;
    return halted_;
  }

  void skip(const std::string& origin, const std::string& what) {
    if (cb_.on_skipped) cb_.on_skipped(origin, what);
  }

  void folder(pst_desc_tree* d, const std::string& folder_path, unsigned depth) {
    for (; d; d = d->next) {
      if (halted()) return;
      std::string where = "item " + hex_id(d->d_id) + " (" + (folder_path.empty() ? std::string("top") : folder_path) + ")";
      if (!d->desc) {
        ++items_;
        cb_.on_error(path_ + "#" + where, "libpst finds no data for this item");
        continue;
      }
      ItemRef item(pst_parse_item(&pf_, d, nullptr));
      if (!item.p) {
        ++items_;
        cb_.on_error(path_ + "#" + where, "libpst cannot read this item");
        continue;
      }
      if (item.p->folder && item.p->file_as.str) {
        if (!d->child) continue;
        std::string name = escape_folder_name(utf8(item.p, item.p->file_as));
        std::string sub = folder_path.empty() ? name : folder_path + "/" + name;
        if (depth + 1 >= kMaxFolderDepth) {
          cb_.on_error(path_ + "#folder " + sub, "folders nest deeper than 64: this folder is left out");
          continue;
        }
        folder(d->child, sub, depth + 1);
        continue;
      }
      ++items_;
      // Mail: notes (IPM.Note.*), meeting requests and reports, and posts (IPM.Post: a message
      // posted to a folder, not sent; it has a sender, subject and body as mail does).
      bool post = item.p->ascii_type && std::strncmp(item.p->ascii_type, "IPM.Post", 8) == 0;
      if (item.p->email && (item.p->type == PST_TYPE_NOTE || item.p->type == PST_TYPE_SCHEDULE ||
                            item.p->type == PST_TYPE_REPORT || post)) {
        message(item.p, folder_path, where);
      } else if (item.p->message_store) {
        skip(path_ + "#" + where, "a second message store inside the file (libpst reads the first only)");
      } else {
        skip(path_ + "#" + where, item_kind(item.p));
      }
    }
  }

  void message(pst_item* item, const std::string& folder_path, const std::string& where) {
    std::size_t budget = limits_.max_message_bytes;
    std::string why;
    ConvertedMessage m = convert(item, 0, budget, why);
    std::string origin = path_ + "#" + std::to_string(++mail_);
    if (!why.empty()) {
      cb_.on_error(origin + " = " + where, why);
      return;
    }
    std::string raw = write_converted_message(m);
    if (raw.size() > limits_.max_message_bytes) {
      cb_.on_error(origin + " = " + where,
                   "message larger than " + std::to_string(limits_.max_message_bytes) + " bytes once rebuilt");
      return;
    }
    std::int64_t when = unix_time(item->email->arrival_date);
    if (when <= 0) when = m.date;
    if (when <= 0) when = file_mtime(path_);
    SourceMessage sm;
    sm.origin = origin;
    sm.raw = std::move(raw);
    sm.received_at = when;
    sm.file = path_;
    sm.folder = folder_path;
    cb_.on_message(std::move(sm));
  }

  // The message an email item holds. `budget` is what the message may still take (attachments
  // count against it as they are read); `why` says what stopped it.
  ConvertedMessage convert(pst_item* item, unsigned depth, std::size_t& budget, std::string& why) {
    ConvertedMessage m;
    pst_item_email* e = item->email;
    auto take = [&](std::size_t n) {
      if (n > budget) {
        why = "message larger than " + std::to_string(limits_.max_message_bytes) + " bytes once rebuilt";
        return false;
      }
      budget -= n;
      return true;
    };
    std::string headers = utf8(item, e->header);
    if (looks_like_headers(headers)) m.transport_headers = std::move(headers);
    m.subject = utf8(item, item->subject);
    std::string sender_name = utf8(item, e->outlook_sender_name);
    std::string sender = utf8(item, e->sender_address);
    if (sender.find('@') == std::string::npos) sender = utf8(item, e->sender2_address);
    if (sender.find('@') == std::string::npos) {
      // An Exchange sender has an X.500 address ("/O=NORTHWIND/OU=.../CN=ANN"): no SMTP address to
      // write, but it names the sender's mailbox, so it is kept in a field of its own.
      std::string x500 = utf8(item, e->sender_address);
      if (x500.empty()) x500 = utf8(item, e->sender2_address);
      if (!x500.empty() && x500.size() < 1000 && x500.find_first_of("\r\n") == std::string::npos)
        m.extra_headers.push_back({"X-Mailark-Exchange-Sender", x500});
      sender.clear();
    }
    m.from = Address{sender_name, sender};
    m.to = display_list(utf8(item, e->sentto_address));
    m.cc = display_list(utf8(item, e->cc_address));
    m.bcc = display_list(utf8(item, e->bcc_address));
    m.message_id = utf8(item, e->messageid);
    m.in_reply_to = utf8(item, e->in_reply_to);
    m.date = unix_time(e->sent_date);
    if (m.date <= 0) m.date = unix_time(e->arrival_date);
    if (m.date <= 0) m.date = unix_time(item->create_date);
    m.text = utf8(item, item->body);
    m.html = utf8(item, e->htmlbody);
    if (!take(m.transport_headers.size() + m.text.size() + m.html.size())) return m;
    if (m.text.empty() && m.html.empty() && e->rtf_compressed.data && e->rtf_compressed.size > 0) {
      // Only a compressed RTF body: kept whole, as an attachment (the index reads no RTF).
      std::size_t size = 0;
      char* rtf = pst_lzfu_decompress(e->rtf_compressed.data, static_cast<std::uint32_t>(e->rtf_compressed.size), &size);
      if (rtf) {
        bool fits = take(size);
        if (fits) m.attachments.push_back({"rtf-body.rtf", "application/rtf", "", std::string(rtf, size)});
        std::free(rtf);
        if (!fits) return m;
      }
    }
    unsigned index = 0;
    for (pst_item_attach* a = item->attach; a; a = a->next, ++index) {
      if (a->method == PST_ATTACH_EMBEDDED) {
        if (depth + 1 >= kMaxEmbeddedDepth) {
          m.extra_headers.push_back({"X-Mailark-Left-Out", "an embedded message nested deeper than 8"});
          continue;
        }
        pst_desc_tree d{};
        d.desc = pst_getID(&pf_, a->i_id);
        ItemRef inner(d.desc ? pst_parse_item(&pf_, &d, a->id2_head) : nullptr);
        if (!inner.p || !inner.p->email) {
          m.extra_headers.push_back({"X-Mailark-Left-Out", "attachment " + std::to_string(index + 1) +
                                                               ": an embedded item libpst cannot read as mail"});
          continue;
        }
        m.embedded.push_back(convert(inner.p, depth + 1, budget, why));
        if (!why.empty()) return m;
        continue;
      }
      if (!a->data.data && !a->i_id) continue;  // an attachment without data (by reference only)
      ConvertedAttachment out;
      out.filename = utf8(item, a->filename2);
      if (out.filename.empty()) out.filename = utf8(item, a->filename1);
      out.content_type = utf8(item, a->mimetype);
      out.content_id = utf8(item, a->content_id);
      if (a->data.data) {
        if (!take(a->data.size)) return m;
        out.data.assign(a->data.data, a->data.size);
      } else {
        pst_binary b = pst_attach_to_mem(&pf_, a);
        bool fits = take(b.size);
        if (fits && b.data) out.data.assign(b.data, b.size);
        std::free(b.data);
        if (!fits) return m;
        if (!b.data) {
          m.extra_headers.push_back({"X-Mailark-Left-Out", "attachment " + std::to_string(index + 1) +
                                                               ": libpst cannot read its data"});
          continue;
        }
      }
      m.attachments.push_back(std::move(out));
    }
    return m;
  }

  std::string path_;
  const Limits& limits_;
  const SourceCallbacks& cb_;
  pst_file pf_{};
  std::uint64_t mail_ = 0, items_ = 0;
  bool halted_ = false;  // stop said so
};

// Frames between the helper and the importer (common/frames.h): 'm' message (origin, bytes, received
// at, folder), 'e' error (origin, reason), 's' skipped (origin, what), 'x' end.
bool write_frame(int fd, char kind, std::initializer_list<std::string_view> fields) {
  return write_all(fd, encode_frame(kind, fields));
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "libpst crashed (signal " + std::to_string(sig) + ", " + (name ? name : "unknown") + ")";
  }
  if (WIFEXITED(status)) return "the PST reader exited with status " + std::to_string(WEXITSTATUS(status));
  return "the PST reader stopped";
}

}  // namespace

bool is_pst_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "!BDN", 4) == 0;
}

void read_pst(const std::string& path, const Limits& limits, const SourceCallbacks& cb) {
  Reader(path, limits, cb).run();
}

int write_pst_frames(const std::string& path, const Limits& limits, int fd) {
  bool ok = true;
  SourceCallbacks cb;
  cb.on_message = [&](SourceMessage&& m) {
    ok = ok && write_frame(fd, 'm', {m.origin, m.raw, std::to_string(m.received_at), m.folder});
  };
  cb.on_error = [&](const std::string& origin, const std::string& reason) {
    ok = ok && write_frame(fd, 'e', {origin, reason});
  };
  cb.on_skipped = [&](const std::string& origin, const std::string& what) {
    ok = ok && write_frame(fd, 's', {origin, what});
  };
  read_pst(path, limits, cb);
  ok = ok && write_frame(fd, 'x', {});
  return ok ? 0 : 1;
}

PstFrames read_pst_frames(std::FILE* in, const std::string& path, const Limits& limits, const SourceCallbacks& cb) {
  PstFrames out;
  const std::size_t max_field = limits.max_message_bytes + (1u << 20);
  Frame frame;
  while (!out.ended && out.bad.empty()) {
    const FrameRead got = read_frame(in, max_field, 4, frame);
    if (got == FrameRead::kEnd) break;
    if (got == FrameRead::kTruncated) {
      out.bad = "the PST reader's output ends inside a frame";
      break;
    }
    if (got == FrameRead::kTooLarge) {
      out.bad = "the PST reader wrote a frame larger than the message limit";
      break;
    }
    if (got == FrameRead::kBad) {
      out.bad = "the PST reader wrote what is not a frame";
      break;
    }
    auto& fields = frame.fields;
    const std::size_t count = fields.size();
    if (frame.kind == 'm' && count == 4) {
      SourceMessage m;
      m.origin = std::move(fields[0]);
      m.raw = std::move(fields[1]);
      m.received_at = static_cast<std::int64_t>(parse_decimal(fields[2]).value_or(0));
      m.folder = std::move(fields[3]);
      m.file = path;
      ++out.messages;
      cb.on_message(std::move(m));
    } else if (frame.kind == 'e' && count == 2) {
      cb.on_error(fields[0], fields[1]);
    } else if (frame.kind == 's' && count == 2) {
      if (cb.on_skipped) cb.on_skipped(fields[0], fields[1]);
    } else if (frame.kind == 'x' && count == 0) {
      out.ended = true;
    } else {
      out.bad = "the PST reader wrote what is not a frame";
    }
  }
  return out;
}

void read_pst_in_child(const std::vector<std::string>& helper, const std::string& path, const Limits& limits,
                       const SourceCallbacks& cb) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    cb.on_error(path, std::string("cannot start the PST reader: ") + std::strerror(errno));
    return;
  }
  std::vector<std::string> args = helper;
  args.push_back(path);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // the archive's files stay out of libpst's reach
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    cb.on_error(path, "cannot start the PST reader " + args[0] + ": " + std::strerror(rc));
    return;
  }
  // A damaged file can also make libpst loop: a child that sends nothing for kIdleSeconds is
  // stopped (what it sent before is kept), so the import goes on with the next file.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, stalled = false;
  auto last = std::chrono::steady_clock::now();
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    while (!done) {
      cv.wait_for(lock, std::chrono::seconds(1));
      if (!done && std::chrono::steady_clock::now() - last > std::chrono::seconds(kIdleSeconds)) {
        stalled = true;
        ::kill(pid, SIGKILL);
        break;
      }
    }
  });
  auto touch = [&] {
    std::lock_guard lock(mu);
    last = std::chrono::steady_clock::now();
  };
  SourceCallbacks relay;
  // Asked before each message (SourceCallbacks::stop): once true, the child is stopped and nothing it
  // sent after is taken, rather than the whole file read and dropped.
  bool halted = false;
  relay.on_message = [&](SourceMessage&& m) {
    if (!halted && cb.stop && cb.stop()) {
      halted = true;
      ::kill(pid, SIGKILL);
    }
    if (halted) return;
    cb.on_message(std::move(m));
    touch();
  };
  relay.on_error = [&](const std::string& origin, const std::string& reason) {
    if (halted) return;
    cb.on_error(origin, reason);
    touch();
  };
  relay.on_skipped = [&](const std::string& origin, const std::string& what) {
    if (halted) return;
    if (cb.on_skipped) cb.on_skipped(origin, what);
    touch();
  };
  std::FILE* in = ::fdopen(fds[0], "rb");
  PstFrames got = in ? read_pst_frames(in, path, limits, relay) : PstFrames{};
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  if (stalled) got.bad = "libpst sent nothing for " + std::to_string(kIdleSeconds) + " seconds (stopped)";
  bool ended = got.ended;
  std::uint64_t messages = got.messages;
  std::string bad = in ? got.bad : std::string("cannot read the PST reader's output");
  if (!ended && bad.empty()) bad = "its output ended early";
  if (!ended) ::kill(pid, SIGKILL);
  if (in)
    std::fclose(in);
  else
    ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!ended && !halted) {
    std::string how = !stalled && WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL ? describe_exit(status)
                      : WIFEXITED(status) && WEXITSTATUS(status) != 0 ? describe_exit(status)
                                                                       : bad;
    cb.on_error(path, "the PST reader stopped after " + std::to_string(messages) + " message" +
                          (messages == 1 ? "" : "s") + ": " + how +
                          "; the file is damaged or in a form libpst cannot read (what was read before is imported)");
  }
}

}  // namespace mailark

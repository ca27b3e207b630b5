// One IMAP connection's meaning: states, commands, the selected folder's view. No sockets: the
// server (api/imap/server.cc) feeds it whole commands (api/imap/command.h) and writes what it answers;
// every call may block on LMDB, the archive's decompression or Xapian, so the server runs them on a
// pool thread, one call at a time per session.
//
// IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) with LITERAL+, SASL-IR, IDLE, UIDPLUS, MOVE,
// NAMESPACE, ID, ENABLE, SPECIAL-USE, ESEARCH, CONDSTORE, UNSELECT, CHILDREN, BINARY (FETCH
// BINARY[], BINARY.SIZE[], APPEND's literal8), LIST-EXTENDED's RETURN (SPECIAL-USE, SUBSCRIBED,
// CHILDREN, STATUS). Messages are sent with CRLF line ends whatever the archive holds (session.cc
// imap_form; tests: test_imap.py test_imported_mail_is_served_with_crlf_line_ends, imaptest's binary
// groups in test_imaptest.py). Logins (LOGIN, AUTHENTICATE PLAIN and LOGIN)
// only over TLS, or from auth.plaintext_login_networks (loopback by default, as Dovecot counts it
// secure); elsewhere LOGINDISABLED and NO [PRIVACYREQUIRED] (tests/e2e/test_imap.py
// test_logins_need_tls_outside_the_trusted_networks).
//
// Isolation: every folder is looked up by name among the logged-in user's folders, and every
// message operation goes through MailboxStore with that user's id, which checks ownership again
// (tests: tests/e2e/test_imap.py test_users_never_reach_each_others_mail).
//
// Sequence numbers: the session keeps the view the client knows (UIDs in order). Other sessions'
// changes reach it in sync(): new messages as EXISTS, flag changes as FETCH, expunges as EXPUNGE
// (only where RFC 9051 7.5.1 allows them: not during FETCH, STORE or SEARCH).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/auth.h"
#include "api/imap/command.h"
#include "common/limits.h"
#include "engine/archive.h"
#include "engine/cases.h"
#include "engine/mailbox.h"
#include "engine/message.h"
#include "engine/mime_tree.h"

namespace mailark::api::imap {

// The answer to an APPEND while the data folder's disk is short (as Dovecot answers it).
inline constexpr std::string_view kNoDiskSpace = "[OVERQUOTA] Not enough disk space";

// The RFC822.SIZE of imported messages (the size of the form IMAP sends them in, session.cc
// imap_size), by archive seq: counting it reads and decompresses the message, and archived bytes
// never change, so a size once counted holds. Bounded: cleared when it holds kMax sizes (test:
// ImapSizeCache.IsBoundedAndKeepsWhatItHolds); sizes asked twice are the same (test_imap.py
// test_imported_mail_is_served_with_crlf_line_ends).
class ImapSizeCache {
 public:
  static constexpr std::size_t kMax = 1u << 20;
  std::optional<std::uint64_t> get(std::uint64_t seq) const {
    std::lock_guard lock(mu_);
    auto it = sizes_.find(seq);
    if (it == sizes_.end()) return std::nullopt;
    return it->second;
  }
  void put(std::uint64_t seq, std::uint64_t size) {
    std::lock_guard lock(mu_);
    if (sizes_.size() >= kMax) sizes_.clear();
    sizes_[seq] = size;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return sizes_.size();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::uint64_t> sizes_;
};

struct ImapContext {
  MailboxStore& store;
  const Archive& archive;
  std::string index_dir;
  Authenticator& auth;
  std::string hostname = "localhost";
  std::size_t max_message_bytes = 64u << 20;
  // APPEND: archives `raw` for `user` into `folder` through the pipeline (scanned, archived) and
  // returns its archive seq once it is durable; an error (refused, infected, full queue) otherwise.
  // Blocking.
  std::function<Result<std::uint64_t>(const User& user, const std::string& folder, std::string raw,
                                      std::int64_t internal_date)>
      append;
  // Room on disk for an APPEND of this many bytes (api/disk_reserve.h): false answers
  // NO [OVERQUOTA] Not enough disk space. Empty: always room (tests).
  std::function<bool(std::uint64_t bytes)> disk_room;
  // Makes what is archived searchable (the server's Ingest::sync_index): called by a text SEARCH of
  // a large folder with more than kAskAbove messages past the index's watermark, so that it reads
  // fewer messages one by one (those past the watermark are checked against their bytes, so SEARCH
  // is exact either way). Empty: not asked (tests).
  std::function<void()> sync_index;
  // The audit log (engine/cases.h): the messages a session read and the searches it made are one
  // entry when it ends ("imap.views": how many and which archive ids; tests/e2e/test_web.py
  // test_cases_over_rest_and_the_audit_log). Null: nothing is audited (tests).
  CaseStore* audit = nullptr;
  std::shared_ptr<ImapSizeCache> sizes = std::make_shared<ImapSizeCache>();
};

class ImapSession {
 public:
  enum class Then {
    kNone,
    kStartTls,  // start TLS now; bytes the client sent after STARTTLS are dropped
    kClose,
    kIdle,      // wait for DONE (expect_line), calling idle_poll() on changes
    kMore,      // write out, then call more()
    kAuthLine,  // expect_line(), then auth_line()
  };
  struct Reply {
    std::string out;
    Then then = Then::kNone;
  };

  ImapSession(ImapContext& ctx, std::string client_ip, bool tls_active, bool starttls_available, bool loopback);
  ~ImapSession();  // writes the session's views to the audit log

  std::string greeting() const;
  // APPEND moves its message out of `cmd` (a message is not kept twice while it is archived).
  Reply execute(Command& cmd);
  Reply more();
  Reply auth_line(const std::string& line);
  std::string idle_poll();
  Reply idle_done(const std::string& line);
  void tls_started() { tls_ = true; }
  std::string shutdown_notice() const { return "* BYE mailark is shutting down\r\n"; }
  std::string bad(const std::string& tag, const std::string& why);  // counts errors

  bool logged_in() const { return user_.id != 0; }
  const std::string& user_name() const { return user_.name; }
  std::uint32_t user_id() const { return user_.id; }
  bool too_many_errors() const { return errors_ >= kMaxErrors; }

  static constexpr unsigned kMaxErrors = 30;
  static constexpr std::size_t kFetchChunkBytes = 1u << 20;
  // Folders up to this size are searched message by message (exact substrings, every header);
  // larger ones through the index (word starts in the indexed fields), to stay fast.
  static constexpr std::size_t kExactSearchMessages = 1000;
  // A text SEARCH of a larger folder asks the index to commit first only when more of the folder's
  // messages than this are past its watermark (the others are read and matched one by one).
  static constexpr std::size_t kAskAbove = 100;

 private:
  enum class State { kNotAuthenticated, kAuthenticated, kSelected, kLogout };
  struct Selected {
    Folder folder;
    bool read_only = false;
    std::vector<MailEntry> view;  // what the client knows, in UID order; index + 1 = sequence number
    bool gone = false;            // the folder was deleted or renamed away
    std::vector<std::string> keywords;    // announced in FLAGS, as first seen
    std::set<std::string> keywords_lower;
    std::set<std::uint32_t> recent;       // UIDs that are \Recent in this session (rev1)
    bool expunge_pending = false;         // sync() saw expunges it could not report yet
  };
  struct PendingFetch {
    std::string tag;
    std::vector<std::size_t> indexes;  // into view
    std::vector<FetchAttr> attrs;
    bool uid = false;
    bool mark_seen = false;
    bool want_modseq = false;
    bool unknown_cte = false;  // a BINARY item met an encoding it cannot undo
    std::size_t next = 0;
    std::string name;
  };
  struct PendingAuth {
    std::string tag, mechanism, login_user;
    int step = 0;
  };

  Reply login(const std::string& tag, const std::string& user, const std::string& password);
  Reply capability(const std::string& tag);
  Reply select(const Command& c, bool read_only);
  Reply list(const Command& c, bool lsub);
  Reply status(const Command& c);
  Reply fetch(const Command& c, bool uid);
  Reply store_flags(const Command& c, bool uid);
  Reply search(const Command& c, bool uid);
  Reply copy_move(const Command& c, bool uid, bool move);
  Reply expunge(const Command& c, bool uid);
  Reply append(Command& c);
  Reply create_delete_rename(const Command& c);
  Reply subscribe(const Command& c, bool on);

  std::string capabilities() const;
  // "* FLAGS" and "* OK [PERMANENTFLAGS]" when a keyword appears that the client was not told of
  // (RFC 9051 7.3.5), else nothing.
  std::string announce(const std::vector<std::string>& keywords);
  std::string flags_lines() const;
  // FLAGS of an entry as this session shows them (\Recent added for rev1 clients).
  std::string flags_of(const MailEntry& e) const;
  // A CONDSTORE-enabling command (RFC 7162 3.1): the first one with a folder selected reports its
  // HIGHESTMODSEQ.
  std::string enable_condstore();
  // What keys read of one message, parsed once for all the keys of a SEARCH: its MIME tree (text
  // keys, SENT* dates), and its decoded texts once a text key has needed them.
  struct TextCache {
    std::optional<MimeNode> tree;
    std::optional<ParsedMessage> decoded;
    std::optional<std::string> charset;  // declared_charset, for raw 8-bit header bytes
  };
  // IMAP's substring search (RFC 9051 6.4.4) on the message's bytes, for one text key.
  static bool text_matches(const SearchKey& k, const std::string& raw, TextCache& cache);
  std::string sync(bool allow_expunge);
  std::string status_items(const Folder& f, const std::vector<std::string>& items);
  // Resolves a sequence set (UIDs or sequence numbers) to view indexes, ascending.
  std::vector<std::size_t> resolve(const SequenceSet& set, bool uid) const;
  std::optional<std::string> folder_name(const Value& v) const;  // the client's name, as stored (UTF-8)
  std::string client_name(const std::string& stored) const;      // as the client reads it
  std::string fetch_one(std::size_t index, PendingFetch& f, const ArchiveSnapshot& snap);
  Reply fail(const std::string& tag, const std::string& code_and_text);
  Reply ok(const std::string& tag, const std::string& text, Then then = Then::kNone);

  ImapContext& ctx_;
  std::string client_ip_;
  bool tls_;
  bool starttls_available_;
  bool loopback_;
  State state_ = State::kNotAuthenticated;
  User user_;
  // Archive ids whose bytes this session sent (BODY[], RFC822, BINARY...), for the audit log.
  std::set<std::uint64_t> viewed_;
  std::uint64_t searches_ = 0;          // SEARCH commands, for the same entry
  std::vector<std::string> searched_;   // the first 50, as text
  void write_views();
  bool rev2_ = false;
  bool condstore_ = false;
  std::optional<Selected> sel_;
  std::optional<PendingFetch> fetch_;
  std::optional<PendingAuth> auth_;
  std::string idle_tag_;
  std::vector<std::uint32_t> saved_uids_;  // SEARCH RETURN (SAVE): "$"
  unsigned errors_ = 0;
};

}  // namespace mailark::api::imap

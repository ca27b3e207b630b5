// The mailbox store: the user directory and each user's view of the archive (folders, UIDs, flags),
// in its own LMDB environment DATA/mailbox (docs/FORMAT.md, "mailbox"). The archive stays append-only
// and the source of truth; everything here is mutable state about it: which archived message is in
// which folder of which user under which UID, with which flags. EXPUNGE and folder deletion remove
// entries here and never touch the archive.
//
// Tables:
//   meta        "format" (u32 BE), "followed" (u64 BE: the last archive record placed), "next_user",
//               "next_folder", "last_uidvalidity" (u32 BE)
//   users       login name (lower case) -> user record (engine/users.h, JSON)
//   addresses   address (lower case) -> login name; one entry per name and alias
//   folders     user id (u32 BE) || folder name -> folder record (binary v1)
//   folder_ids  folder id (u32 BE) -> user id (u32 BE) || folder name
//   messages    folder id (u32 BE) || UID (u32 BE) -> message entry (binary v1: seq, modseq, flags, keywords)
//   subscriptions user id (u32 BE) || folder name -> empty
//   tokens      SHA-256 of an API token (hex) -> login name (added within format 1; created on open)
//   member      user id (u32 BE) || archive seq (u64 BE) || kind (0 INBOX or named folder, 1 Sent) ->
//               empty: the message was placed for this user once (so following the archive again, or a
//               backfill, never places it twice, and an expunged message stays expunged)
//
// Membership (place_record, the follower): an inbound message goes to the INBOX of every user whose
// address is an envelope recipient (Bcc included); an outbound one (from the primary, or by
// submission) to its envelope sender's Sent folder and to the INBOX of internal recipients; an
// imported one to the users its envelope names (`import --owner`) or, without one, by its header
// fields (From: to Sent, To/Cc/Delivered-To/X-Original-To: to INBOX); an IMAP APPEND (connector
// "imap") to the folder its source names. Probes, and messages quarantined (infected, unscannable
// under a holding policy) never appear. Tests: Mailbox.* in tests/mailbox_test.cc.
//
// Isolation: every message operation names the user and the folder, and the store checks, inside
// its transaction, that the folder belongs to that user (Mailbox.AnotherUsersFolderIsNeverReached).
//
// Thread safety: const methods run concurrently with each other and with one writer; writes are
// serialised by LMDB (across processes too: the CLI changes users beside a running server).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/archive.h"
#include "engine/users.h"

typedef struct MDB_env MDB_env;

namespace mailark {

// System flags, as a bit set. \Recent is not kept (RFC 9051 dropped it; rev1 sessions see none).
enum MessageFlag : std::uint32_t {
  kMsgSeen = 1u << 0,
  kMsgAnswered = 1u << 1,
  kMsgFlagged = 1u << 2,
  kMsgDeleted = 1u << 3,
  kMsgDraft = 1u << 4,
};

struct Folder {
  std::uint32_t id = 0;
  std::uint32_t user_id = 0;
  std::string name;  // "INBOX", or a path with '/' between levels ("Projects/2026")
  std::uint32_t uidvalidity = 0;
  std::uint32_t uidnext = 1;
  std::uint64_t highest_modseq = 1;
  std::string special_use;  // "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or empty
  // IMAP4rev1's \Recent: messages from this UID on have not been seen by any session that selected
  // the folder read-write (claim_recent).
  std::uint32_t first_recent_uid = 1;
};

struct FolderCounts {
  std::uint32_t messages = 0, unseen = 0, deleted = 0;
  std::uint64_t size = 0;  // sum of the messages' sizes (STATUS SIZE)
};

struct MailEntry {
  std::uint32_t uid = 0;
  std::uint64_t seq = 0;  // the archive record
  std::uint64_t modseq = 0;
  std::uint32_t flags = 0;
  std::vector<std::string> keywords;  // as the client wrote them, unique case-insensitively
};

enum class FlagMode { kReplace, kAdd, kRemove };
struct FlagChange {
  FlagMode mode = FlagMode::kAdd;
  std::uint32_t flags = 0;
  std::vector<std::string> keywords;
  std::optional<std::uint64_t> unchanged_since;  // CONDSTORE: entries modified after it are left
};
struct FlagOutcome {
  std::vector<MailEntry> changed;              // as written
  std::vector<std::uint32_t> failed_modified;  // UIDs refused by unchanged_since
  std::uint64_t highest_modseq = 0;
};

struct CopyOutcome {
  std::uint32_t uidvalidity = 0;  // of the destination
  std::vector<std::pair<std::uint32_t, std::uint32_t>> uids;  // source UID -> destination UID
};

struct ExpungeOutcome {
  std::vector<std::uint32_t> uids;  // removed, ascending
  std::uint64_t highest_modseq = 0;
};

struct FollowStats {
  std::uint64_t records = 0;  // archive records looked at
  std::uint64_t placed = 0;   // folder entries added
  std::uint64_t followed = 0;  // the last archive record considered
};

// Limits that keep one user from growing the store without bound (tests: Mailbox.FolderLimits).
inline constexpr std::size_t kMaxFolderNameBytes = 255;
inline constexpr std::size_t kMaxFolderDepth = 16;
inline constexpr std::size_t kMaxFoldersPerUser = 1000;
inline constexpr std::size_t kMaxKeywordsPerMessage = 50;
inline constexpr std::size_t kMaxKeywordBytes = 100;

// The default folders of a new user, with their special use (RFC 6154).
struct DefaultFolder {
  const char* name;
  const char* special_use;
};
inline constexpr DefaultFolder kDefaultFolders[] = {
    {"INBOX", ""}, {"Sent", "\\Sent"}, {"Drafts", "\\Drafts"}, {"Trash", "\\Trash"}, {"Junk", "\\Junk"}};

// Checks a folder name (UTF-8 or modified UTF-7 as the client sent it): 1 to 255 bytes, levels
// separated by '/', no empty level, no "." or ".." level, no wildcard (* %), no control character,
// at most 16 levels. "inbox" in any case is INBOX. Returns the canonical name. Errors: kInvalidArgument.
Result<std::string> normalize_folder_name(std::string_view name);

class MailboxStore {
 public:
  // Opens or creates the store in `dir` (DATA/mailbox). read_only opens an existing one only
  // (kNotFound when there is none).
  static Result<std::unique_ptr<MailboxStore>> open(const std::string& dir, bool read_only);
  ~MailboxStore();
  MailboxStore(const MailboxStore&) = delete;
  MailboxStore& operator=(const MailboxStore&) = delete;

  // ---- users ----
  // Adds a user (name and aliases normalised; id and created_at assigned) with the default folders.
  // Errors: kInvalidArgument when an address already belongs to someone.
  Result<User> add_user(User user);
  // By login name or any address, case-insensitive. kNotFound.
  Result<User> find_user(std::string_view name_or_address) const;
  // The other spelling of an address whose domain is an IDN ("ana@bücher.example" and
  // "ana@xn--bcher-kva.example"), or "" when it has none: an address not found as it is written is
  // looked up so too (mail for a user comes in the A-label form from senders without SMTPUTF8,
  // whichever form the user was added with). The server sets it (libidn2, api/dns.h
  // other_address_form), which this layer does not load; unset, addresses match as written.
  // Set before the store is shared. Test: test_serve.py
  // test_a_user_of_an_internationalised_domain_gets_mail_in_either_form.
  void set_other_address_form(std::function<std::string(std::string_view address)> fn) { other_form_ = std::move(fn); }
  Result<std::vector<User>> users() const;
  // The user holding the API token with this hash (api_token_hash), by the `tokens` table, which
  // update_user keeps in step with the users' records. kNotFound.
  Result<User> find_user_by_token(std::string_view token_hash) const;
  // Reads, changes and writes a user in one transaction, keeping the address table in step (new
  // aliases must be free; the id and name cannot change).
  Result<User> update_user(std::string_view name_or_address, const std::function<Status(User&)>& fn);

  // ---- folders ----
  Result<std::vector<Folder>> folders(std::uint32_t user_id) const;
  Result<Folder> folder(std::uint32_t user_id, std::string_view name) const;  // kNotFound
  Result<FolderCounts> counts(std::uint32_t user_id, std::uint32_t folder_id) const;
  // Errors: kInvalidArgument (bad name, exists, too many folders).
  Result<Folder> create_folder(std::uint32_t user_id, std::string_view name, std::string_view special_use = {});
  // Removes the folder and its entries (never INBOX; children stay). kNotFound.
  Status delete_folder(std::uint32_t user_id, std::string_view name);
  // Renames a folder and its children; renaming INBOX moves its messages to the new folder and
  // leaves INBOX empty (RFC 9051 6.3.6).
  Status rename_folder(std::uint32_t user_id, std::string_view from, std::string_view to);
  // Subscriptions (table `subscriptions`) are names, not folders: a subscription outlives its folder
  // (RFC 9051 6.3.7), and moves with a renamed folder. Subscribing needs the folder to exist.
  Status set_subscribed(std::uint32_t user_id, std::string_view name, bool subscribed);
  Result<std::vector<std::string>> subscriptions(std::uint32_t user_id) const;

  // ---- messages ----
  // The entries of a folder in UID order. kNotFound when the folder is not the user's.
  Result<std::vector<MailEntry>> entries(std::uint32_t user_id, std::uint32_t folder_id) const;
  // One page of a folder's entries, newest (highest UID) first: `limit` entries after skipping
  // `offset`. Reads only what it returns and skips (a reverse cursor). kNotFound as entries().
  Result<std::vector<MailEntry>> entries_page(std::uint32_t user_id, std::uint32_t folder_id, std::size_t offset,
                                              std::size_t limit) const;
  // The folder record as of now (for a session's poll: uidnext and highest_modseq tell what changed).
  Result<Folder> folder_by_id(std::uint32_t user_id, std::uint32_t folder_id) const;
  Result<FlagOutcome> change_flags(std::uint32_t user_id, std::uint32_t folder_id, const std::vector<std::uint32_t>& uids,
                                   const FlagChange& change);
  // A client that files its own copy of mail it sent (IMAP APPEND to the Sent folder, as Thunderbird,
  // Apple Mail, Outlook and K-9 do after each send) replaces the copy mailark filed there when the
  // mail went out: an entry among the folder's newest kSentCopyWindow, its size within
  // kSentCopySizeSlack of the kept one's, whose archive record is
  // outbound (a submission, or the primary's outbound mail) and holds the same Message-ID and
  // Subject as `kept_uid`'s is removed (sessions see it expunged), its flags and keywords added to the kept
  // entry's. The client's copy is the one kept: it is what the client shows and syncs, and it keeps
  // the Bcc field a submitted message no longer has. Both records stay in the archive. Returns the
  // UIDs removed (test: Mailbox.AClientsOwnSentCopyReplacesTheSubmittedOne).
  static constexpr std::size_t kSentCopyWindow = 64;
  static constexpr std::uint64_t kSentCopySizeSlack = 16384;  // bytes the two copies' sizes may differ by
  Result<std::vector<std::uint32_t>> replace_sent_copies(std::uint32_t user_id, std::uint32_t folder_id,
                                                         std::uint32_t kept_uid, const Archive& archive);
  // Removes entries flagged \Deleted (all of them, or those among `only`).
  Result<ExpungeOutcome> expunge(std::uint32_t user_id, std::uint32_t folder_id,
                                 const std::optional<std::vector<std::uint32_t>>& only);
  // Retention: removes every entry whose archive record expired, in one transaction (each folder's
  // HIGHESTMODSEQ moves on, so IMAP sessions see them expunged). Returns the entries removed.
  Result<std::uint64_t> forget_expired(const std::function<bool(std::uint64_t seq)>& expired);
  // Copies (or moves: the source entries removed in the same transaction) entries to another folder
  // of the same user, new UIDs in the source's order; flags and keywords go along.
  Result<CopyOutcome> copy(std::uint32_t user_id, std::uint32_t from_folder, const std::vector<std::uint32_t>& uids,
                           std::uint32_t to_folder, bool move);
  // \Recent (RFC 3501): returns the UIDs from which messages are recent for the caller, [first, uidnext),
  // and moves the folder's mark to uidnext, so no other session sees them as recent.
  Result<std::pair<std::uint32_t, std::uint32_t>> claim_recent(std::uint32_t user_id, std::uint32_t folder_id);
  // The entry for archive record `seq` in a folder, newest first (APPEND's UID after following).
  Result<std::optional<MailEntry>> find_seq(std::uint32_t user_id, std::uint32_t folder_id, std::uint64_t seq) const;

  // ---- following the archive ----
  // Places archive records newer than followed() (at most max_records in one transaction) in their
  // users' folders by the membership rules above. Repeatable: a record is placed once per user.
  Result<FollowStats> follow(const Archive& archive, std::size_t max_records = 2000);
  // Places every archived message of one user (a user added after their mail arrived), up to
  // followed(). Returns the entries placed.
  Result<std::uint64_t> backfill(const Archive& archive, std::uint32_t user_id,
                                 const std::function<void(std::uint64_t, std::uint64_t)>& progress = nullptr);
  std::uint64_t followed() const;
  // Places a message an administrator has just released from quarantine (Archive::quarantine_decide)
  // in the folders it would have gone to had it not been held, whatever its route: the follower
  // passed it by while it was held. Returns the entries placed, or nullopt for a record the follower
  // has not reached yet: it places it when it does (the release is already committed).
  // Tests: Mailbox.AReleasedMessageReachesTheMailbox, Mailbox.AReleaseRacingTheFollowerIsPlacedOnce.
  Result<std::optional<std::uint64_t>> place_released(const Archive& archive, std::uint64_t seq);

  // Called after each committed write with the ids of the users whose folders changed (in this
  // process; sessions of other processes poll). Set once, before the store is shared.
  void set_observer(std::function<void(const std::vector<std::uint32_t>&)> fn) { observer_ = std::move(fn); }

  const std::string& dir() const { return dir_; }

 private:
  MailboxStore() = default;
  struct Tx;
 public:
  struct Target;  // where the follower places one record (mailbox.cc)
 private:
  Status write(const std::function<Status(Tx&)>& fn);
  Status read(const std::function<Status(Tx&)>& fn) const;

  Result<bool> place_target(Tx& tx, std::uint64_t seq, const Target& t);

  std::string dir_;
  bool read_only_ = false;
  MDB_env* env_ = nullptr;
  unsigned meta_ = 0, users_ = 0, addresses_ = 0, folders_ = 0, folder_ids_ = 0, messages_ = 0, member_ = 0,
           subscriptions_ = 0, tokens_ = 0;
  bool has_tokens_ = true;
  std::function<void(const std::vector<std::uint32_t>&)> observer_;
  std::mutex follow_mu_;  // one follower at a time in this process
  std::function<std::string(std::string_view)> other_form_;  // set_other_address_form
};

}  // namespace mailark

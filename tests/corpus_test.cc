// The whole real-mail corpus through the real import path: every file accounted for, and searches for
// facts looked up in the corpus by hand (grep and Python's email module) return exactly those messages.
#include <gtest/gtest.h>

#include <functional>

#include <filesystem>
#include <map>
#include <set>

#include "engine/engine.h"
#include "engine/index_fields.h"
#include "engine/ingest.h"
#include "engine/message.h"
#include "engine/sources.h"
#include "engine/verify.h"
#include "indexer/index.h"
#include "indexer/schema.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

namespace fs = std::filesystem;

struct ImportReport {
  std::map<std::string, int> archived;  // origin file -> messages archived (or duplicates)
  std::map<std::string, std::string> errors;
  std::set<std::string> skipped;
  int infected = 0, malformed = 0, unscanned = 0, duplicates = 0;
};

class CorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::corpus_dir().empty()) return;
    dir_ = new test::ScratchDir();
    EngineOptions o;
    o.data_dir = dir_->path();
    o.signature_dirs = {test::signature_dir()};
    engine_ = Engine::open(o).value().release();
    report_ = new ImportReport();
    run_import({test::corpus_dir()});
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete report_;
    delete dir_;
    engine_ = nullptr;
  }

  // Every archived record with its stored bytes, in order, with "record N SOURCE" to name it; `fn`
  // returns false to stop. A record whose bytes do not read fails the test.
  static void for_each_message(
      const std::function<bool(const std::string& raw, const std::string& at)>& fn) {
    const Archive& a = engine_->archive();
    ASSERT_TRUE(a.scan(1, [&](const ArchiveRecord& r, std::string_view) {
                   auto raw = a.raw(r);
                   EXPECT_TRUE(raw.ok());
                   if (!raw) return true;
                   return fn(*raw, "record " + std::to_string(r.seq) + " " + r.envelope.source);
                 },
                 [](std::uint64_t, const Error&) { return true; })
                    .ok());
  }

  // The file an origin names: "PATH#n" (mbox, PST), "PATH#item 0x2044 (Inbox)" (PST), or the path.
  static std::string file_of(const std::string& origin) {
    std::size_t hash = origin.find('#');
    std::error_code ec;
    return hash != std::string::npos && fs::is_regular_file(origin.substr(0, hash), ec) ? origin.substr(0, hash)
                                                                                        : origin;
  }

  static void run_import(const std::vector<std::string>& paths) {
    Engine& e = *engine_;
    const scanner::Scanner* s = e.scanner().value();
    Ingest in(e.archive(), *e.index_writer().value(), s, e.options().limits, IngestOptions{},
              [&](const IngestResult& r) {
                switch (r.outcome) {
                  case IngestOutcome::kArchived:
                  case IngestOutcome::kDuplicate:
                    report_->archived[file_of(r.origin)]++;
                    if (r.outcome == IngestOutcome::kDuplicate) report_->duplicates++;
                    if (r.verdict == scanner::VerdictKind::kInfected) report_->infected++;
                    if (r.verdict == scanner::VerdictKind::kUnscanned) report_->unscanned++;
                    if (r.malformed) report_->malformed++;
                    break;
                  default:
                    report_->errors[file_of(r.origin)] = r.reason;
                }
              });
    SourceCallbacks cb;
    cb.on_message = [&](SourceMessage&& m) {
      IngestItem item;
      item.origin = m.origin;
      item.raw = std::move(m.raw);
      item.envelope.source = m.origin;
      item.envelope.received_at = m.received_at;
      in.submit(std::move(item));
    };
    cb.on_error = [&](const std::string& origin, const std::string& reason) {
      report_->errors[file_of(origin)] = reason;
    };
    cb.on_skipped = [&](const std::string& origin, const std::string&) { report_->skipped.insert(file_of(origin)); };
    ASSERT_TRUE(walk_sources(paths, e.options().limits, cb).ok());
    ASSERT_TRUE(in.finish().ok());
  }

  // The corpus-relative paths ("enron/maildir/lay-k/inbox/187") of the messages a query finds.
  static std::set<std::string> sources(const std::string& query) {
    auto res = engine_->search(query, indexer::SearchOptions{0, 100000});
    EXPECT_TRUE(res.ok()) << query << ": " << (res.ok() ? "" : res.error().to_string());
    std::set<std::string> out;
    if (!res.ok()) return out;
    EXPECT_EQ(res->total, res->hits.size());
    for (const auto& h : res->hits) {
      auto rec = engine_->archive().record(h.id).value();
      out.insert(fs::relative(rec.envelope.source, test::corpus_dir()).string());
    }
    return out;
  }

  static std::set<std::string> enron(std::initializer_list<const char*> paths) {
    std::set<std::string> s;
    for (const char* p : paths) s.insert(std::string("enron/maildir/") + p);
    return s;
  }

  void SetUp() override { REQUIRE_CORPUS(); }

  static test::ScratchDir* dir_;
  static Engine* engine_;
  static ImportReport* report_;
};

test::ScratchDir* CorpusTest::dir_ = nullptr;
Engine* CorpusTest::engine_ = nullptr;
ImportReport* CorpusTest::report_ = nullptr;

TEST_F(CorpusTest, EveryFileIsAccountedFor) {
  std::size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(test::corpus_dir())) {
    if (!e.is_regular_file()) continue;
    std::string p = e.path().string();
    ++files;
    bool accounted = report_->archived.count(p) || report_->errors.count(p) || report_->skipped.count(p);
    EXPECT_TRUE(accounted) << p << " was neither archived nor reported";
  }
  EXPECT_GT(files, 25000u);
  for (const auto& [path, reason] : report_->errors) EXPECT_FALSE(reason.empty()) << path;
  std::cout << "files " << files << ", archived from " << report_->archived.size() << " files, errors "
            << report_->errors.size() << ", infected " << report_->infected << ", malformed "
            << report_->malformed << ", unscanned " << report_->unscanned << ", duplicates "
            << report_->duplicates << "\n";
}

TEST_F(CorpusTest, EveryEnronMessageIsArchivedAndClean) {
  int enron_files = 0;
  for (const auto& [path, n] : report_->archived)
    if (path.find("/enron/") != std::string::npos) enron_files += n;
  EXPECT_EQ(enron_files, 21903);
  for (const auto& [path, reason] : report_->errors)
    EXPECT_EQ(path.find("/enron/"), std::string::npos) << path << ": " << reason;
  auto res = engine_->search("direction:import NOT verdict:clean", indexer::SearchOptions{0, 100000});
  ASSERT_TRUE(res.ok()) << res.error().to_string();
  for (const auto& h : res->hits) {
    auto rec = engine_->archive().record(h.id).value();
    EXPECT_EQ(rec.envelope.source.find("/enron/"), std::string::npos)
        << rec.envelope.source << " is " << h.verdict;
  }
}

// Every PST of the corpus imports through libpst (engine/pst.h), or says precisely why not: two hold
// no mail (contacts, an appointment, a distribution list, a second message store), none is an error.
TEST_F(CorpusTest, PstFilesImportOrSayWhy) {
  int messages = 0, files = 0;
  for (const auto& [path, n] : report_->archived)
    if (path.find("/pst/") != std::string::npos) {
      ++files;
      messages += n;
    }
  for (const auto& [path, reason] : report_->errors)
    EXPECT_EQ(path.find("/pst/"), std::string::npos) << path << ": " << reason;
  EXPECT_EQ(files, 8);
  EXPECT_EQ(messages, 9);
  EXPECT_TRUE(report_->skipped.count(test::corpus_dir() + "/pst/java-libpst/dist-list.pst"));
  EXPECT_TRUE(report_->skipped.count(test::corpus_dir() + "/pst/java-libpst/passworded.pst"));
}

TEST_F(CorpusTest, SubjectSearchFindsExactlyTheGolfMessages) {
  EXPECT_EQ(sources("subject:golf"),
            enron({"dasovich-j/inbox/1630", "dasovich-j/inbox/1677", "dasovich-j/inbox/1682",
                   "dasovich-j/inbox/500", "dasovich-j/inbox/641", "geaccone-t/inbox/28", "hodge-j/inbox/24",
                   "parks-j/inbox/131", "parks-j/inbox/149", "parks-j/inbox/43", "parks-j/inbox/45",
                   "parks-j/inbox/46", "parks-j/inbox/47", "parks-j/inbox/504", "parks-j/inbox/506",
                   "parks-j/inbox/528", "skilling-j/inbox/1019", "skilling-j/inbox/1137",
                   "skilling-j/inbox/1153"}));
}

TEST_F(CorpusTest, FromAddressFindsSherronWatkins) {
  EXPECT_EQ(sources("from:sherron.watkins@enron.com"),
            enron({"buy-r/inbox/1022", "buy-r/inbox/1025", "buy-r/inbox/616", "buy-r/inbox/628",
                   "haedicke-m/inbox/444"}));
}

TEST_F(CorpusTest, BodyWordFindsTheBarbecueMessages) {
  // Seven Enron messages and one SpamAssassin ham message (a one-message mbox, hence "#1").
  auto expected = enron({"dasovich-j/inbox/199", "keavey-p/inbox/173", "keavey-p/inbox/18",
                         "keavey-p/inbox/333", "lay-k/inbox/187", "lay-k/inbox/198", "may-l/inbox/560"});
  expected.insert("spamassassin/easy_ham/01763.33f1ae2bd826fe0fcee7fa711e6658a0#1");
  EXPECT_EQ(sources("barbecue"), expected);
}

TEST_F(CorpusTest, PhraseFindsTheOnePipelineRupture) {
  EXPECT_EQ(sources("\"pipeline rupture\""), enron({"buy-r/inbox/136"}));
}

TEST_F(CorpusTest, PhraseAcrossALineBreakStillMatches) {
  // 49 Enron messages hold "power crisis", some with the two words on different lines.
  auto found = sources("\"power crisis\"");
  EXPECT_EQ(found.size(), 49u);
  EXPECT_TRUE(found.count("enron/maildir/beck-s/inbox/748"));
}

TEST_F(CorpusTest, MessageIdFindsItsMessage) {
  EXPECT_EQ(sources("id:24344747.1075840382822.JavaMail.evans@thyme"), enron({"buy-r/inbox/136"}));
}

TEST_F(CorpusTest, DateRangeNarrowsAFieldSearch) {
  // buy-r/inbox/136 is dated Thu, 10 Jan 2002.
  EXPECT_EQ(sources("\"pipeline rupture\" date:2002-01-10..2002-01-11"), enron({"buy-r/inbox/136"}));
  EXPECT_TRUE(sources("\"pipeline rupture\" date:2001").empty());
}

// Mail in Chinese and Korean with raw 8-bit subjects (no encoded words, the charset named only in
// Content-Type): the subjects read in that charset, and words inside a run of letters are found.
TEST_F(CorpusTest, ChineseAndKoreanSubjectsReadAndFound) {
  EXPECT_EQ(sources("全新原装"), std::set<std::string>{"mime-edge/spamassassin-t/nice/cjk/gb2312.1"});
  EXPECT_TRUE(sources("subject:자격증").count("spamassassin/spam/00035.7ce3307b56dd90453027a6630179282e"));
  auto res = engine_->search("送货上门", indexer::SearchOptions{0, 10});
  ASSERT_TRUE(res.ok());
  ASSERT_EQ(res->hits.size(), 1u);
  EXPECT_EQ(res->hits[0].subject.rfind("全新原装进口，送货上门", 0), 0u) << res->hits[0].subject;
}

// Japanese and Chinese mail writes Latin letters and digits full-width ("６月２６日", "ＤＶＤ光驱"):
// found typed in ASCII, as most keyboards give them (words_form, index reading 3).
TEST_F(CorpusTest, FullWidthLettersAndDigitsFoundTypedInAscii) {
  EXPECT_TRUE(sources("dvd").count("mime-edge/spamassassin-t/nice/cjk/gb2312.1"));
  EXPECT_TRUE(sources("\"mp3\"").count("mime-edge/spamassassin-t/nice/cjk/gb2312.1"));
  EXPECT_EQ(sources("6月26日"), std::set<std::string>{"spamassassin/hard_ham/00042.5b7f2a0e87c853e8c8e13d556c1320d2"});
  EXPECT_EQ(sources("６月２６日"), sources("6月26日")) << "typed full-width too";
}

TEST_F(CorpusTest, SpamAssassinSpamIsArchivedNotDropped) {
  int spam = 0;
  for (const auto& [path, n] : report_->archived)
    if (path.find("/spamassassin/spam/") != std::string::npos) spam += n;
  EXPECT_EQ(spam, 500);
}

TEST_F(CorpusTest, ReimportingTheCorpusAddsNothing) {
  std::uint64_t before = engine_->archive().head().seq;
  auto saved = *report_;
  *report_ = ImportReport{};
  run_import({test::corpus_dir() + "/enron/maildir/lay-k", test::corpus_dir() + "/mbox"});
  EXPECT_EQ(engine_->archive().head().seq, before);
  EXPECT_GT(report_->duplicates, 1500);
  *report_ = saved;
}

TEST_F(CorpusTest, HeaderOnlyParseGivesTheSameHeaderFields) {
  // Every archived message of the corpus (Enron, SpamAssassin, the MIME edge cases): what a phrase
  // check on a header field reads (parse_message headers_only) is what the index was built from.
  const Limits limits = engine_->options().limits;
  std::size_t checked = 0;
  auto names = [](const std::vector<Address>& v) {
    std::vector<std::string> out;
    for (const auto& x : v) out.push_back(x.name + "<" + x.addr + ">");
    return out;
  };
  for_each_message([&](const std::string& raw, const std::string& at) {
    ParsedMessage whole = parse_message_or_flag(raw, limits);
    ParsedMessage head = parse_message_or_flag(raw, limits, /*headers_only=*/true);
    EXPECT_EQ(head.message_id, whole.message_id) << at;
    EXPECT_EQ(head.subject, whole.subject) << at;
    EXPECT_EQ(head.date, whole.date) << at;
    EXPECT_EQ(names(head.from), names(whole.from)) << at;
    EXPECT_EQ(names(head.to), names(whole.to)) << at;
    EXPECT_EQ(names(head.cc), names(whole.cc)) << at;
    EXPECT_EQ(names(head.bcc), names(whole.bcc)) << at;
    EXPECT_TRUE(head.body_text.empty()) << at;
    ++checked;
    return !HasFailure();
  });
  EXPECT_GT(checked, 20000u);
}

TEST_F(CorpusTest, TextPartsDecodedOnceGiveTheSameText) {
  // Every archived message of the corpus, its charsets among them (SpamAssassin's koi8-r, gb2312,
  // iso-8859-x and windows-125x parts, the MIME edge cases' broken and unknown ones): the text a part
  // gives from its content decoded once is the text GMime's get_text gives by decoding it again, which
  // is what every index so far was built from.
  const Limits limits = engine_->options().limits;
  std::size_t checked = 0, with_charset = 0;
  for_each_message([&](const std::string& raw, const std::string& at) {
    ParsedMessage once = parse_message_or_flag(raw, limits);
    set_text_by_second_decode_for_test(true);
    ParsedMessage twice = parse_message_or_flag(raw, limits);
    set_text_by_second_decode_for_test(false);
    EXPECT_EQ(once.body_text, twice.body_text) << at;
    EXPECT_EQ(once.attachment_text, twice.attachment_text) << at;
    EXPECT_EQ(once.malformed, twice.malformed) << at;
    if (raw.find("charset=") != std::string::npos && raw.find("charset=\"us-ascii\"") == std::string::npos)
      ++with_charset;
    ++checked;
    return !HasFailure();
  });
  EXPECT_GT(checked, 20000u);
  EXPECT_GT(with_charset, 1000u) << "parts that name a charset other than us-ascii were compared";
}

TEST_F(CorpusTest, PlainTextMessagesReadWithoutGMimeGiveTheSameText) {
  // Every archived message of the corpus that parse_plain_text takes gives parse_message's subject and
  // body text, and nothing else a phrase could be checked against (no attachment, no attachment or
  // extracted text): a phrase check reads such a message without GMime (ArchiveFieldSource::load_text).
  const Limits limits = engine_->options().limits;
  std::size_t plain = 0, other = 0;
  for_each_message([&](const std::string& raw, const std::string& at) {
    auto fast = parse_plain_text(raw, limits);
    if (!fast) {
      ++other;
      return true;
    }
    ++plain;
    ParsedMessage full = parse_message_or_flag(raw, limits, false, /*extract_documents=*/true);
    EXPECT_EQ(fast->subject, full.subject) << at;
    EXPECT_EQ(fast->body_text, full.body_text) << at;
    EXPECT_EQ(full.attachment_text, "") << at;
    EXPECT_EQ(full.extracted_text, "") << at;
    EXPECT_FALSE(full.has_attachment()) << at;
    return true;
  });
  EXPECT_GT(plain, 15000u) << "most Enron messages are plain text";
  EXPECT_GT(other, 1000u) << "SpamAssassin's and the MIME edge cases' messages were left to GMime";
}

TEST_F(CorpusTest, KeptTextsAreWhatTheArchiveGives) {
  // Every corpus message whose index document keeps its texts (slot kSlotTexts) keeps exactly what a
  // phrase check would read from the archive (ArchiveFieldSource, GMime, attachment text extracted);
  // every one that keeps none is a plain message (read without GMime) or one whose texts pass the cap.
  const Limits limits = engine_->options().limits;
  ArchiveFieldSource archive_source(engine_->archive(), limits);
  Xapian::Database db(engine_->index_dir());
  std::size_t kept = 0, plain = 0, too_big = 0;
  const Archive& a = engine_->archive();
  ASSERT_TRUE(a.scan(1, [&](const ArchiveRecord& r, std::string_view) {
                 const std::string at = "record " + std::to_string(r.seq) + " " + r.envelope.source;
                 const std::string id_term = std::string(indexer::schema::kPrefixId) + std::to_string(r.seq);
                 Xapian::PostingIterator p = db.postlist_begin(id_term);
                 EXPECT_NE(p, db.postlist_end(id_term)) << at;
                 if (p == db.postlist_end(id_term)) return true;
                 const std::string value = db.get_document(*p).get_value(indexer::schema::kSlotTexts);
                 auto from_archive = archive_source.load(r.seq);
                 EXPECT_TRUE(from_archive) << at;
                 if (!from_archive) return true;
                 if (value.empty()) {
                   auto raw = a.raw(r);
                   EXPECT_TRUE(raw.ok()) << at;
                   if (raw.ok() && parse_plain_text(*raw, limits)) ++plain;
                   else if (indexer::encode_kept_texts(*from_archive).empty()) ++too_big;
                   else ADD_FAILURE() << at << ": needs GMime, small enough, yet nothing kept";
                   return true;
                 }
                 ++kept;
                 auto texts = indexer::decode_kept_texts(value);
                 EXPECT_TRUE(texts) << at;
                 if (!texts) return true;
                 EXPECT_EQ(texts->subject, from_archive->subject) << at;
                 EXPECT_EQ(texts->body, from_archive->body) << at;
                 EXPECT_EQ(texts->attachment_text, from_archive->attachment_text) << at;
                 EXPECT_EQ(texts->extracted_text, from_archive->extracted_text) << at;
                 EXPECT_EQ(texts->attachments.size(), from_archive->attachments.size()) << at;
                 for (std::size_t i = 0; i < std::min(texts->attachments.size(), from_archive->attachments.size()); ++i)
                   EXPECT_EQ(texts->attachments[i].name, from_archive->attachments[i].name) << at;
                 return true;
               },
               [](std::uint64_t, const Error&) { return true; })
                  .ok());
  EXPECT_GT(plain, 15000u) << "most Enron messages are plain: nothing kept";
  EXPECT_GT(kept, 1000u) << "SpamAssassin's and the MIME edge cases' messages keep their texts";
  std::printf("kept texts: %zu messages keep them, %zu plain, %zu past the cap\n", kept, plain, too_big);
}

TEST_F(CorpusTest, ArchiveVerifiesAfterTheImport) {
  EngineOptions o;
  o.data_dir = dir_->path();
  o.read_only = true;
  auto ro = Engine::open(o);
  ASSERT_TRUE(ro.ok());
  auto rep = verify_archive((*ro)->archive(), nullptr);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->intact) << rep->problem;
}

}  // namespace
}  // namespace mailark

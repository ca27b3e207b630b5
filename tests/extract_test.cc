// Attachment text (engine/extract.h): the mailark-extract worker reads PDFs; a worker that dies, hangs
// or speaks out of turn costs only that attachment its text; an indexed message is found by a word
// that is only inside its attached PDF.
#include "engine/extract.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "engine/engine.h"
#include "engine/ingest.h"
#include "engine/message.h"
#include "tests/test_util.h"

namespace mailark {
namespace {

// A one-page PDF whose page shows `text` (Helvetica), with a correct cross-reference table.
std::string make_pdf(const std::string& text) {
  const std::string stream = "BT /F1 18 Tf 72 700 Td (" + text + ") Tj ET";
  const std::vector<std::string> objects = {
      "<< /Type /Catalog /Pages 2 0 R >>",
      "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
      "<< /Length " + std::to_string(stream.size()) + " >>\nstream\n" + stream + "\nendstream",
      "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"};
  return test::pdf_from_objects(objects);
}

std::shared_ptr<TextExtractor> worker(const std::string& helper = MAILARK_EXTRACT_BIN, unsigned timeout_ms = 20000) {
  TextExtractor::Options o;
  o.helper = helper;
  o.timeout_ms = timeout_ms;
  return std::make_shared<TextExtractor>(o);
}

std::string script(const test::ScratchDir& dir, const std::string& name, const std::string& body) {
  const std::string path = dir / name;
  test::write_file(path, "#!/bin/sh\n" + body + "\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(Extract, DocumentKindsAreSniffedFromTheBytes) {
  EXPECT_EQ(document_kind(make_pdf("x")), DocKind::kPdf);
  EXPECT_EQ(document_kind(std::string("PK\x03\x04rest", 8)), DocKind::kZip);
  EXPECT_EQ(document_kind("just text, with a %PDF- far" + std::string(2000, ' ')), DocKind::kPdf)
      << "a PDF header within the first 1,024 bytes";
  EXPECT_EQ(document_kind(std::string(2000, ' ') + "%PDF-"), DocKind::kNone);
  EXPECT_EQ(document_kind("GIF89a"), DocKind::kNone);
  EXPECT_FALSE(parse_response_header("x\0\0\0\0", 100).ok());
  EXPECT_FALSE(parse_response_header(std::string("t\x7f\0\0\0", 5), 100).ok()) << "longer than any answer";
  EXPECT_FALSE(parse_response_header("t\0\0", 100).ok());
  auto h = parse_response_header(std::string("t\0\0\0\x05", 5), 100);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->ok);
  EXPECT_EQ(h->length, 5u);
}

TEST(Extract, TextComesFromTheWorker) {
  auto x = worker();
  auto text = x->extract(DocKind::kPdf, make_pdf("Quarterly zebrafinch figures"));
  ASSERT_TRUE(text.ok()) << text.error().to_string();
  EXPECT_NE(text->find("Quarterly zebrafinch figures"), std::string::npos) << *text;
  // Not a PDF poppler reads: a clear reason, and the same worker goes on.
  auto bad = x->extract(DocKind::kPdf, "%PDF-1.4\nnothing else");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kUnsupported);
  auto plain_zip = x->extract(DocKind::kZip, std::string("PK\x03\x04", 4) + std::string(100, '\0'));
  EXPECT_FALSE(plain_zip.ok());
  EXPECT_TRUE(x->extract(DocKind::kPdf, make_pdf("again")).ok());
  EXPECT_EQ(x->workers_started(), 1u) << "one worker served every request";
  // An idle worker that died meanwhile (killed, out of memory) costs nothing: the request goes again
  // to a new one.
  const auto idle = x->idle_pids_for_test();
  ASSERT_EQ(idle.size(), 1u);
  ::kill(idle[0], SIGKILL);
  ::usleep(100 * 1000);
  auto after = x->extract(DocKind::kPdf, make_pdf("after the kill"));
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_NE(after->find("after the kill"), std::string::npos);
  EXPECT_EQ(x->workers_started(), 2u);
}

TEST(Extract, AWorkerThatDiesOrHangsCostsOnlyThatAttachment) {
  test::ScratchDir dir;
  const std::string pdf = make_pdf("zebrafinch");
  // Dies on its first request (as a parser crash would).
  auto dies = worker(script(dir, "dies", "head -c 5 >/dev/null; kill -SEGV $$"));
  auto r = dies->extract(DocKind::kPdf, pdf);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kIo);
  EXPECT_FALSE(dies->extract(DocKind::kPdf, pdf).ok());
  EXPECT_EQ(dies->workers_started(), 2u) << "a dead worker is replaced, never reused";
  // Answers nothing: stopped at the timeout.
  auto hangs = worker(script(dir, "hangs", "exec sleep 60"), /*timeout_ms=*/300);
  r = hangs->extract(DocKind::kPdf, pdf);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("answered nothing"), std::string::npos) << r.error().context;
  // Speaks out of turn.
  auto babbles = worker(script(dir, "babbles", "head -c 5 >/dev/null; printf 'Xgarbage'; sleep 5"));
  r = babbles->extract(DocKind::kPdf, pdf);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().context.find("out of turn"), std::string::npos) << r.error().context;
  // A missing worker: no text, a reason.
  auto missing = worker(dir / "no-such-worker");
  EXPECT_FALSE(missing->extract(DocKind::kPdf, pdf).ok());

  // In a message: the attachment gets no text, the message parses, and says why.
  set_text_extractor(dies);
  auto m = parse_message(test::make_message("report", "see attached", "report.pdf", pdf), Limits{}, false, true);
  set_text_extractor(nullptr);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->extracted_text.empty());
  EXPECT_FALSE(m->malformed);
  ASSERT_FALSE(m->problems.empty());
  EXPECT_NE(m->problems.back().find("no text from attachment report.pdf"), std::string::npos) << m->problems.back();
}

// The worker gets its socket and nothing else: not the archive's files (LMDB opens them without
// O_CLOEXEC), nor any other descriptor of the process that started it.
TEST(Extract, TheWorkerHoldsNoDescriptorOfItsParent) {
  test::ScratchDir dir;
  const int leaked = ::open((dir / "archive-file").c_str(), O_CREAT | O_RDWR, 0600);  // no O_CLOEXEC
  ASSERT_GE(leaked, 3);
  // A worker that answers with the descriptors it has open above 2.
  auto x = worker(script(dir, "fds",
                         "exec python3 -c '\n"
                         "import os, sys\n"
                         "h = sys.stdin.buffer.read(5); sys.stdin.buffer.read(int.from_bytes(h[1:], \"big\"))\n"
                         "fds = [str(f) for f in range(3, 1024) if os.path.exists(f\"/proc/self/fd/{f}\")]\n"
                         "t = \" \".join(fds).encode()\n"
                         "sys.stdout.buffer.write(b\"t\" + len(t).to_bytes(4, \"big\") + t); sys.stdout.buffer.flush()\n"
                         "'"));
  auto r = x->extract(DocKind::kPdf, make_pdf("x"));
  ::close(leaked);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, "") << "open in the worker: " << *r;
}

// The worker's seccomp filter (tools/mailark_extract.cc install_sandbox): the worker itself tries,
// under the filter it runs with, what the filter refuses; and still reads a PDF under it (the tests
// above all run the filtered worker).
TEST(Extract, TheWorkerCannotReachTheNetworkStartProgramsOrWriteFiles) {
  const auto [out, ok] = test::run_command(std::string(MAILARK_EXTRACT_BIN) + " --check-sandbox");
  EXPECT_TRUE(ok) << out;
  for (const char* what : {"socket: refused", "socketpair: refused", "execve: refused", "open for writing: refused",
                           "openat O_RDWR: refused", "unlink: refused", "io_uring: refused", "open for reading: allowed"})
    EXPECT_NE(out.find(what), std::string::npos) << what << " in:\n" << out;
  auto r = worker()->extract(DocKind::kPdf, make_pdf("sandboxed words"));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_NE(r->find("sandboxed words"), std::string::npos) << *r;
}

TEST(Extract, AMessageIsFoundByAWordOnlyInItsPdf) {
  test::ScratchDir dir;
  set_text_extractor(worker());
  {
    EngineOptions o;
    o.data_dir = dir.path();
    o.signature_dirs = {test::signature_dir()};
    auto e = Engine::open(o).value();
    IngestOptions opts;
    opts.train_after = 0;
    Ingest in(e->archive(), *e->index_writer().value(), nullptr, e->options().limits, opts, nullptr);
    IngestItem a, b;
    a.raw = test::make_message("report", "see attached", "q3.pdf", make_pdf("Harbour zebrafinch tariffs"));
    b.raw = test::make_message("other", "nothing attached here");
    in.submit(std::move(a));
    in.submit(std::move(b));
    ASSERT_TRUE(in.finish().ok());
    indexer::SearchOptions so;
    so.exact_total = true;
    EXPECT_EQ(e->search("zebrafinch", so).value().total, 1u);
    EXPECT_EQ(e->search("\"zebrafinch tariffs\"", so).value().total, 1u) << "a phrase inside the PDF";
    EXPECT_EQ(e->search("\"tariffs zebrafinch\"", so).value().total, 0u);
    // The same after a rebuild of the index from the archive.
    ASSERT_TRUE(e->reindex(nullptr).ok());
    EXPECT_EQ(e->search("zebrafinch", so).value().total, 1u);
  }
  set_text_extractor(nullptr);
}

}  // namespace
}  // namespace mailark

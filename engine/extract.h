// Attachment text: the words of attached PDF, Office Open XML (docx, xlsx, pptx) and OpenDocument
// (odt, ods, odp) files, indexed (IndexFields::extracted_text, prefix XE) so that a word found only
// inside an attached document finds its message.
//
// The parsers (poppler for PDF, libzip and libxml2 for the zipped XML formats: engine/extract_formats.h)
// read hostile bytes on the SMTP path and are not ours to harden, so they never run in a mailark
// process: each request goes to a worker process, `mailark-extract` (tools/mailark_extract.cc, beside
// the mailark binaries), over a socket, one request at a time, framed (below). A worker that dies, writes
// what is not a frame, or answers nothing within the timeout is killed and replaced; the attachment
// simply gets no text, and the message is archived and indexed as before
// (tests/extract_test.cc Extract.AWorkerThatDiesOrHangsCostsOnlyThatAttachment). Workers have no core
// dumps and a bounded address space.
//
// Frames: request = kind (1 byte: 'p' PDF, 'z' a zip that may be an Office or OpenDocument file),
// length (u32 BE), bytes; response = status (1 byte: 't' text, 'e' why not), length (u32 BE), bytes.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/worker_pool.h"

namespace mailark {

enum class DocKind : char { kNone = 0, kPdf = 'p', kZip = 'z' };

// What an attachment's decoded bytes are, by their first bytes (never by the name a sender gave):
// "%PDF-" within the first 1,024 bytes, or a zip's local header "PK\3\4".
DocKind document_kind(std::string_view bytes);

// The parent's side of a response header (5 bytes; untrusted: the worker reads hostile files):
// the body's length when the header is well formed and the body at most max_text bytes long.
// Fuzzed: fuzz/extract_fuzz.cc.
struct ResponseHeader {
  bool ok = false;       // 't': the body is text; 'e': the body says why not
  std::uint32_t length = 0;
};
Result<ResponseHeader> parse_response_header(std::string_view header, std::size_t max_text);

class TextExtractor {
 public:
  struct Options {
    std::string helper;              // the worker's path (mailark-extract)
    unsigned timeout_ms = 20000;     // per request
    std::size_t max_input = 32u << 20;  // larger attachments are not sent (no text)
    std::size_t max_text = 4u << 20;    // a longer answer is a bad answer
    unsigned max_workers = 4;           // requests beyond it wait for a worker
  };
  explicit TextExtractor(Options options);
  ~TextExtractor();  // kills the workers
  TextExtractor(const TextExtractor&) = delete;
  TextExtractor& operator=(const TextExtractor&) = delete;

  // The text of one document (UTF-8, possibly empty). Errors: kUnsupported (none of the formats, an
  // encrypted file), kLimit (too large), kIo (the worker failed: died, hung, spoke out of turn).
  // Thread safe: concurrent calls use different workers.
  Result<std::string> extract(DocKind kind, std::string_view bytes);

  // Workers started so far (tests: a dead one is replaced, not reused).
  std::uint64_t workers_started() const;
  // Tests only: the idle workers' process ids.
  std::vector<pid_t> idle_pids_for_test() const;

 private:
  struct Worker {
    pid_t pid = -1;
    int fd = -1;
  };
  Result<Worker> spawn();
  static void discard(Worker& w);
  Options options_;
  WorkerPool<Worker> workers_;
  std::atomic<std::uint64_t> started_{0};
};

// The extractor message parsing uses when asked to (parse_message's extract_documents); null: none
// (attachments get no text). Set once, at start-up, by the programs that index, or made on first use
// by the factory they set (tools/main.cc: commands that never parse a message never look for the
// worker).
void set_text_extractor(std::shared_ptr<TextExtractor> extractor);
void set_text_extractor_factory(std::function<std::shared_ptr<TextExtractor>()> make);
std::shared_ptr<TextExtractor> text_extractor();

}  // namespace mailark

// mailark: the command-line interface. One file per subcommand (cmd_*.cc).

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/malloc_tuning.h"
#include "engine/extract.h"
#include "indexer/index.h"

#include "tools/cli.h"
#include "tools/terminal_safe.h"
#include "tools/termination.h"

namespace {

// What the commands write for people goes through the terminal-safe filter (tools/terminal_safe.h),
// put back before std::cout is flushed for the last time.
struct SafeStdout {
  mailark::cli::TerminalSafeBuf buf{std::cout.rdbuf()};
  std::streambuf* original = std::cout.rdbuf(&buf);
  ~SafeStdout() {
    std::cout.flush();
    std::cout.rdbuf(original);
  }
};

}  // namespace

int main(int argc, char** argv) {
  mailark::cli::report_uncaught_errors();
  static SafeStdout safe_stdout;
  mailark::tune_malloc();
  using namespace mailark::cli;
  CLI::App app{"mailark: mail continuity and archive gateway"};
  app.require_subcommand(1);
  GlobalOptions g;
  const char* env = std::getenv("MAILARK_DATA");
  g.data_dir = env && *env ? env : "./mailark-data";
  app.add_option("--data", g.data_dir, "data folder (default ./mailark-data, or $MAILARK_DATA)");
  g.argv.assign(argv, argv + argc);
  // Attachment text (engine/extract.h): the worker beside this binary, looked for when a message is
  // first parsed and started on first use.
  mailark::set_text_extractor_factory([]() -> std::shared_ptr<mailark::TextExtractor> {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec || !std::filesystem::exists(self.parent_path() / "mailark-extract", ec)) return nullptr;
    mailark::TextExtractor::Options o;
    o.helper = (self.parent_path() / "mailark-extract").string();
    return std::make_shared<mailark::TextExtractor>(o);
  });
  Runner run;
  register_import(app, g, run);
  register_search(app, g, run);
  register_show(app, g, run);
  register_verify(app, g, run);
  register_stats(app, g, run);
  register_reindex(app, g, run);
  register_train_dictionary(app, g, run);
  register_serve(app, g, run);
  register_queue(app, g, run);
  register_quarantine(app, g, run);
  register_continuity(app, g, run);
  register_user(app, g, run);
  register_segments(app, g, run);
  register_checkpoint(app, g, run);
  register_export(app, g, run);
  register_case(app, g, run);
  register_retention(app, g, run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  // Commands answer with Result; an exception that still escapes (memory, threads, a library's own)
  // is said as such, with its exit code, rather than aborting with a core dump.
  try {
    return run ? run() : kExitUsage;
  } catch (...) {
    std::cerr << "mailark: internal error: " << mailark::indexer::describe_current_exception() << "\n";
    return kExitInternal;
  }
}

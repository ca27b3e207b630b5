#include "scanner/scanner.h"

#include <clamav.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <type_traits>

namespace mailark::scanner {
namespace {

// libclamav (and the XML, ICU, PCRE and archive libraries it pulls in) is loaded on first use rather
// than at process start: commands that never scan (search, show, stats) start in half the time.
struct ClamApi {
  decltype(&::cl_init) init = nullptr;
  decltype(&::cl_engine_new) engine_new = nullptr;
  decltype(&::cl_engine_set_num) engine_set_num = nullptr;
  decltype(&::cl_engine_set_str) engine_set_str = nullptr;
  decltype(&::cl_load) load = nullptr;
  decltype(&::cl_engine_compile) engine_compile = nullptr;
  decltype(&::cl_engine_free) engine_free = nullptr;
  decltype(&::cl_strerror) strerror = nullptr;
  decltype(&::cl_fmap_open_memory) fmap_open_memory = nullptr;
  decltype(&::cl_fmap_close) fmap_close = nullptr;
  decltype(&::cl_scanmap_callback) scanmap_callback = nullptr;
  std::string load_error;
};

const ClamApi& clam() {
  static ClamApi api = [] {
    ClamApi a;
    void* lib = ::dlopen(MAILARK_CLAMAV_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = ::dlerror();
      a.load_error =
          std::string("cannot load ") + MAILARK_CLAMAV_SONAME + ": " + (err ? err : "unknown error");
      return a;
    }
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      if (!fn) {
        ok = false;
        a.load_error = std::string(MAILARK_CLAMAV_SONAME) + " lacks " + name;
      }
    };
    sym(a.init, "cl_init");
    sym(a.engine_new, "cl_engine_new");
    sym(a.engine_set_num, "cl_engine_set_num");
    sym(a.engine_set_str, "cl_engine_set_str");
    sym(a.load, "cl_load");
    sym(a.engine_compile, "cl_engine_compile");
    sym(a.engine_free, "cl_engine_free");
    sym(a.strerror, "cl_strerror");
    sym(a.fmap_open_memory, "cl_fmap_open_memory");
    sym(a.fmap_close, "cl_fmap_close");
    sym(a.scanmap_callback, "cl_scanmap_callback");
    if (!ok) a.init = nullptr;
    return a;
  }();
  return api;
}

Error clam_error(const std::string& what, cl_error_t rc) {
  return make_error(ErrorCode::kInternal, what + ": " + clam().strerror(rc));
}

Status init_once() {
  if (!clam().init) {
    return make_error(ErrorCode::kNotFound, clam().load_error, "install libclamav12 (scripts/setup.sh does)");
  }
  static std::once_flag once;
  static cl_error_t rc = CL_SUCCESS;
  std::call_once(once, [] { rc = clam().init(CL_INIT_DEFAULT); });
  if (rc != CL_SUCCESS) return clam_error("cl_init", rc);
  return ok_status();
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

}  // namespace

const char* verdict_name(VerdictKind kind) {
  switch (kind) {
    case VerdictKind::kClean:
      return "clean";
    case VerdictKind::kInfected:
      return "infected";
    case VerdictKind::kUnscanned:
      return "unscanned";
  }
  return "unscanned";
}

Result<std::shared_ptr<const ScanEngine>> ScanEngine::load(const ScannerConfig& config) {
  MAILARK_TRY(init_once());
  std::shared_ptr<ScanEngine> self(new ScanEngine());
  self->engine_ = clam().engine_new();
  if (!self->engine_) return make_error(ErrorCode::kInternal, "cl_engine_new failed");

  cl_engine* e = self->engine_;
  auto set_num = [&](cl_engine_field f, long long v) -> Status {
    cl_error_t rc = clam().engine_set_num(e, f, v);
    if (rc != CL_SUCCESS) return clam_error("cl_engine_set_num", rc);
    return ok_status();
  };
  self->max_file_bytes_ = config.max_file_bytes;
  MAILARK_TRY(set_num(CL_ENGINE_MAX_SCANSIZE, static_cast<long long>(config.max_scan_bytes)));
  MAILARK_TRY(set_num(CL_ENGINE_MAX_FILESIZE, static_cast<long long>(config.max_file_bytes)));
  MAILARK_TRY(set_num(CL_ENGINE_MAX_RECURSION, config.max_recursion));
  MAILARK_TRY(set_num(CL_ENGINE_MAX_FILES, config.max_files));
  MAILARK_TRY(set_num(CL_ENGINE_MAX_SCANTIME, config.max_scan_ms));
  if (!config.tmp_dir.empty() && is_dir(config.tmp_dir) && ::access(config.tmp_dir.c_str(), W_OK) == 0) {
    cl_error_t rc = clam().engine_set_str(e, CL_ENGINE_TMPDIR, config.tmp_dir.c_str());
    if (rc != CL_SUCCESS) return clam_error("setting the temporary directory", rc);
  }

  for (const auto& dir : config.signature_dirs) {
    if (!is_dir(dir)) continue;
    unsigned sigs = 0;
    cl_error_t rc = clam().load(dir.c_str(), e, &sigs, CL_DB_STDOPT);
    if (rc != CL_SUCCESS) return clam_error("loading signatures from " + dir, rc);
    if (sigs == 0) continue;
    self->signatures_ += sigs;
    if (!self->description_.empty()) self->description_ += ", ";
    self->description_ += dir + " (" + std::to_string(sigs) + ")";
  }
  if (self->signatures_ == 0) {
    return make_error(ErrorCode::kNotFound, "no virus signatures found in the configured directories",
                      "install clamav-freshclam for /var/lib/clamav, or point the scanner at signatures/");
  }
  cl_error_t rc = clam().engine_compile(e);
  if (rc != CL_SUCCESS) return clam_error("compiling the signature engine", rc);
  return std::shared_ptr<const ScanEngine>(std::move(self));
}

ScanEngine::~ScanEngine() {
  if (engine_) clam().engine_free(engine_);
}

ScanVerdict ScanEngine::scan(std::string_view bytes, bool with_mail_parsing) const {
  ScanVerdict v;
  if (bytes.size() > max_file_bytes_) {
    v.reason = "message of " + std::to_string(bytes.size()) + " bytes exceeds the scanner's file size limit";
    return v;
  }
  cl_fmap_t* map = clam().fmap_open_memory(bytes.data(), bytes.size());
  if (!map) {
    v.reason = "libclamav could not map the message";
    return v;
  }
  cl_scan_options opts{};
  opts.general = CL_SCAN_GENERAL_HEURISTICS;
  opts.parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 | CL_SCAN_PARSE_PDF |
               CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_XMLDOCS |
               CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_ONENOTE;
  if (!with_mail_parsing) opts.parse &= ~static_cast<unsigned>(CL_SCAN_PARSE_MAIL);
  opts.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE;
  const char* virname = nullptr;
  unsigned long scanned = 0;
  cl_error_t rc = clam().scanmap_callback(map, "message.eml", &virname, &scanned, engine_, &opts, nullptr);
  clam().fmap_close(map);

  if (rc == CL_CLEAN) {
    v.kind = VerdictKind::kClean;
  } else if (rc == CL_VIRUS && !virname) {
    // libclamav 1.4 reports some limit hits (MaxFileSize) as a detection without a name.
    v.kind = VerdictKind::kUnscanned;
    v.reason = "libclamav stopped without a signature name (a scan limit was reached)";
  } else if (rc == CL_VIRUS) {
    std::string name = virname;
    // Heuristic alerts for limits and encryption mean "could not look inside": fail closed as unscanned.
    if (starts_with(name, "Heuristics.Limits.Exceeded")) {
      v.kind = VerdictKind::kUnscanned;
      v.reason = "scan limit exceeded (" + name + ")";
    } else if (starts_with(name, "Heuristics.Encrypted")) {
      v.kind = VerdictKind::kUnscanned;
      v.reason = "encrypted content cannot be scanned (" + name + ")";
    } else {
      v.kind = VerdictKind::kInfected;
      v.signatures.push_back(std::move(name));
    }
  } else {
    v.kind = VerdictKind::kUnscanned;
    v.reason = std::string("libclamav: ") + clam().strerror(rc);
  }
  return v;
}

Result<std::unique_ptr<Scanner>> Scanner::open(ScannerConfig config) {
  std::unique_ptr<Scanner> s(new Scanner(std::move(config)));
  MAILARK_TRY(s->reload());
  return s;
}

Status Scanner::reload() {
  auto fresh = ScanEngine::load(config_);  // built beside the engine in use
  if (!fresh) return fresh.error();
  std::lock_guard lock(mu_);
  engine_ = std::move(fresh).value();
  return ok_status();
}

std::shared_ptr<const ScanEngine> Scanner::engine() const {
  std::lock_guard lock(mu_);
  return engine_;
}

}  // namespace mailark::scanner

#include "scanner/scanner.h"

#include <clamav.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <unordered_set>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "common/file_util.h"
#include "scanner/logical_split.h"
#include "scanner/scan_host.h"

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
  decltype(&::cl_engine_set_clcb_sigload) set_clcb_sigload = nullptr;
  decltype(&::cl_engine_set_clcb_virus_found) set_clcb_virus_found = nullptr;
  decltype(&::cl_cvdunpack) cvdunpack = nullptr;
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
    sym(a.set_clcb_sigload, "cl_engine_set_clcb_sigload");
    sym(a.set_clcb_virus_found, "cl_engine_set_clcb_virus_found");
    sym(a.cvdunpack, "cl_cvdunpack");
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

// Whether a folder holds any file libclamav loads as a database (its CLI_DBEXT list). Debian's clamav
// packages create /var/lib/clamav empty until freshclam first runs, and libclamav refuses a folder
// without databases; such a folder is passed over like a missing one (Scanner.FolderWithoutDatabasesIsPassedOver).
bool holds_signatures(const std::string& dir) {
  if (!is_dir(dir)) return false;
  static const std::set<std::string> kinds = {
      ".db",  ".hdb", ".hdu", ".fp",  ".mdb", ".mdu", ".hsb", ".hsu", ".sfp", ".msb",  ".msu", ".ndb",
      ".ndu", ".ldb", ".ldu", ".sdb", ".zmd", ".rmd", ".pdb", ".gdb", ".wdb", ".cbc",  ".ftm", ".cfg",
      ".cvd", ".cld", ".cud", ".cdb", ".cat", ".crb", ".idb", ".ioc", ".yar", ".yara", ".pwdb", ".ign",
      ".ign2", ".imp", ".info"};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (kinds.count(e.path().extension().string()) && e.is_regular_file(ec)) return true;
  }
  return false;
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

// libclamav's mail and archive parsers write what they extract to temporary files, and when the
// folder is full they go on with truncated (empty) files and report the message clean: a silent fail
// open (seen with libclamav 1.4.6 on a full tmpfs). So mailark never lets its own scans fill the
// folder: each scan reserves its worst case (the message twice, decoded, plus max_scan_bytes of
// extracted content) against the folder's free space, minus what scans in flight have reserved, and
// does not start without it. A scan that ends with the folder nearly full (something else filled it)
// is a temporary error. Tests: Scanner.FullTemporaryFolderIsATemporaryErrorNeverClean, tests/e2e/test_failures.py test_full_scanner_folder_answers_451_never_clean.
std::atomic<std::uint64_t> g_reserved_temp_bytes{0};
constexpr std::uint64_t kTempFloorBytes = 1u << 20;

}  // namespace

const char* verdict_name(VerdictKind kind) {
  switch (kind) {
    case VerdictKind::kClean:
      return "clean";
    case VerdictKind::kInfected:
      return "infected";
    case VerdictKind::kUnscanned:
      return "unscanned";
    case VerdictKind::kUnscannable:
      return "unscannable";
    case VerdictKind::kTemporaryError:
      return "error";
  }
  return "unscanned";
}

const char* unscannable_name(Unscannable why) {
  switch (why) {
    case Unscannable::kEncrypted:
      return "encrypted";
    case Unscannable::kLimit:
      return "limit";
    case Unscannable::kParse:
      return "parse";
    case Unscannable::kNone:
      break;
  }
  return "";
}

namespace {

ScanVerdict unscannable(Unscannable why, const std::string& details) {
  ScanVerdict v;
  v.kind = VerdictKind::kUnscannable;
  v.why = why;
  v.reason = std::string(unscannable_name(why)) + ": " + details;
  return v;
}

ScanVerdict temporary_error(const std::string& details) {
  ScanVerdict v;
  v.kind = VerdictKind::kTemporaryError;
  v.reason = "scanner: " + details;
  return v;
}

// What a heuristic alert means: the scanner could not look inside (a limit, encryption, a
// decompression bomb) or it found something (every other alert counts as a detection).
ScanVerdict from_detection(std::string name) {
  if (starts_with(name, "Heuristics.Limits.Exceeded")) return unscannable(Unscannable::kLimit, "scan limit exceeded (" + name + ")");
  if (starts_with(name, "Heuristics.Encrypted")) {
    return unscannable(Unscannable::kEncrypted, "encrypted archive or document (" + name + ")");
  }
  if (starts_with(name, "Heuristics.Zip.OverlappingFiles")) {
    return unscannable(Unscannable::kLimit, "decompression bomb (" + name + ")");
  }
  ScanVerdict v;
  v.kind = VerdictKind::kInfected;
  v.signatures.push_back(std::move(name));
  return v;
}

// libclamav's errors: those about the content are unscannable, those about the scanner's own
// resources (files, memory, locks) are temporary.
ScanVerdict from_error(cl_error_t rc) {
  const std::string what = std::string("libclamav: ") + clam().strerror(rc);
  switch (rc) {
    case CL_ETIMEOUT:
    case CL_EMAXREC:
    case CL_EMAXSIZE:
    case CL_EMAXFILES:
      return unscannable(Unscannable::kLimit, what);
    case CL_EFORMAT:
    case CL_EPARSE:
    case CL_EUNPACK:
    case CL_EBYTECODE:
    case CL_ERROR:
      return unscannable(Unscannable::kParse, what);
    default:
      return temporary_error(what);
  }
}

}  // namespace

namespace {

constexpr const char* kPrefilterPrefix = "Mailark.Prefilter";

// Every name a scan reports (all of them with CL_SCAN_GENERAL_ALLMATCHES), collected per scan through
// the engine's virus-found callback and the scan's context.
struct Found {
  std::vector<std::string> names;
};

void on_found(int, const char* virname, void* context) {
  if (context && virname) static_cast<Found*>(context)->names.push_back(virname);
}

bool is_prefilter(const std::string& name) { return name.rfind(kPrefilterPrefix, 0) == 0; }

bool is_heuristic(const std::string& name) {
  return starts_with(name, "Heuristics.Limits.Exceeded") || starts_with(name, "Heuristics.Encrypted") ||
         starts_with(name, "Heuristics.Zip.OverlappingFiles");
}


// What the signature-load callbacks decide from: the logical signatures gated behind the prefilter.
struct GatedNames {
  std::unordered_set<std::string> names;
  bool logic_engine = false;  // false: the main engine (skip the gated ones); true: load only them
};

int sigload_filter(const char* type, const char* name, unsigned int, void* context) {
  const auto* g = static_cast<const GatedNames*>(context);
  const bool gated = std::strcmp(type, "ldb") == 0 && g->names.count(name) > 0;
  return g->logic_engine ? !gated : gated;  // non-zero skips the signature
}

// One .ldb line, and whether it came from an official (signed) container.
struct LdbLine {
  std::string text;
  bool official = false;
};

// Every .ldb line of the signature folders, those inside .cvd/.cld containers included (unpacked,
// with their signatures checked, into `scratch`); and the files that change how any detection is
// reported (ignore lists, false-positive hash lists, dynamic configuration), copied to `aux` so the
// logic engine applies them too.
Status read_logical_signatures(const std::vector<std::string>& dirs, const std::string& scratch, const std::string& aux,
                               std::vector<LdbLine>& lines) {
  namespace fs = std::filesystem;
  std::error_code ec;
  int unpacked = 0;
  auto read_ldb = [&](const fs::path& p, bool official) {
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line)) lines.push_back({std::move(line), official});
  };
  auto keep_aux = [&](const fs::path& p) {
    static const std::set<std::string> kinds = {".ign", ".ign2", ".fp", ".sfp", ".cfg"};
    if (kinds.count(p.extension().string())) {
      fs::copy_file(p, fs::path(aux) / (std::to_string(unpacked) + "-" + p.filename().string()),
                    fs::copy_options::overwrite_existing, ec);
    }
  };
  for (const auto& dir : dirs) {
    if (!holds_signatures(dir)) continue;
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const std::string ext = f.extension().string();
      if (ext == ".ldb") {
        read_ldb(f, false);
      } else if (ext == ".cvd" || ext == ".cld") {
        const std::string into = scratch + "/unpacked-" + std::to_string(unpacked++);
        fs::create_directories(into, ec);
        cl_error_t rc = clam().cvdunpack(f.c_str(), into.c_str(), /*dont_verify=*/false);
        if (rc != CL_SUCCESS) return clam_error("unpacking " + f.string(), rc);
        for (auto& inner : fs::directory_iterator(into, ec)) {
          if (inner.path().extension() == ".ldb") read_ldb(inner.path(), true);
          else keep_aux(inner.path());
        }
      } else {
        keep_aux(f);
      }
    }
  }
  return ok_status();
}

}  // namespace

Result<cl_engine*> ScanEngine::new_engine(const ScannerConfig& config) {
  cl_engine* e = clam().engine_new();
  if (!e) return make_error(ErrorCode::kInternal, "cl_engine_new failed");
  auto set_num = [&](cl_engine_field f, long long v) -> Status {
    cl_error_t rc = clam().engine_set_num(e, f, v);
    if (rc != CL_SUCCESS) return clam_error("cl_engine_set_num", rc);
    return ok_status();
  };
  Status s = set_num(CL_ENGINE_MAX_SCANSIZE, static_cast<long long>(config.max_scan_bytes));
  if (s) s = set_num(CL_ENGINE_MAX_FILESIZE, static_cast<long long>(config.max_file_bytes));
  if (s) s = set_num(CL_ENGINE_MAX_RECURSION, config.max_recursion);
  if (s) s = set_num(CL_ENGINE_MAX_FILES, config.max_files);
  if (s) s = set_num(CL_ENGINE_MAX_SCANTIME, config.max_scan_ms);
  if (s) {
    cl_error_t rc = clam().engine_set_str(e, CL_ENGINE_TMPDIR, config.tmp_dir.c_str());
    if (rc != CL_SUCCESS) s = clam_error("setting the temporary directory", rc);
  }
  if (!s) {
    clam().engine_free(e);
    return s.error();
  }
  clam().set_clcb_virus_found(e, on_found);
  return e;
}

Result<std::shared_ptr<const ScanEngine>> ScanEngine::load(const ScannerConfig& config) {
  MAILARK_TRY(init_once());
  if (config.tmp_dir.empty() || !is_dir(config.tmp_dir) || ::access(config.tmp_dir.c_str(), W_OK) != 0) {
    return make_error(ErrorCode::kIo, "the scanner's temporary folder " + config.tmp_dir + " is missing or not writable",
                      "create it, or set scanner.temp_dir");
  }
  std::shared_ptr<ScanEngine> self(new ScanEngine());
  self->max_file_bytes_ = config.max_file_bytes;
  self->tmp_dir_ = config.tmp_dir;
  self->max_scan_bytes_ = config.max_scan_bytes;

  // The logical signatures that can wait behind a prefilter (logical_split.h), and the prefilter's
  // body signatures, written to a scratch folder that is removed once the engines are built.
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string scratch = (fs::temp_directory_path(ec) / ("mailark-signatures-" + std::to_string(std::random_device{}()))).string();
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{scratch};
  fs::create_directories(scratch + "/prefilter", ec);
  fs::create_directories(scratch + "/logic", ec);
  auto gated = std::make_unique<GatedNames>();
  std::size_t inline_lsigs = 0, prefilter_sigs = 0;
  if (config.split_logical) {
    std::vector<LdbLine> ldb;
    MAILARK_TRY(read_logical_signatures(config.signature_dirs, scratch, scratch + "/logic", ldb));
    std::ofstream pre(scratch + "/prefilter/mailark-prefilter.ndb");
    std::ofstream logic(scratch + "/logic/mailark-gated.ldb");
    for (const auto& line : ldb) {
      auto sig = parse_logical_signature(line.text);
      if (!sig) continue;
      auto lines = prefilter_lines(line.text, std::string(kPrefilterPrefix) + "." + std::to_string(gated->names.size()));
      if (!lines) {
        ++inline_lsigs;
        continue;
      }
      gated->names.insert(sig->name);
      if (line.official) self->official_gated_.insert(sig->name);
      for (const auto& l : *lines) pre << l << "\n";
      logic << line.text << "\n";
      prefilter_sigs += lines->size();
    }
    pre.close();
    logic.close();
    if (!pre || !logic) return make_error(ErrorCode::kIo, "writing the prefilter signatures in " + scratch);
  }
  const bool split = !gated->names.empty();

  // The main engine: every signature, but the gated logical ones, plus the prefilter.
  MAILARK_ASSIGN_OR_RETURN(self->engine_, new_engine(config));
  if (split) clam().set_clcb_sigload(self->engine_, sigload_filter, gated.get());
  for (const auto& dir : config.signature_dirs) {
    if (!holds_signatures(dir)) continue;
    unsigned sigs = 0;
    cl_error_t rc = clam().load(dir.c_str(), self->engine_, &sigs, CL_DB_STDOPT);
    if (rc != CL_SUCCESS) return clam_error("loading signatures from " + dir, rc);
    if (sigs == 0) continue;
    self->signatures_ += sigs;
    if (!self->description_.empty()) self->description_ += ", ";
    self->description_ += dir + " (" + std::to_string(sigs) + ")";
  }
  if (self->signatures_ == 0 && gated->names.empty()) {
    return make_error(ErrorCode::kNotFound, "no virus signatures found in the configured directories",
                      "install clamav-freshclam for /var/lib/clamav, or point the scanner at signatures/");
  }
  if (split) {
    unsigned sigs = 0;
    cl_error_t rc = clam().load((scratch + "/prefilter").c_str(), self->engine_, &sigs, CL_DB_STDOPT);
    if (rc != CL_SUCCESS) return clam_error("loading the prefilter of the logical signatures", rc);
  }
  // The logic engine: the gated logical signatures alone (read from the scratch file, not the whole
  // database again), with the ignore and false-positive lists; compiled on a second thread while the
  // main engine compiles. Every load runs before that thread exists: libclamav reads plain signature
  // files a character at a time, and glibc locks every such read once a process has a second thread,
  // which makes loading about twice as slow (9 s against 21 s for bench/sigs' database).
  unsigned logic_sigs = 0;
  if (split) {
    MAILARK_ASSIGN_OR_RETURN(self->logic_, new_engine(config));
    cl_error_t lrc = clam().load((scratch + "/logic").c_str(), self->logic_, &logic_sigs, CL_DB_STDOPT);
    if (lrc != CL_SUCCESS) return clam_error("loading the gated logical signatures", lrc);
  }
  Status logic_status;
  std::thread logic_builder;
  if (split) {
    logic_builder = std::thread([&] {
      cl_error_t lrc = clam().engine_compile(self->logic_);
      if (lrc != CL_SUCCESS) logic_status = clam_error("compiling the logical signatures", lrc);
    });
  }
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{logic_builder};
  cl_error_t rc = clam().engine_compile(self->engine_);
  if (rc != CL_SUCCESS) return clam_error("compiling the signature engine", rc);
  if (logic_builder.joinable()) logic_builder.join();
  if (!logic_status) return logic_status.error();
  if (split) {
    self->signatures_ += logic_sigs;
    self->description_ += "; " + std::to_string(logic_sigs) + " logical signatures behind " +
                          std::to_string(prefilter_sigs) + " prefilter patterns, " + std::to_string(inline_lsigs) +
                          " inline";
  }
  return std::shared_ptr<const ScanEngine>(std::move(self));
}

ScanEngine::~ScanEngine() {
  if (engine_) clam().engine_free(engine_);
  if (logic_) clam().engine_free(logic_);
}

namespace {

cl_error_t run(cl_engine* engine, std::string_view bytes, bool all_matches, Found& found, const char** virname) {
  cl_fmap_t* map = clam().fmap_open_memory(bytes.data(), bytes.size());
  if (!map) return CL_EMAP;
  cl_scan_options opts{};
  opts.general = CL_SCAN_GENERAL_HEURISTICS | (all_matches ? CL_SCAN_GENERAL_ALLMATCHES : 0u);
  opts.parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 | CL_SCAN_PARSE_PDF |
               CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_XMLDOCS |
               CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_ONENOTE;
  // Limits, encrypted archives and encrypted documents raise heuristic alerts, which from_detection
  // turns into "unscannable": content the scanner could not look into is never clean.
  opts.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE | CL_SCAN_HEURISTIC_ENCRYPTED_DOC;
  unsigned long scanned = 0;
  cl_error_t rc = clam().scanmap_callback(map, "message.eml", virname, &scanned, engine, &opts, &found);
  clam().fmap_close(map);
  return rc;
}

}  // namespace

ScanVerdict ScanEngine::scan(std::string_view bytes) const {
  if (bytes.size() > max_file_bytes_) {
    return unscannable(Unscannable::kLimit, "message of " + std::to_string(bytes.size()) +
                                               " bytes exceeds the scanner's file size limit of " +
                                               std::to_string(max_file_bytes_));
  }
  TempRoom room;
  if (auto refused = room.take(tmp_dir_, bytes.size(), max_scan_bytes_)) return *refused;
  auto folder_ran_full = [&] {
    auto after = free_bytes(tmp_dir_);
    return !after || *after < kTempFloorBytes;
  };

  Found found;
  const char* virname = nullptr;
  cl_error_t rc = run(engine_, bytes, /*all_matches=*/logic_ != nullptr, found, &virname);
  if (rc == CL_EMAP) return temporary_error("libclamav could not map the message");
  // Something outside mailark filled the folder during the scan: libclamav may have scanned truncated
  // files. A detection stands; anything else is not to be trusted.
  if (rc != CL_VIRUS && folder_ran_full()) return temporary_error("the temporary folder " + tmp_dir_ + " ran full during the scan");
  if (rc == CL_CLEAN) {
    ScanVerdict v;
    v.kind = VerdictKind::kClean;
    return v;
  }
  if (rc != CL_VIRUS) return from_error(rc);
  if (found.names.empty() && virname) found.names.push_back(virname);
  if (found.names.empty()) {
    // libclamav 1.4 reports some limit hits (MaxFileSize) as a detection without a name.
    return unscannable(Unscannable::kLimit, "libclamav stopped without a signature name (a scan limit was reached)");
  }
  // A real detection wins; a prefilter match sends the message to the logical signatures; heuristic
  // alerts (limits, encryption) make it unscannable only when nothing was found.
  std::optional<std::string> heuristic;
  bool prefiltered = false;
  for (const auto& name : found.names) {
    if (is_prefilter(name)) {
      prefiltered = true;
    } else if (is_heuristic(name)) {
      if (!heuristic) heuristic = name;
    } else {
      return from_detection(name);
    }
  }
  if (prefiltered && logic_) {
    Found logic_found;
    const char* logic_name = nullptr;
    cl_error_t lrc = run(logic_, bytes, /*all_matches=*/false, logic_found, &logic_name);
    if (lrc == CL_VIRUS && logic_name && !is_heuristic(logic_name)) {
      // The logic engine loaded the gated signatures from a plain file, so libclamav marks them
      // unofficial; those that came from a signed container are reported by their own name.
      std::string name = logic_name;
      constexpr std::string_view kUnofficial = ".UNOFFICIAL";
      if (name.size() > kUnofficial.size() && name.compare(name.size() - kUnofficial.size(), kUnofficial.size(), kUnofficial) == 0 &&
          official_gated_.count(name.substr(0, name.size() - kUnofficial.size()))) {
        name.resize(name.size() - kUnofficial.size());
      }
      return from_detection(name);
    }
    if (lrc != CL_CLEAN && lrc != CL_VIRUS) return from_error(lrc);
    if (lrc != CL_VIRUS && folder_ran_full()) return temporary_error("the temporary folder " + tmp_dir_ + " ran full during the scan");
    if (lrc == CL_VIRUS && logic_name && !heuristic) heuristic = logic_name;
  }
  if (heuristic) return from_detection(*heuristic);
  ScanVerdict v;
  v.kind = VerdictKind::kClean;
  return v;
}

TempRoom::~TempRoom() { g_reserved_temp_bytes -= bytes_; }

std::optional<ScanVerdict> TempRoom::take(const std::string& tmp_dir, std::size_t message_bytes,
                                          std::uint64_t max_scan_bytes) {
  const std::uint64_t need = 2 * static_cast<std::uint64_t>(message_bytes) + max_scan_bytes;
  auto room = free_bytes(tmp_dir);
  if (!room) return temporary_error("cannot read the free space of the temporary folder " + tmp_dir);
  // Taken first, then compared: two scans starting at once each count the other.
  const std::uint64_t taken = (g_reserved_temp_bytes += need);
  bytes_ = need;
  if (*room < taken + kTempFloorBytes) {
    g_reserved_temp_bytes -= std::exchange(bytes_, 0);
    return temporary_error("not enough room in the temporary folder " + tmp_dir + " (" + std::to_string(*room >> 20) +
                           " MiB free, " + std::to_string(taken >> 20) + " MiB needed by the scans in flight)");
  }
  return std::nullopt;
}

std::string temp_space_warning(const ScannerConfig& config, std::uint64_t max_message_bytes, unsigned concurrent) {
  auto room = free_bytes(config.tmp_dir);
  const std::uint64_t per_scan = 2 * max_message_bytes + config.max_scan_bytes;
  const std::uint64_t need = per_scan * std::max(1u, concurrent) + kTempFloorBytes;
  if (room && *room >= need) return {};
  return "the scanner's temporary folder " + config.tmp_dir + " has " + (room ? std::to_string(*room >> 20) : std::string("?")) +
         " MiB free; " + std::to_string(concurrent) + " scans at once may need " + std::to_string(need >> 20) +
         " MiB, and a scan without room answers 451 4.7.1 (enlarge it, set scanner.temp_dir, or lower limits.scan_bytes)";
}

Result<std::unique_ptr<Scanner>> Scanner::open(ScannerConfig config) {
  std::unique_ptr<Scanner> s(new Scanner(std::move(config)));
  MAILARK_TRY(s->reload());
  return s;
}

Scanner::~Scanner() = default;

Status Scanner::reload() {
  if (!config_.host.empty()) {
    ScanPool::Options o;
    o.host = config_.host;
    o.config = config_;
    o.max_children = config_.max_processes;  // 0 counts as 1 (WorkerPool)
    auto fresh = ScanPool::start(std::move(o));  // a new host beside the one in use
    if (!fresh) return fresh.error();
    std::lock_guard lock(mu_);
    pool_ = std::move(fresh).value();
    return ok_status();
  }
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

ScanVerdict Scanner::scan(std::string_view bytes) const {
  std::shared_ptr<ScanPool> pool;
  std::shared_ptr<const ScanEngine> engine;
  {
    std::lock_guard lock(mu_);
    pool = pool_;
    engine = engine_;
  }
  return pool ? pool->scan(bytes) : engine->scan(bytes);
}

std::string Scanner::description() const {
  std::lock_guard lock(mu_);
  if (pool_) return pool_->description() + " (in scan processes)";
  return engine_ ? engine_->description() : std::string("none");
}

}  // namespace mailark::scanner

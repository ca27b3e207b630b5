// Scanning in processes of their own (scanner/scan_host.h): the same verdicts as in process, and a
// scan process that crashes, hangs or dies costs one message, never the caller.
#include "scanner/scan_host.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/test_util.h"

namespace mailark::scanner {
namespace {

constexpr const char* kCrashMarker = "X-Crash-The-Scanner-7f3a";

constexpr const char* kHogMarker = "X-Hog-The-Scanner-51c2";

std::shared_ptr<ScanPool> pool(unsigned timeout_ms = 0, std::vector<std::string> extra = {},
                               std::uint64_t max_memory_bytes = 0) {
  ScanPool::Options o;
  o.host = MAILARK_SCAN_BIN;
  o.config.signature_dirs = {test::signature_dir()};
  o.config.max_memory_bytes = max_memory_bytes;
  o.max_children = 2;
  o.timeout_ms = timeout_ms;
  o.extra_args = std::move(extra);
  auto p = ScanPool::start(std::move(o));
  EXPECT_TRUE(p.ok()) << p.error().to_string();
  return p.ok() ? *p : nullptr;
}

// A process is gone (exited and reaped, or a zombie nobody waits for any more).
bool gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

bool wait_gone(pid_t pid) {
  for (int i = 0; i < 500 && !gone(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return gone(pid);
}

TEST(ScanHost, VerdictsAreTheEnginesOwn) {
  auto p = pool();
  ASSERT_TRUE(p);
  auto v = p->scan(test::make_message("eicar", "see attached", "eicar.com", test::kEicar));
  EXPECT_EQ(v.kind, VerdictKind::kInfected);
  ASSERT_EQ(v.signatures.size(), 1u);
  EXPECT_NE(v.signatures[0].find("EICAR"), std::string::npos) << v.signatures[0];
  v = p->scan(test::make_message("hello", "nothing to see here"));
  EXPECT_EQ(v.kind, VerdictKind::kClean) << v.reason;
  EXPECT_NE(p->description().find("signatures"), std::string::npos) << p->description();
  // A message past the file limit is refused in the scan process as in this one.
  ScanPool::Options o;
  o.host = MAILARK_SCAN_BIN;
  o.config.signature_dirs = {test::signature_dir()};
  o.config.max_file_bytes = 1000;
  auto small = ScanPool::start(std::move(o));
  ASSERT_TRUE(small.ok()) << small.error().to_string();
  v = (*small)->scan(test::make_message("big", std::string(5000, 'a')));
  EXPECT_EQ(v.kind, VerdictKind::kUnscannable);
  EXPECT_EQ(v.why, Unscannable::kLimit) << v.reason;
  EXPECT_EQ(p->children_started(), 1u) << "one child scanned both, one after the other";
}

TEST(ScanHost, AHostWithoutSignaturesSaysSoAsTheEngineDoes) {
  test::ScratchDir dir;
  ScanPool::Options o;
  o.host = MAILARK_SCAN_BIN;
  o.config.signature_dirs = {dir / "none-here"};
  auto p = ScanPool::start(std::move(o));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, ErrorCode::kNotFound) << p.error().to_string();
  o = {};
  o.host = dir / "no-such-host";
  o.config.signature_dirs = {test::signature_dir()};
  p = ScanPool::start(std::move(o));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, ErrorCode::kIo) << p.error().to_string();
}

TEST(ScanHost, AMessageThatCrashesTheScannerIsUnscannableAndCostsNothingElse) {
  auto p = pool(0, {"--abort-on", kCrashMarker});
  ASSERT_TRUE(p);
  auto v = p->scan(test::make_message(kCrashMarker, "this message ends the scan process"));
  EXPECT_EQ(v.kind, VerdictKind::kUnscannable) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_EQ(v.why, Unscannable::kParse);
  EXPECT_NE(v.reason.find("crashed"), std::string::npos) << v.reason;
  EXPECT_EQ(p->children_started(), 1u) << "a message that ends a new child is not scanned again";
  v = p->scan(test::make_message("next", "the next message is scanned"));
  EXPECT_EQ(v.kind, VerdictKind::kClean) << v.reason;
  v = p->scan(test::make_message("eicar", "see attached", "eicar.com", test::kEicar));
  EXPECT_EQ(v.kind, VerdictKind::kInfected) << v.reason;
  EXPECT_EQ(p->children_started(), 2u);
}

TEST(ScanHost, AnIdleChildThatDiedIsReplacedAndTheMessageScanned) {
  auto p = pool();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->scan(test::make_message("first", "hello")).kind, VerdictKind::kClean);
  auto idle = p->idle_pids_for_test();
  ASSERT_EQ(idle.size(), 1u);
  ASSERT_EQ(::kill(idle[0], SIGKILL), 0);
  ASSERT_TRUE(wait_gone(idle[0]));
  auto v = p->scan(test::make_message("eicar", "see attached", "eicar.com", test::kEicar));
  EXPECT_EQ(v.kind, VerdictKind::kInfected) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_EQ(p->children_started(), 2u) << "the dead child is replaced, never reused";
}

TEST(ScanHost, AScanThatNeverEndsIsStoppedAndUnscannable) {
  auto p = pool(/*timeout_ms=*/800);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->scan(test::make_message("first", "hello")).kind, VerdictKind::kClean);
  auto idle = p->idle_pids_for_test();
  ASSERT_EQ(idle.size(), 1u);
  ASSERT_EQ(::kill(idle[0], SIGSTOP), 0);  // as a scan stuck in a loop: alive, answering nothing
  auto v = p->scan(test::make_message("stuck", "this one never gets an answer"));
  EXPECT_EQ(v.kind, VerdictKind::kUnscannable) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_EQ(v.why, Unscannable::kLimit);
  EXPECT_NE(v.reason.find("stopped"), std::string::npos) << v.reason;
  EXPECT_TRUE(wait_gone(idle[0])) << "the stuck child is killed";
  EXPECT_EQ(p->scan(test::make_message("after", "hello")).kind, VerdictKind::kClean);
}

// A scan whose memory grows without end (the --hog-on marker: 16 MiB more every 5 ms, up to 512 MiB)
// is stopped once its process holds more than the bound beyond what it shared with the host at its
// fork: unscannable, never the clean verdict the scan would end in; the next message is scanned.
TEST(ScanHost, AScanThatTakesTooMuchMemoryIsStoppedAndUnscannable) {
  auto p = pool(/*timeout_ms=*/0, {"--hog-on", kHogMarker}, /*max_memory_bytes=*/128u << 20);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->scan(test::make_message("first", "hello")).kind, VerdictKind::kClean);
  auto idle = p->idle_pids_for_test();
  ASSERT_EQ(idle.size(), 1u);
  auto v = p->scan(test::make_message("hog", std::string("libclamav would allocate without end here: ") + kHogMarker));
  EXPECT_EQ(v.kind, VerdictKind::kUnscannable) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_EQ(v.why, Unscannable::kLimit);
  EXPECT_NE(v.reason.find("128 MiB of memory (limits.scan_memory_bytes)"), std::string::npos) << v.reason;
  EXPECT_TRUE(wait_gone(idle[0])) << "the process that held the memory is killed";
  EXPECT_EQ(p->scan(test::make_message("after", "hello")).kind, VerdictKind::kClean);
  // Without a bound the same message ends as the scan would (the hog stops at 512 MiB): the bound is
  // what stopped it above.
  auto unbounded = pool(/*timeout_ms=*/0, {"--hog-on", kHogMarker}, /*max_memory_bytes=*/0);
  ASSERT_TRUE(unbounded);
  v = unbounded->scan(test::make_message("hog", std::string("allocates 512 MiB, then is scanned: ") + kHogMarker));
  EXPECT_EQ(v.kind, VerdictKind::kClean) << verdict_name(v.kind) << " " << v.reason;
}

TEST(ScanHost, TheHostAndItsChildrenEndWithThePool) {
  pid_t host = -1;
  std::vector<pid_t> children;
  {
    auto p = pool();
    ASSERT_TRUE(p);
    std::thread a([&] { p->scan(test::make_message("a", "one")); });
    std::thread b([&] { p->scan(test::make_message("b", "two")); });
    a.join();
    b.join();
    host = p->host_pid();
    children = p->idle_pids_for_test();
    ASSERT_FALSE(children.empty());
    EXPECT_FALSE(gone(host));
  }
  EXPECT_TRUE(gone(host));
  for (pid_t c : children) EXPECT_TRUE(wait_gone(c)) << c;
}

TEST(ScanHost, AHostThatDiedMakesScansTemporaryErrorsNeverClean) {
  auto p = pool();
  ASSERT_TRUE(p);
  ASSERT_EQ(::kill(p->host_pid(), SIGKILL), 0);
  // Its children die with it; a new one cannot be had.
  auto v = p->scan(test::make_message("after", "hello"));
  EXPECT_EQ(v.kind, VerdictKind::kTemporaryError) << verdict_name(v.kind) << " " << v.reason;
  EXPECT_NE(v.reason.find("scan host"), std::string::npos) << v.reason;
}

TEST(ScanHost, TheScannerReloadsIntoANewHost) {
  ScannerConfig c;
  c.signature_dirs = {test::signature_dir()};
  c.host = MAILARK_SCAN_BIN;
  auto s = Scanner::open(c);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ((*s)->engine(), nullptr) << "no engine in this process";
  EXPECT_NE((*s)->description().find("scan processes"), std::string::npos) << (*s)->description();
  EXPECT_EQ((*s)->scan(test::make_message("eicar", "see attached", "eicar.com", test::kEicar)).kind,
            VerdictKind::kInfected);
  ASSERT_TRUE((*s)->reload().ok());
  EXPECT_EQ((*s)->scan(test::make_message("hello", "fine")).kind, VerdictKind::kClean);
}

// The scan processes' seccomp filter (tools/sandbox.h): mailark-scan tries, under the filter its scan
// processes run with, what the filter refuses, and what libclamav needs (its temporary files); every
// test above scans in filtered processes.
TEST(ScanHost, ScanProcessesCannotReachTheNetworkOrStartPrograms) {
  const auto [out, ok] = test::run_command(std::string(MAILARK_SCAN_BIN) + " --check-sandbox");
  EXPECT_TRUE(ok) << out;
  for (const char* what : {"socket: refused", "socketpair: refused", "execve: refused", "io_uring: refused",
                           "temporary file: allowed"})
    EXPECT_NE(out.find(what), std::string::npos) << what << " in:\n" << out;
}

TEST(ScanVerdictCodec, EveryVerdictRoundTrips) {
  std::vector<ScanVerdict> all(4);
  all[0].kind = VerdictKind::kClean;
  all[1].kind = VerdictKind::kInfected;
  all[1].signatures = {"Eicar-Signature", "Another.Name"};
  all[2].kind = VerdictKind::kUnscannable;
  all[2].why = Unscannable::kEncrypted;
  all[2].reason = "encrypted: Heuristics.Encrypted.Zip";
  all[3].kind = VerdictKind::kTemporaryError;
  all[3].reason = "error: the temporary folder ran full";
  for (const auto& v : all) {
    auto d = decode_verdict(encode_verdict(v));
    ASSERT_TRUE(d.ok()) << d.error().to_string();
    EXPECT_EQ(d->kind, v.kind);
    EXPECT_EQ(d->why, v.why);
    EXPECT_EQ(d->signatures, v.signatures);
    EXPECT_EQ(d->reason, v.reason);
  }
  // Long answers are cut to fit, never refused.
  ScanVerdict big;
  big.kind = VerdictKind::kInfected;
  big.signatures.assign(500, std::string(5000, 'n'));
  big.reason = std::string(100000, 'r');
  const std::string bytes = encode_verdict(big);
  EXPECT_LE(bytes.size(), kMaxVerdictBytes);
  auto d = decode_verdict(bytes);
  ASSERT_TRUE(d.ok()) << d.error().to_string();
  EXPECT_EQ(d->signatures.size(), 64u);
}

TEST(ScanVerdictCodec, AnythingElseIsRefused) {
  ScanVerdict v;
  v.kind = VerdictKind::kInfected;
  v.signatures = {"Eicar"};
  const std::string good = encode_verdict(v);
  EXPECT_FALSE(decode_verdict("").ok());
  EXPECT_FALSE(decode_verdict(good.substr(0, good.size() - 1)).ok()) << "cut short";
  EXPECT_FALSE(decode_verdict(good + "x").ok()) << "bytes left over";
  std::string kind = good;
  kind[0] = 9;
  EXPECT_FALSE(decode_verdict(kind).ok()) << "no such verdict";
  std::string why = good;
  why[1] = 7;
  EXPECT_FALSE(decode_verdict(why).ok()) << "no such reason";
  ScanVerdict nameless;
  nameless.kind = VerdictKind::kInfected;
  EXPECT_FALSE(decode_verdict(encode_verdict(nameless)).ok()) << "infected, by no signature";
  std::string many = good;
  many[2] = '\x7f';  // 32,512 names
  EXPECT_FALSE(decode_verdict(many).ok());
}

}  // namespace
}  // namespace mailark::scanner

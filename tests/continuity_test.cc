// The continuity model: events, the monitor's counter, tokens (engine/continuity.h).
#include "engine/continuity.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace mailark {
namespace {

std::unique_ptr<Archive> open_archive(const std::string& dir) {
  auto a = Archive::open(dir, Limits{}, false);
  EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().to_string());
  return std::move(a).value();
}

void append(Archive& a, const std::string& subject, Direction dir, std::optional<Route> route,
            const std::string& rcpt = "ana@example.com") {
  const std::string raw = test::make_message(subject, "body of " + subject);
  PendingAppend p;
  p.envelope.direction = dir;
  p.envelope.mail_from = "someone@partner.example";
  p.envelope.rcpt_to = {rcpt};
  p.envelope.received_at = 1700000000;
  p.verdict.kind = scanner::VerdictKind::kClean;
  p.content_sha256 = sha256(raw);
  p.raw_size = raw.size();
  auto codec = a.codec();
  p.dict_id = codec->active_dictionary();
  p.frame = codec->compress(raw).value();
  if (route) {
    QueueEntry q;
    q.route = *route;
    q.recipients = {{rcpt}};
    q.message_id = subject + "@partner.example";
    p.queue = q;
  }
  std::vector<PendingAppend> batch{std::move(p)};
  ASSERT_TRUE(a.append(batch).ok());
}

TEST(Continuity, EventHoldsWhatArrivesAndCountsItAtStop) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  append(*a, "before", Direction::kInbound, Route::kPrimary);
  EXPECT_EQ(*c.state(), ContinuityState::kNormal);

  bool already = true;
  auto ev = c.start("cli:test", "primary down", false, &already);
  ASSERT_TRUE(ev.ok()) << ev.error().to_string();
  EXPECT_FALSE(already);
  EXPECT_EQ(ev->id, 1u);
  EXPECT_EQ(ev->first_seq, 2u);
  EXPECT_EQ(ev->reason, "primary down");
  EXPECT_EQ(*c.state(), ContinuityState::kActive);

  append(*a, "during 1", Direction::kInbound, Route::kPrimary);
  append(*a, "during 2", Direction::kInbound, Route::kPrimary, "bo@example.com");
  append(*a, "sent during", Direction::kOutbound, Route::kInternet, "x@partner.example");

  auto stopped = c.stop("http:admin", &already);
  ASSERT_TRUE(stopped.ok()) << stopped.error().to_string();
  EXPECT_FALSE(already);
  EXPECT_EQ(stopped->last_seq, 4u);
  EXPECT_EQ(stopped->stopped_by, "http:admin");
  EXPECT_EQ(stopped->inbound, 2u);
  EXPECT_EQ(stopped->outbound, 1u);
  EXPECT_EQ(stopped->held_messages, 2u) << "the inbound messages of the event, for the primary";
  EXPECT_EQ(*c.state(), ContinuityState::kDraining);

  ASSERT_TRUE(c.finish_drain(stopped->id, 0).ok());
  std::optional<ContinuityEvent> current;
  EXPECT_EQ(*c.state(&current), ContinuityState::kNormal);
  EXPECT_FALSE(current.has_value());
  auto st = c.status(10, 10);
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->events.size(), 1u);
  EXPECT_GT(st->events[0].drained_at, 0);

  // Survives a reopen.
  a.reset();
  a = open_archive(dir.path());
  Continuity c2(*a);
  st = c2.status(10, 10);
  ASSERT_EQ(st->events.size(), 1u);
  EXPECT_EQ(st->events[0].held_messages, 2u);
}

TEST(Continuity, StartAndStopTwiceAreHarmless) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  bool already = false;
  auto stopped = c.stop("cli:test", &already);
  ASSERT_TRUE(stopped.ok());
  EXPECT_TRUE(already) << "stopping with nothing running changes nothing";
  auto first = c.start("cli:test", "one", false, &already);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(already);
  auto second = c.start("http:admin", "two", false, &already);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(already);
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(second->reason, "one") << "the running event is unchanged";
  ASSERT_TRUE(c.stop("cli:test", &already).ok());
  EXPECT_FALSE(already);
  ASSERT_TRUE(c.stop("cli:test", &already).ok());
  EXPECT_TRUE(already);
  auto st = c.status(10, 10);
  EXPECT_EQ(st->events.size(), 1u) << "one event, not two";
}

TEST(Continuity, StartDuringADrainCoversWhatThePreviousEventLeft) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  bool already;
  ASSERT_TRUE(c.start("cli", "", false, &already).ok());
  append(*a, "held 1", Direction::kInbound, Route::kPrimary);
  ASSERT_TRUE(c.stop("cli", &already).ok());
  append(*a, "between", Direction::kInbound, Route::kPrimary);
  auto second = c.start("cli", "again", false, &already);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->id, 2u);
  EXPECT_EQ(second->first_seq, 3u);
  EXPECT_EQ(second->drain_from_seq, 1u) << "the first event's undrained mail drains with the second";
}

TEST(Continuity, StopMakesEverythingForThePrimaryDueNowInArrivalOrder) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  append(*a, "deferred before", Direction::kInbound, Route::kPrimary);
  ASSERT_TRUE(a->queue_apply({{1, "ana@example.com", RecipientState::kPending, 4000000000, "451 down"}}).ok());
  bool already;
  ASSERT_TRUE(c.start("cli", "", false, &already).ok());
  append(*a, "during", Direction::kInbound, Route::kPrimary);
  ASSERT_TRUE(c.stop("cli", &already).ok());
  auto due = a->queue_due(lane_of(Route::kPrimary), 1800000000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[0].seq, 1u);
  EXPECT_EQ((*due)[1].seq, 2u);
}

TEST(Continuity, CounterRisesAndFallsByOnePerWindowAndAlertsOnce) {
  MonitorState s;
  MonitorPolicy p;
  p.alert_after = 2;
  p.repeat_seconds = 1800;
  WindowFigures down;
  down.unreachable = 3;
  WindowFigures quiet;
  WindowFigures up;
  up.delivered = 5;
  up.deferred = 1;

  EXPECT_FALSE(quiet.failed());
  EXPECT_TRUE(down.failed());
  EXPECT_FALSE(up.failed()) << "mostly answered";

  auto a = close_window(s, down, p, 100, false);
  EXPECT_EQ(s.counter, 1u);
  EXPECT_FALSE(a.alert);
  a = close_window(s, down, p, 220, false);
  EXPECT_EQ(s.counter, 2u);
  EXPECT_TRUE(a.alert) << "at the threshold";
  a = close_window(s, down, p, 340, false);
  EXPECT_EQ(s.counter, 3u);
  EXPECT_FALSE(a.alert);
  EXPECT_FALSE(a.repeat) << "not before repeat_seconds";
  a = close_window(s, down, p, 220 + 1800, false);
  EXPECT_TRUE(a.repeat);
  a = close_window(s, quiet, p, 2100, false);
  EXPECT_EQ(s.counter, 3u);
  EXPECT_FALSE(a.recovered);
  a = close_window(s, up, p, 2200, false);
  a = close_window(s, up, p, 2300, false);
  EXPECT_EQ(s.counter, 1u);
  EXPECT_FALSE(a.recovered) << "not yet at zero";
  a = close_window(s, quiet, p, 2400, false);
  EXPECT_EQ(s.counter, 0u);
  EXPECT_TRUE(a.recovered);
  a = close_window(s, quiet, p, 2500, false);
  EXPECT_EQ(s.counter, 0u) << "never below zero";
  EXPECT_FALSE(a.recovered) << "one recovery notice";
}

TEST(Continuity, AutoStartAndAutoStopNeedTheirWindows) {
  MonitorState s;
  MonitorPolicy p;
  p.auto_start = 2;
  p.auto_stop = 2;
  WindowFigures lost;
  lost.probes_sent = 1;
  lost.probes_lost = 1;
  WindowFigures quiet;
  WindowFigures back;
  back.probes_returned = 1;
  EXPECT_FALSE(close_window(s, lost, p, 1, false).auto_start);
  EXPECT_TRUE(close_window(s, lost, p, 2, false).auto_start);
  // During the event, windows without evidence do not stop it.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(close_window(s, quiet, p, 3 + i, true).auto_stop);
  EXPECT_FALSE(close_window(s, back, p, 10, true).auto_stop);
  EXPECT_TRUE(close_window(s, back, p, 11, true).auto_stop);
}

TEST(Continuity, TokenWorksOnceAndNotAfterItExpires) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  auto token = c.issue_token(86400, "panic");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->size(), 48u);
  EXPECT_EQ(*c.check_token(*token), TokenCheck::kValid);
  EXPECT_EQ(*c.consume_token(*token, "panic-button [127.0.0.1]"), TokenCheck::kValid);
  EXPECT_EQ(*c.consume_token(*token, "panic-button [127.0.0.1]"), TokenCheck::kUsed);
  EXPECT_EQ(*c.check_token(*token), TokenCheck::kUsed);
  std::string forged = *token;
  forged[0] = forged[0] == 'a' ? 'b' : 'a';
  EXPECT_EQ(*c.consume_token(forged, "x"), TokenCheck::kUnknown);
  EXPECT_EQ(*c.consume_token("", "x"), TokenCheck::kUnknown);
  EXPECT_EQ(*c.consume_token(std::string(48, 'Z'), "x"), TokenCheck::kUnknown);
  auto expired = c.issue_token(-1, "panic");
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(*c.consume_token(*expired, "x"), TokenCheck::kExpired);
}

TEST(Continuity, WindowsAreKeptNewestFirstAndOldOnesGo) {
  test::ScratchDir dir;
  auto a = open_archive(dir.path());
  Continuity c(*a);
  MonitorState s;
  for (int i = 0; i < 10; ++i) {
    MonitorWindow w;
    w.start = 1000 + i * 120;
    w.end = w.start + 120;
    w.figures.delivered = static_cast<std::uint32_t>(i);
    s.counter = static_cast<std::uint32_t>(i);
    ASSERT_TRUE(c.record_window(w, s, 600).ok());
  }
  auto st = c.status(100, 0);
  ASSERT_TRUE(st.ok());
  ASSERT_FALSE(st->windows.empty());
  EXPECT_EQ(st->windows[0].figures.delivered, 9u) << "newest first";
  EXPECT_EQ(st->monitor.counter, 9u);
  EXPECT_LE(st->windows.size(), 6u) << "windows older than the kept span are dropped";
  EXPECT_GE(st->windows.size(), 5u);
}

}  // namespace
}  // namespace mailark

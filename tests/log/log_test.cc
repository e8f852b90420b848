// Unit tests of sidecar/log: RepeatLimiter on explicit times, and Log's real JSON lines on fd 2.
#include "sidecar/log/log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/stderr_capture.h"

namespace ratelimit {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::SizeIs;

// ---- RepeatLimiter --------------------------------------------------------------------------

// One line offered to the limiter, and what it must decide.
struct Step {
  uint64_t at_ms;
  std::string message;
  bool written;
  uint64_t suppressed = 0;  // The count the written line carries.
};

struct LimiterCase {
  std::string name;
  RepeatLimiter::Options options;
  std::vector<Step> steps;
};

std::ostream& operator<<(std::ostream& out, const LimiterCase& c) { return out << c.name; }

class RepeatLimiterStepsTest : public ::testing::TestWithParam<LimiterCase> {};

TEST_P(RepeatLimiterStepsTest, DecidesEachLineAsExpected) {
  RepeatLimiter limiter(GetParam().options);
  const std::vector<Step>& steps = GetParam().steps;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& step = steps[i];
    const RepeatLimiter::Verdict verdict =
        limiter.Admit(step.message, LogLevel::kError, step.at_ms);
    EXPECT_EQ(verdict.write, step.written) << "step " << i << " at " << step.at_ms;
    EXPECT_EQ(verdict.suppressed, step.suppressed) << "step " << i << " at " << step.at_ms;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RepeatLimiterStepsTest,
    ::testing::Values(
        LimiterCase{"BurstThenSuppressed",
                    {3, 1000, 16},
                    {{0, "a", true},
                     {1, "a", true},
                     {2, "a", true},
                     {3, "a", false},
                     {500, "a", false},
                     {999, "a", false}}},
        LimiterCase{"NextIntervalsFirstLineCarriesTheCount",
                    {2, 1000, 16},
                    {{0, "a", true},
                     {0, "a", true},
                     {0, "a", false},
                     {10, "a", false},
                     {1000, "a", true, 2},
                     {1001, "a", true},
                     {1002, "a", false},
                     {2000, "a", true, 1}}},
        LimiterCase{"IntervalStartsAtTheFirstLineAfterThePreviousEnded",
                    {1, 1000, 16},
                    {{0, "a", true},
                     {999, "a", false},
                     {1500, "a", true, 1},  // A new interval: 1500 to 2500, not 1000 to 2000.
                     {2000, "a", false},
                     {2499, "a", false},
                     {2500, "a", true, 2}}},
        LimiterCase{"MessagesAreCountedApart",
                    {1, 1000, 16},
                    {{0, "a", true},
                     {0, "b", true},
                     {1, "a", false},
                     {2, "b", false},
                     {3, "b", false},
                     {1000, "b", true, 2},
                     {1000, "a", true, 1}}},
        LimiterCase{"ZeroIntervalNeverSuppresses",
                    {1, 0, 16},
                    {{0, "a", true}, {0, "a", true}, {0, "a", true}}},
        LimiterCase{
            "ZeroBurstSuppressesEverything", {0, 1000, 16}, {{0, "a", false}, {1000, "a", false}}},
        LimiterCase{"MessagesBeyondTheTableShareOneEntryAndCarryNoCount",
                    {1, 1000, 2},
                    {{0, "a", true},
                     {0, "b", true},
                     {0, "c", true},  // The table is full: c and d share the untracked entry.
                     {0, "d", false},
                     {1, "c", false},
                     {1, "a", false},  // a is still limited on its own.
                     {1000, "d", true, 0},
                     {1000, "a", true, 1}}},
        LimiterCase{"IdleMessagesMakeRoomForNewOnes",
                    {1, 1000, 2},
                    {{0, "a", true},
                     {0, "b", true},
                     {0, "b", false},
                     {1000, "c", true},   // a ended with nothing dropped: c takes its slot.
                     {1000, "c", false},  // So c is limited on its own, not shared.
                     {1001, "d", true},   // b still owes a count: d goes untracked.
                     {1002, "e", false}}},
        LimiterCase{"LongMessagesAreTrackedByTheirPrefix",
                    {1, 1000, 16},
                    {{0, std::string(RepeatLimiter::kMaxMessageBytes, 'x') + "1", true},
                     {1, std::string(RepeatLimiter::kMaxMessageBytes, 'x') + "2", false}}}),
    [](const ::testing::TestParamInfo<LimiterCase>& param_info) { return param_info.param.name; });

TEST(RepeatLimiterTest, TakeSuppressedReportsOnlyIntervalsThatEnded) {
  RepeatLimiter limiter({1, 1000, 16});
  EXPECT_TRUE(limiter.Admit("a", LogLevel::kWarn, 0).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kWarn, 1).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kWarn, 2).write);
  EXPECT_TRUE(limiter.Admit("b", LogLevel::kWarn, 500).write);
  EXPECT_FALSE(limiter.Admit("b", LogLevel::kWarn, 501).write);

  EXPECT_THAT(limiter.TakeSuppressed(999), IsEmpty());
  EXPECT_THAT(limiter.TakeSuppressed(1000),
              ElementsAre(RepeatLimiter::Suppressed{"a", LogLevel::kWarn, 2}));
  EXPECT_THAT(limiter.TakeSuppressed(1000), IsEmpty()) << "reported twice";
  EXPECT_THAT(limiter.TakeSuppressed(1500),
              ElementsAre(RepeatLimiter::Suppressed{"b", LogLevel::kWarn, 1}));
}

TEST(RepeatLimiterTest, AReportedCountIsNotCarriedByTheNextLine) {
  RepeatLimiter limiter({1, 1000, 16});
  EXPECT_TRUE(limiter.Admit("a", LogLevel::kError, 0).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kError, 1).write);
  EXPECT_THAT(limiter.TakeSuppressed(1000), SizeIs(1));
  const RepeatLimiter::Verdict next = limiter.Admit("a", LogLevel::kError, 1001);
  EXPECT_TRUE(next.write);
  EXPECT_EQ(next.suppressed, 0u);
}

TEST(RepeatLimiterTest, ACarriedCountIsNotReportedAgain) {
  RepeatLimiter limiter({1, 1000, 16});
  EXPECT_TRUE(limiter.Admit("a", LogLevel::kError, 0).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kError, 1).write);
  EXPECT_EQ(limiter.Admit("a", LogLevel::kError, 1000).suppressed, 1u);
  EXPECT_THAT(limiter.TakeSuppressed(5000), IsEmpty());
}

TEST(RepeatLimiterTest, ReportCarriesTheHighestLevelDropped) {
  RepeatLimiter limiter({1, 1000, 16});
  EXPECT_TRUE(limiter.Admit("a", LogLevel::kInfo, 0).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kWarn, 1).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kError, 2).write);
  EXPECT_FALSE(limiter.Admit("a", LogLevel::kInfo, 3).write);
  EXPECT_THAT(limiter.TakeSuppressed(1000),
              ElementsAre(RepeatLimiter::Suppressed{"a", LogLevel::kError, 3}));
}

TEST(RepeatLimiterTest, ReportsInMessageOrderWithTheUntrackedOnesLast) {
  RepeatLimiter limiter({1, 1000, 2});
  EXPECT_TRUE(limiter.Admit("b", LogLevel::kWarn, 0).write);
  EXPECT_TRUE(limiter.Admit("a", LogLevel::kWarn, 0).write);
  EXPECT_TRUE(limiter.Admit("z", LogLevel::kWarn, 0).write);  // Untracked: the table is full.
  for (const char* message : {"b", "a", "z", "y", "y"}) {
    EXPECT_FALSE(limiter.Admit(message, LogLevel::kWarn, 0).write) << message;
  }
  EXPECT_THAT(limiter.TakeSuppressed(1000),
              ElementsAre(RepeatLimiter::Suppressed{"a", LogLevel::kWarn, 1},
                          RepeatLimiter::Suppressed{"b", LogLevel::kWarn, 1},
                          RepeatLimiter::Suppressed{std::string(RepeatLimiter::kUntrackedMessages),
                                                    LogLevel::kWarn, 3}));
}

TEST(RepeatLimiterTest, TableStaysBoundedUnderAFloodOfDistinctMessages) {
  RepeatLimiter limiter({5, 1000, 256});
  size_t written = 0;
  for (int i = 0; i < 100000; ++i) {
    written += limiter.Admit("message " + std::to_string(i), LogLevel::kError, 0).write ? 1 : 0;
  }
  EXPECT_EQ(limiter.tracked(), 256u);
  EXPECT_EQ(written, 256u + 5u) << "one line per tracked message, then the shared burst";
  EXPECT_THAT(limiter.TakeSuppressed(1000),
              ElementsAre(RepeatLimiter::Suppressed{std::string(RepeatLimiter::kUntrackedMessages),
                                                    LogLevel::kError, 100000 - 256 - 5}));
  EXPECT_EQ(limiter.tracked(), 0u) << "ended intervals are forgotten";
}

// Whatever the sequence of lines and reports, every dropped line is counted exactly once.
TEST(RepeatLimiterTest, EveryDroppedLineIsCountedExactlyOnce) {
  RepeatLimiter limiter({3, 100, 4});
  std::mt19937 random(12345);
  uint64_t now = 0;
  uint64_t dropped = 0;
  uint64_t counted = 0;
  for (int i = 0; i < 100000; ++i) {
    now += random() % 7;
    if (random() % 50 == 0) {
      for (const RepeatLimiter::Suppressed& s : limiter.TakeSuppressed(now)) counted += s.count;
      continue;
    }
    const RepeatLimiter::Verdict verdict =
        limiter.Admit(std::string(1, static_cast<char>('a' + random() % 6)), LogLevel::kWarn, now);
    dropped += verdict.write ? 0 : 1;
    counted += verdict.suppressed;
  }
  for (const RepeatLimiter::Suppressed& s : limiter.TakeSuppressed(now + 100)) counted += s.count;
  EXPECT_GT(dropped, 1000u) << "the sequence should exercise suppression";
  EXPECT_EQ(counted, dropped);
}

// ---- Log, as written to stderr --------------------------------------------------------------

std::atomic<uint64_t> g_now_ms{0};
std::atomic<int> g_clock_reads{0};

// Each test starts with a fresh limiter on a clock it moves by hand, and every level enabled.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { UseLimits({5, 10000, 256}); }
  void TearDown() override {
    ResetLogRepeatLimiter();
    SetLogLevel(LogLevel::kInfo);
  }
  static void UseLimits(const RepeatLimiter::Options& options) {
    g_now_ms = 1000000;
    g_clock_reads = 0;
    SetLogLevel(LogLevel::kDebug);
    ResetLogRepeatLimiter(options, [] {
      ++g_clock_reads;
      return g_now_ms.load();
    });
  }
  static JsonFields ParseOrFail(const std::string& line) {
    std::optional<JsonFields> fields = ParseJsonLine(line);
    EXPECT_TRUE(fields.has_value()) << "not a JSON object of flat fields: " << line;
    return fields.value_or(JsonFields{});
  }
};

TEST_F(LogTest, WritesOneJsonObjectPerLineWithFieldsInOrder) {
  StderrCapture capture;
  Log(LogLevel::kInfo, "listening").Str("socket", "/tmp/x.sock").Int("max", -7).Bool("ok", true);
  Log(LogLevel::kError, "second");
  const std::vector<std::string> lines = capture.Lines();
  ASSERT_THAT(lines, SizeIs(2));
  EXPECT_THAT(capture.Text(), ::testing::EndsWith("}\n"));
  EXPECT_THAT(lines[0], ::testing::StartsWith("{\"ts\":\""));
  const JsonFields fields = ParseOrFail(lines[0]);
  ASSERT_THAT(fields, SizeIs(6));
  EXPECT_EQ(fields[0].first, "ts");
  EXPECT_THAT(fields[0].second, MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z"));
  EXPECT_EQ(fields[1], (std::pair<std::string, std::string>{"level", "info"}));
  EXPECT_EQ(fields[2], (std::pair<std::string, std::string>{"msg", "listening"}));
  EXPECT_EQ(fields[3], (std::pair<std::string, std::string>{"socket", "/tmp/x.sock"}));
  EXPECT_EQ(fields[4], (std::pair<std::string, std::string>{"max", "-7"}));
  EXPECT_EQ(fields[5], (std::pair<std::string, std::string>{"ok", "true"}));
  EXPECT_EQ(Field(ParseOrFail(lines[1]), "level"), "error");
}

TEST_F(LogTest, EachLevelHasItsName) {
  StderrCapture capture;
  Log(LogLevel::kDebug, "d");
  Log(LogLevel::kInfo, "i");
  Log(LogLevel::kWarn, "w");
  Log(LogLevel::kError, "e");
  std::vector<std::string> levels;
  for (const std::string& line : capture.Lines())
    levels.push_back(*Field(ParseOrFail(line), "level"));
  EXPECT_THAT(levels, ElementsAre("debug", "info", "warn", "error"));
}

struct EscapeCase {
  std::string text;
  std::string escaped;  // Inside the quotes, as written.
};

TEST_F(LogTest, EscapesQuotesBackslashesControlCharactersAndInvalidUtf8) {
  const std::vector<EscapeCase> cases = {
      {"plain text", "plain text"},
      {"say \"hi\"", "say \\\"hi\\\""},
      {"C:\\dir", "C:\\\\dir"},
      {"two\nlines\r\n", "two\\nlines\\r\\n"},
      {"tab\there", "tab\\there"},
      {std::string("nul\0byte", 8), "nul\\u0000byte"},
      {"\x01\x1f\x7f", "\\u0001\\u001f\x7f"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"bad \xff byte", "bad \\ufffd byte"},
      {"lone \x80 continuation", "lone \\ufffd continuation"},
      {"truncated \xe2\x82", "truncated \\ufffd\\ufffd"},
      {"overlong \xc0\xaf", "overlong \\ufffd\\ufffd"},
      {"surrogate \xed\xa0\x80", "surrogate \\ufffd\\ufffd\\ufffd"},
      {"beyond \xf4\x90\x80\x80", "beyond \\ufffd\\ufffd\\ufffd\\ufffd"},
  };
  for (const EscapeCase& c : cases) {
    std::string out;
    AppendJsonEscaped(out, c.text);
    EXPECT_EQ(out, c.escaped) << "for " << ::testing::PrintToString(c.text);
  }
  // And a whole line built from all of them still parses, with every value given back.
  StderrCapture capture;
  {
    Log line(LogLevel::kWarn, "quote \" newline \n");
    for (size_t i = 0; i < cases.size(); ++i) line.Str(cases[i].text, cases[i].text);
  }
  const std::vector<std::string> lines = capture.Lines();
  ASSERT_THAT(lines, SizeIs(1)) << "a newline in a value must not split the line";
  const JsonFields fields = ParseOrFail(lines[0]);
  EXPECT_EQ(Field(fields, "msg"), "quote \" newline \n");
  EXPECT_EQ(Field(fields, "plain text"), "plain text");
  EXPECT_EQ(Field(fields, "two\nlines\r\n"), "two\nlines\r\n");
  EXPECT_EQ(Field(fields, std::string("nul\0byte", 8)), std::string("nul\0byte", 8));
}

TEST_F(LogTest, ADisabledLevelWritesNothingAndNeitherReadsTheClockNorCounts) {
  UseLimits({1, 10000, 256});
  SetLogLevel(LogLevel::kError);
  StderrCapture capture;
  for (int i = 0; i < 100; ++i) {
    Log(LogLevel::kWarn, "quiet").Str("field", "value");
    Log(LogLevel::kDebug, "quiet");
  }
  EXPECT_EQ(capture.Text(), "");
  EXPECT_EQ(g_clock_reads, 0);
  SetLogLevel(LogLevel::kWarn);
  Log(LogLevel::kWarn, "quiet");
  ASSERT_THAT(capture.Lines(), SizeIs(1));
  EXPECT_EQ(Field(ParseOrFail(capture.Lines()[0]), "suppressed"), std::nullopt)
      << "lines at a disabled level are not counted as suppressed";
}

TEST_F(LogTest, ARepeatedErrorIsWrittenOnlyAsABurstThenWithItsCount) {
  StderrCapture capture;
  for (int i = 0; i < 100; ++i) {
    Log(LogLevel::kError, "database connection failed").Int("attempt", i);
  }
  std::vector<std::string> lines = capture.Lines();
  ASSERT_THAT(lines, SizeIs(5));
  EXPECT_EQ(Field(ParseOrFail(lines[4]), "attempt"), "4");
  for (const std::string& line : lines)
    EXPECT_EQ(Field(ParseOrFail(line), "suppressed"), std::nullopt);

  g_now_ms += 10000;
  Log(LogLevel::kError, "database connection failed").Int("attempt", 100);
  lines = capture.Lines();
  ASSERT_THAT(lines, SizeIs(6));
  const JsonFields fields = ParseOrFail(lines[5]);
  ASSERT_THAT(fields, SizeIs(5));
  EXPECT_EQ(fields[2].second, "database connection failed");
  EXPECT_EQ(fields[3], (std::pair<std::string, std::string>{"suppressed", "95"}))
      << "the count comes right after msg";
  EXPECT_EQ(fields[4], (std::pair<std::string, std::string>{"attempt", "100"}));
}

TEST_F(LogTest, InfoAndWarnAreLimitedToo) {
  StderrCapture capture;
  for (int i = 0; i < 20; ++i) {
    Log(LogLevel::kInfo, "info again");
    Log(LogLevel::kWarn, "warn again");
  }
  EXPECT_THAT(capture.Lines(), SizeIs(10));
}

TEST_F(LogTest, DebugLinesAreNeverLimitedAndNeverReadTheClock) {
  StderrCapture capture;
  for (int i = 0; i < 100; ++i) Log(LogLevel::kDebug, "debug again");
  EXPECT_THAT(capture.Lines(), SizeIs(100));
  EXPECT_EQ(g_clock_reads, 0);
}

TEST_F(LogTest, ReportSuppressedWritesOneLinePerMessageOnceItsIntervalEnded) {
  StderrCapture capture;
  for (int i = 0; i < 12; ++i) Log(LogLevel::kError, "accept failed");
  for (int i = 0; i < 7; ++i) Log(LogLevel::kWarn, "cannot read from connection");
  Log(LogLevel::kWarn, "said once");
  ASSERT_THAT(capture.Lines(), SizeIs(11));

  LogReportSuppressed();
  EXPECT_THAT(capture.Lines(), SizeIs(11)) << "nothing to report before the interval ends";

  g_now_ms += 10000;
  LogReportSuppressed();
  const std::vector<std::string> lines = capture.Lines();
  ASSERT_THAT(lines, SizeIs(13));
  const JsonFields accept = ParseOrFail(lines[11]);
  EXPECT_EQ(Field(accept, "level"), "error");
  EXPECT_EQ(Field(accept, "msg"), kLogSuppressedMsg);
  EXPECT_EQ(Field(accept, "message"), "accept failed");
  EXPECT_EQ(Field(accept, "suppressed"), "7");
  const JsonFields read = ParseOrFail(lines[12]);
  EXPECT_EQ(Field(read, "level"), "warn");
  EXPECT_EQ(Field(read, "message"), "cannot read from connection");
  EXPECT_EQ(Field(read, "suppressed"), "2");

  LogReportSuppressed();
  EXPECT_THAT(capture.Lines(), SizeIs(13)) << "each count is reported once";
  Log(LogLevel::kError, "accept failed");
  EXPECT_EQ(Field(ParseOrFail(capture.Lines().back()), "suppressed"), std::nullopt)
      << "a reported count is not carried again";
}

TEST_F(LogTest, ReportSuppressedWritesNothingWhenNothingWasDropped) {
  StderrCapture capture;
  Log(LogLevel::kError, "once");
  g_now_ms += 60000;
  LogReportSuppressed();
  EXPECT_THAT(capture.Lines(), SizeIs(1));
}

TEST_F(LogTest, FlushSuppressedReportsCountsWhoseIntervalIsStillRunning) {
  StderrCapture capture;
  for (int i = 0; i < 8; ++i) Log(LogLevel::kWarn, "cannot read from connection");
  LogReportSuppressed();
  ASSERT_THAT(capture.Lines(), SizeIs(5));
  LogFlushSuppressed();
  ASSERT_THAT(capture.Lines(), SizeIs(6));
  const JsonFields fields = ParseOrFail(capture.Lines()[5]);
  EXPECT_EQ(Field(fields, "msg"), kLogSuppressedMsg);
  EXPECT_EQ(Field(fields, "suppressed"), "3");
  LogFlushSuppressed();
  EXPECT_THAT(capture.Lines(), SizeIs(6));
}

// Two threads (the loop and the admin server) log at once into a pipe, as stderr is in a
// container: lines longer than the pipe's buffer take several write(2) calls each, and still
// every line arrives whole.
TEST_F(LogTest, LinesFromTwoThreadsAreNeverInterleavedOnAPipe) {
  UseLimits({1000000, 10000, 256});
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const int saved = dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_GE(dup2(fds[1], STDERR_FILENO), 0);
  close(fds[1]);
  std::string text;
  std::thread reader([&text, fd = fds[0]] {
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) text.append(buf, static_cast<size_t>(n));
  });

  const std::string long_value(200000, 'v');  // Three times a pipe's default buffer.
  auto writer = [&long_value](const char* msg) {
    for (int i = 0; i < 50; ++i) Log(LogLevel::kWarn, msg).Int("i", i).Str("long", long_value);
  };
  std::thread other(writer, "from the other thread");
  writer("from the test thread");
  other.join();
  dup2(saved, STDERR_FILENO);  // Closes the pipe's last write end: the reader sees its end.
  close(saved);
  reader.join();
  close(fds[0]);

  size_t lines = 0;
  for (size_t start = 0; start < text.size(); ++lines) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::optional<JsonFields> fields = ParseJsonLine(text.substr(start, end - start));
    ASSERT_TRUE(fields.has_value()) << "line " << lines << " is broken";
    ASSERT_TRUE(Field(*fields, "long") == long_value) << "line " << lines << " lost bytes";
    start = end + 1;
  }
  EXPECT_EQ(lines, 100u);
}

}  // namespace
}  // namespace ratelimit

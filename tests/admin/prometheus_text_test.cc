// Tests of the strict Prometheus text parser that the admin tests read /metrics with.
#include "tests/testing/prometheus_text.h"

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <string>

namespace ratelimit {
namespace {

// The lines, each ending in a newline.
std::string Body(std::initializer_list<std::string_view> lines) {
  std::string body;
  for (std::string_view line : lines) {
    body += line;
    body += '\n';
  }
  return body;
}

TEST(PrometheusTextTest, AWellFormedBodyParsesIntoFamiliesSamplesAndUnescapedText) {
  const std::string body = Body({
      "# A comment that is neither HELP nor TYPE.",
      "# HELP http_requests_total Requests with a \\\\ and a\\nsecond line.",
      "# TYPE http_requests_total counter",
      R"(http_requests_total{method="post",path="C:\\dir \"x\"\nnext"} 1027 1395066363000)",
      R"(http_requests_total{ method = "get" , } 3)",
      "",
      "# HELP temperature_celsius A gauge.",
      "# TYPE temperature_celsius gauge",
      "temperature_celsius -3.5e-2",
      "\t temperature_celsius{room=\"b\"}\t+Inf ",
      "# HELP rpc_seconds A histogram.",
      "# TYPE rpc_seconds histogram",
      R"(rpc_seconds_bucket{le="0.05"} 24054)",
      R"(rpc_seconds_bucket{le="0.5"} 129389)",
      R"(rpc_seconds_bucket{le="+Inf"} 144320)",
      "rpc_seconds_sum 53423",
      "rpc_seconds_count 144320",
      R"(rpc_seconds_bucket{code="500",le="1e-05"} 0)",
      R"(rpc_seconds_bucket{code="500",le="+Inf"} 2)",
      R"(rpc_seconds_count{code="500"} 2)",
      R"(rpc_seconds_sum{code="500"} NaN)",
      "# HELP rpc_quantiles A summary.",
      "# TYPE rpc_quantiles summary",
      R"(rpc_quantiles{quantile="0.5"} 4773)",
      "rpc_quantiles_sum 1.7560473e+07",
      "rpc_quantiles_count 2693",
  });
  Result<PromText> parsed = ParsePrometheusText(body);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->families().size(), 4u);

  const PromFamily* requests = parsed->Family("http_requests_total");
  ASSERT_NE(requests, nullptr);
  EXPECT_EQ(requests->type, "counter");
  EXPECT_EQ(requests->help, "Requests with a \\ and a\nsecond line.");
  ASSERT_EQ(requests->samples.size(), 2u);
  EXPECT_EQ(requests->samples[0].line, 4);
  EXPECT_EQ(requests->samples[0].labels,
            (PromLabels{{"method", "post"}, {"path", "C:\\dir \"x\"\nnext"}}));
  EXPECT_EQ(requests->samples[0].value, 1027);
  EXPECT_EQ(parsed->Value("http_requests_total", {{"method", "get"}}), 3);
  EXPECT_EQ(parsed->Value("http_requests_total", {}), std::nullopt) << "labels must match exactly";
  EXPECT_EQ(parsed->Sum("http_requests_total"), 1030);

  EXPECT_EQ(parsed->Value("temperature_celsius"), -0.035);
  EXPECT_EQ(parsed->Value("temperature_celsius", {{"room", "b"}}), HUGE_VAL);

  EXPECT_EQ(parsed->Family("rpc_seconds")->samples.size(), 9u);
  EXPECT_EQ(parsed->Value("rpc_seconds_bucket", {{"le", "0.5"}}), 129389);
  EXPECT_EQ(parsed->Count("rpc_seconds_bucket", {{"code", "500"}}), 2u);
  EXPECT_TRUE(std::isnan(*parsed->Value("rpc_seconds_sum", {{"code", "500"}})));
  EXPECT_EQ(parsed->Value("rpc_quantiles_count"), 2693);
  EXPECT_EQ(parsed->Family("nothing"), nullptr);
}

TEST(PrometheusTextTest, AnEmptyBodyHasNoFamilies) {
  Result<PromText> parsed = ParsePrometheusText("");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(parsed->families().empty());
}

TEST(PrometheusTextTest, AFamilyMayBeDeclaredWithoutSamples) {
  Result<PromText> parsed =
      ParsePrometheusText(Body({"# HELP g_total Nothing yet.", "# TYPE g_total counter"}));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(parsed->Family("g_total")->samples.empty());
}

struct BadCase {
  std::string why;
  std::string body;
  std::string error;  // What the message must contain, "line N: ..." included.
};

class PrometheusTextRejects : public testing::TestWithParam<BadCase> {};

TEST_P(PrometheusTextRejects, ABodyThatBreaksTheFormatOrAConventionWithAMessageNamingTheLine) {
  const BadCase& c = GetParam();
  Result<PromText> parsed = ParsePrometheusText(c.body);
  ASSERT_FALSE(parsed.ok()) << "accepted:\n" << c.body;
  EXPECT_EQ(parsed.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find(c.error), std::string::npos)
      << "got: " << parsed.status().message() << "\nwanted: " << c.error;
}

// A gauge family named g, declared properly, then `samples`.
std::string Gauge(std::initializer_list<std::string_view> samples) {
  std::string body = Body({"# HELP g A gauge.", "# TYPE g gauge"});
  return body + Body(samples);
}

// A histogram family named h, declared properly, then `samples`.
std::string Histogram(std::initializer_list<std::string_view> samples) {
  std::string body = Body({"# HELP h A histogram.", "# TYPE h histogram"});
  return body + Body(samples);
}

const BadCase kBadCases[] = {
    // Lines and declarations.
    {"NoFinalNewline", "# HELP g A gauge.\n# TYPE g gauge\ng 1",
     "line 3: the body does not end in a newline: `g 1`"},
    {"CrLf", Gauge({"g 1\r"}), "line 3: value \"1\r\" is not a float"},
    {"SampleWithoutFamily", Body({"g 1"}), "line 1: sample g belongs to no family declared"},
    {"SampleBeforeType", Body({"# HELP g A gauge.", "g 1", "# TYPE g gauge"}),
     "line 2: sample before the # TYPE of g"},
    {"SampleBeforeHelp", Body({"# TYPE g gauge", "g 1", "# HELP g A gauge."}),
     "line 2: sample before the # HELP of g"},
    {"NoTypeAtAll", Body({"# HELP g A gauge."}), "line 1: family g has no # TYPE"},
    {"NoHelpAtAll", Body({"# TYPE g gauge"}), "line 1: family g has no # HELP"},
    {"NoHelpBeforeTheNextFamily", Body({"# TYPE g gauge", "# HELP f x", "# TYPE f gauge"}),
     "line 1: family g has no # HELP"},
    {"SecondHelp", Body({"# HELP g A gauge.", "# HELP g Again.", "# TYPE g gauge"}),
     "line 2: second # HELP for g (the first is at line 1)"},
    {"SecondType", Body({"# HELP g A gauge.", "# TYPE g gauge", "# TYPE g gauge"}),
     "line 3: second # TYPE for g"},
    {"UnknownType", Body({"# HELP g A gauge.", "# TYPE g gauges"}),
     "line 2: unknown type \"gauges\""},
    {"TextAfterType", Body({"# HELP g A gauge.", "# TYPE g gauge now"}),
     "line 2: text after the type"},
    {"HelpWithoutName", Body({"# HELP"}), "line 1: # HELP without a valid metric name"},
    {"HelpBadEscape", Body({"# HELP g A\\tgauge.", "# TYPE g gauge"}),
     "line 1: HELP text with an escape other than"},
    {"HelpEndsInBackslash", Body({"# HELP g A gauge\\", "# TYPE g gauge"}),
     "line 1: HELP text with an escape other than"},
    {"SamplesNotContiguous",
     Gauge({"g 1", "# HELP f A gauge.", "# TYPE f gauge", "f 1", "g{x=\"1\"} 2"}),
     "line 7: a sample of family g, which began at line 1, after another family"},
    {"DeclarationNotContiguous",
     Gauge({"g 1", "# HELP f A gauge.", "# TYPE f gauge", "f 1", "# TYPE g gauge"}),
     "line 7: family g began at line 1 and another family came since"},
    {"DuplicateSeries", Gauge({"g{a=\"1\",b=\"2\"} 1", "g{b=\"2\",a=\"1\"} 2"}),
     "line 4: duplicate series (also at line 3)"},
    {"DuplicateUnlabelledSeries", Gauge({"g 1", "g 2"}), "line 4: duplicate series"},

    // Names.
    {"MetricNameStartsWithDigit", Body({"# HELP 1g A gauge."}),
     "line 1: # HELP without a valid metric name"},
    {"SampleNameStartsWithDigit", Gauge({"1g 1"}), "line 3: expected a metric name"},
    {"SampleNameWithDash", Gauge({"g-x 1"}), "line 3: unexpected character after the metric name"},
    {"CounterWithoutTotal", Body({"# HELP requests Requests.", "# TYPE requests counter"}),
     "line 2: counter requests is not named ..._total"},
    {"NegativeCounter", Body({"# HELP c_total A counter.", "# TYPE c_total counter", "c_total -1"}),
     "line 3: counter c_total is negative or NaN"},
    {"NanCounter", Body({"# HELP c_total A counter.", "# TYPE c_total counter", "c_total NaN"}),
     "line 3: counter c_total is negative or NaN"},

    // Labels.
    {"LabelNameStartsWithDigit", Gauge({"g{1a=\"x\"} 1"}), "line 3: expected a label name"},
    {"ReservedLabelName", Gauge({"g{__name__=\"x\"} 1"}),
     "line 3: label name __name__ is reserved"},
    {"LabelTwice", Gauge({"g{a=\"1\",a=\"2\"} 1"}), "line 3: label a twice"},
    {"LabelWithoutEquals", Gauge({"g{a\"1\"} 1"}), "line 3: expected = after label a"},
    {"LabelValueUnquoted", Gauge({"g{a=1} 1"}), "line 3: expected \" to open label a"},
    {"LabelValueNotClosed", Gauge({"g{a=\"1} 1"}), "line 3: label value of a not closed"},
    {"LabelValueBadEscape", Gauge({"g{a=\"x\\ty\"} 1"}),
     "line 3: label value of a has an escape other than"},
    {"LabelsNotSeparated", Gauge({"g{a=\"1\" b=\"2\"} 1"}),
     "line 3: expected , or } after the value of label a"},
    {"LabelsNotClosed", Gauge({"g{a=\"1\""}), "line 3: expected , or } after the value"},

    // Values and timestamps.
    {"NoValue", Gauge({"g"}), "line 3: no value"},
    {"NoValueAfterLabels", Gauge({"g{a=\"1\"}"}), "line 3: no value"},
    {"CommaDecimal", Gauge({"g 1,5"}), "line 3: value \"1,5\" is not a float"},
    {"WordValue", Gauge({"g many"}), "line 3: value \"many\" is not a float"},
    {"HexValue", Gauge({"g 0x10"}), "line 3: value \"0x10\" is not a float"},
    {"LowercaseInf", Gauge({"g inf"}), "line 3: value \"inf\" is not a float"},
    {"BareExponent", Gauge({"g 1e"}), "line 3: value \"1e\" is not a float"},
    {"FloatTimestamp", Gauge({"g 1 2.5"}), "line 3: \"2.5\" after the value is not a timestamp"},
    {"TextAfterTimestamp", Gauge({"g 1 2 3"}), "line 3: text after the timestamp"},

    // Histograms.
    {"HistogramSampleWithoutSuffix", Histogram({"h 1"}),
     "line 3: sample h belongs to no family declared"},
    {"BucketWithoutLe", Histogram({"h_bucket 1"}), "line 3: a histogram bucket without le"},
    {"LeOnSum", Histogram({"h_bucket{le=\"+Inf\"} 1", "h_sum{le=\"1\"} 1"}),
     "line 4: le on a histogram's _sum or _count"},
    {"LeNotAFloat", Histogram({"h_bucket{le=\"big\"} 1", "h_sum 1", "h_count 1"}),
     "line 3: le=\"big\" is not a float"},
    {"LeNotAscending",
     Histogram({"h_bucket{le=\"2\"} 1", "h_bucket{le=\"1\"} 1", "h_bucket{le=\"+Inf\"} 1",
                "h_sum 1", "h_count 1"}),
     "line 4: le of h{} not ascending"},
    {"LeRepeated", Histogram({"h_bucket{le=\"1\"} 1", "h_bucket{le=\"1\"} 1"}),
     "line 4: duplicate series (also at line 3)"},
    {"NoInfBucket", Histogram({"h_bucket{le=\"1\"} 1", "h_sum 1", "h_count 1"}),
     "line 3: the last bucket of histogram h{} is not le=\"+Inf\""},
    {"InfBucketNotLast",
     Histogram({"h_bucket{le=\"+Inf\"} 1", "h_bucket{le=\"1\"} 1", "h_sum 1", "h_count 1"}),
     "line 4: le of h{} not ascending"},
    {"CountsDecrease",
     Histogram({"h_bucket{le=\"1\"} 5", "h_bucket{le=\"+Inf\"} 4", "h_sum 1", "h_count 4"}),
     "line 4: bucket count of h{} decreases"},
    {"NegativeBucket", Histogram({"h_bucket{le=\"+Inf\"} -1"}),
     "line 3: a histogram count that is negative, infinite or NaN"},
    {"CountIsNotTheInfBucket",
     Histogram({"h_bucket{le=\"1\"} 1", "h_bucket{le=\"+Inf\"} 3", "h_sum 1", "h_count 2"}),
     "line 6: _count of histogram h{} differs from its +Inf bucket"},
    {"NoCount", Histogram({"h_bucket{le=\"+Inf\"} 3", "h_sum 1"}),
     "line 3: histogram h{} has no _count"},
    {"NoSum", Histogram({"h_bucket{le=\"+Inf\"} 3", "h_count 3"}),
     "line 3: histogram h{} has no _sum"},
    {"NoBuckets", Histogram({"h_sum 1", "h_count 3"}), "line 3: histogram h{} has no _bucket"},
    {"SecondSeriesIncomplete",
     Histogram({"h_bucket{le=\"+Inf\"} 3", "h_sum 1", "h_count 3",
                "h_bucket{x=\"1\",le=\"+Inf\"} 1", "h_sum{x=\"1\"} 1"}),
     "line 6: histogram h{x=\"1\"} has no _count"},
};

INSTANTIATE_TEST_SUITE_P(BadBodies, PrometheusTextRejects, testing::ValuesIn(kBadCases),
                         [](const auto& param_info) { return param_info.param.why; });

TEST(PrometheusTextTest, AnErrorQuotesALongLineCut) {
  const std::string long_name(300, 'a');
  Result<PromText> parsed = ParsePrometheusText(Body({long_name + " 1"}));
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("`" + std::string(160, 'a') + "...`"), std::string::npos)
      << parsed.status().message();
}
}  // namespace
}  // namespace ratelimit

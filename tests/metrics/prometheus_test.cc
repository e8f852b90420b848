// Tests of MetricsRegistry's text format and FormatMetricValue.
#include "sidecar/metrics/prometheus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "tests/testing/prometheus_text.h"

namespace ratelimit {
namespace {

TEST(MetricsRegistryTest, RendersFamiliesGroupedWithEscapedHelpAndLabelValues) {
  Counter ok_requests;
  Counter failed_requests;
  Gauge temperature;
  Histogram latency({250'000, 1'000'000'000});  // Nanoseconds, exposed in seconds.
  Histogram sizes({1, 4});
  MetricsRegistry registry;
  constexpr const char* kHelp = "Requests \\ by \"path\"\nand code.";
  registry.AddCounter("app_requests_total", kHelp, ok_requests,
                      {{"path", "C:\\dir \"x\"\nnext"}, {"code", "200"}});
  registry.AddGauge("app_temperature", "Temperature.", temperature);
  // Added after another family, rendered with its own.
  registry.AddCounter("app_requests_total", kHelp, failed_requests,
                      {{"path", "/"}, {"code", "500"}});
  registry.AddHistogram("app_latency_seconds", "Latency.", latency, 1e9);
  registry.AddHistogram("app_batch_size", "Sizes.", sizes, 1, {{"kind", "x"}});

  ok_requests.Add(3);
  failed_requests.Add();
  temperature.Set(-4);
  latency.Observe(100'000);
  latency.Observe(250'000);
  latency.Observe(2'000'000'000);
  sizes.Observe(3, 2);

  const std::string expected =
      "# HELP app_requests_total Requests \\\\ by \"path\"\\nand code.\n"
      "# TYPE app_requests_total counter\n"
      "app_requests_total{path=\"C:\\\\dir \\\"x\\\"\\nnext\",code=\"200\"} 3\n"
      "app_requests_total{path=\"/\",code=\"500\"} 1\n"
      "# HELP app_temperature Temperature.\n"
      "# TYPE app_temperature gauge\n"
      "app_temperature -4\n"
      "# HELP app_latency_seconds Latency.\n"
      "# TYPE app_latency_seconds histogram\n"
      "app_latency_seconds_bucket{le=\"0.00025\"} 2\n"
      "app_latency_seconds_bucket{le=\"1\"} 2\n"
      "app_latency_seconds_bucket{le=\"+Inf\"} 3\n"
      "app_latency_seconds_sum 2.00035\n"
      "app_latency_seconds_count 3\n"
      "# HELP app_batch_size Sizes.\n"
      "# TYPE app_batch_size histogram\n"
      "app_batch_size_bucket{kind=\"x\",le=\"1\"} 0\n"
      "app_batch_size_bucket{kind=\"x\",le=\"4\"} 2\n"
      "app_batch_size_bucket{kind=\"x\",le=\"+Inf\"} 2\n"
      "app_batch_size_sum{kind=\"x\"} 6\n"
      "app_batch_size_count{kind=\"x\"} 2\n";
  const std::string rendered = registry.Render();
  EXPECT_EQ(rendered, expected);

  // What it escaped reads back as it was given.
  Result<PromText> parsed = ParsePrometheusText(rendered);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->Family("app_requests_total")->help, kHelp);
  EXPECT_EQ(parsed->Value("app_requests_total", {{"path", "C:\\dir \"x\"\nnext"}, {"code", "200"}}),
            3);
}

TEST(MetricsRegistryTest, EachRenderReadsTheMetricsAsTheyAreThen) {
  Counter checks;
  Gauge open;
  MetricsRegistry registry;
  registry.AddCounter("checks_total", "Checks.", checks);
  registry.AddGauge("open", "Open.", open);
  EXPECT_EQ(registry.Render(),
            "# HELP checks_total Checks.\n# TYPE checks_total counter\nchecks_total 0\n"
            "# HELP open Open.\n# TYPE open gauge\nopen 0\n");
  checks.Add(12);
  open.Set(-1);
  EXPECT_EQ(registry.Render(),
            "# HELP checks_total Checks.\n# TYPE checks_total counter\nchecks_total 12\n"
            "# HELP open Open.\n# TYPE open gauge\nopen -1\n");
}

TEST(MetricsRegistryTest, AnEmptyRegistryRendersNothing) {
  EXPECT_EQ(MetricsRegistry().Render(), "");
}

TEST(MetricsRegistryTest, ALargeCounterRendersAllItsDigits) {
  Counter big;
  big.Set(std::numeric_limits<uint64_t>::max());
  MetricsRegistry registry;
  registry.AddCounter("big_total", "Big.", big);
  EXPECT_NE(registry.Render().find("big_total 18446744073709551615\n"), std::string::npos);
}

using MetricsRegistryDeathTest = testing::Test;

TEST(MetricsRegistryDeathTest, AnInvalidNameOrLabelOrAFamilyWithTwoTypesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Counter counter;
  Gauge gauge;
  EXPECT_DEATH(MetricsRegistry().AddCounter("bad name_total", "x", counter), "");
  EXPECT_DEATH(MetricsRegistry().AddCounter("1st_total", "x", counter), "");
  EXPECT_DEATH(MetricsRegistry().AddCounter("a_total", "x", counter, {{"bad-label", "v"}}), "");
  EXPECT_DEATH(MetricsRegistry().AddCounter("a_total", "x", counter, {{"le", "1"}}), "");
  EXPECT_DEATH(
      {
        MetricsRegistry registry;
        registry.AddCounter("a_total", "x", counter);
        registry.AddGauge("a_total", "x", gauge);
      },
      "");
  EXPECT_DEATH(
      {
        MetricsRegistry registry;
        registry.AddCounter("a_total", "x", counter, {{"k", "1"}});
        registry.AddCounter("a_total", "another help", counter, {{"k", "2"}});
      },
      "");
}

TEST(FormatMetricValueTest, WritesIntegersWholeAndOthersInTheShortestFormThatReadsBack) {
  const double inf = std::numeric_limits<double>::infinity();
  const struct {
    double value;
    std::string text;
  } cases[] = {
      {0, "0"},
      {1, "1"},
      {42, "42"},
      {-3, "-3"},
      {1e14, "100000000000000"},
      {1e15, "1e+15"},
      {0.00025, "0.00025"},
      {1e-05, "1e-05"},
      {2.5e-05, "2.5e-05"},
      {0.1, "0.1"},
      {1.5, "1.5"},
      {1234.5, "1234.5"},
      {2.00035, "2.00035"},
      {1.0 / 3, "0.3333333333333333"},
      {inf, "+Inf"},
      {-inf, "-Inf"},
      {std::nan(""), "NaN"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(FormatMetricValue(c.value), c.text) << c.value;
  }
}

TEST(FormatMetricValueTest, EveryFiniteValueReadsBackToTheSameDouble) {
  for (double value : {0.1 + 0.2, 1e-300, 123456.789, 9.999999999999999e22,
                       -2.2250738585072014e-308, std::nextafter(1.0, 2.0)}) {
    const std::string text = FormatMetricValue(value);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), value) << text;
  }
}

}  // namespace
}  // namespace ratelimit

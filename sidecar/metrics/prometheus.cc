// MetricsRegistry: names metrics and renders them in the Prometheus text exposition format.
#include "sidecar/metrics/prometheus.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ratelimit {
namespace {

bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// HELP text escapes backslash and newline; label values also escape the double quote.
void AppendEscaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// {a="1",b="2"} with `extra` (the le label) last; nothing when there are no labels at all.
void AppendLabels(std::string& out, const MetricLabels& labels, const MetricLabel* extra) {
  if (labels.empty() && extra == nullptr) return;
  out += '{';
  bool first = true;
  auto one = [&](const MetricLabel& label) {
    if (!first) out += ',';
    first = false;
    out += label.name;
    out += "=\"";
    AppendEscaped(out, label.value, /*quote=*/true);
    out += '"';
  };
  for (const MetricLabel& label : labels) one(label);
  if (extra != nullptr) one(*extra);
  out += '}';
}

void AppendSample(std::string& out, std::string_view name, std::string_view suffix,
                  const MetricLabels& labels, const MetricLabel* extra, std::string_view value) {
  out += name;
  out += suffix;
  AppendLabels(out, labels, extra);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  if (value == std::trunc(value) && std::fabs(value) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", value);
    return buf;
  }
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

void MetricsRegistry::AddCounter(std::string_view name, std::string_view help,
                                 const Counter& counter, MetricLabels labels) {
  Add(name, help, Type::kCounter, Series{std::move(labels), &counter, 1});
}

void MetricsRegistry::AddGauge(std::string_view name, std::string_view help, const Gauge& gauge,
                               MetricLabels labels) {
  Add(name, help, Type::kGauge, Series{std::move(labels), &gauge, 1});
}

void MetricsRegistry::AddHistogram(std::string_view name, std::string_view help,
                                   const Histogram& histogram, double units_per_base_unit,
                                   MetricLabels labels) {
  Add(name, help, Type::kHistogram, Series{std::move(labels), &histogram, units_per_base_unit});
}

void MetricsRegistry::Add(std::string_view name, std::string_view help, Type type, Series series) {
  if (!ValidName(name)) std::abort();  // A programming error, caught by any test that starts.
  for (const MetricLabel& label : series.labels) {
    if (!ValidName(label.name) || label.name == "le") std::abort();
  }
  for (Family& family : families_) {
    if (family.name == name) {
      if (family.type != type || family.help != help) std::abort();
      family.series.push_back(std::move(series));
      return;
    }
  }
  families_.push_back(Family{std::string(name), std::string(help), type, {}});
  families_.back().series.push_back(std::move(series));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  out.reserve(8192);
  for (const Family& family : families_) {
    out += "# HELP ";
    out += family.name;
    out += ' ';
    AppendEscaped(out, family.help, /*quote=*/false);
    out += "\n# TYPE ";
    out += family.name;
    out += ' ';
    out += family.type == Type::kCounter ? "counter"
           : family.type == Type::kGauge ? "gauge"
                                         : "histogram";
    out += '\n';
    for (const Series& series : family.series) {
      switch (family.type) {
        case Type::kCounter:
          AppendSample(out, family.name, "", series.labels, nullptr,
                       std::to_string(static_cast<const Counter*>(series.metric)->value()));
          break;
        case Type::kGauge:
          AppendSample(out, family.name, "", series.labels, nullptr,
                       std::to_string(static_cast<const Gauge*>(series.metric)->value()));
          break;
        case Type::kHistogram: {
          const auto* histogram = static_cast<const Histogram*>(series.metric);
          const Histogram::Reading reading = histogram->Read();
          const std::vector<uint64_t>& bounds = histogram->bounds();
          for (size_t i = 0; i <= bounds.size(); ++i) {
            const MetricLabel le{
                "le", i < bounds.size()
                          ? FormatMetricValue(static_cast<double>(bounds[i]) / series.divisor)
                          : "+Inf"};
            AppendSample(out, family.name, "_bucket", series.labels, &le,
                         std::to_string(reading.cumulative[i]));
          }
          AppendSample(out, family.name, "_sum", series.labels, nullptr,
                       FormatMetricValue(static_cast<double>(reading.sum) / series.divisor));
          AppendSample(out, family.name, "_count", series.labels, nullptr,
                       std::to_string(reading.cumulative.back()));
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace ratelimit

// Names of check statuses and sources, as they appear in logs, JSON and metrics.
#include "schema/check.h"

namespace ratelimit {

const char* CheckStatusName(CheckStatus status) {
  switch (status) {
    case CheckStatus::kOk:
      return "ok";
    case CheckStatus::kInvalidRequest:
      return "invalid_request";
    case CheckStatus::kCostExceedsLimit:
      return "cost_exceeds_limit";
    case CheckStatus::kStoreUnavailable:
      return "store_unavailable";
    case CheckStatus::kOverloaded:
      return "overloaded";
    case CheckStatus::kShuttingDown:
      return "shutting_down";
  }
  return "unknown";
}

const char* SourceName(Source source) {
  switch (source) {
    case Source::kMemory:
      return "memory";
    case Source::kLease:
      return "lease";
    case Source::kDatabase:
      return "database";
    case Source::kFallback:
      return "fallback";
  }
  return "unknown";
}

}  // namespace ratelimit

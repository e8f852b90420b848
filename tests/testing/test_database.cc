// Test access to the throwaway PostgreSQL 15 that scripts/with-postgres.sh starts.
#include "tests/testing/test_database.h"

#include <stdlib.h>

#include <string>

namespace ratelimit {
namespace {

std::string Env(const char* name) {
  const char* value = getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

std::string TestDatabaseUrl() { return Env("RATELIMIT_TEST_DATABASE_URL"); }

std::string TestPgLogPath() { return Env("RATELIMIT_TEST_PG_LOG"); }

std::string TestPgDataDir() { return Env("RATELIMIT_TEST_PG_DATA"); }

std::string TestPgBinDir() { return Env("RATELIMIT_TEST_PG_BIN"); }

bool TestDatabaseRequired() { return Env("RATELIMIT_REQUIRE_PG") == "1"; }

std::string NoTestDatabaseMessage() {
  return std::string("RATELIMIT_TEST_DATABASE_URL is not set") +
         (TestDatabaseRequired() ? " but RATELIMIT_REQUIRE_PG=1" : "") +
         ": run the tests through scripts/with-postgres.sh, e.g. "
         "`scripts/with-postgres.sh ctest --test-dir build`";
}

}  // namespace ratelimit

// Test access to the throwaway PostgreSQL 15 that scripts/with-postgres.sh starts.
#ifndef RATELIMIT_TESTS_TESTING_TEST_DATABASE_H_
#define RATELIMIT_TESTS_TESTING_TEST_DATABASE_H_

#include <gtest/gtest.h>

#include <string>

namespace ratelimit {

// Everything below reads the environment that scripts/with-postgres.sh exports; each function
// returns "" when its variable is unset. The server is shared by every test of a ctest run
// (tests may run in parallel), so a test uses its own table names and keys.

// libpq keyword/value conninfo of the server ($RATELIMIT_TEST_DATABASE_URL).
std::string TestDatabaseUrl();

// The server's log file ($RATELIMIT_TEST_PG_LOG): lock waits and deadlocks are reported there.
std::string TestPgLogPath();

// The data directory ($RATELIMIT_TEST_PG_DATA) and the PostgreSQL binaries
// ($RATELIMIT_TEST_PG_BIN), for fault tests that stop and restart the server with pg_ctl. Under
// root the server belongs to the `postgres` OS user, so pg_ctl must run as that user.
std::string TestPgDataDir();
std::string TestPgBinDir();

// True when RATELIMIT_REQUIRE_PG=1 (scripts/test.sh sets it): a missing database is then an
// error, not a reason to skip.
bool TestDatabaseRequired();

// Why a PostgreSQL test cannot run, for REQUIRE_TEST_DATABASE().
std::string NoTestDatabaseMessage();

}  // namespace ratelimit

// Put at the start of a PostgreSQL test's body (or its fixture's SetUp()). Without a test
// database it fails the test when RATELIMIT_REQUIRE_PG=1, else skips it; either way it returns
// from the enclosing function.
#define REQUIRE_TEST_DATABASE()                               \
  do {                                                        \
    if (::ratelimit::TestDatabaseUrl().empty()) {             \
      if (::ratelimit::TestDatabaseRequired()) {              \
        GTEST_FAIL() << ::ratelimit::NoTestDatabaseMessage(); \
      }                                                       \
      GTEST_SKIP() << ::ratelimit::NoTestDatabaseMessage();   \
    }                                                         \
  } while (0)

#endif  // RATELIMIT_TESTS_TESTING_TEST_DATABASE_H_

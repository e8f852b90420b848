// StripOrmParameters and TableForUrl (sidecar/pg/conninfo): DATABASE_URLs as Node stacks write
// them, their ORM parameters taken out before libpq sees them; the keepalives every connection
// gets.
#include "sidecar/pg/conninfo.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace ratelimit {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

struct StripCase {
  std::string name;
  std::string url;
  std::string conninfo;  // What libpq gets.
  std::string schema;
  bool pgbouncer;
  std::vector<std::string> ignored;
};

std::ostream& operator<<(std::ostream& out, const StripCase& c) { return out << c.name; }

class StripOrmParametersTest : public ::testing::TestWithParam<StripCase> {};

TEST_P(StripOrmParametersTest, TakesOutTheOrmParametersAndKeepsTheRestExactly) {
  const StripCase& c = GetParam();
  Result<CleanConninfo> clean = StripOrmParameters(c.url);
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_EQ(clean->conninfo, c.conninfo);
  EXPECT_EQ(clean->schema, c.schema);
  EXPECT_EQ(clean->pgbouncer, c.pgbouncer);
  EXPECT_THAT(clean->ignored, ElementsAreArray(c.ignored));
  EXPECT_TRUE(ValidateConninfo(clean->conninfo).ok()) << "libpq accepts what is left";
}

INSTANTIATE_TEST_SUITE_P(
    Urls, StripOrmParametersTest,
    ::testing::Values(
        StripCase{"PrismaUri",
                  "postgresql://u:p%40ss@db:5432/app?schema=public&connection_limit=5",
                  "postgresql://u:p%40ss@db:5432/app",
                  "public",
                  false,
                  {"connection_limit"}},
        StripCase{"EveryOrmParameterBetweenLibpqOnes",
                  "postgres://u@h/db?sslmode=require&schema=rl&pgbouncer=true&connection_limit=5"
                  "&pool_timeout=10&sslaccept=strict&socket_timeout=3&statement_cache_size=0"
                  "&application_name=x",
                  "postgres://u@h/db?sslmode=require&application_name=x",
                  "rl",
                  true,
                  {"connection_limit", "pool_timeout", "sslaccept", "socket_timeout",
                   "statement_cache_size"}},
        StripCase{"PercentEncodedNamesAndValues",
                  "postgresql://h/db?sch%65ma=my%5Fschema&pgbouncer=%31",
                  "postgresql://h/db",
                  "my_schema",
                  true,
                  {}},
        StripCase{"OtherParametersKeepTheirEncoding",
                  "postgresql://h/db?application_name=a%20b&schema=s&options=-c%20x%3Dy",
                  "postgresql://h/db?application_name=a%20b&options=-c%20x%3Dy",
                  "s",
                  false,
                  {}},
        StripCase{"PasswordHoldingWhatLooksLikeAQuery",
                  "postgresql://u:pa?schema=x&y@h/db?schema=real",
                  "postgresql://u:pa?schema=x&y@h/db",
                  "real",
                  false,
                  {}},
        StripCase{"MultiHostUri",
                  "postgresql://h1:5432,h2:5433/db?target_session_attrs=read-write&schema=s",
                  "postgresql://h1:5432,h2:5433/db?target_session_attrs=read-write",
                  "s",
                  false,
                  {}},
        StripCase{"Ipv6HostAndNoDatabase",
                  "postgresql://[::1]:5432?pgbouncer=false&connect_timeout=2",
                  "postgresql://[::1]:5432?connect_timeout=2",
                  "",
                  false,
                  {}},
        StripCase{"RepeatedParametersTheLastWins",
                  "postgresql://h/db?schema=a&connection_limit=1&schema=b&connection_limit=2",
                  "postgresql://h/db",
                  "b",
                  false,
                  {"connection_limit"}},
        StripCase{"UriWithoutOrmParameters",
                  "postgresql://u:secret@h/db?sslmode=disable",
                  "postgresql://u:secret@h/db?sslmode=disable",
                  "",
                  false,
                  {}},
        StripCase{"KeywordValue",
                  "host=h schema=public dbname=app connection_limit=5",
                  "host=h dbname=app ",
                  "public",
                  false,
                  {"connection_limit"}},
        StripCase{"KeywordValueQuotedWithEscapes",
                  "host=h schema = 'rl' password='a b\\' schema=x' pgbouncer=1",
                  "host=h password='a b\\' schema=x' ",
                  "rl",
                  true,
                  {}},
        StripCase{"Empty", "", "", "", false, {}}),
    [](const ::testing::TestParamInfo<StripCase>& param_info) { return param_info.param.name; });

TEST(StripOrmParametersTest, LeavesTextThatIsNotAConnectionStringToValidateConninfo) {
  for (const std::string url : {"secret", "host=h password='secret", "postgresql://h/db?x"}) {
    Result<CleanConninfo> clean = StripOrmParameters(url);
    ASSERT_TRUE(clean.ok()) << url;
    EXPECT_EQ(clean->conninfo, url);
    EXPECT_FALSE(ValidateConninfo(clean->conninfo).ok()) << url;
  }
}

struct RefusedCase {
  std::string url;
  std::string says;  // What the error names.
};

TEST(StripOrmParametersTest, RefusesWhatItCannotUseInOneLineWithoutThePassword) {
  const std::vector<RefusedCase> cases = {
      {"postgresql://u:secret@h/db?schema=public&bogus=1", "unknown parameter \"bogus\""},
      {"host=h password=secret bogus=1", "unknown parameter \"bogus\""},
      {"postgresql://u:secret@h/db?bo%20gus=1", "a parameter with an unknown name"},
      {"postgresql://u:secret@h/db?schema=Public", "schema parameter"},
      {"postgresql://u:secret@h/db?schema=a%22b", "schema parameter"},
      {"postgresql://u:secret@h/db?schema=%zz", "schema parameter"},
      {"postgresql://u:secret@h/db?pgbouncer=yes", "pgbouncer parameter"},
  };
  for (const RefusedCase& c : cases) {
    Result<CleanConninfo> clean = StripOrmParameters(c.url);
    ASSERT_FALSE(clean.ok()) << c.url;
    const std::string& message = clean.status().message();
    EXPECT_THAT(message, HasSubstr("DATABASE_URL is invalid")) << c.url;
    EXPECT_THAT(message, HasSubstr(c.says)) << c.url;
    EXPECT_THAT(message, Not(HasSubstr("secret"))) << c.url;
    EXPECT_THAT(message, Not(HasSubstr("bo gus"))) << c.url;
    EXPECT_EQ(message.find('\n'), std::string::npos) << c.url;
  }
}

TEST(StripOrmParametersTest, TheCleanedUrlRedactsLikeAnyOther) {
  Result<CleanConninfo> clean =
      StripOrmParameters("postgresql://u:hunter2@db:5432/app?schema=public&connection_limit=5");
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(RedactConninfo(clean->conninfo), "user=u password=*** dbname=app host=db port=5432");
}

TEST(TableForUrlTest, TheUrlsSchemaUnlessTheTableNamesOne) {
  CleanConninfo url;
  url.schema = "app";
  EXPECT_EQ(TableForUrl(TableName{"", "buckets"}, url).Plain(), "app.buckets");
  EXPECT_EQ(TableForUrl(TableName{"rl", "buckets"}, url).Plain(), "rl.buckets");
  EXPECT_EQ(TableForUrl(TableName{"", "buckets"}, CleanConninfo{}).Plain(), "buckets");
}

constexpr const char* kKeepalives =
    "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3 "
    "tcp_user_timeout=10000";

TEST(WithKeepalivesTest, AddsTheTcpSettingsToEveryFormOfConninfo) {
  EXPECT_EQ(WithKeepalives(""), kKeepalives) << "libpq's PG* variables still give the rest";
  EXPECT_EQ(WithKeepalives("host=db dbname=app"), std::string("host=db dbname=app ") + kKeepalives);
  EXPECT_EQ(WithKeepalives("postgresql://db/app"),
            "postgresql://db/app?keepalives=1&keepalives_idle=10&keepalives_interval=5&"
            "keepalives_count=3&tcp_user_timeout=10000");
  EXPECT_EQ(WithKeepalives("postgresql://db/app?"),
            "postgresql://db/app?keepalives=1&keepalives_idle=10&keepalives_interval=5&"
            "keepalives_count=3&tcp_user_timeout=10000");
  EXPECT_EQ(WithKeepalives("postgres://u:p%3Fw@db/app?sslmode=disable&"),
            "postgres://u:p%3Fw@db/app?sslmode=disable&keepalives=1&keepalives_idle=10&"
            "keepalives_interval=5&keepalives_count=3&tcp_user_timeout=10000");
}

TEST(WithKeepalivesTest, WhatTheOperatorSetsWins) {
  EXPECT_EQ(WithKeepalives("host=db keepalives_idle=60 tcp_user_timeout=0 keepalives_count="),
            "host=db keepalives_idle=60 tcp_user_timeout=0 keepalives_count= keepalives=1 "
            "keepalives_interval=5");
  EXPECT_EQ(WithKeepalives("postgresql://db/app?keepalives=0&sslmode=require"),
            "postgresql://db/app?keepalives=0&sslmode=require&keepalives_idle=10&"
            "keepalives_interval=5&keepalives_count=3&tcp_user_timeout=10000");
  const std::string all = std::string("host=db ") + kKeepalives;
  EXPECT_EQ(WithKeepalives(all), all) << "adding them twice adds nothing";
}

TEST(WithKeepalivesTest, WhatLibpqGetsAndTheStartUpLineShow) {
  for (const std::string url : {"", "host=db password=hunter2", "postgresql://u:hunter2@db/app"}) {
    const std::string with = WithKeepalives(url);
    EXPECT_TRUE(ValidateConninfo(with).ok()) << url;
    EXPECT_EQ(ConninfoPassword(with), ConninfoPassword(url)) << url;
    const std::string shown = RedactConninfo(with);
    EXPECT_THAT(shown, Not(HasSubstr("hunter2")));
    EXPECT_THAT(shown, HasSubstr("keepalives=1 keepalives_idle=10 keepalives_interval=5 "
                                 "keepalives_count=3 tcp_user_timeout=10000"))
        << "in libpq's order";
    const ConnParams params = ParseConnParams(with);
    for (const std::string keyword : {"keepalives_idle", "tcp_user_timeout"}) {
      EXPECT_THAT(params.keywords, ::testing::Contains(keyword)) << url;
    }
  }
}

TEST(WithKeepalivesTest, LeavesTextLibpqCannotParseToValidateConninfo) {
  EXPECT_EQ(WithKeepalives("host='unterminated"), "host='unterminated");
  EXPECT_EQ(WithKeepalives("postgresql://db/app?nonsense=1"), "postgresql://db/app?nonsense=1");
}

}  // namespace
}  // namespace ratelimit

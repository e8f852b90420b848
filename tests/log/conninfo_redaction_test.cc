// Unit tests of RedactConninfo and ValidateConninfo (sidecar/pg/conninfo): DATABASE_URL as it
// may appear in a log, with no password left in it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sidecar/pg/conninfo.h"

namespace ratelimit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct RedactCase {
  std::string name;
  std::string conninfo;
  std::string redacted;
  std::vector<std::string> secrets;  // None of them may appear in the result.
};

std::ostream& operator<<(std::ostream& out, const RedactCase& c) { return out << c.name; }

class RedactConninfoTest : public ::testing::TestWithParam<RedactCase> {};

TEST_P(RedactConninfoTest, ShowsEverySettingButNoSecret) {
  const RedactCase& c = GetParam();
  const std::string redacted = RedactConninfo(c.conninfo);
  EXPECT_EQ(redacted, c.redacted);
  for (const std::string& secret : c.secrets) EXPECT_THAT(redacted, Not(HasSubstr(secret)));
}

TEST_P(RedactConninfoTest, RedactedTextIsAValidConninfoThatRedactsToItself) {
  const RedactCase& c = GetParam();
  const std::string redacted = RedactConninfo(c.conninfo);
  EXPECT_TRUE(ValidateConninfo(redacted).ok()) << redacted;
  EXPECT_EQ(RedactConninfo(redacted), redacted);
}

INSTANTIATE_TEST_SUITE_P(
    Forms, RedactConninfoTest,
    ::testing::Values(
        RedactCase{"Empty", "", "", {}},
        RedactCase{"UriWithPasswordAndSslmode",
                   "postgresql://u:secret@h:5432/db?sslmode=require",
                   "user=u password=*** dbname=db host=h port=5432 sslmode=require",
                   {"secret"}},
        RedactCase{"UriWithPercentEncodedPassword",
                   "postgresql://u:p%40ss%2Fw%3Ard%20x@h/db",
                   "user=u password=*** dbname=db host=h",
                   {"p%40ss", "p@ss", "w:rd", "ss%2F"}},
        RedactCase{"PostgresScheme",
                   "postgres://u:secret@h/db",
                   "user=u password=*** dbname=db host=h",
                   {"secret"}},
        RedactCase{"UriWithPasswordInTheQuery",
                   "postgresql://h/db?user=u&password=q-secret&application_name=rl",
                   "user=u password=*** dbname=db host=h application_name=rl",
                   {"q-secret"}},
        RedactCase{"UriWithoutPassword",
                   "postgresql://u@h1:5432,h2:5433/db",
                   "user=u dbname=db host=h1,h2 port=5432,5433",
                   {}},
        RedactCase{"UriWithSocketDirectory",
                   "postgresql://u:secret@%2Fvar%2Frun%2Fpostgresql/db",
                   "user=u password=*** dbname=db host=/var/run/postgresql",
                   {"secret"}},
        RedactCase{"KeywordValue", "host=h password=secret", "password=*** host=h", {"secret"}},
        RedactCase{"KeywordValueQuotedWithSpacesAndEscapes",
                   "host=h password='se cret \\' \\\\ q' dbname='my db' user=o\\'brien",
                   "user='o\\'brien' password=*** dbname='my db' host=h",
                   {"se cret", "cret"}},
        RedactCase{"KeywordValueWithEmptyValue", "host=h options=''", "host=h options=''", {}},
        RedactCase{"SslKeyPassword",
                   "host=h sslkey=/k.pem sslpassword=keypass",
                   "host=h sslkey=/k.pem sslpassword=***",
                   {"keypass"}},
        RedactCase{"DbnameHoldingAConnectionString",
                   "dbname='host=x password=inner-secret'",
                   "dbname='password=*** host=x'",
                   {"inner-secret"}},
        RedactCase{"DbnameHoldingAUri",
                   "dbname=postgresql://u:inner-secret@x/db",
                   "dbname='user=u password=*** dbname=db host=x'",
                   {"inner-secret"}}),
    [](const ::testing::TestParamInfo<RedactCase>& param_info) { return param_info.param.name; });

TEST(RedactConninfoUnparseableTest, GivesAPlaceholderAndNeverTheText) {
  const std::vector<std::string> unparseable = {
      "host=h password=secret bogus=1",      // Unknown keyword.
      "postgresql://u:secret@h/db?bogus=1",  // Unknown URI parameter.
      "host=h password='secret",             // Unterminated quote.
      "postgresql://u:secret@[h/db",         // Unterminated IPv6 literal.
      "secret",                              // Not a conninfo at all.
  };
  for (const std::string& conninfo : unparseable) {
    EXPECT_EQ(RedactConninfo(conninfo), kUnparseableConninfo) << conninfo;
    EXPECT_FALSE(ValidateConninfo(conninfo).ok()) << conninfo;
  }
}

TEST(ValidateConninfoTest, ErrorNeverQuotesTheValue) {
  const Status status = ValidateConninfo("postgresql://u:secret@h/db?bogus=1");
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("DATABASE_URL"));
  EXPECT_THAT(status.message(), Not(HasSubstr("secret")));
  EXPECT_THAT(status.message(), Not(HasSubstr("bogus")));
}

TEST(ConninfoPasswordTest, FindsTheDecodedPasswordOfAUri) {
  EXPECT_EQ(ConninfoPassword("postgresql://u:p%40ss@h/db"), "p@ss");
  EXPECT_EQ(ConninfoPassword("host=h password='a b'"), "a b");
}

}  // namespace
}  // namespace ratelimit

// Unit tests of the typed configuration parsers: bounds, allowed texts and round trips.
#include "sidecar/config/config_parsers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace ratelimit {
namespace {

TEST(ParseDigitsTest, WholeTextOfDigitsWithinBounds) {
  EXPECT_EQ(ParseDigits("42", 10, 0, 100), 42u);
  EXPECT_EQ(ParseDigits("0", 10, 0, 0), 0u);
  EXPECT_EQ(ParseDigits("777", 8, 0, 0777), 0777u);
  EXPECT_EQ(ParseDigits("18446744073709551615", 10, 0, UINT64_MAX), UINT64_MAX);
  for (const char* bad :
       {"", "+1", "-1", " 1", "1 ", "1.0", "0x1", "1e3", "101", "18446744073709551616"}) {
    EXPECT_EQ(ParseDigits(bad, 10, 0, 100), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseDigits("8", 8, 0, 0777), std::nullopt);
  EXPECT_EQ(ParseDigits("4", 10, 5, 9), std::nullopt);
}

TEST(IntegerInTest, AllowedTextComesFromTheBounds) {
  const IntegerIn parser{5, 9, "pods"};
  EXPECT_EQ(parser.Allowed(), "an integer from 5 to 9 (pods)");
  EXPECT_EQ((IntegerIn{1, 2, ""}.Allowed()), "an integer from 1 to 2");
  EXPECT_EQ(*parser.Parse("9"), 9u);
  EXPECT_EQ(parser.Parse("10").status().message(), parser.Allowed());
  EXPECT_EQ(parser.Format(7), "7");
}

TEST(FileModeTest, OctalWithTheRequiredBits) {
  const FileMode parser;
  EXPECT_EQ(parser.Allowed(),
            "an octal file mode from 600 to 777 (the owner must be able to read and write)");
  EXPECT_EQ(*parser.Parse("0640"), 0640u);
  EXPECT_EQ(*parser.Parse("777"), 0777u);
  EXPECT_FALSE(parser.Parse("0460").ok()) << "the owner cannot write";
  EXPECT_FALSE(parser.Parse("1777").ok());
  EXPECT_EQ(parser.Format(0600), "0600");
}

enum class Color { kRed, kBlue };
constexpr Word<Color> kColors[] = {{"red", Color::kRed}, {"blue", Color::kBlue}};

TEST(OneOfTest, ExactWordsOnly) {
  const OneOf<Color> parser{kColors};
  EXPECT_EQ(parser.Allowed(), "one of red, blue");
  EXPECT_EQ(*parser.Parse("blue"), Color::kBlue);
  EXPECT_EQ(parser.Parse("Blue").status().message(), "one of red, blue");
  EXPECT_EQ(parser.Format(Color::kRed), "red");
}

TEST(UidListTest, CommaSeparatedWithoutGaps) {
  const UidList parser;
  EXPECT_EQ(parser.Allowed(), "comma-separated uids, each an integer from 0 to 4294967294");
  EXPECT_THAT(*parser.Parse("0,1000"), testing::ElementsAre(0u, 1000u));
  for (const char* bad : {",", "1,", ",1", "1,,2", "1, 2", "4294967295"}) {
    EXPECT_FALSE(parser.Parse(bad).ok()) << bad;
  }
  EXPECT_EQ(parser.Format({10, 20}), "10,20");
  EXPECT_EQ(parser.Format({}), "");
}

TEST(SocketPathTest, RefusalSaysHowLongThePathIs) {
  const SocketPath parser{4};
  EXPECT_EQ(parser.Allowed(), "a path of at most 4 bytes (the Unix socket limit)");
  EXPECT_EQ(*parser.Parse("/a/b"), "/a/b");
  EXPECT_EQ(parser.Parse("/a/bc").status().message(),
            "a path of at most 4 bytes (the Unix socket limit); this one has 5");
}

TEST(HostPortTest, ParsesAndFormatsBackTheSameText) {
  const HostPort parser;
  for (const char* text : {"0.0.0.0:9464", "[::1]:0", "[fe80::1]:65535", "db-1.internal:80"}) {
    Result<std::optional<AdminAddress>> parsed = parser.Parse(text);
    ASSERT_TRUE(parsed.ok()) << text;
    EXPECT_EQ(parser.Format(*parsed), text);
  }
  EXPECT_EQ((*parser.Parse("[::1]:80"))->host, "::1");
  const std::string too_long = std::string(254, 'a') + ":1";
  for (const std::string bad : {"9464", ":80", "h:", "h:65536", "::1:80", "[::1:80", "[]:80",
                                "[g::1]:80", "a b:80", too_long.c_str()}) {
    EXPECT_EQ(parser.Parse(bad).status().message(), parser.Allowed()) << bad;
  }
  EXPECT_TRUE(parser.Parse(std::string(253, 'a') + ":1").ok());
  EXPECT_EQ(parser.Format(std::nullopt), "");
}

TEST(TableNameTextTest, AllowedTextIsTheTableNameRefusal) {
  const TableNameText parser;
  EXPECT_EQ(parser.Allowed(), parser.Parse("Bad").status().message());
  EXPECT_EQ(parser.Format(*parser.Parse("s.t")), "s.t");
}

}  // namespace
}  // namespace ratelimit

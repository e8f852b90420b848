// Unit tests of ConfigHelp, ConfigMarkdownTable and PlainText: the rows as --help and README.
#include "sidecar/config/config_docs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "sidecar/config/config.h"

namespace ratelimit {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// tests/k8s reads --help with this pattern to learn each variable's name and default.
TEST(ConfigHelpTest, OneLinePerVariableWithNameDefaultMeaningAndWhatIsAllowed) {
  const std::vector<std::string> lines = Lines(ConfigHelp());
  const std::vector<ConfigVariable>& variables = ConfigVariables();
  ASSERT_EQ(lines.size(), variables.size());
  const std::regex head("^ {2}([A-Z][A-Z0-9_]*) +default (\\S+) ");
  for (size_t i = 0; i < lines.size(); ++i) {
    const ConfigVariable& v = variables[i];
    std::smatch m;
    ASSERT_TRUE(std::regex_search(lines[i], m, head)) << lines[i];
    EXPECT_EQ(m[1].str(), v.name);
    EXPECT_EQ(m[2].str(), v.default_value.empty() ? "(empty)" : v.default_value);
    EXPECT_THAT(lines[i], testing::HasSubstr(PlainText(v.meaning)));
    EXPECT_THAT(lines[i], testing::EndsWith(" Allowed: " + v.allowed + "."));
    EXPECT_THAT(lines[i], testing::Not(testing::HasSubstr("`"))) << "no Markdown in a terminal";
  }
}

TEST(ConfigMarkdownTableTest, HeaderThenOneRowPerVariableInOrder) {
  const std::vector<std::string> lines = Lines(ConfigMarkdownTable());
  const std::vector<ConfigVariable>& variables = ConfigVariables();
  ASSERT_EQ(lines.size(), 2 + variables.size());
  EXPECT_EQ(lines[0], "| Variable | Default | Allowed | Meaning |");
  EXPECT_EQ(lines[1], "|---|---|---|---|");
  for (size_t i = 0; i < variables.size(); ++i) {
    const ConfigVariable& v = variables[i];
    const std::string shown = v.default_value.empty() ? "(empty)" : "`" + v.default_value + "`";
    EXPECT_EQ(lines[2 + i], "| `" + std::string(v.name) + "` | " + shown + " | " + v.allowed +
                                " | " + std::string(v.meaning) + " |");
  }
}

TEST(PlainTextTest, DropsCodeMarksAndLinkTargets) {
  EXPECT_EQ(PlainText("`lease` (see [lease mode](#lease-mode)) or `strict`"),
            "lease (see lease mode) or strict");
  EXPECT_EQ(PlainText("[a `b`](#c), [d](#e)."), "a b, d.");
  EXPECT_EQ(PlainText("[IPv6 address] or name"), "[IPv6 address] or name");
  EXPECT_EQ(PlainText("a [b] then [c](#d)"), "a [b] then c");
  EXPECT_EQ(PlainText("unclosed [x](y"), "unclosed [x](y");
}

}  // namespace
}  // namespace ratelimit

// Unit tests of the test HTTP client's response parser (tests/testing/http_client.h).
#include "tests/testing/http_client.h"

#include <gtest/gtest.h>

#include <string>

namespace ratelimit {
namespace {

TEST(HttpResponseTest, StatusHeadersAndBodyAreSplitAndHeaderNamesMatchInAnyCase) {
  Result<HttpResponse> r = ParseHttpResponse(
      "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 3\r\n\r\nno\n",
      false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->status_line, "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(r->Header("allow"), "GET, HEAD");
  EXPECT_EQ(r->Header("X-Missing"), std::nullopt);
  EXPECT_EQ(r->body, "no\n");
}

TEST(HttpResponseTest, ABodyShorterThanItsContentLengthIsAnErrorExceptForHead) {
  const std::string raw = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  EXPECT_FALSE(ParseHttpResponse(raw, false).ok());
  EXPECT_TRUE(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).ok());
}

TEST(HttpResponseTest, AResponseCutBeforeTheEndOfItsHeadersIsAnError) {
  EXPECT_FALSE(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Len", false).ok());
  EXPECT_FALSE(ParseHttpResponse("", false).ok());
  EXPECT_FALSE(ParseHttpResponse("SSH-2.0-OpenSSH\r\n\r\n", false).ok());
}

}  // namespace
}  // namespace ratelimit

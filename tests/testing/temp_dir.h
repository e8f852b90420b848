// TempDir: a fresh directory under /tmp, removed with everything in it when the object dies.
#ifndef RATELIMIT_TESTS_TESTING_TEMP_DIR_H_
#define RATELIMIT_TESTS_TESTING_TEMP_DIR_H_

#include <string>

namespace ratelimit {

// Short paths on purpose: Unix socket paths must fit in 107 bytes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Reads a whole file; empty when it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_TEMP_DIR_H_

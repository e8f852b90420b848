// Replays the fuzz target without libFuzzer: seeds, files, and deterministic mutations of seeds.
//
//   connection_input_replay [--mutations N] [--emit-seeds DIR] [FILE_OR_DIR...]
//
// Files (a directory: every file in it) are replayed first, then the seeds, then N mutations of
// them. Exits 1 when a FILE_OR_DIR holds no file; a crash aborts.
//
// With gcc builds this is how the tests run the target; clang builds link libFuzzer instead.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void Run(const std::vector<uint8_t>& input) { LLVMFuzzerTestOneInput(input.data(), input.size()); }

std::vector<uint8_t> Mutate(std::vector<uint8_t> input, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < edits; ++i) {
    if (input.empty()) input.push_back(0);
    const size_t at = rng() % input.size();
    switch (rng() % 5) {
      case 0:  // Flip a bit.
        input[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // Overwrite with an interesting byte.
        input[at] = std::vector<uint8_t>{0, 1, 0x7f, 0x80, 0xff}[rng() % 5];
        break;
      case 2:  // Truncate.
        input.resize(at);
        break;
      case 3:  // Duplicate a slice onto the end.
        input.insert(input.end(), input.begin() + static_cast<std::ptrdiff_t>(at), input.end());
        break;
      case 4:  // Random byte.
        input[at] = static_cast<uint8_t>(rng());
        break;
    }
  }
  return input;
}

// Replays a file, or every file under a directory; returns how many files it replayed.
size_t RunPath(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) {
    size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      files += RunPath(entry.path());
    }
    return files;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  Run(std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 0;
  size_t files = 0;
  std::vector<std::vector<uint8_t>> seeds = ratelimit::FuzzSeeds();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
      mutations = std::strtol(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--emit-seeds") == 0 && i + 1 < argc) {
      const std::filesystem::path dir = argv[++i];
      std::filesystem::create_directories(dir);
      for (size_t s = 0; s < seeds.size(); ++s) {
        std::ofstream out(dir / ("seed-" + std::to_string(s)), std::ios::binary);
        out.write(reinterpret_cast<const char*>(seeds[s].data()),
                  static_cast<std::streamsize>(seeds[s].size()));
      }
      return 0;
    } else if (const size_t replayed = RunPath(argv[i]); replayed > 0) {
      files += replayed;
    } else {
      // A corpus that moved or emptied must not pass as "no crash".
      std::fprintf(stderr, "no input to replay at %s\n", argv[i]);
      return 1;
    }
  }
  for (const auto& seed : seeds) Run(seed);
  std::mt19937_64 rng(20261128);
  for (long m = 0; m < mutations; ++m) Run(Mutate(seeds[rng() % seeds.size()], rng));
  std::printf("replayed %zu files, %zu seeds and %ld mutations: no crash\n", files, seeds.size(),
              mutations);
  return 0;
}

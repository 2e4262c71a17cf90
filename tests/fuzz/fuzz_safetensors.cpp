// Fuzzes the safetensors reader's checks (io/safetensors.hpp) on whole file images: every image
// is either refused with std::invalid_argument or accepted with a header whose promises hold
// (never another exception, a crash, a read outside the image or undefined behaviour: built with
// ASan and UBSan). What an accepted header promises is checked again here, independently: each
// tensor's elements times its dtype's size are its byte range, and the ranges tile the data.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <multihead/io/safetensors.hpp>
#include <stdexcept>
#include <utility>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  multihead::SafetensorsHeader header;
  try {
    header = multihead::parse_safetensors(data, size, "fuzz input");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  const std::int64_t data_size = static_cast<std::int64_t>(size) - header.data_offset;
  if (header.data_offset < 8 || data_size < 0) std::abort();
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  for (const auto& [name, info] : header.tensors) {
    std::uint64_t elements = 1;
    for (std::int64_t extent : info.shape) elements *= static_cast<std::uint64_t>(extent);
    if (elements * std::uint64_t(multihead::dtype_bytes(info.dtype)) !=
        static_cast<std::uint64_t>(info.end - info.begin))
      std::abort();
    ranges.emplace_back(info.begin, info.end);
  }
  std::sort(ranges.begin(), ranges.end());
  std::int64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin != covered || end < begin) std::abort();
    covered = end;
  }
  if (covered != data_size) std::abort();
  return 0;
}

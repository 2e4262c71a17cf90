// A minimal safetensors writer for the tests, written from the format's description and
// independent of the reader under test (it builds its JSON by hand, not with nlohmann): tensors
// are laid out in the order given, the header is padded with spaces to a multiple of 8 bytes, as
// the format's reference writer does. The pieces are separate so that a test can write a
// hostile file: any header text over any data.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace testing_io {

using Bytes = std::vector<unsigned char>;

struct WrittenTensor {
  std::string name;
  std::string dtype;  // as the file spells it: "F32", "BF16", ...
  std::vector<std::int64_t> shape;
  Bytes bytes;
};

// The bytes of a vector of trivially copyable values, in this (little-endian) machine's order.
template <class T>
Bytes bytes_of(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline std::string shape_json(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
  return out + "]";
}

// The header JSON of `tensors` laid out back to back, with optional metadata pairs.
inline std::string header_json(
    const std::vector<WrittenTensor>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata = {}) {
  std::string out = "{";
  bool first = true;
  if (!metadata.empty()) {
    out += "\"__metadata__\":{";
    for (std::size_t i = 0; i < metadata.size(); ++i)
      out += (i ? "," : "") + ("\"" + metadata[i].first + "\":\"" + metadata[i].second + "\"");
    out += "}";
    first = false;
  }
  std::size_t offset = 0;
  for (const WrittenTensor& t : tensors) {
    out += first ? "" : ",";
    first = false;
    out += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + shape_json(t.shape) +
           ",\"data_offsets\":[" + std::to_string(offset) + "," +
           std::to_string(offset + t.bytes.size()) + "]}";
    offset += t.bytes.size();
  }
  return out + "}";
}

inline Bytes data_of(const std::vector<WrittenTensor>& tensors) {
  Bytes out;
  for (const WrittenTensor& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

// A file image: the header's length (little-endian u64), the header padded with spaces to a
// multiple of `pad` bytes (1: no padding), then the data.
inline Bytes file_image(std::string header, const Bytes& data, std::size_t pad = 8) {
  while (header.size() % pad != 0) header += ' ';
  Bytes out(8);
  std::uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>(length >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

inline Bytes file_image(const std::vector<WrittenTensor>& tensors) {
  return file_image(header_json(tensors), data_of(tensors));
}

inline void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// A fresh empty directory under the system's temporary directory, removed with this object.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    path_ = std::filesystem::temp_directory_path() /
            ("multihead_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace testing_io

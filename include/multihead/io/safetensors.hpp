// Reading safetensors, the format Hugging Face checkpoints are stored in: an 8-byte little-endian
// header length n, n bytes of JSON naming each tensor's dtype, shape and byte range, then the
// tensors' bytes. Files are memory-mapped (POSIX mmap, read-only): a tensor is read where it lies
// when its address suits its element type, and copied only when it does not.
//
// An optional header: it needs nlohmann/json (Debian's nlohmann-json3-dev; CMake target
// multihead::io) and is included only by those who load checkpoints. multihead.hpp does not.
//
// A file is checked whole when it is opened, before any tensor is read, and every fault is a
// std::invalid_argument naming the file, the tensor and the values: shorter than 8 bytes, a header
// length beyond the file (or beyond 100 MB, as the format's reference reader refuses), a header
// that is not JSON, not UTF-8, nested past the format's depth or names a key twice, a field
// missing, unknown or of the wrong type, an unknown dtype, a shape whose elements times the
// dtype's size differ from its byte range, offsets beyond the data, and ranges that overlap or
// leave a hole (the format requires the data to be covered exactly, so that a file cannot carry
// bytes no tensor accounts for). parse_safetensors runs these checks on a file image in memory;
// the fuzzer tests/fuzz/fuzz_safetensors.cpp drives it.
//
// A mapped file must not be truncated by another process while it is open: the kernel answers a
// read of the lost pages with SIGBUS, which no check made at open time can prevent.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../storage/half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The element types the format defines (those of whole bytes; sub-byte types are refused as
// unknown). multihead reads F32, BF16 and F16 into layers; the rest can be listed and skipped.
enum class Dtype {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64
};

namespace detail {

struct DtypeEntry {
  const char* name;
  Dtype dtype;
  int bytes;
};
inline constexpr DtypeEntry kDtypes[] = {
    {"BOOL", Dtype::BOOL, 1},       {"U8", Dtype::U8, 1},           {"I8", Dtype::I8, 1},
    {"F8_E5M2", Dtype::F8_E5M2, 1}, {"F8_E4M3", Dtype::F8_E4M3, 1}, {"I16", Dtype::I16, 2},
    {"U16", Dtype::U16, 2},         {"F16", Dtype::F16, 2},         {"BF16", Dtype::BF16, 2},
    {"I32", Dtype::I32, 4},         {"U32", Dtype::U32, 4},         {"F32", Dtype::F32, 4},
    {"F64", Dtype::F64, 8},         {"I64", Dtype::I64, 8},         {"U64", Dtype::U64, 8}};

inline const DtypeEntry& dtype_entry(Dtype dtype) {
  for (const DtypeEntry& e : kDtypes)
    if (e.dtype == dtype) return e;
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

// A name from a file, quoted for a message: at most 80 characters, control bytes as \xNN, so
// that a hostile name cannot flood or garble the message.
inline std::string shown_name(std::string_view text) {
  std::string out = "'";
  const std::size_t shown = std::min<std::size_t>(text.size(), 80);
  for (std::size_t i = 0; i < shown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (shown < text.size())
    out += concat("'... (", text.size(), " bytes)");
  else
    out += "'";
  return out;
}

// Parses JSON text, refusing what nlohmann would accept silently: a key named twice in one
// object (nlohmann keeps the last; a reader that kept the first would see another tensor) and
// nesting deeper than max_depth (a safetensors header is 3 deep). Invalid UTF-8 and syntax
// errors come from nlohmann's parser. `what` names the text in messages.
inline nlohmann::json parse_json(const char* begin, const char* end, const std::string& what,
                                 int max_depth) {
  using Json = nlohmann::json;
  std::vector<std::set<std::string>> open;  // the keys of each object being parsed
  const auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth > max_depth)
      fail(what, ": nested deeper (", depth, ") than its format allows (", max_depth, ")");
    if (event == Json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      open.pop_back();
    } else if (event == Json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open.back().insert(key).second)
        fail(what, ": the key ", shown_name(key), " appears twice");
    }
    return true;
  };
  try {
    return Json::parse(begin, end, check);
  } catch (const Json::exception& e) {
    fail(what, " is not valid JSON: ", e.what());
  }
}

// A JSON value as a non-negative int64, or a message naming `field`.
inline std::int64_t json_size(const nlohmann::json& value, const std::string& field) {
  if (!value.is_number_unsigned() ||
      value.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
    fail(field, " must be a non-negative integer below 2^63, not ", value.dump());
  return static_cast<std::int64_t>(value.get<std::uint64_t>());
}

}  // namespace detail

inline const char* dtype_name(Dtype dtype) { return detail::dtype_entry(dtype).name; }
inline int dtype_bytes(Dtype dtype) { return detail::dtype_entry(dtype).bytes; }

// The dtype of the element types multihead reads.
template <class T>
constexpr Dtype dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16>,
                "dtype_of: multihead reads float (F32), bf16 (BF16) and fp16 (F16) tensors");
  if constexpr (std::is_same_v<T, float>)
    return Dtype::F32;
  else if constexpr (std::is_same_v<T, bf16>)
    return Dtype::BF16;
  else
    return Dtype::F16;
}

// One tensor's entry in a header: its bytes are [begin, end) of the data after the header.
struct TensorInfo {
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::int64_t begin = 0, end = 0;
  std::int64_t elements() const {
    return dtype_bytes(dtype) ? (end - begin) / dtype_bytes(dtype) : 0;
  }
};

// A checked header: the tensors by name, the free-form string metadata, and where the data
// starts in the file (8 + the header's length).
struct SafetensorsHeader {
  std::map<std::string, TensorInfo, std::less<>> tensors;
  std::map<std::string, std::string> metadata;
  std::int64_t data_offset = 0;
};

// Checks a whole safetensors file image [data, data + size) and returns its header; `file` names
// it in messages. Every check of the top of this header; reads nothing outside the image.
inline SafetensorsHeader parse_safetensors(const unsigned char* data, std::size_t size,
                                           const std::string& file) {
  using detail::fail;
  using detail::shown_name;
  const std::string where = "safetensors file " + file;
  if (size < 8) fail(where, ": ", size, " bytes, too short for the 8-byte header length");
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | data[i];  // little-endian, any host
  constexpr std::uint64_t kMaxHeader = 100'000'000;
  if (length > size - 8)
    fail(where, ": the header length (", length, " bytes) exceeds the ", size - 8,
         " bytes after it");
  if (length > kMaxHeader)
    fail(where, ": the header length (", length, " bytes) exceeds the format's limit of ",
         kMaxHeader);
  const char* text = reinterpret_cast<const char*>(data + 8);
  const nlohmann::json json = detail::parse_json(text, text + length, where + ": the header", 3);
  if (!json.is_object()) fail(where, ": the header must be a JSON object, not ", json.type_name());

  SafetensorsHeader header;
  header.data_offset = static_cast<std::int64_t>(8 + length);
  const std::int64_t data_size = static_cast<std::int64_t>(size - 8 - length);
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(where, ": __metadata__ must be an object of strings");
      for (const auto& [key, text_value] : value.items()) {
        if (!text_value.is_string())
          fail(where, ": __metadata__ ", shown_name(key), " must be a string, not ",
               text_value.type_name());
        header.metadata.emplace(key, text_value.get<std::string>());
      }
      continue;
    }
    const std::string tensor = where + ": tensor " + shown_name(name);
    if (!value.is_object()) fail(tensor, " must be an object, not ", value.type_name());
    for (const auto& field : value.items())
      if (field.key() != "dtype" && field.key() != "shape" && field.key() != "data_offsets")
        fail(tensor, ": unknown field ", shown_name(field.key()),
             " (a tensor has dtype, shape and data_offsets)");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!value.contains(field)) fail(tensor, ": no ", field);

    TensorInfo info;
    const auto& dtype = value["dtype"];
    if (!dtype.is_string()) fail(tensor, ": dtype must be a string, not ", dtype.type_name());
    const auto& dtype_text = dtype.get_ref<const std::string&>();
    const auto* entry = std::find_if(std::begin(detail::kDtypes), std::end(detail::kDtypes),
                                     [&](const auto& e) { return dtype_text == e.name; });
    if (entry == std::end(detail::kDtypes))
      fail(tensor, ": unknown dtype ", shown_name(dtype_text));
    info.dtype = entry->dtype;

    const auto& shape = value["shape"];
    if (!shape.is_array()) fail(tensor, ": shape must be an array, not ", shape.type_name());
    std::int64_t elements = 1;
    for (const auto& extent : shape) {
      info.shape.push_back(detail::json_size(extent, tensor + ": a shape extent"));
      elements = detail::checked_mul(elements, info.shape.back(),
                                     (tensor + ": the shape's element count").c_str());
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      fail(tensor, ": data_offsets must be an array of two offsets, not ", offsets.dump());
    info.begin = detail::json_size(offsets[0], tensor + ": data_offsets[0]");
    info.end = detail::json_size(offsets[1], tensor + ": data_offsets[1]");
    if (info.begin > info.end || info.end > data_size)
      fail(tensor, ": data_offsets [", info.begin, ", ", info.end,
           ") must be an ordered range within the ", data_size, " bytes of data");
    const std::int64_t bytes =
        detail::checked_mul(elements, entry->bytes, (tensor + ": the shape's bytes").c_str());
    if (bytes != info.end - info.begin)
      fail(tensor, ": its shape holds ", elements, " ", entry->name, " elements (", bytes,
           " bytes) but data_offsets [", info.begin, ", ", info.end, ") span ",
           info.end - info.begin);
    header.tensors.emplace(name, std::move(info));  // names are distinct: parse_json checked
  }

  // The ranges must tile the data: sorted by offset, each starts where the one before ended.
  std::vector<std::pair<const std::string*, const TensorInfo*>> order;
  for (const auto& [name, info] : header.tensors) order.emplace_back(&name, &info);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second->begin, a.second->end) <
           std::make_pair(b.second->begin, b.second->end);
  });
  std::int64_t covered = 0;
  const std::string* last = nullptr;
  for (const auto& [name, info] : order) {
    if (info->begin < covered)
      fail(where, ": tensor ", shown_name(*name), " [", info->begin, ", ", info->end,
           ") overlaps tensor ", shown_name(*last), ", which ends at ", covered);
    if (info->begin > covered)
      fail(where, ": bytes [", covered, ", ", info->begin, ") of the data belong to no tensor");
    covered = info->end;
    last = name;
  }
  if (covered != data_size)
    fail(where, ": bytes [", covered, ", ", data_size, ") of the data belong to no tensor");
  return header;
}

// The elements of one tensor: where they lie in the mapped file when their address suits T,
// otherwise an aligned copy (the format aligns nothing; a misaligned float load is undefined
// behaviour in C++). Valid while its file is open.
template <class T>
class TensorData {
 public:
  const T* data() const noexcept { return data_; }
  std::int64_t size() const noexcept { return size_; }
  const std::vector<std::int64_t>& shape() const noexcept { return *shape_; }
  bool copied() const noexcept { return !copy_.empty(); }

 private:
  friend class SafetensorsFile;
  TensorData(const unsigned char* bytes, const TensorInfo& info)
      : size_(info.end - info.begin == 0 ? 0 : (info.end - info.begin) / std::int64_t(sizeof(T))),
        shape_(&info.shape) {
    if (reinterpret_cast<std::uintptr_t>(bytes) % alignof(T) == 0) {
      data_ = reinterpret_cast<const T*>(bytes);
    } else {
      copy_.resize(static_cast<std::size_t>(size_));
      std::memcpy(copy_.data(), bytes, static_cast<std::size_t>(size_) * sizeof(T));
      data_ = copy_.data();
    }
  }

  const T* data_ = nullptr;
  std::int64_t size_ = 0;
  const std::vector<std::int64_t>* shape_ = nullptr;
  std::vector<T> copy_;
};

// One safetensors file, mapped read-only and checked whole when opened. Move-only.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) detail::fail("safetensors file ", path_, ": cannot open: ", std::strerror(errno));
    struct stat status {};
    if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
      ::close(fd);
      detail::fail("safetensors file ", path_, ": not a regular file");
    }
    size_ = static_cast<std::size_t>(status.st_size);
    if (size_ > 0) {
      void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map == MAP_FAILED) {
        const int error = errno;
        ::close(fd);
        detail::fail("safetensors file ", path_, ": cannot map ", size_,
                     " bytes: ", std::strerror(error));
      }
      map_ = static_cast<const unsigned char*>(map);
    }
    ::close(fd);  // the mapping keeps the file
    try {
      header_ = parse_safetensors(map_, size_, path_);
    } catch (...) {
      unmap();
      throw;
    }
  }
  SafetensorsFile(SafetensorsFile&& other) noexcept
      : path_(std::move(other.path_)),
        map_(std::exchange(other.map_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        header_(std::move(other.header_)) {}
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept {
    if (this != &other) {
      unmap();
      path_ = std::move(other.path_);
      map_ = std::exchange(other.map_, nullptr);
      size_ = std::exchange(other.size_, 0);
      header_ = std::move(other.header_);
    }
    return *this;
  }
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile() { unmap(); }

  const std::string& path() const noexcept { return path_; }
  const SafetensorsHeader& header() const noexcept { return header_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
  bool contains(std::string_view name) const { return header_.tensors.count(name) != 0; }

  // The entry of tensor `name`; throws naming the file when it has none.
  const TensorInfo& info(std::string_view name) const {
    const auto found = header_.tensors.find(name);
    if (found == header_.tensors.end())
      detail::fail("safetensors file ", path_, ": no tensor ", detail::shown_name(name));
    return found->second;
  }

  // Tensor `name` as T, checked: its dtype is T's, and its shape `shape` unless that is empty.
  template <class T>
  TensorData<T> tensor(std::string_view name, const std::vector<std::int64_t>& shape = {}) const {
    const TensorInfo& entry = info(name);
    if (entry.dtype != dtype_of<T>())
      detail::fail("safetensors file ", path_, ": tensor ", detail::shown_name(name), " is ",
                   dtype_name(entry.dtype), ", not ", dtype_name(dtype_of<T>()));
    check_shape(name, entry, shape);
    return TensorData<T>(bytes(entry), entry);
  }

  // Calls f(const T* data, std::int64_t size) with tensor `name` as it is stored, T being float,
  // bf16 or fp16 by its dtype; checks the shape as tensor() does; refuses other dtypes.
  template <class F>
  void visit(std::string_view name, const std::vector<std::int64_t>& shape, F&& f) const {
    const TensorInfo& entry = info(name);
    switch (entry.dtype) {
      case Dtype::F32:
        return call<float>(name, shape, f);
      case Dtype::BF16:
        return call<bf16>(name, shape, f);
      case Dtype::F16:
        return call<fp16>(name, shape, f);
      default:
        detail::fail("safetensors file ", path_, ": tensor ", detail::shown_name(name), " is ",
                     dtype_name(entry.dtype), ": multihead reads F32, BF16 and F16 tensors");
    }
  }

 private:
  const unsigned char* bytes(const TensorInfo& entry) const {
    return map_ + header_.data_offset + entry.begin;
  }
  template <class T, class F>
  void call(std::string_view name, const std::vector<std::int64_t>& shape, F& f) const {
    const TensorData<T> data = tensor<T>(name, shape);
    f(data.data(), data.size());
  }
  void check_shape(std::string_view name, const TensorInfo& entry,
                   const std::vector<std::int64_t>& shape) const {
    if (shape.empty() || shape == entry.shape) return;
    const auto text = [](const std::vector<std::int64_t>& s) {
      std::string out = "[";
      for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
      return out + "]";
    };
    detail::fail("safetensors file ", path_, ": tensor ", detail::shown_name(name), " has shape ",
                 text(entry.shape), ", expected ", text(shape));
  }
  void unmap() noexcept {
    if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
    map_ = nullptr;
  }

  std::string path_;
  const unsigned char* map_ = nullptr;
  std::size_t size_ = 0;
  SafetensorsHeader header_;
};

// A checkpoint's tensors by name across its files: a directory holding
// model.safetensors.index.json (a sharded checkpoint: its weight_map names each tensor's shard)
// or model.safetensors, or one .safetensors file. Every file is opened, mapped and checked when
// the checkpoint is, and every tensor the index names must be in the shard it names. Shard names
// must be plain file names in the directory: an index cannot reach a file elsewhere.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code error;
    if (fs::is_regular_file(path, error)) {
      open(path);
      for (const auto& entry : files_.back()->header().tensors) where_.emplace(entry.first, 0);
      return;
    }
    if (!fs::is_directory(path, error))
      detail::fail("checkpoint ", path, ": neither a .safetensors file nor a directory");
    const fs::path index = fs::path(path) / "model.safetensors.index.json";
    const fs::path single = fs::path(path) / "model.safetensors";
    if (fs::exists(index, error)) {
      read_index(index.string());
    } else if (fs::exists(single, error)) {
      open(single.string());
      for (const auto& entry : files_.back()->header().tensors) where_.emplace(entry.first, 0);
    } else {
      detail::fail("checkpoint ", path,
                   ": holds neither model.safetensors.index.json nor model.safetensors");
    }
  }

  const std::string& path() const noexcept { return path_; }
  std::size_t files() const noexcept { return files_.size(); }
  bool contains(std::string_view name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : where_) out.push_back(entry.first);
    return out;
  }

  // The file that holds tensor `name`; throws naming the checkpoint when none does.
  const SafetensorsFile& file_of(std::string_view name) const {
    const auto found = where_.find(name);
    if (found == where_.end())
      detail::fail("checkpoint ", path_, ": no tensor ", detail::shown_name(name));
    return *files_[found->second];
  }
  const TensorInfo& info(std::string_view name) const { return file_of(name).info(name); }
  template <class T>
  TensorData<T> tensor(std::string_view name, const std::vector<std::int64_t>& shape = {}) const {
    return file_of(name).template tensor<T>(name, shape);
  }
  template <class F>
  void visit(std::string_view name, const std::vector<std::int64_t>& shape, F&& f) const {
    file_of(name).visit(name, shape, std::forward<F>(f));
  }

 private:
  void open(const std::string& file) { files_.push_back(std::make_unique<SafetensorsFile>(file)); }

  void read_index(const std::string& index) {
    std::ifstream in(index, std::ios::binary);
    if (!in) detail::fail("checkpoint index ", index, ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const nlohmann::json json =
        detail::parse_json(text.data(), text.data() + text.size(), "checkpoint index " + index, 3);
    if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
      detail::fail("checkpoint index ", index, ": must be an object with a weight_map object");
    std::map<std::string, std::size_t> shards;
    for (const auto& [name, shard] : json["weight_map"].items()) {
      if (!shard.is_string())
        detail::fail("checkpoint index ", index, ": weight_map ", detail::shown_name(name),
                     " must name a file, not ", shard.dump());
      const auto& file = shard.get_ref<const std::string&>();
      if (file.empty() || file == "." || file == ".." ||
          file.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
        detail::fail("checkpoint index ", index, ": weight_map ", detail::shown_name(name),
                     " names ", detail::shown_name(file),
                     ", not a file name in the checkpoint's directory");
      auto [slot, fresh] = shards.emplace(file, files_.size());
      if (fresh) open((std::filesystem::path(path_) / file).string());
      if (!files_[slot->second]->contains(name))
        detail::fail("checkpoint index ", index, ": names shard ", detail::shown_name(file),
                     " for tensor ", detail::shown_name(name), ", which that shard does not hold");
      where_.emplace(name, slot->second);
    }
  }

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t, std::less<>> where_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

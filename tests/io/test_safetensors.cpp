// io/safetensors.hpp: files written by the tests' own writer (support/safetensors_writer.hpp)
// read back element for element in every dtype multihead reads, sharded checkpoints through their
// index, and every hostile file the reader must refuse with a message naming the file, the
// tensor and the values.
#include <gtest/gtest.h>

#include <cmath>
#include <multihead/io/safetensors.hpp>
#include <string>
#include <vector>

#include "support/safetensors_writer.hpp"
#include "support/testing.hpp"

namespace {

using multihead::bf16;
using multihead::Dtype;
using multihead::fp16;
using multihead::SafetensorsCheckpoint;
using multihead::SafetensorsFile;
using testing_io::Bytes;
using testing_io::WrittenTensor;

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = scale * (float(i) - float(n) / 3.0f);
  return out;
}

template <class T>
std::vector<T> narrowed(const std::vector<float>& x) {
  std::vector<T> out;
  for (float v : x) out.push_back(multihead::from_float<T>(v));
  return out;
}

// Three tensors, one per dtype multihead reads, and an I8 one it lists but does not read.
std::vector<WrittenTensor> sample() {
  return {{"w.f32", "F32", {3, 4}, testing_io::bytes_of(ramp(12, 0.5f))},
          {"w.bf16", "BF16", {2, 5}, testing_io::bytes_of(narrowed<bf16>(ramp(10, 0.25f)))},
          {"w.f16", "F16", {7}, testing_io::bytes_of(narrowed<fp16>(ramp(7, 2.0f)))},
          {"counts", "I8", {2}, Bytes{1, 2}}};
}

// Parses an image in memory as the file "image.safetensors".
void parse(const Bytes& image) {
  multihead::parse_safetensors(image.data(), image.size(), "image");
}

TEST(Safetensors, ReadsEveryDtypeElementForElement) {
  testing_io::TempDir dir("st_read");
  testing_io::write_file(
      dir / "a.safetensors",
      testing_io::file_image(testing_io::header_json(sample(), {{"format", "pt"}}),
                             testing_io::data_of(sample())));
  const SafetensorsFile file((dir / "a.safetensors").string());
  EXPECT_EQ(file.header().tensors.size(), 4u);
  EXPECT_EQ(file.metadata().at("format"), "pt");

  const auto f32 = file.tensor<float>("w.f32", {3, 4});
  ASSERT_EQ(f32.size(), 12);
  EXPECT_EQ(std::vector<float>(f32.data(), f32.data() + 12), ramp(12, 0.5f));
  EXPECT_FALSE(f32.copied());  // the writer pads the header to 8 bytes: read in place

  const auto b = file.tensor<bf16>("w.bf16");
  EXPECT_EQ(b.shape(), (std::vector<std::int64_t>{2, 5}));
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(multihead::to_float(b.data()[i]), test_support::stored<bf16>(ramp(10, 0.25f)[i]));
  const auto h = file.tensor<fp16>("w.f16", {7});
  for (int i = 0; i < 7; ++i)
    EXPECT_EQ(multihead::to_float(h.data()[i]), test_support::stored<fp16>(ramp(7, 2.0f)[i]));

  // visit hands each tensor over in its own type.
  int visits = 0;
  file.visit("w.bf16", {2, 5}, [&](const auto* data, std::int64_t size) {
    EXPECT_TRUE((std::is_same_v<std::decay_t<decltype(*data)>, bf16>));
    EXPECT_EQ(size, 10);
    ++visits;
  });
  EXPECT_EQ(visits, 1);
  EXPECT_EQ(file.info("counts").dtype, Dtype::I8);
}

TEST(Safetensors, AMisalignedTensorIsCopiedNotReadInPlace) {
  // A 1-byte tensor first puts the float tensor at an odd address.
  const std::vector<WrittenTensor> tensors = {
      {"flag", "U8", {1}, Bytes{7}}, {"w", "F32", {5}, testing_io::bytes_of(ramp(5, 1.5f))}};
  testing_io::TempDir dir("st_align");
  testing_io::write_file(dir / "m.safetensors", testing_io::file_image(tensors));
  const SafetensorsFile file((dir / "m.safetensors").string());
  const auto w = file.tensor<float>("w");
  EXPECT_TRUE(w.copied());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(w.data()) % alignof(float), 0u);
  EXPECT_EQ(std::vector<float>(w.data(), w.data() + 5), ramp(5, 1.5f));
}

TEST(Safetensors, ShardedCheckpointsFindEachTensorInItsShard) {
  testing_io::TempDir dir("st_shards");
  const auto all = sample();
  testing_io::write_file(dir / "model-00001-of-00002.safetensors",
                         testing_io::file_image({all[0], all[1]}));
  testing_io::write_file(dir / "model-00002-of-00002.safetensors",
                         testing_io::file_image({all[2], all[3]}));
  testing_io::write_text(dir / "model.safetensors.index.json",
                         R"({"metadata": {"total_size": 61}, "weight_map": {
                              "w.f32": "model-00001-of-00002.safetensors",
                              "w.bf16": "model-00001-of-00002.safetensors",
                              "w.f16": "model-00002-of-00002.safetensors",
                              "counts": "model-00002-of-00002.safetensors"}})");
  const SafetensorsCheckpoint checkpoint(dir.path().string());
  EXPECT_EQ(checkpoint.files(), 2u);
  EXPECT_EQ(checkpoint.names().size(), 4u);
  const auto f32 = checkpoint.tensor<float>("w.f32", {3, 4});
  EXPECT_EQ(std::vector<float>(f32.data(), f32.data() + 12), ramp(12, 0.5f));
  const auto h = checkpoint.tensor<fp16>("w.f16");
  EXPECT_EQ(multihead::to_float(h.data()[6]), test_support::stored<fp16>(ramp(7, 2.0f)[6]));
  EXPECT_NE(checkpoint.file_of("w.f16").path().find("00002"), std::string::npos);
  EXPECT_INVALID("no tensor 'missing'", checkpoint.tensor<float>("missing"));

  // One file, given as a directory holding model.safetensors or as the file itself.
  testing_io::TempDir single("st_single");
  testing_io::write_file(single / "model.safetensors", testing_io::file_image(all));
  EXPECT_EQ(SafetensorsCheckpoint(single.path().string()).names().size(), 4u);
  EXPECT_EQ(SafetensorsCheckpoint((single / "model.safetensors").string()).files(), 1u);
}

TEST(Safetensors, TensorsAreCheckedForDtypeShapeAndName) {
  testing_io::TempDir dir("st_checks");
  testing_io::write_file(dir / "c.safetensors", testing_io::file_image(sample()));
  const SafetensorsFile file((dir / "c.safetensors").string());
  EXPECT_INVALID("tensor 'w.bf16' is BF16, not F32", file.tensor<float>("w.bf16"));
  EXPECT_INVALID("tensor 'w.f32' has shape [3, 4], expected [4, 3]",
                 file.tensor<float>("w.f32", {4, 3}));
  EXPECT_INVALID("c.safetensors: no tensor 'nothing'", file.info("nothing"));
  EXPECT_INVALID("tensor 'counts' is I8: multihead reads F32, BF16 and F16",
                 file.visit("counts", {}, [](const auto*, std::int64_t) {}));
  EXPECT_INVALID("cannot open", SafetensorsFile((dir / "absent.safetensors").string()));
  EXPECT_INVALID("not a regular file", SafetensorsFile(dir.path().string()));
}

// A header with one tensor entry `entry` over `data_bytes` zero bytes of data.
Bytes with_entry(const std::string& entry, std::size_t data_bytes) {
  return testing_io::file_image("{\"t\":" + entry + "}", Bytes(data_bytes, 0));
}

TEST(Safetensors, HostileFilesAreRefusedNamingTheFaultAndTheValues) {
  // Length and framing.
  EXPECT_INVALID("image: 5 bytes, too short", parse(Bytes(5, 0)));
  Bytes long_header = testing_io::file_image(testing_io::header_json(sample()), {});
  long_header[5] = 1;  // a length of 2^40 and more
  EXPECT_INVALID("exceeds the", parse(long_header));
  Bytes huge(100'000'016, ' ');
  const std::uint64_t length = 100'000'008;
  for (int i = 0; i < 8; ++i) huge[std::size_t(i)] = static_cast<unsigned char>(length >> (8 * i));
  EXPECT_INVALID("exceeds the format's limit of 100000000", parse(huge));

  // The JSON itself.
  EXPECT_INVALID("the header is not valid JSON", parse(testing_io::file_image("{\"t\": [", {})));
  EXPECT_INVALID("the header must be a JSON object, not array",
                 parse(testing_io::file_image("[1, 2]", {})));
  EXPECT_INVALID("is not valid JSON",  // a name that is not UTF-8
                 parse(testing_io::file_image("{\"\xff\xfe\": {}}", {})));
  EXPECT_INVALID("the key 't' appears twice",
                 parse(testing_io::file_image(
                     R"({"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                     R"( "t": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                     Bytes(2, 0))));
  EXPECT_INVALID("the key 'dtype' appears twice",
                 parse(with_entry(R"({"dtype": "U8", "dtype": "F32", "shape": [1],)"
                                  R"( "data_offsets": [0, 1]})",
                                  1)));
  EXPECT_INVALID("nested deeper", parse(testing_io::file_image("{\"t\": [[[[[1]]]]]}", {})));

  // Each tensor's entry.
  EXPECT_INVALID("tensor 't' must be an object, not number", parse(with_entry("3", 0)));
  EXPECT_INVALID("tensor 't': no data_offsets",
                 parse(with_entry(R"({"dtype": "U8", "shape": [0]})", 0)));
  EXPECT_INVALID(
      "tensor 't': unknown field 'extra'",
      parse(with_entry(R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": 1})", 1)));
  EXPECT_INVALID("tensor 't': unknown dtype 'F4'",
                 parse(with_entry(R"({"dtype": "F4", "shape": [2], "data_offsets": [0, 1]})", 1)));
  EXPECT_INVALID(
      "tensor 't': its shape holds 6 F32 elements (24 bytes) but data_offsets [0, 20) span 20",
      parse(with_entry(R"({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]})", 20)));
  EXPECT_INVALID(
      "data_offsets [0, 40) must be an ordered range within the 16 bytes",
      parse(with_entry(R"({"dtype": "F32", "shape": [10], "data_offsets": [0, 40]})", 16)));
  EXPECT_INVALID("data_offsets [8, 4) must be an ordered range",
                 parse(with_entry(R"({"dtype": "U8", "shape": [4], "data_offsets": [8, 4]})", 8)));
  EXPECT_INVALID("a shape extent must be a non-negative integer below 2^63, not -2",
                 parse(with_entry(R"({"dtype": "U8", "shape": [-2], "data_offsets": [0, 0]})", 0)));
  EXPECT_INVALID(
      "a shape extent must be a non-negative integer below 2^63, not 1.5",
      parse(with_entry(R"({"dtype": "U8", "shape": [1.5], "data_offsets": [0, 0]})", 0)));
  EXPECT_INVALID(
      "the shape's element count",  // 2^62 · 2^62 overflows
      parse(with_entry(R"({"dtype": "U8", "shape": [4611686018427387904, 4611686018427387904],)"
                       R"( "data_offsets": [0, 0]})",
                       0)));
  EXPECT_INVALID("data_offsets must be an array of two offsets",
                 parse(with_entry(R"({"dtype": "U8", "shape": [1], "data_offsets": [0]})", 1)));
  EXPECT_INVALID("__metadata__ 'k' must be a string, not number",
                 parse(testing_io::file_image(R"({"__metadata__": {"k": 1}})", {})));

  // The ranges must tile the data.
  const std::string a = R"("a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]})";
  EXPECT_INVALID("tensor 'b' [2, 6) overlaps tensor 'a', which ends at 4",
                 parse(testing_io::file_image(
                     "{" + a + R"(, "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                     Bytes(6, 0))));
  EXPECT_INVALID("bytes [4, 5) of the data belong to no tensor",
                 parse(testing_io::file_image(
                     "{" + a + R"(, "b": {"dtype": "U8", "shape": [1], "data_offsets": [5, 6]}})",
                     Bytes(6, 0))));
  EXPECT_INVALID("bytes [4, 9) of the data belong to no tensor",
                 parse(testing_io::file_image("{" + a + "}", Bytes(9, 0))));

  // And a file on disk is checked the same way, named by its path, before anything is read.
  testing_io::TempDir dir("st_hostile");
  testing_io::write_file(dir / "short.safetensors", Bytes(3, 0));
  EXPECT_INVALID("short.safetensors: 3 bytes",
                 SafetensorsFile((dir / "short.safetensors").string()));
}

TEST(Safetensors, HostileIndexesAreRefused) {
  testing_io::TempDir dir("st_index");
  testing_io::write_file(dir / "s.safetensors", testing_io::file_image(sample()));
  const auto index = [&](const std::string& text) {
    testing_io::write_text(dir / "model.safetensors.index.json", text);
    return SafetensorsCheckpoint(dir.path().string());
  };
  EXPECT_INVALID("is not valid JSON", index("{"));
  EXPECT_INVALID("must be an object with a weight_map object", index(R"({"weight_map": []})"));
  EXPECT_INVALID("weight_map 'w.f32' must name a file, not 3",
                 index(R"({"weight_map": {"w.f32": 3}})"));
  EXPECT_INVALID("names '../s.safetensors', not a file name in the checkpoint's directory",
                 index(R"({"weight_map": {"w.f32": "../s.safetensors"}})"));
  EXPECT_INVALID("names shard 's.safetensors' for tensor 'other', which that shard does not hold",
                 index(R"({"weight_map": {"other": "s.safetensors"}})"));
  EXPECT_INVALID("absent.safetensors: cannot open",
                 index(R"({"weight_map": {"w.f32": "absent.safetensors"}})"));
  EXPECT_INVALID("the key 'w.f32' appears twice",
                 index(R"({"weight_map": {"w.f32": "s.safetensors", "w.f32": "s.safetensors"}})"));
  std::filesystem::remove(dir / "model.safetensors.index.json");
  EXPECT_INVALID("holds neither model.safetensors.index.json nor model.safetensors",
                 SafetensorsCheckpoint(dir.path().string()));
}

}  // namespace

//===- SafetensorsWriterTest.cpp - safetensors writer and atomic files ----===//

#include "TestUtil.h"

#include "colossus/runtime/FileIO.h"
#include "colossus/runtime/SafetensorsWriter.h"
#include "colossus/runtime/Weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <sys/stat.h>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

bool exists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string readText(const std::string &path) {
  auto bytes = readFile(path);
  return std::string(bytes.begin(), bytes.end());
}

} // namespace

TEST(FileIO, DigestHex) {
  EXPECT_EQ(formatDigestHex(0), "0x0000000000000000");
  EXPECT_EQ(formatDigestHex(0xaf63dc4c8601ec8cULL), "0xaf63dc4c8601ec8c");
  uint64_t v = 0;
  EXPECT_TRUE(parseDigestHex("0xaf63dc4c8601ec8c", v));
  EXPECT_EQ(v, 0xaf63dc4c8601ec8cULL);
  EXPECT_TRUE(parseDigestHex("0XFF", v));
  EXPECT_EQ(v, 255u);
  EXPECT_FALSE(parseDigestHex("af63", v));
  EXPECT_FALSE(parseDigestHex("0x", v));
  EXPECT_FALSE(parseDigestHex("0x12345678901234567", v)); // 17 digits
  EXPECT_FALSE(parseDigestHex("0xg0", v));
}

TEST(FileIO, DigestFileIsFnv1a64) {
  TempDir dir;
  writeText(dir.file("a"), "a");
  writeText(dir.file("empty"), "");
  auto a = digestFile(dir.file("a"));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->bytes, 1u);
  EXPECT_EQ(a->fnv1a64, 0xaf63dc4c8601ec8cULL); // FNV-1a 64 of "a"
  auto e = digestFile(dir.file("empty"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->bytes, 0u);
  EXPECT_EQ(e->fnv1a64, 0xcbf29ce484222325ULL); // the offset basis
  EXPECT_THAT(digestFile(dir.file("missing")).message(),
              HasSubstr("cannot open"));
}

TEST(FileIO, AtomicWriterRenamesOnCommitOnly) {
  TempDir dir;
  std::string path = dir.file("out.bin");
  writeText(path, "old contents");
  {
    auto w = AtomicFileWriter::create(path);
    ASSERT_TRUE(w.ok()) << w.message();
    ASSERT_TRUE(w->write("new", 3).ok());
    ASSERT_TRUE(w->write(" contents", 9).ok());
    // Until commit, the old file is untouched and the bytes are in .tmp.
    EXPECT_EQ(readText(path), "old contents");
    EXPECT_EQ(readText(path + ".tmp"), "new contents");
    auto d = w->commit();
    ASSERT_TRUE(d.ok()) << d.message();
    EXPECT_EQ(d->bytes, 12u);
    EXPECT_EQ(d->fnv1a64, digestFile(path)->fnv1a64);
  }
  EXPECT_EQ(readText(path), "new contents");
  EXPECT_FALSE(exists(path + ".tmp"));

  // Abandoned (destroyed without commit): the .tmp goes, the file stays.
  {
    auto w = AtomicFileWriter::create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->write("partial", 7).ok());
    EXPECT_TRUE(exists(path + ".tmp"));
  }
  EXPECT_FALSE(exists(path + ".tmp"));
  EXPECT_EQ(readText(path), "new contents");

  // A directory that does not exist.
  auto bad = writeFileAtomically(dir.file("no/such/dir/f"), "x");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("cannot open for writing"));
}

TEST(SafetensorsWriter, RoundTripsThroughTheReader) {
  TempDir dir;
  std::string path = dir.file("t.safetensors");
  std::vector<float> a = testValues(6, 1), b = testValues(4, 2);
  float scalar = 3.5f;
  // Out of order on purpose; includes a scalar and an empty tensor.
  std::vector<TensorViewF32> tensors = {
      {"model.layers.0.w", {2, 3}, a.data()},
      {"lm_head.bias", {4}, b.data()},
      {"scale", {}, &scalar},
      {"empty", {0, 5}, nullptr},
  };
  auto digest = writeSafetensorsF32(path, tensors, {{"format", "pt"}});
  ASSERT_TRUE(digest.ok()) << digest.message();
  EXPECT_FALSE(exists(path + ".tmp"));
  auto d2 = digestFile(path);
  ASSERT_TRUE(d2.ok());
  EXPECT_EQ(digest->bytes, d2->bytes);
  EXPECT_EQ(digest->fnv1a64, d2->fnv1a64);

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ((*file)->names(),
            (std::vector<std::string>{"empty", "lm_head.bias",
                                      "model.layers.0.w", "scale"}));
  EXPECT_EQ((*file)->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const TensorViewF32 &t : tensors) {
    const SafetensorsTensor *r = (*file)->find(t.name);
    ASSERT_NE(r, nullptr) << t.name;
    EXPECT_EQ(r->dtype, "F32");
    EXPECT_EQ(r->shape, t.shape);
    size_t n = 1;
    for (int64_t d : t.shape)
      n *= static_cast<size_t>(d);
    ASSERT_EQ(r->bytes, n * 4);
    if (n) {
      EXPECT_EQ(std::memcmp(r->data, t.data, n * 4), 0) << t.name;
    }
  }

  // And through WeightSource + convertToF32, as --weights reads it.
  auto source = WeightSource::open(path);
  ASSERT_TRUE(source.ok());
  auto t = (*source)->tensor("model.layers.0.w");
  ASSERT_TRUE(t.ok());
  std::vector<float> back(6);
  ASSERT_TRUE(convertToF32(**t, back.data(), 6, path).ok());
  EXPECT_EQ(back, a);
}

TEST(SafetensorsWriter, HeaderLayout) {
  TempDir dir;
  std::string path = dir.file("t.safetensors");
  std::vector<float> x = testValues(3, 3), y = testValues(5, 4);
  ASSERT_TRUE(
      writeSafetensorsF32(path, {{"y", {5}, y.data()}, {"X", {3, 1}, x.data()}},
                          {{"b", "2"}, {"a", "1"}})
          .ok());
  std::vector<uint8_t> bytes = readFile(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | bytes[i];
  EXPECT_EQ((8 + n) % 8, 0u) << "the data starts 8-byte aligned";
  ASSERT_LE(8 + n, bytes.size());
  std::string header(bytes.begin() + 8, bytes.begin() + 8 + n);
  // Compact, sorted keys, padded with spaces.
  std::string trimmed = header.substr(0, header.find_last_not_of(' ') + 1);
  EXPECT_EQ(
      trimmed,
      "{\"X\":{\"data_offsets\":[0,12],\"dtype\":\"F32\",\"shape\":[3,1]},"
      "\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},"
      "\"y\":{\"data_offsets\":[12,32],\"dtype\":\"F32\",\"shape\":[5]}}");
  EXPECT_LT(header.size() - trimmed.size(), 8u);
  // The data section is exactly the tensors, contiguous in name order.
  EXPECT_EQ(bytes.size(), 8 + n + 32);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, x.data(), 12), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + 12, y.data(), 20), 0);

  auto h = safetensorsHeaderF32({{"y", {5}, y.data()}, {"X", {3, 1}, x.data()}},
                                {{"b", "2"}, {"a", "1"}});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->size(), 8 + n);
  EXPECT_EQ(std::memcmp(h->data(), bytes.data(), h->size()), 0);
}

TEST(SafetensorsWriter, SameInputsSameBytesWhateverTheOrder) {
  TempDir dir;
  std::vector<float> a = testValues(8, 5), b = testValues(2, 6);
  ASSERT_TRUE(writeSafetensorsF32(dir.file("1"), {{"a", {8}, a.data()},
                                                  {"b", {1, 2}, b.data()}})
                  .ok());
  ASSERT_TRUE(writeSafetensorsF32(dir.file("2"), {{"b", {1, 2}, b.data()},
                                                  {"a", {8}, a.data()}})
                  .ok());
  EXPECT_EQ(readFile(dir.file("1")), readFile(dir.file("2")));
}

TEST(SafetensorsWriter, ReplacesAnExistingFileAtomically) {
  TempDir dir;
  std::string path = dir.file("t.safetensors");
  std::vector<float> a = testValues(4, 7);
  ASSERT_TRUE(writeSafetensorsF32(path, {{"a", {4}, a.data()}}).ok());
  std::vector<uint8_t> before = readFile(path);
  // A bad tensor list fails before anything is written.
  auto bad =
      writeSafetensorsF32(path, {{"a", {4}, a.data()}, {"a", {4}, a.data()}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr(path));
  EXPECT_THAT(bad.message(), HasSubstr("tensor 'a' is given twice"));
  EXPECT_EQ(readFile(path), before);
  EXPECT_FALSE(exists(path + ".tmp"));
  // A good one replaces it.
  std::vector<float> b = testValues(2, 8);
  ASSERT_TRUE(writeSafetensorsF32(path, {{"b", {2}, b.data()}}).ok());
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->names(), std::vector<std::string>{"b"});
  EXPECT_FALSE(exists(path + ".tmp"));
}

TEST(SafetensorsWriter, RejectsBadTensors) {
  float v = 1.0f;
  struct Case {
    std::vector<TensorViewF32> tensors;
    const char *expect;
  } cases[] = {
      {{{"", {1}, &v}}, "empty name"},
      {{{"__metadata__", {1}, &v}}, "not a valid tensor name"},
      {{{"a", {2, -1}, &v}}, "negative dimension -1"},
      {{{"a", {2}, nullptr}}, "tensor 'a' has no data"},
      {{{"a", {int64_t(1) << 62, 8}, &v}}, "too many elements"},
      {{{"a", {1}, &v}, {"a", {1}, &v}}, "given twice"},
  };
  for (const Case &c : cases) {
    auto h = safetensorsHeaderF32(c.tensors);
    ASSERT_FALSE(h.ok()) << c.expect;
    EXPECT_THAT(h.message(), HasSubstr(c.expect));
  }
  // No tensors at all is a valid file: "{}" padded.
  auto h = safetensorsHeaderF32({});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->size(), 16u);
  EXPECT_EQ(h->substr(8), "{}      ");
}

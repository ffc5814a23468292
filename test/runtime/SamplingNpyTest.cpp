//===- SamplingNpyTest.cpp - Sampling and the .npy writer -----------------===//

#include "TestUtil.h"

#include "colossus/runtime/Npy.h"
#include "colossus/runtime/Sampling.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

TEST(Sampling, GreedyIsArgmaxLowestIndexOnTies) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(argmax(l.data(), l.size()), 1);
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.sample(l.data(), l.size()), 1);
  std::vector<float> withNan = {NAN, 0.0f, 3.0f, NAN};
  EXPECT_EQ(argmax(withNan.data(), withNan.size()), 2);
  std::vector<float> allNan = {NAN, NAN};
  EXPECT_EQ(argmax(allNan.data(), allNan.size()), 0);
}

TEST(Sampling, ValidatesParams) {
  EXPECT_TRUE(validateSamplingParams({}));
  EXPECT_THAT(validateSamplingParams({-1.0, 0, 1.0, 0}).message(),
              HasSubstr("--temperature"));
  EXPECT_THAT(validateSamplingParams({1.0, -2, 1.0, 0}).message(),
              HasSubstr("--top-k"));
  EXPECT_THAT(validateSamplingParams({1.0, 0, 0.0, 0}).message(),
              HasSubstr("--top-p"));
  EXPECT_THAT(validateSamplingParams({1.0, 0, 1.5, 0}).message(),
              HasSubstr("--top-p"));
}

namespace {
std::vector<int64_t> draw(const SamplingParams &p, const std::vector<float> &l,
                          int n) {
  Sampler s(p);
  std::vector<int64_t> out;
  for (int i = 0; i < n; ++i)
    out.push_back(s.sample(l.data(), l.size()));
  return out;
}
} // namespace

TEST(Sampling, DeterministicForASeed) {
  std::vector<float> l = {1.0f, 0.5f, 0.2f, 0.1f, -0.3f, 0.9f, 0.0f, 0.4f};
  SamplingParams p{1.0, 0, 1.0, 42};
  auto a = draw(p, l, 200), b = draw(p, l, 200);
  EXPECT_EQ(a, b);
  p.seed = 43;
  EXPECT_NE(a, draw(p, l, 200));
  // Several distinct tokens at temperature 1.
  std::map<int64_t, int> counts;
  for (int64_t t : a)
    counts[t]++;
  EXPECT_GT(counts.size(), 4u);
}

TEST(Sampling, FrequenciesFollowSoftmax) {
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  auto d = draw({1.0, 0, 1.0, 7}, l, 20000);
  std::vector<int> counts(3);
  for (int64_t t : d)
    counts[t]++;
  EXPECT_NEAR(counts[0] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts[2] / 20000.0, 0.2, 0.02);
  // Temperature sharpens: at T = 0.25, p ~ 0.5^4 : 0.3^4 : 0.2^4.
  d = draw({0.25, 0, 1.0, 7}, l, 20000);
  std::fill(counts.begin(), counts.end(), 0);
  for (int64_t t : d)
    counts[t]++;
  double z = std::pow(0.5, 4) + std::pow(0.3, 4) + std::pow(0.2, 4);
  EXPECT_NEAR(counts[0] / 20000.0, std::pow(0.5, 4) / z, 0.02);
}

TEST(Sampling, TopKRestrictsTheSupport) {
  std::vector<float> l = {0.1f, 3.0f, 0.2f, 2.9f, 2.8f, 0.0f, 2.8f};
  auto d = draw({5.0, 3, 1.0, 1}, l, 2000);
  std::map<int64_t, int> counts;
  for (int64_t t : d)
    counts[t]++;
  // Top 3: 1 (3.0), 3 (2.9), 4 (2.8, lower index than 6).
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);
  EXPECT_GT(counts[4], 0);
  // top-k 1 is greedy.
  for (int64_t t : draw({2.0, 1, 1.0, 9}, l, 50))
    EXPECT_EQ(t, 1);
}

TEST(Sampling, TopPKeepsTheNucleus) {
  std::vector<float> l = {std::log(0.05f), std::log(0.6f), std::log(0.25f),
                          std::log(0.1f)};
  // p = 0.8: 0.6 + 0.25 = 0.85 >= 0.8 -> {1, 2}.
  auto d = draw({1.0, 0, 0.8, 3}, l, 3000);
  std::map<int64_t, int> counts;
  for (int64_t t : d)
    counts[t]++;
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[1] / 3000.0, 0.6 / 0.85, 0.03);
  // A tiny p keeps only the most likely token.
  for (int64_t t : draw({1.0, 0, 0.01, 3}, l, 50))
    EXPECT_EQ(t, 1);
  // top-k and top-p together are deterministic too.
  EXPECT_EQ(draw({0.7, 3, 0.9, 11}, l, 100), draw({0.7, 3, 0.9, 11}, l, 100));
}

TEST(Npy, HeaderBytes) {
  std::string h = npyHeader({3, 8});
  ASSERT_EQ(h.size() % 64, 0u);
  EXPECT_EQ(h.size(), 128u); // 10 + 59-byte dict + '\n' > 64
  EXPECT_EQ(h.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  size_t len = static_cast<uint8_t>(h[8]) | (static_cast<uint8_t>(h[9]) << 8);
  EXPECT_EQ(len, h.size() - 10);
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 8), }";
  EXPECT_EQ(h.substr(10, dict.size()), dict);
  EXPECT_EQ(h.back(), '\n');
  for (size_t i = 10 + dict.size(); i + 1 < h.size(); ++i)
    EXPECT_EQ(h[i], ' ');
  // Long shapes still pad to 64.
  EXPECT_EQ(npyHeader({123456789, 128256}).size() % 64, 0u);
  EXPECT_THAT(npyHeader({5}), HasSubstr("'shape': (5,), }"));
}

TEST(Npy, WritesFile) {
  TempDir dir;
  std::vector<float> data = testValues(6, 5);
  ASSERT_TRUE(writeNpyF32(dir.file("x.npy"), data.data(), {2, 3}));
  std::vector<uint8_t> bytes = readFile(dir.file("x.npy"));
  const size_t headerSize = npyHeader({2, 3}).size();
  ASSERT_EQ(bytes.size(), headerSize + 24u);
  std::string header(bytes.begin(), bytes.begin() + headerSize);
  EXPECT_EQ(header, npyHeader({2, 3}));
  std::vector<float> back(6);
  std::memcpy(back.data(), bytes.data() + headerSize, 24);
  EXPECT_EQ(back, data);
  Status s = writeNpyF32(dir.file("no/such/dir.npy"), data.data(), {2, 3});
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("cannot open for writing"));
}

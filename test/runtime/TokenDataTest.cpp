//===- TokenDataTest.cpp - Token files and deterministic batches ----------===//

#include "TestUtil.h"

#include "colossus/runtime/TokenData.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

/// Little-endian uint16 file of the given ids.
std::vector<uint8_t> u16Bytes(const std::vector<uint32_t> &ids) {
  std::vector<uint8_t> out;
  for (uint32_t id : ids) {
    out.push_back(static_cast<uint8_t>(id & 0xff));
    out.push_back(static_cast<uint8_t>((id >> 8) & 0xff));
  }
  return out;
}

std::vector<uint8_t> u32Bytes(const std::vector<uint32_t> &ids) {
  std::vector<uint8_t> out;
  for (uint32_t id : ids)
    for (int b = 0; b < 4; ++b)
      out.push_back(static_cast<uint8_t>((id >> (8 * b)) & 0xff));
  return out;
}

/// ids 0, 1, ..., n - 1.
std::vector<uint32_t> iota(uint32_t n) {
  std::vector<uint32_t> ids(n);
  for (uint32_t i = 0; i < n; ++i)
    ids[i] = i;
  return ids;
}

std::unique_ptr<TokenData> openOk(const std::string &path,
                                  const TokenDataOptions &options) {
  auto td = TokenData::open(path, options);
  EXPECT_TRUE(td.ok()) << (td.ok() ? "" : td.message());
  return td.ok() ? std::move(td).value() : nullptr;
}

TokenDataOptions withDType(TokenDType dtype, int64_t seq = 0,
                           int64_t vocab = 0) {
  TokenDataOptions o;
  o.dtype = dtype;
  o.seq = seq;
  o.vocabSize = vocab;
  return o;
}

} // namespace

TEST(TokenData, ParsesDTypeAndOrderNames) {
  EXPECT_EQ(parseTokenDType("uint16"), TokenDType::U16);
  EXPECT_EQ(parseTokenDType("u16"), TokenDType::U16);
  EXPECT_EQ(parseTokenDType("uint32"), TokenDType::U32);
  EXPECT_EQ(parseTokenDType("u32"), TokenDType::U32);
  EXPECT_FALSE(parseTokenDType("int32"));
  EXPECT_FALSE(parseTokenDType("U16"));
  EXPECT_EQ(parseDataOrder("sequential"), DataOrder::Sequential);
  EXPECT_EQ(parseDataOrder("random"), DataOrder::Random);
  EXPECT_FALSE(parseDataOrder("shuffle"));
  EXPECT_STREQ(tokenDTypeName(TokenDType::U32), "uint32");
  EXPECT_STREQ(dataOrderName(DataOrder::Sequential), "sequential");
}

TEST(TokenData, DTypeFromOption) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes({1, 2, 65535, 7}));
  auto td = openOk(path, withDType(TokenDType::U16));
  ASSERT_TRUE(td);
  EXPECT_EQ(td->dtype(), TokenDType::U16);
  EXPECT_EQ(td->dtypeSource(), "option");
  EXPECT_EQ(td->numTokens(), 4u);
  EXPECT_EQ(td->token(0), 1u);
  EXPECT_EQ(td->token(2), 65535u);
  EXPECT_EQ(td->token(3), 7u);

  // The same bytes read as uint32: two little-endian words.
  auto td32 = openOk(path, withDType(TokenDType::U32));
  ASSERT_TRUE(td32);
  EXPECT_EQ(td32->numTokens(), 2u);
  EXPECT_EQ(td32->token(0), 1u | (2u << 16));
  EXPECT_EQ(td32->token(1), 65535u | (7u << 16));
}

TEST(TokenData, DTypeFromSidecar) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u32Bytes({70000, 3}));
  for (const char *name : {"uint32", "u32"}) {
    writeText(path + ".json",
              std::string("{\"dtype\": \"") + name + "\", \"vocab\": 9}");
    auto td = openOk(path, {});
    ASSERT_TRUE(td);
    EXPECT_EQ(td->dtype(), TokenDType::U32) << name;
    EXPECT_EQ(td->dtypeSource(), path + ".json");
    EXPECT_EQ(td->numTokens(), 2u);
    EXPECT_EQ(td->token(0), 70000u);
  }
  for (const char *name : {"uint16", "u16"}) {
    writeText(path + ".json", std::string("{\"dtype\":\"") + name + "\"}");
    auto td = openOk(path, {});
    ASSERT_TRUE(td);
    EXPECT_EQ(td->dtype(), TokenDType::U16) << name;
    EXPECT_EQ(td->numTokens(), 4u);
  }
  // An option that agrees with the sidecar is fine; one that disagrees is
  // an error naming both.
  auto td = openOk(path, withDType(TokenDType::U16));
  ASSERT_TRUE(td);
  EXPECT_EQ(td->dtype(), TokenDType::U16);
  EXPECT_EQ(td->dtypeSource(), "option");
  auto bad = TokenData::open(path, withDType(TokenDType::U32));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(),
              HasSubstr("the dtype given, uint32, disagrees with uint16 in "
                        "the sidecar " +
                        path + ".json"));
}

TEST(TokenData, MissingDTypeSaysHowToGiveIt) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes(iota(8)));
  auto td = TokenData::open(path, {});
  ASSERT_FALSE(td.ok());
  EXPECT_THAT(td.message(), HasSubstr(path));
  EXPECT_THAT(td.message(), HasSubstr("--data-dtype uint16|uint32"));
  EXPECT_THAT(td.message(), HasSubstr(path + ".json"));
  EXPECT_THAT(td.message(), HasSubstr("{\"dtype\": \"uint16\"}"));
}

TEST(TokenData, BadSidecars) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes(iota(8)));
  struct Case {
    const char *text;
    const char *expect;
  } cases[] = {
      {"{\"dtype\": ", "is not a JSON object"},
      {"[\"uint16\"]", "is not a JSON object"},
      {"{\"type\": \"uint16\"}", "has no string \"dtype\""},
      {"{\"dtype\": 16}", "has no string \"dtype\""},
      {"{\"dtype\": \"int8\"}", "dtype \"int8\" is not one of"},
  };
  for (const Case &c : cases) {
    writeText(path + ".json", c.text);
    auto td = TokenData::open(path, {});
    ASSERT_FALSE(td.ok()) << c.text;
    EXPECT_THAT(td.message(), HasSubstr(c.expect)) << c.text;
    EXPECT_THAT(td.message(), HasSubstr(path + ".json"));
  }
}

TEST(TokenData, OddFileSize) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, std::vector<uint8_t>(7, 1));
  auto td = TokenData::open(path, withDType(TokenDType::U16));
  ASSERT_FALSE(td.ok());
  EXPECT_THAT(td.message(), HasSubstr("size 7 bytes is not a multiple of 2"));

  writeFile(path, std::vector<uint8_t>(6, 1));
  td = TokenData::open(path, withDType(TokenDType::U32));
  ASSERT_FALSE(td.ok());
  EXPECT_THAT(td.message(), HasSubstr("size 6 bytes is not a multiple of 4"));
  EXPECT_TRUE(TokenData::open(path, withDType(TokenDType::U16)).ok());
}

TEST(TokenData, MissingFileAndTooFewTokens) {
  TempDir dir;
  auto missing =
      TokenData::open(dir.file("nope.bin"), withDType(TokenDType::U16));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.message(), HasSubstr("nope.bin: cannot open"));

  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes(iota(16)));
  auto td = TokenData::open(path, withDType(TokenDType::U16, /*seq=*/16));
  ASSERT_FALSE(td.ok());
  EXPECT_THAT(td.message(), HasSubstr("holds 16 tokens"));
  EXPECT_THAT(td.message(), HasSubstr("needs at least 17"));
  EXPECT_TRUE(TokenData::open(path, withDType(TokenDType::U16, 15)).ok());

  // An empty file opens (without seq) but has no window.
  writeFile(dir.file("empty.bin"), {});
  auto empty = openOk(dir.file("empty.bin"), withDType(TokenDType::U16));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->numTokens(), 0u);
  EXPECT_FALSE(empty->windowStart(0, 0, 1, 4, DataOrder::Sequential, 0).ok());
}

TEST(TokenData, SequentialWindowsFollowTheFormula) {
  // N = 100, S = 8: W = (100 - 1) / 8 = 12 whole windows.
  const uint64_t N = 100;
  const int64_t B = 3, S = 8;
  const uint64_t W = (N - 1) / S;
  ASSERT_EQ(W, 12u);
  for (int64_t step = 0; step < 20; ++step)
    for (int64_t i = 0; i < B; ++i) {
      uint64_t w = static_cast<uint64_t>(step * B + i);
      auto start =
          tokenWindowStart(N, step, i, B, S, DataOrder::Sequential, 99);
      ASSERT_TRUE(start.ok()) << start.message();
      EXPECT_EQ(*start, (w % W) * S) << "step " << step << " sample " << i;
      if (w * S + S + 1 <= N) { // before the wrap: exactly w * S
        EXPECT_EQ(*start, w * S);
      }
      EXPECT_LE(*start + S + 1, N);
    }
  // The last window before the wrap and the first after it.
  EXPECT_EQ(*tokenWindowStart(N, 3, 2, B, S, DataOrder::Sequential, 0), 88u);
  EXPECT_EQ(*tokenWindowStart(N, 4, 0, B, S, DataOrder::Sequential, 0), 0u);
  EXPECT_EQ(*tokenWindowStart(N, 4, 1, B, S, DataOrder::Sequential, 0), 8u);
  // When N - 1 is a multiple of S the last window ends on the last token.
  EXPECT_EQ(*tokenWindowStart(97, 11, 0, 1, 8, DataOrder::Sequential, 0), 88u);
  EXPECT_EQ(*tokenWindowStart(97, 12, 0, 1, 8, DataOrder::Sequential, 0), 0u);
  // The seed does not matter.
  EXPECT_EQ(*tokenWindowStart(N, 2, 1, B, S, DataOrder::Sequential, 1),
            *tokenWindowStart(N, 2, 1, B, S, DataOrder::Sequential, 2));
  // A huge step does not overflow: w = 2^62 * 3 + 2, W = 12.
  int64_t big = int64_t(1) << 62;
  unsigned __int128 w = static_cast<unsigned __int128>(big) * 3 + 2;
  EXPECT_EQ(*tokenWindowStart(N, big, 2, B, S, DataOrder::Sequential, 0),
            static_cast<uint64_t>(w % 12) * 8);
}

TEST(TokenData, FillBatchSequential) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes(iota(100)));
  auto td = openOk(path, withDType(TokenDType::U16, 8));
  ASSERT_TRUE(td);
  const int64_t B = 3, S = 8;
  std::vector<int32_t> in(B * S), tg(B * S);
  for (int64_t step : {0, 1, 3, 4, 9}) {
    ASSERT_TRUE(td->fillBatch(step, B, S, DataOrder::Sequential, 0, in.data(),
                              tg.data())
                    .ok());
    for (int64_t i = 0; i < B; ++i) {
      int32_t start = static_cast<int32_t>(((step * B + i) % 12) * S);
      for (int64_t j = 0; j < S; ++j) {
        EXPECT_EQ(in[i * S + j], start + j) << step << " " << i << " " << j;
        EXPECT_EQ(tg[i * S + j], start + j + 1) << step << " " << i;
      }
    }
  }
}

TEST(TokenData, RandomWindowsMatchTheHash) {
  // Values of an independent implementation of the documented hash (Python,
  // integers mod 2^64). sm(1234567) is the first output of the reference
  // splitmix64 generator seeded with 1234567.
  EXPECT_EQ(batchHash(0, 0, 0), 0x238275bc38fcbe91ULL);
  EXPECT_EQ(batchHash(1234, 5, 3), 0x90e35a1eada213bbULL);
  EXPECT_EQ(batchHash(~0ULL, 1000000, 7), 0x22bc89ac662b80eeULL);
  // N = 1000, S = 16, seed 42, B = 2, steps 0..2.
  const uint64_t expected[] = {806, 646, 92, 90, 686, 318};
  for (int64_t s = 0; s < 3; ++s)
    for (int64_t i = 0; i < 2; ++i)
      EXPECT_EQ(*tokenWindowStart(1000, s, i, 2, 16, DataOrder::Random, 42),
                expected[s * 2 + i]);
}

TEST(TokenData, RandomWindowsDeterministicPerSeedAndInBounds) {
  const uint64_t N = 1000;
  const int64_t B = 4, S = 16;
  std::set<uint64_t> starts;
  int differ = 0, total = 0;
  for (int64_t step = 0; step < 200; ++step)
    for (int64_t i = 0; i < B; ++i) {
      auto a = tokenWindowStart(N, step, i, B, S, DataOrder::Random, 7);
      auto again = tokenWindowStart(N, step, i, B, S, DataOrder::Random, 7);
      auto other = tokenWindowStart(N, step, i, B, S, DataOrder::Random, 8);
      ASSERT_TRUE(a.ok() && again.ok() && other.ok());
      EXPECT_EQ(*a, *again);
      EXPECT_LT(*a, N - S); // the window [a, a + S + 1) is inside the file
      EXPECT_LT(*other, N - S);
      starts.insert(*a);
      differ += *a != *other;
      ++total;
    }
  // 800 draws from 984 starts: many distinct ones, and another seed gives
  // another sequence.
  EXPECT_GT(starts.size(), 400u);
  EXPECT_GT(differ, total * 9 / 10);
  // The smallest file: every window starts at 0.
  for (int64_t step = 0; step < 10; ++step)
    EXPECT_EQ(*tokenWindowStart(S + 1, step, 0, 1, S, DataOrder::Random, 3),
              0u);
}

TEST(TokenData, FillBatchRandom) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u32Bytes(iota(500)));
  writeText(path + ".json", "{\"dtype\": \"uint32\"}");
  auto td = openOk(path, {});
  ASSERT_TRUE(td);
  const int64_t B = 2, S = 5;
  std::vector<int32_t> in(B * S), tg(B * S), in2(B * S), tg2(B * S);
  ASSERT_TRUE(
      td->fillBatch(17, B, S, DataOrder::Random, 5, in.data(), tg.data()).ok());
  ASSERT_TRUE(
      td->fillBatch(17, B, S, DataOrder::Random, 5, in2.data(), tg2.data())
          .ok());
  EXPECT_EQ(in, in2);
  EXPECT_EQ(tg, tg2);
  for (int64_t i = 0; i < B; ++i) {
    uint64_t start = *td->windowStart(17, i, B, S, DataOrder::Random, 5);
    EXPECT_EQ(start, batchHash(5, 17, i) % (500 - S));
    for (int64_t j = 0; j < S; ++j) {
      EXPECT_EQ(in[i * S + j], static_cast<int32_t>(start + j));
      EXPECT_EQ(tg[i * S + j], static_cast<int32_t>(start + j + 1));
    }
  }
}

TEST(TokenData, MicroBatchesSplitTheGlobalBatch) {
  // M = 2 micro-batches of b = 2: micro-batch j of step s reads samples
  // [2j, 2j + 2) of the global batch of 4; in sequential order that is data
  // step 2s + j with batch 2 (the training oracle's --grad-accum).
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  writeFile(path, u16Bytes(iota(300)));
  auto td = openOk(path, withDType(TokenDType::U16, 6));
  ASSERT_TRUE(td);
  const int64_t S = 6;
  for (DataOrder order : {DataOrder::Sequential, DataOrder::Random}) {
    std::vector<int32_t> gin(4 * S), gtg(4 * S);
    ASSERT_TRUE(td->fillBatch(3, 4, S, order, 11, gin.data(), gtg.data()).ok());
    for (int64_t j = 0; j < 2; ++j) {
      std::vector<int32_t> in(2 * S), tg(2 * S);
      ASSERT_TRUE(
          td->fillSamples(3, 4, 2 * j, 2, S, order, 11, in.data(), tg.data())
              .ok());
      EXPECT_TRUE(std::equal(in.begin(), in.end(), gin.begin() + 2 * j * S));
      EXPECT_TRUE(std::equal(tg.begin(), tg.end(), gtg.begin() + 2 * j * S));
      if (order == DataOrder::Sequential) {
        std::vector<int32_t> din(2 * S), dtg(2 * S);
        ASSERT_TRUE(
            td->fillBatch(3 * 2 + j, 2, S, order, 0, din.data(), dtg.data())
                .ok());
        EXPECT_EQ(in, din);
        EXPECT_EQ(tg, dtg);
      }
    }
  }
  std::vector<int32_t> in(3 * S), tg(3 * S);
  EXPECT_THAT(
      td->fillSamples(0, 4, 2, 3, S, DataOrder::Random, 0, in.data(), tg.data())
          .message(),
      HasSubstr("samples [2, 2 + 3) are outside the batch [0, 4)"));
  EXPECT_THAT(td->fillBatch(0, 0, S, DataOrder::Random, 0, in.data(), tg.data())
                  .message(),
              HasSubstr("batch size 0"));
}

TEST(TokenData, BadIdsNameFileOffsetAndId) {
  TempDir dir;
  std::string path = dir.file("tokens.bin");
  std::vector<uint32_t> ids(40, 3);
  ids[5] = 77;
  writeFile(path, u16Bytes(ids));
  auto td = openOk(path, withDType(TokenDType::U16, 4, /*vocab=*/50));
  ASSERT_TRUE(td);
  std::vector<int32_t> in(4), tg(4);
  // Window 0 ([0, 5)) does not reach token 5; window 1 ([4, 9)) does.
  EXPECT_TRUE(
      td->fillBatch(0, 1, 4, DataOrder::Sequential, 0, in.data(), tg.data())
          .ok());
  Status s =
      td->fillBatch(1, 1, 4, DataOrder::Sequential, 0, in.data(), tg.data());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(), HasSubstr("token 5 (byte offset 10)"));
  EXPECT_THAT(s.message(), HasSubstr("id 77"));
  EXPECT_THAT(s.message(), HasSubstr("vocabulary size 50"));

  Status all = td->checkAllIds(50);
  ASSERT_FALSE(all.ok());
  EXPECT_THAT(all.message(), HasSubstr("token 5 (byte offset 10) has id 77"));
  EXPECT_TRUE(td->checkAllIds(78).ok());

  // uint32: the offset is 4 bytes per token; ids above INT32_MAX never fit.
  std::vector<uint32_t> ids32(10, 1);
  ids32[7] = 0x80000000u;
  writeFile(dir.file("t32.bin"), u32Bytes(ids32));
  auto td32 = openOk(dir.file("t32.bin"), withDType(TokenDType::U32));
  ASSERT_TRUE(td32);
  s = td32->fillBatch(1, 1, 4, DataOrder::Sequential, 0, in.data(), tg.data());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(),
              HasSubstr("token 7 (byte offset 28) has id 2147483648"));
}

TEST(TokenData, WindowArgumentErrors) {
  EXPECT_THAT(
      tokenWindowStart(100, 0, 0, 0, 8, DataOrder::Sequential, 0).message(),
      HasSubstr("batch size 0"));
  EXPECT_THAT(
      tokenWindowStart(100, 0, 0, 1, 0, DataOrder::Sequential, 0).message(),
      HasSubstr("sequence length 0"));
  EXPECT_THAT(
      tokenWindowStart(100, -1, 0, 1, 8, DataOrder::Random, 0).message(),
      HasSubstr("step -1"));
  EXPECT_THAT(tokenWindowStart(100, 0, 2, 2, 8, DataOrder::Random, 0).message(),
              HasSubstr("sample 2 is outside the batch [0, 2)"));
  EXPECT_THAT(tokenWindowStart(8, 0, 0, 1, 8, DataOrder::Random, 0).message(),
              HasSubstr("8 tokens are fewer than one window of 8 + 1"));
}

//===- ChecksumTest.cpp - ArtifactChecksum.h ------------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/ArtifactChecksum.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace colossus;
using namespace colossus::test;

TEST(Checksum, Fnv1aKnownValues) {
  // Reference values of FNV-1a 64.
  EXPECT_EQ(fnv1a64(nullptr, 0), 0xcbf29ce484222325ULL);
  const uint8_t a[] = {'a'};
  EXPECT_EQ(fnv1a64(a, 1), 0xaf63dc4c8601ec8cULL);
  const uint8_t foobar[] = {'f', 'o', 'o', 'b', 'a', 'r'};
  EXPECT_EQ(fnv1a64(foobar, 6), 0x85944171f73967e8ULL);
  // Chaining equals hashing the concatenation.
  EXPECT_EQ(fnv1a64(foobar + 3, 3, fnv1a64(foobar, 3)), fnv1a64(foobar, 6));
}

TEST(Checksum, StampedFieldEqualsHashWithFieldZeroed) {
  std::vector<uint8_t> bytes = buildArtifact(tinySpec());
  const schema::Artifact *a = schema::GetArtifact(bytes.data());
  uint64_t stored = a->checksum();
  EXPECT_NE(stored, 0u);
  EXPECT_EQ(stored, artifactChecksum(bytes.data(), bytes.size()));
  std::vector<uint8_t> zeroed = bytes;
  ASSERT_TRUE(schema::GetMutableArtifact(zeroed.data())->mutate_checksum(0));
  EXPECT_EQ(stored, fnv1a64(zeroed.data(), zeroed.size()));
  // The checksum does not depend on the value currently in the field.
  EXPECT_EQ(artifactChecksum(zeroed.data(), zeroed.size()), stored);
  uint64_t read = 0;
  ASSERT_TRUE(readArtifactChecksum(bytes.data(), bytes.size(), read));
  EXPECT_EQ(read, stored);
}

TEST(Checksum, StampFailsWithoutTheField) {
  flatbuffers::FlatBufferBuilder fbb; // no ForceDefaults: checksum 0 omitted
  schema::ArtifactBuilder ab(fbb);
  ab.add_schema_version(1);
  ab.add_checksum(0);
  schema::FinishArtifactBuffer(fbb, ab.Finish());
  std::vector<uint8_t> bytes(fbb.GetBufferPointer(),
                             fbb.GetBufferPointer() + fbb.GetSize());
  EXPECT_FALSE(stampArtifactChecksum(bytes.data(), bytes.size()));
  uint64_t read = 0;
  EXPECT_FALSE(readArtifactChecksum(bytes.data(), bytes.size(), read));
  EXPECT_EQ(artifactChecksum(bytes.data(), bytes.size()),
            fnv1a64(bytes.data(), bytes.size()));
}

TEST(Checksum, SafeOnTruncatedAndGarbageBuffers) {
  std::vector<uint8_t> bytes = buildArtifact(tinySpec());
  for (size_t n = 0; n < 256 && n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    (void)artifactChecksum(cut.data(), cut.size());
    EXPECT_FALSE(n < 8 && stampArtifactChecksum(cut.data(), cut.size()));
  }
  std::vector<uint8_t> garbage(64, 0xff);
  (void)artifactChecksum(garbage.data(), garbage.size());
  EXPECT_FALSE(stampArtifactChecksum(garbage.data(), garbage.size()));
}

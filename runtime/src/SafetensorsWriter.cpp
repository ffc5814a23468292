//===- SafetensorsWriter.cpp - Writing f32 safetensors files --------------===//

#include "colossus/runtime/SafetensorsWriter.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

namespace colossus {

namespace {

/// Indices of `tensors` in the order of their names.
std::vector<size_t> sortedOrder(const std::vector<TensorViewF32> &tensors) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

/// Byte size of a tensor, or an error (negative dimension, overflow).
Expected<uint64_t> tensorBytes(const TensorViewF32 &t) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0)
      return makeError("tensor '", t.name, "': negative dimension ", d);
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
      return makeError("tensor '", t.name, "': too many elements");
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(4), &bytes))
    return makeError("tensor '", t.name, "': too many elements");
  return bytes;
}

} // namespace

Expected<std::string>
safetensorsHeaderF32(const std::vector<TensorViewF32> &tensors,
                     const SafetensorsMetadata &metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto &kv : metadata)
      meta[kv.first] = kv.second;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (size_t i : sortedOrder(tensors)) {
    const TensorViewF32 &t = tensors[i];
    if (t.name.empty())
      return makeError("a tensor has an empty name");
    if (t.name == "__metadata__")
      return makeError("'__metadata__' is not a valid tensor name");
    if (!seen.insert(t.name).second)
      return makeError("tensor '", t.name, "' is given twice");
    auto bytes = tensorBytes(t);
    if (!bytes)
      return bytes.error();
    if (*bytes && !t.data)
      return makeError("tensor '", t.name, "' has no data");
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, *bytes, &end))
      return makeError("tensors too large");
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string json = header.dump();
  // Pad with spaces so that the data starts at a multiple of 8.
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

Expected<FileDigest>
writeSafetensorsF32(const std::string &path,
                    const std::vector<TensorViewF32> &tensors,
                    const SafetensorsMetadata &metadata) {
  auto header = safetensorsHeaderF32(tensors, metadata);
  if (!header)
    return makeError(path, ": ", header.message());
  auto writer = AtomicFileWriter::create(path);
  if (!writer)
    return writer.error();
  COLOSSUS_RETURN_IF_ERROR(writer->write(header->data(), header->size()));
  for (size_t i : sortedOrder(tensors)) {
    const TensorViewF32 &t = tensors[i];
    uint64_t bytes = *tensorBytes(t); // checked by the header
    if (bytes)
      COLOSSUS_RETURN_IF_ERROR(writer->write(t.data, bytes));
  }
  return writer->commit();
}

} // namespace colossus

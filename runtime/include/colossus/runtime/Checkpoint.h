//===- Checkpoint.h - Training checkpoints --------------------------------===//
//
// A checkpoint of step s (s optimizer steps done) is a directory
//
//   D/step-%08d/              e.g. D/step-00000200/
//     model.safetensors       the parameters, HF names, F32
//                             (metadata {"format": "pt"})
//     optimizer.safetensors   "<name>.exp_avg", "<name>.exp_avg_sq" for every
//                             parameter, plus the caller's extra tensors, F32
//     state.json              {"format": 1, "step": s,
//                              "data": {...}, "rng": {...},
//                              "files": {"model.safetensors":
//                                          {"bytes": n, "fnv1a64": "0x..."},
//                                        "optimizer.safetensors": {...}}}
//
// "data" and "rng" are JSON objects the caller gives (the data position and
// the random state of the training loop); the library stores their content
// (keys sorted) without interpreting it. The directory is also a valid
// `--weights` argument (WeightSource opens its model.safetensors).
//
// Commit protocol (one writer per directory D):
//   1. remove a leftover D/.tmp-step-%08d of the same step, create it;
//   2. write model.safetensors and optimizer.safetensors into it (each as
//      `.tmp`, fsync, rename), recording their sizes and FNV-1a 64 hashes;
//   3. write state.json last (same way), fsync the directory;
//   4. rename D/.tmp-step-%08d to D/step-%08d (the commit point; a directory
//      of the same step already there is first moved to D/.old-step-%08d and
//      removed after the rename), fsync D;
//   5. remove other leftover .tmp-step-* directories and, with keep = K > 0,
//      the complete checkpoints older than the K newest at or below step s.
//
// Reading: a checkpoint is valid when state.json parses, has format 1 and
// the directory's step, and every file it lists exists with the recorded
// size and hash. findLatestCheckpoint picks the newest valid one; newer
// invalid ones (cut off, corrupt, without state.json) are skipped with a
// warning line each, returned to the caller. Names that are not
// "step-" followed by the step's %08d digits are ignored (.tmp-step-* and
// .old-step-* get a warning of their own).
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_CHECKPOINT_H
#define COLOSSUS_RUNTIME_CHECKPOINT_H

#include "colossus/runtime/SafetensorsWriter.h"
#include "colossus/runtime/Status.h"
#include "colossus/runtime/Weights.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace colossus {

/// "step-00000200" for 200 (at least 8 digits, more for steps >= 10^8).
std::string checkpointDirName(int64_t step);
/// The step of a name checkpointDirName gives back; nullopt for any other.
std::optional<int64_t> parseCheckpointDirName(const std::string &name);

/// One parameter and its AdamW state, all of `param.shape` elements.
struct ParamWithState {
  TensorViewF32 param;             ///< name: the HF name
  const float *expAvg = nullptr;   ///< first moment m
  const float *expAvgSq = nullptr; ///< second moment v
};

/// What a checkpoint holds, as views of the caller's memory.
struct CheckpointContents {
  int64_t step = 0;
  std::vector<ParamWithState> params;
  /// Extra f32 tensors of optimizer.safetensors (e.g. master weights); their
  /// names must not clash with "<param>.exp_avg" / "<param>.exp_avg_sq".
  std::vector<TensorViewF32> extraOptimizerTensors;
  /// JSON object texts stored in state.json as "data" and "rng".
  std::string dataJson = "{}";
  std::string rngJson = "{}";
};

struct CheckpointWriteResult {
  std::string path; ///< D/step-%08d
  /// Directories removed by pruning or as leftovers.
  std::vector<std::string> removed;
  /// Non-fatal problems (a directory that could not be removed).
  std::vector<std::string> warnings;
};

/// Writes the checkpoint into `dir` (created if missing) with the commit
/// protocol above; keep = K > 0 keeps the K newest checkpoints at or below
/// this step, 0 keeps all.
Expected<CheckpointWriteResult>
writeCheckpoint(const std::string &dir, const CheckpointContents &contents,
                int keep = 0);

/// A checkpoint found in a directory.
struct CheckpointRef {
  int64_t step = 0;
  std::string path; ///< D/step-%08d
};

struct CheckpointSearch {
  std::optional<CheckpointRef> latest; ///< none when no valid one exists
  /// One line per skipped or ignored directory, naming it and the reason.
  std::vector<std::string> warnings;
};

/// Checks one checkpoint directory (state.json, sizes, hashes); the error
/// says what is wrong.
Status verifyCheckpoint(const std::string &stepDir);

/// The newest valid checkpoint of `dir`. A missing `dir` has none (not an
/// error); a `dir` that cannot be listed is an error.
Expected<CheckpointSearch> findLatestCheckpoint(const std::string &dir);

/// An opened checkpoint: the two safetensors files stay mapped.
struct LoadedCheckpoint {
  int64_t step = 0;
  std::string path;
  std::unique_ptr<SafetensorsFile> model;
  std::unique_ptr<SafetensorsFile> optimizer;
  /// The "data" and "rng" objects of state.json, as compact JSON text with
  /// sorted keys.
  std::string dataJson;
  std::string rngJson;
};

/// Verifies (as verifyCheckpoint) and opens a checkpoint directory. Also
/// checks that every tensor is F32 and that every parameter has
/// "<name>.exp_avg" and "<name>.exp_avg_sq" of its shape.
Expected<LoadedCheckpoint> loadCheckpoint(const std::string &stepDir);

/// The newest checkpoint of `dir` that loads, verifying each candidate once
/// (findLatestCheckpoint + loadCheckpoint would read the files twice);
/// skipped newer ones add a warning each. `checkpoint` is empty when none
/// loads.
struct LatestCheckpoint {
  std::optional<LoadedCheckpoint> checkpoint;
  std::vector<std::string> warnings;
};
Expected<LatestCheckpoint> loadLatestCheckpoint(const std::string &dir);

/// Copies an F32 tensor of `file` into `out` after checking that it exists,
/// is F32 and has exactly `shape`.
Status readTensorF32(const SafetensorsFile &file, const std::string &name,
                     const std::vector<int64_t> &shape, float *out);
/// The values of an F32 tensor (shape in `shape` when non-null).
Expected<std::vector<float>>
tensorValuesF32(const SafetensorsFile &file, const std::string &name,
                std::vector<int64_t> *shape = nullptr);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_CHECKPOINT_H

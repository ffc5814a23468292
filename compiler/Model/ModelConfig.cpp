//===- ModelConfig.cpp - Model descriptions -------------------------------===//
#include "colossus/Compiler/ModelConfig.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <optional>

using namespace llvm;
using namespace colossus;

namespace {

/// Reads keys out of one JSON object, remembering which were consumed, and
/// produces errors that name the file and the key.
class KeyReader {
public:
  KeyReader(StringRef file, const json::Object &obj, bool strict)
      : file(file), obj(obj), strict(strict) {}

  Error error(const Twine &key, const Twine &msg) const {
    return createStringError(inconvertibleErrorCode(),
                             file + ": key '" + key + "': " + msg);
  }

  /// The key is there with a value other than null.
  bool has(StringRef key) const {
    const json::Value *v = obj.get(key);
    return v && v->kind() != json::Value::Null;
  }

  /// The key is there, null or not (HF tells `"k": null` from an absent key
  /// where the default is not null).
  bool present(StringRef key) const { return obj.get(key) != nullptr; }

  const json::Value *raw(StringRef key) {
    used.insert(key);
    return obj.get(key);
  }

  /// In strict mode a missing key is an error; otherwise `def` is used.
  Expected<int64_t> getInt(StringRef key, std::optional<int64_t> def) {
    const json::Value *v = raw(key);
    if (!v || v->kind() == json::Value::Null) {
      if (def && !strict)
        return *def;
      return error(key, "missing (an integer is required)");
    }
    std::optional<int64_t> i = v->getAsInteger();
    if (!i)
      return error(key, "must be an integer");
    return *i;
  }

  Expected<double> getNumber(StringRef key, std::optional<double> def) {
    const json::Value *v = raw(key);
    if (!v || v->kind() == json::Value::Null) {
      if (def && !strict)
        return *def;
      return error(key, "missing (a number is required)");
    }
    std::optional<double> d = v->getAsNumber();
    if (!d)
      return error(key, "must be a number");
    return *d;
  }

  Expected<bool> getBool(StringRef key, std::optional<bool> def) {
    const json::Value *v = raw(key);
    if (!v || v->kind() == json::Value::Null) {
      if (def && !strict)
        return *def;
      return error(key, "missing (true or false is required)");
    }
    std::optional<bool> b = v->getAsBoolean();
    if (!b)
      return error(key, "must be true or false");
    return *b;
  }

  Expected<std::string> getString(StringRef key,
                                  std::optional<std::string> def) {
    const json::Value *v = raw(key);
    if (!v || v->kind() == json::Value::Null) {
      if (def && !strict)
        return *def;
      return error(key, "missing (a string is required)");
    }
    std::optional<StringRef> s = v->getAsString();
    if (!s)
      return error(key, "must be a string");
    return s->str();
  }

  /// A key whose value must be null/absent (strict: present, may be null).
  Expected<const json::Value *> getNullable(StringRef key) {
    const json::Value *v = raw(key);
    if (!v && strict)
      return error(key, "missing (use null for none)");
    if (v && v->kind() == json::Value::Null)
      return nullptr;
    return v;
  }

  /// Token ids: an integer, a list (first entry is used), or null.
  Expected<int64_t> getTokenId(StringRef key) {
    const json::Value *v = raw(key);
    if (!v) {
      if (strict)
        return error(key, "missing (an integer, a list or null)");
      return -1;
    }
    if (v->kind() == json::Value::Null)
      return -1;
    if (auto i = v->getAsInteger())
      return *i;
    if (const json::Array *a = v->getAsArray()) {
      if (a->empty())
        return -1;
      if (auto i = (*a)[0].getAsInteger())
        return *i;
    }
    return error(key, "must be an integer, a list of integers or null");
  }

  /// Every key not consumed must be in `ignorable` (and, in strict mode,
  /// nothing else is allowed).
  Error checkUnused(const StringSet<> &ignorable) {
    // Iterate in a stable (sorted) order so the first error is deterministic.
    std::vector<std::string> keys;
    for (const auto &kv : obj)
      keys.push_back(kv.first.str());
    llvm::sort(keys);
    for (const std::string &key : keys) {
      if (used.contains(key))
        continue;
      if (!strict &&
          (ignorable.contains(key) || StringRef(key).starts_with("_")))
        continue;
      if (strict)
        return error(key, "unknown field (see docs/model-format.md)");
      return error(key, "not supported yet: this key may change the "
                        "architecture and Colossus does not know it");
    }
    return Error::success();
  }

private:
  StringRef file;
  const json::Object &obj;
  bool strict;
  StringSet<> used;
};

// Keys of published HF configs that do not change the computation of a
// forward or training step.
const StringSet<> &ignorableHFKeys() {
  static const StringSet<> keys = {"architectures",
                                   "attention_dropout",
                                   "initializer_range",
                                   "torch_dtype",
                                   "dtype",
                                   "transformers_version",
                                   "use_cache",
                                   "pretraining_tp",
                                   "pad_token_id",
                                   "attn_pdrop",
                                   "embd_pdrop",
                                   "resid_pdrop",
                                   "summary_activation",
                                   "summary_first_dropout",
                                   "summary_proj_to_labels",
                                   "summary_type",
                                   "summary_use_proj",
                                   "task_specific_params",
                                   "n_ctx",
                                   "reorder_and_upcast_attn",
                                   "output_past",
                                   "auto_map",
                                   "model_name",
                                   "id2label",
                                   "label2id",
                                   "tokenizer_class",
                                   "gradient_checkpointing",
                                   "unk_token_id",
                                   "layer_norm_eps_outside",
                                   "name_or_path"};
  return keys;
}

/// Reads a size: a positive integer.
Error getSize(KeyReader &r, StringRef k, int64_t &out,
              std::optional<int64_t> def) {
  Expected<int64_t> v = r.getInt(k, def);
  if (!v)
    return v.takeError();
  if (*v <= 0)
    return r.error(k, "must be positive, got " + Twine(*v));
  out = *v;
  return Error::success();
}

/// The rope_scaling object of the llama family: its type and parameters.
/// Every key of the object is read; one Colossus does not know is an error.
Error readRopeScaling(KeyReader &r, const json::Object &o, ModelConfig &c) {
  std::string type;
  if (auto t = o.getString("rope_type"))
    type = t->str();
  else if (auto t = o.getString("type"))
    type = t->str();
  else
    return r.error("rope_scaling.rope_type", "missing");
  StringSet<> known = {"rope_type", "type"};
  auto num = [&](StringRef k, double &out) -> Error {
    known.insert(k);
    std::optional<double> v = o.getNumber(k);
    if (!v)
      return r.error("rope_scaling." + k, "missing or not a number");
    out = *v;
    return Error::success();
  };
  auto positive = [&](StringRef k, double v) -> Error {
    // !(v > 0): NaN is not positive either.
    if (!(v > 0))
      return r.error("rope_scaling." + k, "must be positive");
    return Error::success();
  };
  if (type == "linear") {
    c.ropeScaling = "linear";
    if (Error e = num("factor", c.ropeFactor))
      return e;
    if (Error e = positive("factor", c.ropeFactor))
      return e;
  } else if (type == "llama3") {
    c.ropeScaling = "llama3";
    if (Error e = num("factor", c.ropeFactor))
      return e;
    if (Error e = positive("factor", c.ropeFactor))
      return e;
    if (Error e = num("low_freq_factor", c.ropeLowFreqFactor))
      return e;
    if (Error e = positive("low_freq_factor", c.ropeLowFreqFactor))
      return e;
    if (Error e = num("high_freq_factor", c.ropeHighFreqFactor))
      return e;
    if (!(c.ropeHighFreqFactor > c.ropeLowFreqFactor))
      return r.error("rope_scaling.high_freq_factor",
                     "must be greater than low_freq_factor");
    known.insert("original_max_position_embeddings");
    const json::Value *orig = o.get("original_max_position_embeddings");
    std::optional<int64_t> origInt = orig ? orig->getAsInteger() : std::nullopt;
    if (!origInt || *origInt <= 0)
      return r.error("rope_scaling.original_max_position_embeddings",
                     "missing or not a positive integer");
    c.ropeOriginalMaxPositions = *origInt;
  } else if (type != "default") {
    return r.error("rope_scaling.rope_type",
                   "'" + type +
                       "' is not supported yet (supported: linear, llama3)");
  }
  // A stable (sorted) order, so the first error is deterministic.
  std::vector<std::string> keys;
  for (const auto &kv : o)
    keys.push_back(kv.first.str());
  llvm::sort(keys);
  for (const std::string &k : keys)
    if (!known.contains(k))
      return r.error("rope_scaling." + k,
                     "not supported yet for rope_type '" + type +
                         "': this key may change the architecture and "
                         "Colossus does not know it");
  return Error::success();
}

Error readLlama(KeyReader &r, ModelConfig &c, bool strict) {
  c.family = ModelFamily::Llama;
  bool mistral = c.modelType == "mistral";
  auto get = [&](StringRef k, int64_t &out,
                 std::optional<int64_t> def) -> Error {
    return getSize(r, k, out, def);
  };
  if (Error e = get("vocab_size", c.vocabSize, std::nullopt))
    return e;
  if (Error e = get("hidden_size", c.hiddenSize, std::nullopt))
    return e;
  if (Error e = get("intermediate_size", c.intermediateSize, std::nullopt))
    return e;
  if (Error e = get("num_hidden_layers", c.numLayers, std::nullopt))
    return e;
  if (Error e = get("num_attention_heads", c.numHeads, std::nullopt))
    return e;
  // Hugging Face's defaults differ: LlamaConfig has num_key_value_heads =
  // num_attention_heads and 2048 positions; MistralConfig 8 kv heads (null:
  // num_attention_heads) and 4096 * 32 positions.
  int64_t kvDefault =
      mistral && !r.present("num_key_value_heads") ? 8 : c.numHeads;
  if (Error e = get("num_key_value_heads", c.numKvHeads, kvDefault))
    return e;
  if (Error e = get("max_position_embeddings", c.maxPositions,
                    mistral ? 4096 * 32 : 2048))
    return e;
  if (!strict && !r.has("head_dim")) {
    (void)r.raw("head_dim");
    c.headDim = c.numHeads > 0 ? c.hiddenSize / c.numHeads : 0;
  } else if (Error e = get("head_dim", c.headDim, std::nullopt)) {
    return e;
  }
  Expected<double> eps = r.getNumber("rms_norm_eps", 1e-6);
  if (!eps)
    return eps.takeError();
  if (!(*eps >= 0))
    return r.error("rms_norm_eps", "must be non-negative");
  c.normEps = *eps;
  Expected<double> theta = r.getNumber("rope_theta", 10000.0);
  if (!theta)
    return theta.takeError();
  if (!(*theta > 0))
    return r.error("rope_theta", "must be positive");
  c.ropeTheta = *theta;
  Expected<bool> tie = r.getBool("tie_word_embeddings", false);
  if (!tie)
    return tie.takeError();
  c.tieWordEmbeddings = *tie;

  if (!strict) {
    Expected<std::string> act = r.getString("hidden_act", std::string("silu"));
    if (!act)
      return act.takeError();
    if (*act != "silu")
      return r.error("hidden_act",
                     "'" + *act + "' is not supported yet (only silu)");
    for (StringRef k : {"attention_bias", "mlp_bias"}) {
      Expected<bool> b = r.getBool(k, false);
      if (!b)
        return b.takeError();
      if (*b)
        return r.error(k, "true is not supported yet: this family has no "
                          "biases in Colossus");
    }
  }

  // RoPE scaling.
  Expected<const json::Value *> scaling = r.getNullable("rope_scaling");
  if (!scaling)
    return scaling.takeError();
  if (*scaling) {
    const json::Object *o = (*scaling)->getAsObject();
    if (!o)
      return r.error("rope_scaling", "must be an object or null");
    if (Error e = readRopeScaling(r, *o, c))
      return e;
  }

  // Sliding window: mistral (MistralConfig's default is 4096; null is
  // none) and the project format. Hugging Face's llama has none: it ignores
  // the key, so a window there is refused rather than applied.
  if (!strict && !mistral) {
    if (r.has("sliding_window"))
      return r.error("sliding_window",
                     "not supported yet for model_type llama (Hugging "
                     "Face's llama ignores it; a sliding window is "
                     "model_type mistral)");
    (void)r.raw("sliding_window");
  } else if (!strict && !r.present("sliding_window")) {
    c.slidingWindow = 4096;
  } else {
    Expected<const json::Value *> sw = r.getNullable("sliding_window");
    if (!sw)
      return sw.takeError();
    if (*sw) {
      std::optional<int64_t> w = (*sw)->getAsInteger();
      if (!w || *w < 0)
        return r.error("sliding_window",
                       "must be a non-negative integer or null");
      c.slidingWindow = *w;
    }
  }
  if (!strict && mistral) {
    // Older Mistral configs carry this; it does not change the math.
    (void)r.raw("use_sliding_window");
    (void)r.raw("max_window_layers");
  }
  return Error::success();
}

Error readGPT2(KeyReader &r, ModelConfig &c, bool strict) {
  c.family = ModelFamily::GPT2;
  auto get = [&](StringRef k, int64_t &out,
                 std::optional<int64_t> def) -> Error {
    return getSize(r, k, out, def);
  };
  if (Error e = get("vocab_size", c.vocabSize, 50257))
    return e;
  if (Error e = get("n_embd", c.hiddenSize, 768))
    return e;
  if (Error e = get("n_layer", c.numLayers, 12))
    return e;
  if (Error e = get("n_head", c.numHeads, 12))
    return e;
  if (Error e = get("n_positions", c.maxPositions, 1024))
    return e;
  c.numKvHeads = c.numHeads;
  c.headDim = c.numHeads > 0 ? c.hiddenSize / c.numHeads : 0;
  if (!strict && !r.has("n_inner")) {
    (void)r.raw("n_inner");
    c.intermediateSize = 4 * c.hiddenSize;
  } else if (Error e = get("n_inner", c.intermediateSize, std::nullopt)) {
    return e;
  }
  Expected<double> eps = r.getNumber("layer_norm_epsilon", 1e-5);
  if (!eps)
    return eps.takeError();
  if (!(*eps >= 0))
    return r.error("layer_norm_epsilon", "must be non-negative");
  c.normEps = *eps;
  Expected<std::string> act =
      r.getString("activation_function", std::string("gelu_new"));
  if (!act)
    return act.takeError();
  if (*act == "gelu_new" || *act == "gelu_pytorch_tanh" || *act == "gelu_fast")
    c.geluTanh = true;
  else if (*act == "gelu")
    c.geluTanh = false;
  else
    return r.error("activation_function",
                   "'" + *act +
                       "' is not supported yet (gelu, gelu_new, "
                       "gelu_pytorch_tanh)");
  Expected<bool> tie = r.getBool("tie_word_embeddings", true);
  if (!tie)
    return tie.takeError();
  c.tieWordEmbeddings = *tie;
  if (!strict) {
    struct Req {
      const char *key;
      bool def;
      bool need;
    };
    for (Req q : {Req{"scale_attn_weights", true, true},
                  Req{"scale_attn_by_inverse_layer_idx", false, false},
                  Req{"add_cross_attention", false, false}}) {
      Expected<bool> b = r.getBool(q.key, q.def);
      if (!b)
        return b.takeError();
      if (*b != q.need)
        return r.error(q.key, std::string(*b ? "true" : "false") +
                                  " is not supported yet");
    }
  }
  return Error::success();
}

Error validate(StringRef file, const ModelConfig &c) {
  auto err = [&](const Twine &msg) {
    return createStringError(inconvertibleErrorCode(), file + ": " + msg);
  };
  if (c.vocabSize <= 0 || c.hiddenSize <= 0 || c.numLayers <= 0 ||
      c.numHeads <= 0 || c.intermediateSize <= 0 || c.maxPositions <= 0)
    return err("sizes (vocab, hidden, intermediate, layers, heads, "
               "positions) must be positive");
  if (c.numKvHeads <= 0 || c.numHeads % c.numKvHeads != 0)
    return err("num_attention_heads (" + Twine(c.numHeads) +
               ") must be a multiple of num_key_value_heads (" +
               Twine(c.numKvHeads) + ")");
  if (c.headDim <= 0 || c.headDim % 2 != 0)
    return err("head_dim must be positive and even, got " + Twine(c.headDim));
  if (c.family == ModelFamily::GPT2 && c.hiddenSize % c.numHeads != 0)
    return err("n_embd must be a multiple of n_head");
  return Error::success();
}

} // namespace

int64_t ModelConfig::numParameters() const {
  int64_t d = hiddenSize, v = vocabSize, f = intermediateSize;
  int64_t q = numHeads * headDim, kv = numKvHeads * headDim;
  if (family == ModelFamily::Llama) {
    int64_t layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * f;
    return v * d * (tieWordEmbeddings ? 1 : 2) + numLayers * layer + d;
  }
  int64_t layer = 4 * d + d * 3 * d + 3 * d + d * d + d + d * f + f + f * d + d;
  return v * d + maxPositions * d + numLayers * layer + 2 * d +
         (tieWordEmbeddings ? 0 : v * d);
}

Expected<ModelConfig> colossus::readModelConfig(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buf = MemoryBuffer::getFile(path);
  if (!buf)
    return createStringError(
        buf.getError(), path + ": cannot read: " + buf.getError().message());
  Expected<json::Value> parsed = json::parse((*buf)->getBuffer());
  if (!parsed)
    return createStringError(
        inconvertibleErrorCode(),
        path + ": invalid JSON: " + toString(parsed.takeError()));
  const json::Object *obj = parsed->getAsObject();
  if (!obj)
    return createStringError(inconvertibleErrorCode(),
                             path + ": the top level must be a JSON object");

  bool strict = obj->get("colossus_model_version") != nullptr;
  KeyReader r(path, *obj, strict);
  ModelConfig c;
  if (strict) {
    Expected<int64_t> ver = r.getInt("colossus_model_version", std::nullopt);
    if (!ver)
      return ver.takeError();
    if (*ver != 1)
      return r.error("colossus_model_version", "version " + Twine(*ver) +
                                                   " is not supported (this "
                                                   "compiler reads version 1)");
    Expected<std::string> name = r.getString("name", std::nullopt);
    if (!name)
      return name.takeError();
    c.name = *name;
  }
  Expected<std::string> type = r.getString("model_type", std::nullopt);
  if (!type)
    return type.takeError();
  c.modelType = *type;
  if (*type == "llama" || *type == "mistral") {
    if (Error e = readLlama(r, c, strict))
      return std::move(e);
  } else if (*type == "gpt2") {
    if (Error e = readGPT2(r, c, strict))
      return std::move(e);
  } else {
    return r.error("model_type", "'" + *type +
                                     "' is not supported yet (llama, "
                                     "mistral, gpt2)");
  }
  Expected<int64_t> bos = r.getTokenId("bos_token_id");
  if (!bos)
    return bos.takeError();
  Expected<int64_t> eos = r.getTokenId("eos_token_id");
  if (!eos)
    return eos.takeError();
  c.bosTokenId = *bos;
  c.eosTokenId = *eos;
  if (Error e = r.checkUnused(ignorableHFKeys()))
    return std::move(e);
  if (Error e = validate(path, c))
    return std::move(e);
  if (c.name.empty()) {
    // HF layout: <name>/config.json
    StringRef dir = llvm::sys::path::parent_path(path);
    StringRef base = llvm::sys::path::filename(dir);
    c.name = base.empty() ? c.modelType : base.str();
  }
  return c;
}

#pragma once
// Model weights: torch.save state dicts in and out of modules, and the "--weights"
// choice of the stages (torchvision's pretrained file, or a seeded random init).
//
// A state dict maps parameter and buffer names ("features.0.weight") to tensors, as
// torch.nn.Module.state_dict() does in Python. Files are read by pipeline/pickle.h, so
// torchvision's weights files (zip or legacy format) load the same on LibTorch 1.13 and 2.x.
// Thread safety: no shared state; a module must not be used while weights load into it.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/pickle.h"

namespace torch::nn {
class Module;
}

namespace pipeline {

class Backbone;     // pipeline/models/backbone.h
class BackboneNet;  // pipeline/models/backbone_net.h

// (name, tensor) pairs, in file order (or module order for state_dict_of): pickle.h's
// TensorDict under the name the model side uses.
using StateDict = TensorDict;

// Reads a torch.save file (zip or legacy format) holding a state dict (what torchvision
// publishes). Tensors are on the CPU with the saved dtypes. Throws pipeline::Error naming
// the file (missing, tar format, truncated/corrupt, not a dict of tensors; see pickle.h).
StateDict read_state_dict(const std::filesystem::path& file);

// Copies `state` into the module's parameters and buffers by name (recursively, names
// as in named_parameters()), converting dtype and device as needed (like Python's
// load_state_dict). strict: every missing key, unexpected key and shape mismatch is
// listed in ONE pipeline::Error naming `source` (a file or other origin), and nothing
// is copied. Not strict: copies the keys whose names and shapes match, ignores the rest.
// A missing "*.num_batches_tracked" is never an error (it keeps its value), as in
// PyTorch, whose state dicts before 0.4.1 have no such buffer.
void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& source,
                     bool strict = true);

// The module's named_parameters() then named_buffers(), detached (sharing their memory).
StateDict state_dict_of(const torch::nn::Module& module);

// Where weights come from: random = true, seed = N for "random:N"; else a file.
struct WeightsSource {
  bool random = false;
  uint64_t seed = 0;
  std::filesystem::path file;
};

// "random:SEED" (SEED a decimal uint64) or a path to a torch.save file.
// Throws pipeline::UsageError on an empty spec, "random" without a seed, or a bad seed
// ("random:abc", "random:-1").
WeightsSource parse_weights_source(const std::string& spec);

// What was loaded, for logs and for the provenance of every output.
struct WeightsInfo {
  std::string spec;         // "random:3" or the file path, as given
  std::string sha256;       // full SHA-256 of the file (64 hex digits), or "random:SEED"
  bool pretrained = false;  // true for a file
  // "alexnet-owt-7be5be79.pth (sha256 7be5be79…)" or "random init, seed 3 (NOT pretrained)".
  std::string describe() const;
};

// Loads weights into a backbone's 1000-class network (call replace_classifier after).
//  - random: init_like_torchvision with a private generator seeded with `seed` --
//    identical to Python's torch.manual_seed(seed); torchvision.models.<name>() --
//    whatever random numbers were drawn before. The global torch generator is neither
//    used nor changed.
//  - file: read_state_dict + strict load_state_dict, and the file's SHA-256.
// Throws pipeline::Error if the model has != 1000 classes or the file cannot be loaded
// (the message names the file and the backbone).
WeightsInfo load_weights(BackboneNet& model, const WeightsSource& source);

// The --weights value as the stages use it: "" means "data/<the backbone's torchvision
// file>" (where transfer-fetch puts it); a folder (existing, or written with a trailing
// '/') means that file in the folder; anything else (a file, random:SEED) is kept.
std::string resolve_weights(const std::string& spec, const Backbone& backbone);

}  // namespace pipeline

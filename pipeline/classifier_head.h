#pragma once
// The middle ground between the two approaches, at cache speed: a backbone's whole
// classifier (AlexNet's Dropout, Linear(9216,4096), ReLU, Dropout, Linear(4096,4096),
// ReLU, Linear(4096,N); VGG-16's on 25088) trained on its cached classifier tap, pool5
// (transfer-head --head classifier). Its hidden layers start from the pretrained
// weights when the cache's weights file is at hand; the last layer is always new.

#include <cstdint>
#include <string>

#include "pipeline/device.h"
#include "pipeline/models/backbone.h"
#include "pipeline/train.h"
#include "pipeline/weights.h"

namespace pipeline {

class ClassifierHead : public Trainable {
 public:
  // pretrained: the backbone's torchvision state dict, whose classifier layers
  // initialise the hidden ones, or nullptr for torch.nn's default init. The new last
  // layer and the dropout masks are drawn from the global generator seeded with `seed`.
  // compute: the CPU and its precision; bf16 runs the forward pass under autocast.
  // Throws pipeline::UsageError for a backbone without a classifier tap.
  ClassifierHead(const Backbone& backbone, int64_t classes, double lr, double weight_decay, uint64_t seed, const StateDict* pretrained,
                 const Compute& compute);
  ~ClassifierHead() override;

  int64_t members() const override { return 1; }
  void set_training(bool training) override;
  BatchScores train_step(const Batch& batch) override;  // inputs [B,pool5 width] CPU, float32 or the precision's dtype
  at::Tensor predict(const at::Tensor& inputs) override;
  void keep_best(int64_t member) override;
  void use_best() override;
  // torch::save of the classifier module (keys as in torchvision's classifier.N),
  // written atomically; throws pipeline::Error naming the file (e.g. on a full disk).
  void save(const std::string& file) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pipeline

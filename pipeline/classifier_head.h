#pragma once
// The middle ground between the two approaches, at cache speed: torchvision's whole
// AlexNet classifier (Dropout, Linear(9216,4096), ReLU, Dropout, Linear(4096,4096), ReLU,
// Linear(4096,10)) trained on cached pool5 features (transfer-head --head classifier).
// Its fc6/fc7 layers start from the pretrained weights when the cache's weights file
// is at hand; the last layer is always new.

#include <cstdint>
#include <string>

#include "pipeline/device.h"
#include "pipeline/train.h"
#include "pipeline/weights.h"

namespace pipeline {

class ClassifierHead : public Trainable {
 public:
  // pretrained: a torchvision AlexNet state dict whose classifier.1 and classifier.4
  // initialise fc6 and fc7, or nullptr for torch.nn's default init. The new last layer
  // and the dropout masks are drawn from the global generator seeded with `seed`.
  // compute: the CPU and its precision; bf16 runs the forward pass under autocast.
  ClassifierHead(int64_t classes, double lr, double weight_decay, uint64_t seed, const StateDict* pretrained,
                 const Compute& compute);
  ~ClassifierHead() override;

  int64_t members() const override { return 1; }
  void set_training(bool training) override;
  BatchScores train_step(const Batch& batch) override;  // inputs [B,9216] CPU, float32 or the precision's dtype
  at::Tensor predict(const at::Tensor& inputs) override;
  void keep_best(int64_t member) override;
  void use_best() override;
  // torch::save of the classifier module (keys 0..6 as in torchvision's classifier),
  // written atomically; throws pipeline::Error naming the file (e.g. on a full disk).
  void save(const std::string& file) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pipeline

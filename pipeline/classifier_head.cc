#include "pipeline/classifier_head.h"

#include <torch/torch.h>

#include "pipeline/alexnet.h"
#include "pipeline/torch_files.h"

namespace pipeline {

struct ClassifierHead::Impl {
  torch::nn::Sequential classifier;
  std::unique_ptr<torch::optim::Adam> optimizer;
  std::unique_ptr<ParameterSnapshot> best;
  Compute compute;

  at::Tensor forward(const at::Tensor& inputs) {
    AutocastGuard autocast(compute);
    return classifier->forward(inputs).to(torch::kFloat);
  }
};

ClassifierHead::ClassifierHead(int64_t classes, double lr, double weight_decay, uint64_t seed,
                               const StateDict* pretrained, const Compute& compute)
    : impl_(std::make_unique<Impl>()) {
  impl_->compute = compute;
  torch::manual_seed(seed);
  impl_->classifier = alexnet_classifier(classes);
  if (pretrained != nullptr) {
    // Same names as torchvision's classifier.N.*; the new last layer stays as drawn.
    StateDict hidden;
    for (const auto& [name, tensor] : *pretrained) {
      for (const char* layer : {"classifier.1.", "classifier.4."}) {
        if (name.rfind(layer, 0) == 0) hidden.emplace_back(name.substr(std::string("classifier.").size()), tensor);
      }
    }
    load_state_dict(*impl_->classifier, hidden, "pretrained fc6/fc7", /*strict=*/false);
  }
  impl_->optimizer = std::make_unique<torch::optim::Adam>(
      impl_->classifier->parameters(), torch::optim::AdamOptions(lr).weight_decay(weight_decay));
  impl_->best = std::make_unique<ParameterSnapshot>(impl_->classifier->parameters());
}

ClassifierHead::~ClassifierHead() = default;

void ClassifierHead::set_training(bool training) { impl_->classifier->train(training); }

BatchScores ClassifierHead::train_step(const Batch& batch) {
  const at::Tensor logits = impl_->forward(batch.inputs);
  const at::Tensor loss = torch::cross_entropy_loss(logits, batch.labels);
  impl_->optimizer->zero_grad();
  loss.backward();
  impl_->optimizer->step();
  return score_logits(logits.detach().unsqueeze(0), batch.labels);
}

at::Tensor ClassifierHead::predict(const at::Tensor& inputs) {
  torch::NoGradGuard no_grad;
  return impl_->forward(inputs).unsqueeze(0);
}

void ClassifierHead::keep_best(int64_t) { impl_->best->keep(); }

void ClassifierHead::use_best() { impl_->best->restore(); }

void ClassifierHead::save(const std::string& file) const { save_torch_file(impl_->classifier, file); }

}  // namespace pipeline

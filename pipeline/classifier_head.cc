#include "pipeline/classifier_head.h"

#include <torch/torch.h>

#include "pipeline/error.h"
#include "pipeline/models/backbone_net.h"
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

ClassifierHead::ClassifierHead(const Backbone& backbone, int64_t classes, double lr, double weight_decay, uint64_t seed,
                               const StateDict* pretrained, const Compute& compute)
    : impl_(std::make_unique<Impl>()) {
  impl_->compute = compute;
  if (backbone.classifier_tap().empty()) {
    usage_fail("{} has a one-layer classifier: train it with --head linear", backbone.title());
  }
  // The whole network is built (and dropped, all but its classifier) so that the
  // classifier's layers and names are the backbone's own.
  torch::manual_seed(seed);
  const std::shared_ptr<BackboneNet> net = backbone.build();
  if (pretrained != nullptr) {
    // Same names as torchvision's; the new last layer is drawn after.
    load_state_dict(*net, *pretrained, "pretrained classifier", /*strict=*/false);
  }
  net->replace_classifier(classes);
  impl_->classifier = net->classifier_from_tap();
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

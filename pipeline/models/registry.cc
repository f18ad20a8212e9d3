#include "pipeline/models/registry.h"

namespace pipeline {

// Each module defines its descriptor; a new backbone adds its line here.
const Backbone& alexnet_backbone();   // models/alexnet.cc
const Backbone& resnet18_backbone();  // models/resnet.cc
const Backbone& resnet50_backbone();  // models/resnet.cc
const Backbone& vgg16_backbone();     // models/vgg.cc

const std::vector<const Backbone*>& registered_backbones() {
  static const std::vector<const Backbone*> all = {&alexnet_backbone(), &resnet18_backbone(), &resnet50_backbone(),
                                                   &vgg16_backbone()};
  return all;
}

}  // namespace pipeline

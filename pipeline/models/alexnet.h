#pragma once
// AlexNet exactly as torchvision.models.alexnet builds it (torchvision 0.14 and later):
// same layers, same parameter names (features.0.weight ... classifier.6.bias), same
// default initialization, so torchvision's state dicts load by name (pipeline/weights.h)
// and outputs match torchvision's to float rounding. Registered as "alexnet".
//
//   features    0 Conv2d(3,64,k11,s4,p2)  1 ReLU  2 MaxPool(3,2)
//               3 Conv2d(64,192,k5,p2)    4 ReLU  5 MaxPool(3,2)
//               6 Conv2d(192,384,k3,p1)   7 ReLU
//               8 Conv2d(384,256,k3,p1)   9 ReLU
//              10 Conv2d(256,256,k3,p1)  11 ReLU 12 MaxPool(3,2)
//   avgpool     AdaptiveAvgPool2d(6x6), then flatten          -> pool5 [B,9216]
//   classifier  0 Dropout(0.5) 1 Linear(9216,4096) 2 ReLU     -> fc6   [B,4096]
//               3 Dropout(0.5) 4 Linear(4096,4096) 5 ReLU     -> fc7   [B,4096]
//               6 Linear(4096,num_classes)                    -> logits [B,num_classes]
// Inputs of at least 63x63 pixels (smaller ones pool away to nothing).

#include <cstdint>

#include "pipeline/models/backbone_net.h"

namespace pipeline {

const Backbone& alexnet_backbone();

class AlexNetImpl : public SequentialBackboneNet {
 public:
  // Default-initialized like torchvision (PyTorch's default Conv2d/Linear init, drawing
  // from the global torch generator in torchvision's order).
  explicit AlexNetImpl(int64_t num_classes = 1000);

  void init_like_torchvision(at::Generator& generator) override;
};
TORCH_MODULE(AlexNet);

}  // namespace pipeline

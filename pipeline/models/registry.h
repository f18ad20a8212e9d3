#pragma once
// The list of backbones (registry.cc): the one place a new backbone is registered.

#include <vector>

#include "pipeline/models/backbone.h"

namespace pipeline {

// Every backbone, in the order --help and `make backbones` list them.
const std::vector<const Backbone*>& registered_backbones();

}  // namespace pipeline

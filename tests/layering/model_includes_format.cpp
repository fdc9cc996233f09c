// Compiled by the layering test against model/'s include tree: must build, format/ sits below model/.
#include "format/neuron_bundles.hpp"
#include "model/weights.hpp"

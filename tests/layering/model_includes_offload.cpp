// Compiled by the layering test against model/'s include tree: must fail, offload/ sits above model/.
#include "offload/neuron_store.hpp"

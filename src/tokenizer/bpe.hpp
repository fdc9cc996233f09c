// Kept for the callers that include it: the tokenizer is tokenizer.hpp.
#pragma once
#include "tokenizer/tokenizer.hpp"

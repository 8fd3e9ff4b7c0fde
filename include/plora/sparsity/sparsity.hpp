#pragma once
// The sparsity family: winning-ticket ratio extraction (SVD, SNIP, IMP over
// one threshold search), the linear-probe warm-up, the report and the mask
// plans built on it. ratios.json lives in plora/io/ratios_json.hpp (plora::io).
#include "plora/sparsity/concepts.hpp"
#include "plora/sparsity/entry_pruner.hpp"
#include "plora/sparsity/evaluate.hpp"
#include "plora/sparsity/extract.hpp"
#include "plora/sparsity/imp.hpp"
#include "plora/sparsity/linear_probe.hpp"
#include "plora/sparsity/mask_plan.hpp"
#include "plora/sparsity/report.hpp"
#include "plora/sparsity/snip.hpp"
#include "plora/sparsity/svd.hpp"
#include "plora/sparsity/threshold_search.hpp"

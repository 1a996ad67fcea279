/* ops/attention/attention.h: every attention op of ops/attention/ (one file per
 * family, each with its fused kernel and its naive reference). */
#ifndef AT_ATTENTION_H
#define AT_ATTENTION_H

#include "ops/attention/delta.h"
#include "ops/attention/dsa.h"
#include "ops/attention/full.h"

#endif

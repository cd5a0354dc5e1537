"""Pure measures: arrays in, numbers or frozen estimates out. No files, no printing, no reports."""

from tfbound.measures.binomial import (
    binomial_cdf,
    clopper_pearson_lower,
    clopper_pearson_upper,
    kl_bernoulli,
    kl_inv,
    xi,
)
from tfbound.measures.margin import ramp_loss
from tfbound.measures.rirc import RircEstimate, rirc_linear

__all__ = [
    "RircEstimate",
    "binomial_cdf",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "kl_bernoulli",
    "kl_inv",
    "ramp_loss",
    "rirc_linear",
    "xi",
]

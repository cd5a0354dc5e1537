"""Transfer (bound-spec 6.2): a family of frozen representations, each member's pretext and
downstream excess risks, and the (C, beta) fit ``E_T <= C * E_U^beta`` over the family.

- :func:`fit_transfer`: the fit alone, on arrays (central errors-in-variables fit, bootstrap
  intervals, envelope ``C(beta)``, identifiability, noise-floor bookkeeping).
- :func:`run_transfer`: the whole estimate from a transfer config (``tfbound transfer``).
- :func:`load_transfer_config`: read a transfer config (a ``transfer:`` section or file).
"""

from tfbound.measures.transfer_fit import TransferFit, deming_slope, envelope_c, fit_transfer
from tfbound.transfer.config import TransferConfig, load_transfer_config
from tfbound.transfer.report import TransferReport
from tfbound.transfer.run import run_transfer

__all__ = [
    "TransferConfig",
    "TransferFit",
    "TransferReport",
    "deming_slope",
    "envelope_c",
    "fit_transfer",
    "load_transfer_config",
    "run_transfer",
]

"""The training side: pre-training loops (``loops``), the RadReg regularizer (``radreg``), the
sample recipes and their bundled data (``recipes``) and the ``tfbound pretrain`` folder writer
(``folder``). Nothing in the bound computation imports this package."""

from tfbound.training.folder import pretrain_folder, write_pipeline_folder
from tfbound.training.loops import (
    MLPArch,
    PretrainResult,
    RadRegOptions,
    ViTArch,
    features,
    fit_linear_head,
    pretrain_ce,
    pretrain_mae,
)
from tfbound.training.radreg import AdversarialRadReg, RadReg

__all__ = [
    "AdversarialRadReg",
    "MLPArch",
    "PretrainResult",
    "RadReg",
    "RadRegOptions",
    "ViTArch",
    "features",
    "fit_linear_head",
    "pretrain_ce",
    "pretrain_folder",
    "pretrain_mae",
    "write_pipeline_folder",
]

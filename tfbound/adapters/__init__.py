"""Layer-handler registry: which weight matrices a checkpoint or module holds, and their norms.

- ``registry``: plan from names and shapes (bare state dict) or from an ``nn.Module``
  (``describe_modules``, ``batchnorm_inputs``); ``MODULE_HANDLERS`` keyed by module type.
- ``handlers``: ``LAYER_HANDLERS`` keyed by layer kind (linear, conv, embedding, layernorm,
  batchnorm) and ``compute_attention`` for per-head products.
- ``attention``: the per-head products ``QK_h`` and ``VO_h`` themselves.
"""

from tfbound.adapters.attention import head_factors, head_slices, qk_products, vo_products
from tfbound.adapters.base import (
    BATCHNORM,
    CONV,
    EMBEDDING,
    LAYERNORM,
    LINEAR,
    MHA,
    AttentionPlan,
    ConvOptions,
    HeadRow,
    LayerPlan,
    LayerRow,
    ModuleInfo,
    ParamRows,
    Plan,
    Skipped,
    TensorInfo,
    WorkUnit,
    dtype_name,
)
from tfbound.adapters.handlers import (
    LAYER_HANDLERS,
    ComputeOptions,
    compute_attention,
    compute_layer,
    register_layer_handler,
)
from tfbound.adapters.registry import (
    MODULE_HANDLERS,
    batchnorm_inputs,
    describe_modules,
    plan_tensors,
    register_module_handler,
)

__all__ = [
    "BATCHNORM",
    "CONV",
    "EMBEDDING",
    "LAYERNORM",
    "LAYER_HANDLERS",
    "LINEAR",
    "MHA",
    "MODULE_HANDLERS",
    "AttentionPlan",
    "ComputeOptions",
    "ConvOptions",
    "HeadRow",
    "LayerPlan",
    "LayerRow",
    "ModuleInfo",
    "ParamRows",
    "Plan",
    "Skipped",
    "TensorInfo",
    "WorkUnit",
    "batchnorm_inputs",
    "compute_attention",
    "compute_layer",
    "describe_modules",
    "dtype_name",
    "head_factors",
    "head_slices",
    "plan_tensors",
    "qk_products",
    "register_layer_handler",
    "register_module_handler",
    "vo_products",
]

"""Architectures rebuilt from a spec: MLP and MAE-style ViT encoders, heads, decoders."""

from tfbound.models.heads import LinearHead, MLPHead
from tfbound.models.mlp import MLP, MLPEncoder, activation_module
from tfbound.models.vit import ViTEncoder

__all__ = ["MLP", "LinearHead", "MLPEncoder", "MLPHead", "ViTEncoder", "activation_module"]

"""A Vision Transformer encoder in the Masked Autoencoder style (timm parameter names).

Patch embedding (``patch_embed.proj``, a stride-``p`` convolution), learned positional embedding,
pre-norm blocks (``blocks.<i>.norm1``, fused ``blocks.<i>.attn.qkv``, ``blocks.<i>.attn.proj``,
``blocks.<i>.norm2``, ``blocks.<i>.mlp.fc1``/``fc2``), a final ``norm``, and mean or CLS pooling.
``forward_visible`` runs the encoder on a subset of patches only, as MAE pre-training does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTEncoder(nn.Module):
    """ViT encoder: ``forward`` maps ``(n, C, H, W)`` images (or flat rows) to ``(n, dim)``."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_chans: int = 1,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', not {pool!r}")
        self.image_size, self.patch_size, self.in_chans = image_size, patch_size, in_chans
        self.num_patches = (image_size // patch_size) ** 2
        self.pool = pool
        self.feature_dim = dim
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        n_tokens = self.num_patches + (1 if pool == "cls" else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _as_images(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        return x.reshape(x.shape[0], self.in_chans, s, s)

    def _encode(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = tokens + pos
        if self.pool == "cls":
            cls = self.cls_token + self.pos_embed[:, :1]
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)

    def _patch_pos(self) -> torch.Tensor:
        return self.pos_embed[:, 1:] if self.pool == "cls" else self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(self.patch_embed(self._as_images(x)), self._patch_pos())

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches whose indices are in ``keep`` (``(n, n_keep)``, long)."""
        tokens = self.patch_embed(self._as_images(x))
        pos = self._patch_pos().expand(x.shape[0], -1, -1)
        idx = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        return self._encode(tokens.gather(1, idx), pos.gather(1, idx))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, C, H, W)`` -> ``(n, num_patches, p*p*C)`` in the patch order of ``patch_embed``."""
        imgs = self._as_images(x)
        n, c, s, p = imgs.shape[0], self.in_chans, self.image_size, self.patch_size
        g = s // p
        return imgs.reshape(n, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, p * p * c)

"""Reading checkpoints and data files: safetensors, weights-only PyTorch files, npz/npy."""

from tfbound.io.checkpoints import load_module_weights, load_tensors
from tfbound.io.datasets import LabeledArrays, load_inputs, load_labeled

__all__ = ["LabeledArrays", "load_inputs", "load_labeled", "load_module_weights", "load_tensors"]

"""Reading checkpoints and data files (safetensors, weights-only PyTorch files, npz/npy) and
writing outputs atomically. Import the submodules (``tfbound.io.checkpoints``, ``.datasets``,
``.atomic``, ...): this package imports nothing, so writing a file never loads torch."""

"""The tolerance table of the tests: a floating-point comparison names its tolerance here.

Results are reproducible across machines to these tolerances, not bit for bit: float32 kernels
(matmul, attention, convolution) round differently on different CPUs (SIMD width, FMA, blocking,
threads). Bit-for-bit equality (``torch.equal``, ``==``) is for results computed twice on one
machine (a seeded rerun, a value passed through unchanged), never against a file made elsewhere.
"""

# float64, one quantity two ways (closed form, reordered sum, identity): a few ulps (2.2e-16) times
# at most a few thousand terms.
FLOAT64_EXACT = 1e-12
# float64 through a solver or a decomposition (eigvalsh vs svdvals, root finding, a least-squares
# solve, a brute-force reference), whose rounding depends on the conditioning.
FLOAT64_SOLVER = 1e-9
# a root where the function is flat (kl(p, q) at p = q): a rounding of f by eps moves the root by
# about sqrt(eps) = 1.5e-8.
FLOAT64_FLAT_ROOT = 1e-8
# torch.autograd.gradcheck in float64 with step 1e-6: central differences err by ~1e-12 + 1e-10.
GRADCHECK_ATOL = 1e-8
# an iteration stopped short of its limit (power iteration, gradient ascent, a limit parameter of
# 1e12), or a float32 quantity recomputed in float64.
ITERATIVE = 1e-6
# float32 model outputs (MiniLM features, unit norm) against an independent float32/float64
# computation, or against reference values printed by another library on another machine.
FLOAT32_KERNEL = 5e-5
# a float32 head refitted on this machine against the shipped one (made on another CPU): features
# differ in the last float32 bits, and the fit passes them on (7e-7 seen on AVX-512).
FLOAT32_REFIT = 1e-5
# an absolute floor for probabilities that underflow: only exact zeros pass on it.
FLOAT64_UNDERFLOW = 1e-300

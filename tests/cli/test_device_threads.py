"""``estimate --device/--dtype`` (the encoder pass only) and ``--threads`` (torch and BLAS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from tests.helpers import REPO_ROOT, run_cli
from tests.tolerances import FLOAT64_EXACT
from tfbound.errors import DeviceError, UsageError
from tfbound.features import encode, placement, resolve_device
from tfbound.models import ViTEncoder

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_usage_error(tiny: Path) -> None:
    code, out, err = run_cli("estimate", str(tiny), "-f", "json", "-q", "--device", "cuda")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "no CUDA device" in err
    with pytest.raises(DeviceError):
        resolve_device("cuda")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_auto_picks_the_cpu_and_changes_nothing(tiny: Path) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert placement(torch.nn.Linear(2, 2), "auto", None) is None  # the plain pass, no copy
    _, plain, _ = run_cli("estimate", str(tiny), "-f", "json", "-q")
    code, auto, _ = run_cli("estimate", str(tiny), "-f", "json", "-q", "--device", "auto")
    assert code == 0 and json.loads(auto) == json.loads(plain)


@pytest.mark.parametrize(("option", "value"), [("--device", "tpu"), ("--dtype", "int8")])
def test_unknown_device_or_dtype_is_refused(tiny: Path, option: str, value: str) -> None:
    code, _, err = run_cli("estimate", str(tiny), "-q", option, value)
    assert code == 2 and value in err
    with pytest.raises(UsageError):
        placement(torch.nn.Linear(2, 2), "cpu" if option == "--dtype" else value, value)


def _vit() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(image_size=8, patch_size=4, in_chans=1, dim=16, depth=2, heads=2).eval()


def test_float64_pass_is_the_float64_encoder_and_leaves_the_module_alone() -> None:
    encoder = _vit()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x = np.random.default_rng(0).random((37, 64), dtype=np.float32)
    z = encode(encoder, x, 8, dtype="float64")
    assert z.dtype == np.float64
    # independent: a float64 copy of the encoder on float64 inputs, in one batch
    reference = _vit().double()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).double()).numpy()
    assert np.allclose(z, expected, rtol=FLOAT64_EXACT, atol=FLOAT64_EXACT)
    after = encoder.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in after
    )
    plain = encode(encoder, x, 8)
    assert np.array_equal(encode(encoder, x, 8, device="cpu", dtype="float32"), plain)
    low = encode(encoder, x, 8, dtype="bfloat16")
    assert low.dtype == np.float64 and np.max(np.abs(low - plain)) < 0.1 * np.max(np.abs(plain))


def test_float64_estimate_moves_the_numbers_by_float32_round_off_only() -> None:
    sample = REPO_ROOT / "sample_models" / "ce_mlp"
    _, plain, _ = run_cli("estimate", str(sample), "-f", "json", "-q")
    code, wide, _ = run_cli("estimate", str(sample), "-f", "json", "-q", "--dtype", "float64")
    assert code == 0
    a, b = json.loads(plain), json.loads(wide)
    for key, term in a["bounds"].items():
        assert b["bounds"][key]["value"] == pytest.approx(term["value"], rel=1e-4)


def test_threads_sets_torch_and_blas_for_estimate_inspect_and_transfer(tiny: Path) -> None:
    threads = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools after the test
        try:
            code, _, _ = run_cli("estimate", str(tiny), "-f", "json", "-q", "--threads", "1")
            assert code == 0 and torch.get_num_threads() == 1
            assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
            torch.set_num_threads(threads)
            code, _, _ = run_cli("inspect", str(tiny), "-f", "json", "-q", "--threads", "1")
            assert code == 0 and torch.get_num_threads() == 1
            code, _, err = run_cli("estimate", str(tiny), "-q", "--threads", "0")
            assert code == 2
        finally:
            torch.set_num_threads(threads)
    code, out, _ = run_cli("transfer", "--help")
    assert code == 0 and "--threads" in out

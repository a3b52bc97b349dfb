"""torch.export with a dynamic batch, as timm's own models export, and the exported program run by AOTInductor.

Every registered name (`our_models()`: the FCT family, the generic `fct_bn` / `fct_ln` on their default backbone
and the CIFAR ResNets) is exported at batch 2 with the batch dimension dynamic, and the exported program must
compute what the eager model computes at batch 1, 5 and 64. A model may decide on the spatial size (the K/V
stride, how P(g) is added, area resampling), never on the batch size: such a decision makes torch.export fail on
a guard, or bakes batch 2 into the graph.
"""
from pathlib import Path

import pytest
import timm
import torch
from torch.export import Dim, export

from tests.support.helpers import SMALL_MODEL, our_models

EXPORT_BATCH = 2
CHECK_BATCHES = (1, 5, 64)
MAX_SIZE = 64  # the 224-px models at 64 px: taps of 16x16 to 2x2, cheap at batch 64
TOL = dict(rtol=1e-4, atol=1e-4)


def model_and_size(name: str):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    return model, min(model.pretrained_cfg['input_size'][-1], MAX_SIZE)


def export_dynamic_batch(model: torch.nn.Module, size: int) -> torch.export.ExportedProgram:
    x = torch.randn(EXPORT_BATCH, 3, size, size)
    return export(model, (x,), dynamic_shapes={'x': {0: Dim('batch', min=1, max=256)}})


def assert_matches_eager(run, model: torch.nn.Module, size: int) -> None:
    for batch in CHECK_BATCHES:
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(run(x), model(x), **TOL, msg=lambda m: f'batch {batch}: {m}')


@pytest.mark.parametrize('name', our_models())
def test_exports_with_a_dynamic_batch_and_matches_eager_at_other_batch_sizes(name):
    model, size = model_and_size(name)
    assert_matches_eager(export_dynamic_batch(model, size).module(), model, size)


@pytest.mark.slow  # compiles and links C++: minutes on a 2-core CPU
def test_aotinductor_package_of_the_exported_program_runs_any_batch(tmp_path: Path):
    """AOTInductor compiles the exported program ahead of time into a package that runs without the model's
    Python code; one package serves every batch size."""
    model, size = model_and_size(SMALL_MODEL)
    package = torch._inductor.aoti_compile_and_package(export_dynamic_batch(model, size),
                                                       package_path=str(tmp_path / 'model.pt2'))
    assert_matches_eager(torch._inductor.aoti_load_package(package), model, size)

"""hubconf.py: every model we register is a torch.hub entry point, and each builds its own model."""
import runpy

import timm
import torch

from tests.support.helpers import REPO, our_models


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_each_registered_name_is_an_entry_point_building_that_model():
    """torch.hub's local load of each name gives the network timm.create_model gives for it (every tensor's name
    and shape), on the meta device so no weights are made."""
    names = our_models()
    entry_points = {k for k, v in runpy.run_path(str(REPO / 'hubconf.py')).items() if callable(v) and k[0] != '_'}
    assert entry_points == set(names)
    for name in names:
        model = torch.hub.load(str(REPO), name, source='local', trust_repo=True, pretrained=False, device='meta')
        assert model.pretrained_cfg['architecture'] == name
        assert shapes(model) == shapes(timm.create_model(name, device='meta')), name

"""The in-memory pipeline against the PIL one: same pixels, same augmentation distributions, exact replays."""
import pytest
import torch
from torchvision import transforms

from timm_fct.data.datasets import DIGITS_MEAN, DIGITS_STD, DigitsDataset
from timm_fct.data.tensor_loader import TensorLoader, pad_crop_flip, preload
from timm_fct.data.transforms import eval_geometry, eval_transform, train_geometry

SIZE = 16
DRAWS = 20000


def coordinates(n: int, size: int = SIZE) -> torch.Tensor:
    """n copies of an image whose pixel (r, c) is 1 + r * size + c: any crop or flip can be read back."""
    grid = 1 + torch.arange(size * size, dtype=torch.int64).view(size, size)
    return grid.to(torch.uint8).expand(n, 1, size, size).clone()


def test_identity_transform_gives_the_pil_paths_exact_tensors():
    """No crop, no flip: the in-memory batches equal ToTensor + Normalize of the same PIL images, bit for bit."""
    ds = DigitsDataset('validation')
    images, targets = preload(ds, train_geometry(SIZE))
    loader = TensorLoader(images, targets, batch_size=100, mean=DIGITS_MEAN, std=DIGITS_STD, device='cpu')
    batch, labels = next(iter(loader))
    pil = transforms.Compose(
        [train_geometry(SIZE), transforms.ToTensor(), transforms.Normalize(DIGITS_MEAN, DIGITS_STD)])
    expected = torch.stack([pil(ds[i][0]) for i in range(100)])
    torch.testing.assert_close(batch, expected, rtol=0, atol=0)
    assert labels.tolist() == ds.targets[:100]


def test_eval_geometry_gives_the_eval_transforms_exact_tensors():
    ds = DigitsDataset('validation')
    images, targets = preload(ds, eval_geometry(SIZE, 0.875, 'bicubic'))
    loader = TensorLoader(images, targets, batch_size=50, mean=DIGITS_MEAN, std=DIGITS_STD, device='cpu')
    full = eval_transform(SIZE, DIGITS_MEAN, DIGITS_STD, 0.875, 'bicubic')
    torch.testing.assert_close(next(iter(loader))[0], torch.stack([full(ds[i][0]) for i in range(50)]), rtol=0, atol=0)


def test_crop_offsets_are_uniform_over_the_padding_range():
    pad = 3
    out = pad_crop_flip(coordinates(DRAWS), pad, 0., 0., torch.Generator().manual_seed(0))
    # the source pixel at output (pad, pad) gives the offset: top-left of the crop in padded coordinates
    source = out[:, 0, pad, pad].long() - 1
    top, left = source // SIZE, source % SIZE
    counts = torch.bincount(top * (2 * pad + 1) + left, minlength=(2 * pad + 1) ** 2).float()
    expected = DRAWS / (2 * pad + 1) ** 2
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 80.0  # 48 degrees of freedom: p < 0.004 if uniform
    assert (top.min(), top.max(), left.min(), left.max()) == (0, 2 * pad, 0, 2 * pad)


def test_padding_is_black_as_in_pil_random_crop():
    out = pad_crop_flip(coordinates(DRAWS), 2, 0., 0., torch.Generator().manual_seed(0))
    shifted = out[:, 0, 0, 0] == 0
    assert 0.3 < shifted.float().mean() < 0.9  # offsets 0-1 of 5 in either axis leave a black corner
    assert set(out.unique().tolist()) <= set(range(0, SIZE * SIZE + 1))


@pytest.mark.parametrize('prob', [0.0, 0.2, 0.5, 1.0])
def test_flip_rates_equal_their_probabilities(prob):
    images = coordinates(DRAWS)
    hflipped = pad_crop_flip(images, 0, prob, 0., torch.Generator().manual_seed(1))
    vflipped = pad_crop_flip(images, 0, 0., prob, torch.Generator().manual_seed(2))
    h = (hflipped == images.flip(3)).all(dim=(1, 2, 3)).float().mean().item()
    v = (vflipped == images.flip(2)).all(dim=(1, 2, 3)).float().mean().item()
    sigma = (prob * (1 - prob) / DRAWS) ** 0.5
    assert h == pytest.approx(prob, abs=4 * sigma + 1e-9)
    assert v == pytest.approx(prob, abs=4 * sigma + 1e-9)
    unflipped = (hflipped == images).all(dim=(1, 2, 3)).float().mean().item()
    assert h + unflipped == pytest.approx(1.0)


def loader_for(images, targets, **kwargs):
    return TensorLoader(images, targets, batch_size=32, mean=(0.5,), std=(0.5,), device='cpu', **kwargs)


def epoch(loader, seed, e):
    loader.set_epoch(seed, e)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_training_shards_partition_a_global_batch_and_evaluation_covers_every_image_once():
    images, targets = coordinates(130), torch.arange(130)
    one = epoch(loader_for(images, targets, train=True), 7, 0)
    ranks = [epoch(TensorLoader(images, targets, 16, (0.5,), (0.5,), 'cpu', train=True, rank=r, world_size=2), 7, 0)
             for r in (0, 1)]
    for b, (_, y) in enumerate(one[:2]):
        assert sorted(y.tolist()) == sorted(ranks[0][b][1].tolist() + ranks[1][b][1].tolist())
    evaluated = [y for r in (0, 1) for _, y in epoch(TensorLoader(images, targets, 16, (0.5,), (0.5,), 'cpu',
                                                                  rank=r, world_size=2), 0, 0)]
    assert sorted(torch.cat(evaluated).tolist()) == list(range(130))


@pytest.mark.parametrize('hflip,vflip', [(0.2, 0.0), (0.0, 0.7)])
def test_pil_path_flip_rates_equal_their_probabilities(hflip, vflip):
    """The PIL pipeline's flips honour their probabilities as well (any value once meant 0.5)."""
    from PIL import Image
    from timm_fct.data.transforms import pad_crop_flip_transform
    draws = 3000
    image = Image.fromarray(coordinates(1)[0, 0].numpy(), mode='L')
    transform = pad_crop_flip_transform(SIZE, (0.,), (1.,), padding=0, hflip=hflip, vflip=vflip)
    plain = transforms.ToTensor()(image)
    torch.manual_seed(0)
    outs = torch.stack([transform(image) for _ in range(draws)])
    for prob, dim in ((hflip, 2), (vflip, 1)):
        rate = (outs == plain.flip(dim)).all(dim=(1, 2, 3)).float().mean().item()
        assert rate == pytest.approx(prob, abs=4 * (prob * (1 - prob) / draws) ** 0.5 + 1e-9)


def pretrained_row_args(pipeline: str):
    """The pre-trained Table 1 row's flags on the digits (8 px upsampled 4x, as CIFAR's 32 px are to 128),
    resolved as train.py resolves them: the interpolation comes from resnet50_fct_bn's pretrained_cfg."""
    import timm
    from timm_fct.data.datasets import DIGITS
    from timm_fct.train.args import parse_args, resolve_args, resolve_preprocessing

    args = parse_args(['-c', 'cifar10_resnet50_fct_bn_pretrained', '--dataset', DIGITS,
                       '--val-split', 'validation', '--img-size', '32', '--pad-crop', '4', '--pipeline', pipeline,
                       '--device', 'cpu'])
    args.rank, args.world_size, args.distributed = 0, 1, False
    resolve_args(args)
    resolve_preprocessing(args, timm.create_model(args.model, pretrained=False, num_classes=10))
    return args


@pytest.mark.parametrize('pipeline', ['memory', 'pil'])
def test_training_images_are_resized_with_the_runs_interpolation_as_evaluation_images_are(pipeline):
    """The pre-trained row resolves bicubic (timm's resnet50.a1_in1k); training images must be upsampled with it,
    as the evaluation images are, not with Resize's bilinear default."""
    from timm_fct.data.loaders import build_loaders
    from timm_fct.train.build import loader_config

    args = pretrained_row_args(pipeline)
    assert args.interpolation == 'bicubic' and args.img_size == 32
    train_ds, eval_ds = DigitsDataset('train'), DigitsDataset('validation')
    train_loader, eval_loader = build_loaders(loader_config(args), train_ds, eval_ds)
    bicubic = transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC)
    eval_resize = eval_ds.transform.transforms[0] if pipeline == 'pil' else None
    if pipeline == 'memory':
        expected = torch.stack([transforms.PILToTensor()(bicubic(train_ds[i][0])) for i in range(len(train_ds))])
        torch.testing.assert_close(train_loader.images, expected, rtol=0, atol=0)
        # and the evaluation images went through the same resize
        expected_eval = torch.stack([transforms.PILToTensor()(bicubic(eval_ds[i][0])) for i in range(len(eval_ds))])
        torch.testing.assert_close(eval_loader.images, expected_eval, rtol=0, atol=0)
        return
    reference = transforms.Compose([
        bicubic, transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(0.5),
        transforms.RandomVerticalFlip(0.5), transforms.ToTensor(), transforms.Normalize(args.mean, args.std)])
    torch.manual_seed(0)
    actual = torch.stack([train_ds[i][0] for i in range(50)])
    torch.manual_seed(0)
    train_ds.transform, saved = reference, train_ds.transform
    expected = torch.stack([train_ds[i][0] for i in range(50)])
    train_ds.transform = saved
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert isinstance(eval_resize, transforms.Resize)
    assert eval_resize.interpolation == transforms.InterpolationMode.BICUBIC

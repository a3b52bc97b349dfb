"""Both training pipelines, whole batches at a time: the augmented images against torchvision's functional ops
applied image by image with the same random draws, the per-epoch seeding (replay, resume, change between
epochs), and the sharding of odd image counts across ranks, built in-process from build_loaders' arguments."""
from typing import List, Tuple

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from timm_fct.data.loaders import Loader, LoaderConfig, build_loaders, set_epoch_seed

SIZE = 8
PAD = 2
MEAN = (0.2, 0.5, 0.7)  # distinct per channel and from STD: a channel mix-up or a mean/std swap shows
STD = (0.3, 0.2, 0.1)
SEED = 5
Batches = List[Tuple[torch.Tensor, torch.Tensor]]


class IndexedImages(Dataset):
    """n random RGB images of SIZE px (the pipelines' geometry leaves them as they are) whose target is their
    index, so a batch's targets say which images it holds; random pixels, so a misplaced one shows.
    With one_image, n copies of one image: a batch then shows the augmentation alone, not the order."""

    def __init__(self, n: int, one_image: bool = False):
        generator = torch.Generator().manual_seed(n)
        pixels = torch.randint(0, 256, (1 if one_image else n, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)
        self.pixels = pixels.expand(n, -1, -1, -1).contiguous().numpy()
        self.targets = list(range(n))
        self.transform = None

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index], mode='RGB')

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        img = self.image(index)
        return (img if self.transform is None else self.transform(img)), self.targets[index]


def loader_args(pipeline: str, rank: int = 0, world_size: int = 1, batch_size: int = 16) -> LoaderConfig:
    """What build_loaders reads."""
    return LoaderConfig(
        pipeline=pipeline, img_size=SIZE, mean=MEAN, std=STD, crop_pct=1.0, interpolation='bilinear',
        pad_crop=PAD, hflip=0.5, vflip=0.5, batch_size=batch_size, device=torch.device('cpu'), seed=SEED,
        rank=rank, world_size=world_size, workers=0, pin_memory=False)


def loaders(args: LoaderConfig, n_train: int = 40, n_eval: int = 5) -> Tuple[Loader, Loader]:
    return build_loaders(args, IndexedImages(n_train), IndexedImages(n_eval))


def run_epoch(args: LoaderConfig, loader: Loader, epoch: int) -> Batches:
    set_epoch_seed(loader, epoch, args.seed, args.rank)
    return [(x.clone(), y.clone()) for x, y in loader]


def augmented(image: Image.Image, top: int, left: int, hflip: bool, vflip: bool) -> torch.Tensor:
    """torchvision on one image: pad PAD black pixels, crop at (top, left) of the padded image, flips, then
    ToTensor and Normalize."""
    out = TF.crop(TF.pad(image, PAD, fill=0), top, left, SIZE, SIZE)
    out = TF.hflip(out) if hflip else out
    out = TF.vflip(out) if vflip else out
    return TF.normalize(TF.to_tensor(out), MEAN, STD)


def assert_draws_vary(tops: List[int], lefts: List[int], hflips: List[bool], vflips: List[bool]) -> None:
    """The replayed draws reach every offset and both sides of each flip, so each geometry step is exercised."""
    assert set(tops) == set(lefts) == set(range(2 * PAD + 1))
    assert set(hflips) == set(vflips) == {False, True}


def test_memory_training_batches_equal_torchvision_image_by_image():
    """Every pixel of every augmented batch of the in-memory pipeline, against torchvision on each image.

    The draws are replayed from a copy of the loader's generator taken right after set_epoch_seed, in the
    order pad_crop_flip documents and this test mirrors: per batch, torch.randint for every image's top,
    then for every left, then torch.rand for every horizontal flip, then for every vertical flip."""
    ds = IndexedImages(40)
    args = loader_args('memory')
    train, _ = build_loaders(args, ds, IndexedImages(5))
    set_epoch_seed(train, 3, args.seed, args.rank)
    replay = torch.Generator()
    replay.set_state(train.generator.get_state())
    batches = [(x, y) for x, y in train]
    draws = ([], [], [], [])
    for images, targets in batches:
        n = len(targets)
        top = torch.randint(0, 2 * PAD + 1, (n,), generator=replay).tolist()
        left = torch.randint(0, 2 * PAD + 1, (n,), generator=replay).tolist()
        hflip = (torch.rand(n, generator=replay) < args.hflip).tolist()
        vflip = (torch.rand(n, generator=replay) < args.vflip).tolist()
        expected = [augmented(ds.image(i), *d) for i, *d in zip(targets.tolist(), top, left, hflip, vflip)]
        torch.testing.assert_close(images, torch.stack(expected), rtol=0, atol=0)
        for drawn, new in zip(draws, (top, left, hflip, vflip)):
            drawn.extend(new)
    assert len(batches) == 2  # 40 // 16: the incomplete last batch is dropped in training
    assert_draws_vary(*draws)


def test_pil_training_batches_equal_torchvision_image_by_image():
    """Every pixel of every augmented batch of the PIL pipeline (num_workers=0), against torchvision's
    functional ops on each image.

    The draws are replayed from a copy of the global RNG state taken right after set_epoch_seed. Mirrored
    here: iterating a DataLoader first draws one int64 from it (the workers' base seed, torch's detail);
    then, image by image in the sampler's order, RandomCrop draws torch.randint for top then for left and
    each flip one torch.rand."""
    ds = IndexedImages(40)
    args = loader_args('pil')
    train, _ = build_loaders(args, ds, IndexedImages(5))
    set_epoch_seed(train, 3, args.seed, args.rank)
    replay = torch.Generator()
    replay.set_state(torch.get_rng_state())
    batches = [(x, y) for x, y in train]
    torch.empty((), dtype=torch.int64).random_(generator=replay)
    draws = ([], [], [], [])
    for images, targets in batches:
        expected = []
        for i in targets.tolist():
            top, left = (torch.randint(0, 2 * PAD + 1, (1,), generator=replay).item() for _ in range(2))
            hflip, vflip = (torch.rand(1, generator=replay).item() < p for p in (args.hflip, args.vflip))
            expected.append(augmented(ds.image(i), top, left, hflip, vflip))
            for drawn, new in zip(draws, (top, left, hflip, vflip)):
                drawn.append(new)
        torch.testing.assert_close(images, torch.stack(expected), rtol=0, atol=0)
    assert len(batches) == 2  # 40 // 16: the incomplete last batch is dropped in training
    assert_draws_vary(*draws)


@pytest.mark.parametrize('pipeline', ['memory', 'pil'])
def test_an_epoch_replays_exactly_also_after_a_resume_and_the_next_one_differs(pipeline):
    """Setting an epoch again gives its batches bit for bit (order, targets and augmented pixels), as does a
    fresh loader set to that epoch in a process whose RNGs went elsewhere (a resumed run); the next epoch
    draws another augmentation, not only another order: over copies of one image its batches differ."""
    args = loader_args(pipeline)
    loader, _ = loaders(args)
    epochs = [run_epoch(args, loader, e) for e in range(3)]
    torch.manual_seed(1234)  # a resumed process: the global RNG has been used for other things
    torch.rand(17)
    resumed, _ = loaders(args)
    assert_same_batches(run_epoch(args, loader, 1), epochs[1])
    assert_same_batches(run_epoch(args, resumed, 2), epochs[2])
    copies, _ = build_loaders(args, IndexedImages(40, one_image=True), IndexedImages(5))
    one, two = (torch.cat([x for x, _ in run_epoch(args, copies, e)]) for e in (1, 2))
    changed = (one != two).flatten(1).any(dim=1).float().mean().item()
    assert changed >= 0.9  # the same augmentation twice: 1 chance in 100 per image


def assert_same_batches(actual: Batches, expected: Batches) -> None:
    assert len(actual) == len(expected) > 0
    for (x, y), (ex, ey) in zip(actual, expected):
        assert torch.equal(y, ey)
        torch.testing.assert_close(x, ex, rtol=0, atol=0)


ODD_SHARDS = [(37, 2, 8), (37, 3, 16), (41, 3, 64)]  # (images, ranks, batch size)


@pytest.mark.parametrize('pipeline', ['memory', 'pil'])
@pytest.mark.parametrize('n,world_size,batch_size', ODD_SHARDS)
def test_training_shards_are_disjoint_and_equal_and_drop_a_remainder_that_changes(
        pipeline, n, world_size, batch_size):
    """Every rank trains on n // world_size images of the epoch's shuffled order, no image on two ranks, and
    runs as many batches as the others (DDP waits on each). The n % world_size images left over sit the
    epoch out (DistributedSampler's drop_last), different ones each epoch; a rank's incomplete last batch is
    dropped too, unless it is the only one (a shard no larger than a batch trains as one batch)."""
    shard = n // world_size
    per_rank = shard if shard <= batch_size else shard // batch_size * batch_size
    left_out = []
    for e in (0, 1):
        seen = []
        for rank in range(world_size):
            args = loader_args(pipeline, rank, world_size, batch_size)
            loader, _ = loaders(args, n_train=n)
            batches = run_epoch(args, loader, e)
            assert len(batches) == len(loader) == max(1, shard // batch_size)
            seen.append(torch.cat([y for _, y in batches]).tolist())
        assert [len(s) for s in seen] == [per_rank] * world_size
        every = [i for s in seen for i in s]
        assert len(set(every)) == len(every) == per_rank * world_size  # disjoint across ranks, none twice
        left_out.append(set(range(n)) - set(every))
    assert left_out[0] != left_out[1]


@pytest.mark.parametrize('pipeline', ['memory', 'pil'])
@pytest.mark.parametrize('n,world_size,batch_size', ODD_SHARDS)
def test_evaluation_shards_cover_every_image_exactly_once(pipeline, n, world_size, batch_size):
    """Across the ranks, evaluation sees each image once, unaugmented and with its own target: the metrics
    summed over ranks are the single-process ones."""
    seen = []
    for rank in range(world_size):
        args = loader_args(pipeline, rank, world_size, batch_size)
        eval_ds = IndexedImages(n)
        _, loader = build_loaders(args, IndexedImages(5), eval_ds)
        for images, targets in loader:
            expected = [TF.normalize(TF.to_tensor(eval_ds.image(i)), MEAN, STD) for i in targets.tolist()]
            torch.testing.assert_close(images, torch.stack(expected), rtol=0, atol=0)
            seen.extend(targets.tolist())
    assert sorted(seen) == list(range(n))

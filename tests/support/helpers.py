"""Helpers the tests share: one name per model, running training and offline Hub loads, comparing tensors."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import timm
import torch
from safetensors.torch import save_file

import timm_fct  # noqa: F401  registers the models
from benchmarks import soak

REPO = Path(__file__).parents[2]
TRAIN = (sys.executable, '-m', 'timm_fct.train')  # training as a user starts it
SMALL_MODEL = 'resnet18_fct_bn_cifar'  # the model of the machinery tests and of train.py's main job
BEST_CHECKPOINT = 'model_best.pth.tar'  # the name timm's CheckpointSaver gives a run's best checkpoint
OUR_MODULES = ('fct', 'resnet_cifar')
# the smallest network with every grid of the real ones: resnet18_cifar with one block a stage and 8-64
# channels under 8-wide FCT modules (95k parameters); the costly part of a bf16 step is the backbone's width
TINY_BACKBONE = dict(backbone='resnet18_cifar', backbone_kwargs=dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)))
TINY_EMBED_DIM = 8
TINY_TRAIN_ARGS = ('--model', 'fct_bn', '--model-kwargs', 'backbone=resnet18_cifar',  # the same, as training's flags
                   "backbone_kwargs={'layers':(1,1,1,1),'channels':(8,16,32,64)}", f'embed_dim={TINY_EMBED_DIM}')


def our_models(include_tags: bool = False) -> List[str]:
    return timm.list_models(module=list(OUR_MODULES), include_tags=include_tags)


def assert_same_tensors(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], what: str = '',
                        exact: bool = True) -> None:
    """Same names, same values: bit for bit, or to float32 round-off where two computations differ in order."""
    assert actual.keys() == expected.keys(), what
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
    for name, tensor in actual.items():
        torch.testing.assert_close(tensor, expected[name], **tol, msg=f'{what}: {name}')


HUB_CACHE_COMMIT = '0123456789abcdef0123456789abcdef01234567'


def write_hub_cache(hf_home: Path, repo_id: str, files: dict) -> Path:
    """Lay files out as huggingface_hub's cache does after a download of repo_id at HUB_CACHE_COMMIT."""
    repo_dir = hf_home / 'hub' / ('models--' + repo_id.replace('/', '--'))
    snapshot = repo_dir / 'snapshots' / HUB_CACHE_COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / 'refs').mkdir()
    (repo_dir / 'refs' / 'main').write_text(HUB_CACHE_COMMIT)
    for name, writer in files.items():
        writer(snapshot / name)
    return snapshot


def run_offline(hf_home: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)


def run_train(*args: str, cwd: Optional[Path] = None, timeout: int = 600, umask: Optional[int] = None,
              **env: str) -> subprocess.CompletedProcess:
    """Run training as a user would, in a subprocess (under `umask` when given)."""
    cmd = [*TRAIN, '--no-progress', *args]
    return subprocess.run(cmd, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, preexec_fn=None if umask is None else lambda: os.umask(umask))


def torchrun(*args: str) -> subprocess.Popen:
    """`torchrun ARGS` from the repository root, output captured; one thread per process, as on an xdist worker
    (two processes of two threads each on two cores thrash)."""
    return subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'},
                            start_new_session=True)  # its own process group: killed whole, workers included


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


DISTRIBUTED_ARGS = soak.RUN_ARGS  # the distributed tests' run, the soak's (benchmarks/soak.py): one list

# training with each rank's parameters saved to {out}/rank<R>.pt at every epoch's replica check (the last one stays)
RANK_STATES_WRAPPER = """
import sys, torch
sys.path.insert(0, {repo!r})  # the checkout under test
from timm_fct.train import command, loop
check = loop.check_replicas_in_sync
def dump_then_check(args, model):
    torch.save({{k: v.detach().clone() for k, v in model.state_dict().items()}}, f'{out}/rank{{args.rank}}.pt')
    check(args, model)
loop.check_replicas_in_sync = dump_then_check
sys.exit(command.main(sys.argv[1:]))
"""


# a cheap setting for the tests about the training machinery, not the accuracy: the digits at their native 8 px
QUICK = ('--img-size', '8', '--model-kwargs', 'embed_dim=32', '-b', '64')


def read_state(path: Path) -> dict:
    """A checkpoint as torch saved it, on the CPU."""
    return torch.load(path, map_location='cpu', weights_only=False)


def summary_rows(run_dir: Path) -> list:
    """summary.csv as written, one dict of strings per epoch."""
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


# the smallest real run that has what the hub and report tests read: 2 epochs on the digits at 12 px (every
# FCT module attends over several keys), a narrow FCT head, and an EMA whose decay lets it move in 42 updates;
# trained under this umask, which the files it leaves must follow
SMALL_RUN_UMASK = 0o002
SMALL_RUN_ARGS = ('--epochs', '2', '--img-size', '12', '-b', '64', '--model-kwargs', 'embed_dim=32',
                  '--model-ema', '--model-ema-decay', '0.9')


def plain_one_cycle(max_lr: float, total: int, **kwargs) -> list:
    """lr and beta1 before each step of torch.optim.Adam under a bare OneCycleLR, flattened [lr_0, beta1_0, ...]:
    the reference for our scheduler, computed by PyTorch alone."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, **kwargs)
    out = []
    for _ in range(total):
        out += [opt.param_groups[0]['lr'], opt.param_groups[0]['betas'][0]]
        opt.step()
        sched.step()
    return out


def assert_backbone_is(loaded: Dict[str, torch.Tensor], hub: Dict[str, torch.Tensor]) -> None:
    """An FCT model's backbone weights are exactly the plain model's from the Hub (its classifier aside)."""
    backbone = {k[len('backbone.'):]: v for k, v in loaded.items() if k.startswith('backbone.')}
    assert set(backbone) == {k for k in hub if not k.startswith('fc.')}
    for k, v in backbone.items():
        torch.testing.assert_close(v, hub[k], rtol=0, atol=0, msg=k)


def kill_after_first_epoch(proc: subprocess.Popen) -> None:
    """SIGKILL a training run started with stdout piped, as soon as it prints 'epoch 1/N' (once epoch 1's checkpoint is
    on disk), and check that the kill, not the run's end, stopped it."""
    for line in proc.stdout:
        if line.startswith('epoch 1/'):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, 'the run ended before epoch 1 was printed'


def backbone_hub_cache(hf_home, arch: str, tag: str = 'a1_in1k'):
    """A stand-in for timm/<arch>.<tag>: real weights of that architecture (random, seeded) in the cache layout."""
    torch.manual_seed(0)
    weights = timm.create_model(arch).state_dict()
    snapshot = write_hub_cache(hf_home, f'timm/{arch}.{tag}', {
        'model.safetensors': lambda p: save_file(weights, str(p)),
        'config.json': lambda p: p.write_text(json.dumps({'architecture': arch, 'num_classes': 1000})),
    })
    return hf_home, snapshot / 'model.safetensors'

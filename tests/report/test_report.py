"""The evaluation report: metrics that add up, maps that point at the evidence, a page a browser shows."""
import csv
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm_fct  # noqa: F401  registers the models
from timm_fct.report import maps
from timm_fct.report.metrics import Evaluation, compute_metrics
from timm_fct.report.command import main as report_main
from timm_fct.report.inputs import resolve_split
from timm_fct.runs.folder import RunInfo

from tests.support.dataset_files import write_image_folder
from tests.support.helpers import BEST_CHECKPOINT, REPO, SMALL_MODEL

VALIDATION_IMAGES = 450  # the digits' held-out quarter (data.DIGITS_VAL_FRACTION of 1,797)


def fct_modules(model):
    return [model.fct_module(i) for i in model.fct_indices]
REPORT_FILES = {'metrics.json', 'metrics.md', 'confusion_matrix.png', 'gradcam.png', 'attention.png', 'index.html'}


@pytest.fixture(scope='session')
def digits_run(small_run) -> Path:
    """conftest's small train.py run: resnet18_fct_bn_cifar trained 2 epochs on the embedded digits at 12 px."""
    return small_run


def run_report(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'timm_fct.report', *args, '-j', '0', '--num-images', '4']
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


def leftovers(parent: Path) -> list:
    """Hidden temporary folders a failed or finished report might have left beside its --out."""
    return [p.name for p in parent.iterdir() if p.name.startswith('.') and p.name.endswith('.tmp')]


@pytest.fixture(scope='module')
def single_report(digits_run, tmp_path_factory) -> tuple:
    """The report of the whole validation split: the images train.py evaluated every epoch."""
    out = tmp_path_factory.mktemp('reports') / 'report'
    result = run_report(str(digits_run), '--out', str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def run_evaluation(run: Path, epoch: int, weights: str) -> float:
    """The top-1 train.py recorded for these weights (ema or raw) at this epoch, from the run's summary.csv."""
    with open(run / 'summary.csv', newline='') as f:
        row, = [r for r in csv.DictReader(f) if int(r['epoch']) == epoch]
    return float(row['eval_ema_top1' if weights == 'ema' else 'eval_top1'])


def test_cli_writes_the_whole_report_with_a_progress_bar(single_report, digits_run):
    out, result = single_report
    assert {p.name for p in out.iterdir()} == REPORT_FILES
    assert leftovers(out.parent) == []
    assert re.search(rf'evaluating {re.escape(digits_run.name)}: 100%\|.*\| (\d+)/\1', result.stderr), result.stderr
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['num_images'] == VALIDATION_IMAGES
    epoch = torch.load(digits_run / BEST_CHECKPOINT, map_location='cpu', weights_only=False)['epoch']
    assert (metrics['checkpoint_epoch'], metrics['weights']) in {(epoch, 'ema'), (epoch, 'raw')}
    # the same weights on the same images, preprocessed as the run recorded: the run's own accuracy
    assert metrics['top1'] == pytest.approx(run_evaluation(digits_run, epoch, metrics['weights']), abs=1e-3)
    assert metrics['top1'] <= metrics['top5'] <= 100
    md = (out / 'metrics.md').read_text()
    assert f"| {digits_run.name} | {SMALL_MODEL} | {VALIDATION_IMAGES} | {metrics['top1']:.2f} |" in md
    assert md.count('\n| ') >= 1 + 10 + 1  # summary row, a row per class, at least a header of confusions


def test_confusion_matrix_sums_to_the_evaluated_images(single_report):
    metrics = json.loads((single_report[0] / 'metrics.json').read_text())
    cm = np.array(metrics['confusion_matrix'])
    assert cm.shape == (10, 10) and cm.sum() == metrics['num_images'] == VALIDATION_IMAGES
    assert metrics['top1'] == pytest.approx(100 * np.trace(cm) / cm.sum())
    for c, row in enumerate(metrics['per_class']):
        assert row['class'] == str(c)
        assert (row['support'], row['correct']) == (cm[c].sum(), cm[c, c])
        assert row['accuracy'] == pytest.approx(100 * cm[c, c] / cm[c].sum())
    for pair in metrics['most_confused']:
        assert cm[int(pair['true']), int(pair['predicted'])] == pair['count'] > 0


def test_metrics_of_known_predictions():
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    topk = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [1, 2], [2, 0], [0, 1], [1, 2]])
    ev = Evaluation(targets, topk, confidence=np.full(8, 0.5), loss=1.0)
    metrics = compute_metrics(ev, ['cat', 'dog', 'owl', 'emu'])
    assert metrics['confusion_matrix'] == [[1, 2, 0, 0], [0, 2, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert metrics['top1'] == pytest.approx(100 * 4 / 8)
    assert metrics['top5'] == pytest.approx(100 * 6 / 8)  # top-2 here: only 2 predictions per image
    assert [c['accuracy'] for c in metrics['per_class']] == pytest.approx([100 / 3, 100, 100 / 3, None])
    assert metrics['most_confused'] == [{'true': 'cat', 'predicted': 'dog', 'count': 2},
                                        {'true': 'owl', 'predicted': 'cat', 'count': 1},
                                        {'true': 'owl', 'predicted': 'dog', 'count': 1}]


class ColourEvidenceNet(nn.Module):
    """Class 0 is evidenced by red, class 1 by green, wherever they are: a ResNet-shaped stand-in
    (layer4, global pool, fc) whose class evidence in an image is known exactly."""

    def __init__(self):
        super().__init__()
        self.layer4 = nn.Conv2d(3, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.layer4.weight.copy_(torch.eye(3)[:2, :, None, None])
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.layer4(x)).mean(dim=(2, 3)))


def test_gradcam_points_at_the_class_evidence():
    """A red square top-left and a green one bottom-right on a non-square image (a transposed map fails)."""
    h, w = 24, 40
    image = torch.zeros(1, 3, h, w)
    image[0, 0, 2:10, 3:15] = 1.0  # red: class 0
    image[0, 1, 14:22, 25:37] = 1.0  # green: class 1
    model = ColourEvidenceNet().eval()
    cams = maps.gradcam_maps(model, image.repeat(2, 1, 1, 1), [0, 1])
    assert cams.shape == (2, h, w)
    top_left, bottom_right = (slice(0, h // 2), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))
    assert cams[0][top_left].sum() / cams[0].sum() > 0.9
    assert cams[1][bottom_right].sum() / cams[1].sum() > 0.9


def pass_colours_through(conv: nn.Conv2d) -> None:
    """Output channel i is input channel i at the kernel centre (so a stride-s conv samples every s-th pixel)."""
    conv.weight.zero_()
    n = min(conv.weight.shape[:2])
    conv.weight[range(n), range(n), conv.weight.shape[2] // 2, conv.weight.shape[3] // 2] = 1.0
    if conv.bias is not None:
        conv.bias.zero_()


def colour_evidence_fct() -> nn.Module:
    """A resnet18_fct_bn_cifar whose class-c logit is the amount of colour c (red 0, green 1) in its FCT outputs.

    The backbone and the patch embeddings pass the colours through (norms are identities), the attention
    and focus branches add nothing, and g's projection is zero: the class evidence reaches the logits only
    through the FCT modules, and the last backbone level not at all, as g is all it feeds.
    """
    model = timm.create_model(SMALL_MODEL, num_classes=2, embed_dim=8).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # running mean 0, variance 1, weight 1, bias 0
        for conv in [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]:
            pass_colours_through(conv)
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
        model.global_proj.weight.zero_()
        model.global_proj.bias.zero_()
        for i, block in enumerate(fct_modules(model)):
            pass_colours_through(block.patch_embed)
            for silenced in (block.attn.proj, block.focus.conv):
                silenced.weight.zero_()
                silenced.bias.zero_()
            model.head.fc.weight[[0, 1], [8 * i, 8 * i + 1]] = 1.0  # channel c of each module votes for class c
    return model


def test_gradcam_of_an_fct_model_points_at_the_evidence_its_fct_modules_carry():
    """Red top-left, green bottom-right, on every module's sampling grid (multiples of 8): each class's map
    lies in its colour's quadrant. Grad-CAM on the last backbone level would give empty maps here."""
    h, w = 24, 40
    image = torch.zeros(1, 3, h, w)
    image[0, 0, 0:8, 0:16] = 1.0  # red: class 0
    image[0, 1, 16:24, 24:40] = 1.0  # green: class 1
    model = colour_evidence_fct()
    with torch.no_grad():
        red_only = model(image * torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))[0]
    assert red_only[0] > 0 and red_only[1] == 0  # as built: red is evidence for class 0 and for nothing else
    cams = maps.gradcam_maps(model, image.repeat(2, 1, 1, 1), [0, 1])
    assert cams.shape == (2, h, w)
    for cam, (rows, cols) in zip(cams, [(slice(0, h // 2), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]):
        assert cam.max() > 0, 'an empty map: the target layers do not reach the logits'
        assert cam[rows, cols].sum() / cam.sum() > 0.9
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop


def test_gradcam_has_one_row_per_fct_module_each_grad_cam_on_that_module_alone_then_their_mean(tmp_path):
    """Fig. 4 shows Grad-CAM per FCT module: each row must be pytorch_grad_cam's map on model.fct_module(i) alone,
    labelled with its FCT index and the level it taps; the mean of the modules' maps is an extra last row."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from timm_fct.report.figures import plot_gradcam_grid

    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL, num_classes=10).eval()
    images, classes = torch.randn(3, 3, 24, 24), [0, 3, 7]
    rows = maps.gradcam_rows(model, images, classes)
    labels = ['FCT 0 (level 1)', 'FCT 1 (level 2)', 'FCT 2 (level 3)', 'mean of the 3 FCT modules']
    assert [label for label, _ in rows] == labels
    expected = []
    for i in range(3):
        with GradCAM(model=model, target_layers=[model.fct_module(i)]) as cam:
            expected.append(cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes]))
    expected.append(scale_cam_image(np.mean(expected, axis=0)))
    for (label, actual), want in zip(rows, expected):
        assert actual.shape == (3, 24, 24), label
        np.testing.assert_allclose(actual, want, rtol=0, atol=1e-6, err_msg=label)
    assert not np.allclose(rows[0][1], rows[2][1]), 'the modules map the evidence differently'
    display = np.random.default_rng(0).random((3, 24, 24, 3)).astype(np.float32)
    fig = plot_gradcam_grid(display, rows, [('0', True), ('3', False), ('7', True)], 'Grad-CAM', tmp_path / 'g.png')
    assert len(fig.axes) == 4 * 3  # a row per map, a column per image
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == labels


def test_report_page_names_each_grad_cam_row_and_the_runs_last_epoch(single_report):
    page = (single_report[0] / 'index.html').read_text()
    rows = re.search(r'<ol class="gradcam-rows">(.*?)</ol>', page, re.S)
    assert rows, 'the page does not list the Grad-CAM rows'
    assert re.findall(r'<li>(.*?)</li>', rows.group(1)) == [
        'FCT 0 (level 1)', 'FCT 1 (level 2)', 'FCT 2 (level 3)', 'mean of the 3 FCT modules']
    assert 'chosen on that same split' in page and 'last epoch (1) top-1' in page


def test_gradcam_targets_what_the_classifier_reads():
    """Every FCT module of an FCT model (in tap order); the last stage of a plain network."""
    fct = timm.create_model(SMALL_MODEL, num_classes=10)
    assert maps.gradcam_target_layers(fct) == [fct.fct_module(0), fct.fct_module(1), fct.fct_module(2)]
    resnet = timm.create_model('resnet18_cifar', num_classes=10)
    assert maps.gradcam_target_layers(resnet) == [resnet.layer4]


def forward_recording(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> List[Dict[str, torch.Tensor]]:
    """One forward pass; per FCT module, the outputs of its attention's named layers ('kv': K's channels, then
    V's) and the input of its output projection ('sdpa': what scaled_dot_product_attention returned, heads
    concatenated)."""
    seen: List[Dict[str, torch.Tensor]] = [{} for _ in model.fct_indices]
    hooks = []
    for record, block in zip(seen, fct_modules(model)):
        hooks += [getattr(block.attn, n).register_forward_hook(lambda m, i, o, r=record, n=n: r.__setitem__(n, o))
                  for n in names]
        hooks.append(block.attn.proj.register_forward_hook(lambda m, i, o, r=record: r.__setitem__('sdpa', i[0])))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize('height,width', [(32, 32), (32, 48)])
def test_attention_maps_have_each_taps_kv_shape(height, width):
    """The maps lie on the K/V grid each module attended over, strided on large grids, as the model ran it."""
    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL, num_classes=10).eval()
    x = torch.randn(2, 3, height, width)
    applied = forward_recording(model, x, names=['kv'])
    attention, outputs = maps.fct_tap_maps(model, x)
    assert len(attention) == len(outputs) == len(model.fct_indices)
    strided = 0
    for info, record, attn, out in zip(model.feature_info, applied, attention, outputs):
        tap_grid = (-(-height // info['reduction']), -(-width // info['reduction']))  # FCT output of this tap
        kv_grid = tuple(record['kv'].shape[-2:])
        strided += kv_grid != tap_grid
        assert out.shape == (2, *tap_grid)
        assert attn.shape == (2, *kv_grid)
        assert torch.allclose(attn.sum(dim=(1, 2)), torch.ones(2))  # a distribution over K/V positions
    assert strided, 'no module strided its K/V at this size: the strided path went untested'


def test_attention_weights_are_those_the_model_applies():
    """weights @ V must give what each module's own scaled_dot_product_attention gave, strided K/V included."""
    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    extracted = maps.attention_weights(model, x)
    assert all(block.attn.fused_attn for block in fct_modules(model))  # extraction only: the model runs fused
    for block, (weights, kv_grid), seen in zip(fct_modules(model), extracted, forward_recording(model, x, ['kv'])):
        assert kv_grid == seen['kv'].shape[-2:]
        B, C, H, W = seen['sdpa'].shape
        heads = block.attn.num_heads  # head h holds channels h*C/heads .. (h+1)*C/heads, tokens row-major
        v = seen['kv'][:, C:].reshape(B, heads, C // heads, -1).transpose(-1, -2)  # V's channels follow K's
        assert torch.allclose((weights @ v).transpose(-1, -2).reshape(B, C, H, W), seen['sdpa'], atol=1e-5)


def test_failed_attention_extraction_leaves_the_model_fused():
    model = timm.create_model(SMALL_MODEL, num_classes=10).eval()
    with pytest.raises(ValueError):  # a 3-D input fails inside the traced model
        maps.fct_tap_maps(model, torch.randn(3, 32, 32))
    assert all(block.attn.fused_attn for block in fct_modules(model))


def truncated_checkpoint(digits_run: Path, tmp_path: Path) -> Path:
    path = tmp_path / 'broken' / 'model_best.pth.tar'
    path.parent.mkdir()
    path.write_bytes((digits_run / BEST_CHECKPOINT).read_bytes()[:4096])
    return path


@pytest.mark.parametrize('case,message', [
    ('missing', 'does not exist'),
    ('truncated', 'cannot be read'),
    ('dataset', '--data-dir is required'),
    ('exists', 'already exists'),
])
def test_unusable_input_exits_2_with_a_clear_error_and_no_report(case, message, digits_run, tmp_path, capsys):
    out = tmp_path / 'report'
    spec, extra = str(digits_run), []
    if case == 'missing':
        spec = str(tmp_path / 'nowhere' / 'model_best.pth.tar')
    elif case == 'truncated':
        spec = str(truncated_checkpoint(digits_run, tmp_path))
    elif case == 'dataset':
        extra = ['--dataset', 'torch/cifar10']
    else:
        out.mkdir()
    assert report_main([spec, '--out', str(out), '-j', '0', *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and 'Traceback' not in err
    assert out.exists() == (case == 'exists') and leftovers(tmp_path) == []


def test_the_report_reads_the_split_the_runs_evaluated_on_unless_told():
    """A Table 1 run evaluates on CIFAR-10's 'test' split: its report does too, unless --split or another --dataset
    says otherwise; runs that disagree fall back to 'validation'."""
    def run(split):
        return RunInfo('resnet50_fct_bn_cifar', 10, [], {}, dataset='torch/cifar10', val_split=split)
    assert resolve_split(None, False, [run('test')]) == 'test'
    assert resolve_split('train', False, [run('test')]) == 'train'
    assert resolve_split(None, True, [run('test')]) == 'validation'
    assert resolve_split(None, False, [run('test'), run('validation')]) == 'validation'


def test_an_out_folder_the_file_system_refuses_is_one_line(digits_run, tmp_path, capsys):
    """--out inside a file (the folder cannot be made): exit code 5, one line naming it, nothing written."""
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder\n')
    assert report_main([str(digits_run), '--out', str(blocker / 'report'), '-j', '0', '--max-images', '8']) == 5
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and str(blocker) in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ['a_file']


def test_a_dataset_of_another_class_count_is_one_error_line(digits_run, tmp_path, capsys):
    """The digits run (10 classes) reported on a two-class image folder: refused naming the run and both counts."""
    data = tmp_path / 'two_classes'
    write_image_folder(data, {'validation': 2})
    out = tmp_path / 'report'
    assert report_main([str(digits_run), '--dataset', '', '--data-dir', str(data), '--out', str(out), '-j', '0']) == 2
    assert capsys.readouterr().err.splitlines() == [
        f'error: {digits_run.name} predicts 10 classes but the dataset has 2; pass the dataset it was trained on '
        'with --dataset']
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.fixture(scope='module')
def baseline_checkpoint(tmp_path_factory) -> Path:
    """An untrained plain ResNet, saved as a bare checkpoint file with its architecture name (no config.json beside it)."""
    path = tmp_path_factory.mktemp('baseline') / 'resnet18_cifar.pth.tar'
    torch.manual_seed(0)
    model = timm.create_model('resnet18_cifar', num_classes=10)
    torch.save({'state_dict': model.state_dict(), 'arch': 'resnet18_cifar'}, path)
    return path


def test_several_models_are_compared_side_by_side(digits_run, baseline_checkpoint, tmp_path):
    out = tmp_path / 'comparison'
    assert report_main([str(digits_run), str(baseline_checkpoint), '--out', str(out), '--max-images', '40',
                        '--num-images', '2', '-j', '0']) == 0
    rows = json.loads((out / 'comparison.json').read_text())
    baseline_name = f'{baseline_checkpoint.parent.name}/{baseline_checkpoint.name}'
    assert [(r['name'], r['arch'], r['num_images']) for r in rows] == [
        (digits_run.name, SMALL_MODEL, 40), (baseline_name, 'resnet18_cifar', 40)]
    table = (out / 'comparison.md').read_text()
    for r in rows:
        assert f"| {r['name']} | {r['arch']} | 40 | {r['top1']:.2f} | {r['top5']:.2f} |" in table
        assert json.loads((out / r['folder'] / 'metrics.json').read_text())['top1'] == r['top1']
    assert (out / 'comparison.png').stat().st_size > 0
    assert (out / rows[0]['folder'] / 'attention.png').is_file()
    assert not (out / rows[1]['folder'] / 'attention.png').exists()  # no FCT modules, no attention maps
    page = (out / 'index.html').read_text()
    assert 'src="comparison.png"' in page and f'src="{rows[1]["folder"]}/gradcam.png"' in page


CHECK_PAGE = """<!DOCTYPE html><html><body>
<iframe id="report" src="report/index.html" width="1200" height="800"></iframe>
<script>
const frame = document.getElementById('report');
frame.addEventListener('load', () => {
  const doc = frame.contentDocument;
  const images = [...doc.images];
  Promise.all(images.map(i => i.complete ? 0 : new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => {
    const out = document.createElement('pre');
    out.id = 'result';
    out.textContent = JSON.stringify({
      title: doc.title,
      headings: [...doc.querySelectorAll('h2, h3')].map(h => h.textContent),
      tables: doc.querySelectorAll('table').length,
      images: images.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
    });
    document.body.appendChild(out);
  });
});
</script></body></html>
"""


CHROMIUM_MISSING = ('chromium is not installed, so index.html was not opened in a browser: install it with '
                    '`apt-get install -y chromium` (Debian); .ci/run installs it, so CI always runs this check')


def chromium() -> str:
    """The headless browser. Without it the check is skipped, saying how to run it, except on CI (CI is set),
    where a missing browser must not turn the check into a silent pass."""
    found = shutil.which('chromium') or shutil.which('chromium-browser')
    if found:
        return found
    if os.environ.get('CI'):
        pytest.fail(CHROMIUM_MISSING)
    pytest.skip(CHROMIUM_MISSING)


def test_index_html_shows_everything_in_a_headless_browser(single_report, digits_run, tmp_path):
    """Served over HTTP, so the checker page may read the report's DOM in its iframe (same origin)."""
    browser = chromium()
    site = tmp_path / 'site'
    shutil.copytree(single_report[0], site / 'report')
    (site / 'check.html').write_text(CHECK_PAGE)
    handler = functools.partial(QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            dom = subprocess.run([
                browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                f'--user-data-dir={tmp_path / "profile"}', '--run-all-compositor-stages-before-draw',
                '--virtual-time-budget=10000', '--dump-dom', f'http://127.0.0.1:{server.server_port}/check.html',
            ], capture_output=True, text=True, timeout=120).stdout
        finally:
            server.shutdown()
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found, f'the checker page did not finish: {dom[-2000:]}'
    page = json.loads(found.group(1).replace('&quot;', '"').replace('&amp;', '&'))
    assert page['title'] == f'Evaluation report: {digits_run.name}'
    assert {'Confusion matrix', 'Grad-CAM', 'FCT attention per tap', 'Per-class accuracy'} <= set(
        page['headings'])
    metrics = json.loads((single_report[0] / 'metrics.json').read_text())
    assert page['tables'] == (3 if metrics['most_confused'] else 2)  # the confused-pairs table needs a mistake
    assert {i['src'] for i in page['images']} == {'confusion_matrix.png', 'gradcam.png', 'attention.png'}
    assert all(i['width'] > 200 for i in page['images']), page['images']


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass

"""`python -m timm_fct SCRIPT.py ARGS...` runs a script as `python SCRIPT.py ARGS...` would, FCT models registered.

The scripts here follow the contract of timm's validate.py / benchmark.py / inference.py / onnx_export.py
(which are not in timm's wheel): they parse argv, import a module beside them, create a model by name,
and exit non-zero on failure. Each run is a subprocess, as a user would start it.
"""
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

SCRIPT = '''
import argparse
import json
import sys

import sibling  # timm's scripts import modules beside them


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--model', default='')
    parser.add_argument('--exit-code', type=int, default=0)
    parser.add_argument('--crash', action='store_true')
    parser.add_argument('rest', nargs='*')
    args = parser.parse_args()
    print(json.dumps({'name': __name__, 'argv': sys.argv, 'path': sys.path, 'file': __file__,
                      'sibling': sibling.VALUE, 'rest': args.rest}), flush=True)
    if args.crash:
        raise RuntimeError('the script crashed')
    if args.model:
        import timm
        try:
            model = timm.create_model(args.model)
        except RuntimeError as e:  # timm's "Unknown model"
            print(f'error: {e}', file=sys.stderr)
            return 1
        print(json.dumps({'model': type(model).__name__, 'num_classes': model.num_classes}))
    return args.exit_code


if __name__ == '__main__':
    sys.exit(main())
'''

LAUNCHER_TIMEOUT = 120  # measured: about 4 s each (importing torch and timm) on this project's 2-core machine


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """A script in its own folder with a sibling module; runs start from another folder."""
    folder = tmp_path / 'scripts'
    folder.mkdir()
    (folder / 'sibling.py').write_text('VALUE = "imported from beside the script"\n')
    path = folder / 'evaluate.py'
    path.write_text(SCRIPT)
    (tmp_path / 'cwd').mkdir()
    return path


def run(*args: str, cwd: Path, launcher: bool = True) -> subprocess.CompletedProcess:
    prefix = [sys.executable, '-m', 'timm_fct'] if launcher else [sys.executable]
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, timeout=LAUNCHER_TIMEOUT)


def json_lines(stdout: str) -> Dict:
    out = {}
    for line in stdout.splitlines():
        out.update(json.loads(line))
    return out


def test_script_runs_as_with_python_and_creates_fct_models(script: Path):
    cwd = script.parent.parent / 'cwd'
    args = ['../scripts/evaluate.py', '--model', 'resnet18_fct_bn_cifar', 'a', 'b']
    launched = run(*args, cwd=cwd)
    plain = run('../scripts/evaluate.py', 'a', 'b', cwd=cwd, launcher=False)  # no model: timm alone lacks it

    assert launched.returncode == 0, launched.stderr
    assert plain.returncode == 0, plain.stderr
    seen, expected = json_lines(launched.stdout), json_lines(plain.stdout)
    for key in ('name', 'path', 'sibling', 'rest'):  # the whole module search path, in order
        assert seen[key] == expected[key], key
    assert seen['name'] == '__main__'
    assert seen['argv'] == args
    assert Path(seen['path'][0]) == script.parent.resolve()
    assert Path(cwd, seen['file']).samefile(script)
    assert (seen['model'], seen['num_classes']) == ('FctNet', 10)


@pytest.mark.parametrize('args, code', [(['--exit-code', '3'], 3), (['--crash'], 1)], ids=['sys.exit', 'exception'])
def test_exit_status_passes_through(script: Path, args, code):
    result = run(str(script), *args, cwd=script.parent.parent / 'cwd')
    assert result.returncode == code, result.stderr
    if code == 1:
        assert 'Traceback' in result.stderr and 'RuntimeError: the script crashed' in result.stderr


def test_missing_script_is_one_error_line(tmp_path: Path):
    result = run('no_such_script.py', '--model', 'resnet18_fct_bn_cifar', cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith('error:') and 'no_such_script.py' in result.stderr
    assert 'Traceback' not in result.stderr


def test_no_arguments_prints_usage(tmp_path: Path):
    result = run(cwd=tmp_path)
    assert result.returncode == 2
    assert 'usage: python -m timm_fct SCRIPT.py' in result.stderr

"""A torch.compile kernel cache per ATEN_CPU_CAPABILITY, set before torch is imported (which fixes the folder).

torch.compile's on-disk cache does not key its kernels on that variable: kernels cached by a run without it gave
NaN logits under ATEN_CPU_CAPABILITY=avx2 (docs/development.md). conftest.py imports this module first.
"""
import os
import tempfile

if os.environ.get('ATEN_CPU_CAPABILITY'):
    os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', os.path.join(
        tempfile.gettempdir(), f'torchinductor-{os.environ["ATEN_CPU_CAPABILITY"]}'))

"""index.html: the report's page, rendered from templates/index.html.j2 with jinja2 (escaping on)."""
from pathlib import Path
from typing import Any, Dict, Sequence

from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import layout
from .metrics import confused_table, per_class_table, summary_table

TEMPLATES = Path(__file__).parent / 'templates'
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(['html', 'j2']))


def render_index(rows: Sequence[Dict[str, Any]], prefixes: Sequence[str]) -> str:
    """The comparison (when there are several models), then one section per model; prefix: its sub-folder."""
    models = [dict(name=r['name'], arch=r['arch'], dataset_line=r['dataset_line'], weights_line=r['weights_line'],
                   gradcam=r['gradcam'], gradcam_rows=r.get('gradcam_rows', []), has_attention=r['has_attention'], prefix=prefix,
                   summary=summary_table([r]), per_class=per_class_table(r['metrics']),
                   confused=confused_table(r['metrics']) if r['metrics']['most_confused'] else None)
              for r, prefix in zip(rows, prefixes)]
    files = {k.lower(): v for k, v in vars(layout).items() if k.isupper()}
    return _env.get_template('index.html.j2').render(
        title='Evaluation report: ' + ', '.join(r['name'] for r in rows), dataset_line=rows[0]['dataset_line'],
        style=(TEMPLATES / 'style.css').read_text(), comparison=summary_table(rows) if len(rows) > 1 else None,
        models=models, files=files) + '\n'

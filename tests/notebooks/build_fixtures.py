"""Write the fixture notebooks of the runner tests (run from the project root to regenerate).

Each notebook declares ``output_dir`` and ``warehouse_path`` in a cell tagged
``parameters`` and is written without outputs or execution counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = """\
warehouse_path = ""  # warehouse file; empty: the default warehouse
output_dir = ""  # run folder injected by the runner; empty: nothing persisted
"""

BODIES: dict[str, tuple[str, str, list[str]]] = {
    "ok": (
        "A notebook that succeeds",
        'n_rows = 3  # rows of the result table\nlabel = "demo"  # a text parameter\nas_of = "2024-01-31"  # ISO date, parsed in the notebook\n',
        [
            "import pandas as pd\nfrom crm_analytics import results",
            'summary = pd.DataFrame({"row_id": range(n_rows), "label": label, "as_of": as_of})\nprint("cell-stdout-marker")\nsummary',
            'alerts = pd.DataFrame({"kpi": ["revenue", "orders"], "change_pct": [-12.0, -30.0]})\n'
            'results.save_table(summary, "summary", output_dir=output_dir)\n'
            'results.save_table(alerts, "alerts", output_dir=output_dir)',
            "assert len(summary) == n_rows\nassert isinstance(as_of, str)",
        ],
    ),
    "fails": (
        "A cell raises",
        "",
        [
            'from pathlib import Path\nif output_dir:\n    (Path(output_dir) / "before.txt").write_text("partial")',
            'raise ValueError("boom in cell")',
            'print("never reached")',
        ],
    ),
    "hangs": ("A cell hangs", "", ["import time\ntime.sleep(120)", 'print("never reached")']),
    "dies": ("The kernel is killed", "", ["import os\nos.kill(os.getpid(), 9)", 'print("never reached")']),
    "exits": ("The notebook exits early", "", ["import sys\nsys.exit(0)", 'print("never reached")']),
    "sleeper": (
        "A slow notebook that records its kernel's pid",
        "seconds = 30.0  # how long the notebook sleeps\n",
        [
            'import os, time\nfrom pathlib import Path\nif output_dir:\n    (Path(output_dir) / "kernel.pid").write_text(str(os.getpid()))',
            "time.sleep(seconds)",
        ],
    ),
    "empty": ("Nothing but parameters (measures the runner's overhead)", "", []),
    "probe": (
        "Records what its kernel inherited and draws a chart",
        "",
        [
            "import json, logging, os, sys\nfrom pathlib import Path\nimport matplotlib.pyplot as plt\n"
            'kernels = sys.modules.get("crm_analytics.kernels")\n'
            'facts = {"pid": os.getpid(), "cwd": os.getcwd(), "preloaded": bool(kernels and kernels.is_preloaded()),\n'
            '         "root_handlers": len(logging.getLogger().handlers), "backend": plt.get_backend()}\n'
            'if output_dir:\n    (Path(output_dir) / "kernel.json").write_text(json.dumps(facts))',
            "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\nplt.show()",
        ],
    ),
}


def build(name: str) -> nbformat.NotebookNode:
    """Return the fixture notebook ``name``."""
    title, extra, cells = BODIES[name]
    params = new_code_cell(PARAMETERS + extra)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(
        cells=[new_markdown_cell(f"# {title}"), params, *(new_code_cell(src) for src in cells)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    return nb


def main(folder: Path = HERE) -> None:
    for name in BODIES:
        nbformat.write(build(name), folder / f"{name}.ipynb")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)

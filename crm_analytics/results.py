"""Persist a notebook's results into its run folder, and read the latest ones back.

A run folder (``outputs/<dataset>/<analysis>/<run-id>/``) holds ``tables/`` (Parquet and
CSV of every result table) and ``figures/`` (PNG). Notebooks call
``save_table`` and ``save_figure`` (or ``show_figure``) with the ``output_dir`` parameter the runner
injects; with an empty ``output_dir`` (an analyst iterating in JupyterLab)
nothing is written. Stakeholder pages read the last successful run's tables
with ``load_latest_table``.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import pandas as pd

from crm_analytics import paths

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
FIGURE_DPI = 110  # resolution of the PNG files (dots per inch)


class SavedPath(type(Path())):
    """The path of a persisted result. Shows nothing as a notebook cell's last value, so reports never print local folders."""

    def _ipython_display_(self) -> None:
        return None


def _checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"result name {name!r} must be lower-case letters, digits, '_' or '-' (it becomes a file name)")
    return name


def save_table(df: pd.DataFrame, name: str, *, output_dir: str | Path | None) -> Path | None:
    """Write ``df`` as ``tables/<name>.parquet`` and ``tables/<name>.csv`` under ``output_dir``.

    Returns the Parquet path, or ``None`` when ``output_dir`` is empty (nothing persisted).
    The index is written only when it is named (a meaningful key).
    """
    if not output_dir:
        return None
    folder = Path(output_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    frame = df.reset_index() if any(n is not None for n in df.index.names) else df
    frame.columns = [str(c) for c in frame.columns]
    parquet_path = folder / f"{_checked_name(name)}.parquet"
    frame.to_parquet(parquet_path, index=False)
    frame.to_csv(folder / f"{name}.csv", index=False)
    return SavedPath(parquet_path)


def save_figure(fig, name: str, *, output_dir: str | Path | None, dpi: int = FIGURE_DPI) -> Path | None:
    """Write a matplotlib figure as ``figures/<name>.png`` under ``output_dir``; ``None`` when not persisting."""
    path = _figure_path(name, output_dir)
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show_figure(fig, name: str, *, output_dir: str | Path | None, dpi: int = FIGURE_DPI) -> Path | None:
    """Show a matplotlib figure in the notebook and write the same image as ``figures/<name>.png`` under ``output_dir``.

    Replaces ``plt.show()`` followed by ``save_figure``: the figure is drawn once for both. It appears
    at the size ``plt.show()`` gives (``figure.dpi``) and is then closed, like ``plt.show()`` closes
    it (the object stays usable). Returns the file's path, or ``None`` when not persisting.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    path = _figure_path(name, output_dir)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    png = buffer.getvalue()
    width_px = struct.unpack(">I", png[16:20])[0]  # the PNG header's width field
    display(Image(data=png, format="png", width=round(width_px * fig.dpi / dpi)))
    plt.close(fig)
    if path is not None:
        path.write_bytes(png)
    return path


def _figure_path(name: str, output_dir: str | Path | None) -> SavedPath | None:
    """``<output_dir>/figures/<name>.png`` with its folder created; ``None`` when ``output_dir`` is empty."""
    if not output_dir:
        return None
    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return SavedPath(folder / f"{_checked_name(name)}.png")


def load_latest_table(analysis: str, name: str) -> pd.DataFrame:
    """Return the table ``name`` from the last successful run of ``analysis``.

    Raises ``FileNotFoundError`` naming the analysis and table when no successful run has it.
    """
    path = paths.latest_run_dir(analysis) / "tables" / f"{_checked_name(name)}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"no table {name!r} in the latest successful run of {analysis!r} ({path}); run `crm-analytics run {analysis}` first"
        )
    return pd.read_parquet(path)


WARNINGS_FILE = "warnings.jsonl"
WARNING_KINDS = ("too_little_data", "not_converged", "skipped", "data_note")


def warn(message: str, *, output_dir: str | Path | None, kind: str = "too_little_data", section: str = "") -> None:
    """Show a one-line warning in the report and record it for the run record, the index and the pages.

    ``kind`` is one of ``WARNING_KINDS``; ``section`` names the report section it concerns. The line is
    appended to ``<output_dir>/warnings.jsonl`` (nothing is written when ``output_dir`` is empty); the
    runner copies the lines into ``run.json`` as ``warnings``. A run with warnings still succeeds.
    """
    import json

    from IPython.display import display

    if kind not in WARNING_KINDS:
        raise ValueError(f"warning kind {kind!r} is not one of {WARNING_KINDS}")
    where = f" ({section})" if section else ""
    display({"text/markdown": f"**Warning{where}:** {message}", "text/plain": f"Warning{where}: {message}"}, raw=True)
    if output_dir:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / WARNINGS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, "section": section, "message": message}, ensure_ascii=False) + "\n")


def read_warnings(run_dir: str | Path) -> list[dict]:
    """Return the warnings a run recorded with ``warn`` (``kind``, ``section``, ``message``), oldest first."""
    import json

    path = Path(run_dir) / WARNINGS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

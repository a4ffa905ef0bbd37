"""docs/your_data.md works as written: its commands run in order, in a fresh project home, and end as it says.

Convention of the page: a fenced ```bash block preceded by the HTML comment ``<!-- doc-test -->`` is run
(``<!-- doc-test exit=N -->``: it must exit with N instead of 0). A ```text block right after it is the
output the page shows: each of its lines must appear in what the command printed, where ``…`` stands for
any text (shortened paths, left-out lines) and durations (``10.0 s``) may differ.

The blocks run with bash from a new project home (``CRM_ANALYTICS_HOME``) laid out like a checkout: its
``data/external`` and ``parameters`` are links to the checkout's, so the page's relative paths read the
shipped workbook and write the dataset file where ``init-dataset`` writes it. The scratch dataset file
``parameters/datasets/my_shop.yaml`` is removed afterwards. The numbers of the reports are checked by
the Online Retail II tests; this test checks the page.

Step 3 of the page quotes the finished dataset file ``parameters/datasets/online_retail_ii.yaml`` in ```yaml
blocks, where a line ``...`` marks text left out: every quoted passage must be in that file word for word;
likewise the ```yaml blocks of step 2 in the file ``init-dataset`` proposes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crm_analytics import paths, runner, warehouse

DOC = paths.code_root() / "docs" / "your_data.md"
DATASET = "my_shop"
FINISHED_FILE = paths.datasets_dir() / "online_retail_ii.yaml"  # step 3 of the page quotes it
BLOCK = re.compile(r"<!--\s*doc-test(?:\s+exit=(?P<exit>\d+))?\s*-->\s*\n```bash\n(?P<command>.*?)\n```(?P<after>\n\n```text\n(?P<output>.*?)\n```)?", re.S)
REPORT_ROW = re.compile(r"^\| `(?P<analysis>[a-z_]+)` \| (?P<ran>yes|no) \|", re.M)
DURATION = re.compile(r"\d+(?:\.\d+)? s\b")
YAML_BLOCK = re.compile(r"^```yaml\n(?P<body>.*?)\n```", re.S | re.M)
ELISION = "..."


@dataclasses.dataclass(frozen=True)
class DocBlock:
    """One command block of the page: the bash text, the exit code it must end with, the output shown below it."""

    command: str
    exit_code: int
    shown_output: str | None


def doc_blocks(text: str) -> list[DocBlock]:
    """The ``doc-test`` command blocks of a page, in order."""
    return [
        DocBlock(m["command"], int(m["exit"] or 0), m["output"])
        for m in BLOCK.finditer(text)
    ]


def _normalise(text: str) -> str:
    return " ".join(text.split())


def line_pattern(line: str) -> re.Pattern:
    """A shown output line as a pattern: ``…`` matches any text, a duration any duration, runs of spaces one space."""
    pieces = []
    for fragment in _normalise(line).split("…"):
        parts = DURATION.split(fragment)
        pieces.append(r"\d+(?:\.\d+)? s".join(re.escape(part) for part in parts))
    return re.compile(".*?".join(pieces))


def missing_lines(shown: str, printed: str) -> list[str]:
    """The lines of ``shown`` that do not occur in ``printed``."""
    haystack = _normalise(printed)
    return [line for line in shown.splitlines() if line.strip() and not line_pattern(line).search(haystack)]


def section(text: str, heading: str) -> str:
    """The text of the ``## `` section whose heading starts with ``heading``, up to the next ``## `` heading."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def quoted_passages(text: str) -> list[str]:
    """The passages of the ```yaml blocks of ``text``: each block split at its ``...`` lines (text left out)."""
    passages = []
    for block in YAML_BLOCK.finditer(text):
        passage: list[str] = []
        for line in [*block["body"].splitlines(), ELISION]:
            if line.strip() == ELISION:
                passages += ["\n".join(passage)] if passage else []
                passage = []
            else:
                passage.append(line)
    return passages


def report_table(text: str) -> dict[str, bool]:
    """``{analysis: ran}`` from the page's table of reports."""
    return {m["analysis"]: m["ran"] == "yes" for m in REPORT_ROW.finditer(text)}


# ----------------------------------------------------------------------------- the page's shape (fast)


def test_every_bash_block_of_the_page_is_run():
    text = DOC.read_text(encoding="utf-8")
    assert text.count("```bash") == len(doc_blocks(text)) > 0


def test_the_page_runs_the_whole_path_in_order():
    commands = [block.command for block in doc_blocks(DOC.read_text(encoding="utf-8"))]
    steps = ["data/raw/my_shop", "init-dataset my_shop", "check-dataset my_shop", f"run-all --dataset {DATASET}"]
    positions = [next(i for i, c in enumerate(commands) if step in c) for step in steps]
    assert positions == sorted(positions)


def test_the_table_of_reports_covers_every_analysis():
    assert set(report_table(DOC.read_text(encoding="utf-8"))) == set(runner.list_analyses())


def test_the_quoted_parts_of_the_finished_dataset_file_are_in_it_word_for_word():
    finished = FINISHED_FILE.read_text(encoding="utf-8")
    passages = quoted_passages(section(DOC.read_text(encoding="utf-8"), "3. "))
    assert len(passages) >= 5  # the market keys, the inputs, orders and order_items, the non-merchandise list, products
    stale = [passage for passage in passages if passage not in finished]
    assert stale == [], f"re-copy these passages of docs/your_data.md from {FINISHED_FILE.name}:\n" + "\n---\n".join(stale)


def test_quoted_passages_split_at_elisions():
    text = "## 3. x\n```yaml\na: 1\n...\n  b:\n    c: 2\n      ...\n```\n"
    assert quoted_passages(text) == ["a: 1", "  b:\n    c: 2"]


def test_shown_output_allows_shortened_text_and_other_durations():
    printed = "error: /tmp/x/parameters/datasets/a.yaml is bad\n     succeeded cleansing (12.5 s)\n"
    assert missing_lines("error: /…/parameters/datasets/a.yaml is bad\nsucceeded cleansing (10.0 s)", printed) == []
    assert missing_lines("succeeded churn (1.0 s)", printed) == ["succeeded churn (1.0 s)"]


# ----------------------------------------------------------------------------- the page, run


@pytest.fixture()
def checkout_like_home(tmp_path):
    """A fresh project home whose ``data/external`` and ``parameters`` are the checkout's; removes the scratch dataset file."""
    scratch = paths.datasets_dir() / f"{DATASET}.yaml"
    if scratch.exists():
        pytest.fail(f"{scratch} exists already; the page creates it (remove it if a run of this test left it behind)")
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "external").symlink_to(paths.code_root() / "data" / "external")
    (home / "parameters").symlink_to(paths.parameters_dir())
    try:
        yield home
    finally:
        scratch.unlink(missing_ok=True)


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != paths.DATASET_ENV}
    env[paths.HOME_ENV] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"  # wide enough that no shown line is wrapped
    return env


@pytest.mark.slow
def test_the_page_works_as_written(checkout_like_home):
    home = checkout_like_home
    text = DOC.read_text(encoding="utf-8")
    env = _environment(home)
    for block in doc_blocks(text):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.command], cwd=home, env=env, capture_output=True, text=True,
            timeout=1800,
        )
        printed = done.stdout + done.stderr
        assert done.returncode == block.exit_code, f"`{block.command}` exited {done.returncode}:\n{printed[-3000:]}"
        if block.shown_output:
            assert missing_lines(block.shown_output, printed) == [], f"`{block.command}` printed:\n{printed[-6000:]}"
        if f"init-dataset {DATASET}" in block.command:  # step 2 quotes the proposal it writes
            proposal = (paths.datasets_dir() / f"{DATASET}.yaml").read_text(encoding="utf-8")
            stale = [passage for passage in quoted_passages(section(text, "2. ")) if passage not in proposal]
            assert stale == [], "re-copy these passages of the proposal:\n" + "\n---\n".join(stale)

    outputs = home / "outputs"
    assert (outputs / "index.html").is_file()
    index = (outputs / DATASET / "index.html").read_text(encoding="utf-8")
    assert f"{DATASET} (Europe/London, GBP)" in index
    for analysis, ran in report_table(text).items():
        folder = outputs / DATASET / analysis
        if ran:
            run = json.loads((folder / "latest" / "run.json").read_text(encoding="utf-8"))
            assert run["status"] == "succeeded" and (folder / "latest" / "report.html").is_file(), analysis
        else:
            statuses = {json.loads(p.read_text(encoding="utf-8"))["status"] for p in folder.glob("*/run.json")}
            assert statuses == {runner.NOT_APPLICABLE}, analysis
    info = warehouse.dataset_info(home / "data" / "warehouse" / f"{DATASET}.duckdb")
    assert (info["time_zone"], info["currency"], info["locale"]) == ("Europe/London", "GBP", "en_GB")  # pounds, London time

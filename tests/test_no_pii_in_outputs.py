"""No raw name, e-mail or phone in anything a stakeholder can see under ``outputs/``.

Stakeholder-facing files are the HTML reports and pages (``*.html``), published tables (``tables/*.csv``,
``tables/*.parquet``) and run records (``*.json``). The executed notebooks and the ``stdout``/``stderr``
captures of a run stay in the analyst area and are not scanned.

The scanner looks for personal values in the forms a leak would take: e-mail addresses case-folded, phone
numbers by their last eleven digits (so ``+86 138-0013-8000``, ``13800138000`` and ``+8613800138000`` all
match), Chinese names inside runs of Chinese characters, Latin names as runs of two or three words.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import paths, privacy, results, sources

SCANNED_SUFFIXES = {".html", ".csv", ".parquet", ".json"}
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGITS = re.compile(r"\+?\d[\d\s\-()]{6,}\d")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]{2,}")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
# Embedded images (data: URIs, base64 blobs in JSON) are not text: their letters would pair into chance "names".
_BASE64 = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+|[A-Za-z0-9+/=]{120,}")


@dataclass
class PersonalValues:
    """The personal values to look for, normalised for matching."""

    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    cjk_names: set[str] = field(default_factory=set)
    latin_names: set[str] = field(default_factory=set)

    def add(self, *, names=(), emails=(), phones=()) -> PersonalValues:
        for value in _present(emails):
            self.emails.add(_norm(value).casefold())
        for value in _present(phones):
            digits = re.sub(r"\D", "", _norm(value))
            if len(digits) >= 11:
                self.phones.add(digits[-11:])
        for value in _present(names):
            name = " ".join(_norm(value).split())
            if _CJK_RUN.fullmatch(name.replace(" ", "")):
                self.cjk_names.add(name.replace(" ", ""))
            elif len(name) >= 5 and " " in name:
                self.latin_names.add(name.casefold())
        return self

    def __len__(self) -> int:
        return len(self.emails) + len(self.phones) + len(self.cjk_names) + len(self.latin_names)


def _present(values) -> list[str]:
    return [str(v) for v in pd.Series(list(values), dtype="object").dropna() if str(v).strip()]


def _norm(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def find_personal_values(text: str, known: PersonalValues) -> set[str]:
    """Return the known personal values that occur in ``text``."""
    text = _BASE64.sub(" ", _norm(html.unescape(text)))
    found = {e.casefold() for e in _EMAIL.findall(text)} & known.emails
    found |= {re.sub(r"\D", "", d)[-11:] for d in _DIGITS.findall(text)} & known.phones
    lengths = {len(n) for n in known.cjk_names}
    for run in _CJK_RUN.findall(text):
        found |= {run[i : i + n] for n in lengths for i in range(len(run) - n + 1)} & known.cjk_names
    words = [w.casefold() for w in _LATIN_WORD.findall(text)]
    grams = {" ".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1)}
    return found | (grams & known.latin_names)


def file_text(path: Path) -> str:
    """The text of a scanned file; a Parquet table as CSV."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv(index=False)
    return path.read_text(encoding="utf-8", errors="replace")


def stakeholder_files(outputs: Path) -> list[Path]:
    return sorted(p for p in outputs.rglob("*") if p.is_file() and p.suffix in SCANNED_SUFFIXES)


def scan(outputs: Path, known: PersonalValues) -> dict[str, set[str]]:
    """Return ``{file: personal values found}`` for every stakeholder-facing file that leaks."""
    leaks = {}
    for path in stakeholder_files(outputs):
        found = find_personal_values(file_text(path), known)
        if found:
            leaks[str(path.relative_to(outputs))] = found
    return leaks


# --------------------------------------------------------------------------------------------------
# fast: the scanner and the masks on a hand-made outputs folder


KNOWN = PersonalValues().add(
    names=["张三丰", "Zhang Wei", "欧阳娜娜"],
    emails=["ZW1987@Example.com"],
    phones=["+86 138-0013-8000"],
)


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("contact: zw1987@example.com", "zw1987@example.com"),
        ("<td>13800138000</td>", "13800138000"),
        ("phone +86 138 0013 8000.", "13800138000"),
        ("客户张三丰投诉", "张三丰"),
        ("<td>ZHANG&nbsp;WEI</td>", "zhang wei"),
        ("欧阳娜娜", "欧阳娜娜"),
    ],
)
def test_scanner_finds_a_raw_value_in_any_spelling(text, leak):
    assert find_personal_values(text, KNOWN) == {leak}


def test_scanner_skips_embedded_images():
    blob = "iVBORw0KGgo" + "Zhang+Wei" + "A" * 200
    assert find_personal_values(f'<img src="data:image/png;base64,{blob}"> {{"image/png": "{blob}"}}', KNOWN) == set()
    assert find_personal_values(f'<img src="data:image/png;base64,{blob}"> Zhang Wei', KNOWN) == {"zhang wei"}


def test_scanner_ignores_masked_values():
    masked = pd.DataFrame(
        {"full_name": ["张三丰", "Zhang Wei"], "email": ["ZW1987@Example.com", None], "phone": ["+86 138-0013-8000", None]}
    ).pipe(privacy.mask_frame)
    assert find_personal_values(masked.to_csv(index=False), KNOWN) == set()


def test_masked_published_tables_pass_and_a_leak_is_caught(tmp_path):
    run_dir = tmp_path / "outputs" / "segmentation" / "20250101T000000.000Z-aaaaaa"
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "full_name": ["张三丰", "Zhang Wei"], "email": ["zw1987@example.com", None], "phone": ["13800138000", None]}
    )
    results.save_table(privacy.mask_frame(customers), "action_list", output_dir=run_dir)
    (run_dir / "report.html").write_text("<p>张* 138****8000 z***@example.com</p>", encoding="utf-8")
    assert scan(tmp_path / "outputs", KNOWN) == {}
    results.save_table(customers, "raw_contacts", output_dir=run_dir)
    leaks = scan(tmp_path / "outputs", KNOWN)
    assert set(leaks) == {f"segmentation/{run_dir.name}/tables/raw_contacts.csv", f"segmentation/{run_dir.name}/tables/raw_contacts.parquet"}


def test_analyst_area_files_are_not_scanned(tmp_path):
    (tmp_path / "stdout.txt").write_text("13800138000", encoding="utf-8")
    (tmp_path / "kpi.ipynb").write_text("13800138000", encoding="utf-8")
    assert stakeholder_files(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# slow: a demo run of every notebook, then every stakeholder-facing file under outputs/


def demo_personal_values() -> PersonalValues:
    """Every name, e-mail and phone of the demo: canonical (ground truth) and as spelled in the raw exports."""
    persons = pd.read_parquet(paths.ground_truth_dir() / "persons.parquet", columns=["full_name", "email", "phone"])
    known = PersonalValues().add(names=persons["full_name"], emails=persons["email"], phones=persons["phone"])
    for frame in sources.read_sources(table="customers").values():
        known.add(
            names=frame.get("full_name", pd.Series(dtype="object")),
            emails=frame.get("email", pd.Series(dtype="object")),
            phones=frame.get("phone", pd.Series(dtype="object")),
        )
    return known


@pytest.mark.slow
def test_no_raw_personal_data_in_stakeholder_files_after_a_demo_run(demo_home):
    from crm_analytics import runner

    analyses = runner.list_analyses()
    assert "dashboard" in analyses
    outcomes, refused = [], {}
    for analysis in analyses:  # one by one: a notebook the runner refuses must not stop the others
        try:
            outcomes.append(runner.run_analysis(analysis, cell_timeout=300, run_timeout=600, write_index=analysis == analyses[-1]))
        except runner.RunnerError as exc:
            refused[analysis] = str(exc)
    assert "dashboard" in {r.analysis for r in outcomes if r.ok}, ([(r.analysis, r.status, r.error_message) for r in outcomes], refused)
    known = demo_personal_values()
    assert len(known.emails) > 1000 and len(known.phones) > 1000 and known.cjk_names
    files = stakeholder_files(paths.outputs_dir())
    assert any(p.name == "report.html" for p in files) and any(p.suffix == ".parquet" for p in files)
    assert scan(paths.outputs_dir(), known) == {}

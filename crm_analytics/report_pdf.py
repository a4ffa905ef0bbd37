"""Reports as PDF, for archiving and e-mail: a run's ``report.html`` printed by headless Chromium.

The run's report is never changed. A temporary copy gets a print stylesheet (:data:`PRINT_CSS`: page
breaks never cut a figure, an image or a table row; table headers repeat on every page; tables use a
smaller type and wrap their cells to the page width, and a table too wide for a page is replaced by its
turned copy, ``tables.PRINT_CLASS``) and loses its
scripts (the notebook exporter's scripts come from other hosts, and a printed report needs none: its
figures are inline PNGs), then Debian's Chromium prints it with ``--print-to-pdf``. Nothing is
fetched from another host.

Chromium is the ``chromium`` executable on the ``PATH`` (Debian package ``chromium``), or the file
named by the ``CRM_ANALYTICS_CHROMIUM`` environment variable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ENV = "CRM_ANALYTICS_CHROMIUM"
CHROMIUM_PACKAGE = "chromium"  # the Debian package of the browser
PDF_NAME = "report.pdf"
# headless, quiet, no calls home: how the project runs Chromium (the browser tests launch it the same way)
HEADLESS_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CHROMIUM_ARGS = (*HEADLESS_ARGS, "--no-pdf-header-footer")
DEFAULT_TIMEOUT_S = 180.0

PRINT_CSS = """
@page { size: A4; margin: 14mm 12mm; }
@media print {
  figure, img, svg, tr, pre, blockquote, .jp-OutputArea-output, .jp-RenderedImage { break-inside: avoid; page-break-inside: avoid; }
  h1, h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  thead { display: table-header-group; }
  img, svg { max-width: 100% !important; height: auto !important; }
  table { max-width: 100%; font-size: 8pt !important; }
  th, td { white-space: normal !important; overflow-wrap: anywhere; padding: 1pt 3pt !important; }
  .jp-OutputArea-output, .jp-RenderedHTMLCommon, .table-scroll { overflow: visible !important; }
  table.people-table { font-size: 7pt !important; }
  .table-scroll:has(+ .table-print) { display: none !important; }
  .table-print { display: block !important; }
  body { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_REMOTE_STYLESHEET = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)


class PdfError(RuntimeError):
    """A report cannot be printed: no Chromium, no report, or Chromium failed (the message says which)."""


def find_chromium() -> Path:
    """Return the Chromium executable: ``CRM_ANALYTICS_CHROMIUM`` when set, else ``chromium`` on the ``PATH``.

    Raises
    ------
    PdfError
        When there is none, naming the Debian package to install.
    """
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return Path(configured)
        raise PdfError(f"{CHROMIUM_ENV}={configured} is not an executable file; unset it to use chromium from the PATH "
                       f"(Debian package {CHROMIUM_PACKAGE!r}: apt-get install {CHROMIUM_PACKAGE})")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise PdfError(f"Chromium is needed to print reports and is not installed: install the Debian package "
                       f"{CHROMIUM_PACKAGE!r} (apt-get install {CHROMIUM_PACKAGE}, or .ci/system-deps.sh), "
                       f"or set {CHROMIUM_ENV} to a Chromium executable")
    return Path(found)


def printable_html(text: str, *, base: Path) -> str:
    """Return a report's HTML ready to print: no scripts, no remote stylesheets, :data:`PRINT_CSS` added.

    ``base`` (the run folder) becomes the document's base URL, so relative links to the run's files still resolve
    from the temporary copy.
    """
    cleaned = _REMOTE_STYLESHEET.sub("", _SCRIPT.sub("", text))
    head = f'<base href="{base.resolve().as_uri()}/">\n<style media="print">{PRINT_CSS}</style>\n'
    if _HEAD_END.search(cleaned):
        return _HEAD_END.sub(lambda match: head + match.group(0), cleaned, count=1)
    return head + cleaned


def render_pdf(report: str | Path, target: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Print the HTML report ``report`` to the PDF file ``target`` (replaced atomically) and return ``target``.

    Parameters
    ----------
    report : str or Path
        A run's ``report.html``; it is read, never changed.
    target : str or Path
        The PDF to write; its folder must exist.
    timeout : float
        Seconds Chromium may take.

    Raises
    ------
    PdfError
        No Chromium (naming the Debian package), no report, or Chromium failed or wrote no PDF.
    """
    report, target = Path(report), Path(target)
    if not report.is_file():
        raise PdfError(f"no report to print at {report}")
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="crm-pdf-") as folder:
        scratch = Path(folder)
        copy = scratch / "report.html"
        copy.write_text(printable_html(report.read_text(encoding="utf-8"), base=report.parent), encoding="utf-8")
        staging = scratch / "report.pdf"
        command = [str(chromium), *CHROMIUM_ARGS, f"--user-data-dir={scratch / 'profile'}",
                   f"--print-to-pdf={staging}", copy.as_uri()]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not print {report} within {timeout:g} s") from None
        if finished.returncode != 0 or not staging.is_file() or not staging.read_bytes().startswith(b"%PDF"):
            detail = " ".join(finished.stderr.split()[-40:]) if finished.stderr else "no message"
            raise PdfError(f"Chromium could not print {report} (exit code {finished.returncode}): {detail}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(staging, partial)
        os.replace(partial, target)
    return target


def render_run_pdf(run_dir: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Print a run folder's ``report.html`` to ``report.pdf`` beside it (the scheduler's ``pdf: true``)."""
    folder = Path(run_dir)
    return render_pdf(folder / "report.html", folder / PDF_NAME, timeout=timeout)

"""Persisting result tables and figures into a run folder, and reading the latest back."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from crm_analytics import paths, results


def test_save_table_writes_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"segment": ["a", "b"], "n_customers": [3, 4]})
    saved = results.save_table(frame, "segment_sizes", output_dir=tmp_path)
    assert saved == tmp_path / "tables" / "segment_sizes.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(saved), frame)
    assert (tmp_path / "tables" / "segment_sizes.csv").read_text().splitlines()[0] == "segment,n_customers"


def test_named_index_is_kept_unnamed_index_is_not(tmp_path):
    frame = pd.DataFrame({"value": [1, 2]}, index=pd.Index(["x", "y"], name="key"))
    results.save_table(frame, "named", output_dir=tmp_path)
    assert list(pd.read_parquet(tmp_path / "tables" / "named.parquet").columns) == ["key", "value"]
    assert list(frame.columns) == ["value"], "the input is not mutated"


def test_nothing_is_written_without_an_output_dir(tmp_path):
    assert results.save_table(pd.DataFrame({"a": [1]}), "t", output_dir="") is None
    fig = plt.figure()
    assert results.save_figure(fig, "f", output_dir=None) is None
    plt.close(fig)


def test_saved_paths_display_nothing_in_a_notebook(tmp_path):
    saved = results.save_table(pd.DataFrame({"a": [1]}), "t", output_dir=tmp_path)
    assert saved._ipython_display_() is None
    assert saved.exists()


def test_figure_is_written_as_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    saved = results.save_figure(fig, "line", output_dir=tmp_path)
    plt.close(fig)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shown_figure_is_the_written_png_at_the_inline_size_and_is_closed(tmp_path, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2, 3], [3, 1, 2])
    path = results.show_figure(fig, "trend", output_dir=tmp_path, dpi=150)
    assert path == tmp_path / "figures" / "trend.png"
    (image,) = shown
    assert image.data == path.read_bytes()
    assert image.width == round(int.from_bytes(image.data[16:20], "big") * 100 / 150)  # the PNG width, shown at 100 dpi
    assert fig.number not in plt.get_fignums()
    assert results.show_figure(fig, "trend", output_dir="") is None and len(shown) == 2


def test_result_names_become_safe_file_names(tmp_path):
    with pytest.raises(ValueError, match="file name"):
        results.save_table(pd.DataFrame({"a": [1]}), "../escape", output_dir=tmp_path)


def test_load_latest_table_reads_the_latest_run_and_explains_its_absence(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="crm-analytics run segmentation"):
        results.load_latest_table("segmentation", "segment_sizes")
    run = tmp_path / "outputs" / paths.default_dataset() / "segmentation" / "run1"
    results.save_table(pd.DataFrame({"a": [1]}), "segment_sizes", output_dir=run)
    (tmp_path / "outputs" / paths.default_dataset() / "segmentation" / "latest").symlink_to(run)
    assert results.load_latest_table("segmentation", "segment_sizes")["a"].tolist() == [1]


def test_latest_pointer_file_is_followed_like_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    run = tmp_path / "outputs" / paths.default_dataset() / "kpi" / "20260101T000000.000Z-abc123"
    results.save_table(pd.DataFrame({"a": [2]}), "kpi_values", output_dir=run)
    (tmp_path / "outputs" / paths.default_dataset() / "kpi" / "latest").write_text(run.name + "\n")
    assert paths.latest_run_dir("kpi") == run
    assert results.load_latest_table("kpi", "kpi_values")["a"].tolist() == [2]


def test_warnings_are_shown_and_recorded_for_the_run(tmp_path, capsys):
    results.warn("too little data (n = 3 repeat customers, needs 20)", output_dir=tmp_path, section="BG/NBD")
    results.warn("fit did not converge", output_dir=tmp_path, kind="not_converged")
    results.warn("nothing persisted", output_dir="")
    assert results.read_warnings(tmp_path) == [
        {"kind": "too_little_data", "section": "BG/NBD", "message": "too little data (n = 3 repeat customers, needs 20)"},
        {"kind": "not_converged", "section": "", "message": "fit did not converge"},
    ]
    assert "Warning (BG/NBD):" in capsys.readouterr().out
    with pytest.raises(ValueError, match="warning kind 'oops'"):
        results.warn("x", output_dir=tmp_path, kind="oops")


def test_a_run_without_warnings_has_none(tmp_path):
    assert results.read_warnings(tmp_path) == []

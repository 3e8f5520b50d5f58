"""The Colab quickstart notebook runs top to bottom on CPU (tiny step count)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu_quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("GENART_NOTEBOOK_STEPS", "4")
    monkeypatch.setenv("GENART_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "cpu device(s)" in text and "Done: step 4" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grid, inline
    assert "per device" in text
    assert os.path.isfile(tmp_path / "run" / "samples" / "final.png")
    assert "round 1: liked [0, 3], disliked [1]" in text  # the feedback cells
    assert os.path.isfile(tmp_path / "run" / "feedback" / "round_002.png")
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # grid + two rounds

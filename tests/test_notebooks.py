"""The notebooks: committed without outputs, and executed top to bottom (tiny settings) with nbclient.

Each notebook runs in a fresh kernel of this interpreter (a kernelspec written into a temporary directory, so
the kernel never picks up another Python from PATH), with ``GNS_NOTEBOOK_TINY=1``, which shrinks steps, episodes,
widths and data to seconds. A cell that raises fails the test.
"""

import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
# Notebook -> the least number of plots (image/png outputs) it must show.
NOTEBOOKS = {"quickstart.ipynb": 5, "reuse_ppo_gcn.ipynb": 2}
KERNEL_NAME = "gns-jax-notebook-test"
CELL_TIMEOUT_S = 600


def read(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_folder_holds_exactly_the_tested_notebooks():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebook_has_no_outputs(name):
    nb = read(name)
    assert nb.nbformat == 4
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: code cell {i} has outputs; strip them before committing"
            assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{name}: widget state in the metadata; strip it before committing"


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    """A kernelspec for this very interpreter, in a temporary prefix (nothing is installed system-wide)."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL_NAME, prefix=str(prefix))
    manager = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    assert manager.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return manager


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_executes_in_tiny_setting(name, kernel_spec_manager, tmp_path, monkeypatch):
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    monkeypatch.setenv("GNS_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("GNS_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    monkeypatch.setenv("GNS_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = read(name)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, when a cell fails

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert outputs[-1].text.strip() == sys.executable  # the kernel ran this interpreter
    plots = sum("image/png" in o.get("data", {}) for o in outputs)
    assert plots >= NOTEBOOKS[name], f"{name} showed {plots} plots, expected at least {NOTEBOOKS[name]}"
    if name == "quickstart.ipynb":  # its files went to the workdir the environment named
        assert (tmp_path / "workdir" / "agent" / "checkpoints").is_dir()

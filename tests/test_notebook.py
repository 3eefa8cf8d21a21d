"""notebooks/quickstart.ipynb runs top to bottom on CPU (short training, small evaluation) and shows the
one-step joint histograms and the accuracy table; the committed file has no stored outputs."""

import os
import sys

import nbformat
from conftest import FAST_COMPILE, REPO
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")
KERNEL = "vmd-quickstart-test"


def test_committed_notebook_is_valid_and_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.id


def _outputs(nb):
  return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
  # A kernel spec of this interpreter, first on the kernel search path: the kernel is this venv's python.
  write_kernel_spec(str(tmp_path / "jupyter" / "kernels" / KERNEL))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # the kernel spec search creates it
  workdir = tmp_path / "work"
  workdir.mkdir()
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=FAST_COMPILE,
    VMD_QUICKSTART_STEPS="20",
    VMD_QUICKSTART_SAMPLES="200",
    VMD_QUICKSTART_BOUND_EXAMPLES="8",
    VMD_QUICKSTART_EXAMPLES="1000",
    VMD_QUICKSTART_NFES="1",
    VMD_QUICKSTART_DATA_DIR=str(tmp_path / "tfds"),
    MPLCONFIGDIR=str(tmp_path / "matplotlib"),
  )
  env.pop("VMD_QUICKSTART_WORKDIR", None)  # the default, runs/quickstart, inside the kernel's cwd
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel python:', sys.executable)"))
  client = NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(workdir)}})
  client.execute(env=env)  # raises CellExecutionError on the first failing cell

  outputs = _outputs(nb)
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert f"kernel python: {sys.executable}" in text
  assert "acc@nfe1" in text and "| d1 | mdm | 20 |" in text and "| d1 | vmd | 20 |" in text
  images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 1 and len(images[0].data["image/png"]) > 1000
  runs = workdir / "runs" / "quickstart"
  for name in ("d1_mdm", "d1_vmd"):
    assert (runs / name / "results.json").exists()
  assert (runs / "joint_nfe1_d1.png").exists()

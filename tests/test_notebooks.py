"""The notebooks run top to bottom on CPU without network, and the outputs stored in them are current.

Executing them is a test of model.py and of the formulas, because the notebooks assert: in
transformer_sizing.ipynb, the hand-derived parameter counts == GPT(...).get_num_params() and the model's tensors
per component, the FLOPs count == flops_per_token() less its non-matmul parameters, the activation-memory
formula == the bytes autograd really saves (fp32 and bf16 autocast), AdamW state == 8 bytes per parameter and
the MFU arithmetic == estimate_mfu(); in scaling_laws.ipynb, Chinchilla's closed-form compute-optimal N and D ==
a numerical minimisation. Any failing assert or other cell error fails the test, and so do stored outputs that
differ from a fresh run (someone changed the code or the notebook without re-running and saving it).
"""

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT


def stdout_of_cells(nb):
    return [''.join(out.text for out in cell.outputs if out.output_type == 'stream' and out.name == 'stdout')
            for cell in nb.cells if cell.cell_type == 'code']


@pytest.mark.slow
@pytest.mark.parametrize('name', ['transformer_sizing.ipynb', 'scaling_laws.ipynb'])
def test_notebook_runs_and_outputs_are_current(name):
    stored = nbformat.read(ROOT / name, as_version=4)
    fresh = nbformat.read(ROOT / name, as_version=4)
    # the kernel starts in the repo root, so the notebooks import model.py as Jupyter would run them there;
    # a cell error raises CellExecutionError with the cell's traceback
    NotebookClient(fresh, timeout=120, kernel_name='python3', resources={'metadata': {'path': str(ROOT)}}).execute()
    for i, (old, new) in enumerate(zip(stdout_of_cells(stored), stdout_of_cells(fresh))):
        assert old == new, f"{name}: code cell {i} printed something else than its stored output; re-run and save it\n{new}"

"""perf.keep_freed_memory: glibc stops handing each step's freed memory back to the kernel."""

import json
import platform
import statistics
import subprocess
import sys

import pytest

from peftbench.run import allocator

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc malloc only")

_FREE = """
import json, sys, torch
from peftbench.run import allocator
from peftbench.measure.memory import current_rss_mb
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
x = torch.ones(4 * 2**20)  # 16 MiB: glibc's default maps it on its own and unmaps it on free
held = current_rss_mb()
del x
print(json.dumps(held - current_rss_mb()))
"""

# The bench's hand-written loop on the bench model (lora, batch 16). Under glibc's defaults how
# many pages a step faults in again varies from run to run (0–5600 here); with the setting a step
# faults now and then at most.
_STEPS = """
import json, resource, sys, tempfile
from pathlib import Path
from peftbench.run import allocator
from peftbench.cli.bench import build_setup, run_a
assert allocator.keep_freed_memory()
s = build_setup("lora", 12, Path(tempfile.mkdtemp()))
run_a(s)  # warm: optimizer state
faults = []
def note(model, step):
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
s.plan.method.on_train_step_end = note
run_a(s)
print(json.dumps([b - a for a, b in zip(faults, faults[1:])]))
"""


def _child(code: str, *args: str):
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


@glibc
def test_freed_memory_stays_for_reuse_instead_of_going_back_to_the_kernel():
    assert _child(_FREE, "default") > 12  # MiB returned at once: the next step faults them in again
    assert _child(_FREE, "keep") < 2


@glibc
def test_training_steps_stop_faulting_pages_in(data_dir):  # the bench model reads SST-2's labels
    faults = _child(_STEPS)
    assert len(faults) == 11
    assert statistics.median(faults) == 0, faults


@glibc
def test_release_returns_free_memory_to_the_kernel():
    import torch

    from peftbench.measure.memory import current_rss_mb

    assert allocator.keep_freed_memory()
    xs = [torch.ones(2 * 2**20) for _ in range(8)]  # 64 MiB in heap blocks
    del xs
    kept = current_rss_mb()
    assert allocator.release()
    assert current_rss_mb() < kept - 32


def test_knob_is_a_callback_of_every_run_and_can_be_turned_off(tmp_path):
    from peftbench.cli.bench import bench_overrides, build_setup, lightning_path
    from peftbench.config.compose import compose
    from peftbench.config.knobs import check_knobs
    from peftbench.errors import ConfigError
    from peftbench.run.callbacks import KeepFreedMemory

    with pytest.raises(ConfigError, match="perf.keep_freed_memory"):
        check_knobs(compose([*bench_overrides("lora", 2), "perf.keep_freed_memory=maybe"],
                            output_dir=str(tmp_path)))
    for mode, expected in (("keep", True), ("default", False)):
        _, parts = lightning_path(build_setup("lora", 2, tmp_path / mode, allocator=mode))
        cbs = parts.trainer.callbacks
        assert any(isinstance(c, KeepFreedMemory) for c in cbs) is expected
        if expected:  # before the memory callback resets its peak
            assert isinstance(cbs[0], KeepFreedMemory)


def test_fit_frees_the_last_steps_gradients(tmp_path):
    """Lightning zeroes gradients at a step's start: the last step's must not live on through evaluation."""
    from peftbench.cli.bench import build_setup, run_b

    s = build_setup("full", 3, tmp_path)
    stamps = run_b(s)
    assert len(stamps) == 3
    assert all(p.grad is None for p in s.model.parameters())

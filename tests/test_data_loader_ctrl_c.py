"""Ctrl-C while the training loader forks its worker processes.

A terminal's Ctrl-C reaches the trainer and its loader workers at once. If it lands while a
worker is being forked, CPython raises the trainer's KeyboardInterrupt inside fork's
after-in-parent hook (logging's lock release), where it is printed as "Exception ignored" and
lost, and the new worker dies of its own copy: training went on until the loader found the
worker dead, then failed with a traceback. These tests put the signal exactly there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch.utils.data import Dataset
    from e2e_asr.data.loader import make_loader

    class Numbers(Dataset):
        def __len__(self):
            return 6
        def __getitem__(self, i):
            return torch.tensor([i])

    # Python's own Ctrl-C handler, as a trainer started from a terminal has it (a test run
    # started as a shell's background job inherits SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parent = os.getpid()
    # Ctrl-C exactly while the workers are forked: to the trainer (after fork, in the parent)
    # and to each new worker (after fork, in the child), as the terminal sends it to both
    os.register_at_fork(
        after_in_parent=lambda: os.kill(parent, signal.SIGINT),
        after_in_child=lambda: os.kill(os.getpid(), signal.SIGINT),
    )
    try:
        got = [int(b) for b in make_loader(Numbers(), num_workers=2)]
    except KeyboardInterrupt:
        print("trainer interrupted")
        sys.exit(130)
    print("trainer not interrupted, got", got)
    """
)


def test_ctrl_c_during_worker_start_interrupts_the_trainer_and_spares_the_workers() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 130, (proc.stdout, proc.stderr[-3000:])
    assert "trainer interrupted" in proc.stdout
    # nothing lost and nothing printed on the way: no "Exception ignored", no dead worker
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr

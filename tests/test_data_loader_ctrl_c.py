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


SCRIPT_MID_BATCH = textwrap.dedent(
    """
    import os, signal, sys, time, traceback
    import torch
    from torch.utils.data import Dataset
    from e2e_asr.data.loader import make_loader

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as above

    class Numbers(Dataset):
        def __len__(self):
            return 6
        def __getitem__(self, i):
            if i == 2:  # the trainer is waiting for this batch: Ctrl-C now
                time.sleep(0.5)
                os.kill(os.getppid(), signal.SIGINT)
                time.sleep(0.5)
            return torch.tensor([i])

    got = []
    try:
        for b in make_loader(Numbers(), num_workers=1):
            got.append(int(b))
    except KeyboardInterrupt as exc:
        where = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
        inside = any("torch/utils/data" in f for f in where)
        print("interrupted", "inside the loader" if inside else "between batches", got)
        sys.exit(130)
    print("not interrupted", got)
    """
)


def test_ctrl_c_while_a_batch_is_awaited_arrives_between_batches() -> None:
    """Ctrl-C while the trainer waits for a batch: the batch is received whole (the worker's
    sending is never cut off), then the KeyboardInterrupt comes, outside DataLoader's code.
    Before, it came inside DataLoader's wait ("inside the loader")."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT_MID_BATCH], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 130, (proc.stdout, proc.stderr[-3000:])
    assert proc.stdout.startswith("interrupted between batches"), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr

"""Third-party output (smplx's notice on stdout, torch.onnx
and ONNX Runtime warnings, Ray's logs) is hidden unless ``-v``: the terminal shows motionfleet's
progress and report only."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

NOISY_LOGGERS = ("torch.onnx", "torch._dynamo", "torch._inductor", "onnxscript", "onnx_ir", "ray", "smplx", "filelock")


@contextlib.contextmanager
def quiet_third_party(verbose: bool = False):
    if verbose:
        yield
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 goes to /dev/null within the block: C++ libraries (Ray's core) log there,
    past Python's ``sys.stderr``. For short calls only: every thread's output to it is lost."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

"""What both command lines share (gptviz/cli.py, gptviz/lab/cli.py): one-line errors, argument types, JSON
values, loading the model (a Hub download's bytes on stderr).

Every input error leaves as a ``UsageError``: gptviz/cli.py prints it as one line on stderr and
exits with ``EXIT_USAGE``, whichever command raised it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, NoReturn

from gptviz import display

EXIT_USAGE = 2  # argparse's own status for bad arguments; every input error uses it


class UsageError(Exception):
    """An input the user must change; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; keep it to the one error line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def int_at_least(minimum: int):
    """An argparse type: a whole number ≥ ``minimum``, with a one-line reason otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def threads(text: str) -> int:
    """An argparse type: torch CPU threads, 1 to the cores this process may use (more only make torch's
    threads wait on each other: 999 ran the lab about 9× slower, without a word)."""
    from gptviz.serve import cores

    value, most = positive_int(text), cores()
    if value > most:
        raise argparse.ArgumentTypeError(f"at most {most}, the CPU cores this process may use (got {value}); "
                                         "more threads than cores only slow torch down")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` parse as floats, but no setting takes them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def plain(value: Any) -> Any:
    """JSON-safe Python values: numpy scalars unboxed, NaN/inf as null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_json(lm) -> dict:
    """A report's "model" entry: what was asked for, what was loaded, and its shape (``LoadedModel.info``)."""
    return {"source": lm.source, "name": lm.name, "dtype": lm.dtype, **lm.info}


def quiet_torch(threads: int | None) -> None:
    """Before a command loads a model: stderr stays free for a download's bytes and the one error line."""
    import huggingface_hub
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings: the outcome is reported instead
    if threads is not None:
        torch.set_num_threads(threads)


def load_model(args: argparse.Namespace):
    """``--model`` in ``--dtype`` on ``--threads``, for every command; a Hub download's bytes go to stderr."""
    from gptviz.models import load

    quiet_torch(args.threads)
    return load(args.model, args.dtype, on_progress=DownloadLine(sys.stderr))


class DownloadLine:
    """A Hub download's bytes on ``stream``: one line redrawn in a terminal; in a log, a line per file and per few s."""

    def __init__(self, stream, every: float = 2.0):
        self.stream, self.tty = stream, stream.isatty()
        self.pause = 0.2 if self.tty else every  # seconds between two lines about the same file
        self.last, self.name, self.finished = -math.inf, None, False

    def __call__(self, done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if self.finished or (done < total and name == self.name and now - self.last < self.pause):
            return
        self.last, self.name, self.finished = now, name, done >= total
        if self.finished:
            text, end = f"downloaded {display.size(total)}", "\n"
        else:
            text, end = f"downloading {name}: {display.download(done, total)}", "" if self.tty else "\n"
        print(("\r\033[K" if self.tty else "") + text, end=end, file=self.stream, flush=True)

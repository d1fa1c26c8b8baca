"""What the server's jobs do: a student's first result and its timing refinement, as tasks any process can run.

A task is called with its job (``task(job)``) in the process that asked for it (the in-process server), or
rebuilt from ``task.kind`` and ``task.wire()`` (plain JSON) by a worker process (the Redis server,
gptviz/serve/redis.py), which looks its kind up in ``KINDS``. A kind also says how its results and progress
cross processes: the safe format of gptviz/serve/codec.py, never pickle. The labs' reports travel the same
way (``CacheLab``, ``DivergenceLab``). A task whose ``kind`` is None (a plain function) runs only in the process
that asked for it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import gptviz
from gptviz import divergence, hub, lab, serve
from gptviz.decoding import warm_up
from gptviz.hosting import Policy
from gptviz.ui_state import AppSettings

FIRST_KIND, REFINE_KIND = "first", "refine"  # the kinds a worker process runs (KINDS below)
LAB_KIND, DIVERGENCE_KIND = "lab", "divergence"  # the Cache lab's and the Divergence lab's reports
MODELS_KEPT = 4  # loaded models one worker process keeps, by (source, dtype), like the app's model cache


@dataclass
class Result:
    """What one decode of a student's settings produced, and what the pages need to describe it."""

    settings: AppSettings
    run: gptviz.Run
    model_name: str  # what was actually loaded (the bundled model after a fallback)
    notice: str | None  # why a fallback happened
    seconds: float  # wall time of the decodes so far: the first pass, then each timing pass as it lands
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # one decode's identity, in every process

    def refined(self, run: gptviz.Run, seconds: float) -> Result:
        """The same result with a refined run (more timed passes): same identity, ``seconds`` more wall time."""
        return replace(self, run=run, seconds=self.seconds + seconds)

    def nbytes(self) -> int:
        """Bytes it holds: the traces (attention dominates), and a few numbers per step in the comparison."""
        return sum(t.nbytes() for t in self.run.traces.values()) + 256 * len(self.run.cached.steps)

    def meta(self) -> dict:
        """Everything but the run, as JSON-able data (codec.dumps carries it beside the run)."""
        return {"settings": asdict(self.settings), "model_name": self.model_name, "notice": self.notice,
                "seconds": self.seconds, "run_id": self.run_id}

    @classmethod
    def from_meta(cls, meta: dict, run: gptviz.Run) -> Result:
        return cls(AppSettings(**meta["settings"]), run, meta["model_name"], meta["notice"], float(meta["seconds"]),
                   str(meta["run_id"]))


@dataclass
class Progress:
    """What a decode job reports; every session waiting for the run (or its timing) draws it."""

    done: int  # steps finished over all modes of this job
    total: int
    label: str  # e.g. "first pass · KV cache (new token only): step 3 of 24"
    text: str  # the prompt and the tokens chosen so far
    result: Result | None = None  # a refinement's latest result (after each timing pass), shown at once


# ---- loading models where no Streamlit cache exists (a worker process) --------------------------------------
def load_model(source: str, dtype: str, on_progress: hub.Progress | None = None) -> gptviz.LoadedModel:
    """Load ``source`` the way the app does: this server's policy checked, the bundled model when the Hub is
    out of reach (with a notice), warmed up so the first run's cached mode pays no one-time costs."""
    policy = Policy.from_env()
    policy.check_source(source)  # a shared server loads only its allow-listed models
    lm = gptviz.load(source, dtype, fallback_to_bundled=True, allow_local=policy.allow_local, on_progress=on_progress)
    warm_up(lm.model, lm.tokenizer)
    lm.threads = serve.fastest_threads(lm.model, lm.tokenizer, serve.set_torch_threads(serve.default_slots()))
    return lm


def _threads(lm: gptviz.LoadedModel) -> None:
    """Run this job's decodes with ``lm``'s own thread count: this job's thread's own (torch's count is per thread
    once set), in which its decoders run (gptviz/lockstep.py), whatever another job sets meanwhile."""
    if lm.threads is not None:
        serve.use_threads(lm.threads)


_models: OrderedDict[tuple[str, str], gptviz.LoadedModel] = OrderedDict()
_models_lock = threading.Lock()


def cached_model(source: str, dtype: str) -> gptviz.LoadedModel:
    """``load_model`` once per (source, dtype) in this process (a worker's model cache)."""
    with _models_lock:
        if (source, dtype) not in _models:
            _models[(source, dtype)] = load_model(source, dtype)
            while len(_models) > MODELS_KEPT:
                _models.popitem(last=False)
        _models.move_to_end((source, dtype))
        return _models[(source, dtype)]


# ---- the two tasks ----------------------------------------------------------------------------------------
@dataclass
class FirstPass:
    """A student's first result: cached + recompute, attention recorded; everything the pages show but refined
    timing, which ``Refine`` adds behind it."""

    settings: AppSettings
    model_name: str  # the model the asking process loaded for settings.source: a worker must decode with it
    limits: gptviz.Limits  # what one run may use on this server (hosting.Policy)
    lm: gptviz.LoadedModel | None = field(default=None, repr=False)  # the asking process's model (not sent)
    kind: str = FIRST_KIND

    def wire(self) -> dict:
        return {"settings": asdict(self.settings), "model_name": self.model_name,
                "limits": asdict(self.limits)}

    def __call__(self, job) -> Result:
        lm = self.lm or _model_named(self.settings.source, self.settings.dtype, self.model_name)
        settings, decode = self.settings, self.settings.decode_settings()
        total, produced = decode.steps(first_pass=True), []

        def on_step(mode: str, step: int, token_id: int) -> None:
            if mode == gptviz.Mode.CACHED:
                produced.append(lm.tokenizer.decode([token_id]))
            done = (job.progress.done if job.progress else 0) + 1
            job.report(Progress(done, total, f"first pass · {gptviz.Mode(mode).label}: step {step + 1} of "
                                             f"{settings.max_new_tokens}", settings.prompt + "".join(produced)))
            job.checkpoint()  # a first result never steps aside; it stops only when the server does

        _threads(lm)
        started = time.perf_counter()
        run = gptviz.start(lm.model, lm.tokenizer, settings.prompt, decode, model_name=lm.name, on_step=on_step,
                           limits=self.limits)
        return Result(settings, run, lm.name, lm.notice, time.perf_counter() - started)


@dataclass
class Refine:
    """Timing passes of a first result until they agree (gptviz.refine), each reported as it lands and stepping
    aside at every step for other students' first results (job.checkpoint)."""

    result: Result  # the first result (or a partly refined one) whose timing this refines
    first_key: str  # serve.key_id of the request that produced it: where a worker finds it in the store
    lm: gptviz.LoadedModel | None = field(default=None, repr=False)
    kind: str = REFINE_KIND

    def wire(self) -> dict:
        return {"first_key": self.first_key, "run_id": self.result.run_id}

    def __call__(self, job) -> Result:
        result = self.result
        lm = self.lm or _model_named(result.settings.source, result.settings.dtype, result.model_name)
        per_pass = result.run.settings.steps(first_pass=False)

        def on_step(mode: str, step: int, token_id: int) -> None:
            done = (job.progress.done if job.progress else 0) + 1
            job.report(Progress(done, per_pass, f"{result.run.timing.describe()} · step {step + 1} of "
                                                f"{result.settings.max_new_tokens}", "", result))
            job.checkpoint()

        _threads(lm)
        while not result.run.timing.complete:
            started = time.perf_counter()
            run = gptviz.refine(lm.model, lm.tokenizer, result.run, on_step=on_step)
            result = result.refined(run, time.perf_counter() - started)
            job.report(Progress(0, per_pass, result.run.timing.describe(), "", result))
        return result


@dataclass
class _Lab:
    """One lab's report for a model and settings, run where the model is (a worker, or this process)."""

    settings: Any  # the lab's settings (lab.LabSettings, divergence.DivergenceSettings)
    source: str  # what the student picked (a worker loads it the app's way)
    dtype: str
    model_name: str  # what the asking process loaded for it: a worker must run the same model
    lm: gptviz.LoadedModel | None = field(default=None, repr=False)  # the asking process's model (not sent)
    run: ClassVar[Callable]  # the lab itself: run(model, tokenizer, settings) -> its report
    settings_type: ClassVar[type]  # what ``settings`` is, to rebuild it from JSON
    report_type: ClassVar[type]  # what ``run`` returns, to load it from the store

    def wire(self) -> dict:
        from gptviz.serve import codec

        return {"settings": codec.to_json(self.settings), "source": self.source, "dtype": self.dtype,
                "model_name": self.model_name}

    @classmethod
    def from_wire(cls, args: dict) -> _Lab:
        """``wire()`` undone in a worker (no model: it loads ``source`` itself)."""
        from gptviz.serve import codec

        return cls(codec.from_json(args["settings"], cls.settings_type), str(args["source"]), str(args["dtype"]),
                   str(args["model_name"]))

    def __call__(self, job) -> Any:
        lm = self.lm or _model_named(self.source, self.dtype, self.model_name)
        _threads(lm)
        return type(self).run(lm.model, lm.tokenizer, self.settings)


@dataclass
class CacheLab(_Lab):
    """The Cache lab (gptviz.lab.run): every cache variant on the same tokens."""

    settings: lab.LabSettings
    kind: str = LAB_KIND
    quanto: str = ""  # the asking process's quanto.state(), part of its key: "ready" means int4/int2 must run here
    run: ClassVar[Callable] = staticmethod(lab.run)
    settings_type: ClassVar[type] = lab.LabSettings
    report_type: ClassVar[type] = lab.LabReport

    def wire(self) -> dict:
        return {**super().wire(), "quanto": self.quanto}

    @classmethod
    def from_wire(cls, args: dict) -> CacheLab:
        return replace(super().from_wire(args), quanto=str(args["quanto"]))

    def __call__(self, job) -> lab.LabReport:
        if self.lm is None and self.quanto == "ready":  # a worker: its own build may still be finishing
            from gptviz.lab import quanto

            quanto.wait_for_build()
        return super().__call__(job)


@dataclass
class DivergenceLab(_Lab):
    """The Divergence lab (gptviz.divergence.run): every case against the prompt decoded alone."""

    settings: divergence.DivergenceSettings
    kind: str = DIVERGENCE_KIND
    run: ClassVar[Callable] = staticmethod(divergence.run)
    settings_type: ClassVar[type] = divergence.DivergenceSettings
    report_type: ClassVar[type] = divergence.DivergenceReport


def _model_named(source: str, dtype: str, name: str) -> gptviz.LoadedModel:
    """This process's model for ``source``, refused when it is not the model the asking process decoded with
    (e.g. the app fell back to the bundled model while this worker reaches the Hub)."""
    lm = cached_model(source, dtype)
    if lm.name != name:
        raise gptviz.DecodeError(f"this worker loads {lm.name} for '{source}', but the app that asked loaded "
                                 f"{name}: give the app and the workers the same models (and the same Hub access).")
    return lm


# ---- how a worker rebuilds tasks, and how their results cross processes -----------------------------------
@dataclass(frozen=True)
class Kind:
    """One kind of task as a worker process sees it, and how its results and progress cross processes."""

    task: Callable[[dict, Callable[[str], Any]], Any]  # (wire args, look up a stored result by key id) -> task
    encode: Callable[[Any], bytes]  # a result -> bytes in the safe format (gptviz/serve/codec.py)
    decode: Callable[[bytes], Any]  # and back
    progress_parts: Callable[[Any], tuple[dict, Any]]  # a progress -> (JSON-able part, a result in it or None)
    progress_from: Callable[[dict, Any], Any]  # and back (the result decoded once, however often progress moves)


def _encode(result: Result) -> bytes:
    from gptviz.serve import codec  # numpy-heavy; only processes that cross results import it

    return codec.dumps({"result": result.meta()}, result.run)


def _decode(data: bytes) -> Result:
    from gptviz.serve import codec

    meta, run = codec.loads(data, expect=gptviz.Run)  # refuses bytes without a run
    if "result" not in meta:
        raise ValueError("not a stored result: its description is missing")
    return Result.from_meta(meta["result"], run)


def _progress_parts(progress: Progress) -> tuple[dict, Result | None]:
    return {"done": progress.done, "total": progress.total, "label": progress.label,
            "text": progress.text}, progress.result


def _progress_from(part: dict, result: Result | None) -> Progress:
    return Progress(int(part["done"]), int(part["total"]), str(part["label"]), str(part["text"]), result)


def _first(args: dict, stored: Callable[[str], Any]) -> FirstPass:
    return FirstPass(AppSettings(**args["settings"]), str(args["model_name"]), gptviz.Limits(**args["limits"]))


def _refine(args: dict, stored: Callable[[str], Any]) -> Refine:
    result = stored(str(args["first_key"]))
    if not isinstance(result, Result) or result.run_id != args["run_id"]:
        raise gptviz.DecodeError("the run whose timing this would refine is no longer stored (a newer run of the "
                                 "same settings replaced it, or the store evicted it): press Run for a fresh one.")
    return Refine(result, str(args["first_key"]))


def _lab_kind(task: type[_Lab]) -> Kind:
    """A lab as a kind: rebuilt from its wire, its report alone in the safe format, no progress."""
    def encode(value) -> bytes:
        from gptviz.serve import codec

        return codec.dumps({}, value)

    def decode(data: bytes):
        from gptviz.serve import codec

        return codec.loads(data, expect=task.report_type)[1]

    return Kind(lambda args, stored: task.from_wire(args), encode, decode, lambda progress: ({}, None),
                lambda part, result: None)


KINDS: dict[str, Kind] = {
    FIRST_KIND: Kind(_first, _encode, _decode, _progress_parts, _progress_from),
    REFINE_KIND: Kind(_refine, _encode, _decode, _progress_parts, _progress_from),
    LAB_KIND: _lab_kind(CacheLab),
    DIVERGENCE_KIND: _lab_kind(DivergenceLab),
}

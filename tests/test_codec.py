"""Results as bytes (gptviz/serve/codec.py): real runs of the bundled model come back equal, field by field and
page table by page table, and every kind of bad archive is refused with a CodecError that says what is wrong."""

import builtins
import dataclasses
import io
import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

import gptviz
from gptviz import DecodeSettings, Mode
from gptviz.serve import codec
from gptviz.serve.codec import CodecError
from gptviz.ui_state import step_table

PROMPT = "ROMEO.\nBut soft"
FLAG = "_gptviz_codec_unpickled"  # what the crafted pickle sets on builtins when it runs


@pytest.fixture(scope="module")
def lm():
    return gptviz.load("bundled")


@pytest.fixture(scope="module")
def runs(lm):
    """One of each kind of run a server stores: first pass only, refined, sampled, static, without attention."""
    model, tok = lm.model, lm.tokenizer
    first = gptviz.start(model, tok, PROMPT, DecodeSettings(max_new_tokens=5, timed_passes=2), model_name=lm.name)
    return {
        "greedy dynamic, first pass": first,
        "after refine": gptviz.refine(model, tok, first),
        "sampled static, whole": gptviz.run(model, tok, PROMPT, DecodeSettings(
            max_new_tokens=4, sampling="sample", temperature=0.8, top_k=20, top_p=0.9, seed=7, cache="static",
            timed_passes=2), model_name=lm.name),
        "no attention": gptviz.run(model, tok, PROMPT, DecodeSettings(max_new_tokens=3, record_attention=False,
                                                                    timed_passes=1), model_name=lm.name),
    }


@pytest.fixture(scope="module")
def data(runs):
    return codec.dumps_run(runs["after refine"])


def assert_same(a, b, path="run"):
    """Equal and of the same type all the way down: dataclasses field by field, dict keys in order, arrays by
    dtype, shape and value."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} came back as {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} came back as {list(b)}"
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb, f"{path} key")
            assert_same(va, vb, f"{path}.{ka}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} came back as {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} came back as {b!r}"


@pytest.mark.parametrize("kind", ["greedy dynamic, first pass", "after refine", "sampled static, whole",
                                  "no attention"])
def test_a_run_comes_back_equal(runs, kind):
    run = runs[kind]
    data = codec.dumps_run(run)
    back = codec.loads_run(data)
    assert_same(run, back)
    pd.testing.assert_frame_equal(step_table(back), step_table(run))
    assert back.summary().to_dict() == run.summary().to_dict()
    assert back.timing.describe() == run.timing.describe()
    assert codec.dumps_run(back) == data  # the same result, the same bytes


def test_the_runs_are_the_kinds_they_claim(runs):
    """The round trips above cover what they say: provisional passes, a refined timing, a mode timed only in a
    refinement, a static cache, float16 packed attention, a run with none."""
    first, refined = runs["greedy dynamic, first pass"], runs["after refine"]
    assert first.cached.provisional_passes == 1 and not first.timing.complete
    assert refined.timing.passes == 2 and len(refined.cached.steps[0].pass_seconds) == 2
    assert refined.traces[Mode.RECOMPUTE_LAST].attention is None and Mode.RECOMPUTE_LAST in refined.comparison.agreement
    assert refined.cached.attention.dtype == torch.float16 and refined.cached.attention.ndim == 3
    assert refined.comparison.attn_row_delta is not None and np.isnan(refined.comparison.slice_delta[0])
    sampled = runs["sampled static, whole"]
    assert sampled.settings.sampling == "sample" and sampled.cached.cache_kind == "static" and sampled.timing.complete
    assert all(t.attention is None for t in runs["no attention"].traces.values())


def test_a_first_pass_read_back_refines_like_the_original(lm, runs):
    """What a second process does with a first result it took from the store: refine its timing."""
    first = runs["greedy dynamic, first pass"]
    again = gptviz.refine(lm.model, lm.tokenizer, codec.loads_run(codec.dumps_run(first)))
    assert again.timing.passes == 2 and again.cached.token_ids == first.cached.token_ids
    assert set(again.traces) == set(runs["after refine"].traces) == set(Mode)
    assert torch.equal(again.recompute.attention, first.recompute.attention)
    assert all(len(s.pass_seconds) == 2 for s in again.cached.steps)


def test_meta_travels_beside_a_run_or_alone(runs):
    meta = {"app": {"source": "bundled", "max_new_tokens": 5}, "notice": None, "seconds": 1.25, "run_id": "a1",
            "modes": ["cached", "recompute"], "ok": True}
    got, back = codec.loads(codec.dumps(meta, runs["after refine"]))
    assert got == meta
    assert_same(runs["after refine"], back)
    assert codec.loads(codec.dumps(meta, None)) == (meta, None)
    with pytest.raises(CodecError, match="holds no value, not the run asked for"):
        codec.loads_run(codec.dumps(meta, None))


@pytest.mark.parametrize("meta, said", [
    ({"key": ("a", 1)}, r"meta\.key: .*tuple.* pass a list"),
    ({1: "x"}, r"key 1 is not text"),
    ({"n": np.int64(3)}, r"meta\.n: np\.int64\(3\) \(int64\) is not JSON"),
    ({"f": object()}, r"is not JSON"),
])
def test_meta_that_would_not_come_back_equal_is_refused(meta, said):
    with pytest.raises(CodecError, match=said):
        codec.dumps(meta, None)


def test_a_value_of_another_type_than_its_hint_is_refused_on_write(runs):
    run = runs["after refine"]
    wrong = dataclasses.replace(run, comparison=dataclasses.replace(run.comparison,
                                                                    kv_bytes=torch.tensor([1, 2])))
    with pytest.raises(CodecError, match=r"cannot write run\.comparison\.kv_bytes: expected numpy\.ndarray"):
        codec.dumps_run(wrong)
    keyed = dataclasses.replace(run, traces={str(m): t for m, t in run.traces.items()})
    with pytest.raises(CodecError, match=r"run\.traces key: expected Mode, got 'cached'"):
        codec.dumps_run(keyed)


@pytest.fixture(scope="module")
def reports(lm):
    """The two labs' reports a server stores beside runs."""
    from gptviz import divergence, lab

    return {"lab_report": lab.run(lm.model, lm.tokenizer, lab.LabSettings(max_new_tokens=5, window=4, sinks=1)),
            "divergence_report": divergence.run(lm.model, lm.tokenizer,
                                                divergence.DivergenceSettings(max_new_tokens=3))}


@pytest.mark.parametrize("name", ["lab_report", "divergence_report"])
def test_a_lab_s_report_comes_back_equal_and_only_as_what_was_asked(reports, name):
    report = reports[name]
    data = codec.dumps({"n": 1}, report)
    meta, back = codec.loads(data, expect=type(report))
    assert meta == {"n": 1} and back == report  # dataclass equality: every field, every variant or case
    assert isinstance(back.settings, type(report.settings))
    assert codec.dumps({"n": 1}, back) == data
    with pytest.raises(CodecError, match=rf"holds a {name}, not the run asked for"):
        codec.loads_run(data)
    other = next(r for n, r in reports.items() if n != name)
    with pytest.raises(CodecError, match=rf"holds a {name}, not the"):
        codec.loads(data, expect=type(other))


def test_a_type_this_build_does_not_know_is_refused(data):
    with pytest.raises(CodecError, match=r"unknown type 'os_system' \(this build reads run, lab_report"):
        codec.loads(edited(data, lambda top: top.__setitem__("type", "os_system")))
    with pytest.raises(CodecError, match=r"a type names its value and a value has a type"):
        codec.loads(edited(data, lambda top: top.__setitem__("type", None)))
    with pytest.raises(CodecError, match=r"cannot write a dict: a result holds one of run, lab_report"):
        codec.dumps({}, {"run": 1})
    from gptviz.lab import LabReport

    empty = codec.dumps({}, None)  # a kind that asks for a report must not be handed None
    with pytest.raises(CodecError, match=r"holds no value, not the lab_report asked for"):
        codec.loads(empty, expect=LabReport)


def test_settings_travel_as_plain_json_and_are_checked_on_the_way_back(reports):
    from gptviz import lab

    settings = reports["lab_report"].settings
    wire = json.loads(json.dumps(codec.to_json(settings)))
    assert codec.from_json(wire, lab.LabSettings) == settings
    wire["prefix_prompts"] = ["only one"]
    with pytest.raises(CodecError, match=r"LabSettings\.prefix_prompts: expected a list of 2"):
        codec.from_json(wire, lab.LabSettings)


# ---- refusals ----------------------------------------------------------------------------------------------

def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def archive(files: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, raw in files.items():
            zf.writestr(name, raw)
    return out.getvalue()


def edited(data: bytes, edit) -> bytes:
    """``data`` with meta.json changed by ``edit(top)`` in place, every array entry as it was."""
    files = entries(data)
    top = json.loads(files["meta.json"])
    edit(top)
    files["meta.json"] = json.dumps(top).encode()
    return archive(files)


def npy(array, allow_pickle=False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def test_the_editing_helpers_alone_change_nothing(data, runs):
    """The refusals below are caused by their one edit: an archive rebuilt with no edit still loads equal."""
    assert_same(runs["after refine"], codec.loads_run(edited(data, lambda top: None)))


@pytest.mark.parametrize("raw, said", [
    (b"", "not a zip archive"),
    (b"hello, world", r"not a zip archive \(it starts with b'hello, w'\)"),
    (npy(np.arange(3)), "not a zip archive"),  # a bare .npy, not an archive of them
    (b"PK\x03\x04 truncated", "not a readable gptviz result: BadZipFile"),
])
def test_what_is_not_a_zip_is_refused(raw, said):
    with pytest.raises(CodecError, match=said):
        codec.loads(raw)


def test_bytes_are_required():
    with pytest.raises(CodecError, match="a result is bytes, got str"):
        codec.loads("PK\x03\x04")


def test_an_archive_without_meta_is_refused():
    with pytest.raises(CodecError, match=r"no meta\.json in the archive \(it holds x\.npy\)"):
        codec.loads(archive({"x.npy": npy(np.arange(3))}))


@pytest.mark.parametrize("schema, said", [
    (1, r"format version 1; this build of gptviz reads version 2 only"),
    ("2", r"format version '2'; this build"),
    (True, r"format version True; this build"),
    (None, r"no schema version; this build of gptviz reads version 2"),
])
def test_another_schema_version_is_refused(data, schema, said):
    def edit(top):
        if schema is None:
            del top["schema"]
        else:
            top["schema"] = schema
    with pytest.raises(CodecError, match=said):
        codec.loads(edited(data, edit))


def test_a_pickled_object_array_is_refused_and_never_runs(data):
    class Payload:
        def __reduce__(self):  # unpickling this runs code: what a hostile store would send
            return exec, (f"import builtins; builtins.{FLAG} = True",)

    hostile = npy(np.array([Payload()], dtype=object), allow_pickle=True)
    files = entries(data)
    files["run.comparison.kv_bytes.npy"] = hostile
    with pytest.raises(CodecError, match=r"array 'run\.comparison\.kv_bytes' has an object dtype .* refused"):
        codec.loads(archive(files))
    assert not hasattr(builtins, FLAG)
    try:  # the control: the same entry read with pickle allowed does run the payload, so the test can fail
        np.load(io.BytesIO(hostile), allow_pickle=True)
        assert getattr(builtins, FLAG) is True
    finally:
        if hasattr(builtins, FLAG):
            delattr(builtins, FLAG)


@pytest.mark.parametrize("where, said", [
    (lambda run: run["settings"]["modes"].__setitem__(1, "recompute_fast"),
     r"run\.settings\.modes\[1\]: unknown Mode 'recompute_fast' \(this build knows cached, recompute, "
     r"recompute_last\)"),
    (lambda run: run["traces"].__setitem__("fast", run["traces"].pop("recompute")),
     r"run\.traces key: unknown Mode 'fast'"),
    (lambda run: run["traces"]["cached"].__setitem__("mode", "kv"), r"run\.traces\.cached\.mode: unknown Mode 'kv'"),
])
def test_unknown_modes_are_refused(data, where, said):
    with pytest.raises(CodecError, match=said):
        codec.loads(edited(data, lambda top: where(top["value"])))


@pytest.mark.parametrize("where, said", [
    (lambda run: run["settings"].pop("seed"), r"run\.settings: wrong field names \(missing seed\)"),
    (lambda run: run["timing"].__setitem__("colour", "red"), r"run\.timing: wrong field names \(unknown colour\)"),
    (lambda run: run["traces"]["cached"]["steps"][2].pop("top_ids"),
     r"run\.traces\.cached\.steps\[2\]: wrong field names \(missing top_ids\)"),
    (lambda run: run.__setitem__("comment", 1), r"run: wrong field names \(unknown comment\)"),
])
def test_wrong_field_names_are_refused(data, where, said):
    with pytest.raises(CodecError, match=said):
        codec.loads(edited(data, lambda top: where(top["value"])))


@pytest.mark.parametrize("where, said", [
    (lambda run: run["traces"]["cached"]["steps"][0].__setitem__("token_id", "7"),
     r"cannot read run\.traces\.cached\.steps\[0\]\.token_id: expected a whole number, got '7' \(str\)"),
    (lambda run: run["settings"].__setitem__("max_new_tokens", True), r"max_new_tokens: expected a whole number"),
    (lambda run: run["settings"].__setitem__("cache", "paged"),
     r"settings\.cache: expected one of 'dynamic', 'static'"),
    (lambda run: run["timing"].__setitem__("complete", 1), r"timing\.complete: expected True or False, got 1"),
    (lambda run: run["traces"]["cached"]["steps"][1]["top_logits"].__setitem__(3, None),
     r"steps\[1\]\.top_logits\[3\]: expected a number, got None"),
    (lambda run: run["traces"]["cached"].__setitem__("prompt_ids", "1 2 3"), r"prompt_ids: expected a list"),
    (lambda run: run["traces"]["cached"].__setitem__("attention", [1.0, 2.0]),
     r"traces\.cached\.attention: expected \{\"array\": NAME\}"),
    (lambda run: run["comparison"].__setitem__("step", {"array": "nowhere"}),
     r"run\.comparison\.step names array 'nowhere', which the archive does not hold"),
    (lambda run: run["comparison"].__setitem__("token_id", run["comparison"]["step"]),
     r"names array 'run\.comparison\.step', which the archive does not hold \(or another field took\)"),
    (lambda run: run.__setitem__("info", []), r"run\.info: expected a JSON object"),
    (lambda run: run.__setitem__("settings", 3), r"run\.settings: expected a DecodeSettings"),
])
def test_wrong_field_types_are_refused(data, where, said):
    with pytest.raises(CodecError, match=said):
        codec.loads(edited(data, lambda top: where(top["value"])))


def test_the_top_of_meta_json_is_checked(data):
    with pytest.raises(CodecError, match=r"kind 'other', expected 'gptviz.result'"):
        codec.loads(edited(data, lambda top: top.__setitem__("kind", "other")))
    with pytest.raises(CodecError, match=r"meta\.json: wrong field names \(unknown extra\)"):
        codec.loads(edited(data, lambda top: top.__setitem__("extra", 1)))
    with pytest.raises(CodecError, match=r"meta must be a JSON object, got \[\]"):
        codec.loads(edited(data, lambda top: top.__setitem__("meta", [])))
    files = entries(data)
    with pytest.raises(CodecError, match="meta.json is not UTF-8 JSON"):
        codec.loads(archive({**files, "meta.json": b"{not json"}))
    with pytest.raises(CodecError, match="meta.json must be a JSON object, got 1"):
        codec.loads(archive({**files, "meta.json": b"1"}))


def test_bad_array_entries_are_refused(data):
    files = entries(data)
    with pytest.raises(CodecError, match=r"arrays no field refers to: stray"):
        codec.loads(archive({**files, "stray.npy": npy(np.arange(2))}))
    with pytest.raises(CodecError, match=r"unexpected entry 'notes.txt'"):
        codec.loads(archive({**files, "notes.txt": b"hi"}))
    with pytest.raises(CodecError, match=r"array 'run\.comparison\.step' has dtype <U1"):
        codec.loads(archive({**files, "run.comparison.step.npy": npy(np.array(["a"]))}))
    with pytest.raises(CodecError, match=r"compressed entries \(meta\.json"):
        codec.loads(archive(files, zipfile.ZIP_DEFLATED))
    # A header that claims more elements than its entry holds: refused before numpy allocates them.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (9000000000,)})
    short = header.getvalue() + bytes(32)  # 72 GB claimed, 4 numbers given
    with pytest.raises(CodecError, match=r"claims shape \(9000000000,\) .* but its entry is shorter"):
        codec.loads(archive({**files, "run.comparison.step.npy": short}))

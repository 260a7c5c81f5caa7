"""Property tests: every parser and the config overrides, fed random bytes, random unicode and random
structure, answer with a DataError/ConfigError naming the file, or a valid result — never another
exception, never a path outside the root, never a class list beyond MAX_LABEL."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidssl.data.index import VideoIndex
from vidssl.data.sources import MAX_LABEL, load_source, read_class_names
from vidssl.engine.config import load_config
from vidssl.errors import ConfigError, DataError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENS = st.sampled_from(["..", "/", "a.mp4", "Jump", "v_Jump_g01_c01.avi", "1", "0", "999999999999", "-3", "²",
                          " ", "\t", "\\", "\x00", "é", "/etc/passwd", "../x.mp4", ",", "inf", "nan", "\""])
LINES = st.lists(st.lists(TOKENS, max_size=6).map("".join) | st.text(max_size=30), max_size=8).map("\n".join)
CONTENT = LINES.map(str.encode) | st.binary(max_size=200)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)


def check(source, root: Path) -> None:
    """What a valid result must satisfy."""
    assert all(Path(r.path).is_relative_to(root.resolve()) for r in source.records)
    assert len(source.class_names or []) <= MAX_LABEL
    n = len(source.class_names or [])
    assert all(r.label is None or 0 <= r.label < max(n, 1) for r in source.records)


def parse_or_error(root: Path, target: Path, layout: str, **kwargs) -> None:
    try:
        for subset in ("train", "test"):
            check(load_source(target, layout, subset=subset, **kwargs), root)
    except DataError as exc:
        assert str(root) in str(exc) or str(target) in str(exc) or "subset" in str(exc)


def scratch(files: dict[str, bytes]) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    base = Path(tmp.name)
    (base / "outside.mp4").write_bytes(b"x")
    root = base / "root"
    for rel, payload in {"Jump/v_Jump_g01_c01.avi": b"x", "a.mp4": b"x", "f/img_00001.jpg": b"x", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    return tmp, root


@SETTINGS
@given(class_ind=CONTENT, train=CONTENT)
def test_ucf101_lists(class_ind, train):
    tmp, root = scratch({"classInd.txt": class_ind, "trainlist01.txt": train, "testlist01.txt": train})
    with tmp:
        parse_or_error(root, root, "ucf101")


@SETTINGS
@given(split=CONTENT)
def test_hmdb51_split_files(split):
    tmp, root = scratch({"Jump_test_split1.txt": split})
    with tmp:
        parse_or_error(root, root, "hmdb51")


@SETTINGS
@given(rows=CONTENT)
def test_kinetics_csv(rows):
    tmp, root = scratch({"k.csv": b"label,youtube_id,time_start,time_end,split\n" + rows})
    with tmp:
        parse_or_error(root, root / "k.csv", "kinetics_csv")


@SETTINGS
@given(labels=JSON, train=JSON, raw=st.binary(max_size=50))
def test_ssv2_json(labels, train, raw):
    for payload in (json.dumps(labels).encode(), raw):
        tmp, root = scratch({"labels.json": payload, "train.json": json.dumps(train).encode(),
                             "validation.json": json.dumps(train).encode()})
        with tmp:
            try:
                check(load_source(root, "ssv2"), root)
            except DataError as exc:
                assert str(root) in str(exc)


@SETTINGS
@given(text=CONTENT, layout=st.sampled_from(["frame_list", "path_list"]))
def test_frame_and_path_lists(text, layout):
    tmp, root = scratch({"list.txt": text})
    with tmp:
        parse_or_error(root, root / "list.txt", layout)


@SETTINGS
@given(text=CONTENT)
def test_class_lists(text):
    tmp, root = scratch({"classes.txt": text})
    with tmp:
        try:
            names = read_class_names(root / "classes.txt")
            assert len(names) == len(set(names))
        except DataError as exc:
            assert "classes.txt" in str(exc)


@SETTINGS
@given(payload=JSON, raw=st.binary(max_size=60))
def test_index_file(payload, raw):
    for content in (json.dumps({"videos": payload}).encode(), json.dumps(payload).encode(), raw):
        tmp, root = scratch({"index.json": content})
        with tmp:
            index = VideoIndex(root / "index.json")
            assert index.cached(str(root / "a.mp4")) is None  # nothing untrusted is served


@SETTINGS
@given(key=st.sampled_from(["train.batch_size", "optim.lr", "data.backend", "train.seed", "augment.scale",
                            "seco.queue_size", "train.compile", "data.num_workers", "nope", "train.nope", ""]),
       value=st.text(max_size=12) | st.integers().map(str) | st.floats().map(str))
def test_config_overrides(key, value):
    try:
        load_config(None, [f"{key}={value}"], "seco")
    except ConfigError as exc:
        assert key in str(exc) or "command line" in str(exc)

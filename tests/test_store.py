"""Record files: the restricted unpickler, atomic writes, shard names."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from aligntds.errors import UserError
from aligntds.store import load_records, parse_shard_name, safe_load, save_records, shard_name


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([{"id": 0, "x": RunsCode(marker)}]))
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the plain unpickler would run it
    assert (tmp_path / "control").exists()
    with pytest.raises(UserError, match=r"evil\.pkl: refusing to load global (posix|os|nt)\.system"):
        safe_load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [b"cbuiltins\neval\n(S'1+1'\ntR.", b"csubprocess\nPopen\n((S'true'\nltR."])
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "x.pkl"
    path.write_bytes(payload)
    with pytest.raises(UserError, match="refusing to load global"):
        safe_load(path)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_and_containers_load_under_every_protocol(tmp_path, protocol):
    obj = [{"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.float32(1.5), "c": np.int64(3),
            "s": {1, 2}, "f": frozenset([3]), "t": (1, "x"), "bytes": b"\x00\xff", "none": None}]
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load(path)
    np.testing.assert_array_equal(got[0]["a"], obj[0]["a"])
    assert got[0]["a"].dtype == np.int32
    assert got[0]["b"] == np.float32(1.5) and got[0]["s"] == {1, 2} and got[0]["bytes"] == b"\x00\xff"


def test_numpy1_module_names_load(tmp_path):
    """Pickles written under numpy 1.x (the reference's) name numpy.core.multiarray."""
    data = pickle.dumps([{"token_id": np.int64(7), "logit": np.float32(2.5), "v": np.ones(2)}], protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    got = safe_load(path)
    assert got[0]["token_id"] == 7 and got[0]["logit"] == np.float32(2.5)


def test_garbage_and_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match=r"bad\.pkl: not a readable pickle"):
        safe_load(bad)
    with pytest.raises(UserError, match=r"nope\.pkl: file not found"):
        safe_load(tmp_path / "nope.pkl")
    notlist = tmp_path / "dict.pkl"
    notlist.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="not a record file"):
        load_records(notlist)


def test_save_is_atomic_and_refuses_unsafe_objects(tmp_path):
    path = tmp_path / "r.pkl"
    save_records(path, [{"a": np.zeros(3)}])
    with pytest.raises(pickle.UnpicklingError):
        save_records(path, [{"a": RunsCode(tmp_path / "m")}])
    assert load_records(path)[0]["a"].shape == (3,)  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.pkl"]  # no temp file left behind


def test_shard_names_round_trip():
    name = shard_name("olmo2-7b-sft", "i2b", 250, 500)
    assert name == "olmo2-7b-sft-i2b.[250:500].pkl"
    assert parse_shard_name(name) == ("olmo2-7b-sft", "i2b", 250, 500)
    assert parse_shard_name("olmo2-7b-sft-i2b.pkl") is None
    assert parse_shard_name(".olmo2-i2b.[0:5].pkl.123.tmp") is None

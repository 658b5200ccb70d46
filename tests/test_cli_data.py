"""``jettag convert`` and ``jettag inspect`` end to end, through ``jettag.cli.main``."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
from jetfactory import random_jets
from test_formats import write_energyflow, write_toplandscape

from jettag.cli import main
from jettag.data import formats, store


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_inputs")
    top = random_jets(24, seed=41, max_len=50)
    write_toplandscape(d / "top.h5", top)
    qg = random_jets(18, seed=42, max_len=40)
    write_energyflow(d / "qg.npz", qg)
    bad = random_jets(10, seed=43, max_len=20)
    write_toplandscape(d / "bad.h5", bad, nan_at=(3, 1))
    return {"dir": d, "top": top, "qg": qg, "bad": bad}


def test_convert_then_inspect(inputs, tmp_path, capsys):
    d = inputs["dir"]
    out = tmp_path / "store"
    argv = ["convert", str(d / "top.h5"), str(d / "qg.npz"), "--out", str(out), "--chunk-size", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top.h5 (toplandscape_h5)" in printed and "24 jets" in printed and "18 jets" in printed

    top = out / "top.parquet"
    assert formats.detect_format(top) == "jettag"
    meta = store.read_metadata(top)
    assert meta["classes"] == ["QCD", "Top"]
    assert meta["source"] == str(d / "top.h5") and meta["source_format"] == "toplandscape_h5"
    got = store.read_store(top)
    want = inputs["top"]
    for f in store.MOMENTUM_FIELDS:
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(got[f])), ak.to_numpy(ak.flatten(want[f])), rtol=1e-6, atol=1e-6
        )
    assert store.read_metadata(out / "qg.parquet")["classes"] == ["gluon", "quark"]

    assert main(["inspect", str(top), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    labels = ak.to_numpy(want["label"])
    assert info["formats"] == ["jettag"] and info["jets"] == 24
    assert info["class_counts"] == {"QCD": int((labels == 0).sum()), "Top": int((labels == 1).sum())}
    pt = ak.to_numpy(want["jet_pt"]).astype(np.float64)
    s = info["stats"]["jet_pt"]
    assert s["mean"] == pytest.approx(pt.mean(), rel=1e-5)
    assert (s["min"], s["max"]) == (pytest.approx(pt.min(), rel=1e-6), pytest.approx(pt.max(), rel=1e-6))
    assert s["q50"] == pytest.approx(np.median(pt), rel=1e-5)
    n = ak.to_numpy(ak.num(want["part_px"], axis=1))
    assert info["stats"]["jet_nparticles"]["max"] == n.max()
    assert info["stats"]["jet_nparticles"]["q25"] == pytest.approx(np.quantile(n, 0.25))

    # text mode, on the original file and on the whole output directory
    assert main(["inspect", str(d / "top.h5"), str(out / "qg.parquet")]) == 0
    text = capsys.readouterr().out
    assert "toplandscape_h5" in text and "jettag" in text and "jet_mass" in text and "quark" in text


def test_convert_drop_invalid_and_max_jets(inputs, tmp_path, capsys):
    d = inputs["dir"]
    assert main(["convert", str(d / "bad.h5"), "--out", str(tmp_path)]) == 2  # bad input
    err = capsys.readouterr().err
    assert err.startswith("jettag convert: ") and err.count("\n") == 1
    assert "bad.h5" in err and "'part_px'" in err and "row 3" in err
    assert "pass --drop-invalid" in err and "drop_invalid=True" not in err  # the flag convert has
    assert not (tmp_path / "bad.parquet").exists()

    argv = ["convert", str(d / "bad.h5"), "--out", str(tmp_path), "--drop-invalid", "--chunk-size", "4"]
    assert main(argv) == 0
    assert "9 jets, dropped 1 (0 without constituents, 1 with NaN/inf momenta)" in capsys.readouterr().out
    got = store.read_store(tmp_path / "bad.parquet")
    assert ak.to_list(got["label"]) == ak.to_list(inputs["bad"]["label"][np.arange(10) != 3])

    assert main(["convert", str(d / "top.h5"), "--out", str(tmp_path / "few"), "--max-jets", "7"]) == 0
    assert len(store.read_store(tmp_path / "few" / "top.parquet")) == 7


def test_cli_errors(inputs, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.root")]) == 2
    assert "missing.root" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a jet file at all")
    assert main(["convert", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert "junk.npz: unknown layout" in capsys.readouterr().err

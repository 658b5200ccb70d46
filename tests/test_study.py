"""``jettag study``: a quick two-seed study on a tiny store, its report, reuse, resume, run order."""

from __future__ import annotations

import copy
import json
import shlex
import statistics
import threading
from pathlib import Path
from typing import Any

import pytest
from jetfactory import random_jets

import jettag.train.trainer as trainer
from jettag.cli import main
from jettag.data.store import write_store
from jettag.studies import StudyError, get_study, run_study
from jettag.studies.base import Data, RunSpec, Scale, Study, read_marker, select
from jettag.train.config import read_config, save_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study_data") / "jets.parquet"
    return write_store(path, random_jets(300, seed=5, max_len=20), ["QCD", "Top"], "random")


def _study_args(store: Path, out: Path) -> list[str]:
    return ["study", "top", "--quick", "--only", "pfn", "--seeds", "2", "--data", f"top={store}",
            "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, store: Path) -> dict[str, Any]:
    """``jettag study top --quick --only pfn --seeds 2`` on the tiny store, run once for the module."""
    out = tmp_path_factory.mktemp("study") / "top"
    assert main(_study_args(store, out)) == 0
    return {"out": out, "results": json.loads((out / "report" / "results.json").read_text())}


class TrainSpy:
    """Records (run name, resume) of every ``train`` call and runs the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.real = trainer.train

    def __call__(self, cfg: dict[str, Any], run_dir: Any, resume: bool = False) -> dict[str, Any]:
        self.calls.append((Path(run_dir).name, resume))
        return self.real(cfg, run_dir, resume=resume)


def test_report_mean_std_equal_the_per_run_metrics(quick: dict[str, Any]) -> None:
    res, report = quick["results"], quick["out"] / "report"
    assert [(r["name"], r["model"], r["seed"]) for r in res["runs"]] == [("pfn-s0", "pfn", 0),
                                                                         ("pfn-s1", "pfn", 1)]
    assert res["study"] == "top" and res["scale"] == "quick" and res["seeds"] == [0, 1]
    assert res["n_runs"] == {"pfn": 2}
    runs = [r["metrics"] for r in res["runs"]]
    assert runs[0]["auc"] != runs[1]["auc"]  # two seeds really trained two different models
    for key in ("acc", "auc", "params", "epochs", "jets_per_s"):
        values = [m[key] for m in runs]
        mean, std = res["aggregate"]["pfn"][key]
        # statistics' algorithms differ from numpy's sums in the last bits: 1e-12 relative
        assert mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert std == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-12)
    table = (report / "results.md").read_text()
    auc_mean, auc_std = res["aggregate"]["pfn"]["auc"]
    assert "| pfn (n=2) | " in table and f"{auc_mean:.4f} ± {auc_std:.4f}" in table
    for name in ("roc.png", "summary.png", "scores_pfn-s0.png", "results.tex", "timings.json"):
        assert (report / name).is_file(), name


def test_recorded_command_trains_the_same_run(quick: dict[str, Any], tmp_path: Path) -> None:
    """``commands.sh`` holds the exact ``jettag train`` command of every run: rerun one (seed 1, not
    the default), same model."""
    from jettag.evaluate.scoring import evaluate_run

    lines = (quick["out"] / "report" / "commands.sh").read_text().splitlines()
    assert lines[0].startswith("# jettag study top --scale quick")
    cmd = shlex.split(next(line for line in lines if "--run-dir" in line and line.endswith("pfn-s1")))
    assert cmd[:3] == ["jettag", "train", "demo_pfn"]
    at = cmd.index("--run-dir")
    assert main([*cmd[1:at], "train.progress=false", "--run-dir", str(tmp_path / "again")]) == 0
    again = evaluate_run(tmp_path / "again")["metrics"]
    first = quick["results"]["runs"][1]["metrics"]
    # same recipe, overrides, data and seed on one machine: the same floating-point operations
    assert (again["acc"], again["auc"]) == (first["acc"], first["auc"])


def test_rerun_reuses_finished_runs(quick: dict[str, Any], store: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = quick["out"]
    ckpts = sorted((out / "runs").rglob("checkpoints/*"))
    assert len(ckpts) >= 2 * 4
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    spy = TrainSpy()
    monkeypatch.setattr(trainer, "train", spy)
    assert main(_study_args(store, out)) == 0
    assert spy.calls == []
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before
    res = json.loads((out / "report" / "results.json").read_text())
    assert [r["status"] for r in res["runs"]] == ["reused", "reused"]
    assert [r["metrics"] for r in res["runs"]] == [r["metrics"] for r in quick["results"]["runs"]]
    # a changed recipe must not pass for the finished runs: refused before any training
    with pytest.raises(StudyError, match=r"pfn-s0: holds a run of another command"):
        main(["--debug", *_study_args(store, out), "--set", "train.lr=0.5"])
    assert spy.calls == []


def test_killed_run_is_resumed(quick: dict[str, Any], store: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    study, out, real_train = get_study("top"), tmp_path / "killed", trainer.train
    kwargs = {"scale": "quick", "seeds": [1], "only": ["pfn"], "data_paths": {"top": str(store)},
              "progress": False, "log": lambda s: None}

    def killed(cfg: dict[str, Any], run_dir: Path, resume: bool = False) -> dict[str, Any]:
        """Two optimizer steps, ``last`` saved mid-epoch, then the process dies."""
        short = copy.deepcopy(cfg)
        short["train"]["max_steps"] = 2
        real_train(short, run_dir, resume)
        saved = read_config(run_dir)
        saved["train"]["max_steps"] = None  # config.yaml as the real run wrote it
        save_config(saved, Path(run_dir) / "config.yaml")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, **kwargs)
    run_dir = out / "runs" / "pfn-s1"
    assert read_marker(run_dir)["status"] == "training"
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"] == 2
    monkeypatch.undo()

    spy = TrainSpy()
    monkeypatch.setattr(trainer, "train", spy)
    done = run_study(study, out, **kwargs)
    assert spy.calls == [("pfn-s1", True)]
    assert done["results"][0]["record"]["status"] == "resumed"
    full = quick["out"] / "runs" / "pfn-s1" / "checkpoints" / "last.json"
    assert (json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
            == json.loads(full.read_text())["step"])
    # resuming continues bit for bit (the trainer's contract): the uninterrupted run's scores
    m, ref = done["results"][0]["metrics"], quick["results"]["runs"][1]["metrics"]
    assert (m["acc"], m["auc"]) == (ref["acc"], ref["auc"])

    # changed options (what ``jettag demo`` asks for): trained anew from an emptied directory
    spy.calls.clear()
    run_study(study, out, **kwargs, extra=["train.lr=2e-3"], retrain_changed=True)
    assert spy.calls == [("pfn-s1", False)]
    assert "train.lr=2e-3" in read_marker(run_dir)["overrides"]
    val_rows = [line for line in (run_dir / "log.csv").read_text().splitlines() if ",val," in line]
    assert len(val_rows) == 1  # the old run's log went with its directory's run files


def _chain_study(store: Path) -> Study:
    def plan(scale: str, seeds: Any) -> list[RunSpec]:
        return [RunSpec("ft", "demo_pfn", "d", "finetuned", init_from="pre", overrides=("train.lr=5e-4",)),
                RunSpec("pre", "demo_pfn", "d", "pretrained", report=False)]

    return Study(name="chain", title="pre-train then fine-tune", data={"d": Data(path=str(store))},
                 scales={"quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=20"))},
                 plan=plan)


def test_runs_start_after_the_run_they_start_from(store: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spy = TrainSpy()
    monkeypatch.setattr(trainer, "train", spy)
    done = run_study(_chain_study(store), tmp_path / "chain", scale="quick", only=["finetuned"],
                     progress=False, log=lambda s: None)
    assert spy.calls == [("pre", False), ("ft", False)]
    assert [r["name"] for r in done["results"]] == ["ft"]  # the pre-training run is not in the table
    marker = read_marker(tmp_path / "chain" / "runs" / "ft")
    assert f"train.init_from={tmp_path / 'chain' / 'runs' / 'pre'}" in marker["overrides"]
    commands = (done["report"] / "commands.sh").read_text().splitlines()[1:]
    assert [c.rsplit("/", 1)[-1] for c in commands] == ["pre", "ft"]


def _two_data_study() -> Study:
    """Run ``a`` on generated ``top:40`` (d1), then run ``b`` on generated ``top:41`` (d2)."""
    return Study(name="two", title="two generated datasets",
                 data={"d1": Data(recipe="top", jets={"quick": 40}),
                       "d2": Data(recipe="top", jets={"quick": 41})},
                 scales={"quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=20"))},
                 plan=lambda scale, seeds: [RunSpec("a", "demo_pfn", "d1", "a"),
                                            RunSpec("b", "demo_pfn", "d2", "b")])


def test_later_datasets_are_generated_while_the_first_runs_train(store: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import jettag.data.dataset as dataset

    first_run_training = threading.Event()
    made: list[str] = []

    def generate(spec: str, data_cfg: Any = None, workers: Any = None) -> str:
        if spec == "generate:top:41":  # the second run's data: made only once the first run trains
            assert first_run_training.wait(60), "the second dataset was made before the first run trained"
        if spec.startswith("generate:"):  # (scoring resolves the runs' stored path too)
            made.append(spec)
        return str(store)

    real = trainer.train
    trained: list[tuple[str, str]] = []

    def train(cfg: dict[str, Any], run_dir: Any, resume: bool = False) -> dict[str, Any]:
        trained.append((Path(run_dir).name, cfg["data"]["path"]))
        first_run_training.set()
        cfg["data"]["path"] = str(store)
        return real(cfg, run_dir, resume=resume)

    monkeypatch.setattr(dataset, "resolve_data_path", generate)
    monkeypatch.setattr(trainer, "train", train)
    study = _two_data_study()
    done = run_study(study, tmp_path / "two", scale="quick", progress=False, log=lambda s: None)
    assert made == ["generate:top:40", "generate:top:41"]
    assert trained == [("a", "generate:top:40"), ("b", "generate:top:41")]
    assert done["timings"]["wait_data_a_s"] < 1.0  # d1 was made before the runs started


def test_a_failed_background_generation_stops_the_run_that_needs_it(store: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import jettag.data.dataset as dataset

    def generate(spec: str, data_cfg: Any = None, workers: Any = None) -> str:
        if spec == "generate:top:41":
            raise StudyError("no Pythia today")
        return str(store)

    spy = TrainSpy()
    monkeypatch.setattr(dataset, "resolve_data_path", generate)
    monkeypatch.setattr(trainer, "train", lambda cfg, run_dir, resume=False: spy(
        {**cfg, "data": {**cfg["data"], "path": str(store)}}, run_dir, resume))
    study = _two_data_study()
    with pytest.raises(StudyError, match="no Pythia today"):
        run_study(study, tmp_path / "two", scale="quick", progress=False, log=lambda s: None)
    assert spy.calls == [("a", False)]  # the run on the data that was made trained; b never started


def test_bad_studies_and_selections_fail_in_one_line(store: Path, tmp_path: Path) -> None:
    top = get_study("top")
    with pytest.raises(StudyError, match=r"unknown group\(s\) \['pfnn'\]; this study has \['mipart'"):
        run_study(top, tmp_path, scale="quick", only=["pfnn"])
    with pytest.raises(StudyError, match=r"unknown dataset\(s\) \['qg'\]"):
        run_study(top, tmp_path, scale="quick", data_paths={"qg": str(store)})
    with pytest.raises(StudyError, match=r"dataset 'top': .*nope.parquet does not exist"):
        run_study(top, tmp_path, scale="quick", data_paths={"top": str(tmp_path / "nope.parquet")})
    with pytest.raises(StudyError, match=r"override 'lrr': no such key"):
        run_study(top, tmp_path, scale="quick", data_paths={"top": str(store)}, extra=["lrr=1"])
    loop = [RunSpec("a", "demo_pfn", "d", "a", init_from="b"),
            RunSpec("b", "demo_pfn", "d", "b", init_from="a")]
    with pytest.raises(StudyError, match="in a loop: a -> b -> a"):
        select(loop)
    with pytest.raises(StudyError, match="init_from 'c' is not a run"):
        select([RunSpec("a", "demo_pfn", "d", "a", init_from="c")])
    assert main(["study", "nope"]) == 2  # one line: jettag study: unknown study 'nope' ...
    assert not any(tmp_path.iterdir())  # nothing was trained or written
    # a directory holding a run the study did not make is not taken over
    (tmp_path / "runs" / "pfn-s0").mkdir(parents=True)
    (tmp_path / "runs" / "pfn-s0" / "config.yaml").write_text("model: {name: pfn}\n")
    with pytest.raises(StudyError, match=r"pfn-s0: holds a run of another command \(not a run of this study"):
        run_study(top, tmp_path, scale="quick", only=["pfn"], data_paths={"top": str(store)})
    assert [p.name for p in (tmp_path / "runs" / "pfn-s0").iterdir()] == ["config.yaml"]

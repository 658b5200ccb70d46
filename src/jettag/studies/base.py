"""A study: a named set of runs (models x seeds x data sizes x options) on named data, one report.

A ``Study`` is data: its datasets (``Data``: a generation recipe with a size per scale, or a path),
its scales (``Scale``: epochs multiplier, overrides for every run, default number of seeds) and a
``plan`` that lists its runs (``RunSpec``) for a scale and a list of seeds. ``run_study`` then

1. makes (or finds in the cache) the first run's dataset, and every other dataset the runs use in
   a background thread while the runs on the data made first train (a run waits for its data),
2. trains each run into ``<runs_dir>/<run name>`` in dependency order (an ``init_from`` run first)
   with ``jettag.train.trainer.train``, exactly as ``jettag train RECIPE OVERRIDES --run-dir DIR``
   would (that command is recorded), and scores it on its test split,
3. writes the report: the table with mean ± std over the runs of each group (the seeds), plots,
   ``results.json``, ``commands.sh`` (every exact command) and ``timings.json``.

Beside each run directory ``<run>`` the study keeps ``<run>.study.json``: the run's recipe,
overrides and command, and its state (``training`` -> ``trained`` -> ``finished`` with the
metrics; the test-set predictions are in ``<run>/predictions.parquet``). A rerun reuses finished
runs, resumes a killed one from its ``last`` checkpoint (``train(..., resume=True)``), and refuses
a directory whose recorded recipe or overrides differ from what it would run now (or that holds a
run without a study record), so old results never pass for a changed recipe; ``retrain_changed``
trains such runs anew instead.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jettag.errors import JettagError
from jettag.files import atomic_write_text

SCALES = ("quick", "cpu", "gpu", "full")
MARKER = "study.json"  # beside the run directory, as <run>.study.json: the trainer owns the directory
PREDICTIONS = "predictions.parquet"
#: what a run directory holds (the trainer's files and the study's); emptied before a fresh run
RUN_FILES = ("checkpoints", "config.yaml", "log.csv", "tensorboard", PREDICTIONS)


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) of the finite values of a group's runs (the seeds); the
    standard error is NaN for fewer than two values, everything NaN (n = 0) for none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), se, len(vals)


def judge(diff: float, err: float) -> str:
    """Verdict on a difference that a claim says is positive, with its standard error: **holds**
    above 0 by more than two standard errors, **does not hold** below 0 by more than two, **not
    shown** between, or with one seed (no spread)."""
    if not math.isfinite(err):
        return "**not shown** (one seed: no spread)"
    return "**holds**" if diff > 2 * err else "**does not hold**" if diff < -2 * err else "**not shown**"


class StudyError(JettagError, ValueError):
    """A study, a selection or a run directory that does not fit."""


@dataclass(frozen=True)
class Data:
    """A named dataset: ``recipe`` generated with ``jets[scale]`` jets (cached), or a fixed ``path``."""

    recipe: str | None = None
    jets: Mapping[str, int] = field(default_factory=dict)
    path: str | None = None
    detector: str = "none"

    def spec(self, scale: str, n_jets: int | None = None) -> str:
        """The runs' ``data.path``: ``generate:<recipe>:<n_jets>`` or the path."""
        if self.path is not None:
            return self.path
        return f"generate:{self.recipe}:{n_jets or self.jets[scale]}"


@dataclass(frozen=True)
class Scale:
    """A size preset: each recipe's epochs times ``epochs`` (0: left to ``overrides``), ``overrides``
    for every run, and the number of seeds when none is asked for."""

    epochs: float = 1.0
    overrides: tuple[str, ...] = ()
    seeds: int = 1


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study.

    ``group`` is its table row: the runs of a group differ only by ``seed`` and are shown as
    mean ± std. ``init_from`` names another run of the study whose best weights start this one
    (fine-tuning; that run is trained first). ``report=False`` runs (e.g. pre-training) are trained
    but left out of the table.
    """

    name: str
    recipe: str
    data: str
    group: str
    seed: int = 0
    overrides: tuple[str, ...] = ()
    init_from: str | None = None
    report: bool = True


@dataclass(frozen=True)
class Study:
    """A named study: datasets, scales, ``plan(scale, seeds) -> runs``, table columns, verdict.

    ``verdict(rows)`` gets ``rows[group] = [metrics of each run]`` and returns Markdown written
    under the table (what the numbers say about the question the study asks), or "".
    """

    name: str
    title: str
    data: Mapping[str, Data]
    scales: Mapping[str, Scale]
    plan: Callable[[str, Sequence[int]], list[RunSpec]]
    columns: tuple[str, ...] = ("params", "epochs", "jets_per_s")
    verdict: Callable[[dict[str, list[dict[str, float]]]], str] | None = None
    #: optional: adds study-specific metrics to each reported run's ``metrics`` (from its ``labels``,
    #: ``probs`` and ``record["run_dir"]``) before the table and the verdict are made
    annotate: Callable[[list[dict[str, Any]]], None] | None = None
    #: one report per dataset of the reported runs (``report/<data>/``, its own verdict), for studies
    #: whose targets have different classes (e.g. top and quark/gluon); ``report/results.md`` joins them
    report_per_data: bool = False
    #: extra figures from the rows: ``figures(rows, report_dir) -> {name: path}``
    figures: Callable[[dict[str, list[dict[str, float]]], Path], dict[str, Path]] | None = None
    #: more of the report: ``extra(report_dir, runs_dir, results, meta)`` writes its own files into
    #: ``report_dir`` and returns Markdown appended to ``results.md`` (``meta``: study, scale, data)
    extra: Callable[[Path, Path, list[dict[str, Any]], dict[str, Any]], str] | None = None


def select(runs: Sequence[RunSpec], only: Sequence[str] | None = None) -> list[RunSpec]:
    """The runs of the groups in ``only`` (all when None) and the runs they start from, each after
    the run it starts from."""
    by_name: dict[str, RunSpec] = {}
    for r in runs:
        if r.name in by_name:
            raise StudyError(f"run name {r.name!r} appears twice in the study")
        by_name[r.name] = r
    groups = list(dict.fromkeys(r.group for r in runs))
    if only is not None:
        unknown = [g for g in only if g not in groups]
        if unknown or not only:
            raise StudyError(f"unknown group(s) {unknown}; this study has {groups}" if unknown
                             else "no runs selected")
    ordered: list[RunSpec] = []

    def visit(r: RunSpec, chain: tuple[str, ...]) -> None:
        if any(o.name == r.name for o in ordered):
            return
        if r.name in chain:
            raise StudyError(f"runs start from each other in a loop: {' -> '.join((*chain, r.name))}")
        if r.init_from is not None:
            if r.init_from not in by_name:
                raise StudyError(f"run {r.name!r}: init_from {r.init_from!r} is not a run of the study")
            visit(by_name[r.init_from], (*chain, r.name))
        ordered.append(r)

    for r in runs:
        if only is None or r.group in only:
            visit(r, ())
    return ordered


def train_overrides(study: Study, run: RunSpec, scale: str, data_path: str, runs_dir: Path,
                    extra: Sequence[str] = ()) -> list[str]:
    """The ``key=value`` overrides of ``run`` on top of its recipe: data, seed, scale, run, ``extra``
    (the user's), ``init_from``, and the epochs the scale's multiplier gives."""
    from jettag.train.config import resolve

    sc, d = study.scales[scale], study.data[run.data]
    ov = [f"data.path={data_path}"]
    if d.path is None and d.detector != "none":
        ov.append(f"data.detector={d.detector}")
    ov += [f"train.seed={run.seed}", *sc.overrides, *run.overrides, *extra]
    if run.init_from is not None:
        ov.append(f"train.init_from={runs_dir / run.init_from}")
    sets_epochs = any(o.split("=", 1)[0] in ("epochs", "train.epochs") for o in (*run.overrides, *extra))
    if sc.epochs not in (0.0, 1.0) and not sets_epochs:
        epochs = resolve(run.recipe, ov)["train"]["epochs"]
        ov.append(f"train.epochs={max(1, round(epochs * sc.epochs))}")
    return ov


def train_command(recipe: str, overrides: Sequence[str], run_dir: Path) -> str:
    """The ``jettag train`` command line that trains the same run."""
    return shlex.join(["jettag", "train", recipe, *overrides, "--run-dir", str(run_dir)])


def marker_path(run_dir: Path) -> Path:
    """The study's record of a run (command and state): ``<run>.study.json`` beside its directory,
    written before training starts, so that a killed run is recognised and resumed."""
    return run_dir.with_name(f"{run_dir.name}.{MARKER}")


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    """The run's study record (None when absent)."""
    path = marker_path(run_dir)
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StudyError(f"{path}: corrupt ({err}); delete it to retrain this run") from err
    if not isinstance(marker, dict) or not {"recipe", "overrides", "status"} <= set(marker):
        raise StudyError(f"{path}: not a study run record (needs recipe, overrides, status)")
    return marker


def _write_marker(run_dir: Path, marker: dict[str, Any]) -> None:
    path = marker_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(marker, indent=1))


def run_one(run: RunSpec, overrides: list[str], run_dir: Path, progress: bool = True,
            log: Callable[[str], None] = print, tag: str = "study", retrain_changed: bool = False
            ) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and score it on its test split.

    A directory that holds a run of another command (or a run without a study record) is refused,
    or with ``retrain_changed`` emptied of its run files and trained anew.

    Returns ``{"name", "model" (the group), "labels", "probs", "metrics", "classes", "record"}``;
    ``record["status"]`` is ``reused``, ``evaluated``, ``resumed`` or ``trained``.
    """
    from jettag.evaluate.report import read_predictions, write_predictions
    from jettag.evaluate.scoring import evaluate_run
    from jettag.train import distributed as D
    from jettag.train.config import resolve
    from jettag.train.trainer import train

    command = train_command(run.recipe, overrides, run_dir)
    marker = read_marker(run_dir)
    if marker is None:
        other = any((run_dir / f).exists() for f in RUN_FILES)
    else:
        other = (marker["recipe"], marker["overrides"]) != (run.recipe, overrides)
    if other and not retrain_changed:
        was = marker["command"] if marker else f"not a run of this study: no {marker_path(run_dir).name}"
        raise StudyError(f"{run_dir}: holds a run of another command ({was}); this study would run: "
                         f"{command}. Delete the directory or choose another --out")
    if other:
        log(f"[{tag}] {run.name}: {run_dir} holds a run of another command; training it anew")
        marker = None
    status = marker["status"] if marker else None
    record = {"group": run.group, "seed": run.seed, "command": command, "run_dir": str(run_dir)}
    if status == "finished" and (run_dir / PREDICTIONS).is_file():
        labels, probs, classes = read_predictions(run_dir / PREDICTIONS)
        log(f"[{tag}] {run.name}: finished before, reused ({run_dir})")
        return {"name": run.name, "model": run.group, "labels": labels, "probs": probs,
                "metrics": marker["metrics"], "classes": classes, "record": {**record, "status": "reused"}}

    cfg = resolve(run.recipe, overrides)
    cfg["train"]["progress"] = progress
    marker = {"recipe": run.recipe, "overrides": overrides, "command": command,
              "jets_per_s": (marker or {}).get("jets_per_s", math.nan), "status": "training"}
    if status in ("trained", "finished"):
        how = "evaluated"
    else:
        resume = status == "training" and (run_dir / "checkpoints" / "last.json").is_file()
        how = "resumed" if resume else "trained"
        log(f"[{tag}] {'resuming' if resume else 'training'} {run.name} ({cfg['train']['epochs']} epochs) "
            f"-> {run_dir}")
        if not resume:  # a fresh run starts from an empty directory: no old checkpoint to resume later
            for f in RUN_FILES:
                if (run_dir / f).is_dir():
                    shutil.rmtree(run_dir / f)
                elif (run_dir / f).exists():
                    (run_dir / f).unlink()
        _write_marker(run_dir, marker)
        summary = train(cfg, run_dir, resume=resume)
        marker.update(status="trained", jets_per_s=summary["jets_per_s"])
        _write_marker(run_dir, marker)
    device = D.pick_device(cfg["train"]["device"])  # score where it trained (a GPU study on the GPU)
    res = evaluate_run(run_dir, info=D.DistInfo(device=device))
    metrics = {**res["metrics"], "jets_per_s": marker["jets_per_s"], "epochs": cfg["train"]["epochs"]}
    write_predictions(run_dir / PREDICTIONS, res["labels"], res["probs"], res["classes"])
    marker.update(status="finished", metrics=metrics)
    _write_marker(run_dir, marker)
    m = metrics
    log(f"[{tag}] {run.name}: acc {m['acc']:.4f} AUC {m['auc']:.4f} "
        + " ".join(f"R{k[1:]} {v:.1f}" for k, v in m.items() if k.startswith("rej")))
    return {"name": run.name, "model": run.group, "labels": res["labels"], "probs": res["probs"],
            "metrics": metrics, "classes": res["classes"], "record": {**record, "status": how}}


class BackgroundData:
    """Makes datasets one after the other in a background thread (each generation on its own worker
    processes), so the runs on the data made first train meanwhile. ``wait(name)`` blocks until
    ``name`` is made (at once for a name it was not given) and re-raises the error that stopped it."""

    def __init__(self, jobs: Sequence[tuple[str, Callable[[], None]]]) -> None:
        self._ready = {name: threading.Event() for name, _ in jobs}
        self._errors: dict[str, BaseException] = {}
        self._thread = threading.Thread(target=self._make_all, args=(list(jobs),), daemon=True,
                                        name="jettag-study-data")
        self._thread.start()

    def _make_all(self, jobs: list[tuple[str, Callable[[], None]]]) -> None:
        for name, make in jobs:
            try:
                make()
            except BaseException as err:  # handed to the run that needs the data
                self._errors[name] = err
            finally:
                self._ready[name].set()

    def wait(self, name: str) -> float:
        """Seconds spent waiting for ``name``."""
        t0 = time.perf_counter()
        if name in self._ready:
            self._ready[name].wait()
            if name in self._errors:
                raise self._errors[name]
        return time.perf_counter() - t0


def run_study(
    study: Study,
    out: str | os.PathLike,
    scale: str = "cpu",
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    runs: Sequence[RunSpec] | None = None,
    runs_dir: str | os.PathLike | None = None,
    n_jets: int | None = None,
    data_paths: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    workers: int = 2,
    progress: bool = True,
    title: str | None = None,
    invocation: str = "",
    tag: str | None = None,
    log: Callable[[str], None] = print,
    retrain_changed: bool = False,
) -> dict[str, Any]:
    """Run (or finish) ``study`` into ``out`` and write ``<out>/report``; returns ``{"files" (the
    report's), "results" (the reported runs), "timings", "report" (its directory)}``.

    ``seeds`` default to the scale's count (0, 1, ...); ``runs`` replace ``study.plan(scale, seeds)``;
    ``runs_dir`` defaults to ``<out>/runs``; ``data_paths[name]`` replaces a dataset by a path;
    ``extra`` are overrides for every run; ``invocation`` heads ``commands.sh``;
    ``retrain_changed`` retrains runs whose directory holds another command's run (else refused).
    """
    from jettag.data.dataset import resolve_data_path
    from jettag.data.generate.cache import require_generation
    from jettag.evaluate.report import write_report
    from jettag.train.config import ConfigError, resolve

    t_start = time.perf_counter()
    tag = tag or f"study {study.name}"
    if scale not in study.scales:
        raise StudyError(f"study {study.name!r} has no scale {scale!r}; it has {sorted(study.scales)}")
    seeds = list(seeds) if seeds is not None else list(range(study.scales[scale].seeds))
    plan = select(runs if runs is not None else study.plan(scale, seeds), only)
    out = Path(out)
    runs_dir = Path(runs_dir) if runs_dir is not None else out / "runs"
    data_paths = dict(data_paths or {})
    unknown = sorted(set(data_paths) - set(study.data))
    if unknown:
        raise StudyError(f"unknown dataset(s) {unknown}; study {study.name!r} has {sorted(study.data)}")

    # ---- data first (every spec checked before any long work), then generated once each
    specs = {}
    for name in dict.fromkeys(r.data for r in plan):
        if name not in study.data:
            raise StudyError(f"a run uses dataset {name!r}, which study {study.name!r} does not define")
        specs[name] = data_paths.get(name) or study.data[name].spec(scale, n_jets)
        if not specs[name].startswith("generate:") and not Path(specs[name]).exists():
            raise StudyError(f"dataset {name!r}: {specs[name]} does not exist")
    try:  # a typo in --set or a recipe: one line now, not after an hour of training
        overrides = {r.name: train_overrides(study, r, scale, specs[r.data], runs_dir, extra) for r in plan}
        configs = [resolve(r.recipe, overrides[r.name]) for r in plan]
    except ConfigError as err:
        raise StudyError(str(err)) from None
    for cfg in configs:  # data made later (in the background, test samples): its extra checked now
        require_generation(cfg["data"])
    timings: dict[str, float] = {}

    def make(name: str) -> Callable[[], None]:
        def generate() -> None:
            t0 = time.perf_counter()
            log(f"[{tag}] data {name}: {specs[name]} (Pythia 8 + FastJet, {workers} workers; cached after "
                "the first run)")
            path = resolve_data_path(specs[name], {"generate_workers": workers,
                                                   "detector": study.data[name].detector})
            log(f"[{tag}] data {name} ready in {time.perf_counter() - t0:.0f} s: {path}")
        return generate

    # the first run's data now; every other generated dataset in the background while runs train
    t0 = time.perf_counter()
    generated = [name for name in specs if specs[name].startswith("generate:")]
    if plan[0].data in generated:
        make(plan[0].data)()
    timings["generation_s"] = time.perf_counter() - t0
    background = BackgroundData([(n, make(n)) for n in generated if n != plan[0].data])

    # ---- runs, in dependency order
    results = []
    for r in plan:
        timings[f"wait_data_{r.name}_s"] = background.wait(r.data)
        t0 = time.perf_counter()
        res = run_one(r, overrides[r.name], runs_dir / r.name, progress, log, tag, retrain_changed)
        timings[f"train_{r.name}_s"] = time.perf_counter() - t0
        if r.report and (only is None or r.group in only):
            results.append({**res, "data": r.data})
    if not results:
        raise StudyError(f"study {study.name!r}: no reported runs selected")

    # ---- report (one per dataset with report_per_data)
    parts: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        parts.setdefault(res["data"] if study.report_per_data else "", []).append(res)
    for part in parts.values():
        classes = part[0]["classes"]
        for res in part:
            if res["classes"] != classes:
                raise StudyError(f"reported runs have different classes: {part[0]['name']} {classes}, "
                                 f"{res['name']} {res['classes']}; mark one kind report=False")
    report = out / "report"
    if study.annotate is not None:
        study.annotate(results)
    data_text = ", ".join(f"{k} = {v}" for k, v in specs.items())
    title = title or f"jettag study {study.name} ({scale} scale): {study.title}; {data_text}"
    meta = {"study": study.name, "scale": scale, "seeds": seeds, "data": specs, "invocation": invocation}
    files: dict[str, Path] = {}
    texts = []
    for name, part in parts.items():
        rows: dict[str, list[dict[str, float]]] = {}
        for res in part:
            rows.setdefault(res["model"], []).append(res["metrics"])
        notes = study.verdict(rows) if study.verdict is not None else ""
        where = report / name if name else report
        part_files = write_report(where, part, part[0]["classes"], extra_columns=study.columns,
                                  title=f"{title}: {name}" if name else title, meta=meta, notes=notes)
        if study.figures is not None:
            part_files.update(study.figures(rows, where))
        files.update({f"{name}/{k}" if name else k: v for k, v in part_files.items()})
        texts.append((name, part_files["md"].read_text()))
    if study.report_per_data:  # results.md joins the parts' tables and verdicts
        report.mkdir(parents=True, exist_ok=True)
        body = [f"# {title}", ""]
        for name, text in texts:
            body += [f"## {name} (`{name}/`)", "", text.split("\n", 2)[2].strip(), ""]
        files["md"] = report / "results.md"
        files["md"].write_text("\n".join(body))
    if study.extra is not None:  # the study's own figures and Markdown, appended to results.md
        more = study.extra(report, runs_dir, results, meta)
        if more.strip():
            files["md"].write_text(files["md"].read_text() + "\n" + more.strip() + "\n")
    head = f"# {invocation}" if invocation else f"# jettag study {study.name}: its runs in order"
    commands = [head, *(train_command(r.recipe, overrides[r.name], runs_dir / r.name) for r in plan)]
    files["commands"] = report / "commands.sh"
    files["commands"].write_text("\n".join(commands) + "\n")
    timings["total_s"] = time.perf_counter() - t_start
    (report / "timings.json").write_text(json.dumps(timings, indent=1))
    return {"files": files, "results": results, "timings": timings, "report": report}

"""Plan a generation run, run its chunks on worker processes, resume, and write the manifest.

Layout of an output directory::

    DIR/run.json                                  what was asked (checked on resume)
    DIR/<recipe>-s<shard>-<class>-c<chunk>.parquet one chunk of one class (canonical store)
    DIR/<same name>.stats.json                    that chunk's events, seed, cross section, times
    DIR/manifest.json                             (manifest-s<shard>.json for a single shard of many)

Every chunk file is written atomically (``write_store`` renames a finished temporary file), so a
chunk either exists complete or not at all; an interrupted run, started again with the same
arguments, skips the chunks that exist and makes the others, which are seeded independently of
the order of work, so the result is the same as an uninterrupted run: nothing lost, nothing twice.
A run that fails (in any worker) removes its temporary files and the stats of unfinished chunks,
and writes no manifest; a first attempt that finished no chunk removes its new directory. The
``generate`` extra (Pythia 8, FastJet) is checked before anything is written.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jettag.data.generate.detector import DETECTORS
from jettag.data.generate.pythia import PYTHIA_SEED_MAX
from jettag.data.generate.recipes import Recipe, get_recipe
from jettag.errors import UsageError, require_extra
from jettag.files import atomic_write_text
from jettag.progress import progress as progress_report

# Bump when a change would alter the jets made from the same arguments (the cache key includes it).
GENERATOR_VERSION = "4"
DEFAULT_CHUNK_SIZE = 1000

MAX_CLASSES = 16
MAX_CHUNKS = 4096
_SEED_MULT = 7_919  # coprime with 900000000 = 2^8 3^2 5^8, so stream -> seed is a bijection
_SEED_STEP = 104_729


def pythia_seed(seed: int, shard: int, class_index: int, chunk: int) -> int:
    """Pythia's seed for one chunk, in 1..900000000.

    The (shard, class, chunk) stream number is packed without overlap and mapped by a bijection of
    the integers modulo 900000000, so within one run seed no two chunks (in particular no two
    shards) ever share a Pythia seed; the run seed shifts the whole map.
    """
    if not (0 <= class_index < MAX_CLASSES and 0 <= chunk < MAX_CHUNKS and shard >= 0 and seed >= 0):
        raise UsageError(
            f"seed {seed}, shard {shard}, class {class_index}, chunk {chunk} out of range "
            f"(classes < {MAX_CLASSES}, chunks per class and shard < {MAX_CHUNKS})"
        )
    stream = (shard * MAX_CLASSES + class_index) * MAX_CHUNKS + chunk
    if stream >= PYTHIA_SEED_MAX:
        raise UsageError(
            f"shard {shard} too large: at most {PYTHIA_SEED_MAX // (MAX_CLASSES * MAX_CHUNKS)} shards"
        )
    return 1 + (stream * _SEED_MULT + seed * _SEED_STEP) % PYTHIA_SEED_MAX


@dataclass(frozen=True)
class Task:
    """One chunk to make: which class of which shard, how many jets, and its seeds and file name."""

    recipe: str
    class_index: int
    shard: int
    chunk: int
    n_jets: int
    pythia_seed: int
    detector: str
    detector_seed: int
    mpi: bool | None
    path: str

    @property
    def stats_path(self) -> Path:
        return Path(self.path + ".stats.json")

    @property
    def variant(self) -> int:
        """Index into the class's ``chunk_settings`` (cycled): shards start at different entries."""
        return self.shard + self.chunk


def split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers (the first ones one larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan(
    recipe: Recipe,
    n_jets: int,
    out: Path,
    seed: int = 0,
    detector: str = "none",
    shards: list[int] | None = None,
    num_shards: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    mpi: bool | None = None,
) -> list[Task]:
    """The chunks of a run: ``n_jets`` balanced over the classes, then over shards, then chunks."""
    n_classes = len(recipe.classes)
    if n_jets < n_classes:
        raise UsageError(f"--jets {n_jets}: need at least one jet per class ({n_classes} classes)")
    if detector not in DETECTORS:
        raise UsageError(f"unknown detector {detector!r}; choose one of {list(DETECTORS)}")
    per_class = n_jets // n_classes
    tasks: list[Task] = []
    for shard in shards if shards is not None else range(num_shards):
        if not 0 <= shard < num_shards:
            raise UsageError(f"--shard {shard} outside 0..{num_shards - 1}")
        n_shard = split(per_class, num_shards)[shard]
        n_chunks = max(1, -(-n_shard // chunk_size))
        for chunk, n in enumerate(split(n_shard, n_chunks)):
            for ci, spec in enumerate(recipe.classes):
                if n == 0:
                    continue
                name = f"{recipe.name}-s{shard:04d}-{spec.name}-c{chunk:04d}.parquet"
                tasks.append(
                    Task(
                        recipe.name,
                        ci,
                        shard,
                        chunk,
                        n,
                        pythia_seed(seed, shard, ci, chunk),
                        detector,
                        _detector_seed(seed, shard, ci, chunk),
                        mpi,
                        str(out / name),
                    )
                )
    return tasks


def _detector_seed(seed: int, shard: int, class_index: int, chunk: int) -> int:
    return (((seed * 1_000_003 + shard) * MAX_CLASSES + class_index) * MAX_CHUNKS + chunk) * 2 + 1


def run_task(task: Task) -> dict:
    """Make one chunk (in a worker process) and write it; its stats are written first, then the jets."""
    import torch  # the kinematics module imports it anyway; one thread per worker process

    torch.set_num_threads(1)
    from jettag.data.generate.chunk import generate_chunk
    from jettag.data.generate.clustering import warm_up
    from jettag.data.store import write_store

    warm_up()

    recipe = get_recipe(task.recipe)
    result = generate_chunk(
        recipe,
        task.class_index,
        task.n_jets,
        task.pythia_seed,
        task.detector,
        task.detector_seed,
        task.mpi,
        variant=task.variant,
    )
    stats = {**result.stats, "shard": task.shard, "chunk": task.chunk, "file": Path(task.path).name}
    atomic_write_text(task.stats_path, json.dumps(stats, indent=1), tmp=task.stats_path.with_suffix(".tmp"))
    meta = {
        "recipe": task.recipe,
        "shard": task.shard,
        "chunk": task.chunk,
        "class_name": stats["class"],
        "pythia_seed": task.pythia_seed,
        "detector": task.detector,
        "generator_version": GENERATOR_VERSION,
    }
    write_store(
        task.path, result.jets, recipe.class_names, source=f"jettag generate {task.recipe}", metadata=meta
    )
    return stats


def require_generate() -> None:
    """Raise ``MissingExtraError`` (one line naming the extra) unless Pythia 8 and FastJet import."""
    require_extra("generate", "generation")


def _jsonable(obj):
    """Recipe fields for JSON: an open window edge (inf) is written as the string "inf"."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("jettag", "pythia8mc", "fastjet", "awkward", "numpy", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _check_run_config(out: Path, config: dict) -> None:
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = {
                k: (old.get(k), config.get(k)) for k in set(old) | set(config) if old.get(k) != config.get(k)
            }
            raise UsageError(
                f"{out}: holds a different run (differences {diff}); use another --out directory"
            )
        return
    atomic_write_text(path, json.dumps(config, indent=1), tmp=path.with_suffix(".tmp"))


def generate(
    recipe: str,
    n_jets: int,
    out: str | os.PathLike,
    workers: int = 1,
    seed: int = 0,
    detector: str = "none",
    shard: int | None = None,
    num_shards: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    mpi: bool | None = None,
    progress: bool = True,
) -> dict:
    """Generate (or finish generating) a sample; return the manifest, also written to ``out``.

    ``shard``: make only that shard of ``num_shards`` (one Slurm array task each); by default all.
    The jets depend on (recipe, n_jets, seed, detector, num_shards, chunk_size, mpi) and never on
    ``workers`` or on interruptions.
    """
    require_generate()  # before any file or worker exists: a missing extra costs one line, nothing else
    rec = get_recipe(recipe)
    out = Path(out)
    config = {
        "recipe": recipe,
        "jets": n_jets,
        "seed": seed,
        "detector": detector,
        "num_shards": num_shards,
        "chunk_size": chunk_size,
        "mpi": rec.mpi if mpi is None else mpi,
        "generator_version": GENERATOR_VERSION,
    }
    tasks = plan(
        rec, n_jets, out, seed, detector, None if shard is None else [shard], num_shards, chunk_size, mpi
    )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, config)
    start = time.perf_counter()
    try:
        _run_tasks(tasks, workers, progress, f"generate {recipe}")
    except BaseException:
        _clean_failed_run(out, tasks, created)
        raise
    manifest = _manifest(rec, config, tasks, time.perf_counter() - start, workers, shard)
    name = "manifest.json" if shard is None else f"manifest-s{shard:04d}.json"
    atomic_write_text(out / name, json.dumps(manifest, indent=1))
    return manifest


def _temporary_files(task: Task) -> tuple[Path, Path]:
    """The files a chunk is written through before its atomic rename (never valid data)."""
    return Path(task.path + ".tmp"), task.stats_path.with_suffix(".tmp")


def _run_tasks(tasks: list[Task], workers: int, progress: bool, desc: str) -> None:
    """Make the chunks that do not exist yet, on ``workers`` processes."""
    for task in tasks:  # temporary files of a killed run; other shards' are left alone
        for stale in _temporary_files(task):
            stale.unlink(missing_ok=True)
    todo = [t for t in tasks if not Path(t.path).exists()]
    done_jets = sum(t.n_jets for t in tasks) - sum(t.n_jets for t in todo)
    with progress_report(total=sum(t.n_jets for t in tasks), initial=done_jets, unit="jet", desc=desc,
                         enabled=progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for task in todo:
                run_task(task)
                bar.update(task.n_jets)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(todo))) as pool:
                for stats in pool.imap_unordered(run_task, todo):
                    bar.update(stats["jets"])


def _clean_failed_run(out: Path, tasks: list[Task], created: bool) -> None:
    """After a failed or interrupted run: remove what only a finished chunk may leave.

    Temporary files and the stats of chunks whose jets were not written go; finished chunks stay
    (the next run with the same arguments resumes from them). If this call created ``out`` and no
    chunk was finished, ``out`` is removed altogether, so a failed first attempt leaves no cache
    entry and no ``run.json`` behind.
    """
    for task in tasks:
        for path in _temporary_files(task):
            path.unlink(missing_ok=True)
        if not Path(task.path).exists():
            task.stats_path.unlink(missing_ok=True)
    if created and {p.name for p in out.iterdir()} <= {"run.json"}:
        (out / "run.json").unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:  # another shard's process wrote into it meanwhile: keep it
            pass


def _manifest(
    rec: Recipe, config: dict, tasks: list[Task], wall_s: float, workers: int, shard: int | None
) -> dict:
    stats = [json.loads(t.stats_path.read_text()) if t.stats_path.exists() else None for t in tasks]
    missing = [Path(t.path).name for t, s in zip(tasks, stats) if s is None or not Path(t.path).exists()]
    per_class: dict[str, dict] = {}
    for spec in rec.classes:
        rows = [s for s in stats if s is not None and s["class"] == spec.name]
        varying = {x for entry in spec.chunk_settings for x in entry}
        events = sum(s["events"] for s in rows)
        # Pythia's sigmaGen per chunk is an estimate from that chunk's events; combine by events
        sigma = sum(s["sigma_mb"] * s["events"] for s in rows) / events if events else None
        per_class[spec.name] = {
            "jets": sum(s["jets"] for s in rows),
            "stored_jets": sum(s.get("stored_jets", s["jets"]) for s in rows),
            "generated_events": events,
            "cross_section_mb": sigma,
            "jets_per_event": sum(s["jets"] for s in rows) / events if events else None,
            # all but the per-chunk seed (and the per-chunk "chunk_settings" listed with each chunk)
            "pythia_settings": [x for x in rows[0]["settings"][:-1] if x not in varying] if rows else None,
            "seconds_total": sum(s["seconds_total"] for s in rows),
            "seconds_pythia": sum(s["seconds_pythia"] + s["seconds_init"] for s in rows),
        }
    return {
        "recipe": _jsonable(asdict(rec)),
        "classes": rec.class_names,
        "run": config,
        "shard": shard,
        "complete": not missing,
        "missing_chunks": missing,
        "per_class": per_class,
        "chunks": [
            {
                "file": Path(t.path).name,
                "class": rec.classes[t.class_index].name,
                "shard": t.shard,
                "chunk": t.chunk,
                "jets": t.n_jets,
                "pythia_seed": t.pythia_seed,
                "chunk_settings": list(rec.classes[t.class_index].varying_settings(t.variant)),
                "events": s["events"] if s else None,
            }
            for t, s in zip(tasks, stats)
        ],
        "wall_time_s": wall_s,
        "workers": workers,
        "versions": _versions(),
        "generated_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

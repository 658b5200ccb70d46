"""Mutation testing one module at a time, each mutant run only against that module's fast tests.

mutmut reads one `[tool.mutmut]` table (one test selection for everything), so a run over all the
modules of issue 17 would collect the tests of every module for each one. This script runs mutmut
once per module in a scratch copy of the working tree whose `pyproject.toml` carries a
`[tool.mutmut]` narrowed to that module's file and tests, optionally to some of its functions
(`patterns`, mutmut mutant-name globs), then prints the counts and every mutant left alive.

    python tools/mutation.py --list
    OMP_NUM_THREADS=1 nice -n 10 python tools/mutation.py kinematics [--max-children 1]

The scratch copy lives in `--workdir` (default /tmp/jettag-mutation/<module>) and is kept, so that
`cd <workdir> && mutmut show NAME` shows a survivor afterwards. Score = killed / (killed + survived),
i.e. over the mutants some selected test reaches; "no tests" and timeouts are reported apart.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    source: str  # file to mutate, relative to the repository root
    tests: tuple[str, ...]  # pytest selection (files or node ids) run against every mutant
    patterns: tuple[str, ...] = ()  # mutant-name globs; empty = every mutant of the file
    note: str = field(default="")


MODULES: dict[str, Target] = {
    "kinematics": Target("src/jettag/physics/kinematics.py",
                         ("tests/test_properties.py", "tests/test_pairs.py")),
    "pairs": Target("src/jettag/physics/pairs.py", ("tests/test_pairs.py", "tests/test_properties.py")),
    "features": Target("src/jettag/data/features.py", ("tests/test_features.py", "tests/test_properties.py")),
    "metrics": Target(
        "src/jettag/evaluate/metrics.py",
        ("tests/test_metrics.py", "tests/test_raises_metrics.py", "tests/test_properties.py"),
    ),
    "checkpoint": Target(
        "src/jettag/train/checkpoint.py",
        ("tests/test_resume_state.py", "tests/test_raises_checkpoint.py"),
    ),
    "reader-labels": Target(
        "src/jettag/data/formats/common.py",
        ("tests/test_reader_labels.py", "tests/test_raises_readers.py"),
        patterns=(
            "jettag.data.formats.common.x__row_of_flat*",
            "jettag.data.formats.common.x__first_row*",
            "jettag.data.formats.common.x__one_hot_to_label*",
            "jettag.data.formats.common.x__binary_label*",
            "jettag.data.formats.common.x__require_numbers*",
            "jettag.data.formats.common.x__jagged_float*",
            "jettag.data.formats.common.x__flat_column*",
        ),
        note="the label and row-number error paths shared by every reader",
    ),
    "attention-mask": Target(
        "src/jettag/models/layers.py",
        ("tests/test_attention_mask.py", "tests/test_models.py"),
        patterns=("jettag.models.layers.x_key_padding_bias*", "jettag.models.layers.xǁAttentionǁ*",
                  "jettag.models.layers.xǁValueAttentionǁforward*",
                  "jettag.models.layers.xǁClassAttentionHeadǁpool*"),
        note="the padding bias, the attention that applies it, the class token's mask",
    ),
}


def _copy_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the working tree, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _narrowed_pyproject(text: str, target: Target) -> str:
    """pyproject.toml with its [tool.mutmut] table replaced by one for this target only."""
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    conf = {
        "source_paths": ["src/jettag"],
        "only_mutate": [target.source],
        "also_copy": ["configs", "benchmarks/configs"],
        "process_isolation": "forkserver",
        "forkserver_warmup": "collect",
        "timeout_constant": 10.0,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts="],
        "pytest_add_cli_args_test_selection": list(target.tests),
    }
    # JSON scalars and lists of strings are valid TOML values
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in conf.items()]
    return text.rstrip() + "\n\n" + "\n".join(lines) + "\n"


def results(workdir: Path, mutmut: str) -> dict[str, str]:
    """Status of every mutant mutmut knows in workdir (name -> killed/survived/no tests/...)."""
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=workdir, capture_output=True,
                         text=True).stdout
    found = (re.match(r"\s+(\S+): (.+)$", line) for line in out.splitlines())
    return {m.group(1): m.group(2).strip() for m in found if m}


def _selected(status: dict[str, str], target: Target) -> dict[str, str]:
    """The mutants of the target's functions (all of the file when it names none)."""
    if not target.patterns:
        return status
    return {k: v for k, v in status.items() if any(fnmatch.fnmatch(k, p) for p in target.patterns)}


def _sample(status: dict[str, str], target: Target, n: int, seed: int) -> list[str]:
    """A seeded random sample of n of the target's mutants (the same names for the same file)."""
    names = sorted(_selected(status, target))
    return sorted(random.Random(seed).sample(names, min(n, len(names))))


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (the sampled score's uncertainty)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", nargs="?", choices=sorted(MODULES))
    parser.add_argument("--list", action="store_true", help="print the modules and their test selections")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="summarise an earlier run in --workdir")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="run a random sample of N of the module's mutants (seeded; a workdir that "
                             "exists is kept, and mutants already checked there are not run again); the "
                             "score is then over the sample, with its 95%% interval")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--rerun", action="store_true",
                        help="in an earlier run's --workdir: take the tests as they are now and rerun only "
                             "the mutants that were not killed (mutmut keeps a mutant's earlier result when "
                             "the tests that reach it did not change)")
    args = parser.parse_args(argv)
    if args.list or args.module is None:
        for name, t in MODULES.items():
            print(f"{name:15s} {t.source}  tests: {' '.join(t.tests)}  {' '.join(t.patterns)}")
        return 0
    target = MODULES[args.module]
    workdir = args.workdir or Path("/tmp/jettag-mutation") / args.module
    mutmut = str(Path(sys.executable).parent / "mutmut")
    started = time.monotonic()
    if args.rerun:
        left = [k for k, v in _selected(results(workdir, mutmut), target).items()
                if v not in ("killed", "not checked")]
        for dest in (workdir / "tests", workdir / "mutants" / "tests"):
            shutil.copytree(ROOT / "tests", dest, dirs_exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if left:
            subprocess.run([mutmut, "run", "--max-children", str(args.max_children), *left],
                           cwd=workdir, env=env, check=False)
    elif args.sample and not args.report_only:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if not (workdir / "mutants").is_dir():
            workdir.mkdir(parents=True, exist_ok=True)
            _copy_tree(workdir)
            pyproject = workdir / "pyproject.toml"
            pyproject.write_text(_narrowed_pyproject(pyproject.read_text(), target))
            # generate the mutants and collect which tests reach each function; runs no mutant
            subprocess.run([mutmut, "run", "--max-children", "1", "jettag.no-such-mutant"], cwd=workdir,
                           env=env, check=False)
        known = results(workdir, mutmut)
        todo = [k for k in _sample(known, target, args.sample, args.seed) if known[k] == "not checked"]
        if todo:
            subprocess.run([mutmut, "run", "--max-children", str(args.max_children), *todo],
                           cwd=workdir, env=env, check=False)
    elif not args.report_only:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        _copy_tree(workdir)
        pyproject = workdir / "pyproject.toml"
        pyproject.write_text(_narrowed_pyproject(pyproject.read_text(), target))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([mutmut, "run", "--max-children", str(args.max_children), *target.patterns],
                       cwd=workdir, env=env, check=False)
    status = _selected(results(workdir, mutmut), target)
    if args.sample:
        status = {k: status[k] for k in _sample(status, target, args.sample, args.seed)}
    counts = collections.Counter(status.values())
    killed, survived = counts.get("killed", 0), counts.get("survived", 0)
    reached = killed + survived
    print(f"\n{args.module}: {target.source} {' '.join(target.patterns)}")
    print(f"tests: {' '.join(target.tests)}")
    print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if reached:
        print(f"score: killed/(killed+survived) = {killed}/{reached} = {100 * killed / reached:.1f}%")
        if args.sample:
            lo, hi = _wilson(killed, reached)
            print(f"sample of {len(status)} (seed {args.seed}): 95% Wilson interval "
                  f"{100 * lo:.1f}-{100 * hi:.1f}%")
    for name, st in sorted(status.items()):
        if st != "killed":
            print(f"  {st:12s} {name}")
    if not args.report_only:
        print(f"wall time: {time.monotonic() - started:.0f} s (workdir {workdir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

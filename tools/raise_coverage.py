"""Share of the `raise` statements in src/jettag that the test suite executes.

Every `ast.Raise` node in src/jettag is one raise; it counts as triggered when coverage recorded its
first line as executed. Usage (from the repository root):

    PYTHONPATH=src python -m coverage run --source=jettag -m pytest -q
    python tools/raise_coverage.py                 # reads ./.coverage
    python tools/raise_coverage.py --data-file F   # another coverage data file

Prints a per-module table, the total, and every untriggered raise as path:line with its source line.
Exit status 1 when the total is below --min (a percentage, default 0: report only).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from coverage import CoverageData

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "jettag"


@dataclass(frozen=True)
class Raise:
    path: Path  # absolute path of the module
    line: int  # first line of the raise statement (the line coverage records)
    text: str  # that source line, stripped


def find_raises(package: Path) -> list[Raise]:
    """Every raise statement under package, in path then line order."""
    found: list[Raise] = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Raise):
                found.append(Raise(path, node.lineno, lines[node.lineno - 1].strip()))
    return sorted(found, key=lambda r: (str(r.path), r.line))


def executed_lines(data_file: Path) -> dict[Path, set[int]]:
    """Executed line numbers per measured file (resolved absolute paths) from a coverage data file."""
    if not data_file.exists():
        raise SystemExit(f"{data_file}: no coverage data file (run `python -m coverage run ...` first)")
    data = CoverageData(basename=str(data_file))
    data.read()
    measured = {Path(name).resolve(): set(data.lines(name) or ()) for name in data.measured_files()}
    if not measured:
        raise SystemExit(f"{data_file}: the coverage data holds no measured files")
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-file", type=Path, default=Path(".coverage"), help="coverage data file")
    parser.add_argument("--package", type=Path, default=PACKAGE, help="package directory to scan")
    parser.add_argument("--min", type=float, default=0.0, help="fail (exit 1) below this percentage")
    args = parser.parse_args(argv)

    package = args.package.resolve()
    raises = find_raises(package)
    executed = executed_lines(args.data_file)
    if not any(path.is_relative_to(package) for path in executed):
        raise SystemExit(f"{args.data_file}: no file under {package} was measured (wrong PYTHONPATH?)")

    per_module: dict[str, list[int]] = {}  # module -> [triggered, total]
    missed: list[Raise] = []
    for r in raises:
        module = str(r.path.relative_to(package.parent))
        counts = per_module.setdefault(module, [0, 0])
        counts[1] += 1
        if r.line in executed.get(r.path, set()):
            counts[0] += 1
        else:
            missed.append(r)

    width = max(len(m) for m in per_module)
    print(f"{'module':<{width}}  triggered  total")
    for module, (hit, total) in per_module.items():
        print(f"{module:<{width}}  {hit:>9}  {total:>5}")
    total = len(raises)
    hit = total - len(missed)
    share = 100.0 * hit / total if total else 100.0
    print(f"{'TOTAL':<{width}}  {hit:>9}  {total:>5}  ({share:.1f}%)")
    print(f"\nuntriggered raises ({len(missed)}):")
    for r in missed:
        shown = r.path.relative_to(ROOT) if r.path.is_relative_to(ROOT) else r.path
        print(f"  {shown}:{r.line}: {r.text}")
    return 1 if share < args.min else 0


if __name__ == "__main__":
    sys.exit(main())

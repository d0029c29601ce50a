#!/usr/bin/env python3
"""Enforces kvmkit's workspace line-coverage floor (STYLE.md section 7).

Reads coverage_config.json (rust-vmm-ci format):

    {"coverage_score": 84.3, "exclude_path": "src/uapi/|/tests/", "crate_features": ""}

and cargo-tarpaulin's per-file report (``--out Json``; an LCOV file also
works), drops every file outside the workspace (the cargo registry, the
standard library) and every file whose workspace-relative path matches
``exclude_path``, and computes line coverage over the rest. It prints a
per-crate table and the total, exits 1 below the floor, and prints a notice
when the total is more than 0.5 points above it (the PR that raised coverage
raises the floor).

The last line on stdout is always ``coverage X% (floor Y%)`` so that
scripts/test.sh can quote it.

Other modes:
    --feature-args   print the cargo feature arguments that ``crate_features``
                     asks for, one per line (absent: --all-features; "": none;
                     "a,b": --features a,b), and exit.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "coverage_config.json"
DEFAULT_REPORT = ROOT / "target" / "tarpaulin" / "tarpaulin-report.json"
# How far above the floor coverage may rise before we ask for a new floor.
RAISE_MARGIN = 0.5


def fail(msg: str) -> None:
    print(f"coverage: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path} not found")
    except json.JSONDecodeError as e:
        fail(f"{path} is not valid JSON: {e}")
    if not isinstance(cfg, dict):
        fail(f"{path}: expected a JSON object")
    score = cfg.get("coverage_score")
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0 <= score <= 100:
        fail(f"{path}: coverage_score must be a number in 0..100, got {score!r}")
    exclude = cfg.get("exclude_path", "")
    if not isinstance(exclude, str):
        fail(f"{path}: exclude_path must be a string (regex), got {exclude!r}")
    try:
        re.compile(exclude)
    except re.error as e:
        fail(f"{path}: exclude_path is not a valid regex: {e}")
    features = cfg.get("crate_features")
    if features is not None and (not isinstance(features, str) or " " in features):
        fail(f"{path}: crate_features must be a comma-separated string without spaces")
    return cfg


def feature_args(cfg: dict) -> list[str]:
    """Cargo arguments for crate_features, in rust-vmm-ci's meaning."""
    if "crate_features" not in cfg:
        return ["--all-features"]
    features = cfg["crate_features"]
    if features == "":
        return []
    return ["--features", features]


def read_tarpaulin_json(path: Path) -> dict[str, tuple[int, int]]:
    """Maps absolute file path -> (covered, coverable) from tarpaulin's JSON."""
    data = json.loads(path.read_text())
    files: dict[str, tuple[int, int]] = {}
    for f in data.get("files", []):
        p = f.get("path")
        if isinstance(p, list):  # tarpaulin stores the path split into components
            p = os.path.join(*p) if p else ""
        traces = f.get("traces", [])
        if "coverable" in f and "covered" in f:
            covered, coverable = int(f["covered"]), int(f["coverable"])
        else:
            coverable = len(traces)
            covered = sum(1 for t in traces if _trace_hits(t) > 0)
        files[str(p)] = (covered, coverable)
    return files


def _trace_hits(trace: dict) -> int:
    stats = trace.get("stats", {})
    if isinstance(stats, dict):
        for v in stats.values():
            if isinstance(v, (int, float)):
                return int(v)
    return 0


def read_lcov(path: Path) -> dict[str, tuple[int, int]]:
    """Maps absolute file path -> (covered, coverable) from an LCOV file."""
    files: dict[str, tuple[int, int]] = {}
    current = None
    lines: dict[int, int] = {}
    for raw in path.read_text().splitlines():
        if raw.startswith("SF:"):
            current, lines = raw[3:], {}
        elif raw.startswith("DA:") and current is not None:
            num, hits = raw[3:].split(",")[:2]
            lines[int(num)] = max(lines.get(int(num), 0), int(float(hits)))
        elif raw == "end_of_record" and current is not None:
            prev = files.get(current, (0, 0))
            files[current] = (
                prev[0] + sum(1 for h in lines.values() if h > 0),
                prev[1] + len(lines),
            )
            current = None
    return files


def crate_of(rel: str) -> str:
    """The top-level directory a file belongs to: crates/<c>, arch-<a>, tests, ..."""
    parts = rel.split("/")
    if len(parts) == 1:
        return "."
    if parts[0] == "crates" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def pct(covered: int, coverable: int) -> float:
    return 100.0 * covered / coverable if coverable else 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help="tarpaulin-report.json or an lcov.info (default: %(default)s)",
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="workspace root")
    ap.add_argument("--feature-args", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every file")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and stderr in order

    cfg = load_config(args.config)
    if args.feature_args:
        for arg in feature_args(cfg):
            print(arg)
        return 0

    floor = float(cfg["coverage_score"])
    exclude = cfg.get("exclude_path", "")
    exclude_re = re.compile(exclude) if exclude else None

    if not args.report.is_file():
        fail(f"no coverage report at {args.report} (run scripts/test.sh first)")
    if args.report.suffix == ".json":
        files = read_tarpaulin_json(args.report)
    else:
        files = read_lcov(args.report)

    root = args.root.resolve()
    per_crate: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_file: list[tuple[str, int, int]] = []
    outside = excluded = 0
    for abs_path, (covered, coverable) in files.items():
        p = Path(abs_path)
        if not p.is_absolute():
            p = root / p
        try:
            rel = p.resolve().relative_to(root).as_posix()
        except ValueError:
            outside += 1  # the cargo registry, std, ...: not ours
            continue
        if rel.startswith("target/"):
            outside += 1  # generated by build scripts
            continue
        if exclude_re and exclude_re.search(rel):
            excluded += 1
            if args.verbose:
                print(f"excluded by exclude_path: {rel} ({covered}/{coverable})")
            continue
        c = per_crate[crate_of(rel)]
        c[0] += covered
        c[1] += coverable
        per_file.append((rel, covered, coverable))

    total_cov = sum(c[0] for c in per_crate.values())
    total_all = sum(c[1] for c in per_crate.values())
    if total_all == 0:
        fail(f"no coverable lines left in {args.report} after exclusions")
    total = pct(total_cov, total_all)

    width = max([len("total")] + [len(k) for k in per_crate])
    print(f"coverage by crate ({args.report.name}; {excluded} file(s) excluded by "
          f"exclude_path, {outside} outside the workspace sources):")
    print(f"  {'crate':<{width}}  {'lines':>11}  {'cover':>6}")
    for name in sorted(per_crate):
        cov, all_ = per_crate[name]
        print(f"  {name:<{width}}  {cov:>5}/{all_:<5}  {pct(cov, all_):>5.1f}%")
    # The total is truncated to one decimal, the precision of the floor, so
    # that it never shows more than was reached.
    shown = math.floor(total * 10) / 10
    print(f"  {'total':<{width}}  {total_cov:>5}/{total_all:<5}  {shown:>5.1f}%")
    if args.verbose:
        print("files:")
        for rel, cov, all_ in sorted(per_file):
            print(f"  {rel}: {cov}/{all_} {pct(cov, all_):.1f}%")

    status = 0
    if shown < floor:
        print(f"coverage: FAILED: {total:.2f}% is below the floor {floor:.1f}% "
              f"set in coverage_config.json", file=sys.stderr)
        status = 1
    elif shown > floor + RAISE_MARGIN:
        print(f"coverage: notice: {shown:.1f}% is more than {RAISE_MARGIN} above the floor; "
              f"raise the floor to {shown:.1f} in coverage_config.json")
    print(f"coverage {shown:.1f}% (floor {floor:.1f}%)")
    return status


if __name__ == "__main__":
    sys.exit(main())

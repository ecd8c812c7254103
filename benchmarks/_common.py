"""Helpers shared by the benchmark scripts (not part of the routewise package).

Kept dependency-light: only numpy and rich are imported at module level; every optional peer
package (vowpalwabbit, mabwiser, scikit-learn) is imported lazily through :func:`require`, which
turns a missing package into a clear message pointing at ``pip install -e .[bench]``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"

# module name -> pip distribution name
_DISTS = {
    "vowpalwabbit": "vowpalwabbit",
    "mabwiser": "mabwiser",
    "sklearn": "scikit-learn",
    "river": "river",
    "routewise": "routewise",
}


class MissingDependency(RuntimeError):
    """An optional peer package needed by a learner or dataset is not installed."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` with an install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist = _DISTS.get(top, top)
        hint = (
            "install the benchmark extras: pip install -e .[bench]"
            if top != "routewise"
            else "is the routewise package installed (pip install -e .) and complete?"
        )
        raise MissingDependency(
            f"{module!r} cannot be imported ({exc}); it comes from the {dist!r} package — {hint}"
        ) from None


def require_controller() -> ModuleType:
    """Import routewise and check the library API the benchmarks use is there."""
    rw = require("routewise")
    missing = [n for n in ("Controller", "Arm", "Outcome") if not hasattr(rw, n)]
    if missing:
        raise MissingDependency(
            f"routewise is importable but does not export {', '.join(missing)} yet "
            "(is the Controller written?)"
        )
    return rw


def quiet_logs() -> None:
    """Drop routewise's structlog info lines (one ``controller.open`` per Controller would
    flood the output and break the progress bar); warnings and errors still show."""
    import logging

    try:
        import structlog
    except ImportError:
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every result file."""
    dists = ["routewise", "numpy", "scipy", "river", "scikit-learn", "vowpalwabbit", "mabwiser"]
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {d: version_of(d) for d in dists},
        "argv": sys.argv,
        "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_json(prefix: str, payload: dict[str, Any], out: str | None) -> Path:
    """Write ``payload`` to ``out`` (or ``benchmarks/out/<prefix>-<utc stamp>.json``) and refresh
    ``benchmarks/out/<prefix>-latest.json``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(out) if out else OUT_DIR / f"{prefix}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=_json_default)
    path.write_text(text + "\n")
    if not out:
        (OUT_DIR / f"{prefix}-latest.json").write_text(text + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def split_csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"squarecb:gamma_scale=50:lam=0.5"`` → ``("squarecb", {"gamma_scale": 50, "lam": 0.5})``
    (the library's :func:`routewise.bandits.split_policy_spec`; its ``PolicyError`` is a
    ``ValueError``)."""
    from routewise.bandits import split_policy_spec

    return split_policy_spec(spec)


_NAME_RE = re.compile(r"[^A-Za-z0-9_.\-]+")


def sanitize_names(names: list[str]) -> list[str]:
    """Feature names safe as dict keys *and* Vowpal Wabbit feature names (no spaces, ``:``,
    ``|``), made unique."""
    out: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(names):
        s = _NAME_RE.sub("_", str(n)).strip("_") or f"f{i}"
        base, j = s, 1
        while s in seen:
            j += 1
            s = f"{base}_{j}"
        seen.add(s)
        out.append(s)
    return out


class OnlineStandardizer:
    """Welford running mean/variance per feature; ``__call__(x)`` first updates the statistics
    with ``x`` and then returns ``(x − mean) / sd`` (0 where the sd is still 0).

    This is what the peer learners that do not standardize by themselves (river's
    LinUCBDisjoint, MABWiser's LinUCB, bare routewise policies) get, mirroring the routewise
    Controller's own featurizer (bias + online standardization of numbers). With the current
    row included, |z| ≤ sqrt(n − 1), so early rows cannot blow up.
    """

    def __init__(self, d: int) -> None:
        self.n = 0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if self.n < 2:
            return np.zeros_like(x)
        sd = np.sqrt(self.m2 / (self.n - 1))
        z = np.zeros_like(x)
        np.divide(x - self.mean, sd, out=z, where=sd > 1e-12)
        return z


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def proc_status(pid: int) -> dict[str, float]:
    """``VmRSS``, ``VmHWM`` (MB) and ``Threads`` of process ``pid`` (from ``/proc/<pid>/status``)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024.0
        elif key == "Threads":
            out[key] = float(value)
    return out

#!/usr/bin/env python
"""Contextual-bandit bake-off: routewise vs Vowpal Wabbit, river and MABWiser.

Protocol (Bietti, Agarwal & Langford, "A Contextual Bandit Bake-off", JMLR 22(133), 2021):
every multiclass dataset becomes a K-armed contextual bandit — one arm per class, reward 1 when
the chosen arm is the example's label and 0 otherwise. Each learner sees the examples one at a
time in a shuffled order (progressive validation): it picks an arm *with its own exploration*,
is told only the reward of that arm, learns, and moves on. The metric is the mean progressive
reward over the stream; the bake-off reports the same number as PV loss = 1 − reward.

Streams: for seed s the stream is the first ``--max-rows`` rows of
``numpy.random.default_rng(s).permutation(n)``; every learner sees exactly the same streams, and
each learner is itself seeded with s. ``--max-rows`` (default 5000) only bites on river's
Shuttle (49,097 rows → a random 5,000-row subsample per seed) and Bananas (5,300 → 5,000).

Learners (contexts are the raw feature values of each row):

* ``rw:<policy>`` — routewise through the public ``routewise.Controller`` (store=None, reward =
  correctness only, so reward = 1 iff valid), one Controller per (dataset, seed); context =
  ``{feature_name: raw value}``; the Controller featurizes (bias + online standardization).
  ``rw:default`` is ``policy=None`` (the tuned default).
* ``vw:squarecb`` — Vowpal Wabbit ``--cb_explore_adf --squarecb -q sa`` (ADF text: a shared
  line with the raw features in namespace ``s``, one line ``|a a<k>`` per class; ``-q sa`` gives
  every action its own weights over the shared features); the action is sampled from VW's pmf
  with a seeded numpy RNG; learning uses ``0:cost:prob`` on the chosen action with cost = 1 −
  reward (the bake-off's 0/1 loss encoding; ``--vw-cost neg`` uses −reward instead). VW gets
  the same online standardization as river/MABWiser (``--vw-features std``, default): VW's
  normalized updates rescale features but do not centre them, and on raw values (offsets like
  Shuttle's ≈50) VW stays near the majority rate; ``--vw-features raw`` (or ``std,raw``) shows
  the out-of-the-box number.
* ``river:LinUCBDisjoint`` — ``river.bandit.LinUCBDisjoint`` with its defaults. river does not
  standardize, so it gets the same online standardization + a bias feature (see
  ``_common.OnlineStandardizer``).
* ``mabwiser:LinUCB`` — ``MAB(LearningPolicy.LinUCB())`` with its defaults, ``partial_fit``
  after every row (``--mabwiser-batch B`` to refit every B rows), same standardization + bias.
  Before the first fit it has no model, so the first row's arm is uniform at random.
* ``bare:<policy>`` (opt-in, ``--learners bare``) — the routewise policy objects with the same
  benchmark-side standardization, without the Controller (to separate policy from plumbing).

Example::

    python benchmarks/bakeoff.py                              # full default run
    python benchmarks/bakeoff.py --datasets iris,wine --seeds 2 --max-rows 500
    python benchmarks/bakeoff.py --learners routewise --policies squarecb,linucb:alpha=0.3
    python benchmarks/bakeoff.py --max-rows 0                 # no cap (Shuttle: 49,097 rows)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import (
    MissingDependency,
    OnlineStandardizer,
    environment,
    parse_policy_spec,
    quiet_logs,
    require,
    require_controller,
    sanitize_names,
    split_csv,
    write_json,
)

# Reward that equals 1 for valid=True and 0 otherwise (correctness only, no gate).
CORRECTNESS_ONLY = {
    "preset": "balanced",  # the budgets come from the preset; they are irrelevant at weight 0
    "w_correctness": 1.0,
    "w_latency": 0.0,
    "w_cost": 0.0,
    "gate": False,
}

ALL_DATASETS = [
    "digits",
    "wine",
    "breast_cancer",
    "iris",
    "phishing",
    "image_segments",
    "bananas",
    "shuttle",
]
DEFAULT_POLICIES = "default,squarecb,linucb,lints,epsilon_greedy"
LEARNER_FAMILIES = ["routewise", "vw", "river", "mabwiser", "bare"]
DEFAULT_FAMILIES = "routewise,vw,river,mabwiser"


# --------------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    name: str
    X: np.ndarray  # (n, d) float64, raw values
    y: np.ndarray  # (n,) int class index in [0, K)
    names: list[str]  # sanitized feature names (dict keys / VW feature names)
    classes: list[Any]  # original label of each class index
    source: str

    @property
    def k(self) -> int:
        return len(self.classes)


def load_dataset(name: str) -> Dataset:
    if name in {"digits", "wine", "breast_cancer", "iris"}:
        skd = require("sklearn.datasets")
        bunch = getattr(skd, f"load_{name}")()
        X = np.asarray(bunch.data, dtype=np.float64)
        fn = getattr(bunch, "feature_names", None)
        raw_names = [str(n) for n in fn] if fn is not None else [f"f{i}" for i in range(X.shape[1])]
        labels = np.asarray(bunch.target)
        source = f"sklearn.datasets.load_{name}"
    else:
        rds = require("river.datasets")
        cls = {
            "phishing": "Phishing",
            "image_segments": "ImageSegments",
            "bananas": "Bananas",
            "shuttle": "Shuttle",
        }[name]
        rows = list(getattr(rds, cls)())
        raw_names = list(rows[0][0].keys())
        for x, _ in rows:  # add keys that appear later (none in these datasets)
            for key in x:
                if key not in raw_names:
                    raw_names.append(key)
        X = np.array([[float(x.get(k, 0.0)) for k in raw_names] for x, _ in rows], dtype=np.float64)
        labels = np.array([y for _, y in rows], dtype=object)
        source = f"river.datasets.{cls}"
    classes = sorted(set(labels.tolist()), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels.tolist()], dtype=np.int64)
    if not np.isfinite(X).all():
        raise ValueError(f"dataset {name}: non-finite feature values")
    return Dataset(name, X, y, sanitize_names([str(n) for n in raw_names]), classes, source)


# --------------------------------------------------------------------------------- learners
class Learner(Protocol):
    label: str

    def start(self, ds: Dataset, seed: int) -> None: ...
    def act(self, ctx: dict[str, float], x: np.ndarray) -> int: ...
    def learn(self, reward: float) -> None: ...
    def finish(self) -> None: ...


class ControllerLearner:
    """routewise through the public Controller API (what a user writes)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.label = f"rw:{policy}"
        self.rw = require_controller()
        self.name, self.params = parse_policy_spec(policy)
        if self.params:  # validate now rather than mid-run
            require("routewise.bandits").make_policy(self.name, **self.params)

    def start(self, ds: Dataset, seed: int) -> None:
        rw = self.rw
        self.arms = [rw.Arm(f"class:{k}", "direct_emit") for k in range(ds.k)]
        self.index = {a.id: k for k, a in enumerate(self.arms)}
        policy: Any
        if self.name == "default":
            policy = None  # the Controller's tuned default
        elif self.params:  # a configured Policy object, seeded like the Controller would
            policy = rw.bandits.make_policy(self.name, seed=seed, **self.params)
        else:
            policy = self.name  # a registry name, as a user would pass it
        self.ctl = rw.Controller(
            arms=self.arms, policy=policy, reward=dict(CORRECTNESS_ONLY), store=None, seed=seed
        )

    def act(self, ctx: dict[str, float], x: np.ndarray) -> int:
        self.d = self.ctl.decide(ctx)
        return self.index[self.d.arm.id]

    def learn(self, reward: float) -> None:
        r = self.ctl.feedback(
            self.d.decision_id, self.rw.Outcome(valid=reward > 0.5, latency_ms=0.0, cost_usd=0.0)
        )
        if abs(float(r.reward) - reward) > 1e-9:
            raise RuntimeError(
                f"{self.label}: Controller reward {r.reward!r} != benchmark reward {reward!r} "
                f"with reward config {CORRECTNESS_ONLY}"
            )

    def finish(self) -> None:
        self.ctl.close()


class BarePolicyLearner:
    """A routewise policy object without the Controller (benchmark-side standardization)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.label = f"bare:{policy}"
        self.rb = require("routewise.bandits")
        self.name, self.params = parse_policy_spec(policy)
        if self.name == "default":
            raise MissingDependency(
                "bare:default is not defined (the default lives in the Controller)"
            )
        self.rb.make_policy(self.name, **self.params)  # validate now

    def start(self, ds: Dataset, seed: int) -> None:
        self.pol = self.rb.make_policy(self.name, seed=seed, **self.params)
        self.ids = [f"class:{k}" for k in range(ds.k)]
        self.pol.add_arms(self.ids)
        self.std = OnlineStandardizer(ds.X.shape[1])

    def act(self, ctx: dict[str, float], x: np.ndarray) -> int:
        self.v = np.append(1.0, self.std(x))
        self.a = int(self.pol.select(self.v).index)
        return self.a

    def learn(self, reward: float) -> None:
        self.pol.update(self.ids[self.a], self.v, reward)

    def finish(self) -> None:
        pass


class VWLearner:
    """Vowpal Wabbit cb_explore_adf + SquareCB via pyvw text examples."""

    def __init__(self, cost: str = "loss", extra: str = "", features: str = "std") -> None:
        self.vw_mod = require("vowpalwabbit")
        self.cost = cost
        self.extra = extra
        self.features = features
        self.label = "vw:squarecb" if features == "std" else f"vw:squarecb-{features}"

    def start(self, ds: Dataset, seed: int) -> None:
        args = f"--cb_explore_adf --squarecb -q sa --quiet --random_seed {seed} {self.extra}"
        self.vw = self.vw_mod.Workspace(args.strip())
        self.k = ds.k
        self.names = ds.names
        self.actions = [f"|a a{k}" for k in range(ds.k)]
        self.rng = np.random.default_rng(seed)
        self.std = OnlineStandardizer(ds.X.shape[1]) if self.features == "std" else None

    def act(self, ctx: dict[str, float], x: np.ndarray) -> int:
        vals: Iterable[tuple[str, float]]
        if self.std is not None:
            vals = zip(self.names, self.std(x).tolist(), strict=True)
        else:
            vals = ctx.items()
        feats = " ".join(f"{n}:{v:.9g}" for n, v in vals if v != 0.0)
        self.ex = [f"shared |s {feats}", *self.actions]
        pmf = np.asarray(self.vw.predict(self.ex), dtype=np.float64)
        pmf = pmf / pmf.sum()
        a = int(np.searchsorted(np.cumsum(pmf), self.rng.random() * 1.0, side="right"))
        a = min(a, self.k - 1)
        while pmf[a] <= 0.0:
            a = (a + 1) % self.k
        self.a, self.p = a, float(pmf[a])
        return a

    def learn(self, reward: float) -> None:
        cost = 1.0 - reward if self.cost == "loss" else -reward
        ex = list(self.ex)
        ex[1 + self.a] = f"0:{cost:g}:{self.p:.9g} {self.actions[self.a]}"
        self.vw.learn(ex)

    def finish(self) -> None:
        self.vw.finish()


class RiverLinUCBLearner:
    """river.bandit.LinUCBDisjoint (defaults) on standardized features + bias."""

    def __init__(self) -> None:
        self.bandit = require("river.bandit")
        self.label = "river:LinUCBDisjoint"

    def start(self, ds: Dataset, seed: int) -> None:
        self.pol = self.bandit.LinUCBDisjoint(seed=seed)
        self.arm_ids = list(range(ds.k))
        self.names = ds.names
        self.std = OnlineStandardizer(ds.X.shape[1])

    def act(self, ctx: dict[str, float], x: np.ndarray) -> int:
        z = self.std(x)
        self.z = dict(zip(self.names, z.tolist(), strict=True))
        self.z["__bias__"] = 1.0
        self.a = int(self.pol.pull(self.arm_ids, context=self.z))
        return self.a

    def learn(self, reward: float) -> None:
        self.pol.update(self.a, self.z, reward)

    def finish(self) -> None:
        pass


class MabwiserLinUCBLearner:
    """MABWiser LinUCB (defaults), partial_fit every ``batch`` rows, standardized + bias."""

    def __init__(self, batch: int = 1) -> None:
        self.mab_mod = require("mabwiser.mab")
        self.batch = max(1, batch)
        self.label = "mabwiser:LinUCB"

    def start(self, ds: Dataset, seed: int) -> None:
        m = self.mab_mod
        self.mab = m.MAB(
            arms=list(range(ds.k)), learning_policy=m.LearningPolicy.LinUCB(), seed=seed
        )
        self.k = ds.k
        self.rng = np.random.default_rng(seed)
        self.std = OnlineStandardizer(ds.X.shape[1])
        self.fitted = False
        self.buf_a: list[int] = []
        self.buf_r: list[float] = []
        self.buf_x: list[np.ndarray] = []

    def act(self, ctx: dict[str, float], x: np.ndarray) -> int:
        self.z = np.append(self.std(x), 1.0)
        if self.fitted:
            self.a = int(self.mab.predict(self.z[None, :]))
        else:
            self.a = int(self.rng.integers(self.k))
        return self.a

    def learn(self, reward: float) -> None:
        self.buf_a.append(self.a)
        self.buf_r.append(reward)
        self.buf_x.append(self.z)
        if len(self.buf_a) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self.buf_a:
            self.mab.partial_fit(self.buf_a, self.buf_r, np.vstack(self.buf_x))
            self.fitted = True
            self.buf_a, self.buf_r, self.buf_x = [], [], []

    def finish(self) -> None:
        self._flush()


def build_learners(args: argparse.Namespace, console: Any) -> list[Callable[[], Learner]]:
    """Factories (one fresh learner per dataset × seed), checked eagerly for missing packages:
    a missing peer package is an error when its learner was asked for explicitly
    (``--learners``), and a warning (learner skipped) in the default line-up."""
    from rich.markup import escape

    families = split_csv(args.learners)
    unknown = [f for f in families if f not in LEARNER_FAMILIES]
    if unknown:
        raise SystemExit(f"--learners: unknown {unknown}; choose from {LEARNER_FAMILIES}")
    explicit = args.learners != DEFAULT_FAMILIES
    policies = split_csv(args.policies)
    if any(f in families for f in ("routewise", "bare")):
        try:
            registry = sorted(require("routewise.bandits").REGISTRY)
        except MissingDependency as exc:
            raise SystemExit(f"error: {exc}") from None
        try:
            names = [parse_policy_spec(p)[0] for p in policies]
        except ValueError as exc:
            raise SystemExit(f"--policies: {exc}") from None
        unknown_p = [p for p in names if p != "default" and p not in registry]
        if unknown_p:
            raise SystemExit(f"--policies: unknown {unknown_p}; registered: {registry}")
    factories: list[Callable[[], Learner]] = []

    def add(make: Callable[[], Learner]) -> None:
        try:
            make()  # import check (and constructor validation)
        except routewise_errors() as exc:
            raise SystemExit(f"error: {exc}") from None
        except MissingDependency as exc:
            if explicit:
                raise SystemExit(f"error: {exc}") from None
            console.print(f"[yellow]skipping a learner: {escape(str(exc))}[/yellow]")
            return
        factories.append(make)

    for fam in families:
        if fam == "routewise":
            for p in policies:
                add(partial(ControllerLearner, p))
        elif fam == "bare":
            for p in policies:
                if p != "default":
                    add(partial(BarePolicyLearner, p))
        elif fam == "vw":
            for feat in split_csv(args.vw_features):
                if feat not in ("std", "raw"):
                    raise SystemExit(f"--vw-features: unknown {feat!r}; choose std and/or raw")
                add(partial(VWLearner, cost=args.vw_cost, extra=args.vw_args, features=feat))
        elif fam == "river":
            add(RiverLinUCBLearner)
        elif fam == "mabwiser":
            add(lambda: MabwiserLinUCBLearner(batch=args.mabwiser_batch))
    if not factories:
        raise SystemExit("error: no learner is available")
    return factories


def routewise_errors() -> tuple[type[BaseException], ...]:
    """routewise's own error types (bad policy parameters …), if routewise imports."""
    try:
        from routewise.errors import RoutewiseError
    except ImportError:
        return ()
    return (RoutewiseError,)


# --------------------------------------------------------------------------------- protocol
def run_stream(
    learner: Learner,
    ds: Dataset,
    order: np.ndarray,
    ctxs: list[dict[str, float]],
    seed: int,
    tick: Callable[[int], None],
) -> tuple[float, float, int]:
    """Progressive validation over one shuffled stream → (mean reward, seconds, n)."""
    X, y = ds.X[order], ds.y[order]
    t0 = time.perf_counter()
    learner.start(ds, seed)
    total = 0.0
    n = len(order)
    for i in range(n):
        a = learner.act(ctxs[i], X[i])
        r = 1.0 if a == y[i] else 0.0
        learner.learn(r)
        total += r
        if (i + 1) % 250 == 0:
            tick(250)
    learner.finish()
    secs = time.perf_counter() - t0
    tick(n % 250)
    return total / n, secs, n


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bakeoff.py",
        description="Supervised-to-bandit bake-off (Bietti, Agarwal & Langford, JMLR 2021): "
        "routewise (via Controller) vs Vowpal Wabbit SquareCB, river LinUCBDisjoint and "
        "MABWiser LinUCB. Metric: mean progressive reward (PV loss = 1 − reward).",
        epilog=__doc__,
        formatter_class=_HelpFormatter,
    )
    ap.add_argument(
        "--datasets",
        default=",".join(ALL_DATASETS),
        help="comma-separated subset of: " + ", ".join(ALL_DATASETS),
    )
    ap.add_argument(
        "--learners",
        default=DEFAULT_FAMILIES,
        help="comma-separated families: "
        + ", ".join(LEARNER_FAMILIES)
        + " ('bare' = routewise policy objects without the Controller)",
    )
    ap.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help="routewise policies ('default' = policy=None, the tuned default); a policy may "
        "carry parameters as name:key=value[:key=value], e.g. squarecb:gamma_scale=50 or "
        "linucb:alpha=0.3 (a configured Policy object is then passed to the Controller)",
    )
    ap.add_argument("--seeds", type=int, default=3, help="number of shuffles (seeds 0..N-1)")
    ap.add_argument("--seed-offset", type=int, default=0, help="first seed")
    ap.add_argument(
        "--max-rows",
        type=int,
        default=5000,
        help="cap per dataset stream (random subsample after shuffling; 0 = no cap)",
    )
    ap.add_argument(
        "--vw-cost",
        choices=["loss", "neg"],
        default="loss",
        help="VW cost encoding: loss = 1−reward (bake-off 0/1), neg = −reward",
    )
    ap.add_argument(
        "--vw-args", default="", help="extra Vowpal Wabbit arguments, e.g. --vw-args='-l 0.1'"
    )
    ap.add_argument(
        "--vw-features",
        default="std",
        help="VW input: 'std' = the same online standardization the river/MABWiser learners "
        "get, 'raw' = raw values (VW out of the box; normalized updates rescale but do not "
        "centre); 'std,raw' runs both",
    )
    ap.add_argument(
        "--mabwiser-batch", type=int, default=1, help="MABWiser partial_fit every B rows"
    )
    ap.add_argument(
        "--out", default=None, help="JSON output path (None: benchmarks/out/bakeoff-<utc>.json)"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console()
    quiet_logs()
    datasets = split_csv(args.datasets)
    bad = [d for d in datasets if d not in ALL_DATASETS]
    if bad:
        raise SystemExit(f"--datasets: unknown {bad}; choose from {ALL_DATASETS}")
    if args.seeds < 1:
        raise SystemExit("--seeds: must be >= 1")
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))

    try:
        loaded = [load_dataset(d) for d in datasets]
    except MissingDependency as exc:
        raise SystemExit(f"error: {exc}") from None
    factories = build_learners(args, console)
    labels = [f().label for f in factories]

    cap = args.max_rows if args.max_rows > 0 else None
    streams: dict[tuple[str, int], np.ndarray] = {}
    for ds in loaded:
        for s in seeds:
            streams[(ds.name, s)] = np.random.default_rng(s).permutation(len(ds.y))[:cap]
    total_rows = sum(len(o) for o in streams.values()) * len(factories)

    results: dict[str, dict[str, dict[str, Any]]] = {ds.name: {} for ds in loaded}
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
    )
    with progress:
        task = progress.add_task("bake-off", total=total_rows)
        for ds in loaded:
            for s in seeds:
                order = streams[(ds.name, s)]
                ctxs = [dict(zip(ds.names, row, strict=True)) for row in ds.X[order].tolist()]
                for make in factories:
                    learner = make()
                    progress.update(task, description=f"{ds.name} s={s} {learner.label}")
                    reward, secs, n = run_stream(
                        learner, ds, order, ctxs, s, lambda k: progress.advance(task, k)
                    )
                    cell = results[ds.name].setdefault(
                        learner.label, {"reward": [], "seconds": [], "rows": []}
                    )
                    cell["reward"].append(reward)
                    cell["seconds"].append(secs)
                    cell["rows"].append(n)

    # a wide table: never squeeze the learner columns (rich defaults to 80 columns off a tty)
    need = 58 + sum(max(len(lab), 11) + 3 for lab in labels)
    wide = Console(width=max(console.width, need))
    summary = render(wide, loaded, labels, results, seeds, args)
    payload = {
        "benchmark": "bakeoff",
        "protocol": "supervised-to-bandit progressive validation (Bietti, Agarwal & Langford 2021)",
        "config": {
            "datasets": datasets,
            "learners": labels,
            "seeds": seeds,
            "max_rows": args.max_rows,
            "vw_cost": args.vw_cost,
            "vw_args": args.vw_args,
            "vw_features": args.vw_features,
            "mabwiser_batch": args.mabwiser_batch,
            "routewise_reward": CORRECTNESS_ONLY,
        },
        "datasets": {
            ds.name: {
                "source": ds.source,
                "rows": len(ds.y),
                "rows_used": len(streams[(ds.name, seeds[0])]),
                "features": int(ds.X.shape[1]),
                "classes": ds.k,
                "majority_rate": float(np.bincount(ds.y).max() / len(ds.y)),
            }
            for ds in loaded
        },
        "results": results,
        "summary": summary,
        "environment": environment(),
    }
    path = write_json("bakeoff", payload, args.out)
    console.print(f"results written to [bold]{path}[/bold]")
    return 0


def _mean_sd(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def render(
    console: Any,
    loaded: list[Dataset],
    labels: list[str],
    results: dict[str, dict[str, dict[str, Any]]],
    seeds: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from rich.table import Table

    t = Table(
        title=f"Mean progressive reward (± sd over {len(seeds)} seed(s)); "
        "best per row in bold green",
        caption="PV loss (bake-off metric) = 1 − reward. Reward 1 iff the chosen arm is the label.",
    )
    t.add_column("dataset", style="bold")
    t.add_column("n", justify="right")
    t.add_column("K", justify="right")
    t.add_column("d", justify="right")
    t.add_column("majority", justify="right", style="dim")
    for lab in labels:
        t.add_column(lab, justify="right", no_wrap=True)

    ranks: dict[str, list[float]] = {lab: [] for lab in labels}
    wins: dict[str, int] = dict.fromkeys(labels, 0)
    for ds in loaded:
        stats = {lab: _mean_sd(results[ds.name][lab]["reward"]) for lab in labels}
        best = max(m for m, _ in stats.values())
        order = sorted(labels, key=lambda lab: -stats[lab][0])
        for lab in labels:  # average rank, ties share
            m = stats[lab][0]
            higher = sum(1 for o in labels if stats[o][0] > m + 1e-12)
            tied = sum(1 for o in labels if abs(stats[o][0] - m) <= 1e-12)
            ranks[lab].append(higher + (tied + 1) / 2)
        for lab in labels:
            if stats[lab][0] >= best - 1e-12:
                wins[lab] += 1
        cells = []
        for lab in labels:
            m, sd = stats[lab]
            txt = f"{m:.3f}±{sd:.3f}"
            cells.append(f"[bold green]{txt}[/bold green]" if m >= best - 1e-12 else txt)
        n_used = results[ds.name][order[0]]["rows"][0]
        maj = float(np.bincount(ds.y).max() / len(ds.y))
        t.add_row(ds.name, f"{n_used:,}", str(ds.k), str(ds.X.shape[1]), f"{maj:.3f}", *cells)

    # mean over datasets: per seed average the datasets, then mean ± sd over seeds
    per_seed = {
        lab: [
            float(np.mean([results[ds.name][lab]["reward"][j] for ds in loaded]))
            for j in range(len(seeds))
        ]
        for lab in labels
    }
    overall = {lab: _mean_sd(per_seed[lab]) for lab in labels}
    best = max(m for m, _ in overall.values())
    t.add_section()
    cells = []
    for lab in labels:
        m, sd = overall[lab]
        txt = f"{m:.3f}±{sd:.3f}"
        cells.append(f"[bold green]{txt}[/bold green]" if m >= best - 1e-12 else txt)
    t.add_row("mean over datasets", "", "", "", "", *cells)
    console.print(t)

    s = Table(title="Per-learner summary (sorted by mean reward)")
    for col, j in [
        ("learner", "left"),
        ("mean reward", "right"),
        ("mean PV loss", "right"),
        ("mean rank", "right"),
        ("wins", "right"),
        ("time s", "right"),
        ("µs / row", "right"),
    ]:
        s.add_column(col, justify=j)  # type: ignore[arg-type]
    summary: dict[str, Any] = {}
    for lab in sorted(labels, key=lambda lab: -overall[lab][0]):
        secs = sum(sum(results[ds.name][lab]["seconds"]) for ds in loaded)
        rows = sum(sum(results[ds.name][lab]["rows"]) for ds in loaded)
        m, sd = overall[lab]
        mr = float(np.mean(ranks[lab]))
        summary[lab] = {
            "mean_reward": m,
            "sd_over_seeds": sd,
            "mean_pv_loss": 1.0 - m,
            "mean_rank": mr,
            "wins": wins[lab],
            "seconds": secs,
            "us_per_row": 1e6 * secs / rows,
        }
        s.add_row(
            lab,
            f"{m:.4f}",
            f"{1 - m:.4f}",
            f"{mr:.2f}",
            str(wins[lab]),
            f"{secs:.1f}",
            f"{1e6 * secs / rows:,.0f}",
        )
    console.print(s)
    if not math.isfinite(sum(v["mean_reward"] for v in summary.values())):
        console.print("[red]non-finite results[/red]")
    return summary


if __name__ == "__main__":
    sys.exit(main())

"""Proxy fidelity: does a candidate that wins the short proxy training still win a long one?

    python benchmarks/bench_fidelity.py select --n 12 --out runs/fidelity        # archs under budget
    python benchmarks/bench_fidelity.py train --data synthetic --out runs/fidelity
    python benchmarks/bench_fidelity.py train --data coco128-person --out runs/fidelity
    python benchmarks/bench_fidelity.py report --out runs/fidelity               # taus, table, PNG

select: samples `--pool` random architectures of the space, measures each whole (onnxruntime on
    this CPU, the search's default target), keeps those under `--budget` and picks `--n` of them
    spread evenly over the feasible latency range. Records their MACs, params and the zero-cost
    scores (NASWOT, SynFlow, ZiCo: evaluators/zero_cost.py) of the untrained network.
train: trains every selected architecture at each fidelity of `--steps` (optimizer steps; seed 0)
    and again at `--repeat-steps` with seed 1 (the proxy's repeatability), then at `--long-steps`
    (the reference) on each of `--long-seeds` (default 2: a seed no proxy shares, since a proxy on
    the reference's seed starts from the same weights and sees the same images; a second seed
    measures the reference's own noise). Results are appended to DATA.json after every run: an
    interrupted run resumes where it stopped. Run the two data sets in two processes (one thread each) on two cores, or
    split one set's architectures between processes with `--shard 0/2` and `--shard 1/2`.
    coco128-person is ../shared/data/coco128 restricted to its most frequent class (person: 261
    of its 929 training boxes): a view of symlinked images and filtered labels under --out.
report: Kendall tau-b and Spearman of every ranking (each proxy run, the mean of a proxy's two
    seeds, the training-free scores) against the long run's mAP, with a 95% bootstrap interval
    over the architectures; a scatter plot of proxy against long mAP per set.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COCO128 = ROOT.parent / "shared" / "data" / "coco128"
SETS = ("synthetic", "coco128-person", "coco128")
SCORES = ("macs", "params", "naswot", "synflow", "zico")  # training-free rankings recorded by `select`


def select(args) -> None:
    import torch

    from evaluators.budget import parse_budget
    from evaluators.latency import cpu_name, measure_latency
    from evaluators.zero_cost import training_free_scores
    from nas.models import build_model
    from nas.space import load_space

    budget = parse_budget(args.budget)
    space = load_space(args.space)
    pool = []
    for seed in range(args.pool):
        arch = space.random_arch(seed, 4)
        ms = min(measure_latency(build_model(arch), arch["imgsz"], threads=args.threads).median_ms for _ in range(2))
        print(f"arch {seed}: {ms:.2f} ms", flush=True)
        pool.append({"seed": seed, "arch": arch, "latency_ms": ms})
    feasible = sorted((p for p in pool if p["latency_ms"] <= budget), key=lambda p: p["latency_ms"])
    if len(feasible) < args.n:
        sys.exit(f"only {len(feasible)} of {args.pool} architectures fit {args.budget}: raise --pool")
    picks = [feasible[round(i)] for i in np.linspace(0, len(feasible) - 1, args.n)]  # evenly over the range
    torch.set_num_threads(args.threads or torch.get_num_threads())
    for p in picks:
        # scored at the proxy's training size, on the untrained network (weights of seed 0)
        p["scores"] = training_free_scores(p["arch"], imgsz=args.score_imgsz, seed=0)
        print(f"arch {p['seed']}: {p['scores']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "archs.json").write_text(json.dumps({"budget_ms": budget, "processor": cpu_name(), "pool": len(pool),
                                                "pool_latency_ms": [p["latency_ms"] for p in pool],
                                                "archs": picks}, indent=1))
    print(f"{len(feasible)}/{len(pool)} under {args.budget}; picked {args.n}: "
          f"{[round(p['latency_ms'], 2) for p in picks]} ms")


def person_view(out: Path) -> str:
    """coco128 with only its person boxes, as a data.yaml under `out` (images symlinked)."""
    if not COCO128.exists():
        sys.exit(f"{COCO128} is missing: the real set is not on this machine")
    view = out / "coco128-person"
    for split in ("train2017", "val2017"):
        (view / "images").mkdir(parents=True, exist_ok=True)
        link = view / "images" / split
        if not link.exists():
            link.symlink_to(COCO128 / "images" / split)
        labels = view / "labels" / split
        labels.mkdir(parents=True, exist_ok=True)
        for f in (COCO128 / "labels" / split).glob("*.txt"):
            rows = [r for r in f.read_text().splitlines() if r.split()[:1] == ["0"]]
            (labels / f.name).write_text("".join(r + "\n" for r in rows))
    (view / "data.yaml").write_text("path: .\ntrain: images/train2017\nval: images/val2017\nnames:\n  0: person\n")
    return str(view / "data.yaml")


def data_spec(name: str, out: Path) -> str:
    if name == "synthetic":
        return "synthetic"
    if name == "coco128-person":
        return person_view(out)
    return str(COCO128 / "data.yaml")


def runs_wanted(args) -> list[tuple[int, int]]:
    """(steps, seed) of every training, cheapest first, the long reference last."""
    return ([(s, 0) for s in args.steps] + [(s, 1) for s in args.repeat_steps]
            + [(args.long_steps, seed) for seed in args.long_seeds])


def record_run(path: Path, row: dict, header: dict) -> None:
    """Append one run to DATA.json; locked and merged, so that shards in other processes lose nothing."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = json.loads(path.read_text()) if path.exists() else header
        done["runs"].append(row)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(path)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N): this process trains every N-th architecture, starting at the I-th."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/2") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be in 0..N-1")
    return index, count


def train_all(args) -> None:
    import torch

    from evaluators.data import load_dataset
    from evaluators.train import train
    from nas.models import build_model

    torch.set_num_threads(args.threads or 1)
    out = Path(args.out)
    archs = json.loads((out / "archs.json").read_text())["archs"]
    index, count = args.shard
    archs = archs[index::count]
    spec = data_spec(args.data, out)
    train_set = load_dataset(spec, "train", args.imgsz, augment=True)
    val_set = load_dataset(spec, "val", args.imgsz)
    path = out / f"{args.data}.json"
    header = {"data": spec, "imgsz": args.imgsz, "runs": []}
    done = json.loads(path.read_text()) if path.exists() else header
    have = {(r["arch"], r["steps"], r["seed"]) for r in done["runs"]}
    for steps, seed in runs_wanted(args):
        for a in archs:
            if (a["seed"], steps, seed) in have:
                continue
            torch.manual_seed(seed)
            model = build_model({**a["arch"], "nc": train_set.nc})
            start = time.perf_counter()
            result = train(model, train_set, val=val_set, steps=steps, imgsz=args.imgsz, batch=args.batch,
                           lr=args.lr, seed=seed, val_every=10_000)  # validated once, at the end
            row = {"arch": a["seed"], "steps": steps, "seed": seed, "epochs": result.epochs_run,
                   "map": result.final["map"], "map50": result.final["map50"], "loss": result.final["loss"],
                   "time_s": time.perf_counter() - start}
            record_run(path, row, header)
            print(f"{args.data} arch {a['seed']} steps {steps} seed {seed}: mAP {row['map']:.4f} "
                  f"mAP50 {row['map50']:.4f} ({row['epochs']} epochs, {row['time_s']:.0f} s)", flush=True)


def report(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from rank_stats import bootstrap, kendall_tau_b, spearman

    out = Path(args.out)
    archs = json.loads((out / "archs.json").read_text())["archs"]
    ids = [a["seed"] for a in archs]
    console = Console(width=160)
    figures = {}
    for name in SETS:
        path = out / f"{name}.json"
        if not path.exists():
            continue
        runs = json.loads(path.read_text())["runs"]
        by = {(r["arch"], r["steps"], r["seed"]): r for r in runs}
        long_steps = max(r["steps"] for r in runs)
        proxy_seeds = {r["seed"] for r in runs if r["steps"] != long_steps}
        # the reference: a finished long seed, one that no proxy shares first; another seed measures its noise
        long_seeds = sorted((s for s in {r["seed"] for r in runs if r["steps"] == long_steps}
                             if all((i, long_steps, s) in by for i in ids)), key=lambda s: (s in proxy_seeds, s))
        if not long_seeds:
            console.print(f"{name}: the long runs are not finished; skipped")
            continue
        long_seed = long_seeds[0]
        long = np.array([by[(i, long_steps, long_seed)]["map"] for i in ids])
        rankings = {}
        for steps, seed in sorted({(r["steps"], r["seed"]) for r in runs if r["steps"] != long_steps}):
            if all((i, steps, seed) in by for i in ids):
                rankings[f"proxy {steps} steps, seed {seed}"] = [by[(i, steps, seed)]["map"] for i in ids]
        for steps in sorted({r["steps"] for r in runs if r["steps"] != long_steps}):
            # two seeds averaged: a steadier proxy at twice the cost (compare with one seed at 2x the steps)
            both = [rankings.get(f"proxy {steps} steps, seed {seed}") for seed in (0, 1)]
            if all(both):
                rankings[f"proxy {steps} steps, mean of seeds 0 and 1"] = np.mean(both, axis=0).tolist()
        for score in SCORES:
            rankings[score] = [a["scores"][score] for a in archs]
        rankings["latency"] = [a["latency_ms"] for a in archs]
        table = Table(title=f"{name}: rankings of {len(ids)} architectures against their mAP after "
                            f"{long_steps} steps, seed {long_seed} (long mAP {long.min():.4f}..{long.max():.4f})")
        for col in ("ranking", "Kendall tau-b [95% CI]", "Spearman [95% CI]"):
            table.add_column(col, justify="right")
        rows = {}
        for label, values in rankings.items():
            tau, rho = kendall_tau_b(values, long), spearman(values, long)
            tau_ci, rho_ci = bootstrap(kendall_tau_b, values, long), bootstrap(spearman, values, long)
            rows[label] = {"tau": tau, "tau_ci": tau_ci, "spearman": rho, "spearman_ci": rho_ci}
            table.add_row(label, f"{tau:+.3f} [{tau_ci[0]:+.2f}, {tau_ci[1]:+.2f}]",
                          f"{rho:+.3f} [{rho_ci[0]:+.2f}, {rho_ci[1]:+.2f}]")
        # repeatability: the same proxy, two seeds
        seeds = sorted({(r["steps"]) for r in runs if r["seed"] == 1})
        for steps in seeds:
            a0, a1 = rankings.get(f"proxy {steps} steps, seed 0"), rankings.get(f"proxy {steps} steps, seed 1")
            if a0 and a1:
                tau, ci = kendall_tau_b(a0, a1), bootstrap(kendall_tau_b, a0, a1)
                rows[f"repeatability {steps} steps (seed 0 vs 1)"] = {"tau": tau, "tau_ci": ci}
                table.add_row(f"proxy {steps} steps: seed 0 vs seed 1", f"{tau:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]", "")
        for seed in long_seeds[1:]:  # the reference's own repeatability: the ceiling of any ranking
            other = [by[(i, long_steps, seed)]["map"] for i in ids]
            tau, ci = kendall_tau_b(long, other), bootstrap(kendall_tau_b, long, other)
            rows[f"repeatability {long_steps} steps (seed {long_seed} vs {seed})"] = {"tau": tau, "tau_ci": ci}
            table.add_row(f"reference: seed {long_seed} vs seed {seed}", f"{tau:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]", "")
        console.print(table)
        if long_seed in proxy_seeds:
            console.print(f"{name}: the reference shares seed {long_seed} with proxies: their figures are flattered "
                          "(same initial weights, same image order)")
        cost = {steps: float(np.mean([r["time_s"] for r in runs if r["steps"] == steps]))
                for steps in sorted({r["steps"] for r in runs})}
        console.print(f"{name}: mean training time per architecture: "
                      + ", ".join(f"{s} steps {t:.0f} s" for s, t in cost.items()))
        figures[name] = {"long_steps": long_steps, "long_seed": long_seed, "long_map": long.tolist(), "rankings": rows,
                         "values": rankings, "seconds_per_arch": cost}
    (out / "report.json").write_text(json.dumps(figures, indent=1))
    (out / "report.md").write_text(markdown(figures))
    plot(figures, out / "fidelity.png")
    console.print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {out / 'fidelity.png'}")


def markdown(figures: dict) -> str:
    """The README's table: one row per ranking, one column pair per data set."""
    names = list(figures)
    heads = [f"{n} (vs {figures[n]['long_steps']} steps)" for n in names]
    lines = ["| ranking | " + " | ".join(f"{h}: tau [95% CI] | {h}: Spearman" for h in heads) + " |",
             "|---|" + "---|---|" * len(names)]
    labels = list(dict.fromkeys(label for f in figures.values() for label in f["rankings"]))
    for label in labels:
        cells = []
        for n in names:
            r = figures[n]["rankings"].get(label)
            if r is None:
                cells += ["-", "-"]
                continue
            lo, hi = r["tau_ci"]
            cells += [f"{r['tau']:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                      f"{r['spearman']:+.2f}" if "spearman" in r else ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plotted_proxies(values: dict) -> list[str]:
    """One series per proxy length: the mean of two seeds where there is one, else its lowest seed."""
    by_steps: dict[int, list[str]] = {}
    for label in values:
        if label.startswith("proxy "):
            by_steps.setdefault(int(label.split()[1]), []).append(label)
    return [min(labels, key=lambda label: ("mean" not in label, label)) for _, labels in sorted(by_steps.items())]


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figures), figsize=(5.5 * len(figures), 5.6), squeeze=False)
    for ax, (name, f) in zip(axes[0], figures.items()):
        long = f["long_map"]
        for label in plotted_proxies(f["values"]):
            tau = f["rankings"][label]["tau"]
            ax.scatter(f["values"][label], long, label=f"{label} (tau {tau:+.2f})", s=28)
        ax.set_xlabel("proxy mAP@0.5:0.95")
        ax.set_ylabel(f"mAP after {f['long_steps']} steps, seed {f['long_seed']}")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))  # below: the points fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("select")
    s.add_argument("--space", default=str(ROOT / "spaces/ghost_yolo.yaml"))
    s.add_argument("--budget", default="15ms")
    s.add_argument("--n", type=int, default=12)
    s.add_argument("--pool", type=int, default=32, help="random architectures measured")
    s.add_argument("--threads", type=int, default=None, help="latency threads (default: all physical cores)")
    s.add_argument("--score-imgsz", type=int, default=128, help="input size of the zero-cost scores")
    t = sub.add_parser("train")
    t.add_argument("--data", choices=SETS, required=True)
    t.add_argument("--imgsz", type=int, default=128)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=0.01, help="the search's proxy learning rate")
    t.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 160], help="proxy fidelities (seed 0)")
    t.add_argument("--repeat-steps", type=int, nargs="*", default=[32, 64, 160],
                   help="proxy fidelities run again, seed 1")
    t.add_argument("--long-steps", type=int, default=800, help="the reference (default 5x the search's proxy)")
    t.add_argument("--long-seeds", type=int, nargs="+", default=[2],
                   help="seeds of the reference (default 2, shared by no proxy); a second one measures its noise")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                   help="train only every N-th architecture from the I-th (default 0/1: all)")
    sub.add_parser("report")
    for p in (s, t, sub.choices["report"]):
        p.add_argument("--out", default="runs/fidelity")
    return ap


def main() -> None:
    args = main_parser().parse_args()
    {"select": select, "train": train_all, "report": report}[args.command](args)


if __name__ == "__main__":
    main()

"""`nas status STUDY`: the study as a table, best first."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="show a study: trials best first, counts by state, budget and target",
                       description="Print a study's trials (best feasible first), counts by state, its budget "
                                   "and latency target.")
    p.add_argument("study")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/STUDY/study.db)")
    p.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    p.set_defaults(run=run)


def run(args) -> int:
    from rich.console import Console

    from nas.search.config import default_storage
    from nas.search.progress import counts, counts_line, trials_table
    from nas.search.study import best_feasible, load_study, measurements

    study = load_study(args.study, args.storage or default_storage(args.study))
    cfg = study.user_attrs.get("config", {})
    c = counts(study)
    console = Console()
    target = next((t.user_attrs["target"] for t in study.get_trials(deepcopy=False) if "target" in t.user_attrs), {})
    console.print(f"[bold]{study.study_name}[/]: space {cfg.get('space')} (hash {study.user_attrs.get('space_hash')}), "
                  f"budget {study.user_attrs.get('budget_ms')} ms, objective {study.user_attrs.get('objective')}")
    if target:
        console.print(f"target: {target.get('device')} / {target.get('backend')} / {target.get('threads')} threads / "
                      f"{target.get('imgsz')}px on {target.get('processor')}")
    console.print(f"{counts_line(c, cfg.get('trials', '?'))}  running {c['running']}  queued {c['waiting']}",
                  soft_wrap=True)
    console.print(trials_table(study, limit=args.limit))
    best = best_feasible(study)
    for number, m in sorted(measurements(study).items()):
        verdict = "fits" if m["latency_measured_ms"] <= study.user_attrs.get("budget_ms", float("inf")) else "OVER budget"
        console.print(f"measured whole: trial #{number} {m['latency_measured_ms']:.2f} ms ({verdict})")
    if best:
        console.print(f"best: trial #{best.number}, mAP {best.values[0]:.4f} at "
                      f"{best.user_attrs['latency_ms']:.2f} ms")
    return 0

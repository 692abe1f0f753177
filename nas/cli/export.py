"""`nas export STUDY -o best.yaml [--pareto DIR]`."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the best feasible architecture (or the Pareto front) as YAML",
                       description="Write the best feasible trial of STUDY as an architecture YAML with a meta: "
                                   "record; --pareto DIR also writes every Pareto-optimal architecture and a plot.")
    p.add_argument("study")
    p.add_argument("-o", "--output", default=None, help="architecture YAML to write (e.g. best.yaml)")
    p.add_argument("--pareto", metavar="DIR", help="write every Pareto-optimal architecture and pareto.png here")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/STUDY/study.db)")
    p.set_defaults(run=run)


def run(args) -> int:
    from nas.errors import UserError
    from nas.search.config import default_storage
    from nas.search.export import export_best, export_pareto
    from nas.search.study import load_study

    if not args.output and not args.pareto:
        raise UserError("nothing to write: give -o FILE and/or --pareto DIR")
    study = load_study(args.study, args.storage or default_storage(args.study))
    if args.output:
        arch = export_best(study, args.output)
        m = arch["meta"]
        measured = f", measured {m['latency_measured_ms']:.2f} ms" if m.get("latency_measured_ms") else ""
        print(f"{args.output}: trial #{m['trial']}, mAP {m['map']:.4f}, {m['latency_ms']:.2f} ms "
              f"{m.get('latency_source') or 'predicted'}{measured} (budget {m['budget_ms']:g} ms), "
              f"{m['params']:,} params")
    if args.pareto:
        paths = export_pareto(study, args.pareto)
        print(f"{args.pareto}: {len(paths) - 1} Pareto-optimal architectures and {paths[-1].name}")
    return 0

"""`nas search SPACE --budget 15ms` and `nas resume STUDY`."""
from __future__ import annotations

from pathlib import Path

from nas.search.config import DEFAULT_PRUNER, DEFAULT_STEPS, PRUNERS


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search a space for the best detector within a latency budget",
                       description="Sample architectures from SPACE with Optuna, reject those over the latency "
                                   "budget, proxy-train the rest on Ray and score them by COCO mAP. Running the "
                                   "same command again resumes the study.")
    p.add_argument("space", help="search-space YAML, e.g. spaces/ghost_yolo.yaml")
    p.add_argument("--budget", required=True, help="latency budget with a unit: 15ms, 800us, 0.02s")
    p.add_argument("--trials", type=int, default=50,
                   help="candidates to evaluate, i.e. train to the end or prune (default 50); over-budget "
                        "candidates are recorded for the sampler but not counted")
    p.add_argument("--study", help="study name (default: SPACE-BUDGET, e.g. ghost_yolo-15ms)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/STUDY/study.db)")
    p.add_argument("--objective", choices=("constrained", "pareto"), default="constrained",
                   help="constrained: max mAP with latency <= budget; pareto: mAP against latency")
    p.add_argument("--sampler", choices=("tpe", "random", "nsga2"), default=None,
                   help="default: tpe (nsga2 for --objective pareto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pruner", choices=PRUNERS, default=None,
                   help=f"stop unpromising candidates early (default: {DEFAULT_PRUNER}; none for --objective pareto)")
    p.add_argument("--no-prune", dest="pruner", action="store_const", const="none",
                   help="train every candidate to the end (same as --pruner none)")
    p.add_argument("--max-failures", type=int, default=5, metavar="N",
                   help="stop the search after N failed trials in a row (default 5)")
    p.add_argument("--max-over-budget", type=int, default=200, metavar="N",
                   help="stop after N over-budget candidates in a row: nothing fits (default 200)")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--workers", type=int, default=1, help="concurrent trials (default 1)")
    ray.add_argument("--cpus-per-trial", type=float, default=None,
                     help="default: the cores of the machine or cluster / workers, at most one node's")
    ray.add_argument("--gpus-per-trial", type=float, default=0.0)
    ray.add_argument("--address", help="join an existing Ray cluster (e.g. 127.0.0.1:6379 or auto)")
    fid = p.add_argument_group("proxy training")
    fid.add_argument("--data", default="synthetic", help="synthetic[:n=..,nc=..], dataset YAML or COCO JSON")
    fid.add_argument("--steps", type=int, default=None,
                     help=f"optimizer steps per candidate, rounded up to whole epochs of the data (default "
                          f"{DEFAULT_STEPS}: the same amount of learning on a data set of any size)")
    fid.add_argument("--epochs", type=int, default=None, help="epochs per candidate, instead of --steps")
    fid.add_argument("--imgsz", type=int, default=None, help="training size (default: the space's input size)")
    fid.add_argument("--batch", type=int, default=16)
    fid.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    fid.add_argument("--lr", type=float, default=0.01, help="AdamW learning rate of proxy runs (default 0.01)")
    lat = p.add_argument_group("latency target")
    lat.add_argument("--latency", choices=("predicted", "measured"), default="predicted",
                     help="per-block predictor (default) or a whole-model measurement per candidate")
    lat.add_argument("--latency-device", choices=("cpu", "cuda"), default="cpu")
    lat.add_argument("--latency-backend", choices=("onnxruntime", "torch"), default=None,
                     help="default: onnxruntime on cpu, torch on cuda")
    lat.add_argument("--latency-threads", type=int, default=None, help="default: all physical cores")
    lat.add_argument("--latency-cache", metavar="DIR", default=None,
                     help="where the per-target block tables live (default: studies/latency, shared by "
                          "all studies so that each block is measured once per machine)")
    lat.add_argument("--latency-target", metavar="URL", default=None,
                     help="time on the device you ship to: the URL of `nas device serve` running there, e.g. "
                          "http://192.168.1.20:8765 (tables are then keyed by the device)")
    lat.add_argument("--latency-table", metavar="FILE", default=None,
                     help="predict with this table file, timed once on its device (nas latency-table, or a "
                          "copy of studies/latency/latency-*.json): blocks it lacks are timed here when this "
                          "machine is that device, else predicted by the block model")
    lat.add_argument("--latency-token-file", metavar="F", default=None,
                     help="the device server's token (default: $NAS_DEVICE_TOKEN)")
    lat.add_argument("--measure-best", type=int, default=3, metavar="K",
                     help="at the end, measure the best K feasible candidates whole on the target; one over "
                          "budget is passed over (default 3; 0: trust the predictor)")
    p.set_defaults(run=run)

    r = sub.add_parser("resume", help="continue an interrupted search",
                       description="Continue STUDY with the settings it was created with; completed trials are "
                                   "kept and trials cut off by an interruption are re-run.")
    r.add_argument("study")
    r.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/STUDY/study.db)")
    r.add_argument("--trials", type=int, help="new total target (default: the study's)")
    r.add_argument("--workers", type=int, help="concurrent trials (default: the study's)")
    r.add_argument("--address", help="join an existing Ray cluster (default: a local one, whatever the study used)")
    r.set_defaults(run=run_resume)


def run(args) -> int:
    from evaluators.budget import format_budget, parse_budget
    from nas.errors import UserError
    from nas.search.config import Fidelity, SearchConfig, check_study_name, default_storage
    from nas.search.driver import run_search

    budget = parse_budget(args.budget)
    if args.steps is not None and args.epochs is not None:
        raise UserError("--steps and --epochs both set the proxy's length: give one")
    for flag in ("trials", "workers", "steps", "epochs", "batch", "max_failures", "max_over_budget"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.imgsz is not None and args.imgsz < 32:
        raise UserError(f"--imgsz must be at least 32, got {args.imgsz}")
    if args.measure_best < 0:
        raise UserError(f"--measure-best must be 0 or more, got {args.measure_best}")
    if not Path(args.space).is_file():
        raise UserError(f"{args.space}: no such file")
    target_url, token_file = None, None
    if args.latency_target:
        from evaluators.latency.remote import normalize_url

        target_url = normalize_url(args.latency_target)
        token_file = str(Path(args.latency_token_file).resolve()) if args.latency_token_file else None
    elif args.latency_token_file:
        raise UserError("--latency-token-file goes with --latency-target URL")
    table = None
    if args.latency_table:
        if args.latency == "measured":
            raise UserError("--latency-table goes with --latency predicted: a measured search times every model")
        if not Path(args.latency_table).is_file():
            raise UserError(f"latency table {args.latency_table}: no such file")
        table = str(Path(args.latency_table).resolve())
    study = check_study_name(args.study or f"{Path(args.space).stem}-{format_budget(budget)}")
    pruner = args.pruner or ("none" if args.objective == "pareto" else DEFAULT_PRUNER)
    if args.objective == "pareto" and pruner != "none":
        raise UserError(f"--pruner {pruner}: Optuna cannot prune multi-objective trials; "
                        f"--objective pareto trains every candidate to the end")
    cfg = SearchConfig(
        space=str(args.space), budget_ms=budget, study=study, storage=args.storage or default_storage(study),
        trials=args.trials, objective=args.objective,
        sampler=args.sampler or ("nsga2" if args.objective == "pareto" else "tpe"), seed=args.seed,
        pruner=pruner, max_failures=args.max_failures, max_over_budget=args.max_over_budget,
        measure_best=args.measure_best,
        workers=args.workers, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        address=args.address, latency=args.latency, latency_backend=args.latency_backend,
        latency_threads=args.latency_threads, latency_device=args.latency_device, latency_cache=args.latency_cache,
        latency_target=target_url, latency_token_file=token_file, latency_table=table,
        fidelity=Fidelity(data=args.data, steps=args.steps or DEFAULT_STEPS, epochs=args.epochs, imgsz=args.imgsz,
                          batch=args.batch, device=args.device, lr=args.lr, seed=args.seed))
    if cfg.fidelity.device == "cuda" and cfg.gpus_per_trial <= 0:
        cfg.gpus_per_trial = 1.0
    return run_search(cfg)


def run_resume(args) -> int:
    from nas.errors import UserError
    from nas.search.config import SearchConfig, default_storage
    from nas.search.driver import run_search
    from nas.search.study import load_study

    storage = args.storage or default_storage(args.study)
    study = load_study(args.study, storage)
    stored = study.user_attrs.get("config")
    if not stored:
        raise UserError(f"study {args.study!r} was not created by nas search (no stored configuration)")
    cfg = SearchConfig.from_dict(stored)
    cfg.storage = storage
    cfg.address = args.address  # where to run is this invocation's choice: a stored cluster may be gone
    for flag in ("trials", "workers"):
        if getattr(args, flag) is not None:
            setattr(cfg, flag, getattr(args, flag))
    return run_search(cfg)

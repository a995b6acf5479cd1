"""The ``lopt`` command line.

One function per subcommand (``_cmd_<name>``), each registered by ``_add_<name>``; the parser
reports user mistakes as a single line ``lopt: error: ...`` and exit status 2, never a
traceback (set ``LOPT_DEBUG=1`` to get the traceback).

Example:
    $ lopt tune --task linear_regression --optimizer all --out runs/tune-lr
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from lopt_cli.args import seed
from lopt_cli.process import run_script

PROG = "lopt"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_OFF = "none"


def _threshold(text: str) -> float | str:
    if text.strip().lower() == _OFF:
        return _OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


# ---------------------------------------------------------------------------------------------
# lopt tune


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from lopt.baselines import baseline_names
    from lopt.tune import METRICS

    p = sub.add_parser(
        "tune",
        help="tune hand-designed baselines on a task family and evaluate them held-out",
        description=(
            "Grid-search each baseline's learning rate and one more hyperparameter on "
            "training problems, then evaluate the winners on held-out problems drawn from a "
            "fixed key (the same for every optimizer and every seed)."
        ),
    )
    p.add_argument("--task", required=True, help="task family name (see tasks.names())")
    p.add_argument(
        "--optimizer",
        default="all",
        choices=[*baseline_names(), "all"],
        help="which baseline to tune (default: all)",
    )
    p.add_argument("--out", help="folder for tune.json (created if missing)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the tuning key")
    p.add_argument(
        "--num-problems", type=_positive_int, default=32, help="training problems per candidate"
    )
    p.add_argument(
        "--num-steps", type=_positive_int, help="updates per problem (default: the family's)"
    )
    p.add_argument(
        "--eval-problems", type=_positive_int, default=128, help="held-out problems (128)"
    )
    p.add_argument("--metric", choices=METRICS, default="normalized", help="selection metric")
    p.add_argument("--no-refine", action="store_true", help="coarse grid only")
    p.add_argument(
        "--chunk-size", type=_positive_int, help="candidates per batched call (default: auto)"
    )
    p.set_defaults(func=_cmd_tune)


def _fmt(x: float, spec: str = ".4g") -> str:
    return format(x, spec) if math.isfinite(x) else str(x)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _cmd_tune(args: argparse.Namespace) -> int:
    import jax
    from tqdm.auto import tqdm

    import tasks
    from lopt.baselines import baseline_names
    from lopt.evaluation import HELDOUT_SEED, heldout_key
    from lopt.rundir import write_json
    from lopt.tune import tune

    family = tasks.get(args.task)
    names = baseline_names() if args.optimizer == "all" else [args.optimizer]
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
    key = jax.random.fold_in(jax.random.key(args.seed), 0)
    results = []
    for name in tqdm(names, desc=f"tune {family.name}", unit="opt", disable=len(names) < 2):
        results.append(
            tune(
                name,
                family,
                key,
                num_problems=args.num_problems,
                num_steps=args.num_steps,
                metric=args.metric,
                refine=not args.no_refine,
                chunk_size=args.chunk_size,
                eval_key=heldout_key(),
                eval_problems=args.eval_problems,
                progress=True,
            )
        )

    header = ["optimizer", "hyperparams", "held-out metric ± s.e.m.", "final loss", "diverged"]
    rows = []
    for r in results:
        hp = ", ".join(f"{k}={v:.3g}" for k, v in r.hyperparams.items())
        h = r.heldout
        rows.append(
            [
                r.name + (" *" if r.at_edge else ""),
                hp,
                f"{_fmt(h.metric)} ± {_fmt(h.sem, '.2g')}",
                _fmt(h.final),
                f"{h.diverged}/{args.eval_problems}",
            ]
        )
    num_steps = results[0].num_steps
    print(
        f"{family.name} (data: {family.data_source}): {args.metric} metric over "
        f"{args.eval_problems} held-out problems, {num_steps} steps; "
        f"tuned on {args.num_problems} problems (seed {args.seed})"
    )
    print(_table(rows, header))
    if any(r.at_edge for r in results):
        print("* best learning rate at the edge of the grid: the grid may be too narrow")
    if args.out is not None:
        import importlib.metadata

        import optax

        try:
            version = importlib.metadata.version("lopt")
        except importlib.metadata.PackageNotFoundError:
            version = None
        path = os.path.join(args.out, "tune.json")
        write_json(
            path,
            {
                "command": "tune",
                "task": family.name,
                "task_settings": family.settings(),
                "data_source": family.data_source,
                "settings": {
                    "seed": args.seed,
                    "num_problems": args.num_problems,
                    "num_steps": num_steps,
                    "metric": args.metric,
                    "refine": not args.no_refine,
                    "eval_problems": args.eval_problems,
                    "eval_seed": HELDOUT_SEED,
                    "tune_key": f"fold_in(key({args.seed}), 0)",
                },
                "versions": {"lopt": version, "jax": jax.__version__, "optax": optax.__version__},
                "results": {r.name: r.to_json() for r in results},
            },
        )
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# lopt meta-train


def _add_meta_train(sub: argparse._SubParsersAction) -> None:
    from lopt.estimators import ESTIMATORS

    p = sub.add_parser(
        "meta-train",
        help="meta-train a learned optimizer on a task family",
        description="Meta-train a learned optimizer into a run directory (config.json, "
        "theta.npz, state.npz, metrics.jsonl). Ctrl-C writes a checkpoint; --resume continues "
        "exactly where the run stopped.",
    )
    p.add_argument("--task", help="task family (see 'tasks.names()'); not needed with --resume")
    p.add_argument("--preset", choices=["quick", "paper"], help="settings (default quick)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=_positive_int, help="meta-steps (overrides the preset)")
    p.add_argument("--estimator", choices=ESTIMATORS, help="gradient estimator override")
    p.add_argument("--truncation", type=_positive_int, help="inner steps per truncation")
    p.add_argument("--seed", type=seed, help="PRNG seed (overrides the preset)")
    p.add_argument(
        "--outlier-threshold",
        type=_threshold,
        metavar="KAPPA",
        help="leave out problems whose meta-gradient exceeds KAPPA x the median problem's "
        "(>= 1; full_bptt/tbptt; 'none' turns a preset's off)",
    )
    p.add_argument(
        "--save-products",
        choices=sorted(_SAVE_PRODUCTS),
        help="keep the learned optimizer's matrix products for the backward pass (on: a "
        "quarter fewer GRU FLOPs, more memory), recompute them (off), or decide by memory "
        "(auto, the default: lopt.PRODUCT_BUDGET)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_meta_train)


_SAVE_PRODUCTS = {"auto": None, "on": True, "off": False}


def _cmd_meta_train(args: argparse.Namespace) -> int:
    import dataclasses

    import tasks
    from lopt.meta_train import MetaTrainDiverged, meta_train
    from lopt.presets import preset
    from lopt.run import Run

    out = args.out
    has_state = os.path.exists(os.path.join(out, "state.npz"))
    if args.resume:
        if not has_state:
            raise ValueError(f"{out}: nothing to resume (no state.npz); start without --resume")
        for flag, value in (
            ("--outlier-threshold", args.outlier_threshold),
            ("--save-products", args.save_products),
            ("--seed", args.seed),
            ("--estimator", args.estimator),
            ("--truncation", args.truncation),
        ):
            if value is not None:
                raise ValueError(f"{flag} cannot change on --resume (the run keeps its own)")
        run = Run(out)
        cfg, family, opt = run.config, run.family, run.optimizer
        config = run.meta_config
        if args.task is not None and args.task != family.name:
            raise ValueError(f"{out} is a {family.name} run, not {args.task}")
        if args.preset is not None:  # accepted when it names the run's own preset
            p = preset(family.name, args.preset)
            popt, _ = p.build()
            own = tasks.get(family.name, **p.task_settings).settings() == family.settings()
            if not own or popt.config() != cfg["optimizer"]:
                raise ValueError(
                    f"--preset cannot change on --resume ({out} was not started with "
                    f"--preset {args.preset}; the run keeps its own)"
                )
    else:
        if has_state:
            raise ValueError(f"{out} already holds a run; use --resume, or another --out")
        if args.task is None:
            raise ValueError("--task is required (unless --resume)")
        tasks.get(args.task)  # an unknown task is reported with the list of valid ones
        p = preset(args.task, args.preset or "quick")
        family = tasks.get(args.task, **p.task_settings)
        opt, config = p.build()
    changes = {
        k: v
        for k, v in {
            "num_steps": args.steps,
            "estimator": args.estimator,
            "truncation": args.truncation,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    if args.outlier_threshold is not None:
        changes["outlier_threshold"] = (
            None if args.outlier_threshold == _OFF else args.outlier_threshold
        )
    elif args.estimator in ("es", "pes"):
        changes["outlier_threshold"] = None  # a preset's threshold applies to gradients only
    if args.save_products is not None:
        changes["save_products"] = _SAVE_PRODUCTS[args.save_products]
    config = dataclasses.replace(config, **changes)
    if args.estimator and args.truncation is None:
        config = dataclasses.replace(config, truncation=None)
    config.resolved(family)  # a bad combination fails here, before anything is written
    print(
        f"meta-training {opt.config()['type']} on {family.name} "
        f"(data: {family.data_source}) into {out}",
        file=sys.stderr,
    )
    try:
        result = meta_train(
            opt, family, config, out_dir=out, resume=args.resume, progress=not args.quiet
        )
    except MetaTrainDiverged as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    losses = [row["meta_loss"] for row in result.metrics if "meta_loss" in row]
    if result.interrupted:
        print(
            f"interrupted at step {result.step}; checkpoint written. Continue with: "
            f"lopt meta-train --out {out} --resume",
            file=sys.stderr,
        )
        return 130
    loss = f", meta-loss {_fmt(losses[-1])}" if losses else ""
    print(f"done: {result.step} meta-steps{loss}; run directory {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# lopt evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from lopt.baselines import baseline_names

    p = sub.add_parser(
        "evaluate",
        help="compare a meta-trained optimizer with tuned baselines (writes RUN/eval.json)",
        description="Tune the baselines on the run's task family, evaluate them and the learned "
        "optimizer on the same held-out problems at the training horizon and at twice it, and "
        "write RUN/eval.json.",
    )
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument(
        "--baselines", nargs="+", choices=baseline_names(), default=["momentum", "rmsprop", "adam"]
    )
    p.add_argument("--num-problems", type=_positive_int, default=128)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lopt.evaluation import Evaluation, format_table
    from lopt.run import evaluate_run

    ev = Evaluation.from_json(
        evaluate_run(
            args.run,
            baselines=args.baselines,
            num_problems=args.num_problems,
            progress=not args.quiet,
        )
    )
    step, selected = ev.meta_step, ev.selected_step
    print(
        f"{ev.task['name']} (data: {ev.task['data_source']}), meta-step {step}"
        + (f" (theta selected by validation at step {selected})" if selected != step else "")
    )
    print(format_table(ev))
    print(f"wrote {os.path.join(args.run, 'eval.json')}")
    return 0


# ---------------------------------------------------------------------------------------------
# lopt distill


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="turn the learned optimizer's detected mechanisms into an optax chain "
        "(writes RUN/distill.json)",
        description="Build an interpretable optax chain (clipping, momentum, schedule, "
        "adaptation) from RUN/analysis.json, evaluate it on the held-out problems of "
        "RUN/eval.json, report the fraction of the learned optimizer's gain over the best tuned "
        "baseline that it recovers, and write RUN/distill.json.",
    )
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument(
        "--no-retune",
        action="store_true",
        help="skip the re-tuned variant (numbers tuned on training problems)",
    )
    p.add_argument(
        "--retune-steps",
        type=_positive_int,
        help="re-tuning steps (default 600); with --retune-problems, re-tunes whatever the cost",
    )
    p.add_argument(
        "--retune-problems", type=_positive_int, help="re-tuning's training problems (default 256)"
    )
    p.add_argument(
        "--no-identify",
        action="store_true",
        help="skip the identified variant (numbers fitted to the learned optimizer's updates)",
    )
    p.add_argument(
        "--no-exchange",
        action="store_true",
        help="skip exchanging one mechanism's numbers at a time between the probed and the "
        "identified chain (two held-out evaluations per mechanism)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from probes.distill import (
        DistillConfig,
        IdentifyConfig,
        RetuneConfig,
        distill_run,
        format_report,
    )

    if not os.path.isdir(args.run):
        raise FileNotFoundError(f"no run directory {args.run}")
    retune = None
    if not args.no_retune:
        chosen = {"steps": args.retune_steps, "num_problems": args.retune_problems}
        chosen = {k: v for k, v in chosen.items() if v is not None}
        # numbers the user chose are run whatever their cost
        retune = RetuneConfig(**chosen, budget=None) if chosen else RetuneConfig()
    config = DistillConfig(
        identify=None if args.no_identify else IdentifyConfig(),
        retune=retune,
        attribute=not args.no_exchange,
    )
    result = distill_run(args.run, config, progress=not args.quiet)
    print(format_report(result))
    print(f"wrote {os.path.join(args.run, 'distill.json')}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser and entry point

#: Subcommands: each adds its parser (and sets ``func``).
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_tune,
    _add_meta_train,
    _add_evaluate,
    _add_distill,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``lopt`` argument parser with every subcommand."""
    parser = _Parser(prog=PROG, description="Learned optimizers in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from tasks import TaskError

    # TaskError subclasses ValueError; listed for clarity. OSError covers missing files and
    # unwritable output folders.
    return (TaskError, ValueError, OSError)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    del category, filename, lineno, file, line
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``lopt`` command line; returns the exit status.

    Args:
        argv: the arguments (without the program name); defaults to ``sys.argv[1:]``.

    Returns:
        0 on success. User mistakes (malformed run files among them) print one line
        ``lopt: error: ...`` to stderr and exit with status 2 (``SystemExit``) unless
        ``LOPT_DEBUG=1``, which re-raises. Ctrl-C at any point, while the parser's imports
        load too, prints ``lopt: interrupted`` and exits with status 130.
    """
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:  # first: the next clause imports tasks (and JAX)
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except _user_errors() as e:
        if os.environ.get("LOPT_DEBUG", "") not in ("", "0"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None


def script() -> None:
    """The ``lopt`` console script: :func:`main`, ended by :func:`lopt_cli.process.run_script`."""
    run_script(main)


if __name__ == "__main__":
    script()

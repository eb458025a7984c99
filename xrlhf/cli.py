"""`xrlhf`: train | eval | judge | compare | report | serve-judge."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from xrlhf.config import ConfigError, load_config
from xrlhf.logs import process_log, quiet_libraries

OVERRIDES_HELP = "dotted overrides, e.g. algorithm.kl_coef=0.05 judge.dimensions.verbosity.weight=0"


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrlhf", description="RLAIF with explainable rewards: an LLM judge scores named dimensions; "
                                  "PPO or REINFORCE optimises them on Ray actors.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one policy (algorithm.name picks PPO or REINFORCE)")
    _config_args(p)
    p.add_argument("--run-dir", help="run directory (default: OUTPUT_DIR/RUN_NAME-ALGORITHM-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")

    p = sub.add_parser("compare", help="train PPO and REINFORCE on the same seeds, evaluate, write the report")
    _config_args(p)
    p.add_argument("--out", help="compare directory (default: OUTPUT_DIR/compare-TIMESTAMP)")

    p = sub.add_parser("eval", help="generate on held-out prompts, judge every dimension, win rate vs base")
    _config_args(p)
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                   help="a trained adapter/checkpoint folder to evaluate (repeatable); the base model always is")
    p.add_argument("--out", required=True, help="folder for eval.jsonl and pairwise.jsonl")

    p = sub.add_parser("judge", help="score (prompt, response) pairs by hand with the configured judge")
    _config_args(p)
    p.add_argument("--input", help="jsonl with `prompt` and `response` per row")
    p.add_argument("--output", help="jsonl to write (rows plus per-dimension scores, confidence, reward)")
    p.add_argument("--prompt", help="one prompt (with --response): print a table")
    p.add_argument("--response", help="one response to score")

    p = sub.add_parser("report", help="rebuild the HTML report from compare directories")
    p.add_argument("run_dirs", nargs="+", help="compare directories written by `xrlhf compare`")
    p.add_argument("--out", help="output folder (default: RUN_DIR/report)")

    p = sub.add_parser("serve-judge", help="serve the local judge over an OpenAI-compatible HTTP API (Ray Serve)")
    _config_args(p)
    return parser


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.-]*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; dotted overrides may also come after the options (`... --prompt P judge.cache=false`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if not (hasattr(args, "overrides") and _OVERRIDE.match(a))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log_dir = _log_dir(args)
    if log_dir is not None:
        quiet_libraries(process_log(log_dir, args.command), args.log_level)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"xrlhf {args.command}: {_message(exc)}", file=sys.stderr)
        return 2
    except UserFacingError as exc:
        print(f"xrlhf {args.command}: {exc}", file=sys.stderr)
        return 1
    except _user_errors() as exc:  # evaluated only when an error arrives: no Ray import on the happy path
        print(f"xrlhf {args.command}: {_message(exc)}", file=sys.stderr)
        return 1


def _log_dir(args: argparse.Namespace) -> Path | None:
    """Where this command's library warnings go: OUTPUT_DIR/logs of a valid config (else they stay on stderr)."""
    try:
        return Path(load_config(args.config, args.overrides).output_dir) / "logs" if hasattr(args, "config") else None
    except ConfigError:
        return None  # the command reports it


class UserFacingError(RuntimeError):
    """An error whose message is the whole story (no traceback needed)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from xrlhf.data import DataError
    from xrlhf.driver.controller import ActorLostError, JudgeUnavailableError
    from xrlhf.exposure import ExposureError
    from xrlhf.learners.common import NonFiniteError
    from xrlhf.policy.models import ModelError

    return DataError, ModelError, JudgeUnavailableError, ActorLostError, NonFiniteError, ExposureError


def _message(exc: BaseException) -> str:
    """The error's own message: raised in a Ray actor, it arrives as a RayTaskError whose text is a traceback."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


def _load(args: argparse.Namespace):
    from xrlhf.policy.models import check_context

    cfg = load_config(args.config, args.overrides)
    check_context(cfg)
    if not (cfg.resources.address or os.environ.get("RAY_ADDRESS")):
        # Read once, when ray is imported (not yet, here): a single-machine Ray then binds to 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from xrlhf.driver.controller import Controller

    if args.resume:
        run_dir, resume = Path(args.resume), True
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.run_dir or Path(cfg.output_dir) / f"{cfg.run_name}-{cfg.algorithm.name}-{stamp}")
        resume = False
    path = Controller(cfg, run_dir, resume=resume).train()
    print(f"run directory: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from xrlhf.compare import run_compare

    out = Path(args.out or Path(cfg.output_dir) / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    report = run_compare(cfg, out, command=" ".join(["xrlhf", "compare", args.config, *args.overrides]))
    print(f"report: {report}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from xrlhf.evaluate import evaluate

    checkpoints = {}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        if not path:
            raise UserFacingError(f"--checkpoint {item!r} must be NAME=DIR")
        checkpoints[name] = path
    evaluate(cfg, checkpoints, Path(args.out))
    print(f"evaluation: {args.out}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from xrlhf.judge.cli import judge_file, judge_one

    if args.input:
        if not args.output:
            raise UserFacingError("--input needs --output")
        n = judge_file(cfg, Path(args.input), Path(args.output))
        print(f"scored {n} rows into {args.output}")
    elif args.prompt is not None and args.response is not None:
        print(judge_one(cfg, args.prompt, args.response))
    else:
        raise UserFacingError("give --input/--output or --prompt/--response")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from xrlhf.report import build_report

    for d in args.run_dirs:
        if not (Path(d) / "compare.json").is_file():
            raise UserFacingError(f"{d} is not a compare directory (no compare.json)")
        out = build_report(Path(d), Path(args.out) if args.out else None)
        print(f"report: {out}")
    return 0


def cmd_serve_judge(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from xrlhf.judge.serve import serve_judge_main

    serve_judge_main(cfg)
    return 0


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "eval": cmd_eval, "judge": cmd_judge,
            "report": cmd_report, "serve-judge": cmd_serve_judge}

if __name__ == "__main__":
    sys.exit(main())

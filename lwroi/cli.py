"""The ``lwroi`` command: the one place that turns argv into a config and a run.

Exit codes: 0 done; 1 a unit failed (its error record says why; a rerun retries it);
2 bad command line, config, data layout or run directory (nothing was computed);
3 results incomplete (``summarize`` or ``export`` found units missing); 75 stopped by SIGTERM/SIGUSR1
after checkpointing: resubmit the same command to continue.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lwroi import __version__
from lwroi.exceptions import LwroiError

if TYPE_CHECKING:
    from lwroi.config import Config

log = logging.getLogger("lwroi")

PHASE_VERBS = {
    "extract": ("features", "Extract DNN features of every video and build the reduced feature store."),
    "tune": ("select", "Extract (if needed), then run the CV grid search and pick (wc, lay) per ROI."),
    "fit": ("fit", "Everything up to the final fit of every subject x ROI (no summary tables)."),
    "run": ("fit", "The whole pipeline: extract -> tune -> select -> fit -> summarize."),
}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML config (see configs/ and the README's config reference)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set encoding.sgd.max_epochs=50 (repeatable)")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N of the plan (0-based; for array jobs)")
    p.add_argument("--mpi", choices=("auto", "mpi", "none"), default="auto",
                   help="auto: use MPI ranks when mpi4py is importable; none: one plain process (default: auto)")
    p.add_argument("--restart", action="store_true",
                   help="if the run directory holds another config's results, move it aside and start anew")
    p.add_argument("--tune-split", choices=("roi", "fold", "point"), default="roi",
                   help="cut tuning into one unit per ROI (all grid points x folds batched), per fold, "
                        "or per grid point and fold (default: roi)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lwroi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lwroi {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    synth = sub.add_parser("synth", help="write a small synthetic dataset in the Algonauts layout",
                           description="Write real mp4 videos and response pickles in the Algonauts 2021 layout: "
                                       "per ROI a planted share of the signal per DNN layer (early, mid, late, flat "
                                       "and two-layer profiles), each layer's signal a random function of that "
                                       "layer's features, with voxel gains, offsets and per-voxel noise; the truth "
                                       "goes to OUT_DIR/ground_truth.json.")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--subjects", type=int, default=3, help="number of subjects (default: 3)")
    synth.add_argument("--videos", type=int, default=150, help="training videos with responses (default: 150)")
    synth.add_argument("--challenge", type=int, default=12, help="challenge test videos (default: 12)")
    synth.add_argument("--config", type=Path, default=Path("configs/demo.yaml"),
                       help="config whose features section defines the DNN features (default: configs/demo.yaml)")

    for verb, (_, text) in PHASE_VERBS.items():
        p = sub.add_parser(verb, help=text, description=text)
        _add_run_options(p)
        if verb == "extract":
            p.add_argument("--raw", action="store_true",
                           help="only the extraction units (every model's video shards), not the reduction into "
                                "feature stores: the extract array of `lwroi submit` for a zoo")

    summ = sub.add_parser("summarize", help="reduce a run's unit results into summary.csv and results.csv",
                          description="Reduce the unit results of RUN_DIR into results.csv, summary.csv and "
                                      "scores/*.npy, from the files alone (no MPI); lists missing units.")
    summ.add_argument("run_dir", type=Path)
    summ.add_argument("--array-states", metavar="FILE", type=argparse.FileType("r"),
                      help="`scontrol show job --oneliner ARRAY_JOB` output ('-': stdin): also list the array "
                           "tasks that did not complete (the reduce job of `lwroi submit` passes it)")
    outputs = {
        "export": ("write the Algonauts 2021 challenge submission of a finished run",
                   "Gather every fit's predictions of the challenge videos into the Algonauts 2021 submission format: "
                   "per track a pickle {ROI: {subXX: array (videos, voxels)}} and a zip holding it, checked for every "
                   "subject, ROI and shape."),
        "report": ("write an HTML report with figures of a summarised run",
                   "Write RUN_DIR/report/index.html and its PNG figures: ROI x layer heatmaps of the layer profile, "
                   "the raw layer weights and the contributions, held-out accuracy per ROI with each subject and the "
                   "noise ceiling, chosen hyper-parameters, SGD learning curves, tables."),
    }
    for verb, (text, description) in outputs.items():
        p = sub.add_parser(verb, help=text, description=description)
        p.add_argument("run_dir", type=Path)
        p.add_argument("--out", type=Path, help=f"output folder (default: RUN_DIR/{verb})")
        if verb == "export":
            p.add_argument("--model", metavar="NAME", help="the model whose predictions to export (required when the "
                                                           "run compares several: features.models)")
    subm = sub.add_parser("submit", help="submit the run to Slurm: extract job -> array of plan shards -> reduce job",
                          description="Submit CONFIG as a chain of Slurm jobs running the apptainer image: "
                                      "`lwroi extract` (left out when the features are done), an array whose task i "
                                      "runs `lwroi fit --shard i/N` with MPI ranks, and `lwroi summarize` after every "
                                      "task; print the job IDs. Submitting again resumes the run. Site settings "
                                      "(partition, account, times, GPUs, image, binds) come from --site.")
    subm.add_argument("config", type=Path,
                      help="YAML config; its relative paths resolve against the current directory (where jobs start)")
    subm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override one config key in every job (repeatable)")
    subm.add_argument("--shards", type=int, metavar="N", help="array tasks, one shard of the plan each "
                                                               "(default: LWROI_SHARDS of the site file)")
    subm.add_argument("--ranks-per-task", type=int, metavar="R",
                      help="MPI ranks per array task and of the extract job (default: LWROI_RANKS_PER_TASK)")
    subm.add_argument("--tasks", metavar="LIST", help="submit only these array tasks, e.g. 1,3 (shard numbers of N)")
    subm.add_argument("--image", type=Path, help="the lwroi image (default: LWROI_IMAGE of the site file)")
    subm.add_argument("--site", type=Path, default=Path("slurm/site.env"),
                      help="site settings; the lwroi-*.sbatch scripts are taken from its folder "
                           "(default: slurm/site.env)")
    subm.add_argument("--dry-run", action="store_true", help="print the chain as a bash script; submit nothing")
    subm.add_argument("--check", action="store_true",
                      help="check the site file against this cluster (partition, each job's size with sbatch "
                           "--test-only, apptainer and the image, srun's PMI), one line per check; submit nothing")
    lays = sub.add_parser("layers", help="a model's family, input and default layers, to choose features.layers",
                          description="Print MODEL's family, what it is fed (image frames or clips, their size), "
                                      "its normalisation and its default layers (display name = node, feature count); "
                                      "with --all every node of its graph. MODEL is any features.model value: a "
                                      "torchvision image or video model, timm:<name> or package.module:factory. "
                                      "Random weights: nothing is downloaded.")
    lays.add_argument("model", metavar="MODEL")
    lays.add_argument("--all", dest="all_nodes", action="store_true", help="also list every graph node")
    lays.add_argument("--image-size", type=int, default=224, metavar="N", help="frame size in pixels (default: 224)")
    lays.add_argument("--frames", type=int, default=16, metavar="T",
                      help="frames per clip of a video model (default: 16)")
    stat = sub.add_parser("status", help="units done/running/pending/failed per phase, with an ETA",
                          description="Show per phase how many units are done, running, pending and failed.")
    stat.add_argument("run_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "synth":
            return _synth(args)
        if args.verb in PHASE_VERBS:
            return _run(args)
        if args.verb == "summarize":
            return _summarize(args.run_dir, args.array_states)
        if args.verb == "submit":
            return _submit(args)
        if args.verb == "export":
            return _export(args.run_dir, args.out, args.model)
        if args.verb == "report":
            return _report(args.run_dir, args.out)
        if args.verb == "layers":
            return _layers(args)
        return _status(args.run_dir)
    except LwroiError as exc:
        print(f"lwroi {args.verb}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from lwroi.config import load_config
    from lwroi.orchestration.driver import launch
    from lwroi.orchestration.plan import parse_shard

    cfg = load_config(args.config, args.overrides)
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        print(f"lwroi {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    up_to = "extract" if getattr(args, "raw", False) else PHASE_VERBS[args.verb][0]
    result = launch(cfg, up_to=up_to, shard=shard, mpi=args.mpi, restart=args.restart, tune_split=args.tune_split)
    if args.verb == "run" and result.rank == 0 and result.exit_code == 0 and shard is None:
        return _summarize(result.run_dir)
    return result.exit_code


def _plan_of(run_dir: Path):
    from lwroi.orchestration.plan import build_plan
    from lwroi.orchestration.rundir import load_run_config, run_store

    cfg = load_run_config(run_dir)
    store = run_store(run_dir)

    def roi_cost(subject: str, roi: str) -> float:
        return 1.0

    return cfg, store, build_plan(cfg, roi_cost)


def _summarize(run_dir: Path, array_states: TextIO | None = None) -> int:
    from lwroi.orchestration.schedule import EXIT_INCOMPLETE
    from lwroi.orchestration.slurm import describe_unfinished_tasks, parse_task_states
    from lwroi.outputs.summary import reduce_run, write_tables

    cfg, store, units = _plan_of(run_dir)
    reduction = reduce_run(store, units)
    if array_states is not None:  # Slurm's word on the tasks; the run's records win (every unit done: all done)
        states = parse_task_states(array_states.read())
        for line in describe_unfinished_tasks(states, lambda s: reduction.complete):
            print(line, file=sys.stderr)
        completed = sum(s.n_tasks for s in states if s.state == "COMPLETED" or reduction.complete)
        recorded = sum(s.n_tasks for s in states if s.state != "COMPLETED" and reduction.complete)
        print(f"lwroi summarize: {completed} of {sum(s.n_tasks for s in states)} array task(s) COMPLETED"
              + (f" ({recorded} by the run's records)" if recorded else ""), file=sys.stderr)
    if not reduction.complete:
        for key in reduction.failed:
            print(f"failed:  {key} (see {store.record_path(key)})", file=sys.stderr)
        for key in reduction.missing:
            print(f"missing: {key}", file=sys.stderr)
        print(f"lwroi summarize: {len(reduction.missing)} unit(s) missing and {len(reduction.failed)} failed in "
              f"{run_dir}; tables not written (rerun the same command to finish the run)", file=sys.stderr)
        return EXIT_INCOMPLETE
    for path in [p for p in write_tables(run_dir, reduction, store, cfg.data.wb_affine) if p.suffix == ".csv"]:
        print(f"wrote {path}")
    comparison = run_dir / "comparison.csv"
    if len(cfg.model_names) > 1 and comparison.is_file():  # a zoo's summary is wide: print the comparison
        import pandas as pd

        columns = ["model", "family", "roi", "pcc_mean", "pcc_ci_low", "pcc_ci_high", "profile_centre_mean",
                   "rank_in_roi"]
        print(pd.read_csv(comparison)[columns].to_string(index=False))
    else:
        print(reduction.summary.to_string(index=False))
    return 0


def _report(run_dir: Path, out: Path | None) -> int:
    from lwroi.outputs.report import write_report

    _, store, _ = _plan_of(run_dir)
    try:
        page = write_report(run_dir, store, out)
    except FileNotFoundError as exc:
        print(f"lwroi report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {page}")
    return 0


def _export(run_dir: Path, out: Path | None, model: str | None) -> int:
    from lwroi.exceptions import IncompleteRunError
    from lwroi.orchestration.schedule import EXIT_INCOMPLETE
    from lwroi.outputs.export import collect_submission, write_submission

    cfg, store, units = _plan_of(run_dir)
    names = cfg.model_names
    if (model is None and len(names) > 1) or (model is not None and model not in names):
        why = "choose one with --model" if model is None else f"--model {model!r} is not one of them"
        print(f"lwroi export: error: {run_dir} compares {len(names)} model(s): {', '.join(names)}; {why}",
              file=sys.stderr)
        return 2
    units = [u for u in units if u.model == (model or names[0])]
    try:
        submission, excluded = collect_submission(store, units)
    except IncompleteRunError as exc:
        for key in exc.missing:
            print(f"missing: {key}", file=sys.stderr)
        print(f"lwroi export: {exc}; finish the run first (rerun the same command)", file=sys.stderr)
        return EXIT_INCOMPLETE
    for path in write_submission(out or run_dir / "export", submission):
        print(f"wrote {path}")
    for track, rois in sorted(submission.items()):
        shapes = ", ".join(f"{roi} {next(iter(subs.values())).shape} x {len(subs)} subjects"
                           for roi, subs in rois.items())
        print(f"  {track}: {shapes}")
    if excluded:
        print(f"  {excluded} voxel column(s) excluded from fitting (constant or all-NaN responses) are written as 0")
    return 0


def _submit(args: argparse.Namespace) -> int:
    import importlib.util

    from lwroi.config import load_config
    from lwroi.orchestration.driver import check_inputs
    from lwroi.orchestration.slurm import build_chain, features_done, parse_tasks, read_site, render_chain, submit_chain

    cfg = load_config(args.config, args.overrides)
    if args.check:
        return _submit_check(args, cfg)
    # the jobs' pre-work checks, before anything is queued; the device is the compute nodes' business, and the
    # model, layers and weights need torch, which a login node may lack
    has_torch = importlib.util.find_spec("torch") is not None
    if not has_torch:
        print("lwroi submit: note: torch is not importable here, so the model, layers and weights are checked by "
              "the jobs, not now (config and data were checked)", file=sys.stderr)
    check_inputs(cfg, PHASE_VERBS["fit"][0], device=False, model=has_torch)
    site = read_site(args.site, os.environ)
    shards = site.shards if args.shards is None else args.shards
    ranks = site.ranks_per_task if args.ranks_per_task is None else args.ranks_per_task
    if not (args.image or site.image):
        print(f"lwroi submit: error: no image: set LWROI_IMAGE in {args.site} or pass --image", file=sys.stderr)
        return 2
    image = args.image or Path(site.image)
    workdir = Path.cwd()
    chain = build_chain(cfg, site, config_path=args.config, overrides=args.overrides, workdir=workdir, image=image,
                        shards=shards, ranks_per_task=ranks,
                        tasks=parse_tasks(args.tasks, shards) if args.tasks else None,
                        extract=not features_done(cfg, workdir))
    if args.dry_run:
        print(render_chain(chain), end="")
        return 0
    job_ids = submit_chain(chain, cfg, site)
    print(f"submitted {args.config} -> {chain.run_dir}")
    for job in chain.jobs:
        print(f"  {job.name:<8} {job_ids[job.name]:>8}  {job.summary}")
    print(f"logs: {chain.log_dir}/   watch: lwroi status {chain.run_dir}   squeue -j {','.join(job_ids.values())}")
    return 0


def _submit_check(args: argparse.Namespace, cfg: Config) -> int:
    """``lwroi submit --check``: the site file against the cluster, one line per check; exit 1 if one fails."""
    from lwroi.orchestration.slurm import build_chain, check_site, read_site

    site = read_site(args.site, os.environ)
    workdir = Path.cwd()
    chain = build_chain(cfg, site, config_path=args.config, overrides=args.overrides, workdir=workdir,
                        image=args.image or Path(site.image or "LWROI_IMAGE-not-set"),
                        shards=site.shards if args.shards is None else args.shards,
                        ranks_per_task=site.ranks_per_task if args.ranks_per_task is None else args.ranks_per_task)
    checks = check_site(chain, site)
    for check in checks:
        print(check)
    failed = sum(not c.ok for c in checks)
    print(f"lwroi submit --check: {len(checks) - failed} of {len(checks)} checks passed ({args.site})")
    return 1 if failed else 0


def _layers(args: argparse.Namespace) -> int:
    from lwroi.features.describe import describe_model

    print("\n".join(describe_model(args.model, image_size=args.image_size, frame_count=args.frames,
                                   all_nodes=args.all_nodes)))
    return 0


def _status(run_dir: Path) -> int:
    from lwroi.outputs.status import format_status, run_status

    _, store, units = _plan_of(run_dir)
    print(format_status(run_status(store, units)))
    return 0


def _synth(args: argparse.Namespace) -> int:
    import numpy as np

    from lwroi.config import load_config
    from lwroi.data import write_synthetic_dataset
    from lwroi.features import build_extractor, extract_video_features

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    f = load_config(args.config).features
    extractor, info = build_extractor(f, device="cpu")

    def layer_features(paths: list[Path]) -> dict[str, np.ndarray]:
        return extract_video_features(paths, extractor, sampling=f.frame_sampling, count=f.frame_count,
                                      stride=f.frame_stride, batch_size=f.batch_size)

    truth = write_synthetic_dataset(
        args.out_dir, layer_features=layer_features, seed=args.seed, n_subjects=args.subjects,
        n_videos=args.videos, n_challenge=args.challenge,
        features={"model": f.model, "weights": info, "image_size": f.image_size, "resize": f.resize,
                  "frame_sampling": f.frame_sampling, "frame_count": f.frame_count, "frame_stride": f.frame_stride,
                  "config": str(args.config)},
    )
    print(f"wrote synthetic dataset to {args.out_dir} ({len(truth['subjects'])} subjects, "
          f"{truth['n_videos']} + {truth['n_challenge']} videos); truth in {args.out_dir / 'ground_truth.json'}")
    return 0


def entry_point() -> int:
    """The ``lwroi`` command (and ``python -m lwroi``): :func:`main`, then a process exit that skips a last full GC.

    A process that has imported torch spends about a second of CPU at exit with the garbage
    collector walking every object before the modules are torn down (measured: 1.1 s, 0.3 s with
    the objects frozen). The command's objects all die with the process anyway, so they are moved
    out of the collector's reach once the work is done. Exit handlers (MPI_Finalize, log
    flushing) still run. Not in :func:`main`, which callers in a longer-lived process may use.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(entry_point())

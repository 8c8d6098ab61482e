"""Training commands: ``train`` (under ``accelerate launch``) and ``export-model`` (the release layout)."""

from __future__ import annotations

import argparse

from nearid.cli.args import non_negative_int, positive_int


def cmd_train(args: argparse.Namespace) -> int:
    from nearid.common.weights import require_weights
    from nearid.training.config import TrainConfig
    from nearid.training.launch import Launch, launch_training
    from nearid.training.run_folder import check_run_folder

    config = TrainConfig.from_yaml(args.config)  # a bad config or a taken run folder: one line, before any launch
    check_run_folder(config.run.out, args.resume)
    require_weights(config.model.backbone, hint="set model.backbone in the config to a local SigLIP2 folder")

    launch = Launch(
        num_processes=args.num_processes,
        cpu=args.cpu or None,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        main_process_ip=args.main_process_ip,
        main_process_port=args.main_process_port,
    )
    return launch_training(args.config, launch, resume=args.resume)


def cmd_export_model(args: argparse.Namespace) -> int:
    from nearid.training.export import export_model

    folder = export_model(args.run, args.out, best=args.best)
    print(f"release written to {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the training commands to the ``nearid`` parser."""
    p = sub.add_parser("train", help="train the NearID head (runs accelerate launch -m nearid.training.train for you)")
    p.add_argument("--config", required=True, help="training YAML (see docs/training.md)")
    p.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="processes in all, over every machine (GPUs, or CPU workers)",
    )
    p.add_argument("--num-machines", type=positive_int, default=1, help="machines taking part (default: 1)")
    p.add_argument("--machine-rank", type=non_negative_int, default=0, help="this machine's rank (0 is the main one)")
    p.add_argument("--main-process-ip", default=None, help="address of machine rank 0 (several machines)")
    p.add_argument(
        "--main-process-port", type=non_negative_int, default=0, help="rendezvous port (default 0: a free one)"
    )
    p.add_argument("--resume", default=None, help="a checkpoint folder, or 'latest'")
    p.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-model", help="write a training run as the official NearID release layout")
    p.add_argument("run", help="training run folder (run.out of the config)")
    p.add_argument("--out", required=True, help="release folder to write")
    p.add_argument("--best", action="store_true", help="export the best head on validation instead of the final one")
    p.set_defaults(func=cmd_export_model)

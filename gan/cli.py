"""Command line: python -m gan {dataset, train, finetune, generate, interpolate} ... (each with --help)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from pathlib import Path

from gan.checkpoint import CheckpointError
from gan.config import D_KINDS, FINETUNE_DEFAULTS, FINETUNE_KEEP_VARIETY, FINETUNE_LIMITS
from gan.dataset import DatasetError
from gan.io import atomic_write_bytes
from gan.networks import NOISE_MODES


def _progress(events, total: int, desc: str) -> None:
    """Drive a training event stream with a tqdm bar; Ctrl-C stops the run cleanly (state saved)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    last = None
    for ev in events:
        if ev.kind == "step":
            bar.n = ev.step
            bar.set_postfix(G=f"{ev.losses.get('loss_G', 0):.3f}", D=f"{ev.losses.get('loss_D', 0):.3f}",
                            p=f"{ev.aug_p:.2f}", ips=f"{ev.img_per_s:.0f}", refresh=False)
            bar.update(0)
        elif ev.kind in ("checkpoint", "done", "stopped", "error"):
            if ev.message or ev.kind != "checkpoint":
                bar.write(f"[{ev.kind}] step {ev.step}, {ev.nimg} images. {ev.message} {ev.path or ''}".rstrip())
        last = ev
    bar.close()
    if last is not None and last.kind == "error":
        raise SystemExit(2)


def _run_training(state, dataset, out: Path, desc: str, seconds: float | None = None) -> None:
    import signal

    from gan.training import train

    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set) if seconds else None  # a time budget ends the run like Ctrl-C
    if timer is not None:
        timer.daemon = True
        timer.start()
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # `kill PID` (SIGTERM) stops at the next step with the state saved, like Ctrl-C
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    total = state.cfg.steps if state.cfg.steps is not None else -(-state.cfg.total_nimg // state.cfg.batch)
    events = train(state, dataset, run_dir=out, stop=stop)
    try:
        if state.dist.is_main:
            _progress(events, total, desc)
        elif any(ev.kind == "error" for ev in events):  # other torchrun ranks: no bar, same exit status
            raise SystemExit(2)
    except KeyboardInterrupt:
        stop.set()
        for ev in events:  # finish the current step and write the state
            if ev.kind in ("stopped", "done", "error"):
                print(f"[{ev.kind}] state saved to {ev.path}", file=sys.stderr)
    finally:
        if timer is not None:
            timer.cancel()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def cmd_dataset(a: argparse.Namespace) -> None:
    from gan.dataset import load_images
    from gan.emoji_build import build_emoji_dataset, build_multistyle_dataset

    if a.source == "emoji" and (a.twemoji or a.fluent):
        styles = tuple(x.strip() for x in a.fluent_styles.split(",") if x.strip())
        ds = build_multistyle_dataset(size=a.size, twemoji=a.twemoji, fluent=a.fluent, fluent_styles=styles,
                                      noto=not a.no_noto, limit=a.limit)
        for src in ds.sources:
            extra = f", {src['unmatched']} package files not in emoji-test.txt" if "unmatched" in src else ""
            print(f"{src['style']}: {src['matched']} matched, {src['images']} images{extra}")
        for s in ds.skipped:
            print("skipped:", s, file=sys.stderr)
    elif a.source == "emoji":
        ds = build_emoji_dataset(size=a.size, limit=a.limit)
    elif a.twemoji or a.fluent or a.no_noto:
        raise SystemExit("error: --twemoji, --fluent and --no-noto only go with the 'emoji' source")
    else:
        ds = load_images([a.source], size=a.size, name=Path(a.source).stem)
        for s in ds.skipped:
            print("skipped:", s, file=sys.stderr)
    ds.save(a.out)
    print(f"wrote {len(ds)} images ({a.size}x{a.size}) to {a.out}")


def _train_cfgs(a: argparse.Namespace):
    from gan.config import ModelConfig, TrainConfig, load_config_file

    if a.config:
        model_cfg, cfg, extra = load_config_file(a.config)
    else:
        model_cfg, cfg, extra = ModelConfig(), TrainConfig(), {}
    overrides = {k: v for k, v in (("batch", a.batch), ("total_nimg", a.kimg * 1000 if a.kimg else None),
                                    ("steps", a.steps), ("r1_gamma", a.gamma), ("seed", a.seed),
                                    ("xflip", a.mirror), ("balance_by", a.balance_by), ("d_kind", a.d_kind),
                                    ("d_input_res", a.d_input_res)) if v is not None}
    if a.tiny:  # a seconds-long smoke configuration
        model_cfg = dataclasses.replace(model_cfg, resolution=a.tiny, channel_base=64 * a.tiny // 8, channel_max=32,
                                        d_channel_base=64 * a.tiny // 8, d_channel_max=32, z_dim=32, w_dim=32)
    cfg = dataclasses.replace(cfg, **overrides)
    return model_cfg, cfg, extra


def cmd_train(a: argparse.Namespace) -> None:
    from gan import distributed
    from gan.dataset import load_dataset, load_images
    from gan.run_state import new_or_resume

    model_cfg, cfg, extra = _train_cfgs(a)
    data = a.data or extra.get("data")
    if not data:
        raise SystemExit("error: --data is required (or a 'data' entry in --config)")
    ds = load_dataset(data)
    if ds.resolution != model_cfg.resolution:
        ds = load_images([data], size=model_cfg.resolution, name=ds.name)
    dist, device = distributed.setup(a.device)  # alone, or one rank of `torchrun --nproc_per_node N -m gan train`
    try:
        try:
            state = new_or_resume(a.out, model_cfg, cfg, device, resume=a.resume, init=a.init, dist=dist)
        except (ValueError, FileExistsError, FileNotFoundError) as e:
            raise type(e)(_cli_words(str(e))) from None
        if dist.is_main:
            print(f"training {model_cfg} on {len(ds)} images from {data} ({state.device} x {dist.world_size}); "
                  f"run folder {a.out}")
        _run_training(state, ds, Path(a.out), "train")
    finally:
        distributed.teardown(dist)


def _cli_words(message: str) -> str:
    """A library message about resuming, in the words of this command's flags."""
    for lib, cli in (("resume it (resume=True) or choose another run folder", "pass --resume to continue it or choose another --out"),
                     ("resume=True but", "--resume given but"),
                     ("either resume the run folder or start from an init checkpoint, not both",
                      "give --resume (continue --out) or --init (start from a checkpoint), not both")):
        message = message.replace(lib, cli)
    return message


def cmd_finetune(a: argparse.Namespace) -> None:
    from gan import distributed
    from gan.config import TrainConfig
    from gan.dataset import load_images
    from gan.resolve import resolve_checkpoint
    from gan.training import TrainState

    ck = resolve_checkpoint(a.checkpoint)
    if ck.D is None and a.d_kind != "projected":
        raise SystemExit(f"error: {ck.path} holds no discriminator (D.*); fine-tune it with --d-kind projected, "
                         "which starts a fresh one")
    ds = load_images([a.data], size=ck.model_cfg.resolution, name=Path(a.data).stem)
    over = {k: v for k, v in (("steps", a.steps), ("batch", a.batch), ("lr_g", a.lr), ("lr_d", a.lr), ("seed", a.seed),
                              ("xflip", a.mirror), ("d_kind", a.d_kind), ("d_input_res", a.d_input_res)) if v is not None}
    if a.seconds is not None and a.steps is None:
        over["steps"] = FINETUNE_LIMITS["steps"][1]  # the time budget decides; steps only cap it
    if a.no_freeze:
        over.update(freeze_mapping=False, freeze_d_blocks=0)
    if a.keep_variety:
        over.update(FINETUNE_KEEP_VARIETY)
    cfg = TrainConfig.finetune_defaults(n_images=len(ds), **over)
    dist, device = distributed.setup(a.device)  # alone, or one rank of `torchrun --nproc_per_node N -m gan finetune`
    try:
        if a.seconds is not None and dist.world_size > 1:
            raise SystemExit("error: --seconds works in a single process (ranks must stop at the same step); use --steps")
        state = TrainState(ck.model_cfg, cfg, device=device, init=ck, dist=dist)
        if dist.is_main:
            length = f"{a.seconds:g} s (at most {cfg.steps} steps)" if a.seconds else f"{cfg.steps} steps"
            print(f"fine-tuning {ck.path} on {len(ds)} images for {length}; run folder {a.out}")
        _run_training(state, ds, Path(a.out), "finetune", seconds=a.seconds)
    finally:
        distributed.teardown(dist)


def cmd_generate(a: argparse.Namespace) -> None:
    from PIL import Image

    from gan.images import grid, upscale
    from gan.labels import LabelSpace
    from gan.latent import check_params, parse_seeds, render, seeds_to_ws
    from gan.resolve import resolve_checkpoint
    from gan.runtime import default_noise_mode, pick_device

    seeds = parse_seeds(a.seeds)
    ck = resolve_checkpoint(a.checkpoint)
    a.noise_mode = a.noise_mode or default_noise_mode(ck.meta)
    check_params(a.psi, a.noise_mode)
    c = LabelSpace.of(ck.model_cfg, ck.meta).c_for_seeds(seeds, a.category, a.style)  # (B, c_dim) or None
    G = ck.G_ema.to(pick_device(a.device))
    imgs = render(G, seeds_to_ws(G, seeds, psi=a.psi, c=c), noise_mode=a.noise_mode)  # (B, H, W, 3)
    out = Path(a.out)
    if out.suffix.lower() in (".png", ".jpg", ".webp"):
        im = grid(imgs, cols=a.cols, pad=a.pad)
        Image.fromarray(upscale(im, a.scale)).save(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for s, im in zip(seeds, imgs):
            Image.fromarray(upscale(im, a.scale)).save(out / f"seed{s:04d}.png")
    print(f"wrote {len(seeds)} images to {out}")


def cmd_interpolate(a: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from gan.images import gif_bytes, grid, upscale
    from gan.labels import LabelSpace
    from gan.latent import interpolate_seeds, parse_seeds
    from gan.resolve import resolve_checkpoint
    from gan.runtime import default_noise_mode, pick_device

    seeds = parse_seeds(a.seeds)
    ck = resolve_checkpoint(a.checkpoint)
    a.noise_mode = a.noise_mode or default_noise_mode(ck.meta)
    c = LabelSpace.of(ck.model_cfg, ck.meta).c_for_seeds(seeds, a.category, a.style)  # (K, c_dim) or None
    G = ck.G_ema.to(pick_device(a.device))
    frames = interpolate_seeds(G, seeds, a.frames, a.method, a.space, a.loop, a.psi, a.noise_mode, c=c)
    frames = np.stack([upscale(f, a.scale) for f in frames])  # (T, H, W, 3)
    out = Path(a.out)
    if out.suffix.lower() == ".gif":
        atomic_write_bytes(out, gif_bytes(frames, fps=a.fps))
    else:
        Image.fromarray(grid(frames, cols=len(frames))).save(out)
    print(f"wrote {len(frames)} frames to {out}")


def cmd_directions(a: argparse.Namespace) -> None:
    from gan import directions as dirs
    from gan.resolve import resolve_checkpoint

    ck = resolve_checkpoint(a.checkpoint)
    kw = {"n": a.samples} if a.method == "ganspace" else ({"layers": tuple(a.layers)} if a.layers else {})
    d = dirs.compute(ck.G_ema, a.method, k=a.k, **kw)
    d.checkpoint_sha256 = ck.sha256
    path = d.save(a.out)
    print(f"{a.method}: {len(d)} directions in {d.seconds:.3f} s -> {path} (+ .json)")
    for label, std in zip(d.labels(), d.stds):
        print(f"  {label}, std {std:.3f}")


def cmd_project(a: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from gan.dataset import load_images
    from gan.images import from_uint8, grid
    from gan.projector import project
    from gan.resolve import resolve_checkpoint

    ck = resolve_checkpoint(a.checkpoint)
    R = ck.model_cfg.resolution
    ds = load_images([a.image], size=R, name="target")
    target = from_uint8(ds.images[:1])  # (1, 3, R, R)
    bar = tqdm(total=a.steps + a.wplus_steps, desc="project", unit="step")
    last = None
    for ev in project(ck.G_ema, target, steps=a.steps, wplus_steps=a.wplus_steps, D=ck.D if a.d_features else None):
        bar.n = ev.step
        bar.set_postfix(loss=f"{ev.loss:.4f}", psnr=f"{ev.psnr:.1f}dB", refresh=False)
        bar.update(0)
        last = ev
    bar.close()
    out = Path(a.out)
    np.save(out.with_suffix(".npy"), last.ws[0].numpy())  # (num_ws, w_dim)
    Image.fromarray(grid(np.stack([ds.images[0], last.image]), cols=2)).save(out.with_suffix(".png"))
    print(f"PSNR {last.psnr:.2f} dB; ws -> {out.with_suffix('.npy')}, target|reconstruction -> {out.with_suffix('.png')}")


def cmd_features(a: argparse.Namespace) -> None:
    from gan.dataset import load_dataset
    from gan.features import save_feature_net, train_feature_net

    ds = load_dataset(a.data)
    if "group" not in ds.labels:
        raise ValueError(f"{a.data} has no group labels; build it with `python -m gan dataset emoji`")
    net, card = train_feature_net(ds, epochs=a.epochs, seed=a.seed, width=a.width, balanced=a.balanced)
    path = save_feature_net(net, a.out, card)
    print(f"held-out accuracy: group {card['group_acc']:.3f}, subgroup {card['subgroup_acc']:.3f} -> {path}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    import json

    from gan.dataset import load_dataset
    from gan.evaluate import evaluate
    from gan.io import atomic_write_text
    from gan.resolve import resolve_checkpoint
    from gan.runtime import default_noise_mode

    ck = resolve_checkpoint(a.checkpoint)
    ds = load_dataset(a.data)
    noise_mode = a.noise_mode or default_noise_mode(ck.meta)
    try:
        res = evaluate(ck.G_ema, ds, n=a.n, features=a.features, inception_weights=a.inception_weights,
                       noise_mode=noise_mode)
    except RuntimeError as e:
        if a.features == "inception":  # the library names the file; the flag that takes it is ours to say
            raise RuntimeError(f"{e}; pass it as --inception-weights PATH") from None
        raise
    res.update(checkpoint=str(ck.path), checkpoint_sha256=ck.sha256, nimg=ck.meta.get("nimg"))
    m, f = res["model"], res["real_vs_real"]
    print(f"{'':14}{'FD':>10}{'KID':>10}{'precision':>11}{'recall':>8}")
    for name, r in (("model", m), ("real-vs-real", f)):
        print(f"{name:14}{r['fd']:10.3f}{r['kid']:10.4f}{r['precision']:11.3f}{r['recall']:8.3f}")
    if "recognised" in res:
        r = res["recognised"]
        print(f"recognised by the emoji classifier (top subgroup p >= {r['threshold']}) at psi {r['psi']}: "
              f"{r['model']:.3f} of samples ({r['real']:.3f} of {r['real_images']} real emoji)")
    if a.out:
        atomic_write_text(a.out, json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan", description="GAN Studio: StyleGAN2 library and tools")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("dataset", help="build a dataset folder (images.npy + meta.json)")
    s.add_argument("source", help="'emoji' (Noto Color Emoji font) or a folder/zip of images")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--size", type=int, default=64, help="resolution in pixels (default 64)")
    s.add_argument("--limit", type=int, default=None, help="only the first N emoji (for quick tests)")
    s.add_argument("--twemoji", metavar="PATH", help="emoji: also the unpacked @twemoji/svg npm package (CC-BY 4.0)")
    s.add_argument("--fluent", metavar="PATH", help="emoji: also the unpacked fluentui-emoji npm package (MIT)")
    s.add_argument("--fluent-styles", default="flat", help="emoji: Fluent styles, comma-separated: flat, modern, "
                   "high-contrast (default flat)")
    s.add_argument("--no-noto", action="store_true", help="emoji: leave out the Noto font renders")
    s.set_defaults(fn=cmd_dataset)

    def train_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--batch", type=int, default=None, help="images per step")
        s.add_argument("--seed", type=int, default=None, help="random seed of the run")
        s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
        s.add_argument("--mirror", action="store_true", default=None,
                       help="also show D the real images mirrored left-right (doubles a small dataset)")
        s.add_argument("--d-kind", choices=D_KINDS, default=None,
                       help="discriminator: stylegan2 (residual, logistic + R1) or projected (frozen ImageNet "
                            "EfficientNet-Lite0 features, hinge loss; starts fresh when the checkpoint's D is another kind)")
        s.add_argument("--d-input-res", type=int, default=None, metavar="PX",
                       help="projected D: resize images to PX before the feature network (default: the model's size)")

    s = sub.add_parser("train", help="train from scratch (resumable; several GPUs: torchrun --nproc_per_node N -m gan train ...)")
    s.add_argument("--data", help="dataset folder (from `dataset`) or folder/zip of images")
    s.add_argument("--out", required=True, help="run folder (state.safetensors, log.jsonl, samples/)")
    s.add_argument("--config", help="JSON run config with 'model', 'train' (and 'data') sections")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="continue a run from an exported checkpoint (G_ema + D, e.g. the shipped one) into a new --out; "
                        "images seen and augment p carry over, the optimizer state restarts")
    s.add_argument("--kimg", type=int, default=None, help="train until this many thousand images")
    s.add_argument("--steps", type=int, default=None, help="train for this many steps instead")
    s.add_argument("--gamma", type=float, default=None, help="R1 weight")
    s.add_argument("--tiny", type=int, default=None, metavar="RES", help="tiny smoke-test model at RES px")
    s.add_argument("--balance-by", default=None, metavar="LABEL",
                   help="draw images so that each class of this dataset label (e.g. group) is seen equally often")
    train_args(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("finetune", help="fine-tune a checkpoint on a few images")
    s.add_argument("--checkpoint", default=None, help="checkpoint with G_ema and D (default: the shipped model)")
    s.add_argument("--data", required=True, help="folder, zip or dataset folder of target images")
    s.add_argument("--seconds", type=float, default=None, help="train for this long (steps then only cap the run)")
    s.add_argument("--steps", type=int, default=None, help=f"steps (default {FINETUNE_DEFAULTS['steps']})")
    s.add_argument("--lr", type=float, default=None, help=f"learning rate of G and D (default {FINETUNE_DEFAULTS['lr_g']:g})")
    s.add_argument("--no-freeze", action="store_true", help="train the mapping network and all D blocks too")
    s.add_argument("--keep-variety", action="store_true",
                   help="few-shot sets: each sample keeps its own layout and subject in the new style "
                        "(the lowest synthesis blocks stay fixed)")
    s.add_argument("--out", required=True, help="run folder")
    train_args(s)
    s.set_defaults(fn=cmd_finetune)

    def gen_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--checkpoint", default=None, help="default: checkpoints/emoji64.safetensors")
        s.add_argument("--seeds", required=True, help="e.g. 0-15 or 1,2,3")
        s.add_argument("--psi", type=float, default=1.0, help="truncation psi (1 = none)")
        s.add_argument("--noise-mode", default=None, choices=NOISE_MODES,
                       help="default: the checkpoint card's default_noise_mode, else const")
        s.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscaling factor")
        s.add_argument("--category", default="any",
                       help="conditional models: a group ('Food & Drink'), a subgroup ('food-fruit') or 'any' "
                            "(a category drawn per seed, each equally often)")
        s.add_argument("--style", default="any", help="conditional models with styles: e.g. noto, twemoji, fluent-flat")
        s.add_argument("--device", default=None)
        s.add_argument("--out", required=True)

    s = sub.add_parser("generate", help="render seeds to a grid PNG (or a folder of PNGs)")
    gen_args(s)
    s.add_argument("--cols", type=int, default=None, help="grid columns (default: square)")
    s.add_argument("--pad", type=int, default=0, help="pixels between grid cells")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("interpolate", help="walk through seeds to a GIF (or a PNG strip)")
    gen_args(s)
    s.add_argument("--frames", type=int, default=24, help="frames per segment")
    s.add_argument("--method", default="slerp", choices=["lerp", "slerp"])
    s.add_argument("--space", default="z", choices=["z", "w"])
    s.add_argument("--loop", action="store_true", help="return to the first seed")
    s.add_argument("--fps", type=float, default=12.0)
    s.set_defaults(fn=cmd_interpolate)

    s = sub.add_parser("directions", help="latent directions (SeFa or GANSpace) -> .npz + .json")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--method", default="sefa", choices=["sefa", "ganspace"])
    s.add_argument("--k", type=int, default=16, help="number of directions")
    s.add_argument("--samples", type=int, default=100_000, help="GANSpace: sampled latents")
    s.add_argument("--layers", type=int, nargs=2, default=None, metavar=("START", "END"), help="SeFa: style layers [START, END)")
    s.add_argument("--out", required=True, help="output path (.npz and .json are written)")
    s.set_defaults(fn=cmd_directions)

    s = sub.add_parser("project", help="invert an image into the generator's latent space")
    s.add_argument("image", help="an image file")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--steps", type=int, default=300, help="steps in W")
    s.add_argument("--wplus-steps", type=int, default=200, help="further steps in W+ (0: stay in W)")
    s.add_argument("--d-features", action="store_true", help="add the discriminator-feature loss")
    s.add_argument("--out", required=True, help="output stem: writes .npy (ws) and .png (target | result)")
    s.set_defaults(fn=cmd_project)

    s = sub.add_parser("features", help="train the emoji feature network used by `evaluate`")
    s.add_argument("--data", required=True, help="emoji dataset folder (with group labels)")
    s.add_argument("--epochs", type=int, default=12)
    s.add_argument("--seed", type=int, default=0, help="initial weights and held-out split (another seed: an independent judge)")
    s.add_argument("--width", type=int, default=32, help="channels of the first conv (doubled at each stage)")
    s.add_argument("--balanced", action="store_true", help="draw images ~ 1/sqrt(subgroup size): small groups count more")
    s.add_argument("--out", default="checkpoints/emoji_features.safetensors")
    s.set_defaults(fn=cmd_features)

    s = sub.add_parser("evaluate", help="FD, KID, precision/recall vs a dataset, with the real-vs-real floor")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--data", required=True, help="dataset folder")
    s.add_argument("--n", type=int, default=5000, help="generated samples")
    s.add_argument("--features", default="emoji", choices=["emoji", "inception"])
    s.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth (for --features inception)")
    s.add_argument("--noise-mode", default=None, choices=NOISE_MODES,
                   help="default: the checkpoint card's default_noise_mode, else const")
    s.add_argument("--out", default=None, help="write the results as JSON")
    s.set_defaults(fn=cmd_evaluate)

    def cmd_import(a: argparse.Namespace) -> None:
        from gan.importer import import_checkpoint

        path = import_checkpoint(a.src, a.out, name=a.name, license=a.license)
        print(f"imported {a.src} -> {path} (+ {path.with_suffix('.json').name})")

    s = sub.add_parser("import", help="convert a StyleGAN2 network (NVlabs .pkl, rosinality .pt) to a checkpoint, safely")
    s.add_argument("src", help="NVlabs network pickle (stylegan2-ada-pytorch / stylegan3 stylegan2 config) or rosinality .pt")
    s.add_argument("--out", required=True, help="output checkpoint, e.g. checkpoints/NAME.safetensors (+ .json card)")
    s.add_argument("--name", default=None, help="model name for the card (default: the source file name)")
    s.add_argument("--license", default=None, help="the licence of the weights, as you know it (recorded in the card)")
    s.set_defaults(fn=cmd_import)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (CheckpointError, DatasetError, ValueError, RuntimeError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

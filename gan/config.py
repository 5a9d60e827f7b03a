"""Plain dataclass configs for the model and the training loop, with JSON round trips."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESAMPLE_MODES = ("studio", "nvlabs")
AUGMENT_MODES = ("ada", "fixed", "none")  # TrainConfig.augment
G_PARTS = ("all", "styles")  # TrainConfig.g_parts
D_KINDS = ("stylegan2", "projected")  # TrainConfig.d_kind (gan/discriminators.py)


@dataclass
class ModelConfig:
    resolution: int = 64  # Output resolution (power of two, 32..256).
    img_channels: int = 3  # RGB.
    z_dim: int = 128  # Input latent dimensionality.
    w_dim: int = 128  # Intermediate latent dimensionality.
    mapping_layers: int = 2  # FC layers in the mapping network (SG2-ADA uses 2 at low resolution).
    mapping_lr_mul: float = 0.01  # Learning-rate multiplier of the mapping network.
    channel_base: int = 1024  # Generator channels at resolution r: max(min(channel_base // r, channel_max), channel_min).
    channel_max: int = 256  # Cap on generator channels (64 px: 256, 128, 64, 32, 16 at 4..64).
    d_channel_base: int = 1024  # Same rule for the discriminator.
    d_channel_max: int = 256  # Cap on discriminator channels.
    channel_min: int = 0  # Floor on generator channels (widens only the high-resolution layers, where outlines are drawn).
    d_channel_min: int = 0  # Floor on discriminator channels.
    mbstd_group_size: int = 4  # Minibatch-stddev group size.
    mbstd_num_channels: int = 1  # Minibatch-stddev features.
    noise_max_res: int = 1024  # Per-pixel noise inputs only in layers up to this resolution (StyleGAN2: all).
    # Clamp conv outputs (G and D) to +-conv_clamp after bias and activation, as NVlabs' conv_clamp (256 in their
    # mixed-precision configs; imported models that used it need it to render the same). None: no clamp.
    conv_clamp: float | None = None
    # How the resampling convs treat borders and decimation. 'studio' (this repo's own models): G up-samples and crops
    # before its 3x3 conv; D blurs + decimates, then convolves at half resolution. 'nvlabs' (imported models): G's
    # up-conv also sees the up-sampled pixel beyond each border, and D blurs at full resolution then uses a stride-2
    # conv, which is what NVlabs' and rosinality's code compute. Both train; they are not interchangeable on weights.
    resample_mode: str = "studio"
    # Conditioning on labels (design-notes section 9; transitional, Shahbazi et al. 2022). `labels` names the label
    # kinds, e.g. ('subgroup', 'style'); `label_names` lists the class names of each kind in index order. A label c
    # is one one-hot block per kind, concatenated: (B, c_dim), c_dim = total number of classes. () = unconditional:
    # no label weights at all, so unconditional checkpoints load and compute exactly as before.
    labels: tuple[str, ...] = ()
    label_names: tuple[tuple[str, ...], ...] = ()
    # The parent (e.g. the Unicode group) of each class of the first label kind, in its order; () = no parents. A
    # class's label embedding is then its own plus its parent's (G and D), and the parent's part learns from every
    # image of the parent, so a subgroup with a dozen images starts from what its group has in common.
    label_parents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Config files give lists; tuples keep configs comparable (resuming checks that they are equal).
        self.labels = tuple(self.labels)
        self.label_names = tuple(tuple(names) for names in self.label_names)
        self.label_parents = tuple(self.label_parents)
        if len(self.labels) != len(self.label_names) or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels {self.labels} must be distinct and have one list of class names each "
                             f"(got {len(self.label_names)})")
        if any(len(names) < 1 for names in self.label_names):
            raise ValueError("every label kind needs at least one class name")
        if self.label_parents and (not self.labels or len(self.label_parents) != len(self.label_names[0])):
            raise ValueError(f"label_parents needs one parent per class of the first label kind "
                             f"({len(self.label_names[0]) if self.labels else 0} classes), got {len(self.label_parents)}")
        r = self.resolution
        if r < 8 or r > 1024 or 2 ** int(math.log2(r)) != r:
            raise ValueError(f"resolution must be a power of two in [8, 1024], got {r}")
        if self.resample_mode not in RESAMPLE_MODES:
            raise ValueError(f"resample_mode must be one of {RESAMPLE_MODES}, got {self.resample_mode!r}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f"conv_clamp must be positive or None, got {self.conv_clamp}")

    @property
    def c_dim(self) -> int:
        """Width of a label vector c: the number of classes over all label kinds (0: unconditional)."""
        return sum(len(names) for names in self.label_names)

    @property
    def parent_names(self) -> tuple[str, ...]:
        """The distinct parents of label_parents, in order of first appearance."""
        return tuple(dict.fromkeys(self.label_parents))

    def channels(self, res: int) -> int:
        return max(min(self.channel_base // res, self.channel_max), self.channel_min)

    def d_channels(self, res: int) -> int:
        return max(min(self.d_channel_base // res, self.d_channel_max), self.d_channel_min)


@dataclass
class TrainConfig:
    batch: int = 32  # Images per step.
    lr_g: float = 0.0025  # Generator Adam learning rate.
    lr_d: float = 0.0025  # Discriminator Adam learning rate.
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas.
    r1_gamma: float = 0.05  # R1 weight (SG2-ADA heuristic 0.0002 * res^2 / batch = 0.026 at 64 px / 32).
    r1_interval: int = 16  # Lazy R1: regularise every N steps (scaled up by N).
    style_mixing: float = 0.9  # Probability of mixing two latents in a G step.
    ema_nimg: int = 10_000  # G_ema half-life in images.
    ema_rampup: float | None = 0.05  # Half-life is at most this fraction of images seen (None: no ramp).
    augment: str = "ada"  # 'ada' (adaptive p), 'fixed' (constant p) or 'none'.
    aug_p: float = 0.0  # Initial (or fixed) augmentation probability.
    ada_target: float = 0.6  # ADA target of E[sign(D(real))].
    ada_interval: int = 4  # Adjust p every N steps.
    ada_kimg: int = 100  # p can move 0 -> 1 in this many thousand images (500 in SG2-ADA; faster for short runs).
    aug_policy: str = "color,translation,cutout"  # DiffAugment ops.
    xflip: bool = False  # Show D each real image mirrored left-right with probability 0.5 (SG2-ADA's --mirror).
    total_nimg: int = 200_000  # Stop after this many images (training from scratch).
    steps: int | None = None  # Or after this many steps (takes precedence when set; used by fine-tuning).
    freeze_mapping: bool = False  # Fine-tune: keep the mapping network fixed.
    freeze_d_blocks: int = 0  # FreezeD: freeze this many highest-resolution D blocks.
    # Fine-tune: which synthesis weights of G train. 'all'; or 'styles': the style affines, the toRGB layers and the
    # biases only (colour, stroke and texture move, the conv kernels that draw the shapes stay; no kernel gradients).
    g_parts: str = "all"
    # Fine-tune (FreezeG): keep the features of this many lowest-resolution synthesis blocks fixed (block 0 is 4x4;
    # their toRGB layers still train, so the colours can move). The coarse layout, i.e. what is drawn where, stays
    # the source model's, so the samples stay as varied as its; stroke and texture move in the higher blocks.
    freeze_g_blocks: int = 0
    # Fine-tune: weight of the cross-domain distance consistency loss (Ojha et al. 2021; gan/cdc.py), which keeps the
    # samples as different from each other as the starting model's are. 0: off. For few-shot sets (<= ~30 images).
    cdc_weight: float = 0.0
    # Conditional models: label_lambda (the weight of the label in G's mapping and in D's loss) ramps 0 -> 1 over
    # this many images, on top of wherever it stands (a model fresh from tools.add_labels starts at 0).
    label_ramp_nimg: int = 20_000
    # Draw training images so that each class of this dataset label (e.g. 'group') is seen equally often, rather than
    # as often as the data holds it; the fakes' labels follow the same draw, so G is asked for each class as often as
    # D sees it. For a lopsided set (59 % of the emoji are People & Body) this spends the steps on the thin classes.
    # None: every image equally often (SG2-ADA's practice).
    balance_by: str | None = None
    # How far towards equal classes: each image is drawn with weight count(its class) ** -balance_power (1: every
    # class equally often; 0.5: halfway, in log terms, between the data's mix and equal classes).
    balance_power: float = 1.0
    sample_every: int = 200  # Emit a fixed-seed sample grid every N steps (0: only at the end).
    checkpoint_every: int = 500  # Write the run state every N steps (0: only at the end).
    log_every: int = 10  # Append a line to log.jsonl every N steps.
    grid_seeds: tuple[int, ...] = tuple(range(16))  # Seeds of the fixed sample grid.
    seed: int = 0  # Seed of weights init, data order and noise.
    num_threads: int | None = None  # torch.set_num_threads (None: leave as is).
    sample_every_s: float = 0.0  # Also emit a sample grid every N seconds of training (0: off; checked at log steps).
    checkpoint_every_s: float = 0.0  # Also write the run state every N seconds of training (0: off; checked at log steps).
    mixed_precision: bool | None = None  # bf16 autocast for the convs of G and D (None: on with CUDA, off on the CPU).
    # The discriminator (gan/discriminators.py): 'stylegan2' (residual D, logistic loss + lazy R1) or 'projected'
    # (frozen ImageNet EfficientNet-Lite0 features + trained heads, hinge loss; Projected GAN). A run or fine-tune
    # whose starting checkpoint holds another kind of D starts a fresh one of this kind.
    d_kind: str = "stylegan2"
    d_input_res: int = 0  # Projected D: resize images to this size before the feature network (0: the model's size).

    def __post_init__(self) -> None:
        # Config files give lists; tuples keep configs comparable (resuming checks that they are equal).
        self.betas = tuple(self.betas)
        self.grid_seeds = tuple(self.grid_seeds)
        from gan.augment import parse_policy  # torch-free check of the op names, kept beside the ops themselves

        parse_policy(self.aug_policy)
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"augmentation must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if self.g_parts not in G_PARTS:
            raise ValueError(f"g_parts must be one of {G_PARTS}, got {self.g_parts!r}")
        if self.d_kind not in D_KINDS:
            raise ValueError(f"the discriminator kind must be one of {D_KINDS}, got {self.d_kind!r}")
        if self.batch < 1 or (self.steps is not None and self.steps < 0):
            raise ValueError(f"batch must be >= 1 and steps >= 0, got batch {self.batch}, steps {self.steps}")
        if self.freeze_d_blocks < 0 or self.freeze_g_blocks < 0 or self.d_input_res < 0:
            raise ValueError("freeze_d_blocks, freeze_g_blocks and d_input_res must not be negative")

    @staticmethod
    def finetune_defaults(n_images: int | None = None, **overrides: Any) -> "TrainConfig":
        """The few-shot fine-tuning recipe (frozen mapping, FreezeD, lower lr, short EMA, augmentation on), with
        `overrides` checked against `FINETUNE_LIMITS`. The app's widgets, the CLI and the benchmark all start here.

        With `n_images` <= 100, augmentation starts at p = 0.5 unless `aug_p` is given (DiffAugment is essential for tiny sets), and the
        batch is at most the number of images (at least 2).
        """
        base = {**FINETUNE_DEFAULTS, **overrides}
        for key, (lo, hi) in FINETUNE_LIMITS.items():
            if base.get(key) is not None and not lo <= base[key] <= hi:
                raise ValueError(f"{FINETUNE_NAMES[key]} must be within [{lo:g}, {hi:g}], got {base[key]:g}")
        if n_images is not None:
            base["batch"] = min(base["batch"], max(2, n_images))
            if n_images <= 100 and base["augment"] != "none" and "aug_p" not in overrides:
                base["aug_p"] = max(base["aug_p"], 0.5)
        return TrainConfig(**base)



# The fine-tuning recipe (see TrainConfig.finetune_defaults), from arms on the shipped model and the ink-sketch faces
# (docs/training-notes.md, "Fine-tuning in seconds"): KID to the target halved after 190 steps with lr 3e-3 and a
# fixed 1,000-image G EMA, 80 with a 200-image EMA, 40 with lr 6e-3 and an EMA whose half-life grows with the run
# (20 % of the images seen, at most 1,000: it follows G closely at first and smooths long runs). The samples the
# user watches are G_ema's, so a long fixed EMA hid progress that G had already made. FreezeD 0 made no difference,
# batch 4 took as long as batch 8 per image, training only the style affines and toRGB was slower.
FINETUNE_DEFAULTS: dict[str, Any] = dict(
    batch=8, lr_g=0.006, lr_d=0.006, ema_nimg=1_000, ema_rampup=0.2, augment="ada", aug_p=0.2, ada_kimg=20,
    freeze_mapping=True, freeze_d_blocks=1, steps=150, sample_every=20, checkpoint_every=100, log_every=1,
    grid_seeds=tuple(range(16)), xflip=False, d_kind="stylegan2",
)
# The "keep variety" option (app checkbox, `finetune --keep-variety`) for few-shot sets: FreezeG, the features of the
# 4 and 8 px synthesis blocks stay the base model's, so each sample keeps its own layout and subject in the new
# style. On 10 ink sketches it halved KID about as fast as the default and kept each sample's subject to step 200,
# where the default drifted into copies of the targets; the distance-consistency term (cdc_weight 2000) kept the
# subjects too but halved KID after 75-125 steps (the default 25-50), or not at all on faces (training notes, "Keep
# variety, measured along the run").
FINETUNE_KEEP_VARIETY: dict[str, Any] = dict(freeze_g_blocks=2)
FINETUNE_SECONDS = 60  # the app's default run length: long enough to see the style move on 2 CPU cores
# Ranges a fine-tune request must stay within (the web API bypasses the UI's sliders), and their names in messages.
FINETUNE_LIMITS: dict[str, tuple[float, float]] = dict(steps=(1, 2000), lr_g=(1e-5, 1e-2), lr_d=(1e-5, 1e-2),
                                                       batch=(2, 64), freeze_d_blocks=(0, 8), cdc_weight=(0, 1e4),
                                                       freeze_g_blocks=(0, 8))
FINETUNE_NAMES = dict(steps="steps", lr_g="learning rate", lr_d="discriminator learning rate", batch="batch size",
                      freeze_d_blocks="frozen D blocks", cdc_weight="diversity weight",
                      freeze_g_blocks="frozen G blocks")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, refusing unknown keys (typos in a config file are errors)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def load_config_file(path: str | Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """A run config JSON: {"model": {...}, "train": {...}, "data": {...}} -> (ModelConfig, TrainConfig, extra)."""
    d = json.loads(Path(path).read_text())
    model = from_dict(ModelConfig, d.get("model", {}))
    train = from_dict(TrainConfig, d.get("train", {}))
    extra = {k: v for k, v in d.items() if k not in ("model", "train")}
    return model, train, extra


"""StyleGAN2 (config-f style) generator and residual discriminator in plain PyTorch.

Faithful to Karras et al. 2020 ("Analyzing and Improving the Image Quality of StyleGAN") and to the layout of
NVlabs' networks_stylegan2.py, so that real StyleGAN2 weights can be mapped onto it parameter for parameter:

    z (B, z_dim) -> MappingNetwork -> w (B, w_dim) -> broadcast -> ws (B, num_ws, w_dim)
    ws -> SynthesisNetwork: learned 4x4 const -> [modulated 3x3 conv (+up), noise, bias, lrelu] x N -> skip toRGB

No compiled ops: the FIR resampling is a depthwise (transposed) convolution and the modulated convolution uses the
"non-fused" form (scale inputs by the style, shared conv, scale outputs by the demodulation coefficient), which is
exactly equal to modulating the weights and is the fast form for batched training on both CPU and GPU.
"""
from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gan.config import ModelConfig

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


# ----------------------------------------------------------------------------------------------------------------
# Primitives


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm over the feature dimension: x / sqrt(mean(x^2))."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) with StyleGAN's variance-preserving gain sqrt(2)."""
    return F.leaky_relu(x, 0.2) * SQRT2


# Batch-invariant rendering. A CPU library picks its kernel by the shapes of a call: oneDNN's convolution by the
# batch size among others, and a matrix product of one row is a GEMV that rounds differently from a GEMM. So a sample's
# pixels can depend on how many others share its batch (on the shipped model, 35 of 61 frames differ in some uint8
# value between batch 1 and batch 61). A server that shows a slider's pre-rendered frames while it is dragged, then the
# render of the value released, needs both to be the same bits. In batch-invariant mode (Generator.batch_invariant_)
# the synthesis runs every matrix product on exactly INVARIANT_ROWS rows and every convolution on one sample at a time,
# so a sample goes through the same calls with the same shapes whatever else is in its batch (elementwise ops are
# invariant anyway). A lone sample then costs what batch 1 costs; only the convolutions lose batching.
INVARIANT_ROWS = 16


def in_fixed_rows(fn, x: torch.Tensor, rows: int = INVARIANT_ROWS) -> torch.Tensor:
    """fn(x) computed in calls of exactly `rows` rows, the last call padded by repeating its last row: (B, ...) ->
    (B, ...). For a row-wise fn such as a linear layer, each row's result depends only on the row, not on the batch."""
    out = []
    for i in range(0, x.shape[0], rows):
        part = x[i : i + rows]  # (n <= rows, ...)
        n = part.shape[0]
        if n < rows:
            part = torch.cat([part, part[-1:].expand(rows - n, *part.shape[1:])])  # (rows, ...)
        out.append(fn(part)[:n])
    return torch.cat(out) if len(out) > 1 else out[0]


def one_at_a_time(fn, x: torch.Tensor) -> torch.Tensor:
    """fn applied to each sample alone, at batch 1: (B, ...) -> (B, ...)."""
    return torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])]) if x.shape[0] > 1 else fn(x)


def fir_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable 2D FIR kernel from 1D taps, normalised to sum 1. Returns (K, K)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f2 = torch.outer(f, f)  # (K, K)
    return f2 / f2.sum()


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x upsampling by zero insertion + [1,3,3,1] FIR (gain 4), as a depthwise transposed conv.

    x: (B, C, H, W) -> (B, C, 2H, 2W). Output pixels 2i and 2i+1 sit at -1/4 and +1/4 of input pixel i.
    """
    C = x.shape[1]
    k = (kernel * 4).to(x.dtype)[None, None].expand(C, 1, -1, -1)  # (C, 1, 4, 4)
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=C)


def downsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x downsampling: [1,3,3,1] FIR low-pass then decimation, as a depthwise strided conv.

    x: (B, C, H, W) -> (B, C, H/2, W/2).
    """
    C = x.shape[1]
    k = kernel.to(x.dtype)[None, None].expand(C, 1, -1, -1)  # (C, 1, 4, 4)
    return F.conv2d(x, k, stride=2, padding=1, groups=C)


class FullyConnectedLayer(nn.Module):
    """Equalized-learning-rate linear layer (weights stored at N(0, 1/lr_mul^2), scaled at run time)."""

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Add a learned bias?
        bias_init: float = 0.0,  # Initial value of the bias.
        lr_multiplier: float = 1.0,  # Learning-rate multiplier (0.01 for the mapping network).
        activation: str = "linear",  # 'linear' or 'lrelu'.
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        return lrelu_gain(x) if self.activation == "lrelu" else x


class Conv2dLayer(nn.Module):
    """Equalized-learning-rate conv with optional 2x FIR downsampling (used by the discriminator)."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        kernel_size: int,  # Width and height of the kernel (1 or 3).
        bias: bool = True,  # Add a learned bias?
        activation: str = "lrelu",  # 'linear' or 'lrelu'.
        down: bool = False,  # Blur-downsample by 2 before the convolution?
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp * gain (None: no clamp).
        resample_mode: str = "studio",  # 'studio' or 'nvlabs': how a 3x3 conv downsamples (see ModelConfig).
    ):
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        # NVlabs blurs at full resolution and then applies a stride-2 3x3 conv (a 6x6 footprint); blurring+decimating
        # first and convolving at half resolution reaches 8 full-res pixels instead, so the two differ. A 1x1 conv
        # (the skip) is the same either way.
        self.strided = down and resample_mode == "nvlabs" and kernel_size > 1
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if self.strided:
            C = x.shape[1]
            k = self.resample_filter.to(x.dtype)[None, None].expand(C, 1, -1, -1)  # (C, 1, 4, 4)
            x = F.conv2d(x, k, padding=2, groups=C)  # blur at full res: (B, C, H + 1, W + 1)
            x = F.conv2d(x, self.weight * self.weight_gain, self.bias, stride=2)  # (B, out, H/2, W/2)
        else:
            if self.down:
                x = downsample2d(x, self.resample_filter)
            x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            x = lrelu_gain(x)
        x = x * gain if gain != 1.0 else x
        if self.conv_clamp is not None:  # NVlabs scales the clamp by the layer's gain, as the activations
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


def modulated_conv2d(
    x: torch.Tensor,  # (B, in, H, W) input activations.
    weight: torch.Tensor,  # (out, in, k, k) weight, already multiplied by its equalized-lr gain.
    styles: torch.Tensor,  # (B, in) per-sample modulation coefficients.
    demodulate: bool = True,  # Normalise each output feature map to unit expected variance?
    up_filter: torch.Tensor | None = None,  # (4, 4) FIR kernel: upsample 2x before the conv if given.
    up_transposed: bool = False,  # Upsample as NVlabs does: transposed conv, then FIR (see resampling_conv2d).
    invariant: bool = False,  # Batch-invariant mode (INVARIANT_ROWS): convs one sample at a time, demod on fixed rows.
) -> torch.Tensor:
    """StyleGAN2 weight (de)modulation, in the non-fused form that equals modulating the weights per sample."""
    B, in_ch = styles.shape
    assert x.shape[:2] == (B, in_ch), f"x {tuple(x.shape)} does not match styles {tuple(styles.shape)}"
    x = x * styles[:, :, None, None]  # (B, in, H, W)
    conv = functools.partial(resampling_conv2d, weight=weight, up_filter=up_filter, up_transposed=up_transposed)
    x = one_at_a_time(conv, x) if invariant else conv(x)  # (B, out, H', W')
    if demodulate:
        demod = functools.partial(demodulation, weight)
        x = x * (in_fixed_rows(demod, styles) if invariant else demod(styles))[:, :, None, None]
    return x


def resampling_conv2d(x: torch.Tensor, weight: torch.Tensor, up_filter: torch.Tensor | None = None,
                      up_transposed: bool = False) -> torch.Tensor:
    """The convolution of modulated_conv2d, 2x up-sampled first when up_filter is given: (B, in, H, W) -> (B, out, H', W')."""
    if up_filter is not None and up_transposed:
        # NVlabs/rosinality: a stride-2 transposed conv (runs the kernel on the H x W input only: 1/4 of the FLOPs of
        # a conv on the up-sampled grid), then the FIR on the output channels. The transposed conv is a true
        # convolution, so our correlation-oriented weight is flipped back. This equals zero-insert + FIR + conv with
        # the up-sampled signal's whole support (no crop before the conv): it differs from the 'studio' path only
        # at the border pixels.
        x = F.conv_transpose2d(x, weight.flip([2, 3]).transpose(0, 1), stride=2)  # (B, out, 2H + 1, 2W + 1)
        C = x.shape[1]
        k = (up_filter * 4).to(x.dtype)[None, None].expand(C, 1, -1, -1)  # (out, 1, 4, 4), gain 4 for the zeros
        return F.conv2d(x, k, padding=1, groups=C)  # (B, out, 2H, 2W)
    if up_filter is not None:
        x = upsample2d(x, up_filter)  # (B, in, 2H, 2W)
    return F.conv2d(x, weight, padding=weight.shape[-1] // 2)  # (B, out, H', W')


def demodulation(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / sigma_j = 1 / sqrt(sum_{i,k} (w_ijk * s_i)^2) for every sample: (B, in) @ (in, out) -> (B, out).

    In fp32 even under bf16 autocast: a sum of squares over in*k*k terms, then rsqrt, is where bf16 loses the most (a
    no-op on the fp32 path)."""
    with torch.autocast(styles.device.type, enabled=False):
        return (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()


# ----------------------------------------------------------------------------------------------------------------
# Generator


def parent_indices(cfg: ModelConfig) -> tuple[int, ...]:
    """The index (into cfg.parent_names) of the parent of each class of the first label kind; () without parents."""
    return tuple(cfg.parent_names.index(p) for p in cfg.label_parents)


class LabelEmbedding(FullyConnectedLayer):
    """The label embedding of G's mapping and of D's projection head: c (B, c_dim) -> (B, out_features), an
    equalized-lr FC layer whose input is c with, for a model whose first label kind has parents
    (ModelConfig.label_parents), the parent one-hot of each row's class appended. A class's embedding is then its
    own column plus its parent's, and the parent's column learns from every image of the parent.

    One class for both networks, so they count parents the same way. Its parameters are the FC layer's own
    (`weight` (out_features, c_dim + n_parents), `bias`), so checkpoints keep their tensor names.
    """

    def __init__(
        self,
        c_dim: int,  # Width of c: the one-hot blocks of every label kind.
        out_features: int,  # Width of the embedding.
        parent_of: tuple[int, ...] = (),  # Parent index of each class of the first kind (parent_indices); ().
    ):
        # Every parent has a class (parent_indices numbers the parents that occur), so the count is the largest + 1.
        n_parents = max(parent_of) + 1 if parent_of else 0
        assert set(parent_of) == set(range(n_parents)), f"parent indices must number 0..n-1, got {parent_of}"
        super().__init__(c_dim + n_parents, out_features)
        # (n_0, n_parents): row i marks the parent of class i of the first kind. A plain attribute, not a buffer:
        # it follows from the config, so checkpoints do not carry it.
        self.parent_onehot = (F.one_hot(torch.tensor(parent_of, dtype=torch.int64), n_parents).float()
                              if parent_of else None)

    def with_parents(self, c: torch.Tensor) -> torch.Tensor:
        """c (B, c_dim) -> (B, c_dim + n_parents): c with the parent one-hot of its first kind's class appended (a
        blended first block gives blended parents); c itself without parents."""
        if self.parent_onehot is None:
            return c
        return torch.cat([c, c[:, : self.parent_onehot.shape[0]] @ self.parent_onehot.to(c)], dim=1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return super().forward(self.with_parents(c))  # (B, out_features)


class MappingNetwork(nn.Module):
    """z (and optionally a label c) -> w: pixel norm, then `num_layers` equalized-lr FC layers with a low learning
    rate; tracks w_avg (and, with labels, one w_avg per class).

    Labels enter transitionally (Shahbazi et al. 2022): after the first layer, x += label_lambda * proj(embed(c)),
    where embed(c) is 2nd-moment normalised and `proj` starts at exactly zero. With c = None, label_lambda = 0 or a
    zero `proj`, the network computes what the unconditional one does, so an unconditional checkpoint is its
    lambda = 0 state. The training loop ramps the `label_lambda` buffer from 0 to 1.
    """

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        num_ws: int,  # Number of per-layer style vectors the synthesis network consumes.
        num_layers: int = 2,  # Number of FC layers.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of every layer.
        w_avg_beta: float = 0.995,  # Decay of the running mean of w, used for truncation.
        label_sizes: tuple[int, ...] = (),  # Classes of each label kind (c's one-hot blocks); (): unconditional.
        track_w_avg: bool = True,  # Keep w_avg for truncation? (D's label mapping is never truncated.)
        label_parents: tuple[int, ...] = (),  # Parent index of each class of the first kind (LabelEmbedding); ().
    ):
        super().__init__()
        c_dim = sum(label_sizes)
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = z_dim, w_dim, num_ws, c_dim
        self.label_sizes = tuple(label_sizes)
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        if track_w_avg:
            self.register_buffer("w_avg", torch.zeros(w_dim))
        if c_dim > 0:
            # SG2-ADA's label embedding, then a projection into the first layer's output, both at the full learning
            # rate. Only the projection is zero-initialised: the embedding is normalised right after, and normalising
            # a zero vector would blow up its gradient (design notes, section 9). At the mapping's 0.01 a projection
            # that starts at zero stays negligible for ~10^5 steps (measured: after 32k images at lr 2.5e-3 the label
            # moved w by 0.1 against a spread of 9), so the transition would never happen.
            self.embed = LabelEmbedding(c_dim, w_dim, label_parents)
            self.label_proj = FullyConnectedLayer(w_dim, w_dim)
            nn.init.zeros_(self.label_proj.weight)
            self.register_buffer("label_lambda", torch.zeros([]))  # transition weight, ramped 0 -> 1 by training
            # Mean w of every label combination (e.g. each subgroup x style), the truncation centres. Per combination,
            # not per class of each kind: the mapping mixes the kinds non-linearly, so class means do not add up.
            self.register_buffer("w_avg_c", torch.zeros(math.prod(label_sizes), w_dim))

    def check_c(self, c: torch.Tensor, batch: int) -> None:
        assert self.c_dim > 0, "this generator has no labels (unconditional); pass c=None"
        assert c.ndim == 2 and c.shape == (batch, self.c_dim), f"expected c ({batch}, {self.c_dim}), got {tuple(c.shape)}"

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0, cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected z (B, {self.z_dim}), got {tuple(z.shape)}"
        x = normalize_2nd_moment(z)
        y = None
        if c is not None:
            self.check_c(c, z.shape[0])
            y = normalize_2nd_moment(self.embed(c.to(x.dtype)))  # (B, w_dim)
        for i, layer in enumerate(self.layers):
            x = layer(x)  # (B, w_dim)
            if i == 0 and y is not None:
                x = x + self.label_lambda * self.label_proj(y)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
            if c is not None:
                self.update_class_w_avg(x.detach(), c)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if psi != 1.0:
            cutoff = self.num_ws if cutoff is None else cutoff
            centre = self.w_avg if c is None else self.class_centre(c)[:, None]  # (w_dim,) or (B, 1, w_dim)
            ws[:, :cutoff] = centre.lerp(ws[:, :cutoff], psi)
        return ws

    def combination_weights(self, c: torch.Tensor) -> torch.Tensor:
        """c (B, c_dim) -> (B, prod(label_sizes)): the weight of each label combination, the product of its classes'
        entries in c (first kind slowest). A one-hot c picks one combination; a blended block spreads over several."""
        blocks = c.split(self.label_sizes, dim=1)
        weights = blocks[0]  # (B, n_0)
        for b in blocks[1:]:
            weights = (weights[:, :, None] * b[:, None, :]).flatten(1)  # (B, n_prev * n_k)
        return weights

    def class_centre(self, c: torch.Tensor) -> torch.Tensor:
        """c (B, c_dim) -> (B, w_dim): the truncation centre of each label, its combination's mean w (or a blend)."""
        return self.combination_weights(c.to(self.w_avg_c.dtype)) @ self.w_avg_c  # (B, combos) @ (combos, w_dim)

    @torch.no_grad()
    def update_class_w_avg(self, w: torch.Tensor, c: torch.Tensor) -> None:
        """Running mean of w per label combination: each one present in the batch moves towards its batch mean by
        1 - beta. w (B, w_dim), c (B, c_dim). One absent from a batch keeps its value (rare ones move less often).
        """
        weight = self.combination_weights(c.to(w.dtype)).t()  # (combos, B)
        count = weight.sum(dim=1)  # (combos,)
        present = count > 0
        mean = (weight @ w) / count.clamp_min(1e-8)[:, None]  # (combos, w_dim)
        self.w_avg_c[present] = mean[present].lerp(self.w_avg_c[present], self.w_avg_beta)


class SynthesisLayer(nn.Module):
    """One modulated 3x3 conv with optional 2x upsampling, per-pixel noise, bias and lrelu."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Dimensionality of w, the input of the style affine.
        resolution: int,  # Output resolution of this layer (size of its noise map).
        up: bool = False,  # Upsample 2x before the conv?
        use_noise: bool = True,  # Add per-pixel noise? (no noise parameters or buffers when False)
        conv_clamp: float | None = None,  # Clamp the activations to +-conv_clamp (None: no clamp).
        resample_mode: str = "studio",  # 'studio' or 'nvlabs': border handling of the up-sampling conv.
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.up_transposed = up and resample_mode == "nvlabs"
        self.batch_invariant = False  # see INVARIANT_ROWS; set by Generator.batch_invariant_()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        styles = in_fixed_rows(self.affine, w) if self.batch_invariant else self.affine(w)  # (B, in)
        x = modulated_conv2d(
            x, self.weight * self.weight_gain, styles, demodulate=True,
            up_filter=self.resample_filter if self.up else None, up_transposed=self.up_transposed,
            invariant=self.batch_invariant,
        )  # (B, out, R, R)
        if self.use_noise and noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        x = lrelu_gain(x + self.bias[None, :, None, None])
        if self.conv_clamp is not None:  # after bias and activation, as NVlabs' bias_act
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of image channels (3).
        w_dim: int,  # Dimensionality of w.
        conv_clamp: float | None = None,  # Clamp the RGB output to +-conv_clamp (None: no clamp).
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.batch_invariant = False  # see INVARIANT_ROWS; set by Generator.batch_invariant_()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = (in_fixed_rows(self.affine, w) if self.batch_invariant else self.affine(w)) * self.weight_gain  # (B, in)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, invariant=self.batch_invariant)  # (B, 3, R, R)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | upsampling conv), conv, toRGB; skip-connected RGB."""

    def __init__(
        self,
        in_channels: int,  # Channels of the previous block (0 for the first, 4x4, block).
        out_channels: int,  # Channels of this block.
        w_dim: int,  # Dimensionality of w.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of image channels.
        use_noise: bool = True,  # Per-pixel noise inputs in this block's convs?
        conv_clamp: float | None = None,  # Clamp every conv's output to +-conv_clamp (None: no clamp).
        resample_mode: str = "studio",  # 'studio' or 'nvlabs' (see ModelConfig).
    ):
        super().__init__()
        self.resolution = resolution
        kw = dict(use_noise=use_noise, conv_clamp=conv_clamp, resample_mode=resample_mode)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.conv0 is None else 2
        self.batch_invariant = False  # see INVARIANT_ROWS; set by Generator.batch_invariant_()
        self.register_buffer("resample_filter", fir_kernel(), persistent=False)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: (B, num_conv + 1, w_dim); the last one is shared with the next block's first conv, as in StyleGAN2.
        w_iter = iter(ws.unbind(dim=1))
        if self.conv0 is None:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # (B, C, 4, 4)
        else:
            x = self.conv0(x, next(w_iter), noise_mode)  # (B, C, R, R)
        x = self.conv1(x, next(w_iter), noise_mode)
        y = self.torgb(x, next(w_iter))  # (B, 3, R, R)
        if img is not None:
            up = functools.partial(upsample2d, kernel=self.resample_filter)
            img = one_at_a_time(up, img) if self.batch_invariant else up(img)  # (B, 3, R, R)
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> img (B, 3, R, R)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = [2**i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        in_ch = 0
        for res in self.block_resolutions:
            out_ch = cfg.channels(res)
            block = SynthesisBlock(in_ch, out_ch, cfg.w_dim, res, cfg.img_channels, use_noise=res <= cfg.noise_max_res,
                                   conv_clamp=cfg.conv_clamp, resample_mode=cfg.resample_mode)
            self.blocks.append(block)
            self.num_ws += block.num_conv
            in_ch = out_ch
        self.num_ws += 1  # the last block's toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.cfg.w_dim), (
            f"expected ws (B, {self.num_ws}, {self.cfg.w_dim}), got {tuple(ws.shape)}"
        )
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator. Use `mapping()` and `synthesis()` separately for editing; `forward(z)` chains them."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.w_dim, self.img_resolution = cfg.z_dim, cfg.w_dim, cfg.resolution
        self.synthesis_net = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis_net.num_ws
        self.c_dim = cfg.c_dim
        self.mapping_net = MappingNetwork(
            cfg.z_dim, cfg.w_dim, self.num_ws, num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_mul,
            label_sizes=tuple(len(names) for names in cfg.label_names), label_parents=parent_indices(cfg),
        )

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0, cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        """z (B, z_dim), c (B, c_dim) or None -> ws (B, num_ws, w_dim); truncation by psi on the first `cutoff`
        layers, towards w_avg (c None: unconditional) or towards the class centre of c."""
        return self.mapping_net(z, c=c, psi=psi, cutoff=cutoff, update_w_avg=update_w_avg)

    @property
    def label_lambda(self) -> float:
        """Weight of the label term in the mapping (0: unconditional; the training loop ramps it to 1)."""
        return float(self.mapping_net.label_lambda) if self.c_dim else 0.0

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> img (B, 3, R, R), roughly in [-1, 1]."""
        return self.synthesis_net(ws, noise_mode=noise_mode)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise_mode: str = "const", c: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping(z, c=c, psi=psi), noise_mode=noise_mode)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_net.w_avg

    def batch_invariant_(self, enabled: bool = True) -> Generator:
        """Batch-invariant synthesis (see INVARIANT_ROWS): a sample's pixels then do not depend on the rest of its
        batch, at the price of the convolutions' batching. For serving, not for training. Returns self."""
        for m in self.synthesis_net.modules():
            if hasattr(m, "batch_invariant"):
                m.batch_invariant = enabled
        return self

    def style_layers(self) -> list[nn.Module]:
        """Every layer with a style affine, in ws order (convs; toRGBs share a w with the next conv)."""
        layers = []
        for block in self.synthesis_net.blocks:
            layers += [m for m in (block.conv0, block.conv1) if m is not None]
        return layers


# ----------------------------------------------------------------------------------------------------------------
# Labels


def labels_to_c(cfg: ModelConfig, idx: torch.Tensor) -> torch.Tensor:
    """Class indices (B, K), one column per label kind in `cfg.labels` order -> c (B, c_dim), one-hot per kind.

    An index of -1 means "any class of this kind": its block is uniform (1 / classes), a blend of all of them.
    """
    assert idx.ndim == 2 and idx.shape[1] == len(cfg.labels), f"expected labels (B, {len(cfg.labels)}), got {tuple(idx.shape)}"
    blocks = []
    for k, names in enumerate(cfg.label_names):
        col = idx[:, k].long()
        if ((col < -1) | (col >= len(names))).any():
            raise ValueError(f"{cfg.labels[k]} index out of range [0, {len(names)})")
        one = F.one_hot(col.clamp_min(0), len(names)).float()  # (B, classes)
        blocks.append(torch.where((col < 0)[:, None], torch.full_like(one, 1.0 / len(names)), one))
    return torch.cat(blocks, dim=1)  # (B, c_dim)


@torch.no_grad()
def estimate_class_w_avg(G: Generator, n: int = 256, seed: int = 0) -> torch.Tensor:
    """Truncation centres of every label combination, sampled from G's mapping: (combos, w_dim), for
    `G.mapping_net.w_avg_c`.

    Each centre is w_avg + mean_z [w(z, c) - w(z)], with the same z for both terms: the shift the label causes,
    added to the long-run w_avg. It is exactly w_avg while the label term is zero (after surgery, lambda = 0), and
    the paired difference has far less sampling noise than a plain mean of w(z, c).
    """
    cfg, mp = G.cfg, G.mapping_net
    assert cfg.c_dim > 0, "this generator has no labels"
    dev = mp.w_avg.device
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)  # (n, z_dim)
    w0 = mp(z)[:, 0]  # (n, w_dim)
    combos = list(itertools.product(*(range(len(names)) for names in cfg.label_names)))  # first kind slowest
    out = torch.empty(len(combos), cfg.w_dim, device=dev)
    for i, combo in enumerate(combos):
        c = labels_to_c(cfg, torch.tensor([combo] * n)).to(dev)  # (n, c_dim)
        out[i] = mp.w_avg + (mp(z, c=c)[:, 0] - w0).mean(dim=0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Discriminator


class MinibatchStdLayer(nn.Module):
    """Appends the std of each feature over groups of `group_size` samples as extra channel(s)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        G = min(self.group_size, B)
        while B % G:  # fall back to a group size that divides the batch
            G -= 1
        F_ = self.num_channels
        y = x.reshape(G, -1, F_, C // F_, H, W)  # (G, B/G, F, C/F, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # (B/G, F, C/F, H, W)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (B/G, F)
        y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W)  # (B, F, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: conv 3x3, conv 3x3 with 2x downsampling, plus a 1x1 downsampling skip, scaled by sqrt(1/2)."""

    def __init__(
        self,
        in_channels: int,  # Channels entering the block.
        out_channels: int,  # Channels leaving the block.
        from_rgb: bool,  # Is this the first (highest-resolution) block that reads the image?
        img_channels: int,  # Number of image channels.
        conv_clamp: float | None = None,  # Clamp of fromrgb/conv0/conv1 (NVlabs leaves the skip unclamped).
        resample_mode: str = "studio",  # 'studio' or 'nvlabs': how conv1 downsamples (see ModelConfig).
    ):
        super().__init__()
        self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, conv_clamp=conv_clamp) if from_rgb else None
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp,
                                 resample_mode=resample_mode)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, activation="linear", down=True)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)  # (B, C, R, R)
        y = self.skip(x, gain=math.sqrt(0.5))  # (B, C', R/2, R/2)
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: img (B, 3, R, R) -> logits (B, 1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        res_log2 = int(math.log2(cfg.resolution))
        self.block_resolutions = [2**i for i in range(res_log2, 2, -1)]  # e.g. 64, 32, 16, 8
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.d_channels(res), cfg.d_channels(res // 2), from_rgb=(i == 0),
                               img_channels=cfg.img_channels, conv_clamp=cfg.conv_clamp,
                               resample_mode=cfg.resample_mode)
            for i, res in enumerate(self.block_resolutions)
        )
        c4 = cfg.d_channels(4)
        self.mbstd = MinibatchStdLayer(cfg.mbstd_group_size, cfg.mbstd_num_channels)
        self.conv = Conv2dLayer(c4 + cfg.mbstd_num_channels, c4, 3, conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnectedLayer(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnectedLayer(c4, 1)
        self.c_dim = cfg.c_dim
        if cfg.c_dim > 0:
            # Projection head (SG2-ADA / Miyato & Koyama): the label is mapped to cmap (B, c4) by an embedding and
            # `mapping_layers` FC layers at the mapping's learning rate; the score adds <out_c(features), cmap> /
            # sqrt(c4). out_c starts at zero, so a new head leaves every score as it was.
            self.cmap_dim = c4
            self.c_mapping = MappingNetwork(c4, c4, num_ws=1, num_layers=cfg.mapping_layers,
                                            lr_multiplier=cfg.mapping_lr_mul, track_w_avg=False)
            self.c_embed = LabelEmbedding(cfg.c_dim, c4, parent_indices(cfg))
            self.out_c = FullyConnectedLayer(c4, c4)
            nn.init.zeros_(self.out_c.weight)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each block, highest resolution first (used as a perceptual space for inversion)."""
        feats = []
        x = None
        for block in self.blocks:
            x = block(x, img)
            feats.append(x)
        return feats

    def logits(self, img: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """img (B, 3, R, R), c (B, c_dim) or None -> (unconditional logit (B, 1), projection term (B, 1) or None).

        The two terms separately, for the transitional loss: unconditional + lambda * conditional.
        """
        R = self.cfg.resolution
        assert img.ndim == 4 and img.shape[1:] == (self.cfg.img_channels, R, R), (
            f"expected img (B, {self.cfg.img_channels}, {R}, {R}), got {tuple(img.shape)}"
        )
        x = self.features(img)[-1]  # (B, C, 4, 4)
        x = self.conv(self.mbstd(x))
        x = self.fc(x.flatten(1))  # (B, C)
        if c is None:
            return self.out(x), None
        assert self.c_dim > 0, "this discriminator has no labels (unconditional); pass c=None"
        assert c.ndim == 2 and c.shape == (img.shape[0], self.c_dim), (
            f"expected c ({img.shape[0]}, {self.c_dim}), got {tuple(c.shape)}"
        )
        return self.out(x), (self.out_c(x) * self.label_map(c)).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)

    def label_map(self, c: torch.Tensor) -> torch.Tensor:
        """c (B, c_dim) -> cmap (B, cmap_dim): embedding, 2nd-moment normalisation, FC layers (as SG2-ADA's D)."""
        y = self.c_embed(c.to(self.c_embed.weight.dtype))  # (B, cmap_dim)
        return self.c_mapping(y)[:, 0]  # (B, cmap_dim); the mapping normalises its input first

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img (B, 3, R, R) -> logits (B, 1): the unconditional logit, plus the projection term when c is given."""
        out, proj = self.logits(img, c)
        return out if proj is None else out + proj

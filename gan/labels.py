"""Labels of a conditional model (design notes, section 9): which class of each label kind a sample is drawn for.

A model's label kinds and class names live in its ModelConfig (`labels`, `label_names`), e.g. ('subgroup', 'style').
A label row is one class index per kind, (B, K) as a batch; `gan.networks.labels_to_c` turns rows into the one-hot
c (B, c_dim) the networks take. This module connects rows to the outside: a dataset's items (by class name, so a
model and a dataset built separately agree), a seed ("Any": every class equally often), and the card's map from
subgroups to their Unicode group (so a user can ask for "Food & Drink" of a subgroup-conditional model).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gan.config import ModelConfig
from gan.dataset import ImageDataset
from gan.networks import labels_to_c


def label_info(ds: ImageDataset, kinds: list[str] | tuple[str, ...]) -> dict:
    """What a model card records about its labels: images per class of each kind (shown beside the pickers), and,
    when the dataset has Unicode groups, the group of every subgroup (so "Food & Drink" can be asked of a
    subgroup-conditional model)."""
    info: dict = {"counts": {}}
    for kind in kinds:
        names, counts = ds.labels[kind], np.bincount(ds.label_array(kind), minlength=len(ds.labels[kind]))
        info["counts"][kind] = {n: int(c) for n, c in zip(names, counts)}
    if "subgroup" in kinds and "group" in ds.labels and "group" not in kinds:
        groups, subgroups = ds.labels["group"], ds.labels["subgroup"]
        info["group_of"] = {subgroups[s]: groups[g] for s, g in zip(ds.label_array("subgroup"), ds.label_array("group"))}
    return info


def dataset_label_rows(cfg: ModelConfig, ds: ImageDataset) -> np.ndarray:
    """(N, K) int64: each dataset item's class index in the model's class list, per label kind in cfg.labels order.
    Classes are matched by name, so a dataset whose class lists are ordered differently still trains the right rows."""
    rows = np.zeros((len(ds), len(cfg.labels)), dtype=np.int64)
    for k, (kind, names) in enumerate(zip(cfg.labels, cfg.label_names)):
        if kind not in ds.labels:
            raise ValueError(f"the model is conditioned on {kind!r} but dataset {ds.name!r} has no such label "
                             f"(it has: {', '.join(ds.labels) or 'none'})")
        model_index = {name: i for i, name in enumerate(names)}
        ds_names = ds.labels[kind]
        unknown = sorted({ds_names[i] for i in set(ds.label_array(kind).tolist())} - model_index.keys())
        if unknown:
            raise ValueError(f"dataset {ds.name!r} has {kind} classes the model does not know: {', '.join(unknown[:5])}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        lut = np.array([model_index.get(n, -1) for n in ds_names], dtype=np.int64)  # dataset class -> model class
        rows[:, k] = lut[ds.label_array(kind)]
    return rows


def has_labels(cfg: ModelConfig, ds: ImageDataset) -> bool:
    """Does ds carry per-item labels of every kind the (conditional) model takes? (A user's own images do not.)"""
    return cfg.c_dim > 0 and bool(ds.items) and all(kind in ds.labels for kind in cfg.labels)


def dataset_c(cfg: ModelConfig, ds: ImageDataset) -> torch.Tensor:
    """c (N, c_dim) of every dataset item (see dataset_label_rows)."""
    return labels_to_c(cfg, torch.from_numpy(dataset_label_rows(cfg, ds)))


def labels_for_seed(label_names: tuple[tuple[str, ...], ...], seed: int, fixed: dict[int, int] | None = None,
                    choices: dict[int, list[int]] | None = None) -> list[int]:
    """Class indices (one per label kind) for a seed: kind k is `fixed[k]` if given, else drawn uniformly from
    `choices[k]` (e.g. the subgroups of one group) or from all its classes. "Any" therefore means every class equally
    often, not the data's mix (59 % of the emoji are people): a food or a flag shows up as often as a person.

    The draw uses its own NumPy stream keyed by the seed (not z's), so a seed's label never changes its z.
    """
    rng = np.random.RandomState([int(seed) % 2**32, 0xC1A55])
    fixed, choices = fixed or {}, choices or {}
    row = []
    for k, names in enumerate(label_names):
        pool = choices.get(k) or list(range(len(names)))
        pick = pool[rng.randint(len(pool))]  # drawn for every kind, so fixing one kind leaves the others' draws alone
        row.append(int(fixed[k]) if k in fixed else int(pick))
    return row


def seeds_c(cfg: ModelConfig, seeds: list[int] | tuple[int, ...], fixed: dict[int, int] | None = None,
            choices: dict[int, list[int]] | None = None) -> torch.Tensor:
    """c (len(seeds), c_dim): each seed's labels drawn by labels_for_seed."""
    rows = [labels_for_seed(cfg.label_names, s, fixed, choices) for s in seeds]
    return labels_to_c(cfg, torch.tensor(rows, dtype=torch.int64).view(len(rows), len(cfg.labels)))  # (B, c_dim)


def any_c_table(cfg: ModelConfig, rows: int = 4096) -> torch.Tensor:
    """c (rows, c_dim) drawn as "Any" does (seeds 0..rows-1): a table to sample labels from, every class about
    equally often, when there are no dataset labels to follow."""
    return seeds_c(cfg, list(range(rows)))


ANY = "any"  # the category / style that draws a class per seed (see labels_for_seed)


@dataclass(frozen=True)
class LabelSpace:
    """The categories and styles a model can be asked for, resolved to label rows. Built from the model's config
    (label kinds and class names) and its card's `label_info` (class counts, subgroup -> group)."""

    cfg: ModelConfig
    counts: dict = field(default_factory=dict)  # kind -> {class name: training images}
    group_of: dict = field(default_factory=dict)  # subgroup -> Unicode group

    @staticmethod
    def of(cfg: ModelConfig, meta: dict | None = None) -> "LabelSpace":
        info = (meta or {}).get("label_info") or {}
        return LabelSpace(cfg, info.get("counts", {}), info.get("group_of", {}))

    @property
    def conditional(self) -> bool:
        return self.cfg.c_dim > 0

    def _kind(self, kind: str) -> int | None:
        return self.cfg.labels.index(kind) if kind in self.cfg.labels else None

    def groups(self) -> list[str]:
        """Groups a category can name: the 'group' label's classes, or the groups of the subgroups."""
        k = self._kind("group")
        if k is not None:
            return list(self.cfg.label_names[k])
        return list(dict.fromkeys(self.group_of[s] for s in self.subgroups() if s in self.group_of))

    def subgroups(self) -> list[str]:
        k = self._kind("subgroup")
        return list(self.cfg.label_names[k]) if k is not None else []

    def styles(self) -> list[str]:
        k = self._kind("style")
        return list(self.cfg.label_names[k]) if k is not None else []

    def category_choices(self) -> list[tuple[str, str]]:
        """(shown, value) pairs for a category picker: Any, each group, then each subgroup, with image counts."""
        if not self.conditional:
            return [("Any", ANY)]
        sub_counts = self.counts.get("subgroup", {})
        out = [("Any (every category equally often)", ANY)]
        for g in self.groups():
            subs = [s for s in self.subgroups() if self.group_of.get(s) == g]
            n = sum(sub_counts.get(s, 0) for s in subs) or self.counts.get("group", {}).get(g, 0)
            kinds = f"{len(subs)} kind{'s' if len(subs) != 1 else ''}, "
            out.append((f"{g} ({kinds if subs else ''}{n} images)", g))
        for s in self.subgroups():
            out.append((f"  {s} ({sub_counts[s]})" if s in sub_counts else f"  {s}", s))
        return out

    def style_choices(self) -> list[tuple[str, str]]:
        counts = self.counts.get("style", {})
        return [("Any", ANY)] + [(f"{s} ({counts[s]})" if s in counts else s, s) for s in self.styles()]

    def resolve(self, category: str = ANY, style: str = ANY) -> tuple[dict[int, int], dict[int, list[int]]]:
        """(fixed, choices) for labels_for_seed; ValueError naming the choices for an unknown category or style."""
        category, style = (category or ANY).strip(), (style or ANY).strip()
        if not self.conditional:
            if category != ANY or style != ANY:
                raise ValueError("this model has no categories or styles (it is unconditional); use 'any'")
            return {}, {}
        fixed: dict[int, int] = {}
        choices: dict[int, list[int]] = {}
        if category != ANY:
            kg, ks = self._kind("group"), self._kind("subgroup")
            if kg is not None and category in self.cfg.label_names[kg]:
                fixed[kg] = self.cfg.label_names[kg].index(category)
            elif ks is not None and category in self.cfg.label_names[ks]:
                fixed[ks] = self.cfg.label_names[ks].index(category)
            elif ks is not None and category in self.groups():
                choices[ks] = [i for i, s in enumerate(self.cfg.label_names[ks]) if self.group_of.get(s) == category]
            else:
                raise ValueError(f"unknown category {category!r}; choose 'any', a group ({', '.join(self.groups())}) "
                                 f"or a subgroup (e.g. {', '.join(self.subgroups()[:3])})")
        if style != ANY:
            k = self._kind("style")
            if k is None or style not in self.cfg.label_names[k]:
                raise ValueError(f"unknown style {style!r}; choose one of: any, {', '.join(self.styles())}"
                                 if k is not None else "this model has no styles; use 'any'")
            fixed[k] = self.cfg.label_names[k].index(style)
        return fixed, choices

    def c_for_seeds(self, seeds: list[int], category: str = ANY, style: str = ANY) -> torch.Tensor | None:
        """c (len(seeds), c_dim) for a category and style (each seed draws what is left open), or None for an
        unconditional model."""
        fixed, choices = self.resolve(category, style)
        return seeds_c(self.cfg, seeds, fixed, choices) if self.conditional else None

    def describe(self, seed: int, category: str = ANY, style: str = ANY) -> str:
        """The labels a seed is drawn with, e.g. 'food-fruit, twemoji' ('' for an unconditional model)."""
        if not self.conditional:
            return ""
        fixed, choices = self.resolve(category, style)
        row = labels_for_seed(self.cfg.label_names, seed, fixed, choices)
        return ", ".join(names[i] for names, i in zip(self.cfg.label_names, row))

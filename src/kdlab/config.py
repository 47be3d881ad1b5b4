"""Typed, validated view of params.yaml: one frozen dataclass per section.

`load_params()` is the only way the code reads params.yaml. It rejects unknown keys, wrong types
and out-of-range values with one line that names the field and what is allowed, before any work
starts. `grid` and `slurm` are validated by kdlab.grid and kdlab.slurm.config, which read them.

This module imports no KD method: the per-method `kd.<method>` sections are validated only when
the caller passes the method registry (`kdlab.distill.registry.load_checked_params`), so a stage
that never reads `kd` (the teacher) does not depend on the KD methods' code.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from kdlab.errors import ConfigError
from kdlab.schema import (
    build_dataclass,
    check_choice,
    check_items,
    check_range,
    coerce,
    key_text,
    load_yaml,
    nearest,
)

DEFAULT_PARAMS_PATH = Path("params.yaml")


RESERVED_SECTIONS = ("grid", "slurm")


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`data:` which dataset, and how its training batches are augmented."""

    name: str = "digits"
    """Dataset to prepare and train on (see kdlab.data.DATASETS)."""
    crop_padding: int | Literal["auto"] = "auto"
    """Zero padding for random crops in pixels; 0 disables cropping; auto = the dataset's own."""
    horizontal_flip: bool | Literal["auto"] = "auto"
    """Random horizontal flips; auto = the dataset's own choice (never for digits)."""
    mirror: str = ""
    """Base URL of a mirror of the official files, under their own names ("" = official)."""
    train_subset: int = 0
    """Train on a class-stratified subset of this many training images (fixed draw); 0 = all."""
    time_crop: float = 1.0
    """Sequences: each training sample is cut to a random window of at least this fraction of
    its frames (drawn per epoch from the seed); 1 = off."""
    scaling: float = 0.0
    """Sequences: each training sample's values are multiplied by 1 + scaling·N(0, 1); 0 = off."""
    jitter: float = 0.0
    """Sequences: Gaussian noise of this std (in normalised units) on every valid frame; 0 = off."""

    def validate(self, path: str) -> None:
        from kdlab.data.datasets import DATASETS

        check_choice(f"{path}.name", self.name, DATASETS)
        if self.mirror and not re.fullmatch(r"(https?|file)://[^\s]+", self.mirror):
            raise ConfigError(f"{path}.mirror must be \"\" or a base URL (http://, https://, "
                              f"file://) without spaces, got {self.mirror!r}")  # fmt: skip
        if self.crop_padding != "auto":
            check_range(f"{path}.crop_padding", self.crop_padding, 0, 64)
        check_range(f"{path}.time_crop", self.time_crop, 0, 1, low_open=True)
        check_range(f"{path}.scaling", self.scaling, 0, 1)
        check_range(f"{path}.jitter", self.jitter, 0, 10)
        spec = DATASETS[self.name]
        self.check_kind(path, spec)
        if self.train_subset != 0:
            check_range(f"{path}.train_subset", self.train_subset, spec.num_classes,
                        spec.train_size)  # fmt: skip

    def check_kind(self, path: str, spec: Any) -> None:
        """Augmentations of the other data kind are refused, not ignored."""
        if spec.kind == "sequence":
            for key, off in (("crop_padding", 0), ("horizontal_flip", False)):
                if getattr(self, key) not in ("auto", off):
                    raise ConfigError(f"{path}.{key} applies to image datasets; {self.name} is a "
                                      f"sequence dataset: use auto (or {str(off).lower()}), or "
                                      f"{path}.time_crop / scaling / jitter")  # fmt: skip
        else:
            for key, off in (("time_crop", 1.0), ("scaling", 0.0), ("jitter", 0.0)):
                if getattr(self, key) != off:
                    raise ConfigError(f"{path}.{key} applies to sequence datasets; {self.name} is "
                                      f"an image dataset: leave it at {off:g}, or use "
                                      f"{path}.crop_padding / horizontal_flip")  # fmt: skip

    @property
    def resolved_crop_padding(self) -> int:
        from kdlab.data.datasets import DATASETS

        if self.crop_padding == "auto":
            return DATASETS[self.name].crop_padding
        return self.crop_padding

    @property
    def resolved_horizontal_flip(self) -> bool:
        from kdlab.data.datasets import DATASETS

        if self.horizontal_flip == "auto":
            return DATASETS[self.name].horizontal_flip
        return self.horizontal_flip


NO_STUDENT = "none"
"""`student.arch: none`: a study of one model (the teacher stage's), no student, no KD."""


def is_one_model(raw: Any) -> bool:
    """Parsed (not validated) params describe a study of one model: `student.arch: none`."""
    student = raw.get("student") if isinstance(raw, Mapping) else None
    return isinstance(student, Mapping) and student.get("arch") == NO_STUDENT


IMAGE_KEYS = ("crop_padding", "horizontal_flip")
"""`data:` keys that apply to image datasets only."""
SEQUENCE_KEYS = ("time_crop", "scaling", "jitter")
"""`data:` keys that apply to sequence datasets only."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`teacher:` / `student:` the network and how it is optimised (TeacherConfig, StudentConfig).

    Every default here is the one params.yaml and the README state (tests/test_defaults.py)."""

    arch: str = "resnet20"
    """Model name (kdlab.architectures.arch_names())."""
    size: dict = dataclasses.field(default_factory=dict)
    """Sizes over the preset `arch`'s, for families that take them (spoter: dim, heads,
    encoder_layers, decoder_layers, ff_dim, dropout, position, spoter_decoder); {}: the preset."""
    epochs: int = 30
    """Number of passes over the training split."""
    batch_size: int = 64
    """Training batch size; the last incomplete batch of an epoch is dropped."""
    eval_batch_size: int = 1024
    """Batch size for evaluation (no gradients, so it can be larger)."""
    lr: float = 0.1
    """Peak SGD learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Use Nesterov momentum."""
    weight_decay: float = 5e-4
    """L2 weight decay."""
    schedule: Literal["cosine", "multistep"] = "cosine"
    """Learning-rate schedule, stepped once per epoch."""
    milestones: tuple[int, ...] = ()
    """Epochs at which a multistep schedule multiplies the rate by gamma."""
    gamma: float = 0.1
    """Multistep decay factor."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy; only ever applied to a pure model (see KDConfig)."""
    save_epochs: tuple[int, ...] = (10, 20)
    """Epochs after which a milestone checkpoint is kept (models/<role>/milestones/)."""
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the training step and evaluation; auto = on CUDA only (off on CPU)."""

    def use_compile(self, device_type: str) -> bool:
        """Whether this run compiles, on a device of `device_type` ("cpu", "cuda")."""
        if self.compile == "auto":
            return device_type == "cuda"
        return self.compile

    def validate(self, path: str) -> None:
        from kdlab.architectures import arch_names

        # student.arch: none is a study of one model (kdlab.distill.spec.NO_STUDENT)
        none = [NO_STUDENT] if isinstance(self, StudentConfig) else []
        check_choice(f"{path}.arch", self.arch, [*arch_names(), *none])
        if self.arch == NO_STUDENT:
            if self.size:
                raise ConfigError(f"{path}.size must be {{}} when {path}.arch is none, got "
                                  f"{self.size!r}")  # fmt: skip
        else:
            from kdlab.architectures import check_size

            check_size(f"{path}.size", self.arch, self.size)
        check_range(f"{path}.epochs", self.epochs, 1, 100_000)
        check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 20)
        check_range(f"{path}.eval_batch_size", self.eval_batch_size, 1, 1 << 20)
        check_range(f"{path}.lr", self.lr, 0, 10, low_open=True)
        check_range(f"{path}.momentum", self.momentum, 0, 1, high_open=True)
        check_range(f"{path}.weight_decay", self.weight_decay, 0, 1)
        check_range(f"{path}.gamma", self.gamma, 0, 1, low_open=True)
        check_range(f"{path}.label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        for key in ("milestones", "save_epochs"):
            values = getattr(self, key)
            for i, epoch in enumerate(values):
                check_range(f"{path}.{key}[{i}]", epoch, 1, self.epochs)
            if list(values) != sorted(set(values)):
                raise ConfigError(f"{path}.{key} must be strictly increasing, got {list(values)}")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError(
                f"{path}.milestones must be non-empty when {path}.schedule is multistep"
            )


@dataclasses.dataclass(frozen=True)
class TeacherConfig(TrainConfig):
    """`teacher:` the network that is distilled from."""

    arch: str = "resnet20"


@dataclasses.dataclass(frozen=True)
class StudentConfig(TrainConfig):
    """`student:` the network that learns (its label_smoothing only ever for kd.method none)."""

    arch: str = "resnet8"


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """`kd:` how the student learns from the teacher: loss = (1 - alpha)·CE + alpha·w·L_method."""

    method: str = "logit"
    """KD method from the registry (kdlab.distill.registry); `none` trains a pure baseline."""
    alpha: float = 0.5
    """Weight of the KD term against cross-entropy, in [0, 1]; ignored by `none`."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, init=False)
    """Per-method params (`kd.<method>:` sections), each a frozen dataclass of that method."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.alpha", self.alpha, 0, 1)

    @property
    def method_params(self) -> Any:
        """The params dataclass of the selected method (None for methods without params)."""
        return self.options.get(self.method)


def build_kd_config(raw: Any, methods: Mapping[str, Any] | None, path: str = "kd") -> KDConfig:
    """`kd` mixes fixed keys with one sub-section per registered method in `methods` (name ->
    MethodSpec). Without `methods` only `method` (a string) and `alpha` are checked."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {raw!r}")
    fixed = {k: v for k, v in raw.items() if k in ("method", "alpha")}
    cfg = build_dataclass(KDConfig, fixed, path)
    if methods is None:
        return cfg
    METHODS = methods
    check_choice(f"{path}.method", cfg.method, METHODS)
    options = {}
    for key, value in raw.items():
        if key in fixed:
            continue
        spec = METHODS.get(key)
        if spec is None:
            valid = ["method", "alpha", *sorted(n for n, s in METHODS.items() if s.params_cls)]
            raise ConfigError(f"{path}.{key_text(key)} is not a known key"
                              f"{nearest(key, valid)}; valid keys: {', '.join(valid)}")  # fmt: skip
        if spec.params_cls is None:
            raise ConfigError(f"{path}.{key}: method {key!r} takes no params")
        options[key] = build_dataclass(spec.params_cls, value, f"{path}.{key}")
    for name, spec in METHODS.items():
        if spec.params_cls is not None and name not in options:
            options[name] = spec.params_cls()
    object.__setattr__(cfg, "options", types.MappingProxyType(options))
    return cfg


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """`extract:` which activations of teacher and student are cached for analysis."""

    layers: tuple[str, ...] = ()
    """Layers to capture; empty = every stage output and the pooled embedding."""
    n_samples: int = 256
    """Test-split samples to extract (drawn once from the seed); capped at the split size."""
    dtype: Literal["float32", "float16"] = "float32"
    """Storage type of the cached arrays."""
    batch_size: int = 256
    """Forward batch size during extraction."""
    milestones: bool = True
    """Also extract the milestone checkpoints (save_epochs), for change over training."""
    attention: bool = True
    """Per-head attention weights of every nn.MultiheadAttention (models that have them)."""

    def validate(self, path: str) -> None:
        if self.layers:  # empty = every layer; otherwise each one once
            check_items(f"{path}.layers", self.layers)
        check_range(f"{path}.n_samples", self.n_samples, 4, 1_000_000)
        check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 16)


@dataclasses.dataclass(frozen=True)
class AnalyzeConfig:
    """`analyze:` the measures computed on the cached activations."""

    debiased_cka: bool = False
    """Use the unbiased HSIC estimator for the CKA matrix."""
    ica_components: int = 8
    """FastICA components per network and layer."""
    sae_layers: tuple[str, ...] = ("embedding",)
    """Layers that get a sparse autoencoder (teacher and student each)."""
    sae_expansion: int = 4
    """SAE latents per input dimension."""
    sae_l1: float = 1e-3
    """SAE L1 sparsity weight."""
    sae_epochs: int = 50
    """SAE training epochs over the cached activations."""
    sae_batch_size: int = 256
    """SAE minibatch size."""
    case_studies: tuple[str, ...] = ()
    """Sequences: classes (as the dataset writes them) whose first extracted test sample gets
    a cross-attention-over-time figure; empty = the first sample of each of up to 4 classes."""

    def validate(self, path: str) -> None:
        if self.sae_layers:  # empty = no SAE; otherwise each layer once
            check_items(f"{path}.sae_layers", self.sae_layers)
        check_range(f"{path}.ica_components", self.ica_components, 1, 4096)
        check_range(f"{path}.sae_expansion", self.sae_expansion, 1, 256)
        check_range(f"{path}.sae_l1", self.sae_l1, 0, 10)
        check_range(f"{path}.sae_epochs", self.sae_epochs, 1, 100_000)
        check_range(f"{path}.sae_batch_size", self.sae_batch_size, 1, 1 << 20)
        if self.case_studies:
            check_items(f"{path}.case_studies", self.case_studies)


@dataclasses.dataclass(frozen=True)
class ShardsConfig:
    """`shards:` dataset-scale activations for SAEs (stage `shards`, kdlab.extract.stream):
    every token of every sample of one split, one row each, in memmapped shard files."""

    layers: tuple[str, ...] = ()
    """Layers of `model` to write (each gets its own SAE); empty = none (the SAE stages only
    write placeholders)."""
    model: Literal["teacher", "student"] = "teacher"
    """Whose activations: the teacher stage's network (a study of one model: the model)."""
    split: Literal["train", "test"] = "train"
    """The split written, every sample of it (the SAE holds out whole samples of it)."""
    shard_rows: int = 65_536
    """Rows per shard file (the last one holds the rest)."""
    dtype: Literal["float32", "float16"] = "float32"
    """Storage type of the rows."""
    batch_size: int = 256
    """Forward batch size while writing."""

    def validate(self, path: str) -> None:
        if self.layers:
            check_items(f"{path}.layers", self.layers)
        check_range(f"{path}.shard_rows", self.shard_rows, 1, 1 << 30)
        check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 16)


@dataclasses.dataclass(frozen=True)
class SAETrainConfig:
    """`sae:` one sparse autoencoder per `shards.layers` layer (stage `train_sae`, kdlab.sae),
    trained streaming from its shards. Defaults in brackets are saev's (samuelstevens/saev)."""

    expansion: int = 16
    """Latents = expansion × the layer's width [16]."""
    l1: float = 4e-4
    """λ, the L1 sparsity weight on rows normalised to mean norm √d [4e-4]."""
    lr: float = 4e-4
    """Adam's peak learning rate [4e-4]."""
    lr_warmup: int = 500
    """Steps of linear learning-rate warm-up [500]."""
    l1_warmup: int = 0
    """Steps of linear λ warm-up [0]."""
    batch_size: int = 1024
    """Rows per step [16384, on a GPU]."""
    epochs: int = 1
    """Passes over the training rows."""
    normalize: bool = True
    """Subtract the mean and scale rows to mean L2 norm √d [scale_mean, scale_norm]."""
    norm_samples: int = 100_000
    """Training rows the normalisation statistics come from."""
    b_dec_init: Literal["zero", "mean", "geometric_median"] = "geometric_median"
    """b_dec's start: zero, or the mean or geometric median of `init_samples` rows."""
    init_samples: int = 16_384
    """Normalised training rows b_dec's start is computed from."""
    heldout: float = 0.1
    """Fraction of the split's samples never trained on: every evaluation row is one of theirs."""
    checkpoint_every: int = 200
    """Steps between resume checkpoints (and on SIGTERM/SIGUSR1)."""
    almost_dead: float = 1e-7
    """A latent firing on fewer than this fraction of held-out rows is almost dead."""
    dense: float = 1e-2
    """A latent firing on more than this fraction of held-out rows is dense."""
    top_k: int = 16
    """Samples listed per latent in its top-k table (each at most once, by its max token)."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.expansion", self.expansion, 1, 1024)
        check_range(f"{path}.l1", self.l1, 0, 100)
        check_range(f"{path}.lr", self.lr, 0, 10, low_open=True)
        check_range(f"{path}.lr_warmup", self.lr_warmup, 0, 10**9)
        check_range(f"{path}.l1_warmup", self.l1_warmup, 0, 10**9)
        check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 24)
        check_range(f"{path}.epochs", self.epochs, 1, 100_000)
        check_range(f"{path}.norm_samples", self.norm_samples, 1, 10**9)
        check_range(f"{path}.init_samples", self.init_samples, 1, 10**9)
        check_range(f"{path}.heldout", self.heldout, 0, 0.9)
        check_range(f"{path}.checkpoint_every", self.checkpoint_every, 1, 10**9)
        check_range(f"{path}.almost_dead", self.almost_dead, 0, 1)
        check_range(f"{path}.dense", self.dense, 0, 1)
        check_range(f"{path}.top_k", self.top_k, 1, 100_000)


@dataclasses.dataclass(frozen=True)
class ExternalConfig:
    """`external:` a model trained elsewhere, as the teacher stage's network (kdlab.training.
    external): its weights are imported, not trained, then extracted and analysed as any."""

    path: str = ""
    """A `state_dict` file (torch.save of tensors only: a kdlab model.pt, a plain state_dict, or
    SPOTER's, whose names are mapped); "" = train the teacher stage's network as usual."""
    sha256: str = ""
    """The file's sha256, required with `path`: what DVC tracks instead of the file (like
    data.mirror, the path is not a dependency; its content is)."""

    def validate(self, path: str) -> None:
        if bool(self.path) != bool(self.sha256):
            raise ConfigError(f"{path}.path and {path}.sha256 go together: give both (the "
                              f"file's `sha256sum`), or neither to train the model")  # fmt: skip
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ConfigError(f"{path}.sha256 must be 64 lowercase hex digits (sha256sum's "
                              f"output), got {self.sha256!r}")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    seed: int
    """One seed for weight init, data order and augmentation."""
    device: Literal["auto", "cpu", "cuda"]
    """Where to train: auto picks CUDA when available."""
    data: DataConfig
    teacher: TrainConfig
    student: TrainConfig
    kd: KDConfig
    extract: ExtractConfig
    analyze: AnalyzeConfig
    extra: Mapping[str, Any]
    """Sections reserved for later stages (grid, slurm), unvalidated here."""
    external: ExternalConfig = dataclasses.field(default_factory=ExternalConfig)
    shards: ShardsConfig = dataclasses.field(default_factory=ShardsConfig)
    sae: SAETrainConfig = dataclasses.field(default_factory=SAETrainConfig)

    @property
    def one_model(self) -> bool:
        """A study of one model (`student.arch: none`): no student is trained or read."""
        return self.student.arch == NO_STUDENT

    @property
    def student_label_smoothing(self) -> float:
        """Label smoothing is for pure models only: never stacked on top of a KD term."""
        return self.student.label_smoothing if self.kd.method == "none" else 0.0

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain data (for checkpoint metadata and fingerprints)."""
        value = getattr(self, name)
        if isinstance(value, KDConfig):
            options = {k: dataclasses.asdict(v) for k, v in value.options.items()}
            return {"method": value.method, "alpha": value.alpha, **options}
        if isinstance(value, DataConfig):
            # Only the keys of the dataset's kind: the other kind's are pinned to "off" by
            # validation, and an image model's metadata stays byte-identical to what it was.
            from kdlab.data.datasets import DATASETS

            other = SEQUENCE_KEYS if DATASETS[value.name].kind == "image" else IMAGE_KEYS
            return {k: v for k, v in _plain(dataclasses.asdict(value)).items() if k not in other}
        if isinstance(value, TrainConfig):
            # `size` only where it is set: a preset's model metadata stays what it was.
            plain = _plain(dataclasses.asdict(value))
            return plain if value.size else {k: v for k, v in plain.items() if k != "size"}
        if dataclasses.is_dataclass(value):
            return _plain(dataclasses.asdict(value))
        return value


def _plain(value: Any) -> Any:
    """Tuples -> lists so metadata survives torch.load(weights_only=True) and JSON alike."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def params_from_dict(raw: Any, methods: Mapping[str, Any] | None = None) -> Params:
    """Validate a parsed params.yaml mapping (`kd.<method>` sections only given `methods`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params.yaml must be a mapping of sections, got {type(raw).__name__}")
    known = ("seed", "device", "data", "teacher", "student", "kd", "extract", "analyze",
             "external", "shards", "sae", *RESERVED_SECTIONS)  # fmt: skip
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
        raise ConfigError(f"{key_text(unknown[0])} is not a known section"
                          f"{nearest(unknown[0], known)}; "
                          f"valid: {', '.join(known)}")  # fmt: skip
    if "seed" not in raw:
        raise ConfigError("seed is required (an integer >= 0)")
    seed = coerce(raw["seed"], int, "seed")
    check_range("seed", seed, 0, 2**32 - 1)
    device = coerce(raw.get("device", "auto"), Literal["auto", "cpu", "cuda"], "device")
    return Params(
        seed=seed,
        device=device,
        data=build_dataclass(DataConfig, raw.get("data"), "data"),
        teacher=build_dataclass(TeacherConfig, raw.get("teacher"), "teacher"),
        student=build_dataclass(StudentConfig, raw.get("student"), "student"),
        kd=build_kd_config(raw.get("kd"), methods),
        extract=build_dataclass(ExtractConfig, raw.get("extract"), "extract"),
        analyze=build_dataclass(AnalyzeConfig, raw.get("analyze"), "analyze"),
        extra=types.MappingProxyType({k: raw[k] for k in RESERVED_SECTIONS if k in raw}),
        external=build_dataclass(ExternalConfig, raw.get("external"), "external"),
        shards=build_dataclass(ShardsConfig, raw.get("shards"), "shards"),
        sae=build_dataclass(SAETrainConfig, raw.get("sae"), "sae"),
    )


def read_params_file(path: str | Path = DEFAULT_PARAMS_PATH) -> Any:
    """params.yaml parsed (not validated); a missing file or bad YAML is one ConfigError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (run from the repository root)") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None


def load_params(
    path: str | Path = DEFAULT_PARAMS_PATH, methods: Mapping[str, Any] | None = None
) -> Params:
    """Read and validate params.yaml; raise ConfigError with one readable line on any problem.

    `methods` (kdlab.distill.spec.load_specs(): each method's params) also validates the
    `kd.<method>` sections; see the module docstring."""
    return params_from_dict(read_params_file(path), methods)

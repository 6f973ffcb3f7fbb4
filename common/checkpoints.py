"""Weights on disk, of every kind, read without a framework: the one layer every command's loader
goes through (jaxbrr.weights.load_model, torchref's --init-from, parity.convert, parity.localize).

    located = locate("runs/default")      # Located(kind="jaxbrr", path=runs/default/checkpoints/best/215)
    weights = read_weights("best.pt", "configs/tusz.yaml", shapes)   # config + neutral numpy arrays

Neutral weights: torchref's state-dict names and layouts, as numpy arrays (jaxbrr/weights.py maps
them onto the NNX tree; torchref loads them as they are).

Kinds and what `path` is for each:
    jaxbrr       an orbax step folder WORKDIR/checkpoints/<best|last>/<step> (model/, meta/)
    torchref     a torchref training checkpoint WORKDIR/checkpoints/<best|last>/step_NNNNNN.pt
    pt           any other `.pt`, `.pth` or `.ckpt` file (torch.save's): a state dict, a brain-go-brr
                 v2 checkpoint, or a Lightning checkpoint or wrapper around one (common/original.py)
    safetensors  a neutral `.safetensors` file (parity/convert.py; config in its metadata), or one
                 another program wrote (safetensors.torch.save_file of a state dict): read as a
                 `.pt` state dict would be (an original's keys renamed; a config needed)
    nan_dump     a training NaN dump WORKDIR/nan/step_NNNNNN (nan.json, batch.npz, and the
                 state of either framework)

A run folder, or its checkpoints/<kind> folder, resolves to its newest `best` step (else `last`),
of whichever framework wrote it. A jaxbrr step folder also holds its weights as neutral
`model.safetensors`, which is what read_weights reads (orbax's own files need JAX); a `.pt` file
is read by common/pt.py; an original brain-go-brr v2 checkpoint (its `model_state_dict`, or its
key names) is renamed through common/original.py onto the model its own config describes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from common.config import (
    Config,
    ConfigError,
    ModelConfig,
    PostprocessConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    original_yaml,
    with_overrides,
)
from common.shown import shown_inline, shown_lines

# where weights are (module docstring): a run of either trainer, a file of either format, a NaN dump
WeightsKind = Literal["jaxbrr", "torchref", "pt", "safetensors", "nan_dump"]
# a weights file's suffix -> its kind (torch.save writes any of the three)
WEIGHTS_SUFFIXES = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".ckpt": "pt"}
FIX = ("point it at a run folder written by `python -m jaxbrr.train` or `python -m torchref.train` (or its "
       "checkpoints/best|last folder, or one step), a .pt or .safetensors weights file, or a NaN dump folder")


# what to do about a damaged step of a run
# the names a saved batch's (B, C, T) input goes by: ours (x; a NaN dump's batch.npz), the
# original's debug dump and window cache (windows), others' habits (parity/problem.py reads them)
BATCH_X_KEYS = ("x", "input", "windows", "window")
OTHER_STEP = ("use another step of the run (checkpoints/best and checkpoints/last keep several) or delete "
              "this step's folder")


class CheckpointError(ValueError):
    """Weights that cannot be found or read; the message names the path and the fix."""


@dataclass(frozen=True)
class Located:
    kind: WeightsKind
    path: Path  # the concrete file or folder
    given: Path  # what the user named


# A jaxbrr step saved again (a resume repeats the step it stopped at) is first renamed
# `replaced-<step>` (jaxbrr/train/checkpoint.py): a run killed during that save holds the step only
# there until the next trainer puts it back.
REPLACED = "replaced-"


def _jaxbrr_steps(folder: Path) -> list[Path]:
    """The step folders (with their meta) in `folder`, oldest first; a step whose own folder is
    missing or incomplete counts as its `replaced-<step>` copy, where that is complete."""
    if not folder.is_dir():
        return []
    steps = {int(p.name): p for p in folder.iterdir() if p.name.isdigit() and (p / "meta").is_dir()}
    for aside in folder.glob(REPLACED + "*"):
        number = aside.name.removeprefix(REPLACED)
        if number.isdigit() and (aside / "meta").is_dir():
            steps.setdefault(int(number), aside)
    return [steps[number] for number in sorted(steps)]


TORCHREF_STEP_FILE = re.compile(r"step_(\d+)\.pt")  # torchref.train writes step_000042.pt


def torchref_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of the complete torchref checkpoints in `folder`, oldest first: by step number,
    not name (step_1000000.pt follows step_999999.pt); a leftover .tmp is not one."""
    found = ((TORCHREF_STEP_FILE.fullmatch(path.name), path) for path in Path(folder).glob("step_*.pt"))
    return sorted((int(match.group(1)), path) for match, path in found if match)


def _torchref_steps(folder: Path) -> list[Path]:
    return [path for _, path in torchref_steps(folder)]


def last_steps(workdir: str | Path, kind: str = "last") -> list[Path]:
    """A run folder's `last` (or `kind`) checkpoints, oldest first (either trainer's): what
    --resume needs."""
    folder = Path(workdir) / "checkpoints" / kind
    return _jaxbrr_steps(folder) or _torchref_steps(folder)


def locate(path: str | Path) -> Located:
    """The kind and concrete location of the weights `path` names; CheckpointError when none."""
    given = Path(path)
    if not given.exists():
        raise CheckpointError(f"{given}: no such file or folder; {FIX}")
    if given.is_file():
        if given.suffix not in WEIGHTS_SUFFIXES:
            raise CheckpointError(f"{given}: not a weights file (.pt, .pth, .ckpt or .safetensors); {FIX}")
        kind = WEIGHTS_SUFFIXES[given.suffix]
        if kind == "pt" and given.parent.parent.name == "checkpoints" and given.name.startswith("step_"):
            kind = "torchref"
        return Located(kind, given, given)
    if (given / "nan.json").is_file():
        return Located("nan_dump", given, given)
    if (given / "meta").is_dir():
        return Located("jaxbrr", given, given)
    for kind in ("best", "last"):
        for folder in (given / "checkpoints" / kind, given / kind, given if given.name == kind else None):
            if folder is None:
                continue
            if steps := _jaxbrr_steps(folder):
                return Located("jaxbrr", steps[-1], given)
            if steps := _torchref_steps(folder):
                return Located("torchref", steps[-1], given)
    # a folder of weights files (the original's results/<run>/checkpoints/best.pt): name them
    files = sorted(p for folder in (given, given / "checkpoints") if folder.is_dir()
                   for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHTS_SUFFIXES)
    if files:
        raise CheckpointError(f"{given}: not a checkpoint folder of this project's (checkpoints/best or /last with a "
                              f"step in it), but it holds weights files: pass one of them "
                              f"({shown_inline([str(p) for p in files])})")
    raise CheckpointError(f"{given}: holds no checkpoint (no checkpoints/best or /last with a step in it); {FIX}")


def jaxbrr_meta(step_dir: str | Path) -> dict:
    """The meta item of a jaxbrr step folder (orbax writes it as JSON): config, progress, time."""
    path = Path(step_dir) / "meta" / "metadata"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{step_dir}: no checkpoint metadata {path}; {FIX}") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{step_dir}: damaged checkpoint metadata {path} ({error}); {OTHER_STEP}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{step_dir}: checkpoint metadata {path} holds no config; {OTHER_STEP}")
    return meta


def jaxbrr_step(located: Located) -> Path | None:
    """The jaxbrr step folder behind `located` (a NaN dump's checkpoint/ included), else None."""
    if located.kind == "jaxbrr":
        return located.path
    if located.kind == "nan_dump" and (located.path / "checkpoint" / "meta").is_dir():
        return located.path / "checkpoint"
    return None


# ----------------------------------------------------------------------------------------------
# the neutral weights file

# what weights that do not fit the model of the config they were read with need
CONFIG_FIX = ("pass the config these weights were trained with: --config CFG, whose `model` section describes them "
              "(weights that carry their own model config, a .safetensors file's or a training checkpoint's, are "
              "read with that one)")
NEUTRAL_FILE = "model.safetensors"  # the neutral copy in a jaxbrr step folder
FORMAT, FORMAT_VERSION = "jaxbrr.weights", "1"


# the train fields an original checkpoint's own `training` section sets (original_config.loss_config)
LOSS_FIELDS = ("loss", "focal_alpha", "focal_gamma")


def write_neutral(path: str | Path, arrays: dict[str, np.ndarray], config: ModelConfig | None, framework: str,
                  run_config: Config | None = None, postprocess: PostprocessConfig | None = None,
                  loss: dict | None = None) -> Path:
    """A .safetensors file of neutral arrays with metadata {format, format_version, framework,
    config (the ModelConfig as JSON)} and, for weights of a training run, run_config (the run's whole
    config: its windows, post-processing, evaluation), or else postprocess and loss (train's LOSS_FIELDS),
    where the weights carry their own (an original checkpoint's); written atomically."""
    import safetensors.numpy

    from common.files import atomic_path

    if run_config is not None and (postprocess is not None or loss is not None):
        raise ValueError("write_neutral: a run config holds its post-processing and loss; pass one or the others")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "framework": framework,
                "config": json.dumps(config_to_dict(config) if config is not None else None)}
    if run_config is not None:
        metadata["run_config"] = json.dumps(config_to_dict(run_config))
    if postprocess is not None:
        metadata["postprocess"] = json.dumps(config_to_dict(postprocess))
    if loss is not None:
        metadata["loss"] = json.dumps({field: loss[field] for field in LOSS_FIELDS})
    with atomic_path(path) as tmp:
        safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=metadata)
    return Path(path)


def read_neutral_metadata(path: str | Path) -> dict:
    """{format, format_version, framework, config (a dict or None), run_config and postprocess (dicts,
    where the file has them)} of a neutral weights file."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as error:  # the library's own errors: an unreadable file whatever the cause
        raise CheckpointError(f"{path}: not a readable .safetensors file ({error}); {FIX}") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} file (metadata {metadata}); "
                              "write one with `python -m parity.convert`")
    metadata["config"] = json.loads(metadata["config"])
    for section in ("run_config", "postprocess", "loss"):
        if section in metadata:
            metadata[section] = json.loads(metadata[section])
    return metadata


def read_neutral(path: str | Path) -> dict[str, np.ndarray]:
    import safetensors
    import safetensors.numpy

    try:
        return safetensors.numpy.load_file(str(path))
    except safetensors.SafetensorError as error:  # a file cut short (a disk that filled, a copy that stopped)
        raise CheckpointError(f"{path}: not a readable .safetensors file ({error}); {FIX}") from None


def is_neutral(path: str | Path) -> bool:
    """A .safetensors file this project wrote (its metadata names our format), not one of another
    program's (a state dict alone: read_safetensors); read_neutral_metadata checks the version."""
    return (_safetensors_header(path).get("__metadata__") or {}).get("format") == FORMAT  # transformers' is "pt"


# weights that carry their training run's whole config (a --config beside them would not be read)
RUN_KINDS = ("jaxbrr", "torchref", "nan_dump")


def carries_run_config(kind: str, path: str | Path, config_path: str | Path | None) -> bool:
    """Whether weights of `kind` (locate's, or Weights') at `path` are read with the whole config
    of the run that trained them: RUN_KINDS always, and a neutral .safetensors file that carries
    one (converted from a run, or a jaxbrr step's model.safetensors) where no --config is given."""
    if kind in RUN_KINDS:
        return True
    return (config_path is None and kind == "safetensors" and is_neutral(path)
            and "run_config" in read_neutral_metadata(path))


# safetensors' dtype names -> numpy's (the format: huggingface/safetensors README, "Format"); BF16
# is read as ml_dtypes.bfloat16 (read_safetensors), as common/pt.py reads a bfloat16 tensor
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}


def _safetensors_header(path: str | Path) -> dict:
    """The JSON header of a .safetensors file: an 8-byte little-endian length, then the JSON."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= 100_000_000:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:  # json's errors are ValueErrors
        raise CheckpointError(f"{path}: not a readable .safetensors file ({error}); {FIX}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a readable .safetensors file (its header is no mapping); {FIX}")
    return header


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file another program wrote, as numpy arrays in the dtype it
    holds (bfloat16 too, which safetensors.numpy refuses)."""
    import ml_dtypes

    header = _safetensors_header(path)
    raw = Path(path).read_bytes()
    data = memoryview(raw)[8 + int.from_bytes(raw[:8], "little"):]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        kind = entry.get("dtype") if isinstance(entry, dict) else None
        if kind not in SAFETENSORS_DTYPES and kind != "BF16":
            raise CheckpointError(f"{path}: tensor {name} is of dtype {kind}, which no model here holds")
        dtype = np.dtype(ml_dtypes.bfloat16) if kind == "BF16" else np.dtype(SAFETENSORS_DTYPES[kind])
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        sized = (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
                 and isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= len(data)
                 and offsets[1] - offsets[0] == int(np.prod(shape)) * dtype.itemsize)
        if not sized:
            raise CheckpointError(f"{path}: tensor {name}'s bytes are not where its header says (shape {shape}, "
                                  f"offsets {offsets}, {len(data)} bytes of data): a file cut short or damaged; "
                                  "save or copy it again")
        arrays[name] = np.frombuffer(data[offsets[0]:offsets[1]], dtype).reshape(shape).copy()
    return arrays


# ----------------------------------------------------------------------------------------------
# reading weights of any kind

Shapes = Callable[[ModelConfig], dict[str, tuple[int, ...]]]


@dataclass
class Weights:
    """Neutral weights (torchref's state-dict names and layouts, numpy) and their run config."""

    # a training checkpoint's or NaN dump's whole run config; for other weights, their model section
    # (and data.montage to match) with the rest from the config file or the defaults
    config: Config
    arrays: dict[str, np.ndarray]
    kind: str  # locate()'s kind, or "original" for a brain-go-brr v2 checkpoint (a .pt)
    path: Path
    notes: list[str] = field(default_factory=list)  # what was ignored or assumed: callers print them
    meta: dict | None = None  # a training checkpoint's meta (config, progress), when it has one
    spelled: dict[str, str] = field(default_factory=dict)  # neutral name -> the file's key, where they differ
    # sections of `config` read from the weights' own config beyond `model`: an original checkpoint's
    # "postprocess" and "loss" (train's LOSS_FIELDS), also where a .safetensors file converted from one carries them
    own_sections: tuple[str, ...] = ()


ConfigSource = str | Path | Config | None  # a config file, a run's config, or None for the defaults


def _load(config: ConfigSource) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def _with_model(model: dict | ModelConfig, config_path: ConfigSource, source: str,
                postprocess: dict | None = None, train: dict | None = None) -> Config:
    """The run config of `config_path` (or the defaults) with `model` as its model section, and
    data.montage the weights' montage (the montage they read EEG in decides their input layer);
    with `postprocess` (fields of it), the weights' own post-processing over the file's (the
    caller passes none where a training run's own config decides it: _own_postprocess)."""
    tree = config_to_dict(_load(config_path))
    tree["model"] = config_to_dict(model) if isinstance(model, ModelConfig) else model
    if "montage" in tree["model"]:
        tree["data"]["montage"] = tree["model"]["montage"]
    own = ["model"]
    if postprocess is not None:
        tree["postprocess"] = {**tree["postprocess"], **postprocess}
        own.append("postprocess")
    if train is not None:  # the loss fields of an original checkpoint's own training section
        tree["train"] = {**tree["train"], **train}
        own.append("train loss")
    rest = "the run's config" if isinstance(config_path, Config) else (config_path or "the defaults")
    return config_from_dict(tree, source=f"{source} ({', '.join(own)}) + {rest} (the rest)")


def _neutral_config(metadata: dict, config_path: ConfigSource, path: Path) -> tuple[Config, list[str], tuple[str, ...]]:
    """A neutral file's model over `config_path`'s run config, else over the run config the file
    carries (converted from a run), else over the defaults, which a note then names; with the
    post-processing the file carries (an original checkpoint's) over all but a training run's own
    config, as the original checkpoint itself (_own_postprocess). Also returns the sections beyond
    `model` read from the file (Weights.own_sections)."""
    run = metadata.get("run_config")
    rest = config_path if config_path is not None or run is None else config_from_dict(
        run, source=f"{path}'s run config")
    # the weights' own sections decide over a config file's, not over a training run's own config
    postprocess, loss = (None, None) if isinstance(config_path, Config) else (
        metadata.get("postprocess"), metadata.get("loss"))
    notes = []
    if rest is None:
        settings = "windows and evaluation settings" if postprocess is not None else (
            "windows, post-processing and evaluation settings")
        notes.append(f"{path} holds the model alone{' and its post-processing' * (postprocess is not None)}: its "
                     f"{settings} are the defaults; pass --config for the ones it was trained with")
    config = _with_model(metadata["config"], rest, str(path), postprocess, loss)
    notes += _own_section_notes(path, config_path, config, postprocess is not None, loss is not None)
    return config, notes, (*("postprocess",) * (postprocess is not None), *("loss",) * (loss is not None))


def read_nan_record(dump: Path) -> dict:
    """A NaN dump's nan.json; CheckpointError naming it when it is not whole JSON."""
    path = dump / "nan.json"
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path}: not whole JSON ({error}): the dump is incomplete (a run killed while writing "
                              "it, or a copy cut short); copy it again, or use its model.pt or checkpoint/ and its "
                              "batch.npz on their own (parity.localize --checkpoint, --batch)") from None


def _run_config_note(path: Path, config_path: ConfigSource) -> list[str]:
    """A config file given beside a training checkpoint or NaN dump, which carries its run's whole
    config: say that that one counts."""
    if not isinstance(config_path, str | Path):
        return []
    return [f"{path} carries its training run's whole config, which is used; {config_path} is not (change a field "
            "of the run's with --set FIELD=VALUE)"]


def _own_model_note(path: Path, config_path: ConfigSource, model: ModelConfig) -> list[str]:
    """A config file given beside weights that carry their own model: say which one counts."""
    if not isinstance(config_path, str | Path) or _load(config_path).model == model:
        return []
    return [f"{path} carries its own model config, used instead of the `model` section of {config_path} "
            "(which differs); the rest of the run config is that file's"]


def _original_own_config(saved) -> dict | None:
    """An original checkpoint's own config (brain-go-brr's Config.model_dump()), when it carries
    one with a model section."""
    if isinstance(saved, dict) and isinstance(saved.get("config"), dict) and isinstance(saved["config"].get("model"), dict):
        return saved["config"]
    return None


def _original_config(path: Path, own: dict, config_path: ConfigSource) -> tuple[Config, list[str]]:
    """The run config an original checkpoint's own config describes (common/original_config.py: its model
    section, and its post-processing where ours has the same fields) over config_path's, and notes."""
    from common import original_config

    try:
        model, notes = original_config.model_config(own["model"])
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    postprocess = train = None
    if _own_postprocess(own, config_path):
        postprocess, post_notes = original_config.postprocess_config(own["postprocessing"])
        notes += post_notes
    if isinstance(own.get("training"), dict) and not isinstance(config_path, Config):  # a run's own config decides
        try:
            train, loss_notes = original_config.loss_config(own["training"])
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
        notes += loss_notes
    config = _with_model(model, config_path, f"{path}'s own config", postprocess, train)
    return config, notes + _own_section_notes(path, config_path, config, postprocess is not None, train is not None)


def _own_section_notes(path: Path, config_path: ConfigSource, config: Config, own: bool,
                           own_loss: bool = False) -> list[str]:
    """Where weights' own post-processing (`own`) or loss (`own_loss`) replaced a different one of
    a --config file: say so."""
    if not isinstance(config_path, str | Path):
        return []
    given, notes = _load(config_path), []
    if own and given.postprocess != config.postprocess:
        notes.append(f"{path} carries its own post-processing, used instead of the `postprocess` section of "
                     f"{config_path} (which differs); --set postprocess.FIELD=VALUE changes it")
    if own_loss and _loss_text(given.train) != _loss_text(config.train):
        notes.append(f"{path} carries its own loss, {_loss_text(config.train)}, used instead of {config_path}'s "
                     f"{_loss_text(given.train)}; --set train.loss=... changes it")
    return notes


def _loss_text(train) -> str:
    from common.original_config import loss_text

    return loss_text(**{field: getattr(train, field) for field in LOSS_FIELDS})


def _own_postprocess(own: dict, config_path: ConfigSource) -> bool:
    """Whether an original checkpoint's own post-processing is read: it carries one, and no
    training run's own config decides it."""
    return isinstance(own.get("postprocessing"), dict) and not isinstance(config_path, Config)


def _original_fix(path: Path, own: bool, config_path: ConfigSource) -> str:
    """What to do when an original checkpoint's weights do not fit the model its config describes,
    by where that config came from."""
    if own:
        given = (f", not the `model` section of --config {config_path}" if isinstance(config_path, str | Path)
                 else "")
        return (f"the model is the one {path}'s own config describes (brain-go-brr schema){given}, and that config is "
                "not these weights': save the state dict alone (torch.save(checkpoint['model_state_dict'], "
                "'weights.pt')) and pass --config the config they were trained with")
    if isinstance(config_path, Config):
        return ("the model is the one the run's config describes: set its `model` fields as these weights were "
                "trained (--config, --set)")
    return (f"the model is the one the `model` section of --config {config_path} describes: pass --config the config "
            "these weights were trained with")


def _needs_config(path: Path, config_path: ConfigSource, what: str) -> Config:
    if config_path is None:
        raise CheckpointError(f"{path}: {what} carries no config; pass --config CFG (its `model` section "
                              "must describe these weights)")
    return _load(config_path)


def _arrays(state: dict, path: Path) -> dict[str, np.ndarray]:
    bad = [key for key, value in state.items() if not isinstance(value, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict (entries {shown_inline(bad)} are not tensors)")
    return dict(state)


def is_torchref_checkpoint(saved) -> bool:
    """What torchref's trainer saves: {"model": state dict, "meta": {"config": ..., ...}}. Another
    {"model", "meta"} dict (a user's own) is read as any other state dict would be."""
    return (isinstance(saved, dict) and isinstance(saved.get("model"), dict)
            and isinstance(saved.get("meta"), dict) and isinstance(saved["meta"].get("config"), dict))


def read_weights(path: str | Path, config_path: ConfigSource = None, shapes: Shapes | None = None) -> Weights:
    """The weights `path` names (any kind locate() finds) as neutral numpy arrays, with their
    config: a training checkpoint's or NaN dump's own run config, whole (config_path unused); else
    the model section the weights carry (a .safetensors file's metadata, an original checkpoint's
    own config), with data.montage to match, over config_path's (or the defaults'); else
    config_path's, which is then required.
    `shapes(model_config)` (neutral name -> shape, from the caller's framework) is needed for an
    original brain-go-brr v2 checkpoint, whose keys are renamed onto a model of its config."""
    from common import original, original_config
    from common.pt import PtError, read_pt

    located = locate(path)
    path = located.path
    if (step := jaxbrr_step(located)) is not None:
        neutral = step / NEUTRAL_FILE
        if not neutral.is_file():
            raise CheckpointError(f"{step}: a jaxbrr checkpoint without its neutral copy {NEUTRAL_FILE} (a NaN "
                                  "dump's, one written before the copy was kept, or a save stopped between orbax's "
                                  "items and the copy); reading orbax's files needs JAX: convert it once with "
                                  f"`python -m parity.convert {step} OUT.safetensors`")
        meta = jaxbrr_meta(step)
        return Weights(config_from_dict(meta["config"], source=f"{step}/meta"), read_neutral(neutral), "jaxbrr",
                       step, meta=meta, notes=_run_config_note(step, config_path))
    if located.kind == "safetensors" and is_neutral(path):
        metadata = read_neutral_metadata(path)
        notes, own_sections = [], ()
        if metadata["config"] is not None:
            config, notes, own_sections = _neutral_config(metadata, config_path, path)
            notes = _own_model_note(path, config_path, config.model) + notes
        else:
            config = _needs_config(path, config_path, "this weights file")
        return Weights(config, read_neutral(path), "safetensors", path, notes=notes, own_sections=own_sections)
    if located.kind == "nan_dump":
        record = read_nan_record(path)
        if not (path / "model.pt").is_file():
            raise CheckpointError(f"{path}: a NaN dump with neither checkpoint/ (jaxbrr) nor model.pt (torchref)")
        config = config_from_dict(record["config"], source=str(path / "nan.json"))
        return Weights(config, _arrays(read_pt(path / "model.pt"), path), "nan_dump", path,
                       notes=_run_config_note(path, config_path))
    try:
        saved = read_safetensors(path) if located.kind == "safetensors" else read_pt(path)
    except PtError as error:
        raise CheckpointError(str(error)) from None
    if is_torchref_checkpoint(saved):
        config = config_from_dict(saved["meta"]["config"], source=str(path))
        return Weights(config, _arrays(saved["model"], path), "torchref", path, meta=saved["meta"],
                       notes=_run_config_note(path, config_path))
    try:
        found = original.original_state(saved)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if found is not None:
        state, unwrapped, held = found
        own, yaml_note, fix = _original_own_config(saved), [], None
        given = original_yaml(config_path) if isinstance(config_path, str | Path) else None
        if own is not None and given is not None:  # the checkpoint's own config is the one it trained with
            yaml_note = [f"config: {path}'s own config (brain-go-brr schema); --config {config_path}, a brain-go-brr "
                         "v2 config too, is not read"]
            config_path = None
        elif own is None and given is not None:
            # no config of its own (a bare state dict, the original's mid-epoch snapshots): the
            # original's YAML it was trained with reads as that config would, over the defaults
            yaml_note = [f"config: the model, post-processing and loss sections of {config_path}, a brain-go-brr "
                         f"v2 config, read as {path}'s own config would be; the rest this project's defaults"]
            fix = (f"the model is the one the `model` section of {config_path} (a brain-go-brr v2 config) describes: "
                   "pass --config the config these weights were trained with")
            own, config_path = given, None
        if own is not None:
            config, notes = _original_config(path, own, config_path)
            notes += _own_model_note(path, config_path, config.model)
        else:
            config, notes = _needs_config(path, config_path, "this original checkpoint"), []
        # the model that runs: a training run's own (its config decides how the model runs:
        # common.train.compat.check_init_config leaves model.stability, remat, ... to it), else the weights'
        run_config = isinstance(config_path, Config)
        running = config_path.model if run_config else config.model
        if own is not None:
            notes[0] = "; ".join(filter(None, [notes[0], original_config.run_note(running, run_config)]))
        notes = yaml_note + notes
        if shapes is None:
            raise ValueError("read_weights: an original checkpoint needs `shapes` (the target model's)")
        try:
            arrays, report = original.rename_original(state, shapes(config.model), config.model, str(path),
                                                      fix=fix or _original_fix(path, own is not None, config_path))
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        spelled = {ours: held.get(theirs, theirs) for theirs, ours in report.mapped.items()}
        own_sections = () if own is None else (
            *("postprocess",) * _own_postprocess(own, config_path),
            *("loss",) * (isinstance(own.get("training"), dict) and not isinstance(config_path, Config)))
        windowing = config_path if run_config else config
        return Weights(config, dict(arrays), "original", path, notes=[*unwrapped, *notes, *report.counts(),
                       *original.config_notes(running), *original.window_notes(windowing)],
                       spelled={k: v for k, v in spelled.items() if k != v},
                       own_sections=own_sections)
    if isinstance(saved, dict) and (keys := _batch_keys(saved)):
        raise CheckpointError(f"{path}: a batch of windows ({', '.join(keys)}), not weights: pass it as --batch, "
                              "and the checkpoint as --checkpoint")
    if isinstance(saved, dict):
        try:
            state, notes = original.state_dict_entry(saved, _holds_tensors)
        except ValueError as error:  # two state dicts and no model_state_dict
            raise CheckpointError(f"{path}: {error}") from None
        return Weights(_needs_config(path, config_path, "a bare state dict"), _arrays(state, path), "pt", path,
                       notes=notes)
    raise CheckpointError(f"{path}: holds a {type(saved).__name__}, not weights; {FIX}")


def _batch_keys(saved: dict) -> list[str]:
    """The keys that make a dict a saved batch, not a state dict: the input under one of the names
    a batch file uses (parity.problem reads them) and nothing that holds a tensor of a model."""
    inputs = [key for key in BATCH_X_KEYS if isinstance(saved.get(key), np.ndarray)]
    model_like = any("." in str(key) for key in saved) or any(isinstance(v, dict) for v in saved.values())
    return [] if not inputs or model_like else [str(key) for key in saved]


def _holds_tensors(value) -> bool:
    """A state dict of any names, as common/pt.py and read_safetensors read one: arrays by name."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def nonfinite_tensors(arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """name -> (NaN count, Inf count) of each tensor that holds any: weights saved after a NaN step."""
    counts = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        floating = np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"  # ml_dtypes' (common/pt.py)
        if floating and not np.isfinite(array).all():
            counts[name] = (int(np.isnan(array).sum()), int(np.isinf(array).sum()))
    return counts


def check_finite(arrays: dict[str, np.ndarray], source: str | Path, spelled: dict[str, str] | None = None) -> None:
    """CheckpointError naming the tensors of `arrays` that hold NaN or Inf (the first
    MISMATCHES_SHOWN by name, and how many), with the file's own key where `spelled` (name -> key)
    has one, and the fix: such weights compute NaN on every input, whatever the data. For the
    commands that run a model on weights (predict, evaluate, train --init-from); parity.convert and
    parity.localize read them to report them."""
    counts = nonfinite_tensors(arrays)
    if not counts:
        return
    spelled = spelled or {}
    named = [name + (f" (the checkpoint's {spelled[name]})" if name in spelled else "") + f": {nan} NaN, {inf} Inf"
             for name, (nan, inf) in sorted(counts.items())]
    raise CheckpointError(
        f"{source}: {len(counts)} of {len(arrays)} weight tensors hold NaN or Inf (saved after a training step "
        "went non-finite), so every output would be NaN:\n" + "\n".join(shown_lines(named)) + "\n"
        "load other weights: an earlier step of the run (checkpoints/best and checkpoints/last keep several) or "
        f"another checkpoint. Where the NaN came from: `python -m parity.localize --checkpoint {source} --batch "
        "BATCH` names these tensors (its WEIGHTS verdict); on the last finite checkpoint, with the batch that "
        "failed, it finds the stage that made the NaN")


def loaded_tensors(path: str | Path) -> tuple[Path, dict[str, np.ndarray]] | None:
    """(the concrete file or step, the tensors a model would load from it) for weights of any kind,
    read without a framework and without building a model: what --init-from checks before any data
    is read. Named as the file names them; an original checkpoint's less those common/original.py
    ignores (the unused 512-wide stack, the fallbacks, the PE cache). None where the tensors cannot
    be read so (a jaxbrr checkpoint without its neutral copy: orbax's files need JAX) or are not
    weights; loading them later says why."""
    from common import original
    from common.pt import PtError, read_pt

    located = locate(path)
    if (step := jaxbrr_step(located)) is not None:
        return (step, read_neutral(step / NEUTRAL_FILE)) if (step / NEUTRAL_FILE).is_file() else None
    if located.kind == "safetensors" and is_neutral(located.path):
        return located.path, read_neutral(located.path)
    file = located.path / "model.pt" if located.kind == "nan_dump" else located.path
    if not file.is_file():
        return None
    try:
        saved = read_safetensors(file) if located.kind == "safetensors" else read_pt(file)
        if is_torchref_checkpoint(saved):
            state = saved["model"]
        elif (found := original.original_state(saved)) is not None:
            spelled = found[2]  # bare key -> as the file holds it (a wrapper's prefix, say): named so
            state = {spelled.get(key, key): value for key, value in found[0].items()
                     if original.ignored_reason(key) is None}
        else:
            state = original.state_dict_entry(saved, _holds_tensors)[0] if isinstance(saved, dict) else saved
    except PtError as error:
        raise CheckpointError(str(error)) from None
    except ValueError as error:  # original_state's or state_dict_entry's: two models in one file, ...
        raise CheckpointError(f"{file}: {error}") from None
    if not isinstance(state, dict):
        return None
    return located.path, {key: value for key, value in state.items() if isinstance(value, np.ndarray)}


def run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """train's --config: a YAML file (load_config), or a run folder or weights file standing for
    the config its weights were trained with (weights_config: a run's whole config; a .safetensors
    file's, whole when converted from a run), with `overrides` applied."""
    path = Path(path)
    if not (path.is_dir() or path.suffix in WEIGHTS_SUFFIXES):
        return load_config(path, overrides)
    try:
        config = weights_config(path)
    except CheckpointError as error:
        raise ConfigError(f"--config {error}; or a YAML config file") from None
    if config is None:
        raise ConfigError(f"{path}: weights that carry no config (a bare state dict): pass the YAML config they "
                          "were trained with")
    return with_overrides(config, list(overrides), f"{path}'s config")


def weights_config(path: str | Path, fallback: ConfigSource = None) -> Config | None:
    """The run config that weights of any kind carry (their model section), without building a
    model; None for weights that carry none (a bare state dict, an original without its config).
    What `--init-from` checks before any data is read."""
    from common import original
    from common.pt import read_pt

    located = locate(path)
    if (step := jaxbrr_step(located)) is not None:
        return config_from_dict(jaxbrr_meta(step)["config"], source=f"{step}/meta")
    if located.kind == "safetensors":
        if not is_neutral(located.path):
            return None  # another program's: a state dict alone
        metadata = read_neutral_metadata(located.path)
        return _neutral_config(metadata, fallback, located.path)[0] if metadata["config"] is not None else None
    if located.kind == "nan_dump":
        meta = located.path / "nan.json"
        return config_from_dict(json.loads(meta.read_text())["config"], source=str(meta))
    saved = read_pt(located.path)
    if is_torchref_checkpoint(saved):
        return config_from_dict(saved["meta"]["config"], source=str(located.path))
    if original.is_original(saved) and (own := _original_own_config(saved)) is not None:
        return _original_config(located.path, own, fallback)[0]
    return None

"""The preprocessed-recording cache: one memory-mapped array per recording, never per window.

Layout, under `<cache_dir>/<key>/` where key hashes everything that changes the bytes
(preprocessing, montage, label set):

    recordings/<stem>.signals.npy   (C, N) float32, preprocessed
    recordings/<stem>.labels.npy    (N,) uint8, per-sample seizure labels
    recordings/<stem>.json          provenance: source and label files (size, mtime), patient,
                                    preprocessing report, label report
    manifest.json                   every recording's sidecar, the skipped files and why

Which files are recordings, whose, and where their labels are is the corpus layout's business
(common/data/corpora.py, common/data/annotations.py `labels_for`). A sidecar is written last and
atomically, so its presence means the recording is complete: a killed build keeps everything it
finished, and a rebuild skips a recording whose sidecar matches the source and label files' sizes
and mtimes. Reading one window reads only that window's bytes (np.load with
mmap_mode="r"), unlike the original, which decompressed a whole recording per window.
"""

from __future__ import annotations

import glob
import json
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.config import Config, DataConfig, config_hash, config_to_dict
from common.data.annotations import (
    annotation_file,
    check_duration,
    duration_tolerance,
    label_inputs,
    labels_of,
    labels_without_edf,
    seizure_mask,
    wfdb_files,
)
from common.data.corpora import Recording, Survey, survey
from common.data.windows import (
    WindowSpec,
    cut_window,
    seizure_samples_per_window,
    window_classes,
    window_starts,
)
from common.files import atomic_path, remove_stale_temporaries, write_text
from common.progress import LOG_LINE_SECONDS, Heartbeat

MANIFEST = "manifest.json"
CACHE_FORMAT = 8  # 2: sidecars stamp the label files too and carry the layout's patient; 3: a montage
# signal with a calibration that cannot scale it (digital or physical min = max) is a bad file, so
# a cache of format 2 may hold recordings a fresh build skips (and a seeded split over them differs);
# 4: bipolar derivations from a common reference, '01' as O1, copies of a derivation checked equal:
# files read differently than a format-3 build read or refused them; 5: a recording whose every
# channel is flat, and a calibration field of nan or inf, are refused (format 4 cached them as zeros);
# 6: a CHB-MIT or Siena recording whose length is not the span of its summary's or list's clock
# times, and a .csv_bi naming another recording in its bname, are refused (format 5 cached them);
# 7: an EDF's bytes past its header's data records are left out (format 6 read them as signal), and
# sidecars stamp every label file consulted (label_inputs), used or not; 8: a CHB-MIT seizure past
# its summary's File End Time and a Siena seizure start outside its registration are refused, and an
# EDF rate that is a small fraction (1000 samples per 3 s) is resampled (format 7 refused it)


def cache_key(config: Config) -> str:
    """Hash of what decides the cached bytes; a changed key means a fresh cache folder. The data
    folder is part of it: two corpora may reuse recording names (the synthetic ones do)."""
    parts = {
        "format": CACHE_FORMAT,
        "data_dir": str(Path(config.data.data_dir).resolve()),
        "corpus": config.data.corpus,
        "preprocess": config_to_dict(config.preprocess),
        "montage": config.data.montage,
        "seizure_labels": sorted(config.data.seizure_labels),
        "background_labels": sorted(config.data.background_labels),
        # the checks a recording passed to be cached: tightened, they check every recording again
        "duration_tolerances": [config.data.label_duration_tolerance_seconds,
                                config.data.clock_duration_tolerance_seconds],
    }
    return config_hash(parts)


def cache_path(config: Config) -> Path:
    return Path(config.data.cache_dir) / cache_key(config)


def find_recordings(data_dir: str | Path, pattern: str = "**/*.[eE][dD][fF]") -> list[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data_dir {data_dir} does not exist: set data.data_dir in the config "
            f"(or data.synthetic to generate the synthetic corpus there)"
        )
    # glob.glob, not Path.glob: Python 3.11's Path.glob("**") does not enter symlinked folders (a
    # `dev -> /datasets/...` link would add nothing), glob.glob's does; with root_dir, data_dir is
    # no pattern, whatever its name holds ("TUSZ [v2.0.3]")
    found = (data_dir / name for name in glob.glob(pattern, root_dir=data_dir, recursive=True))
    # a link back up the tree (`up -> ..`) makes glob list each file once per round it goes: one
    # path per file, its shortest
    unique: dict[Path, Path] = {}
    for path in sorted((p for p in found if p.is_file()), key=lambda p: (len(p.parts), str(p))):
        unique.setdefault(path.resolve(), path)
    return sorted(unique.values())


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.save adds no suffix
        np.save(handle, array)


@dataclass
class BuildResult:
    root: Path
    built: list[str]
    reused: list[str]
    skipped: list[dict]
    survey: Survey | None = None


def _file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _source_stamp(edf: Path) -> dict:
    stamp = _file_stamp(edf)
    return {"source": stamp["path"], "size": stamp["size"], "mtime_ns": stamp["mtime_ns"]}


def _label_stamps(edf: Path, corpus: str) -> list[dict]:
    return [_file_stamp(path) for path in label_inputs(edf, corpus)]


def _is_current(sidecar: Path, edf: Path, data: DataConfig, corpus: str) -> bool:
    """The sidecar exists and stamps this EDF and every label file labels_for consults for it as
    they are now (label_inputs: a `<stem>.csv_bi`, `.edf.seizures` or chbNN-summary.txt put beside
    the EDF since, or changed, is read), under the name data.listed_as gives it now if it was read
    under another, and seizure-free by data.chbmit_unlisted only while that still says so and the
    folder still holds other recordings' .seizures files."""
    try:
        meta = json.loads(sidecar.read_text())
        labels_now = [_file_stamp(Path(f["path"])) for f in meta["label_files"]]
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if meta.get("label_inputs") != _label_stamps(edf, corpus):
        return False
    beside = annotation_file(edf)
    if beside is None and meta.get("listed_as") is not None and dict(data.listed_as).get(edf.name) != meta["listed_as"]:
        return False
    if beside is None and meta.get("unlisted") and (data.chbmit_unlisted != "seizure_free"
                                                    or not wfdb_files(edf.parent)):
        return False  # seizure-free by a setting, or by .seizures files of others, since taken back
    return all(meta.get(k) == v for k, v in _source_stamp(edf).items()) and labels_now == meta["label_files"]


def cache_recording(recording: Recording, config: Config, root: Path, corpus: str) -> dict:
    """Preprocess one EDF and its labels into the cache; returns its sidecar dict. Raises on bad
    input (EDFError, AnnotationError: ValueErrors naming the file and the fix)."""
    from common.data.edf import read_header  # MNE is slow to import; only builds need it
    from common.data.preprocess import preprocess_file

    edf = recording.edf
    # the header and the labels first: their errors are known in milliseconds, the signals take
    # seconds to minutes to read and filter
    read_header(edf)
    inputs = _label_stamps(edf, corpus)  # before they are read: a file changed meanwhile rebuilds next time
    annotations = labels_of(edf, corpus, config.data)
    signals, report = preprocess_file(edf, config.data.montage, config.preprocess)
    check_duration(annotations, edf, report.duration_seconds, duration_tolerance(annotations, config.data))
    sfreq = config.preprocess.sfreq
    n_samples = signals.shape[-1]
    notes = report.to_dict()
    labels, label_report = seizure_mask(annotations, n_samples, sfreq, config.data.seizure_labels)
    recordings = root / "recordings"
    stem = edf.stem
    _save_npy(recordings / f"{stem}.signals.npy", signals)
    _save_npy(recordings / f"{stem}.labels.npy", labels)
    sidecar = {
        **_source_stamp(edf),
        "stem": stem,
        "patient": recording.patient,
        "annotations": annotations.path,
        "label_files": [_file_stamp(Path(p)) for p in annotations.files],
        "label_inputs": inputs,
        "listed_as": annotations.listed_as,
        "unlisted": annotations.unlisted,
        "n_channels": int(signals.shape[0]),
        "n_samples": int(n_samples),
        "sfreq": sfreq,
        "report": notes,
        "labels": asdict(label_report),
    }
    write_text(recordings / f"{stem}.json", json.dumps(sidecar, indent=1))
    return sidecar


def build_cache(config: Config, progress: bool = True, plain_lines: bool = False) -> BuildResult:
    """Cache every recording the corpus layout finds under data.data_dir; skip and record bad
    files; keep what exists. `progress` shows a bar; without one, `plain_lines` (for a log file,
    common/progress.py) prints the survey's lines first, then a count at most once every
    LOG_LINE_SECONDS and at the end, each flushed: a TUSZ build takes 25 minutes."""
    from tqdm.auto import tqdm

    data = config.data
    root = cache_path(config)
    (root / "recordings").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root / "recordings")
    found = survey(data.data_dir, find_recordings(data.data_dir, data.edf_glob), data.corpus, data.split.kind)
    found.without_edf = labels_without_edf(data.data_dir, found.corpus, data.listed_as)
    heartbeat = Heartbeat(LOG_LINE_SECONDS) if plain_lines and not progress else None
    if heartbeat is not None:
        print("\n".join(found.lines()), flush=True)
    stems: dict[str, Path] = {}
    built, reused, skipped, failed = [], [], [], set()

    def say(done: int) -> None:
        print(f"caching recordings: {done}/{len(found.recordings)} ({len(built)} built, {len(reused)} reused, "
              f"{len(skipped)} skipped)", flush=True)

    bar = tqdm(found.recordings, desc="caching recordings", unit="rec", disable=not progress)
    for done, recording in enumerate(bar):
        if heartbeat is not None and heartbeat.due():
            say(done)
        edf = recording.edf
        bar.set_postfix_str(edf.name)
        if edf.stem in stems:
            skipped.append({"source": str(edf), "reason": f"stem {edf.stem!r} also at {stems[edf.stem]}: rename one"})
            continue
        stems[edf.stem] = edf
        sidecar = root / "recordings" / f"{edf.stem}.json"
        if _is_current(sidecar, edf, data, found.corpus):
            reused.append(edf.stem)
            continue
        try:
            cache_recording(recording, config, root, found.corpus)
            built.append(edf.stem)
        except (ValueError, OSError) as err:  # EDFError and AnnotationError are ValueErrors
            skipped.append({"source": str(edf), "reason": str(err).strip() or traceback.format_exc(limit=1)})
            failed.add(edf.stem)  # an older build of it, from files since changed, is not used
    if heartbeat is not None:
        say(len(found.recordings))
    write_manifest(root, config, skipped, keep=set(stems) - failed)
    return BuildResult(root, built, reused, skipped, found)


def skip_line(item: dict) -> str:
    """`skipped <source>: <reason>` for a skipped file's record, the reason without the path it
    starts with (the readers' errors name their file first)."""
    source, reason = item["source"], item["reason"]
    return f"skipped {source}: {reason.removeprefix(f'{source}: ')}"


def write_manifest(root: Path, config: Config, skipped: list[dict], keep: set[str] | None = None) -> dict:
    """Gather the complete sidecars into manifest.json (atomic)."""
    recordings = {}
    for sidecar in sorted((root / "recordings").glob("*.json")):
        meta = json.loads(sidecar.read_text())
        if keep is None or meta["stem"] in keep:
            recordings[meta["stem"]] = meta
    manifest = {
        "format": CACHE_FORMAT,
        "key": root.name,
        "config": {
            "preprocess": config_to_dict(config.preprocess),
            "montage": config.data.montage,
            "seizure_labels": list(config.data.seizure_labels),
        },
        "recordings": recordings,
        "skipped": skipped,
    }
    write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


# Recordings a Corpus keeps memory-mapped at once. Every map holds a file descriptor (two per
# recording); a corpus has thousands of recordings (TUSZ ~7,000, CHB-MIT 686) against a usual
# limit of 1024 descriptors per process, which mapping them all ran out of ("Too many open files"
# after a whole build of 520 recordings, at the summary that reads every recording's labels).
MAPPED_RECORDINGS = 128


class Corpus:
    """Read side of a cache: recordings by stem, windows as memory-mapped slices."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_file = self.root / MANIFEST
        if not manifest_file.is_file():
            raise FileNotFoundError(
                f"{manifest_file} not found: build the cache first (python -m jaxbrr.data build --config CFG)"
            )
        self.manifest = json.loads(manifest_file.read_text())
        self.recordings: dict[str, dict] = self.manifest["recordings"]
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # the most recently used last
        self._lock = threading.Lock()  # the prefetch thread reads windows too

    @property
    def stems(self) -> list[str]:
        return sorted(self.recordings)

    def arrays(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """(signals (C, N), labels (N,)) as read-only memory maps. Each map holds a file descriptor
        while it lives, so only the MAPPED_RECORDINGS most recently used recordings stay mapped
        (a map reopens in ~0.1 ms: BENCHMARKS.md); keep no slice of one beyond its use (a
        view keeps the map open: copy, as cut_window does)."""
        with self._lock:
            found = self._arrays.pop(stem, None)
            if found is None:
                base = self.root / "recordings" / stem
                found = (np.load(f"{base}.signals.npy", mmap_mode="r"), np.load(f"{base}.labels.npy", mmap_mode="r"))
            self._arrays[stem] = found
            while len(self._arrays) > MAPPED_RECORDINGS:
                del self._arrays[next(iter(self._arrays))]  # the least recently used
            return found

    def window(self, stem: str, start: int, window_samples: int):
        signals, labels = self.arrays(stem)
        return cut_window(signals, labels, int(start), window_samples)

    def window_table(self, stems: list[str], spec: WindowSpec) -> dict[str, np.ndarray]:
        """All windows of the given recordings: record index, start, seizure samples, class."""
        record, starts, seizure, classes = [], [], [], []
        for i, stem in enumerate(stems):
            _, labels = self.arrays(stem)
            s = window_starts(len(labels), spec)
            k = seizure_samples_per_window(labels, s, spec.window_samples)
            record.append(np.full(len(s), i, np.int64))
            starts.append(s)
            seizure.append(k)
            classes.append(window_classes(k, spec.window_samples))
        cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
        return {
            "record": cat(record, np.int64),
            "start": cat(starts, np.int64),
            "seizure_samples": cat(seizure, np.int64),
            "class": cat(classes, np.int8),
        }

    def batch(self, stems: list[str], table: dict, rows: np.ndarray, window_samples: int):
        """Stack windows into x (B, C, W) float32, y (B, W) uint8, valid (B, W) bool."""
        parts = [self.window(stems[table["record"][r]], table["start"][r], window_samples) for r in rows]
        return tuple(np.stack(p) for p in zip(*parts, strict=True))

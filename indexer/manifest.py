"""The index folder's layout and its manifest: one typed :class:`Manifest`, read and written here only.

::

    INDEX/manifest.json    format_version, configs, SoundFont, composers, counts, FAISS type, k,
                           novelty threshold (and one per calibrated k) and its calibration,
                           training summary, warnings, encoder sha256
    INDEX/index.faiss      FAISS index; ids = the clip table's clip_id
    INDEX/clips.parquet    clip_id, track_id, composer, work, path, sha256, notes_sha256, start_s, dur_s
      or INDEX/clips/part-00000.parquet ...   the same table in parts (large indexes)
    INDEX/encoder.pt       the encoder's state_dict, loaded with weights_only=True

Format 3 (this version) adds the clip table in parts and, in the manifest's ``faiss`` entry, how
the index kind was chosen, its parameters, its bytes per vector and the recall@10 it costs; format
2 indexes (one ``clips.parquet``, no such fields) still load.

The JSON keeps the field names and order every earlier version wrote, so an index built before
this module existed loads, and a build writes the same bytes as before.  A field an older index
lacks is ``None`` here and stays absent when the manifest is written again; a top-level key this
version does not know is kept in :attr:`Manifest.extra`.  A field of the wrong type is refused on
load with one line naming it (:func:`read_manifest`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from musicidx.encoder.config import FeatureConfig, ModelConfig, TrainConfig
from musicidx.encoder.errors import MusicIdxError
from musicidx.encoder.recipe import Recipe

from .records import FieldError, Fields, Record, read, schema, write

#: 2: clips.parquet has ``notes_sha256``, the fingerprint of each track's notes.
#: 3: the clip table may be a folder of Parquet parts; the manifest's ``faiss`` entry gains
#:    ``chosen``, ``params``, ``bytes_per_vector`` and ``recall_at_10``.
FORMAT_VERSION = 3
#: The oldest format this version reads.
OLDEST_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
CLIPS_DIR = "clips"
ENCODER_FILE = "encoder.pt"
INDEX_FILES = (MANIFEST, FAISS_FILE, CLIPS_FILE, CLIPS_DIR, ENCODER_FILE)
#: How the build describes a calibration made on trained works (``novelty.calibrated_on.how``).
SEEN_IN_TRAINING_HOW = "no work could be held out"


class IndexFormatError(MusicIdxError):
    """An index directory that is missing, damaged, or of a format this version cannot read."""


def package_version() -> str:
    try:
        return metadata.version("musicidx")
    except metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class SoundFontRecord(Record):
    """The SoundFont the index was rendered with, and how much audio the build rendered."""

    KEY: ClassVar[str] = "soundfont"
    name: str
    path: str
    sha256: str
    rendered_seconds: float | None = None


@dataclass(frozen=True)
class Counts(Record):
    KEY: ClassVar[str] = "counts"
    tracks: int
    clips: int
    works: int


@dataclass(frozen=True)
class Recall(Record):
    """The recall@10 an index costs, measured at build time on its own vectors."""

    KEY: ClassVar[str] = "faiss.recall_at_10"
    value: float
    k: int
    queries: int
    how: str


@dataclass(frozen=True)
class FaissEntry(Record):
    """The ANN index: its kind and metric; from format 3 also how the kind was chosen, its
    parameters, the bytes per vector in memory and memory-mapped, and its recall@10."""

    KEY: ClassVar[str] = "faiss"
    type: str
    metric: str
    ntotal: int
    chosen: str | None = None
    params: dict[str, Any] | None = None
    bytes_per_vector: float | None = None
    mapped_bytes_per_vector: float | None = None
    recall_at_10: Recall | None = None


@dataclass(frozen=True)
class CalibratedOn(Record):
    """The tracks the novelty thresholds were calibrated on."""

    KEY: ClassVar[str] = "novelty.calibrated_on"
    tracks: int
    works: int
    how: str | None = None
    track_ids: tuple[int, ...] | None = None  # ``add`` recalibrates on these and the tracks it adds
    seen_in_training: bool | None = None

    @property
    def on_trained_works(self) -> bool:
        """Calibrated on works the encoder trained on (older indexes say so only in ``how``)."""
        return bool(self.seen_in_training) or (self.how or "").startswith(SEEN_IN_TRAINING_HOW)


@dataclass(frozen=True)
class Novelty(Record):
    """The novelty threshold at the index's k, one per calibrated k, and how they were calibrated.

    ``calibrated`` and ``uncalibrated_reason`` are written together; ``calibrated`` ``None``: an
    older index, judged by its ``calibrated_on`` counts (:meth:`calibration`)."""

    KEY: ClassVar[str] = "novelty"
    TOGETHER: ClassVar[dict[str, str]] = {"uncalibrated_reason": "calibrated"}
    threshold: float
    thresholds_by_k: dict[int, float] | None = None  # JSON keys are strings
    statistic: str | None = None
    accept_rate: float | None = None
    calibrated_on: CalibratedOn | None = None
    calibrated: bool | None = None
    uncalibrated_reason: str | None = None
    min_calibration: dict[str, int] | None = None

    def calibration(self) -> tuple[bool, str | None]:
        """(calibrated, why not): whether the threshold may back a "new composer?" verdict (see
        :func:`~musicidx.indexer.calibration.calibration_shortfall`).  An index that records the
        answer is taken at its word; an older one is judged by its ``calibrated_on`` counts; one
        recording no calibration at all by nothing."""
        from .calibration import calibration_shortfall

        if self.calibrated is not None:
            return self.calibrated, self.uncalibrated_reason
        on = self.calibrated_on
        if on is None:
            return True, None
        reason = calibration_shortfall(on.tracks, on.works, seen_in_training=on.on_trained_works)
        return reason is None, reason

    def to_dict(self) -> dict[str, Any]:
        d = write(self)
        if self.thresholds_by_k is not None:
            d["thresholds_by_k"] = {str(k): t for k, t in self.thresholds_by_k.items()}
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "novelty") -> Novelty:
        n = read(cls, data, where)
        try:
            by_k = None if n.thresholds_by_k is None else {int(k): float(t) for k, t in n.thresholds_by_k.items()}
        except (TypeError, ValueError) as e:
            raise FieldError(f"{where}.thresholds_by_k is {n.thresholds_by_k!r}, not numbers by k") from e
        return dataclasses.replace(n, thresholds_by_k=by_k)


@dataclass(frozen=True)
class Validation(Record):
    """The held-out validation of the build: accuracy (``None`` when nothing was held out), and
    ``majority_baseline``: what always answering the composer with most training tracks scores
    (``composer``, ``accuracy``, ``balanced_accuracy``)."""

    KEY: ClassVar[str] = "validation"
    tracks: int
    accuracy: float | None
    balanced_accuracy: float | None
    majority_baseline: dict[str, Any] | None = None
    single_work_composers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EncoderOrigin(Record):
    """Where the encoder came from: trained in the build (``name`` None), or the shipped
    pretrained weights ``name`` (their sha256, pieces, classes, steps), frozen, fine-tuned, or
    with its last layer retrained (``head``; absent from indexes written before it existed)."""

    KEY: ClassVar[str] = "encoder"
    name: str | None
    sha256: str | None = None
    pieces: int | None = None
    classes: int | None = None
    steps: int | None = None
    finetuned: bool | None = None
    head: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": None, "trained_in_build": True} if self.name is None else write(self)


@dataclass(frozen=True)
class TrainingRecord(Record):
    """The training config the encoder was trained with, its best epoch and every epoch's figures
    (written as one object: the config's fields, ``best_epoch``, ``history``)."""

    KEY: ClassVar[str] = "training"
    config: TrainConfig
    best_epoch: int
    history: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "best_epoch": self.best_epoch, "history": self.history}

    @classmethod
    def from_dict(cls, data: Any, where: str = "training") -> TrainingRecord:
        f = Fields(data, where)
        config = TrainConfig.from_dict({k: v for k, v in f.data.items() if k not in ("best_epoch", "history")})
        return cls(config, f.get("best_epoch", "an integer"), f.get("history", "a list"))


@dataclass(frozen=True)
class RayRecord(Record):
    """The Ray cluster a ``build --ray`` ran its parallel stages on."""

    KEY: ClassVar[str] = "ray"
    nodes: int
    cpus: int
    started_locally: bool


@dataclass(frozen=True)
class Enrolment(Record):
    """One ``musicidx add``: when, and what it added."""

    KEY: ClassVar[str] = "enrolled[]"
    when: str
    tracks: int
    clips: int
    new_composers: tuple[str, ...]


@dataclass(frozen=True)
class Skipped(Record):
    """A file the build could not use, and why."""

    KEY: ClassVar[str] = "skipped[]"
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Manifest(Record):
    """Everything ``manifest.json`` holds, fields in the order they are written (the order they
    were added over the versions).  The fields without a default every readable index has; the
    others are ``None`` in an index written before they existed (and ``ray``, ``encoder_sha256``
    and ``enrolled`` until a ``--ray`` build, the save or an ``add`` records them)."""

    format_version: int
    musicidx_version: str | None = None
    created: str | None = None
    recipe: Recipe | None = None  # the whole recipe of the build
    features: FeatureConfig
    model: ModelConfig
    encoder: EncoderOrigin | None = None
    training: TrainingRecord | None = None
    embedding_dim: int
    soundfont: SoundFontRecord
    composers: dict[str, int]  # tracks per composer, sorted by name
    counts: Counts
    faiss: FaissEntry
    k: int
    novelty: Novelty
    validation: Validation | None = None
    warnings: tuple[str, ...] | None = None
    skipped: tuple[Skipped, ...] | None = None
    corpus_root: str | None = None  # what the clip table's paths are relative to
    ray: RayRecord | None = None
    encoder_sha256: str | None = None  # of encoder.pt: set by the save
    enrolled: tuple[Enrolment, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys this version does not know, kept

    def novelty_thresholds(self) -> dict[int, float]:
        """The novelty thresholds the index calibrated, by k, sorted (``novelty.thresholds_by_k``;
        an index written before that field has the one for its own ``k``)."""
        by_k = self.novelty.thresholds_by_k or {self.k: self.novelty.threshold}
        return {k: float(t) for k, t in sorted(by_k.items())}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return {**write(self), **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Manifest:
        """The manifest of JSON object ``data``; :class:`IndexFormatError` ("manifest.json is
        missing or has bad fields (...)") naming the first field that is missing or of a wrong type."""
        try:
            m = read(cls, data, where)
        except (FieldError, MusicIdxError, TypeError, ValueError) as e:  # or a config that does not construct
            raise IndexFormatError(f"{MANIFEST} is missing or has bad fields ({e})") from e
        known = {name for name, *_ in schema(cls)}
        return dataclasses.replace(m, extra={k: v for k, v in data.items() if k not in known})


def read_manifest(folder: Path) -> Manifest:
    """The manifest of index folder ``folder``, checked: valid JSON, an integer ``format_version``
    this version reads, and every field of its type; else :class:`IndexFormatError` in one line
    naming the file (or, for a version this musicidx cannot read, the folder) and the reason."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{MANIFEST} is not valid JSON ({e})", path=path) from e
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexFormatError(f"{MANIFEST} has no integer format_version", path=path)
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index format_version {version} is newer than this musicidx reads ({FORMAT_VERSION}); upgrade musicidx",
            path=folder,
        )
    if version < OLDEST_FORMAT_VERSION:
        raise IndexFormatError(f"index format_version {version} is too old; rebuild it", path=folder)
    try:
        return Manifest.from_dict(data)
    except IndexFormatError as e:
        raise IndexFormatError(e.reason, path=path) from e


def write_manifest(manifest: Manifest, folder: Path) -> None:
    """Write ``folder/manifest.json``: two-space indented JSON, keys in :class:`Manifest` order."""
    (folder / MANIFEST).write_text(manifest.to_json())


def is_index_dir(path: str | Path) -> bool:
    """True when ``path`` holds a musicidx manifest (a dict with an integer ``format_version``
    and the ``features`` and ``model`` configs), whatever the state of its other files."""
    try:
        m = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(m, dict)
        and isinstance(m.get("format_version"), int)
        and isinstance(m.get("features"), dict)
        and isinstance(m.get("model"), dict)
    )

"""Audio clips -> log-magnitude constant-Q spectrograms with nnAudio's CQT on the CPU.

nnAudio's ``CQT1992v2`` computes the CQT as a strided convolution with complex kernels.  Making
those kernels is the expensive part of using it in a short-lived process: importing nnAudio
pulls in ``scipy.signal`` (about 0.5 s).  So the kernels nnAudio makes are stored once in the
cache (``$XDG_CACHE_HOME/musicidx/cqt-v1``), and later processes apply them with the same
convolution as ``CQT1992v2.forward`` (centre padding by reflection, librosa normalisation, magnitude) without
importing nnAudio.  A test checks that both paths give the same numbers.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from .config import FeatureConfig, default_cache_dir

#: The log-CQT is ``log(magnitude + LOG_FLOOR)``: the floor keeps silence finite (about -9.2).
LOG_FLOOR = 1e-4
_KERNELS_VERSION = 1
_LAYERS: dict[str, Any] = {}


def nnaudio_layer(cfg: FeatureConfig) -> Any:
    """A fresh nnAudio ``CQT1992v2`` layer for ``cfg`` (magnitude output, silent)."""
    from nnAudio.features import CQT1992v2

    return CQT1992v2(
        sr=cfg.sample_rate,
        hop_length=cfg.hop_length,
        fmin=cfg.fmin,
        n_bins=cfg.n_bins,
        bins_per_octave=cfg.bins_per_octave,
        output_format="Magnitude",
        verbose=False,  # nnAudio prints otherwise, and stdout may carry CSV or JSON
    ).eval()


class KernelCQT:
    """``CQT1992v2``'s forward pass (magnitude, librosa normalisation, centre padding by
    reflection, nnAudio's default) applied with kernels taken from an nnAudio layer."""

    def __init__(self, real: Any, imag: Any, lengths: Any, kernel_width: int, hop_length: int) -> None:
        self.real, self.imag, self.lengths = real, imag, lengths
        self.kernel_width, self.hop_length = kernel_width, hop_length

    @classmethod
    def from_nnaudio(cls, layer: Any) -> KernelCQT:
        if layer.pad_mode != "reflect" or not layer.center:
            raise ValueError("only nnAudio's default centre padding by reflection is supported")
        return cls(layer.cqt_kernels_real, layer.cqt_kernels_imag, layer.lenghts, layer.kernel_width, layer.hop_length)

    def __call__(self, x: Any) -> Any:
        import torch
        from torch.nn.functional import conv1d, pad

        x = pad(x[:, None, :], (self.kernel_width // 2, self.kernel_width // 2), mode="reflect")
        scale = torch.sqrt(self.lengths.view(-1, 1))
        real = conv1d(x, self.real, stride=self.hop_length) * scale
        imag = -conv1d(x, self.imag, stride=self.hop_length) * scale
        return torch.sqrt(real.pow(2) + imag.pow(2))  # nnAudio's "Magnitude" for a non-trainable layer


def cqt_layer(cfg: FeatureConfig) -> KernelCQT:
    """The process's CQT for ``cfg``: kernels from the cache, else made by nnAudio and cached."""
    import torch

    key = cfg.digest()
    if key in _LAYERS:
        return _LAYERS[key]
    path = default_cache_dir() / f"cqt-v{_KERNELS_VERSION}" / f"{key}.pt"
    layer = None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        layer = KernelCQT(d["real"], d["imag"], d["lengths"], int(d["kernel_width"]), int(d["hop_length"]))
    except Exception:  # missing or damaged (torch.load raises EOFError, UnpicklingError...): remake
        layer = KernelCQT.from_nnaudio(nnaudio_layer(cfg))
        _store(path, layer)
    _LAYERS[key] = layer
    return layer


def _store(path: Any, layer: KernelCQT) -> None:
    import torch

    data = {"real": layer.real, "imag": layer.imag, "lengths": layer.lengths}
    data.update(kernel_width=torch.tensor(layer.kernel_width), hop_length=torch.tensor(layer.hop_length))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the next process the nnAudio import


def cqt_features(audio: np.ndarray, cfg: FeatureConfig, *, batch: int = 32) -> np.ndarray:
    """``(n, clip_samples)`` float32 audio -> ``(n, n_bins, frames_per_clip)`` float32 log-CQT."""
    import torch

    if audio.ndim != 2 or audio.shape[1] != cfg.clip_samples:
        raise ValueError(f"expected audio of shape (n, {cfg.clip_samples}), got {audio.shape}")
    layer = cqt_layer(cfg)
    out = np.empty((len(audio), cfg.n_bins, cfg.frames_per_clip), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(audio), batch):
            mag = layer(torch.from_numpy(np.ascontiguousarray(audio[i : i + batch])))
            out[i : i + batch] = torch.log(mag + LOG_FLOOR).numpy()
    return out

"""Marks every generated frame as generated: an invisible watermark and a visible "AI-generated" badge.

The invisible mark is a spread-spectrum pattern added to the luma (the same value to R, G and B, so
colour is untouched): one periodic 128x128 tile, repeated 4 times across the frame's shorter side,
band-limited so that it survives H.264/VP8 at call bitrates and rescaling. It sums a pilot
(detection and alignment) and 4 message patterns, each cyclically shifted against the pilot by one
of 1,024 shifts: 10 bits each, 40 in all, a 24-bit run id and a 16-bit CRC over the project tag
and the run id. Detection normalizes local contrast, folds the image onto one tile (averaging the
picture out), whitens it, finds the pilot by cyclic correlation (every shift at once, so crops do
not matter) over a small search of scales (rescaled or cropped inputs) and both mirror images,
then reads each message pattern's shift relative to the pilot. Embedding is two saturating uint8
adds of a precomputed pattern.

The method and its seed are public: this marks honest use and catches careless misuse; it does not
resist someone who studies this file and removes the pattern on purpose.
"""

from __future__ import annotations

import binascii
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "BADGE_TEXT",
    "FOUND_SCORE",
    "TAG",
    "Detection",
    "Marker",
    "VideoDetection",
    "detect",
    "detect_frames",
    "new_run_id",
]

TAG = "FlowVQ"  # the project tag; the payload's CRC covers it, so another tag does not decode
BADGE_TEXT = "AI-generated"

_TILE = 128  # px: the pattern's period at the canonical scale (a 512 px frame)
_TILES_PER_SIDE = 4  # the period is the frame's shorter side / 4: scale-free across frame sizes
_BAND = (3.0, 20.0)  # FFT bins of the tile: 3/128 .. 5/32 cycles per pixel at 512 px
_SEED = 0x464C4F57  # "FLOW": the pattern is public and fixed, so any copy of this code can verify
_STRENGTH = 2.4  # RMS of the added luma pattern in 8-bit levels (PSNR about 40.6 dB)
_PILOT_SHARE = 1 / 3  # fraction of the pattern's power in the pilot; the rest carries the symbols
_NUM_SYMBOLS = 4
_SHIFT_STEP = 4  # px between the 32 x 32 allowed shifts of a message pattern: 10 bits per symbol
_SYMBOL_BITS = 10
_RUN_ID_BITS = 24
_CRC_BITS = 16
_LOCAL_SIGMA = 1 / 8  # of the tile period: the detector's local-contrast window
_LOCAL_FLOOR = 2.0  # luma levels added to the local contrast, so flat areas are not blown up
# Scale search: the tile period is the shorter side / 4 times one of these (a crop of up to ~12% of
# the frame, kept at its pixel size, makes the period look larger than side / 4).
_SCALES = tuple(1.0 + 0.01 * i for i in range(-2, 14))
_REFINE = (-0.005, 0.005)
FOUND_SCORE = 8.0  # pilot peak (standard deviations over all shifts) that alone says "marked"
_Z_PAYLOAD = 5.5  # a pilot peak this high plus a valid payload says "marked"
# The best pilot peak of an unmarked image (a maximum over all shifts, scales and both mirror
# images) follows a Gumbel law; fitted to 600 unmarked frames (photos, renders, coded renders:
# median 4.64, 90% 5.00, 99% 5.32, max 5.45) and rounded up, so the tail it predicts is
# conservative (99% at 5.75): about 1e-6 at 8.0.
_NULL_LOCATION = 4.6
_NULL_SCALE = 0.25


def new_run_id() -> int:
    """A random 24-bit run id."""
    return secrets.randbits(_RUN_ID_BITS)


def _crc(run_id: int) -> int:
    """CRC-16/CCITT over the tag and the run id (3 bytes, big-endian)."""
    return binascii.crc_hqx(TAG.encode() + run_id.to_bytes(3, "big"), 0xFFFF)


def _symbols(run_id: int) -> list[int]:
    """The 40-bit word (run id, CRC) as 4 symbols of 10 bits, most significant first."""
    word = (run_id << _CRC_BITS) | _crc(run_id)
    mask = (1 << _SYMBOL_BITS) - 1
    return [(word >> (_SYMBOL_BITS * i)) & mask for i in reversed(range(_NUM_SYMBOLS))]


def _parse_symbols(symbols: list[int]) -> int | None:
    """The run id if the symbols hold a run id with a matching CRC, else None."""
    word = 0
    for s in symbols:
        word = (word << _SYMBOL_BITS) | s
    run_id, crc = word >> _CRC_BITS, word & ((1 << _CRC_BITS) - 1)
    return run_id if _crc(run_id) == crc else None


def _symbol_shift(symbol: int) -> tuple[int, int]:
    per_axis = _TILE // _SHIFT_STEP  # 32
    return _SHIFT_STEP * (symbol // per_axis), _SHIFT_STEP * (symbol % per_axis)


def _shift_symbol(dy: int, dx: int) -> int:
    per_axis = _TILE // _SHIFT_STEP
    row = round(dy / _SHIFT_STEP) % per_axis
    col = round(dx / _SHIFT_STEP) % per_axis
    return row * per_axis + col


def _rings(n: int) -> np.ndarray:
    """(n, n // 2 + 1) int: the radius of each rfft2 bin, rounded (its ring)."""
    fy = np.fft.fftfreq(n) * n
    fx = np.fft.rfftfreq(n) * n
    return np.rint(np.hypot(fy[:, None], fx[None, :])).astype(np.int64)


class _Patterns(NamedTuple):
    pilot: np.ndarray  # (TILE, TILE) float32, unit RMS
    messages: np.ndarray  # (NUM_SYMBOLS, TILE, TILE) float32, unit RMS each
    pilot_spectrum: np.ndarray  # rfft2 of the pilot, unit magnitude in the band
    message_spectra: np.ndarray  # (NUM_SYMBOLS, TILE, TILE // 2 + 1)
    mask: np.ndarray  # (TILE, TILE // 2 + 1) bool: the band
    rings: np.ndarray  # (TILE, TILE // 2 + 1) int
    ring_counts: np.ndarray


def _make_patterns() -> _Patterns:
    """Random-phase patterns with a flat spectrum inside the band, periodic over the tile."""
    rng = np.random.default_rng(_SEED)
    rings = _rings(_TILE)
    radius = np.hypot(np.fft.fftfreq(_TILE)[:, None], np.fft.rfftfreq(_TILE)[None, :]) * _TILE
    mask = (radius >= _BAND[0]) & (radius <= _BAND[1])
    spectra = []
    for _ in range(1 + _NUM_SYMBOLS):
        spectrum = np.fft.rfft2(rng.standard_normal((_TILE, _TILE)))
        spectra.append(np.where(mask, spectrum / np.maximum(np.abs(spectrum), 1e-12), 0.0))
    tiles = np.fft.irfft2(np.stack(spectra), s=(_TILE, _TILE))
    scale = 1.0 / tiles.std(axis=(1, 2), keepdims=True)
    tiles = (tiles * scale).astype(np.float32)
    spectra = np.stack(spectra) * scale
    return _Patterns(tiles[0], tiles[1:], spectra[0], spectra[1:], mask, rings, np.bincount(rings.ravel()))


_PATTERNS = _make_patterns()


def _tile_for(run_id: int) -> np.ndarray:
    """(TILE, TILE) float32: the luma pattern carrying ``run_id``, with RMS _STRENGTH."""
    message = sum(
        np.roll(pattern, _symbol_shift(symbol), axis=(0, 1))
        for pattern, symbol in zip(_PATTERNS.messages, _symbols(run_id), strict=True)
    )
    message = message / np.sqrt(_NUM_SYMBOLS)
    tile = np.sqrt(_PILOT_SHARE) * _PATTERNS.pilot + np.sqrt(1.0 - _PILOT_SHARE) * message
    return (tile * (_STRENGTH / tile.std())).astype(np.float32)


def _period(height: int, width: int) -> float:
    return min(height, width) / _TILES_PER_SIDE


def _frame_pattern(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) float32: the tile resized to the frame's period and repeated over the frame."""
    period = max(8, round(_period(height, width)))
    if period != _TILE:
        # Resize a wrapped copy and cut the middle: the resized tile stays seamless when repeated.
        pad = 8
        wrapped = np.pad(tile, pad, mode="wrap")
        size = round((_TILE + 2 * pad) * period / _TILE)
        interp = cv2.INTER_AREA if period < _TILE else cv2.INTER_CUBIC
        resized = cv2.resize(wrapped, (size, size), interpolation=interp)
        cut = round(pad * period / _TILE)
        tile = resized[cut : cut + period, cut : cut + period]
        tile = tile * (_STRENGTH / tile.std())
    reps = (-(-height // period), -(-width // period))
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


# --- the visible badge ---------------------------------------------------------------------------


class _Badge(NamedTuple):
    rows: slice
    cols: slice
    alpha: np.ndarray  # (h, w, 1) float32 in [0, 1]: coverage of the badge over the frame
    color: np.ndarray  # (h, w, 3) float32: the badge's own pixels (premultiplied by alpha)


def _make_badge(height: int, width: int) -> _Badge:
    """A small translucent dark pill with white "AI-generated" text, bottom-right corner."""
    side = min(height, width)
    scale = max(0.3, side / 1400)  # about 2.5% of the frame's height for the text
    thickness = 1
    font = cv2.FONT_HERSHEY_SIMPLEX
    up = 4  # drawn at 4x and shrunk: antialiased text and rounded corners
    (text_w, text_h), baseline = cv2.getTextSize(BADGE_TEXT, font, scale * up, thickness * up)
    text_w, text_h, baseline = -(-text_w // up), -(-text_h // up), -(-baseline // up)
    pad = max(3, round(text_h * 0.5))
    box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    margin = max(4, round(side * 0.015))
    box_w, box_h = min(box_w, width - margin), min(box_h, height - margin)
    y0, x0 = height - margin - box_h, width - margin - box_w
    bg = np.zeros((box_h * up, box_w * up), np.uint8)
    radius = min(box_h * up // 2, 6 * up)
    cv2.rectangle(bg, (radius, 0), (box_w * up - radius, box_h * up), 255, -1)
    cv2.rectangle(bg, (0, radius), (box_w * up, box_h * up - radius), 255, -1)
    for cx in (radius, box_w * up - radius - 1):
        for cy in (radius, box_h * up - radius - 1):
            cv2.circle(bg, (cx, cy), radius, 255, -1, lineType=cv2.LINE_AA)
    ink = np.zeros_like(bg)
    org = (pad * up, (pad + text_h) * up)
    cv2.putText(ink, BADGE_TEXT, org, font, scale * up, 255, thickness * up, lineType=cv2.LINE_AA)
    bg = cv2.resize(bg, (box_w, box_h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    ink = cv2.resize(ink, (box_w, box_h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    bg_alpha = 0.55 * bg
    alpha = np.clip(bg_alpha + ink * (1 - bg_alpha), 0, 1)
    # Premultiplied: dark background (value 20) under white ink (235).
    color = bg_alpha * (1 - ink) * 20 + ink * 235
    return _Badge(
        slice(y0, y0 + box_h), slice(x0, x0 + box_w), alpha[..., None], np.repeat(color[..., None], 3, -1)
    )


# --- the marker ----------------------------------------------------------------------------------


class _Prepared(NamedTuple):
    plus: np.ndarray  # (H, W, 3) uint8: the positive part of the pattern
    minus: np.ndarray  # (H, W, 3) uint8: the negative part
    badge: _Badge | None


class Marker:
    """Applies the invisible watermark (and, by default, the visible badge) to RGB uint8 frames.

    ``apply`` is stateless per frame and thread-safe: the pattern and the badge are built once per
    frame size (first call, under a lock) and only read afterwards. About 0.1 ms per 512x512 frame
    on one thread (``python -m bench.watermark``).

    Args:
        run_id: the 24-bit id of this run, carried in the payload (default: random).
        badge: draw the visible "AI-generated" badge in the bottom-right corner.
    """

    def __init__(self, run_id: int | None = None, *, badge: bool = True) -> None:
        if run_id is None:
            run_id = new_run_id()
        if isinstance(run_id, bool) or not isinstance(run_id, int | np.integer):
            raise TypeError(f"run_id must be an int, got {type(run_id).__name__}")
        if not 0 <= run_id < 1 << _RUN_ID_BITS:
            raise ValueError(f"run_id must be in [0, 2**{_RUN_ID_BITS}), got {run_id}")
        self.run_id = int(run_id)
        self.badge = bool(badge)
        self._tile = _tile_for(self.run_id)
        self._prepared: dict[tuple[int, int], _Prepared] = {}
        self._lock = threading.Lock()

    @property
    def payload(self) -> str:
        """What ``detect`` reports for frames this marker made, e.g. ``"FlowVQ:3fa2c1"``."""
        return _format_payload(self.run_id)

    def prepare(self, height: int, width: int) -> None:
        """Builds the pattern for one frame size now (otherwise the first ``apply`` of that size does)."""
        self._get(height, width)

    def _get(self, height: int, width: int) -> _Prepared:
        prepared = self._prepared.get((height, width))
        if prepared is not None:
            return prepared
        with self._lock:
            prepared = self._prepared.get((height, width))
            if prepared is None:
                pattern = np.rint(_frame_pattern(self._tile, height, width))
                plus = np.repeat(np.clip(pattern, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
                minus = np.repeat(np.clip(-pattern, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
                badge = _make_badge(height, width) if self.badge else None
                prepared = _Prepared(plus, minus, badge)
                self._prepared[(height, width)] = prepared
        return prepared

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Returns a marked copy of ``frame`` ((H, W, 3) uint8 RGB); the input is not modified."""
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"expected a numpy.ndarray frame, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise TypeError(f"expected a uint8 frame, got dtype {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 32:
            raise ValueError(f"expected a frame of shape (H, W, 3), at least 32 px, got {frame.shape}")
        prepared = self._get(frame.shape[0], frame.shape[1])
        # Saturating uint8 arithmetic: the same value lands on R, G and B, so only the luma changes.
        out = cv2.add(frame, prepared.plus)
        cv2.subtract(out, prepared.minus, dst=out)
        if prepared.badge is not None:
            b = prepared.badge
            roi = out[b.rows, b.cols]
            roi[...] = (roi * (1 - b.alpha) + b.color + 0.5).astype(np.uint8)
        return out


# --- detection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """The watermark in one image.

    found: the mark is present. payload: ``"FlowVQ:<run id, 6 hex digits>"`` when the symbols
    decode with a matching CRC (None when not found, or found by the pilot alone). confidence:
    1 - the estimated chance that an unmarked image shows this much evidence (pilot peak, and the
    16-bit CRC when the payload decodes); only meaningful near 1 (unmarked images often reach
    0.9). score: the pilot's correlation peak in standard deviations over all shifts (unmarked
    images: about 4-5.5; "found" needs 8, or 5.5 with a valid payload). false_alarm: that
    estimated chance itself (1 - confidence, without the rounding).
    scale: the tile period found, relative to the image's shorter side / 4 (1.0 for an image that
    was only rescaled; about 1/0.95 for a 5% crop kept at its pixel size).
    """

    found: bool
    payload: str | None
    confidence: float
    score: float
    scale: float
    false_alarm: float = 1.0

    @property
    def run_id(self) -> int | None:
        return None if self.payload is None else int(self.payload.rsplit(":", 1)[1], 16)


@dataclass(frozen=True)
class VideoDetection:
    """The watermark over a video's frames: found when any checked frame is marked.

    payload: the most common payload among the frames; confidence and score: the highest of any
    frame (false_alarm: the lowest); frames_found / frames_checked: how many of the checked frames
    carried the mark.
    """

    found: bool
    payload: str | None
    confidence: float
    frames_found: int
    frames_checked: int
    score: float = 0.0
    false_alarm: float = 1.0


def _format_payload(run_id: int) -> str:
    return f"{TAG}:{run_id:06x}"


def _luma(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy.ndarray image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    else:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if min(gray.shape) < 32:
        raise ValueError(f"image too small to hold the mark: {gray.shape}")
    return gray.astype(np.float32)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` px, computed at 1/4 resolution (20x cheaper than at full size)."""
    height, width = image.shape
    small = cv2.resize(image, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / 4, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _normalize_contrast(luma: np.ndarray) -> np.ndarray:
    """High-passed luma divided by its local contrast, so busy areas do not drown the flat ones."""
    sigma = _LOCAL_SIGMA * _period(*luma.shape)
    high = luma - _smooth(luma, sigma)
    contrast = np.sqrt(_smooth(high * high, sigma))
    return high / (contrast + _LOCAL_FLOOR)


def _fold(image: np.ndarray, scale: float) -> np.ndarray:
    """Resamples ``image`` so the pattern's period becomes _TILE px, then averages it onto one tile."""
    height, width = image.shape
    factor = _TILE / (_period(height, width) * scale)
    new_w, new_h = max(_TILE // 2, round(width * factor)), max(_TILE // 2, round(height * factor))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    resized -= resized.mean()
    reps_y, reps_x = -(-new_h // _TILE), -(-new_w // _TILE)
    padded = np.zeros((reps_y * _TILE, reps_x * _TILE), np.float32)
    padded[:new_h, :new_w] = resized
    counts = np.zeros_like(padded)
    counts[:new_h, :new_w] = 1
    total = padded.reshape(reps_y, _TILE, reps_x, _TILE).sum(axis=(0, 2))
    count = counts.reshape(reps_y, _TILE, reps_x, _TILE).sum(axis=(0, 2))
    return total / np.maximum(count, 1)


def _whiten(tile: np.ndarray) -> np.ndarray:
    """rfft2 of the tile inside the band, each ring divided by its RMS (the picture's spectrum falls
    steeply with frequency; the pattern's is flat)."""
    spectrum = np.fft.rfft2(tile)
    power = np.bincount(_PATTERNS.rings.ravel(), (np.abs(spectrum) ** 2).ravel())
    ring_rms = np.sqrt(power / np.maximum(_PATTERNS.ring_counts, 1))[_PATTERNS.rings]
    return np.where(_PATTERNS.mask, spectrum / np.maximum(ring_rms, 1e-9), 0.0)


def _correlate(spectrum: np.ndarray, pattern_spectrum: np.ndarray) -> tuple[float, tuple[int, int]]:
    """(peak in standard deviations over all cyclic shifts, the peak's (dy, dx))."""
    corr = np.fft.irfft2(spectrum * np.conj(pattern_spectrum), s=(_TILE, _TILE))
    peak = int(np.argmax(corr))
    score = float((corr.flat[peak] - corr.mean()) / (corr.std() + 1e-12))
    dy, dx = divmod(peak, _TILE)
    return score, (dy, dx)


class _Candidate(NamedTuple):
    score: float
    scale: float
    shift: tuple[int, int]
    spectrum: np.ndarray


def _pilot_search(image: np.ndarray, scale: float) -> _Candidate:
    spectrum = _whiten(_fold(image, scale))
    score, shift = _correlate(spectrum, _PATTERNS.pilot_spectrum)
    return _Candidate(score, scale, shift, spectrum)


def _read_payload(candidate: _Candidate) -> int | None:
    """Each message pattern's shift relative to the pilot is a symbol; the run id if the CRC holds."""
    symbols = []
    for pattern_spectrum in _PATTERNS.message_spectra:
        _, (dy, dx) = _correlate(candidate.spectrum, pattern_spectrum)
        symbols.append(_shift_symbol(dy - candidate.shift[0], dx - candidate.shift[1]))
    return _parse_symbols(symbols)


def _null_tail(score: float) -> float:
    """The chance that an unmarked image's best pilot peak reaches ``score`` (Gumbel law)."""
    return float(-np.expm1(-np.exp(-(score - _NULL_LOCATION) / _NULL_SCALE)))


def _detect_luma(luma: np.ndarray) -> Detection:
    normalized = _normalize_contrast(luma)
    best = max((_pilot_search(normalized, s) for s in _SCALES), key=lambda c: c.score)
    best = max([best, *(_pilot_search(normalized, best.scale + d) for d in _REFINE)], key=lambda c: c.score)
    run_id = _read_payload(best)
    p_pilot = _null_tail(best.score)
    if run_id is not None and best.score >= _Z_PAYLOAD:
        p_value = p_pilot * 2.0**-_CRC_BITS
        return Detection(True, _format_payload(run_id), 1.0 - p_value, best.score, best.scale, p_value)
    return Detection(best.score >= FOUND_SCORE, None, 1.0 - p_pilot, best.score, best.scale, p_pilot)


def detect(image: np.ndarray) -> Detection:
    """Looks for the watermark in one image ((H, W, 3) uint8 RGB; (H, W) grey or RGBA also work).

    Searches every cyclic shift of the tile and a small set of scales, so rescaled and mildly
    cropped images are found; when that fails, the mirrored image too (a call's self-view is
    mirrored). About 40-60 ms for 512x512, twice that for an unmarked image.
    """
    luma = _luma(image)
    result = _detect_luma(luma)
    if result.found:
        return result
    mirrored = _detect_luma(np.ascontiguousarray(luma[:, ::-1]))
    if mirrored.found:
        return mirrored
    # The null law above was fitted to the stronger of these two looks.
    return max(result, mirrored, key=lambda r: r.score)


def detect_frames(frames: Iterable[np.ndarray], *, stop_after: int | None = None) -> VideoDetection:
    """Runs ``detect`` on every frame and aggregates (see VideoDetection).

    stop_after: stop reading frames once this many carry the same payload.
    """
    checked = found = 0
    confidence = score = 0.0
    false_alarm = 1.0
    payloads: dict[str, int] = {}
    for frame in frames:
        result = detect(frame)
        checked += 1
        confidence = max(confidence, result.confidence)
        score = max(score, result.score)
        false_alarm = min(false_alarm, result.false_alarm)
        if result.found:
            found += 1
            if result.payload is not None:
                payloads[result.payload] = payloads.get(result.payload, 0) + 1
                if stop_after is not None and payloads[result.payload] >= stop_after:
                    break
    payload = max(payloads, key=lambda p: payloads[p]) if payloads else None
    return VideoDetection(found > 0, payload, confidence, found, checked, score, false_alarm)

"""Reading existing PNG/JPEG images and turning them into features.

Images that were not drawn by the tool (or were drawn by ``deepspectrum plot``) can be
fed to the same networks.  Every image becomes an RGB uint8 array at its own size, the
form :func:`~deep_spectrum_extractor.images.plotting.plot_matrix` returns:

* RGB is used as is;
* an alpha channel is dropped (not blended with a background), as the plot path drops
  the alpha channel of matplotlib's PNG;
* greyscale is expanded to three equal channels; 16-bit greyscale is scaled to 8 bits
  (``round(v / 257)``);
* palette, CMYK and other modes are converted by Pillow.

The pixels are taken as stored: EXIF orientation tags are not applied.  The networks
resize their input inside the graph, so images of any size can be fed; images of equal
size are batched together (:func:`image_features`).
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import ImageError

#: Extensions searched for in an input folder (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")




def find_image_files(path: str | os.PathLike) -> list[Path]:
    """PNG and JPEG files under ``path`` (recursively, extension case-insensitive), sorted.

    Parameters
    ----------
    path : path-like
        A folder, or one image file (returned as is, whatever its extension).

    Returns
    -------
    list of Path
        Sorted by path.  Folders named like images are listed too, so that they are
        reported as unreadable instead of silently ignored.

    Raises
    ------
    ImageError
        If ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise ImageError(f"input {str(path)!r} does not exist")
    found = [Path(root) / name
             for root, dirs, names in os.walk(path)
             for name in names + dirs if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB pixels.

    Parameters
    ----------
    path : path-like
        Any image Pillow can decode (PNG and JPEG in particular).

    Returns
    -------
    np.ndarray [shape=(height, width, 3), dtype=uint8]

    Raises
    ------
    ImageError
        If the file is missing, a folder, truncated, not an image, or in a mode
        that has no RGB form (32-bit float images); the message gives the reason.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("LA", (4, 2), (100, 7)).save(folder / "grey.png")
    >>> pixels = load_image(folder / "grey.png")
    >>> pixels.shape, pixels.dtype, pixels[0, 0].tolist()
    ((2, 4, 3), dtype('uint8'), [100, 100, 100])
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return _rgb(image)
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can decode") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a possible decompression bomb ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ImageError(f"cannot decode image ({reason})") from exc


def _rgb(image) -> np.ndarray:
    """An opened Pillow image as an ``(h, w, 3)`` uint8 array (see the module docstring)."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        grey = ((values * 2 + 257) // 514).astype(np.uint8)  # round(v / 257), halves up
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if image.mode == "F":
        raise ImageError("32-bit floating-point images have no RGB form; save the image "
                         "as 8-bit PNG or JPEG")
    try:
        rgba = image.convert("RGBA")
    except ValueError as exc:
        raise ImageError(f"image mode {image.mode!r} cannot be converted to RGB") from exc
    return np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8)[:, :, :3])


@dataclass
class ImageFeatures:
    """The feature vector of one image, or why it has none.

    Attributes
    ----------
    index : int
        Position of the image in the input list.
    path : Path
    features : np.ndarray [shape=(n_features,), dtype=float32] or None
    error : str or None
        Reason the image was skipped.
    """

    index: int
    path: Path
    features: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def image_features(files: Sequence[Path], extractor, *, batch_size: int,
                   max_pending: int | None = None) -> Iterator[ImageFeatures]:
    """Features of every image, yielded in input order.

    Images of equal size are batched together: an image waits in the batch of its
    size until that batch holds ``batch_size`` images, or until more than
    ``max_pending`` images are waiting, when the batch holding the oldest waiting image
    is run.  When all images have one size, the batches are consecutive runs of
    ``batch_size`` images in input order, exactly as ``extract_ds_features`` batches
    the chunks of its files.

    Parameters
    ----------
    files : sequence of Path
    extractor : object with ``features(images) -> np.ndarray``
        e.g. :class:`~deep_spectrum_extractor.backend.extractor.FrozenGraphExtractor`;
        called with ``[shape=(n, height, width, 3), dtype=uint8]`` batches.
    batch_size : int
        Most images per network run.
    max_pending : int, optional
        Most images held in memory while waiting for a batch of their size to fill
        (default ``4 * batch_size``).

    Yields
    ------
    ImageFeatures
        One per file, in the order of ``files``; unreadable files come with ``error``
        set (see :func:`load_image`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    limit = max(max_pending or 4 * batch_size, batch_size)
    waiting: dict[tuple[int, ...], list[tuple[ImageFeatures, np.ndarray]]] = {}
    results: collections.deque[ImageFeatures] = collections.deque()
    held = 0

    def run(shape) -> None:
        nonlocal held
        batch = waiting.pop(shape)
        vectors = extractor.features(np.stack([image for _, image in batch]))
        for (result, _), vector in zip(batch, vectors):
            result.features = vector
        held -= len(batch)

    def run_oldest() -> None:
        """Run the batch that holds the oldest image still waiting."""
        oldest = next(r for r in results if r.features is None and r.error is None)
        run(next(shape for shape, batch in waiting.items()
                 if any(result is oldest for result, _ in batch)))

    def finished() -> Iterator[ImageFeatures]:
        while results and (results[0].features is not None or results[0].error is not None):
            yield results.popleft()

    for index, path in enumerate(files):
        result = ImageFeatures(index, Path(path))
        results.append(result)
        try:
            image = load_image(path)
        except ImageError as exc:
            result.error = str(exc)
        else:
            waiting.setdefault(image.shape, []).append((result, image))
            held += 1
            if len(waiting[image.shape]) == batch_size:
                run(image.shape)
            while held > limit:
                run_oldest()
        yield from finished()
    while waiting:  # the rest, the batch of the oldest waiting image first
        run_oldest()
        yield from finished()
    yield from finished()

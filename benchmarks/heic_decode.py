"""What a 12-megapixel iPhone-sized HEIC costs to read, against the same photo as a JPEG (draft and full decode).

HEIC has no reduced-size decode (HEVC decodes every pixel; the thumbnail a phone stores, ~320 px, is smaller than
the 2x margin the eval transform decodes to), so a HEIC photo is always decoded in full. This makes N 4000x3000
photos as benchmarks/phone_photos.py does (real TF-Flowers photos upscaled, with luma noise), saves each as JPEG q90
and as HEIC (pillow-heif, x265 at its default preset, quality 80), then times, per photo, what a DataLoader worker
does for `showdown run`: `load_rgb` at the eval transform's decode side, then the eval transform (224 px). The
median of --repeats reads of every photo, one process, libheif with 1 decoding thread (a worker per core) and with
its default.

    python benchmarks/heic_decode.py --images 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pillow_heif
from PIL import Image

from phone_photos import make_photos
from showdown.data.folder import images_in
from showdown.data.images import FULL_DECODE_ENV, eval_transform, load_rgb
from showdown.data.preprocessing import Preprocessing
from showdown.data.sources import demo_path
from showdown.device import CPU, device_facts


def per_photo(paths: list[Path], repeats: int, full: bool = False) -> float:
    """Median seconds to decode and preprocess one photo as a run's worker does."""
    transform = eval_transform(Preprocessing((3, 224, 224)))
    side = None if full else transform.decode_side
    times = []
    for _ in range(repeats):
        for path in paths:
            start = time.perf_counter()
            transform(load_rgb(path, side))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--photos", default="../shared/datasets/tf_flowers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="docs/benchmarks/heic_decode.json")
    args = parser.parse_args()
    photos = Path(args.photos)
    sources = sorted(images_in(photos) if photos.is_dir() else images_in(demo_path()))
    folder = Path(tempfile.mkdtemp(prefix="heic-"))
    try:
        jpegs = make_photos(sources, args.images, folder, noise=8.0)
        heics = []
        for jpeg in jpegs:
            heics.append(jpeg.with_suffix(".heic"))
            with Image.open(jpeg) as image:
                image.save(heics[-1], quality=80)
        sizes = {kind: statistics.mean(p.stat().st_size for p in paths) / 1e6
                 for kind, paths in (("jpeg", jpegs), ("heic", heics))}
        os.environ.pop(FULL_DECODE_ENV, None)
        rows = {"jpeg draft": per_photo(jpegs, args.repeats), "jpeg full": per_photo(jpegs, args.repeats, full=True)}
        default_threads = pillow_heif.options.DECODE_THREADS
        for threads in (1, default_threads):
            pillow_heif.options.DECODE_THREADS = threads
            rows[f"heic, {threads} decoding thread(s)"] = per_photo(heics, args.repeats)
        print(f"{len(jpegs)} photos 4000x3000: JPEG q90 {sizes['jpeg']:.1f} MB, HEIC q80 {sizes['heic']:.1f} MB; "
              f"pillow-heif {pillow_heif.__version__}, libheif {pillow_heif.libheif_version()}")
        for name, seconds in rows.items():
            print(f"{name:32s} {seconds * 1000:7.0f} ms per photo (decode + preprocess to 224 px)")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        Path(args.json).write_text(json.dumps({
            "machine": device_facts(CPU), "photos": len(jpegs), "megabytes": sizes,
            "pillow_heif": pillow_heif.__version__, "libheif": pillow_heif.libheif_version(),
            "ms_per_photo": {name: round(seconds * 1000, 1) for name, seconds in rows.items()},
            "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

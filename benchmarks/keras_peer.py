"""tl-showdown against the classic Keras transfer-learning loop, each timed end to end in its own process.

Builds a folder of TF-Flowers photos with its own train/ val/ test/ split (seeded, exact duplicate photos left
out), so that both sides train, validate and test on exactly the same files. Then times, process start to exit:

  showdown  `showdown run --data <folder> --models mobilenet_v2 --strategy head --epochs E --patience E`, from
            an empty feature cache: the frozen MobileNetV2 runs once per image, the head trains on stored features
  keras     keras.applications.MobileNetV2, frozen -> GlobalAveragePooling2D -> Dropout(0.2) -> Dense(softmax),
            Adam, `model.fit` for E epochs on a tf.data pipeline from the JPEGs (the frozen base recomputed over
            every training and validation image in every epoch), then `model.evaluate` on the test split

Keras cannot download its ImageNet weights on an offline machine, so it gets the ones showdown uses: the TFLite
MobileNetV2 in --weights-dir, imported into timm by showdown and copied tensor by tensor into the Keras layers.
A separate, untimed Keras process checks that both models give the same pooled features on real photos, and the
benchmark stops unless they do. TensorFlow is needed in the same environment, never by the package itself:

    pip install -r benchmarks/requirements-keras.txt
    python benchmarks/keras_peer.py --photos 500 --epochs 30

showdown runs --repeats times (3), each from an empty feature cache, and its median is quoted: on this 2-core box
one showdown run varies by about ±0.5 s, 5 % of its time. Keras runs once: 280 s varies by far less than 5 %.
The showdown runs are made twice. First with SHOWDOWN_DAEMON=off: each imports torch, timm, ... itself, as a
first run in a fresh shell does. Then as a user's re-runs go by default: with this environment's daemon, which a
first run starts (untimed here: `showdown daemon start`; showdown/daemon.py), holding the imports. Each is still
its own `showdown run` process from an empty feature cache; both medians and ratios are printed (--no-daemon: the
first kind only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
SIDE = 224
CHECK_PHOTOS = 4
TOLERANCE = 1e-3  # largest pooled-feature difference, relative to the largest feature, for "the same weights"


def spread(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def make_folder(source: Path, photos: int, seed: int, folder: Path) -> dict[str, int]:
    """train: `photos` images, val and test a quarter as many each, spread evenly over the classes."""
    rng = random.Random(seed)
    sizes = {split: spread(n, len(CLASSES)) for split, n in
             (("train", photos), ("val", max(len(CLASSES), photos // 4)), ("test", max(len(CLASSES), photos // 4)))}
    seen = set()  # TF-Flowers holds a few byte-identical photos; one copy must not land in two splits
    for c, name in enumerate(CLASSES):
        files = sorted((source / name).glob("*.jpg"))
        rng.shuffle(files)
        distinct = []
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                distinct.append(path)
        for split, counts in sizes.items():
            (folder / split / name).mkdir(parents=True)
            for path in distinct[:counts[c]]:
                shutil.copyfile(path, folder / split / name / path.name)
            distinct = distinct[counts[c]:]
    return {split: sum(counts) for split, counts in sizes.items()}


def export_weights(weights_dir: Path, photos: list[Path], npz: Path) -> str:
    """showdown's MobileNetV2 (conv kernels, batch-norm tensors in forward order) and its pooled features of a few
    photos, for the Keras process to load and check against. Returns where showdown found the weights."""
    import torch
    from PIL import Image

    from showdown.models.backbones import load_backbone

    backbone = load_backbone("mobilenet_v2", weights_dir=weights_dir)
    model = backbone.model.eval()
    arrays, conv = {}, None
    for module in model.modules():  # timm follows every convolution with its batch norm
        if isinstance(module, torch.nn.Conv2d):
            conv = module.weight.detach().numpy()
        elif isinstance(module, torch.nn.BatchNorm2d) and conv is not None:
            i = len(arrays) // 2
            arrays[f"conv{i}"] = conv
            arrays[f"bn{i}"] = np.stack([t.detach().numpy() for t in (
                module.weight, module.bias, module.running_mean, module.running_var + module.eps)])
            conv = None
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR), np.float32)
                       for p in photos]) / 127.5 - 1  # any fixed input will do: both models get the same tensor
    with torch.no_grad():
        features = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.savez(npz, check_images=images, check_features=features, **arrays)
    return backbone.source


def keras_base(npz: Path):
    """keras.applications.MobileNetV2 without its top, carrying the weights in `npz`."""
    import keras

    weights = np.load(npz)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIDE, SIDE, 3))
    pairs, conv = [], None
    for layer in base.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            conv = layer
        elif isinstance(layer, keras.layers.BatchNormalization) and conv is not None:
            pairs.append((conv, layer))
            conv = None
    if len(pairs) != sum(k.startswith("conv") for k in weights.files):
        sys.exit(f"Keras MobileNetV2 has {len(pairs)} conv + BN pairs, the exported model a different count")
    for i, (conv, bn) in enumerate(pairs):
        kernel = weights[f"conv{i}"]  # PyTorch OIHW (depthwise C1HW) -> Keras HWIO (depthwise HWC1)
        kernel = kernel.transpose(2, 3, 0, 1) if isinstance(conv, keras.layers.DepthwiseConv2D) \
            else kernel.transpose(2, 3, 1, 0)
        conv.set_weights([kernel])
        gamma, beta, mean, var_plus_eps = weights[f"bn{i}"]
        bn.set_weights([gamma, beta, mean, var_plus_eps - bn.epsilon])  # same sqrt(var + eps) as PyTorch's
    base.trainable = False
    return base, weights


def keras_check(npz: Path) -> None:
    import keras

    base, weights = keras_base(npz)
    features = keras.ops.convert_to_numpy(keras.layers.GlobalAveragePooling2D()(base(weights["check_images"])))
    expected = weights["check_features"]
    difference = float(np.abs(features - expected).max())
    print(f"weight transfer check: pooled features of {len(expected)} photos, max |keras - showdown| "
          f"{difference:.2e} (largest feature {np.abs(expected).max():.2f})")
    if not difference <= TOLERANCE * np.abs(expected).max():
        sys.exit("weight transfer check FAILED: Keras's MobileNetV2 does not reproduce showdown's features")


def keras_train(folder: Path, npz: Path, epochs: int, seed: int, result: Path) -> None:
    """The classic loop, as the TensorFlow transfer-learning tutorial writes it."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    base, _ = keras_base(npz)

    def split(which: str, shuffle: bool) -> tf.data.Dataset:
        files = [(str(p), c) for c, name in enumerate(CLASSES) for p in sorted((folder / which / name).iterdir())]
        data = tf.data.Dataset.from_tensor_slices(([path for path, _ in files], [c for _, c in files]))
        if shuffle:  # a new order every epoch, as Keras users write it
            data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

        def load(path, label):
            image = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), (SIDE, SIDE))
            return keras.applications.mobilenet_v2.preprocess_input(image), label

        return data.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(tf.data.AUTOTUNE)

    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(keras.layers.Dropout(0.2)(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(split("train", True), validation_data=split("val", False), epochs=epochs, verbose=2)
    fit_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(split("test", False), verbose=0)
    result.write_text(json.dumps({"accuracy": float(accuracy), "fit_seconds": fit_seconds,
                                  "tensorflow": tf.__version__, "keras": keras.__version__}))


def timed(command: list[str]) -> float:
    """Wall seconds of a whole process, start to exit; stops the benchmark when it fails."""
    start = time.perf_counter()
    if subprocess.run(command).returncode:
        sys.exit(f"failed: {' '.join(command)}")
    return time.perf_counter() - start


def machine() -> dict:
    import torch

    from showdown.device import CPU, device_facts

    facts = device_facts(CPU)  # the model name with family and model, and the ISA that decides bf16 or not
    return {"cpu": facts["name"], "isa": facts["isa"], "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers", help="TF-Flowers, one folder per class")
    parser.add_argument("--photos", type=int, default=500, help="training photos (val and test: a quarter each)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="showdown runs (the median is quoted; Keras runs once)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (photos, runs, weights)")
    parser.add_argument("--no-daemon", dest="daemon", action="store_false",
                        help="time showdown's runs only as fresh processes, not also with its daemon")
    parser.add_argument("--json", default="docs/benchmarks/keras_peer.json", help="appends the figures here")
    parser.add_argument("--keras", choices=("check", "train"), help=argparse.SUPPRESS)  # the Keras process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras:  # TensorFlow and PyTorch never share a process
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        work = Path(args.work)
        if args.keras == "check":
            keras_check(work / "weights.npz")
        else:
            keras_train(work / "data", work / "weights.npz", args.epochs, args.seed, work / "keras.json")
        return

    work = Path(tempfile.mkdtemp(prefix="keras-peer-"))
    try:
        counts = make_folder(Path(args.data), args.photos, args.seed, work / "data")
        print(f"{work / 'data'}: {counts} photos of {len(CLASSES)} classes, {args.epochs} epochs, "
              f"load average {os.getloadavg()[0]:.2f}")
        check = sorted((work / "data" / "test").rglob("*.jpg"))[::max(1, counts["test"] // CHECK_PHOTOS)][:CHECK_PHOTOS]
        source = export_weights(Path(args.weights_dir), check, work / "weights.npz")
        me = [sys.executable, __file__, "--work", str(work), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        timed([*me, "--keras", "check"])  # untimed in the figures: stops here unless the weights agree

        showdown = Path(sys.executable).with_name("showdown")
        showdown = str(showdown) if showdown.exists() else "showdown"

        def showdown_runs(tag: str) -> tuple[list[float], list[dict]]:
            seconds, rows = [], []
            for i in range(args.repeats):  # each from an empty feature cache, into its own run folder
                run = work / f"{tag}run{i}"
                seconds.append(timed([
                    showdown, "run", "--data", str(work / "data"),
                    "--models", "mobilenet_v2", "--strategy", "head", "--epochs", str(args.epochs),
                    "--patience", str(args.epochs), "--weights-dir", args.weights_dir, "--seed", str(args.seed),
                    "--cache-dir", str(work / f"{tag}cache{i}"), "--out", str(run), "--db", str(work / "runs.db")]))
                rows.append(json.loads((run / "summary.json").read_text())["rows"][0])
            return seconds, rows

        os.environ["SHOWDOWN_DAEMON"] = "off"  # each run imports everything itself, and starts no daemon
        fresh_runs, rows = showdown_runs("")
        showdown_seconds = statistics.median(fresh_runs)
        row = rows[fresh_runs.index(sorted(fresh_runs)[len(fresh_runs) // 2])]  # the median run's row
        engine = json.loads((work / "run0" / "environment.json").read_text())  # bf16 where the CPU has it
        warm_runs = []
        if args.daemon:  # the same runs again, each still its own `showdown run` process
            os.environ["SHOWDOWN_DAEMON_DIR"] = str(work / "daemon")
            del os.environ["SHOWDOWN_DAEMON"]
            timed([showdown, "daemon", "start"])  # as a first run would have started it (showdown/daemon.py)
            warm_runs, warm_rows = showdown_runs("daemon-")
            timed([showdown, "daemon", "stop"])
            rows += warm_rows
        keras_seconds = timed([*me, "--keras", "train"])
        keras = json.loads((work / "keras.json").read_text())
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ratio = keras_seconds / showdown_seconds
    print(f"showdown: {showdown_seconds:7.1f} s wall (median of {args.repeats}: "
          f"{', '.join(f'{t:.1f}' for t in fresh_runs)}), test accuracy {row['accuracy']:.4f} "
          f"({engine['precision']}, frozen layers in {engine['runtime']})")
    if warm_runs:
        print(f"  with the daemon a run before started:    {statistics.median(warm_runs):7.1f} s wall (median of "
              f"{args.repeats}: {', '.join(f'{t:.1f}' for t in warm_runs)})")
    print(f"keras:    {keras_seconds:7.1f} s wall ({keras['fit_seconds']:.1f} s in model.fit), "
          f"test accuracy {keras['accuracy']:.4f}")
    points = round(100 * (row["accuracy"] - keras["accuracy"]), 2) + 0.0  # Keras reports float32: no "-0.00"
    print(f"showdown is {ratio:.1f}x faster end to end"
          + (f" ({keras_seconds / statistics.median(warm_runs):.1f}x with the daemon)" if warm_runs else "")
          + f"; accuracy difference {points:+.2f} points")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "photos": counts,
              "epochs": args.epochs, "seed": args.seed, "weights": source,
              "showdown_seconds": showdown_seconds, "showdown_runs": fresh_runs,
              "showdown_daemon_runs": warm_runs, "showdown_daemon_seconds": statistics.median(warm_runs) if warm_runs
              else None,
              "showdown_accuracies": [r["accuracy"] for r in rows], "showdown_accuracy": row["accuracy"],
              "showdown_precision": engine["precision"], "showdown_runtime": engine["runtime"],
              "showdown_feature_seconds": row["feature_seconds"], "showdown_head_seconds": row["head_seconds"],
              "keras_seconds": keras_seconds, "keras_fit_seconds": keras["fit_seconds"],
              "keras_accuracy": keras["accuracy"], "speedup": ratio, **machine(),
              "tensorflow": keras["tensorflow"], "keras": keras["keras"]}
    path = Path(args.json)
    runs = json.loads(path.read_text()) if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*runs, record], indent=2) + "\n")


if __name__ == "__main__":
    main()

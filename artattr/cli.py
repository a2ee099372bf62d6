"""``artattr predict PATH... [--recursive] [--csv FILE | --json] [--top-k K]``: attribution for whole
collections from the shell (also ``python -m artattr``; kept out of ``__main__`` so the decoding processes
can import what they run).

Files and folders (their images; ``--recursive`` for subfolders) are read and attributed a batch per
core at once, and each answer is written as soon as its batch is done.
Unreadable files are skipped with a message on stderr; the exit status is 1 when any were.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, NoReturn

import numpy as np

#: What a folder contributes: files with these suffixes (any case). Named files are always tried.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
BATCH_SIZE = 32


def find_images(paths: Iterable[str], recursive: bool = False) -> Iterator[Path]:
    """The files named, and the images inside the folders named, in a stable (sorted) order."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            yield from sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            yield path  # a missing file is reported when it is read, like any unreadable one


def record(path: Path, output, config, top_k: int) -> dict:
    """One image's answer as printed (``--json``) and written (``--csv``): every task's top-k with
    the name people read and the raw label, and what not to trust (``artattr.flags``: ``not_artwork``,
    ``artwork_score``, ``unknown_artist``, ``uncertain``). The one place that decides what a result holds."""
    from .output import flags
    from .output import top_k as ranked

    return {"path": str(path), "predictions": {
        task: [{"name": config.name(task, label), "label": label, "probability": round(float(p), 6)} for label, p in pairs]
        for task, pairs in ranked(output, config.tasks, top_k).items()},
        "crop": None if output.crop is None else [[round(float(v), 4) for v in corner] for corner in output.crop],
        **flags(output, config)}


def csv_row(rec: dict) -> dict:
    """A record flattened to one CSV row: its plain fields, then ``artist``, ``artist_label``,
    ``artist_p`` (rank 1), ``artist_2`` ... for each task and rank. Lists (the crop's corners) are JSON."""
    row = {k: json.dumps(v) if isinstance(v, list) else v for k, v in rec.items() if k != "predictions"}
    for task, answers in rec["predictions"].items():
        for rank, a in enumerate(answers, 1):
            key = task if rank == 1 else f"{task}_{rank}"
            row |= {key: a["name"], f"{key}_label": a["label"], f"{key}_p": f"{a['probability']:.4f}"}
    return row


def text(rec: dict) -> str:
    lines = [rec["path"] + ("  (does not look like a painting: the answers are not meaningful)" if rec.get("not_artwork") else "")]
    for task, answers in rec["predictions"].items():
        lines.append(f"  {task:<7} " + ", ".join(f"{a['name']} {a['probability']:.1%}" for a in answers))
    return "\n".join(lines)


def decode_batch(preprocess, paths: list[Path], locate: bool) -> list[tuple]:
    """``(pixels, views, None)`` or ``(None, None, message)`` for each path: the model's uint8 views of
    the file and the views without their pictures (:meth:`artattr.preprocess.Preprocess.views`: the painting
    found in it, or the whole picture and up to two cut-outs for the model to confirm). Runs in the decoding
    processes, without torch."""
    decoded = []
    for path in paths:
        try:
            views = preprocess.views(path, locate)
            decoded.append(([preprocess.array(view.picture) for view in views], [view._replace(picture=None) for view in views],
                            None))
        except ValueError as err:
            decoded.append((None, None, str(err)))
        except OSError as err:  # missing, unreadable, a folder where a file was expected
            decoded.append((None, None, err.strerror or str(err)))
    return decoded


def _start_decoder() -> None:
    """A decoding process runs below the forward passes in priority, and leaves Ctrl-C to the main
    process (which stops the pool) instead of printing a traceback of its own."""
    os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_batches(model, paths: list[Path], batch_size: int = BATCH_SIZE, locate: bool = True):
    """Yield ``(path, output, None)`` or ``(path, None, message)`` in input order. ``model``: a loaded
    :class:`artattr.Predictor`, or what :func:`artattr.load` takes (then loaded while the first batches
    are being decoded: importing torch and reading the weights take ~5 s on 2 cores).

    Decoding and finding the painting (~7 ms of CPU per 160-px scan, mostly Python between OpenCV calls)
    run in a pool of processes, one per core, started before torch is imported and decoding well
    ahead, at a lower priority so that loading the model and then the forward passes come first
    (they still get every cycle those leave).
    The forward passes run side by side, one per core, each on one torch thread: this small model
    scales badly across threads (15.5 ms of CPU per image on one, ~23 ms on two). Torch's thread
    count is process-wide, so it is set for the run and restored after. As with any code starting
    processes, a script calling this needs the ``if __name__ == "__main__":`` guard."""
    import multiprocessing

    from .config import read_config
    from .hub import resolve
    from .output import pick
    from .preprocess import Preprocess

    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # cores we may use
    directory = None if hasattr(model, "forward_batch") else resolve(model)
    preprocess = model.preprocess if directory is None else Preprocess.from_config(read_config(directory))
    ahead = max(2 * workers, (256 << 20) // (batch_size * 3 * preprocess.size ** 2))  # ~256 MB of pixels
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    decoders = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_start_decoder)
    try:
        decoding = deque(decoders.submit(decode_batch, preprocess, batch, locate) for batch in batches[:ahead])
        if directory is not None:  # only now: `artattr.load` imports torch (~3.5 s), which the decoders overlap
            from . import load

            model = load(directory)
        import torch

        def answer(batch: list[Path], decoded) -> list[tuple]:
            decoded = decoded.result()
            good = [view for views, _, err in decoded if err is None for view in views]
            outputs = iter(model.forward_batch(model.normalise(torch.from_numpy(np.stack(good)))) if good else ())
            return [(path, None if err else pick([next(outputs) for _ in views], views), err)
                    for path, (_, views, err) in zip(batch, decoded)]

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as forwards:
                answering = deque()
                for i, batch in enumerate(batches):
                    answering.append(forwards.submit(answer, batch, decoding.popleft()))
                    if i + ahead < len(batches):
                        decoding.append(decoders.submit(decode_batch, preprocess, batches[i + ahead], locate))
                    if len(answering) > workers:
                        yield from answering.popleft().result()
                while answering:
                    yield from answering.popleft().result()
        finally:
            torch.set_num_threads(threads)
    finally:
        decoders.shutdown(cancel_futures=True)


def predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .config import CheckpointError, read_config
    from .hub import resolve

    started = time.monotonic()
    paths = list(find_images(args.paths, args.recursive))
    if not paths:
        print("error: no images found" + ("" if args.recursive else " (use --recursive for subfolders)"), file=sys.stderr)
        return 1
    try:
        directory = resolve(args.model)
        config = read_config(directory)
    except ValueError as err:  # unknown id, offline Hub, broken config.json: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_batches(directory, paths, args.batch_size, locate=not args.whole)
    try:
        first = next(results)  # the weights are loaded by then (beside the first decodes)
    except CheckpointError as err:  # weights missing or not those config.json describes
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = open(args.csv, "w", newline="", encoding="utf-8") if args.csv not in (None, "-") else sys.stdout
    writer, failed = None, 0
    try:
        with tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            for path, output, err in itertools.chain([first], results):
                bar.update()
                if err is not None:
                    failed += 1
                    bar.write(f"{path}: skipped: {err}", file=sys.stderr)
                    continue
                rec = record(path, output, config, args.top_k)
                if args.csv:
                    row = csv_row(rec)
                    if writer is None:
                        writer = csv.DictWriter(out, fieldnames=list(row), extrasaction="ignore")
                        writer.writeheader()
                    writer.writerow(row)
                elif args.json:
                    print(json.dumps(rec, ensure_ascii=False), file=out)
                else:
                    bar.write(text(rec), file=out)
                out.flush()
    finally:
        results.close()  # stops the decoding processes when writing failed or was interrupted
        if out is not sys.stdout:
            out.close()
    print(f"{len(paths) - failed} of {len(paths)} images done" + (f", {failed} skipped (unreadable)" if failed else "")
          + f" in {time.monotonic() - started:.1f} s, start-up included", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artattr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="artist, style and genre of images and folders of images")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders")
    p.add_argument("--recursive", "-r", action="store_true", help="also look in subfolders of the folders given")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", metavar="FILE", help="write one CSV row per image to FILE ('-' for stdout)")
    fmt.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--top-k", type=int, default=3, help="answers per task (default 3)")
    p.add_argument("--model", default="default", help="'default', a checkpoint folder, or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--whole", action="store_true", help="use the whole image; by default the painting is found in "
                   "photos of it and only it is attributed ('crop': its corners as fractions of width, height)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=argparse.SUPPRESS)
    sub.add_parser("models", help="list registered architectures")
    args = parser.parse_args(argv)
    if args.command == "models":
        from . import list_models

        print("\n".join(list_models()))
        return 0
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    try:
        return predict(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def exit_now(code: int) -> NoReturn:
    """End a finished command without the interpreter's finalisation. With torch loaded that takes ~1 s
    of one core and does nothing a finished command needs (its files are closed, its output is flushed
    here): 4 % of a 2,000-image run on 2 cores. Under torchrun it is also where gloo's worker threads,
    still freeing the last all-reduce's tensors, could abort a rank after its work was done
    ("terminate called without an active exception": 1 of 30 two-rank runs here; pytorch#179291)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The ``artattr`` command and ``python -m artattr``."""
    exit_now(main())

"""``artattr predict PATH... [--recursive] [--csv FILE | --json] [--top-k K]``: attribution for whole
collections from the shell (also ``python -m artattr``).

Files and folders (their images; ``--recursive`` for subfolders) are read in the background while
the model runs on the previous batch, and each answer is written as soon as its batch is done.
Unreadable files are skipped with a message on stderr; the exit status is 1 when any were.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

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


def run_batches(predictor, paths: list[Path], batch_size: int = BATCH_SIZE, locate: bool | None = None):
    """Yield ``(path, output, None)`` or ``(path, None, message)`` in input order. Decoding (and finding
    the painting in a photo, ``Predictor.find``) runs in a thread pool (Pillow, OpenCV and torch release
    the GIL); the forward pass uses all of torch's threads.

    Plain decoding is cheap (~1 ms per image against ~14 ms of forward pass), so it runs a few
    batches ahead, beside the forward pass. Finding the painting costs more (~5 ms per image), and
    beside the forward pass it would take cores from torch's threads, which then spin waiting for
    them (on 2 cores that once doubled the CPU time per image); so then each batch is decoded on all
    cores first and the forward pass follows alone."""
    import torch

    cores = os.cpu_count() or 1
    locating = predictor.locate if locate is None else locate
    ahead = batch_size if locating else 3 * batch_size  # decodes submitted before each batch is taken

    def decode(path: Path):
        try:
            picture, corners = predictor.find(path, locate)
            return (predictor.pixels(picture), corners), None
        except ValueError as err:
            return None, str(err)
        except OSError as err:  # missing, unreadable, a folder where a file was expected
            return None, err.strerror or str(err)

    with ThreadPoolExecutor(cores if locating else min(4, cores)) as pool:
        pending, done = deque(), 0  # pending: decodes of paths[done:done + len(pending)]
        while done < len(paths):
            pending.extend(pool.submit(decode, p) for p in paths[done + len(pending):done + ahead])
            batch = [(paths[done + i], *pending.popleft().result()) for i in range(min(batch_size, len(pending)))]
            done += len(batch)
            good = [(p, px) for p, px, err in batch if err is None]
            outputs = iter(predictor.forward_batch(predictor.normalise(torch.stack([px for _, (px, _) in good])))) if good else iter(())
            for path, decoded, err in batch:
                if err is not None:
                    yield path, None, err
                    continue
                output = next(outputs)
                output.crop = decoded[1]
                yield path, output, None


def predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import load

    paths = list(find_images(args.paths, args.recursive))
    if not paths:
        print("error: no images found" + ("" if args.recursive else " (use --recursive for subfolders)"), file=sys.stderr)
        return 1
    try:
        predictor = load(args.model)
    except ValueError as err:  # unknown id, offline Hub, corrupt checkpoint: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = open(args.csv, "w", newline="", encoding="utf-8") if args.csv not in (None, "-") else sys.stdout
    writer, failed = None, 0
    try:
        with tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            for path, output, err in run_batches(predictor, paths, args.batch_size, locate=not args.whole):
                bar.update()
                if err is not None:
                    failed += 1
                    bar.write(f"{path}: skipped: {err}", file=sys.stderr)
                    continue
                rec = record(path, output, predictor.config, args.top_k)
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
        if out is not sys.stdout:
            out.close()
    print(f"{len(paths) - failed} of {len(paths)} images done" + (f", {failed} skipped (unreadable)" if failed else ""),
          file=sys.stderr)
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
    return predict(args)


if __name__ == "__main__":
    sys.exit(main())

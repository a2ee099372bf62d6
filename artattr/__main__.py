"""``python -m artattr predict IMG... [--model ID] [--top-k K] [--json]``: attribution from the shell."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m artattr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="artist, style and genre of one or more images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default="default", help="'default', a checkpoint folder, or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    sub.add_parser("models", help="list registered architectures")
    args = parser.parse_args(argv)

    from . import list_models, load

    if args.command == "models":
        print("\n".join(list_models()))
        return 0
    try:
        predictor = load(args.model)
    except ValueError as err:  # unknown id, offline Hub, corrupt checkpoint: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    for path in args.images:
        try:
            result = predictor.predict(path, top_k=args.top_k)
        except ValueError as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"image": path, "predictions": {t: [{"label": l, "probability": round(p, 6)} for l, p in r]
                                                              for t, r in result.items()}, **result.flags}))
        else:
            print(path)
            for task, ranked in result.items():
                print(f"  {task:<7} " + ", ".join(f"{label} {p:.1%}" for label, p in ranked))
    return status


if __name__ == "__main__":
    sys.exit(main())

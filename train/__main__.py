"""``python -m train {fit,evaluate,push,gallery,models} ...``: the training side of ArtAttr."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fit": ("train.fit", "fine-tune a model from a YAML config (--config train/configs/NAME.yaml --key value)"),
    "evaluate": ("train.evaluate", "score a checkpoint on any --data source and write the report"),
    "push": ("train.push", "upload a checkpoint folder to the Hugging Face Hub"),
    "gallery": ("train.gallery", "build the explorer gallery inside a checkpoint folder"),
    "trust": ("train.trust", "fit the not-a-painting head, temperatures and trust thresholds of a checkpoint"),
    "models": ("train.models_table", "list the architectures with their measured numbers"),
    "soup": ("train.soup", "average the weights of two runs from the same start (robust fine-tuning, WiSE-FT)"),
    "names": ("train.display_names", "write the reviewed label display names into a checkpoint's config.json"),
    "locate": ("train.fit_locate", "fit the painting locator's scorer on synthetic wall photos (artattr/locate.json)"),
    "surface": ("train.fit_surface", "train the learned painting localiser on synthetic wall photos (artattr/surface.safetensors)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m train COMMAND [args]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<9} {help_}")
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module_name = COMMANDS[argv[0]][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"error: `{argv[0]}` is not available: {module_name.replace('.', '/')}.py is missing from this checkout.",
              file=sys.stderr)
        return 2
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    from artattr.cli import exit_now

    exit_now(main())

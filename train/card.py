"""The trained checkpoint's model card, with its validation numbers as Hub ``model-index`` metadata.

The body is :func:`artattr.checkpoint.model_card` (tasks, metrics table, input, limitations);
``huggingface_hub.ModelCard`` adds the front matter, so the Hub shows the scores on the model page
and in its leaderboards.
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from artattr.checkpoint import ModelConfig, model_card

#: metric key in train.metrics -> (Hub metric type, display name)
HUB_METRICS = {"top1": ("accuracy", "top-1 accuracy"), "top5": ("top_5_accuracy", "top-5 accuracy"),
               "macro_f1": ("f1", "macro F1")}


def describe(args) -> str:
    """One paragraph saying how the model was trained (``args``: :class:`train.args.FitArgs`)."""
    how = (f"blocks {args.frozen_blocks}+ and heads trained on a frozen-trunk feature cache" if args.recipe == "cached"
           else "fully fine-tuned" + (f" after {args.freeze_epochs} head-only epoch(s)" if args.freeze_epochs else ""))
    return (f"{args.architecture} ({'ImageNet' if args.pretrained else 'random init'}) {how} on `{args.data}` "
            f"({args.split} split) for {args.epochs} epochs at {args.input_size} px: {args.loss_weighting} task weighting, "
            f"label smoothing {args.label_smoothing}, class weight power {args.class_weight_power}, "
            f"ArcFace ({args.arcface_task}, weight {args.arcface_weight}) embeddings"
            + (f", EMA {args.ema_decay}" if args.ema_decay else "")
            + (f", {args.wall_photos:.0%} of samples seen as phone photos on a wall cut out by the painting locator"
               + (f" ({args.relit_photos:.0%} of them under harder light)" if args.relit_photos else "")
               if args.wall_photos else "") + ". Metrics are on the val rows with calibrated "
            "probabilities; `artist_known` counts only paintings by artists the model has as classes "
            f"(>= {args.min_artist_images} training images), the rest are labelled `other`.")


def card(config: ModelConfig, description: str, data: str, model_name: str) -> ModelCard:
    """A ModelCard whose ``model-index`` lists every task's val top-1 / top-5 / macro-F1."""
    dataset = data[3:].split(":")[0] if data.startswith("hf:") else "wikiart"
    results = [
        EvalResult(task_type="image-classification", task_name=f"{task} attribution", dataset_type=dataset,
                   dataset_name=f"{dataset} ({task})", dataset_config=task, dataset_split="val", metric_type=kind,
                   metric_name=f"{task} {name}",
                   metric_value=round(float(m[key]), 4))
        for task, m in config.metrics.items() if isinstance(m, dict) and m.get("n")
        for key, (kind, name) in HUB_METRICS.items() if m.get(key) is not None
    ]
    body = model_card(config, description).split("---\n", 2)[-1]  # artattr's body without its front matter
    meta = ModelCardData(library_name="artattr", tags=["art", "wikiart", "image-classification", "artattr"],
                         datasets=["huggan/wikiart"], model_name=model_name, eval_results=results or None)
    return ModelCard(f"---\n{meta.to_yaml()}\n---\n{body}")

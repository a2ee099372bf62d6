"""ArtAttr web app: upload a photo of a painting, get artist / style / genre, see why, explore neighbours.

Run ``python app.py`` (or ``./run app``). Extra models for the picker come from ``ARTATTR_MODEL``
(comma-separated checkpoint folders or ``hf-hub:ORG/NAME[@REV]`` ids); the embedded default is
always there, so a model that fails to download costs a warning, not the app.

Uploads reach the handlers as the original file (``preprocess=False``): ``artattr.images.load_image``,
not Gradio's PIL round-trip, decides what a valid picture is (size cap before decoding, EXIF, CMYK,
16-bit, first GIF frame). One forward pass per upload is kept in ``gr.State`` so changing the heatmap
class, the explorer view or the colouring never recomputes it. The models run in a second process
(``artattr/worker.py``): this one serves the UI and never imports torch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from artattr.hub import DEFAULT_DIR, resolve
from artattr.worker import ModelWorker

#: The models run in their own process (artattr/worker.py); this one never imports torch. Started
#: before gradio is imported, the model process imports torch while this one imports gradio, so a
#: cold start takes the longer of the two imports instead of their sum.
models = ModelWorker(preload=[DEFAULT_DIR])
if __name__ == "__main__":
    models.start()

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import artattr  # noqa: E402
from artattr import embed  # noqa: E402
from artattr.embed import pretty  # noqa: E402
from artattr.overlay import overlay  # noqa: E402

# A server has no screen. Naming the backend before matplotlib is first imported spares each
# process a pyplot import (0.3 s) that Gradio's per-request backend switch would otherwise do.
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
TASKS = ("artist", "style", "genre")
#: Heatmaps are drawn on a copy this large; the model itself only ever sees ``input_size``.
DISPLAY_SIZE = 448
N_SIMILAR = 8
PLOT_HEIGHT = 520
#: Methods that take seconds on 2 CPU cores: they run only when the user presses "Explain".
SLOW_METHODS = ("occlusion",)
#: Every method in ``artattr.explain.METHODS``, named for people (a test keeps the two in step).
METHOD_NAMES = {"gradcam": "Grad-CAM", "occlusion": "Occlusion", "ig": "Integrated Gradients"}
# What python -m artattr.explain.evaluate found on WikiArt-11: said where the map is shown.
METHOD_CAVEATS = {"ig": " Caution: Integrated Gradients maps of a model with random weights look much like these "
                        "(they follow edges in the picture), so trust only regions Grad-CAM or occlusion also show."}


@dataclass
class Model:
    """A model as this process sees it: what its config and gallery say. Its weights live in the
    model process, which ``_call`` asks for answers."""

    dir: Path
    config: artattr.ModelConfig
    gallery: embed.Gallery | None  # None when the checkpoint ships no gallery

    @property
    def labels(self) -> dict[str, list[str]]:
        return self.config.tasks


@dataclass
class Upload:
    """Everything one upload costs once; heatmaps are memoised per (method, task, class)."""

    model_id: str
    image: Image.Image  # display copy, at most DISPLAY_SIZE px
    output: artattr.Output
    heatmaps: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)


_models: dict[str, Model] = {}
_models_lock = threading.Lock()
#: The ids the picker offers (set by ``build_app``): API callers cannot make the server load other paths or repos.
_offered: list[str] = ["default"]


def get_model(model_id: str) -> Model:
    """Load a model (and its gallery) once and share it between sessions. Hub downloads happen here;
    the model process then loads the weights, so a broken checkpoint fails now, not on an upload."""
    if model_id not in _models:
        with _models_lock:
            if model_id not in _models:
                model_dir = resolve(model_id)
                config = artattr.read_config(model_dir)
                _call("load", model_dir)
                _models[model_id] = Model(model_dir, config, embed.Gallery.load(model_dir))
    return _models[model_id]


def _call(name: str, model_dir: Path, *args, progress=None):
    """Ask the model process (see ``artattr.worker.CALLS``). If it died, the user gets a message
    and the next request starts a new one."""
    try:
        return models.call(name, model_dir, *args, progress=progress)
    except RuntimeError as err:
        raise gr.Error(str(err), title="Model process", print_exception=False) from None


def model_choices(model_ids: list[str] | None = None) -> list[str]:
    """"default" first, then the given ids (or those in ``ARTATTR_MODEL``), without duplicates."""
    if model_ids is None:
        model_ids = os.environ.get("ARTATTR_MODEL", "").split(",")
    return list(dict.fromkeys(["default", *(m.strip() for m in model_ids if m.strip())]))


# ---------------------------------------------------------------------------------------------------
# Handlers. Each takes plain values and returns plain values, so the API and the UI share them.


def _source(upload: dict | str | None) -> str | None:
    """The uploaded file's path: a FileData dict from the browser/gradio_client, or a plain path."""
    if isinstance(upload, dict):
        return upload.get("path")
    return upload


def _labels(model: Model, upload: Upload | None) -> list[dict | str | None]:
    """Bars per task; "Not a painting" / "Not sure" / "Unknown artist" in place of a headline that
    would claim more than the model knows (the note lists the guesses)."""
    if upload is None:
        return [None] * len(TASKS)
    top = artattr.top_k(upload.output, model.labels, 5)
    flags = artattr.flags(upload.output, model.config)
    if flags["not_artwork"]:
        return ["Not a painting" if t in top else None for t in TASKS]
    shown = []
    for t in TASKS:
        if t not in top:
            shown.append(None)
        elif t == "artist" and flags["unknown_artist"]:
            shown.append("Unknown artist")
        elif t in flags["uncertain"]:
            shown.append("Not sure")
        else:
            shown.append({pretty(t, label): p for label, p in top[t]})
    return shown


def _note(config: artattr.ModelConfig, output: artattr.Output) -> str:
    """Say plainly what not to trust, most serious first; never call a flagged answer reliable."""
    flags = artattr.flags(output, config)
    if flags["not_artwork"]:
        return ("**This does not look like a painting — the answers below are not meaningful** "
                f"(painting score {flags['artwork_score']:.0%}).")
    lines = []
    for task in TASKS:
        if task not in output.probs:
            continue
        p = output.probs[task]
        guesses = ", ".join(f"{pretty(task, config.tasks[task][i])} {p[i]:.0%}" for i in p.argsort()[::-1][:3])
        if task == "artist" and flags["unknown_artist"]:
            known = len(config.tasks[task]) - 1
            lines.append(f"**{task}**: probably none of the {known} artists this model knows (closest: {guesses}).")
        elif task in flags["uncertain"]:
            lines.append(f"**{task}**: not sure; best guesses {guesses}.")
    if not lines:
        return "Every answer passed the model's confidence check" + _checked_accuracy(config) + "."
    return "\n".join(f"- {line}" for line in lines)


def _checked_accuracy(config: artattr.ModelConfig) -> str:
    """How often answers that pass the check were right on held-out paintings (from the model card)."""
    acc = config.metrics.get("trust", {}).get("answered_accuracy", {}) if isinstance(config.metrics, dict) else {}
    parts = [f"{task} {acc[task]:.0%}" for task in TASKS if isinstance(acc.get(task), (int, float))]
    return f" (on held-out paintings such answers were right: {', '.join(parts)})" if parts else ""


def _class_choices(model: Model, upload: Upload | None, task: str) -> dict:
    """Dropdown update: the task's classes, most probable first, the top prediction selected."""
    labels = model.labels.get(task, [])
    if upload is None or task not in upload.output.probs:
        return gr.update(choices=[(pretty(task, label), label) for label in labels], value=None)
    order = upload.output.probs[task].argsort()[::-1]
    choices = [(pretty(task, labels[i]), labels[i]) for i in order]
    return gr.update(choices=choices, value=choices[0][1])


def use_model(model_id: str | None, progress=None) -> tuple[str, Model, str]:
    """(id, model, note): the requested model, or the default plus a warning when it cannot be loaded."""
    model_id = model_id or "default"
    if progress is not None and model_id not in _models:
        progress(0.0, desc=f"Loading {model_id}")
    try:
        if model_id not in _offered:
            raise ValueError("it is not one of the models this app offers.")
        return model_id, get_model(model_id), ""
    except Exception as err:  # a broken or unreachable extra model must never take the app down
        message = f"Could not load model {model_id!r}: {err} Serving the default model instead."
        gr.Warning(message)
        return "default", get_model("default"), message


def pick_model(model_id: str, progress=gr.Progress()) -> str:
    """The picker's value after loading: falls back to "default" so the UI shows what answers."""
    return use_model(model_id, progress)[0]


def predict(upload: dict | str | None, model_id: str, task: str, progress=gr.Progress()):
    """Upload -> (state, artist, style, genre, note, heatmap classes). Bad input -> gr.Error."""
    model_id, model, fallback = use_model(model_id, progress)
    source = _source(upload)
    if source is None:
        return None, *_labels(model, None), fallback, _class_choices(model, None, task)
    try:  # decoded here, at the model's input size (as ``Predictor.load`` does): only pixels travel
        image = artattr.load_image(source, draft_size=model.config.input_size)
        output = _call("run", model.dir, image)  # refuses pictures too small to judge
    except ValueError as err:
        raise gr.Error(str(err), title="Unusable image", print_exception=False) from None
    state = Upload(model_id, _display_copy(source, image), output)
    note = "\n\n".join(filter(None, [fallback, _note(model.config, state.output)]))
    return state, *_labels(model, state), note, _class_choices(model, state, task)


def _display_copy(source: str, image: Image.Image) -> Image.Image:
    """The picture heatmaps are drawn on. The model's copy of a JPEG is decoded at the model's input
    size, too coarse to look at: then the upload is decoded again at display size."""
    image = artattr.load_image(source, draft_size=DISPLAY_SIZE) if max(image.size) < DISPLAY_SIZE else image.copy()
    image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.BILINEAR)
    return image


def _at_least_display_size(image: Image.Image) -> Image.Image:
    """Small uploads (WikiArt thumbnails are 160 px) are enlarged for viewing; browsers show images at
    their natural size, where a 160 px heatmap is too small to read."""
    scale = DISPLAY_SIZE / max(image.size)
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def classes(state: Upload | None, model_id: str, task: str) -> dict:
    """Heatmap class dropdown for a newly chosen task (no forward pass: the cached output is enough)."""
    return _class_choices(get_model(state.model_id if state else model_id or "default"), state, task)


def _heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
             compute_slow: bool, progress) -> tuple[Image.Image | None, str]:
    if state is None:
        return None, "Upload a painting to see which regions drive the answer."
    model = get_model(state.model_id)
    if task not in state.output.probs:
        raise gr.Error(f"This model has no task {task!r}; it predicts {', '.join(state.output.probs)}.", print_exception=False)
    labels = model.labels[task]
    if label and label not in labels:
        raise gr.Error(f"{label!r} is not one of this model's {task} classes.", print_exception=False)
    target = labels.index(label) if label else int(state.output.probs[task].argmax())
    name = METHOD_NAMES.get(method, method)
    key = (method, task, target)
    if key not in state.heatmaps:
        if method in SLOW_METHODS and not compute_slow:
            return None, f"{name} takes a few seconds: press **Explain** to run it."
        try:
            state.heatmaps[key] = _call("explain", model.dir, state.image, method, task, target,
                                        progress=lambda fraction, desc: progress(fraction, desc=desc))
        except ValueError as err:  # e.g. an unknown method from an API caller
            raise gr.Error(str(err), print_exception=False) from None
    prob = float(state.output.probs[task][target])
    return (_at_least_display_size(overlay(state.image, state.heatmaps[key], opacity)),
            f"{name} for {task} = **{pretty(task, labels[target])}** ({prob:.0%}): brighter regions raised this answer more."
            + METHOD_CAVEATS.get(method, ""))


def explain_heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
                    progress=gr.Progress()):
    """Heatmap for any method, slow ones included (the "Explain" button and the API)."""
    return _heatmap(state, method, task, label, opacity, True, progress)


def refresh_heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
                    progress=gr.Progress()):
    """Heatmap after a settings change: fast methods recompute, slow ones only show a cached map."""
    return _heatmap(state, method, task, label, opacity, False, progress)


def explore(state: Upload | None, model_id: str, view: str, color_by: str):
    """3-D map of the model's gallery with the upload highlighted."""
    model = get_model(state.model_id if state else model_id or "default")
    if model.gallery is None:
        return None, "No gallery in this model: the explorer and similar works need a checkpoint exported with `python -m train gallery`."
    upload = model.gallery.place(state.output) if state else None
    try:
        fig = embed.figure(model.gallery, view=view, color_by=color_by, upload=upload, height=PLOT_HEIGHT)
    except ValueError as err:  # a gallery built without this view or label
        return None, str(err)
    return fig, "The black diamond is your painting." if state else "Upload a painting to see where it lands."


def similar(state: Upload | None, model_id: str):
    """The gallery paintings nearest to the upload, with labels and cosine similarity."""
    model = get_model(state.model_id if state else model_id or "default")
    if state is None or model.gallery is None or state.output.embedding is None:
        return []
    return [(item.thumbnail, f"{item.title}: {pretty('artist', item.artist)}, {pretty('style', item.style)}"
             f"{', ' + pretty('genre', item.genre) if item.genre else ''} (similarity {item.similarity:.2f})")
            for item in embed.nearest(model.gallery, state.output.embedding, N_SIMILAR)]


# ---------------------------------------------------------------------------------------------------


def build_app(model_ids: list[str] | None = None) -> gr.Blocks:
    """The Blocks app; ``model_ids`` (default: ``ARTATTR_MODEL``) are offered next to the embedded model."""
    models.start()  # loads the default model while the UI is built (if app.py did not start it already)
    _offered[:] = model_choices(model_ids)
    tasks = [t for t in TASKS if t in artattr.read_config(DEFAULT_DIR).tasks]
    with gr.Blocks(title="ArtAttr", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=3600)
        gr.Markdown("# ArtAttr\nWho painted it, in which movement, what genre, and why the model thinks so. "
                    "Upload, drop, paste or photograph a painting.")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                 label="Painting", height=360, elem_id="upload")
                gr.Examples([[str(p)] for p in EXAMPLES], inputs=image, label="Examples", cache_examples=False,
                            examples_per_page=len(EXAMPLES) or 1)
                model_dd = gr.Dropdown(list(_offered), value="default", label="Model", elem_id="model")
            with gr.Column(scale=3):
                with gr.Row():
                    labels = [gr.Label(num_top_classes=5, label=task, elem_id=f"label-{task}") for task in TASKS]
                note = gr.Markdown(label="note", elem_id="note")
        with gr.Tab("Why? (heatmap)"):
            with gr.Row():
                with gr.Column(scale=2):
                    method = gr.Radio([(name, m) for m, name in METHOD_NAMES.items()], value=next(iter(METHOD_NAMES)),
                                      label="Method")
                    task = gr.Radio(tasks, value="style" if "style" in tasks else tasks[0], label="Task")
                    label_dd = gr.Dropdown([], label="Class (top prediction first)", allow_custom_value=True)
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    explain_btn = gr.Button("Explain", variant="primary")
                with gr.Column(scale=3):
                    heatmap = gr.Image(label="Heatmap", type="pil", format="jpeg", interactive=False,
                                       height=DISPLAY_SIZE, elem_id="heatmap")
                    heatmap_note = gr.Markdown(label="heatmap note")
        with gr.Tab("3D explorer"):
            with gr.Row():
                view = gr.Radio([("ArcFace sphere", "sphere"), ("UMAP", "umap")], value="sphere", label="View")
                color_by = gr.Radio(["style", "artist", "genre"], value="style", label="Colour by")
            plot = gr.Plot(label="Embedding map", show_label=False, elem_id="explorer")
            plot_note = gr.Markdown(label="explorer note")
        with gr.Tab("Similar works"):
            gallery = gr.Gallery(label="Most similar paintings", columns=8, height=320, elem_id="similar")

        heat_in = [state, method, task, label_dd, opacity]
        heat_out = [heatmap, heatmap_note]
        explore_in = [state, model_dd, view, color_by]

        def analyse(trigger, api_name: str | None):
            """Upload or model change: clear the old answers, settle the model, predict, then fill the
            panels in parallel. A bad upload stops after the clearing, so nothing stale stays on screen."""
            cleared = [state, *labels, note, heatmap, heatmap_note, plot, gallery]
            event = trigger(lambda: [None] * (len(cleared) - 1) + [[]], None, cleared, queue=False,
                            api_visibility="private", show_progress="hidden")
            event = event.then(pick_model, model_dd, model_dd, api_visibility="private")
            event = event.then(predict, [image, model_dd, task], [state, *labels, note, label_dd],
                               preprocess=False, api_name=api_name,
                               api_visibility="public" if api_name else "private")
            event.success(refresh_heatmap, heat_in, heat_out, api_visibility="private")
            event.success(explore, explore_in, [plot, plot_note], api_visibility="private", show_progress="hidden")
            event.success(similar, [state, model_dd], gallery, api_name="similar" if api_name else None,
                          api_visibility="public" if api_name else "private")

        # Public endpoints first so they keep their plain names (/predict, /explain, /explore, ...).
        view.change(explore, explore_in, [plot, plot_note], api_name="explore")
        explain_btn.click(explain_heatmap, heat_in, heat_out, api_name="explain",
                          concurrency_limit=1, concurrency_id="explain")
        analyse(image.change, "predict")
        task.input(classes, [state, model_dd, task], label_dd, api_name="classes").then(
            refresh_heatmap, heat_in, heat_out, api_visibility="private")
        analyse(model_dd.input, None)
        for control in (method.input, label_dd.input, opacity.release):
            control(refresh_heatmap, heat_in, heat_out, api_visibility="private", trigger_mode="always_last")
        color_by.input(explore, explore_in, [plot, plot_note], api_visibility="private")
        demo.load(explore, explore_in, [plot, plot_note], api_visibility="private")
    # Two CPU cores: two events at a time keeps both busy; more would only thrash the BLAS threads.
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


if __name__ == "__main__":
    build_app().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="50mb",
        ssr_mode=False,
    )

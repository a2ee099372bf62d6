"""ArtAttr web app: upload a photo of a painting, get artist / style / genre, see why, explore neighbours.

Run ``python app.py`` (or ``./run app``). Extra models for the picker come from ``ARTATTR_MODEL``
(comma-separated checkpoint folders or ``hf-hub:ORG/NAME[@REV]`` ids); the embedded default is
always there, so a model that fails to download costs a warning, not the app.

Uploads reach the handlers as the original file (``preprocess=False``; only files Gradio received as
uploads, see ``_source``): ``artattr.images.load_image``, not Gradio's PIL round-trip, decides what a
valid picture is (size cap before decoding, EXIF, CMYK, 16-bit, first GIF frame). One forward pass
per upload is kept in ``gr.State`` so changing the heatmap class, the explorer view or the colouring
never recomputes it. The models run in a second process (``artattr/worker.py``): this one serves the
UI and never imports torch.
"""

from __future__ import annotations

import csv
import html
import os
import threading
from collections import OrderedDict
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
from gradio.utils import get_upload_folder  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import artattr  # noqa: E402
from artattr import embed  # noqa: E402
from artattr.config import TASKS  # noqa: E402
from artattr.embed.plot import TOOLBAR_HEIGHT  # noqa: E402
from artattr.locate import DECODE_SIZE, rectify  # noqa: E402
from artattr.overlay import overlay  # noqa: E402

# A server has no screen. Naming the backend before matplotlib is first imported spares each
# process a pyplot import (0.3 s) that Gradio's per-request backend switch would otherwise do.
os.environ.setdefault("MPLBACKEND", "Agg")
# Uploads are decoded in gradio's worker threads. Pillow allocates pictures in 16 MB blocks, which
# glibc serves from each thread's malloc arena and keeps there once freed: eight simultaneous 99 MP
# uploads left 1.4 GB behind. Blocks above glibc's largest mmap threshold (32 MB) are mapped and
# unmapped, so a decoded upload's memory goes back to the system (PILLOW_BLOCK_SIZE, at startup).
Image.core.set_block_size(64 * 1024 * 1024)

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
#: What the dataset says about each example (title, artist, date, style, genre), for its caption.
EXAMPLE_INFO = {r["file"]: r for r in csv.DictReader((ROOT / "examples" / "examples.csv").open(encoding="utf-8"))}
#: The answers in the order people read them: who painted it first (the tasks: ``artattr.config.TASKS``).
SHOWN = ("artist", *(t for t in TASKS if t != "artist"))
#: Heatmaps are drawn on a copy this large; the model itself only ever sees ``input_size``.
DISPLAY_SIZE = 448
#: Heatmaps kept per upload (each ~0.8 MB): switching back to a recent class costs nothing.
HEATMAPS_KEPT = 4
#: Largest upload Gradio accepts; ``artattr.images`` then refuses more than 100 megapixels.
MAX_FILE_SIZE = "50mb"
#: The only folders uploads are read from: Gradio's upload cache (what browsers and API clients
#: uploaded) and the bundled examples. An API caller can name any path; others are refused unread.
UPLOAD_DIRS = [Path(get_upload_folder()).resolve(), ROOT / "examples"]
N_SIMILAR = 8
PLOT_HEIGHT = 720
#: The explorer's columns: controls (scale 1) and plot (scale 2), at least this wide (px); below their
#: sum the columns stack. Gradio's page is at most PAGE_WIDTH px wide, with ~64 px of margins.
EXPLORER_MIN_WIDTHS, PAGE_WIDTH = (260, 300), 1280
#: The heatmap's colour scale (matplotlib's "inferno", which ``artattr.overlay`` draws with).
HEAT_SCALE = ('<div class="heat-scale"><span>less</span><div class="heat-bar" style="background: linear-gradient('
              'to right, #000004, #420a68, #932667, #dd513a, #fca50a, #fcffa4)"></div>'
              '<span>more influence on the answer</span></div>')
#: Gradio 6.31 heads every error toast with its type ("Error") and ignores ``gr.Error(title=)``. Our
#: messages lead with their title (:func:`_error`): in a toast holding one message, this moves it to
#: the heading. Each message is split once; a toast that groups several keeps Gradio's heading.
TOAST_TITLES_JS = """() => {
  const TITLED = /^\\s*([^:]{1,40}): ([\\s\\S]+)$/;
  const retitle = () => {
    for (const toast of document.querySelectorAll('[data-testid=toast-body].error')) {
      const texts = toast.querySelectorAll('[data-testid=toast-text]');
      const heading = toast.querySelector('.toast-title')?.firstChild;
      if (!heading || heading.nodeType !== Node.TEXT_NODE) continue;
      if (texts.length !== 1) { toast.dataset.title && (heading.textContent = 'Error '); continue; }
      const text = texts[0];
      if (text.dataset.split !== text.textContent) {
        const m = text.textContent.match(TITLED);
        if (!m) continue;
        toast.dataset.title = m[1];
        text.textContent = m[2];
        text.dataset.split = m[2];
      }
      if (heading.textContent !== toast.dataset.title + ' ') heading.textContent = toast.dataset.title + ' ';
    }
  };
  new MutationObserver(retitle).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
#: Layout fixes the default theme lacks: full captions under similar works, the colour scale, and a
#: phone width where nothing overlaps.
CSS = """
#similar .thumbnail-item, #examples .thumbnail-item { aspect-ratio: auto !important; height: auto !important;
  overflow: visible !important; display: flex !important; flex-direction: column; }
#similar .thumbnail-item img, #examples .thumbnail-item img { aspect-ratio: 1; width: 100%; height: auto !important; }
#similar .caption-label, #examples .caption-label { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; position: static !important; max-width: none !important; border: 0 !important;
  background: none !important; font-size: 0.78rem; line-height: 1.25; }
#similar .grid-wrap, #examples .grid-wrap { max-height: none !important; height: auto !important;
  overflow: visible !important; }
.heat-scale { display: flex; align-items: center; gap: 0.5rem; font-size: 0.85rem; }
.heat-bar { flex: 1; height: 0.8rem; border-radius: 3px; }
#explorer, #explorer .js-plotly-plot { width: 100% !important; }
@media (max-width: 600px) { .gradio-container { padding: 0 6px !important; } }
"""
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
    image: Image.Image  # display copy of what the model saw (the detected painting), at most DISPLAY_SIZE px
    output: artattr.Output
    upload: Image.Image | None = None  # display copy of the whole upload, where the outline is drawn
    #: the last ``HEATMAPS_KEPT`` heatmaps, least recently used first
    heatmaps: OrderedDict[tuple[str, str, int], np.ndarray] = field(default_factory=OrderedDict)


_models: dict[str, Model] = {}
_models_lock = threading.Lock()
#: One upload is decoded at a time: a 100 MP picture needs 300 MB for a moment, and this process
#: holds at most one such copy however many arrive together (two cores decode no faster in parallel).
_decoding = threading.Lock()
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
        raise _error(str(err), "Model interrupted") from None


def _error(message: str, title: str) -> gr.Error:
    """A message for the user that leads with ``title``. Gradio 6.31's toasts ignore ``gr.Error``'s
    title (their heading is the message type, "Error"), so the title leads the text, from where
    ``TOAST_TITLES_JS`` moves it to the heading; API callers get it in ``title`` too."""
    return gr.Error(f"{title}: {message}", title=title, print_exception=False)


def model_choices(model_ids: list[str] | None = None) -> list[str]:
    """"default" first, then the given ids (or those in ``ARTATTR_MODEL``), without duplicates."""
    if model_ids is None:
        model_ids = os.environ.get("ARTATTR_MODEL", "").split(",")
    return list(dict.fromkeys(["default", *(m.strip() for m in model_ids if m.strip())]))


# ---------------------------------------------------------------------------------------------------
# Handlers. Each takes plain values and returns plain values, so the API and the UI share them.


def _source(upload: dict | str | None) -> str | None:
    """The uploaded file's path (a FileData dict from the browser/gradio_client, or a plain path), if
    Gradio received it as an upload or it is a bundled example. ``preprocess=False`` hands us what the
    caller sent, so anything else is refused before it is touched, with one message whether or not
    such a file exists."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    if path is None:
        return None
    real = Path(os.path.realpath(str(path)))
    if not any(real.is_relative_to(folder) for folder in UPLOAD_DIRS):
        raise _error("Only images uploaded to this app can be analysed: upload the file itself.", "Unusable image")
    return str(real)


def _labels(model: Model, upload: Upload | None) -> list[dict | str | None]:
    """Bars per task; "Not a painting" / "Not sure" / "Unknown artist" in place of a headline that
    would claim more than the model knows (the note lists the guesses)."""
    if upload is None:
        return [None] * len(SHOWN)
    top = artattr.top_k(upload.output, model.labels, 5)
    flags = artattr.flags(upload.output, model.config)
    if flags["not_artwork"]:
        return ["Not a painting" if t in top else None for t in SHOWN]
    shown = []
    for t in SHOWN:
        if t not in top:
            shown.append(None)
        elif t == "artist" and flags["unknown_artist"]:
            shown.append("Unknown artist")
        elif t in flags["uncertain"]:
            shown.append("Not sure")
        else:
            shown.append({model.config.name(t, label): p for label, p in top[t]})
    return shown


def _note(config: artattr.ModelConfig, output: artattr.Output) -> str:
    """Say plainly what not to trust, most serious first; never call a flagged answer reliable."""
    flags = artattr.flags(output, config)
    if flags["not_artwork"]:
        return ("**This does not look like a painting — the answers below are not meaningful** "
                f"(painting score {flags['artwork_score']:.0%}).")
    lines = []
    for task in SHOWN:
        if task not in output.probs:
            continue
        p = output.probs[task]
        guesses = ", ".join(f"{config.name(task, config.tasks[task][i])} {p[i]:.0%}" for i in p.argsort()[::-1][:3])
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
    parts = [f"{task} {acc[task]:.0%}" for task in SHOWN if isinstance(acc.get(task), (int, float))]
    return f" (on held-out paintings such answers were right: {', '.join(parts)})" if parts else ""


def _class_choices(model: Model, upload: Upload | None, task: str) -> dict:
    """Dropdown update: the task's classes, most probable first, the top prediction selected."""
    labels = model.labels.get(task, [])
    if upload is None or task not in upload.output.probs:
        return gr.update(choices=[(model.config.name(task, label), label) for label in labels], value=None)
    order = upload.output.probs[task].argsort()[::-1]
    choices = [(model.config.name(task, labels[i]), labels[i]) for i in order]
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


def predict(upload: dict | str | None, model_id: str, task: str, area: str = "painting", progress=gr.Progress()):
    """Upload -> (state, artist, style, genre, note, heatmap classes). Bad input -> gr.Error.
    ``area`` "painting" finds the painting in a photo of it (``artattr.locate``), "whole" uses every pixel."""
    model_id, model, fallback = use_model(model_id, progress)
    source = _source(upload)
    if source is None:
        return None, *_labels(model, None), fallback, _class_choices(model, None, task)
    locate = area != "whole"
    try:  # decoded once here, as ``Predictor.find`` does (larger when locating): only pixels travel
        with _decoding:
            image = artattr.load_image(source, draft_size=max(DECODE_SIZE, model.config.input_size) if locate
                                       else model.config.input_size)
            whole = _display_copy(source, image)
        output = _call("run", model.dir, image, locate)  # also refuses pictures too small to judge
    except ValueError as err:
        raise _error(str(err), "Unusable image") from None
    painting = whole if output.crop is None else rectify(image, output.crop, max_side=DISPLAY_SIZE)
    state = Upload(model_id, painting, output, whole)
    note = "\n\n".join(filter(None, [fallback, _note(model.config, state.output)]))
    return state, *_labels(model, state), note, _class_choices(model, state, task)


def outline(state: Upload | None) -> Image.Image | None:
    """The whole upload with the outline of the painting the model looked at (none: it used it all)."""
    if state is None or state.upload is None:
        return None
    shown = _at_least_display_size(state.upload.copy())
    if state.output.crop is not None:
        corners = [tuple(p) for p in np.asarray(state.output.crop) * shown.size]
        ImageDraw.Draw(shown).polygon(corners, outline=(255, 40, 40), width=max(2, round(max(shown.size) / 150)))
    return shown


def _display_copy(source: str, image: Image.Image) -> Image.Image:
    """The picture heatmaps are drawn on. The model's copy is decoded and reduced for the model's input
    size, too coarse to look at: then the upload is decoded again, reduced for display size."""
    image = artattr.load_image(source, draft_size=DISPLAY_SIZE) if max(image.size) < DISPLAY_SIZE else image.copy()
    image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.BILINEAR)
    return image


def _at_least_display_size(image: Image.Image) -> Image.Image:
    """Small uploads (WikiArt thumbnails are 160 px) are enlarged for viewing; browsers show images at
    their natural size, where a 160 px heatmap is too small to read."""
    scale = DISPLAY_SIZE / max(image.size)
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)  # sharpest resampling


def classes(state: Upload | None, model_id: str, task: str) -> dict:
    """Heatmap class dropdown for a newly chosen task (no forward pass: the cached output is enough)."""
    return _class_choices(get_model(state.model_id if state else model_id or "default"), state, task)


def _heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
             compute_slow: bool, progress) -> tuple[Image.Image | None, str]:
    if state is None:
        return None, "Upload a painting to see which regions drive the answer."
    model = get_model(state.model_id)
    if task not in state.output.probs:
        raise _error(f"This model has no task {task!r}; it predicts {', '.join(state.output.probs)}.", "Unknown task")
    labels = model.labels[task]
    if label and label not in labels:
        raise _error(f"{label!r} is not one of this model's {task} classes.", "Unknown class")
    target = labels.index(label) if label else int(state.output.probs[task].argmax())
    name = METHOD_NAMES.get(method, method)
    key = (method, task, target)
    if key not in state.heatmaps:
        if method in SLOW_METHODS and not compute_slow:
            return None, f"{name} runs when you press **Explain** (about a second)."
        try:
            state.heatmaps[key] = _call("explain", model.dir, state.image, method, task, target,
                                        progress=lambda fraction, desc: progress(fraction, desc=desc))
        except ValueError as err:  # e.g. an unknown method from an API caller
            raise _error(str(err), "No heatmap") from None
        while len(state.heatmaps) > HEATMAPS_KEPT:
            state.heatmaps.popitem(last=False)
    state.heatmaps.move_to_end(key)
    prob = float(state.output.probs[task][target])
    return (_at_least_display_size(overlay(state.image, state.heatmaps[key], opacity)),
            f"{name} for {task} = **{model.config.name(task, labels[target])}** ({prob:.0%}): brighter regions raised "
            "this answer more." + METHOD_CAVEATS.get(method, ""))


def explain_heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
                    progress=gr.Progress()):
    """Heatmap for any method, slow ones included (the "Explain" button and the API)."""
    return _heatmap(state, method, task, label, opacity, True, progress)


def refresh_heatmap(state: Upload | None, method: str, task: str, label: str | None, opacity: float,
                    progress=gr.Progress()):
    """Heatmap after a settings change: fast methods recompute, slow ones only show a cached map."""
    return _heatmap(state, method, task, label, opacity, False, progress)


#: One sentence per explorer view: what the points are and what closeness means.
VIEW_NOTES = {
    "sphere": "Each point is a painting from the model's gallery, placed on a sphere by a 3-D output the model was "
              "trained (with ArcFace) to use for sorting movements: paintings close together look alike to it.",
    "umap": "Each point is a painting from the model's gallery; UMAP flattens the model's 128-number description "
            "of each painting into 3-D, keeping neighbours together: nearby points look alike to the model, "
            "distances between far-apart clusters mean little.",
}


def explore(state: Upload | None, model_id: str, view: str, color_by: str, screen_width: float | None = None):
    """3-D map of the model's gallery with the upload highlighted. ``screen_width`` is the browser
    window's width in CSS pixels (phones get a lower figure)."""
    model = get_model(state.model_id if state else model_id or "default")
    if model.gallery is None:
        return None, "No gallery in this model: the explorer and similar works need a checkpoint exported with `python -m train gallery`."
    upload = model.gallery.place(state.output) if state else None
    focus = []  # the predicted class and the neighbours' classes always get a colour
    if state is not None:
        if color_by in state.output.probs:
            focus.append(model.labels[color_by][int(state.output.probs[color_by].argmax())])
        if state.output.embedding is not None and color_by in model.gallery.labels:
            focus += [model.gallery.label(color_by, i) for i in model.gallery.search(state.output.embedding, N_SIMILAR)[0]]
    try:
        fig = embed.figure(model.gallery, view=view, color_by=color_by, upload=upload, height=_plot_height(screen_width),
                           focus=focus)
    except ValueError as err:  # a gallery built without this view or label
        return None, str(err)
    where = "The black diamond is your painting." if state else "Upload a painting to see where it lands."
    return fig, f"{VIEW_NOTES.get(view, '')} {where} Drag to turn, scroll or pinch to zoom."


def _plot_height(screen_width: float | None) -> int:
    """The explorer's height. plotly draws a 3-D scene in proportion to its height, whatever its
    width: the plot is as tall as the sphere needs to span ~85 % of the plot's width without being cut
    off, plus plotly's toolbar above it and the legend below it: 3, 6 or 12 rows for 5, 2 or 1 names a row. The plot's width follows
    the layout."""
    if not isinstance(screen_width, (int, float)) or screen_width < 200:
        return PLOT_HEIGHT
    page = min(screen_width, PAGE_WIDTH) - 64
    controls, plot = EXPLORER_MIN_WIDTHS
    width = page if page < controls + plot + 16 else page - 16 - max(controls, (page - 16) / 3)  # stacked / side by side
    legend = 70 if width >= 500 else 130 if width >= 320 else 210
    return min(PLOT_HEIGHT, round(0.9 * width) + legend + TOOLBAR_HEIGHT)


def similar(state: Upload | None, model_id: str):
    """The gallery paintings nearest to the upload: thumbnail and caption (title, date, artist, movement,
    similarity). Thumbnails are stored at 64 px; they are enlarged here with Lanczos so the larger
    view stays sharp instead of being stretched by the browser."""
    model = get_model(state.model_id if state else model_id or "default")
    if state is None or model.gallery is None or state.output.embedding is None:
        return []
    g = model.gallery
    return [(item.thumbnail.resize((4 * item.thumbnail.width, 4 * item.thumbnail.height), Image.LANCZOS),
             f"{item.title}{', ' + item.date if item.date else ''} — {g.name('artist', item.artist)}; "
             f"{g.name('style', item.style)} · similarity {item.similarity:.2f}")
            for item in embed.nearest(g, state.output.embedding, N_SIMILAR)]


#: Panel titles; ``TASK_NOUNS`` are the words for running text.
TASK_TITLES = {"artist": "Artist", "style": "Movement (style)", "genre": "Genre"}
#: What each task is called in running text.
TASK_NOUNS = {"style": "movements", "artist": "artists", "genre": "genres"}
HOW_TO_READ = (
    "**How to read this.** Each box lists the model's five likeliest answers. The percentages are calibrated: of "
    "the answers it gives with 80 %, about 8 in 10 are right. Where it is not sure, the box says **Not sure** (the "
    "answers it does give were right about 9 in 10 times for movement and genre, 8 in 10 for artist, on paintings it "
    "never trained on); it also says when a picture does not look like a painting or the artist is probably none it "
    "knows. **Why?** shows which parts of the picture drove an answer; **3D explorer** and **Similar works** show "
    "the known paintings the model finds closest. Check them before you trust a name.")


def about(model_dir: Path = DEFAULT_DIR) -> str:
    """The "About this model" panel: what the model knows, how well it did on held-back paintings
    (the checkpoint's metrics) and its limits (the model card's own section)."""
    config = artattr.read_config(model_dir)
    m = config.metrics
    known = [f"**{len(labels) - (t in config.unknown_label)} {TASK_NOUNS.get(t, t)}**" for t, labels in config.tasks.items()]
    lines = [f"This model knows {', '.join(known[:-1])} and {known[-1]}." if len(known) > 1 else f"This model knows {known[0]}."]
    if (other := config.unknown_label.get("artist")) is not None:
        lines[0] += f" A painter outside its list should get “{config.name('artist', other)}”."
    if "style" in config.tasks:
        lines.append("Movements: " + ", ".join(config.name("style", s) for s in config.tasks["style"]) + ".")
    rows = [(t, m[t]) for t in (*SHOWN, "artist_known") if isinstance(m.get(t), dict) and "top1" in m[t]]
    if rows:
        lines += ["", "On paintings held back from training, it was right this often:", "",
                  "| task | first answer right | right answer in its top 5 | paintings |", "|---|---:|---:|---:|"]
        lines += [f"| {'Artist (known artists only)' if t == 'artist_known' else TASK_TITLES.get(t, t)} | {r['top1']:.0%} | "
                  f"{r['top5']:.0%} | {r.get('n', '')} |" for t, r in rows]
    limits = _card_section(Path(model_dir) / artattr.config.CARD_FILE, "Intended use and limitations")
    if limits:
        lines += ["", "**Limits** (from the model card): " + limits]
    return "\n".join(lines)


def _card_section(card: Path, heading: str) -> str:
    """The text of one ``## heading`` section of a model card, joined into one paragraph."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    part = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0] if f"## {heading}" in text else ""
    return " ".join(part.split())


def pick_example(evt: gr.SelectData) -> str:
    """The example clicked in the examples gallery, as the upload."""
    return str(EXAMPLES[evt.index])


def _example_caption(path: Path, config: artattr.ModelConfig) -> str:
    info = EXAMPLE_INFO.get(path.name)
    if info is None:
        return path.stem
    said = ", ".join(config.name(t, info[t]) for t in ("style", "genre") if info.get(t))
    return (f"{info['title']}{', ' + info['date'] if info['date'] else ''} — {config.name('artist', info['artist'])}. "
            f"WikiArt says: {said}.")


# ---------------------------------------------------------------------------------------------------


def build_app(model_ids: list[str] | None = None) -> gr.Blocks:
    """The Blocks app; ``model_ids`` (default: ``ARTATTR_MODEL``) are offered next to the embedded model."""
    models.start()  # loads the default model while the UI is built (if app.py did not start it already)
    _offered[:] = model_choices(model_ids)
    default_config = artattr.read_config(DEFAULT_DIR)
    tasks = [t for t in SHOWN if t in default_config.tasks]
    with gr.Blocks(title="ArtAttr", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=3600)
        gr.Markdown("# ArtAttr\nWho painted it, in which movement, what genre, and why the model thinks so. "
                    "Upload, drop, paste or photograph a painting, or pick an example.")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                 label="Painting", height=360, elem_id="upload")
                examples = gr.Gallery([(str(p), _example_caption(p, default_config)) for p in EXAMPLES],
                                      label="Examples (click one)", columns=3, height="auto", allow_preview=False,
                                      object_fit="contain", elem_id="examples")
                model_dd = gr.Dropdown(list(_offered), value="default", label="Model", elem_id="model")
                area = gr.Radio([("Detected painting", "painting"), ("Whole image", "whole")], value="painting",
                                label="Analyse", elem_id="area")
                detected = gr.Image(label="What the model looks at", type="pil", format="jpeg", interactive=False,
                                    height=200, elem_id="detected")
            with gr.Column(scale=3, min_width=300):
                with gr.Row():
                    labels = [gr.Label(num_top_classes=5, label=TASK_TITLES.get(task, task), elem_id=f"label-{task}",
                                       min_width=200) for task in SHOWN]
                note = gr.Markdown(label="note", elem_id="note")
                gr.Markdown(HOW_TO_READ, elem_id="how-to-read")
                with gr.Accordion("About this model", open=False, elem_id="about"):
                    about_md = gr.Markdown(about(DEFAULT_DIR))
                gallery = gr.Gallery(label="Similar works in the model's gallery (click for a larger view)",
                                     columns=4, height="auto", object_fit="contain", elem_id="similar")
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
                    gr.HTML(HEAT_SCALE)
                    heatmap_note = gr.Markdown(label="heatmap note")
        with gr.Tab("3D explorer"), gr.Row():  # side by side on wide screens: the sphere fills a squarer panel
            with gr.Column(scale=1, min_width=EXPLORER_MIN_WIDTHS[0]):
                view = gr.Radio([("ArcFace sphere", "sphere"), ("UMAP", "umap")], value="sphere", label="View")
                color_by = gr.Radio([(TASK_TITLES[t], t) for t in TASKS], value="style",
                                    label="Colour by")
                plot_note = gr.Markdown(label="explorer note")
            with gr.Column(scale=2, min_width=EXPLORER_MIN_WIDTHS[1]):
                plot = gr.Plot(label="Embedding map", show_label=False, elem_id="explorer")

        heat_in = [state, method, task, label_dd, opacity]
        heat_out = [heatmap, heatmap_note]
        screen_width = gr.Number(None, visible=False)  # set from the browser on load, for the explorer's height
        explore_in = [state, model_dd, view, color_by, screen_width]

        def analyse(trigger, api_name: str | None):
            """Upload or model change: clear the old answers, settle the model, predict, then fill the
            panels in parallel. A bad upload stops after the clearing, so nothing stale stays on screen."""
            cleared = [state, *labels, note, heatmap, heatmap_note, plot, gallery, detected]
            event = trigger(lambda: [None] * (len(cleared) - 2) + [[], None], None, cleared, queue=False,
                            api_visibility="private", show_progress="hidden")
            event = event.then(pick_model, model_dd, model_dd, api_visibility="private")
            event = event.then(predict, [image, model_dd, task, area], [state, *labels, note, label_dd],
                               preprocess=False, api_name=api_name,
                               api_visibility="public" if api_name else "private")
            event.success(refresh_heatmap, heat_in, heat_out, api_visibility="private")
            event.success(outline, state, detected, api_visibility="private", show_progress="hidden")
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
        analyse(area.input, None)
        for control in (method.input, label_dd.input, opacity.release):
            control(refresh_heatmap, heat_in, heat_out, api_visibility="private", trigger_mode="always_last")
        color_by.input(explore, explore_in, [plot, plot_note], api_visibility="private")
        examples.select(pick_example, None, image, api_visibility="private", queue=False)
        model_dd.change(lambda m: about(get_model(m).dir), model_dd, about_md, api_visibility="private", queue=False)
        demo.load(None, None, screen_width, js="() => window.innerWidth", api_visibility="private", queue=False).then(
            explore, explore_in, [plot, plot_note], api_visibility="private")
    # Two CPU cores: two events at a time keeps both busy; more would only thrash the BLAS threads.
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


if __name__ == "__main__":
    build_app().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        css=CSS,
        js=TOAST_TITLES_JS,
        ssr_mode=False,
    )

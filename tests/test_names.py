"""Display names: every label of the default model has a reviewed one, they travel inside the
checkpoint, and every surface (library, CLI, gallery, card) shows them instead of slugs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

import artattr
from artattr.config import ModelConfig, pretty
from artattr.embed import title_from_path
from artattr.hub import DEFAULT_DIR
from train.display_names import DISPLAY, display_for
from train.display_names import main as names_main

ROOT = DEFAULT_DIR.parent.parent
#: Written by hand from catalogues, not from the table under test.
EXPECTED = {
    ("artist", "joaqu-n-sorolla"): "Joaquín Sorolla",
    ("artist", "jean-baptiste-simeon-chardin"): "Jean-Baptiste-Siméon Chardin",
    ("artist", "louise-elisabeth-vigee-le-brun"): "Élisabeth Vigée Le Brun",
    ("artist", "rembrandt"): "Rembrandt",
    ("artist", "anthony-van-dyck"): "Anthony van Dyck",
    ("artist", "paul-cezanne"): "Paul Cézanne",
    ("artist", "t.-c.-steele"): "T. C. Steele",
    ("style", "Ukiyo_e"): "Ukiyo-e",
    ("style", "Naive_Art_Primitivism"): "Naïve Art (Primitivism)",
    ("style", "Abstract_Expressionism"): "Abstract Expressionism",
    ("genre", "genre_painting"): "Genre painting",
    ("genre", "still_life"): "Still life",
}


def test_every_label_of_the_default_model_has_a_reviewed_name():
    config = artattr.read_config(DEFAULT_DIR)
    missing = [(t, label) for t, labels in config.tasks.items() for label in labels if label not in DISPLAY.get(t, {})]
    assert not missing, f"labels without a display name in train/display_names.py: {missing}"
    assert config.display == display_for(config.tasks), "run `python -m train names checkpoints/default`"
    assert {len(config.display[t]) for t in ("style", "genre")} == {11, 10} and len(config.display["artist"]) == 109
    for (task, label), name in EXPECTED.items():
        assert config.name(task, label) == name
    for task, names in config.display.items():  # no slug left: no underscores, no lower-case start
        assert all("_" not in n and n[:1].isupper() and n == n.strip() for n in names.values()), task


def test_names_round_trip_through_a_checkpoint_and_unknown_labels_fall_back(tmp_path):
    tasks = {"style": ["Ukiyo_e", "Fauvism"], "artist": ["joaqu-n-sorolla", "jean-marie-newcomer", "other"]}
    model = artattr.create_model("onelayer_cnn", tasks=tasks)
    saved = artattr.save_checkpoint(model, ModelConfig("onelayer_cnn", tasks, display=display_for(tasks)), tmp_path / "c")
    config = artattr.read_config(saved)
    assert config.display == {"style": {"Ukiyo_e": "Ukiyo-e", "Fauvism": "Fauvism"},
                              "artist": {"joaqu-n-sorolla": "Joaquín Sorolla", "other": "Another artist"}}
    assert config.name("artist", "jean-marie-newcomer") == "Jean Marie Newcomer"  # a third-party label: prettified
    card = (saved / "README.md").read_text()
    assert "Joaquín Sorolla" in card and "Ukiyo-e" in card
    (saved / "config.json").write_text(json.dumps({**json.loads((saved / "config.json").read_text()), "display": ["x"]}))
    with pytest.raises(artattr.CheckpointError, match="display"):
        artattr.read_config(saved)


def test_names_command_adds_only_the_display_key(tmp_path):
    ckpt = shutil.copytree(DEFAULT_DIR, tmp_path / "c", ignore=shutil.ignore_patterns("gallery", "*.png"))
    data = json.loads((ckpt / "config.json").read_text())
    del data["display"]
    data["some_future_key"] = {"artist": 0.5}
    (ckpt / "config.json").write_text(json.dumps(data))
    assert names_main([str(ckpt)]) == 0
    after = json.loads((ckpt / "config.json").read_text())
    assert after["some_future_key"] == {"artist": 0.5} and after["tasks"] == data["tasks"]
    assert after["display"]["artist"]["diego-velazquez"] == "Diego Velázquez"
    assert "Diego Velázquez" in (ckpt / "README.md").read_text()
    assert "frozen-trunk" in (ckpt / "README.md").read_text()  # the card's own description survived


def test_fallback_prettifier():
    assert pretty("artist", "claude-monet") == "Claude Monet"
    assert pretty("style", "Pop_Art") == "Pop Art" and pretty("genre", "nude_painting") == "Nude painting"


@pytest.mark.parametrize("path, expected", [
    ("images/Impressionism/claude-monet_the-custom-s-house.jpg", ("The Custom's House", "")),
    ("images/Cubism/jean-metzinger_composition-all-gorique-1929.jpg", ("Composition All Gorique", "1929")),
    ("images/Baroque/adriaen-van-de-venne_what-won-t-people-do-for-money.jpg", ("What Won't People Do for Money", "")),
    ("images/Abstract_Expressionism/jean-paul-riopelle_chemin-d-hiver-1973.jpg", ("Chemin d'hiver", "1973")),
    ("images/Fauvism/pyotr-konchalovsky_portrait-of-s-p-konchalovsky-with-her-daughter-1916.jpg",
     ("Portrait of S P Konchalovsky with Her Daughter", "1916")),
    ("images/Abstract_Expressionism/joan-miro_not-detected-227939.jpg", ("Untitled", "")),
])
def test_gallery_titles_from_file_names(path, expected):
    assert title_from_path(path) == expected


def test_cli_on_a_folder_writes_csv_rows_and_fails_for_bad_files(tmp_path, data_dir, val_rows, predictor):
    """Good and bad files in a folder and a subfolder: one row per good image (display name and raw
    label), a message per bad one, a count at the end, exit status 1."""
    sorolla = next(r for r in val_rows if r["artist"] == "joaqu-n-sorolla"
                   and predictor.predict(data_dir / r["path"], 1)["artist"][0][0] == "joaqu-n-sorolla")
    folder = tmp_path / "collection"
    (folder / "sub").mkdir(parents=True)
    good = {"a_sorolla.jpg": sorolla, "b.jpg": val_rows[1], "sub/c.png": val_rows[2]}
    for name, row in good.items():
        shutil.copy(data_dir / row["path"], folder / name)  # a JPEG named .png: the content decides
    (folder / "broken.jpg").write_bytes((data_dir / val_rows[3]["path"]).read_bytes()[:500])
    (folder / "notes.txt").write_text("not a picture, and not an image suffix: a folder scan ignores it")
    out_csv = tmp_path / "out.csv"

    run = subprocess.run([sys.executable, "-m", "artattr", "predict", str(folder), "--recursive", "--csv", str(out_csv),
                          "--top-k", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "broken.jpg: skipped: " in run.stderr and "truncated or corrupt" in run.stderr
    assert "3 of 4 images done, 1 skipped" in run.stderr and "Traceback" not in run.stderr
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [r["path"] for r in rows] == [str(folder / "a_sorolla.jpg"), str(folder / "b.jpg"), str(folder / "sub" / "c.png")]
    assert rows[0]["artist"] == "Joaquín Sorolla" and rows[0]["artist_label"] == "joaqu-n-sorolla"
    for r in rows:
        assert r["style"] == EXPECTED.get(("style", r["style_label"]), r["style_label"].replace("_", " "))
        assert 1 >= float(r["style_p"]) >= float(r["style_2_p"]) >= 0 and r["genre_2"] and "notes" not in r["path"]

    flat = subprocess.run([sys.executable, "-m", "artattr", "predict", str(folder), "--json", "--top-k", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    records = [json.loads(line) for line in flat.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(folder / "a_sorolla.jpg"), str(folder / "b.jpg")]  # no subfolder
    assert records[0]["predictions"]["artist"][0] | {"probability": 0} == {
        "name": "Joaquín Sorolla", "label": "joaqu-n-sorolla", "probability": 0}
    assert flat.returncode == 1

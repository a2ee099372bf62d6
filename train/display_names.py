"""Label names as art historians write them, stored in each checkpoint's ``config.json``.

Dataset labels are slugs (``joaqu-n-sorolla``, ``Naive_Art_Primitivism``, ``still_life``); the app,
the CLI and the model card show these reviewed names instead: artists as catalogues write them
(accents, particles, the name they are known by), movements as art history writes them, genres in
sentence case. The trainer writes the names of a model's own labels into its config
(``display: {task: {label: name}}``), so a checkpoint carries them to any machine;
``python -m train names CKPT`` adds them to an existing checkpoint. Labels not listed here fall
back to ``artattr.config.pretty`` (a test checks that every label of the default model is listed).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

DISPLAY: dict[str, dict[str, str]] = {
    "style": {
        "Abstract_Expressionism": "Abstract Expressionism",
        "Baroque": "Baroque",
        "Cubism": "Cubism",
        "Fauvism": "Fauvism",
        "Impressionism": "Impressionism",
        "Minimalism": "Minimalism",
        "Naive_Art_Primitivism": "Naïve Art (Primitivism)",
        "Pointillism": "Pointillism",
        "Pop_Art": "Pop Art",
        "Rococo": "Rococo",
        "Ukiyo_e": "Ukiyo-e",
    },
    "genre": {
        "abstract_painting": "Abstract painting",
        "cityscape": "Cityscape",
        "genre_painting": "Genre painting",
        "illustration": "Illustration",
        "landscape": "Landscape",
        "nude_painting": "Nude",
        "portrait": "Portrait",
        "religious_painting": "Religious painting",
        "sketch_and_study": "Sketch and study",
        "still_life": "Still life",
    },
    "artist": {
        "adriaen-van-ostade": "Adriaen van Ostade",
        "alfred-sisley": "Alfred Sisley",
        "andy-warhol": "Andy Warhol",
        "annibale-carracci": "Annibale Carracci",
        "anthony-van-dyck": "Anthony van Dyck",
        "antoine-blanchard": "Antoine Blanchard",
        "antoine-pesne": "Antoine Pesne",
        "antoine-watteau": "Antoine Watteau",
        "arkhip-kuindzhi": "Arkhip Kuindzhi",
        "auguste-rodin": "Auguste Rodin",
        "bartolome-esteban-murillo": "Bartolomé Esteban Murillo",
        "benjamin-west": "Benjamin West",
        "bernardo-bellotto": "Bernardo Bellotto",
        "berthe-morisot": "Berthe Morisot",
        "brice-marden": "Brice Marden",
        "camille-pissarro": "Camille Pissarro",
        "canaletto": "Canaletto",
        "caravaggio": "Caravaggio",
        "childe-hassam": "Childe Hassam",
        "claude-monet": "Claude Monet",
        "cy-twombly": "Cy Twombly",
        "david-burliuk": "David Burliuk",
        "david-teniers-the-younger": "David Teniers the Younger",
        "diego-velazquez": "Diego Velázquez",
        "dmitry-levitzky": "Dmitry Levitzky",
        "edgar-degas": "Edgar Degas",
        "edouard-manet": "Édouard Manet",
        "eugene-boudin": "Eugène Boudin",
        "fernand-leger": "Fernand Léger",
        "fernando-botero": "Fernando Botero",
        "francesco-guardi": "Francesco Guardi",
        "francisco-de-zurbaran": "Francisco de Zurbarán",
        "francois-boucher": "François Boucher",
        "frans-hals": "Frans Hals",
        "george-morland": "George Morland",
        "georges-braque": "Georges Braque",
        "georges-seurat": "Georges Seurat",
        "gerrit-dou": "Gerrit Dou",
        "giovanni-battista-tiepolo": "Giovanni Battista Tiepolo",
        "giovanni-boldini": "Giovanni Boldini",
        "gregoire-boonzaier": "Gregoire Boonzaier",
        "guido-reni": "Guido Reni",
        "gustave-caillebotte": "Gustave Caillebotte",
        "guy-rose": "Guy Rose",
        "hans-hofmann": "Hans Hofmann",
        "helen-frankenthaler": "Helen Frankenthaler",
        "henri-edmond-cross": "Henri-Edmond Cross",
        "henri-martin": "Henri Martin",
        "henri-matisse": "Henri Matisse",
        "henri-rousseau": "Henri Rousseau",
        "hiro-yamagata": "Hiro Yamagata",
        "hiroshige": "Utagawa Hiroshige",
        "ilya-mashkov": "Ilya Mashkov",
        "jacob-jordaens": "Jacob Jordaens",
        "james-mcneill-whistler": "James McNeill Whistler",
        "jan-steen": "Jan Steen",
        "jean-baptiste-simeon-chardin": "Jean-Baptiste-Siméon Chardin",
        "jean-honore-fragonard": "Jean-Honoré Fragonard",
        "joan-miro": "Joan Miró",
        "joaqu-n-sorolla": "Joaquín Sorolla",
        "john-henry-twachtman": "John Henry Twachtman",
        "john-singer-sargent": "John Singer Sargent",
        "joseph-wright": "Joseph Wright of Derby",
        "joshua-reynolds": "Joshua Reynolds",
        "katsushika-hokusai": "Katsushika Hokusai",
        "kazimir-malevich": "Kazimir Malevich",
        "keisai-eisen": "Keisai Eisen",
        "kitagawa-utamaro": "Kitagawa Utamaro",
        "konstantin-korovin": "Konstantin Korovin",
        "louise-elisabeth-vigee-le-brun": "Élisabeth Vigée Le Brun",
        "lovis-corinth": "Lovis Corinth",
        "marc-chagall": "Marc Chagall",
        "maria-primachenko": "Maria Prymachenko",
        "mark-tobey": "Mark Tobey",
        "mary-cassatt": "Mary Cassatt",
        "maurice-prendergast": "Maurice Prendergast",
        "maurice-quentin-de-la-tour": "Maurice Quentin de La Tour",
        "niko-pirosmani": "Niko Pirosmani",
        "nikolay-bogdanov-belsky": "Nikolay Bogdanov-Belsky",
        "pablo-picasso": "Pablo Picasso",
        "paul-cezanne": "Paul Cézanne",
        "paul-gauguin": "Paul Gauguin",
        "paul-jenkins": "Paul Jenkins",
        "paul-signac": "Paul Signac",
        "peter-paul-rubens": "Peter Paul Rubens",
        "pierre-auguste-renoir": "Pierre-Auguste Renoir",
        "pietro-longhi": "Pietro Longhi",
        "pyotr-konchalovsky": "Pyotr Konchalovsky",
        "raoul-dufy": "Raoul Dufy",
        "rembrandt": "Rembrandt",
        "robert-julian-onderdonk": "Julian Onderdonk",
        "roy-lichtenstein": "Roy Lichtenstein",
        "salvador-dali": "Salvador Dalí",
        "sam-francis": "Sam Francis",
        "stefan-luchian": "Ștefan Luchian",
        "t.-c.-steele": "T. C. Steele",
        "theo-van-rysselberghe": "Théo van Rysselberghe",
        "thomas-gainsborough": "Thomas Gainsborough",
        "utagawa-kunisada": "Utagawa Kunisada",
        "utagawa-kuniyoshi": "Utagawa Kuniyoshi",
        "valentin-serov": "Valentin Serov",
        "vladimir-borovikovsky": "Vladimir Borovikovsky",
        "willard-metcalf": "Willard Metcalf",
        "willem-de-kooning": "Willem de Kooning",
        "william-h.-johnson": "William H. Johnson",
        "william-hogarth": "William Hogarth",
        "william-merritt-chase": "William Merritt Chase",
        "winston-churchill": "Winston Churchill",
        "other": "Another artist",
    },
}


def display_for(tasks: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """The reviewed names of a model's own labels (``config.display``); unlisted labels are left out."""
    return {task: {label: DISPLAY[task][label] for label in labels if label in DISPLAY.get(task, {})}
            for task, labels in tasks.items()}


def main(argv: list[str] | None = None) -> int:
    """Write the ``display`` key of an existing checkpoint's config.json (every other key stays as it is)."""
    from artattr.checkpoint import CARD_FILE, CONFIG_FILE, ModelConfig, model_card, read_config

    parser = argparse.ArgumentParser(prog="python -m train names", description=main.__doc__)
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    path = args.checkpoint / CONFIG_FILE
    data = json.loads(path.read_text())
    data["display"] = display_for(read_config(args.checkpoint).tasks)
    order = [f.name for f in fields(ModelConfig)]  # where the trainer puts it; unknown keys stay last
    data = dict(sorted(data.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    card = args.checkpoint / CARD_FILE
    card.write_text(model_card(read_config(args.checkpoint), card_description(card.read_text() if card.is_file() else "")))
    missing = sum(len(labels) - len(data["display"][t]) for t, labels in data["tasks"].items())
    print(f"{path}: display names for {sum(map(len, data['display'].values()))} labels"
          + (f"; {missing} without one (shown with their slug prettified)" if missing else ""))
    return 0


def card_description(card: str) -> str:
    """The free-text paragraph of a model card written by ``model_card``, so a rewrite keeps it."""
    lines = card.split("\n")
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip() if start is not None else ""

"""A demo page for a trained LMKE / C-LMKE model (Gradio): rank the answers of a query, or score a triple.

    pip install "lmke_hf[demo]"
    lmke-hf demo --model outputs/clmke-umls --kg umls --data_dir ../shared/data     # http://127.0.0.1:7860

A C-LMKE (link prediction) model gets a page that ranks every entity for `(entity, relation, ?)` (predict tails) or
`(?, relation, entity)` (predict heads). The given entity is one of the model's, typed by id or name with
autocomplete, or a new one described by a name and a description (added with `model.add_entities`: the inductive
case). The answers come as a table (rank, entity id, name, score, known); with a knowledge graph (`kg`) the known
column names the split in which an answer is already a true triple of the graph. An LMKE (triple classification)
model gets a page that scores `(head, relation, tail)`: p(true) and its label at a threshold. An unknown id or name
shows the model's did-you-mean message on the page.

The page's logic is plain Python (`LinkPredictionDemo`, `TripleClassificationDemo`: callbacks that return table
rows and a message), so it is tested without a browser; gradio is imported only inside `build_demo` and `launch`, so
`import lmke_hf` never needs it. The page asks nothing of the internet (no analytics, no share link).

As a Hugging Face Space, `app.py` is

    from lmke_hf.demo import build_demo

    build_demo("your-org/clmke-umls", kg="your-org/umls-kg").launch()

with a `requirements.txt` that installs lmke_hf with its demo extra (`lmke_hf[demo]`). `kg` is optional (a Hub
dataset written by `lmke-hf prepare --push_to_hub`, a folder, or a short name with `data_dir`).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import re
import threading

import numpy as np

from .errors import UsageError
from .loading import check_same_kg, checkpoint_source, flag_errors, load_model, local_folder

logger = logging.getLogger("lmke_hf.demo")

INSTALL_HINT = 'pip install "lmke_hf[demo]"'
# Up to this many entities the choices ship with the page and are filtered in the browser; above it (FB13: 75k)
# the page would grow by megabytes, so the server suggests matches as the user types instead.
MAX_CHOICES = 50_000
SUGGESTIONS = 50  # matches offered per keystroke for a large graph
DIRECTIONS = {"tail": "predict tails: (entity, relation, ?)", "head": "predict heads: (?, relation, entity)"}
ENTITY_SOURCES = {"known": "an entity of the model", "new": "a new entity (name + description)"}
ANSWER_HEADERS = ["rank", "entity", "name", "score", "known"]
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~])")
_INPUT_ERRORS = (KeyError, ValueError, TypeError, IndexError)  # a user's typo or bad number, not a bug


def _escape(text: str) -> str:
    """`text` shown verbatim in a Markdown component (ids and names hold `_`, `*`, `<`)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def _message(error: BaseException) -> str:
    """An exception's own message (a KeyError's `str` would wrap it in quotes)."""
    return str(error.args[0]) if error.args else type(error).__name__


def _error(error: BaseException) -> str:
    return f"**Error:** {_escape(_message(error))}"


def _whole_number(value, name: str) -> int:
    """A count typed into the page (a float from a slider or number box) as an int."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
    return int(value)


def _label(entity_id: str, name: str) -> str:
    return f"{name} ({entity_id})" if name and name != entity_id else entity_id


def _load_kg(kg, data_dir=None):
    if kg is None or not isinstance(kg, (str, os.PathLike)):
        return kg  # None, or a KnowledgeGraph already
    from .kg import load_kg

    local_folder(kg)  # a mistyped folder is reported as missing, not asked of the Hub
    return load_kg(os.fspath(kg), data_dir=data_dir)


class _Demo:
    """What both pages share: the model, the optional KG (checked to be the model's) and its known-triple indices."""

    def __init__(self, model, kg=None):
        self.model = model
        self.kg = kg
        self.tokenizer = model.load_kg_tokenizer()
        if kg is not None:
            check_same_kg(self.tokenizer, kg, getattr(model, "name_or_path", None) or None)
        self._search = (np.array([], dtype=str), np.array([], dtype=str))  # ids and names lowercased, for `suggest`
        self._indices = {}  # (split, direction) -> AnswerIndex of the KG's true triples
        self._lock = threading.Lock()  # gradio calls back from worker threads; add_entities changes the model

    @property
    def title(self) -> str:
        return (
            os.path.basename(os.path.normpath(self.model.name_or_path))
            if self.model.name_or_path
            else type(self.model).__name__
        )

    def describe(self) -> str:
        """The line under the page's title: the model, its size, the KG."""
        tok = self.tokenizer
        graph = (
            f"Answers already true in the knowledge graph **{_escape(self.kg.name)}** are marked with their split."
            if self.kg is not None
            else "No knowledge graph given (`kg` / `--kg`): known answers are not marked."
        )
        return f"`{self.title}`: {tok.num_entities} entities, {tok.num_relations} relations. {graph}"

    def choices(self, kind: str) -> list[tuple[str, str]]:
        """`(label, id)` of every entity or relation (label "name (id)"), for the page's dropdowns."""
        count = self.tokenizer.num_entities if kind == "entity" else self.tokenizer.num_relations
        ids = self.tokenizer.entity_ids if kind == "entity" else self.tokenizer.relation_ids
        return [(self._show(k, kind), ids[k]) for k in range(count)]

    def suggest(self, text: str, limit: int = SUGGESTIONS) -> list[tuple[str, str]]:
        """Up to `limit` entities whose id or name starts with `text`, then those that contain it, then names that
        resemble it (case ignored), as `(label, id)`: the autocomplete of a graph too large to ship every choice."""
        text = (text or "").strip().lower()
        if not text:
            return []
        tok = self.tokenizer
        if len(self._search[0]) != tok.num_entities:  # built once; add_entities appends
            self._search = tuple(
                np.char.lower(np.array(texts, dtype=str)) for texts in (tok.entity_ids, tok.entity_names)
            )
        ids, names = self._search
        starts = np.char.startswith(ids, text) | np.char.startswith(names, text)
        contains = (np.char.find(ids, text) >= 0) | (np.char.find(names, text) >= 0)
        found = np.concatenate([np.flatnonzero(starts), np.flatnonzero(contains & ~starts)])[:limit].tolist()
        if not found:
            close = difflib.get_close_matches(text, names.tolist(), n=limit, cutoff=0.6)  # best first
            found = [int(k) for name in dict.fromkeys(close) for k in np.flatnonzero(names == name)]
        return [(self._show(k, "entity"), tok.entity_ids[k]) for k in found[:limit]]

    def _resolve(self, value, kind: str) -> int:
        """Row index of an entity or relation given by id, name or row index: the lookup `predict` uses
        (`LmkeTokenizer.entity_row` / `relation_row`), so an unknown one raises its did-you-mean KeyError."""
        return self.tokenizer.entity_row(value) if kind == "entity" else self.tokenizer.relation_row(value)

    def _show(self, index: int, kind: str) -> str:
        tok = self.tokenizer
        ids, names = (tok.entity_ids, tok.entity_names) if kind == "entity" else (tok.relation_ids, tok.relation_names)
        return _label(ids[index], names[index])

    def _known_split(self, given: int, relation: int, answers, direction: str) -> list[str]:
        """For each answer index: the first KG split (train, validation, test) in which `(given, relation, answer)`
        is a true triple (read in `direction`), or "" (also for entities added after the KG)."""
        answers = np.asarray(answers, dtype=np.int64)
        marks = [""] * len(answers)
        size = self.kg.num_entities if self.kg is not None else 0
        if self.kg is None or given >= size:
            return marks
        inside = answers < size
        for split in [s for s in ("train", "validation", "test") if s in self.kg.splits]:
            if (split, direction) not in self._indices:
                self._indices[split, direction] = self.kg.answer_index([split], direction)
            hit = np.zeros(len(answers), dtype=bool)
            hit[inside] = self._indices[split, direction].contains(given, relation, answers[inside])
            marks = [m or (split if h else "") for m, h in zip(marks, hit.tolist())]
        return marks


class LinkPredictionDemo(_Demo):
    """The C-LMKE page's logic: rank all entities for a query whose entity is known or new.

    Example::

        >>> demo = LinkPredictionDemo(model, kg)                                 # doctest: +SKIP
        >>> rows, message = demo.answer("paris", "located in", "tail", 5)        # doctest: +SKIP
        >>> rows[0]                                                               # doctest: +SKIP
        [1, '/m/e01', 'france', 0.9731, 'train']
    """

    def __init__(self, model, kg=None):
        super().__init__(model, kg)
        self._new = {}  # (name, description) -> id of an entity this page added
        model.load_or_build_entity_index()  # the keys now, not on the first click

    def add_entity(self, name: str, description: str = "") -> str:
        """The id of a new entity with this name and description, added to the model (`add_entities`) on first use;
        the same name and description again give the same entity. Ids are "new:1", "new:2", ..."""
        name, description = (name or "").strip(), (description or "").strip()
        if not name:
            raise ValueError("A new entity needs a name (and, better, a description): the name field is empty.")
        if (name, description) not in self._new:
            entity_id = f"new:{len(self._new) + 1}"
            with self._lock:
                self.model.add_entities([entity_id], [name], [description])
            self._new[name, description] = entity_id
        return self._new[name, description]

    def rank(self, entity, relation, direction: str = "tail", top_k: int = 10) -> list[dict]:
        """`model.predict` for `(entity, relation, ?)` (direction "tail") or `(?, relation, entity)` ("head"): the
        `top_k` answers `{"entity_id", "name", "score", "known"}`, best first, `known` the KG split holding the answer
        as a true triple ("" when none does, or no KG was given).

        Raises:
            KeyError: an unknown entity or relation (the model's did-you-mean message).
            ValueError, TypeError: a bad direction or top_k.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"`direction` must be one of {sorted(DIRECTIONS)}, got {direction!r}.")
        given, rel = self._resolve(entity, "entity"), self._resolve(relation, "relation")
        with self._lock:
            answers = self.model.predict(
                relation=rel, top_k=top_k, **({"head": given} if direction == "tail" else {"tail": given})
            )
        marks = self._known_split(
            given, rel, self.tokenizer.entity_to_index([a["entity_id"] for a in answers]), direction
        )
        return [{**a, "known": mark} for a, mark in zip(answers, marks)]

    def answer(self, entity, relation, direction="tail", top_k=10, source="known", new_name="", new_description=""):
        """The page's callback: `(rows, message)`, rows `[rank, entity id, name, score (4 decimals), known]`; on a
        mistake (unknown name, empty new name, bad top_k) no rows and the error as the message."""
        try:
            if source == "new":
                entity = self.add_entity(new_name, new_description)
            elif source != "known":
                raise ValueError(f"`source` must be one of {sorted(ENTITY_SOURCES)}, got {source!r}.")
            elif not (entity or "").strip():
                raise ValueError("Choose or type an entity (an id or a name), or describe a new one.")
            given, rel = self._resolve(entity.strip(), "entity"), self._resolve((relation or "").strip(), "relation")
            answers = self.rank(given, rel, direction, _whole_number(top_k, "top_k"))
        except _INPUT_ERRORS as err:
            return [], _error(err)
        rows = [[k + 1, a["entity_id"], a["name"], round(a["score"], 4), a["known"]] for k, a in enumerate(answers)]
        shown, relation_name = self._show(given, "entity"), self._show(rel, "relation")
        query = f"({shown}, {relation_name}, ?)" if direction == "tail" else f"(?, {relation_name}, {shown})"
        message = f"Top {len(rows)} of {self.tokenizer.num_entities} entities for {_escape(query)}"
        if self.kg is not None and given < self.kg.num_entities:
            message += f"; {sum(bool(a['known']) for a in answers)} already true in {_escape(self.kg.name)}"
        elif self.kg is not None:
            message += f"; the entity is new, so no answer is known in {_escape(self.kg.name)}"
        return rows, message + "."


class TripleClassificationDemo(_Demo):
    """The LMKE page's logic: p(true) of a triple and its label.

    Example::

        >>> TripleClassificationDemo(model).score("paris", "located in", "france")   # doctest: +SKIP
        '**true**: p(true) = 0.9312 at threshold 0.5 ...'
    """

    def classify(self, head, relation, tail, threshold: float = 0.5) -> dict:
        """`model.predict` of one triple (`{"head", "relation", "tail", "score", "is_true"}`), with `known`: the KG
        split holding it as a true triple, or ""."""
        h, r, t = self._resolve(head, "entity"), self._resolve(relation, "relation"), self._resolve(tail, "entity")
        (row,) = self.model.predict(h, r, t, threshold=float(threshold))
        return {**row, "known": self._known_split(h, r, [t], "tail")[0]}

    def score(self, head, relation, tail, threshold=0.5) -> str:
        """The page's callback: the verdict as Markdown, or the error."""
        try:
            if threshold is None or not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"`threshold` must lie in [0, 1], got {threshold!r}.")
            row = self.classify(*((v or "").strip() for v in (head, relation, tail)), threshold=float(threshold))
        except _INPUT_ERRORS as err:
            return _error(err)
        triple = ", ".join(
            self._show(self._resolve(row[k], kind), kind)
            for k, kind in (("head", "entity"), ("relation", "relation"), ("tail", "entity"))
        )
        verdict = (
            f"**{'true' if row['is_true'] else 'false'}**: p(true) = {row['score']:.4f} at threshold "
            f"{float(threshold):g} for {_escape(f'({triple})')}."
        )
        if self.kg is not None:
            verdict += f" In {_escape(self.kg.name)}: " + (
                f"a true triple of its {row['known']} split." if row["known"] else "not a known true triple."
            )
        return verdict


def make_demo(model, kg=None) -> LinkPredictionDemo | TripleClassificationDemo:
    """The page logic that fits `model` (C-LMKE: link prediction, LMKE: triple classification)."""
    from .modeling_clmke import ClmkeForLinkPrediction
    from .modeling_lmke import LmkeForTripleClassification

    if isinstance(model, ClmkeForLinkPrediction):
        return LinkPredictionDemo(model, kg)
    if isinstance(model, LmkeForTripleClassification):
        return TripleClassificationDemo(model, kg)
    raise TypeError(
        f"The demo shows a ClmkeForLinkPrediction or LmkeForTripleClassification model, got {type(model).__name__}."
    )


def _trained_on(model: str) -> str:
    """A hint naming the KG a local training run was trained on (its training_args.json), or ""."""
    import json

    try:
        info = json.loads(open(os.path.join(os.path.expanduser(model), "training_args.json"), encoding="utf-8").read())
        dataset = info.get("kg", {}).get("name") or info["args"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f"; it was trained on {dataset!r}: add --kg {dataset} (with --data_dir for a short name) to mark them"


def _place(model, device=None) -> None:
    import torch

    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _import_gradio():
    try:
        import gradio
    except ImportError as err:
        raise ImportError(f"The demo page needs gradio, which is not installed: {INSTALL_HINT}") from err
    return gradio


def _entity_box(gr, demo: _Demo, label: str, elem_id: str, max_choices: int):
    """A dropdown that accepts typed ids and names: every choice shipped with the page when the graph is small,
    suggestions from the server as the user types when it is large."""
    large = demo.tokenizer.num_entities > max_choices
    box = gr.Dropdown(
        choices=[] if large else demo.choices("entity"),
        value=None,
        label=label,
        allow_custom_value=True,
        filterable=True,
        elem_id=elem_id,
        info="an id or a name" + (" (type to see matches)" if large else ""),
    )
    if large:

        def suggest(data):
            return gr.update(choices=demo.suggest(data.input_value))

        suggest.__annotations__ = {"data": gr.KeyUpData}  # gradio passes the typed text to a parameter of this type
        box.key_up(suggest, None, box, show_progress="hidden")
    return box


def _link_prediction_page(gr, demo: LinkPredictionDemo, max_choices: int) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            source = gr.Radio(
                [(v, k) for k, v in ENTITY_SOURCES.items()],
                value="known",
                label="The given entity is",
                elem_id="source",
            )
            entity = _entity_box(gr, demo, "Entity", "entity", max_choices)
            with gr.Group(visible=False) as new_group:
                new_name = gr.Textbox(label="New entity: name", elem_id="new-name")
                new_description = gr.Textbox(label="New entity: description", lines=3, elem_id="new-description")
            relation = gr.Dropdown(
                choices=demo.choices("relation"),
                value=None,
                label="Relation",
                allow_custom_value=True,
                filterable=True,
                elem_id="relation",
            )
            direction = gr.Radio(
                [(v, k) for k, v in DIRECTIONS.items()], value="tail", label="Direction", elem_id="direction"
            )
            top_k = gr.Slider(
                1,
                min(100, demo.tokenizer.num_entities),
                value=min(10, demo.tokenizer.num_entities),
                step=1,
                label="top_k",
                elem_id="top-k",
            )
            button = gr.Button("Rank", variant="primary", elem_id="run")
        with gr.Column(scale=3):
            message = gr.Markdown(elem_id="message")
            table = gr.Dataframe(
                headers=ANSWER_HEADERS,
                datatype=["number", "str", "str", "number", "str"],
                interactive=False,
                label="Answers, best first",
                elem_id="answers",
            )
    source.change(
        lambda s: (gr.update(visible=s == "known"), gr.update(visible=s == "new")), source, [entity, new_group]
    )

    def run(*values):
        rows, text = demo.answer(*values)
        return {"headers": ANSWER_HEADERS, "data": rows}, text

    button.click(run, [entity, relation, direction, top_k, source, new_name, new_description], [table, message])


def _triple_classification_page(gr, demo: TripleClassificationDemo, max_choices: int) -> None:
    with gr.Row():
        head = _entity_box(gr, demo, "Head", "head", max_choices)
        relation = gr.Dropdown(
            choices=demo.choices("relation"),
            value=None,
            label="Relation",
            allow_custom_value=True,
            filterable=True,
            elem_id="relation",
        )
        tail = _entity_box(gr, demo, "Tail", "tail", max_choices)
    threshold = gr.Number(
        0.5,
        minimum=0,
        maximum=1,
        step=0.05,
        label="Threshold (the paper's 0.5; a run's tuned ones are in its thresholds.json)",
        elem_id="threshold",
    )
    button = gr.Button("Score", variant="primary", elem_id="run")
    verdict = gr.Markdown(elem_id="message")
    button.click(demo.score, [head, relation, tail, threshold], verdict)


def build_demo(
    model_or_path, kg=None, *, data_dir=None, revision=None, token=None, device=None, max_choices: int = MAX_CHOICES
):
    """The Gradio page (`gradio.Blocks`, not launched) of a trained model.

    Args:
        model_or_path: a `ClmkeForLinkPrediction` / `LmkeForTripleClassification`, or a saved folder or Hub id of one
            (read with `load_model`, placed on `device`: default CUDA when available).
        kg: the `KnowledgeGraph` the model was trained on, or its name / folder / Hub dataset id (`load_kg`, short names
            looked up in `data_dir`); None: known answers are not marked.
        revision, token: Hub revision and token of `model_or_path`.
        max_choices: graphs with more entities get server-side suggestions instead of every choice in the page.

    Raises:
        ImportError: gradio is not installed (the message says how to install it).
        FileNotFoundError, OSError, ValueError: see `load_model`, `load_kg`, `check_same_kg`.

    Example::

        >>> build_demo("outputs/clmke-umls", kg="umls", data_dir="data").launch()     # doctest: +SKIP
    """
    gr = _import_gradio()
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model, tokenizer = load_model(model_or_path, revision=revision, token=token)
        model.attach_tokenizer(tokenizer)
        _place(model, device)
    demo = make_demo(model, _load_kg(kg, data_dir))
    link = isinstance(demo, LinkPredictionDemo)
    task = "link prediction (C-LMKE)" if link else "triple classification (LMKE)"
    with gr.Blocks(title=f"{demo.title}: {task}", analytics_enabled=False) as page:
        gr.Markdown(f"## {_escape(demo.title)}: {task}\n{demo.describe()}")
        (_link_prediction_page if link else _triple_classification_page)(gr, demo, max_choices)
    page.lmke_demo = demo  # the page's logic, for tests and scripts
    return page


def launch(
    model_or_path,
    kg=None,
    *,
    data_dir=None,
    host: str = "127.0.0.1",
    port: int | None = None,
    revision=None,
    token=None,
    **launch_kwargs,
):
    """Builds the page (`build_demo`) and serves it at `http://host:port` (default port: gradio's 7860 or the next
    free one) without a share link; blocks until stopped unless `prevent_thread_lock=True`. Returns the page."""
    page = build_demo(model_or_path, kg, data_dir=data_dir, revision=revision, token=token)
    page.launch(server_name=host, server_port=port, share=False, **launch_kwargs)
    return page


# ---------------------------------------------------------------------------------------------------- lmke-hf demo
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve a demo page (Gradio) of a trained LMKE / C-LMKE model: rank the "
        "answers of a query, or score a triple."
    )
    a = parser.add_argument
    a("--model", required=True, help="Saved output folder or Hub repo id of a trained LMKE / C-LMKE model.")
    a(
        "--kg",
        default=None,
        help="The KG the model was trained on (short name, folder or Hub dataset id): answers already "
        "true in it are marked. Default: none marked.",
    )
    a("--data_dir", default=None, help="Where short --kg names are looked up (default: $LMKE_HF_DATA_DIR).")
    a("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: every interface of this machine).")
    a("--port", type=int, default=None, help="Port to serve on (default: 7860, or the next free one).")
    a("--revision", default=None, help="Hub revision (branch, tag or commit) of --model.")
    a("--token", default=None, help="Hub token for private repos (default: the cached login).")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        build_parser().error(f"argument --port: {args.port} is no port; use 1-65535 (or leave it out for 7860).")
    return args


def main(args):
    """`lmke-hf demo`: checks gradio and the flags, then serves the page until stopped (Ctrl+C)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's checks that its own server is up
    try:
        _import_gradio()
    except ImportError as err:
        raise UsageError(f"lmke-hf demo: {err}") from None
    with flag_errors("--model"):
        checkpoint_source(args.model)  # a mistyped folder stops here, before the KG is read
    kg = None
    if args.kg is not None:
        with flag_errors("--kg"):
            kg = _load_kg(args.kg, args.data_dir)
    else:
        logger.info(
            "no --kg: answers already true in the model's knowledge graph are not marked%s", _trained_on(args.model)
        )
    with flag_errors("--model"):
        model, tokenizer = load_model(args.model, args.revision, args.token)
    if kg is not None:
        with flag_errors("--kg"):
            check_same_kg(tokenizer, kg, args.model)
    model.attach_tokenizer(tokenizer)
    _place(model)
    return launch(model, kg, host=args.host, port=args.port)


__all__ = ["LinkPredictionDemo", "TripleClassificationDemo", "build_demo", "launch", "make_demo"]


if __name__ == "__main__":
    import sys

    from .cli import run_program

    sys.exit(run_program(sys.modules[__name__]))

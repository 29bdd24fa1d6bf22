"""The demo page (issue 19 item 5): its callbacks on tiny trained runs, the `lmke-hf demo` command, and a real
headless Chromium driving the page (skipped, saying what to install, where gradio, selenium or Chromium is missing)."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from lmke_hf import cli, load_model
from lmke_hf.demo import LinkPredictionDemo, TripleClassificationDemo, build_demo, make_demo
from lmke_hf.kg import load_kg

from helpers import cli_refusal

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
INSTALL_DEMO = 'pip install "lmke_hf[demo]" (or pip install gradio)'
INSTALL_BROWSER = "apt-get install -y chromium chromium-driver"


def _require(module: str, install: str, why: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not installed, so {why} cannot run; install it with: {install}")


def _plain(markdown: str) -> str:
    """A message of the page without its Markdown escapes and emphasis (what a reader sees)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("**", "")


def _load(run):
    model, tokenizer = load_model(run)
    model.attach_tokenizer(tokenizer)
    return model


@pytest.fixture(scope="module")
def clmke(clmke_run):
    """The tiny C-LMKE run's folder and a model loaded from it (shared: tests that add entities load their own)."""
    run, _ = clmke_run
    return run, _load(run)


@pytest.fixture(scope="module")
def lmke_run(lmke_script, kg_dir, tiny_bert_dir, tmp_path_factory):
    from helpers import _common

    out = tmp_path_factory.mktemp("lmke_demo") / "run"
    lmke_script.main(lmke_script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 2)))
    return out


@pytest.fixture(scope="module")
def kg(kg_dir):
    return load_kg(str(kg_dir))


def _true_split(kg, h: int, r: int, t: int) -> str:
    """Brute force: the first split of `kg` holding (h, r, t), or ""."""
    for split in ("train", "validation", "test"):
        if any(tuple(row) == (h, r, t) for row in kg.triples(split).tolist()):
            return split
    return ""


# ---------------------------------------------------------------------------------------------------- the callbacks
@pytest.mark.parametrize("direction", ["tail", "head"])
def test_ranked_rows_are_what_predict_ranks_with_known_triples_marked(clmke, kg, direction):
    _, model = clmke
    demo = LinkPredictionDemo(model, kg)
    tok = model.load_kg_tokenizer()
    h, r, t = kg.triples("train")[0].tolist()  # every entity is ranked (top_k 12), so the known answers show
    given = h if direction == "tail" else t
    rows, message = demo.answer(tok.entity_names[given], tok.relation_ids[r], direction, 12)  # by name, by id
    query = {"head": int(given)} if direction == "tail" else {"tail": int(given)}
    expected = model.predict(relation=tok.relation_ids[r], top_k=12, **query)
    assert [row[0] for row in rows] == list(range(1, 13))
    assert [row[1:4] for row in rows] == [[e["entity_id"], e["name"], round(e["score"], 4)] for e in expected]
    index = tok.entity_to_index([e["entity_id"] for e in expected])
    marks = [
        _true_split(kg, int(given), r, int(a)) if direction == "tail" else _true_split(kg, int(a), r, int(given))
        for a in index
    ]
    assert [row[4] for row in rows] == marks and any(marks)
    assert _plain(message).startswith(f"Top 12 of {tok.num_entities} entities for ")
    assert f"{sum(map(bool, marks))} already true in {kg.name}" in _plain(message)


def test_without_a_kg_nothing_is_marked(clmke):
    _, model = clmke
    tok = model.load_kg_tokenizer()
    rows, message = LinkPredictionDemo(model).answer(tok.entity_ids[0], tok.relation_ids[0], "tail", 3)
    assert [row[1] for row in rows] == [e["entity_id"] for e in model.predict(head=0, relation=0, top_k=3)]
    assert [row[4] for row in rows] == ["", "", ""] and "already true" not in message


def test_unknown_names_show_the_models_did_you_mean_message(clmke, kg):
    _, model = clmke
    tok = model.load_kg_tokenizer()
    demo = LinkPredictionDemo(model, kg)
    typo = tok.entity_names[0][:-1] + "x"  # one letter off a name
    with pytest.raises(KeyError) as raised:
        model.predict(head=typo, relation=tok.relation_ids[0])
    rows, message = demo.answer(typo, tok.relation_ids[0], "tail", 5)
    assert rows == [] and _plain(message) == f"Error: {raised.value.args[0]}"
    assert f"Did you mean '{tok.entity_names[0]}'" in _plain(message)
    rows, message = demo.answer(tok.entity_ids[0], "located inn", "tail", 5)
    assert rows == [] and "Unknown relation 'located inn'" in _plain(message) and "'located in'" in _plain(message)


BAD_INPUTS = [  # (what, answer() arguments, what the message says)
    ("no entity", ("", "/r/located", "tail", 5), "Choose or type an entity"),
    ("fractional top_k", ("/m/e00", "/r/located", "tail", 2.5), "`top_k` must be a whole number, got 2.5"),
    ("top_k 0", ("/m/e00", "/r/located", "tail", 0), "`top_k` must be >= 1, got 0"),
    ("empty top_k", ("/m/e00", "/r/located", "tail", None), "`top_k` must be a whole number, got None"),
    ("direction", ("/m/e00", "/r/located", "sideways", 5), "`direction` must be one of ['head', 'tail']"),
    ("new entity without a name", ("", "/r/located", "tail", 5, "new", " ", "a thing"), "A new entity needs a name"),
]


@pytest.mark.parametrize("arguments,says", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_message_not_a_crash(clmke, arguments, says):
    _, model = clmke
    rows, message = LinkPredictionDemo(model).answer(*arguments)
    assert rows == [] and _plain(message).startswith("Error: ") and says in _plain(message)


def test_a_new_entity_is_added_once_and_ranked_like_predict(clmke, kg):
    run, _ = clmke
    model = _load(run)  # add_entities changes the model
    tok = model.load_kg_tokenizer()
    before = tok.num_entities
    demo = LinkPredictionDemo(model, kg)
    name, description = "rome", "rome is an old city in italy"
    rows, message = demo.answer(None, "/r/located", "tail", 4, "new", name, description)
    assert tok.num_entities == before + 1 and tok.entity_ids[-1] == "new:1"
    assert (tok.entity_names[-1], tok.entity_descriptions[-1]) == (name, description)
    assert [row[1:4] for row in rows] == [
        [e["entity_id"], e["name"], round(e["score"], 4)]
        for e in model.predict(head="new:1", relation="/r/located", top_k=4)
    ]
    assert all(row[4] == "" for row in rows) and "the entity is new, so no answer is known in tinykg" in _plain(message)
    assert "(rome (new:1), located in (/r/located), ?)" in _plain(message)
    again, _ = demo.answer("", "/r/located", "head", 4, "new", name, description)
    assert tok.num_entities == before + 1  # the same description is the same entity
    assert [row[1] for row in again] == [
        e["entity_id"] for e in model.predict(tail="new:1", relation="/r/located", top_k=4)
    ]
    demo.answer("", "/r/located", "tail", 4, "new", name, "rome is a new city")
    assert tok.entity_ids[-1] == "new:2"


def test_suggestions_match_prefixes_then_substrings_then_near_names(clmke):
    _, model = clmke
    demo = LinkPredictionDemo(model)
    tok = model.load_kg_tokenizer()
    assert demo.suggest("PARIS")[0] == (f"{tok.entity_names[0]} ({tok.entity_ids[0]})", tok.entity_ids[0])
    assert [i for _, i in demo.suggest("/m/e0")] == tok.entity_ids[:10]
    assert {i for _, i in demo.suggest("city")} == {i for i, n in zip(tok.entity_ids, tok.entity_names) if "city" in n}
    assert [i for _, i in demo.suggest("paris is a city of germani")][0] == tok.entity_ids[0]  # the closest first
    assert demo.suggest("  ") == [] and len(demo.suggest("/m/", limit=3)) == 3


def test_triple_classification_scores_like_predict(lmke_run, kg):
    model = _load(lmke_run)
    tok = model.load_kg_tokenizer()
    demo = make_demo(model, kg)
    assert isinstance(demo, TripleClassificationDemo)
    h, r, t = kg.triples("train")[0].tolist()
    (expected,) = model.predict(h, r, t)
    verdict = _plain(demo.score(tok.entity_names[h], tok.relation_ids[r], tok.entity_ids[t], 0.5))
    label = "true" if expected["score"] > 0.5 else "false"
    assert verdict.startswith(
        f"{label}: p(true) = {expected['score']:.4f} at threshold 0.5 for ({tok.entity_names[h]} ({tok.entity_ids[h]}), "
    )
    assert verdict.endswith("In tinykg: a true triple of its train split.")
    assert _plain(demo.score(tok.entity_ids[h], tok.relation_ids[r], tok.entity_ids[t], 1.0)).startswith("false: ")
    assert (
        _plain(demo.score(tok.entity_ids[h], tok.relation_ids[r], tok.entity_ids[t], 1.5))
        == "Error: `threshold` must lie in [0, 1], got 1.5."
    )
    assert "Did you mean" in _plain(demo.score(tok.entity_names[h] + "s", tok.relation_ids[r], tok.entity_ids[t]))


@pytest.mark.filterwarnings("ignore:.*empty description")  # the toy KG's entity without a description
def test_a_kg_of_other_entities_is_refused(clmke, toy_kg_dir):
    _, model = clmke
    with pytest.raises(ValueError, match="trained on other entities than the KG 'toy'"):
        LinkPredictionDemo(model, load_kg(str(toy_kg_dir)))


# ---------------------------------------------------------------------------------------------------- gradio stays optional
def test_the_demo_module_imports_without_gradio(monkeypatch):
    """`lmke_hf.demo` run afresh where `import gradio` fails: only `build_demo` / `launch` need gradio (and
    `import lmke_hf` does not import the demo module at all)."""
    import importlib.util

    import lmke_hf.demo

    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets where it is not installed
    spec = importlib.util.spec_from_file_location("lmke_hf._demo_without_gradio", lmke_hf.demo.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LinkPredictionDemo.__name__ == "LinkPredictionDemo"
    with pytest.raises(
        ImportError, match=re.escape('needs gradio, which is not installed: pip install "lmke_hf[demo]"')
    ):
        module.build_demo("unused")
    package = ast.parse(Path(lmke_hf.__file__).read_text())
    assert not [n for n in ast.walk(package) if isinstance(n, ast.ImportFrom) and (n.module or "").endswith("demo")]


def test_demo_command_without_gradio_says_how_to_install_it(clmke, monkeypatch, capsys):
    run, _ = clmke
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets where it is not installed
    message = cli_refusal(capsys, ["demo", "--model", run])
    assert message == 'lmke-hf demo: The demo page needs gradio, which is not installed: pip install "lmke_hf[demo]"'


def test_demo_command_names_a_missing_model_folder_and_kg(clmke, tmp_path, capsys):
    _require("gradio", INSTALL_DEMO, "the demo command")
    run, _ = clmke
    assert cli_refusal(capsys, ["demo", "--model", tmp_path / "no_run"]).startswith(
        f"--model '{tmp_path / 'no_run'}': no such folder"
    )
    assert cli_refusal(capsys, ["demo", "--model", run, "--kg", tmp_path / "no_kg"]).startswith(
        f"--kg '{tmp_path / 'no_kg'}': no such folder"
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--model", str(run), "--port", "70000"])
    assert exit_info.value.code == 2


def test_demo_command_help_needs_no_gradio(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: lmke-hf demo ")


def test_building_the_page_asks_nothing_of_the_network(clmke, kg, no_network):
    _require("gradio", INSTALL_DEMO, "the page")
    run, _ = clmke
    page = build_demo(str(run), kg)  # a folder and a KG object: loaded, checked, laid out
    assert isinstance(page.lmke_demo, LinkPredictionDemo) and page.lmke_demo.kg is kg
    assert not no_network


# ---------------------------------------------------------------------------------------------------- a real browser
def _browser_paths() -> tuple[str, str]:
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(
            what
            for what, path in (("a Chromium browser (chromium)", browser), ("chromedriver", driver))
            if path is None
        )
        pytest.skip(
            f"{missing} not found on PATH, so the page cannot be driven in a browser; install with: {INSTALL_BROWSER}"
        )
    return browser, driver


def _start_chromium(webdriver, browser: str, driver: str, profile: Path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(
        service=Service(driver), options=options
    )  # the local chromedriver: Selenium downloads nothing


def _choose(page, By, wait, elem_id: str, text: str, label: str | None = None) -> None:
    """Types `text` into the dropdown `#elem_id`, then clicks the suggestion `label` (None: keeps the typed text)."""
    from selenium.webdriver.common.keys import Keys

    box = page.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")  # one call per chord: a modifier stays down until its call ends
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text)
    if label is None:
        box.send_keys(Keys.ENTER)
        return
    option = f'#{elem_id} [data-testid=dropdown-option][aria-label="{label}"]'
    wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, option))
    page.find_element(By.CSS_SELECTOR, option).click()


def _loopback_only(monkeypatch) -> list:
    """Connections of this process (gradio's server and its own checks, Selenium) to anything but this machine are
    recorded and refused; the list they go to must stay empty. Chromium, a process of its own, is kept off the
    network by its flags."""
    outside, connect, connect_ex = [], socket.socket.connect, socket.socket.connect_ex

    def guarded(original):
        def attempt(sock, address, *args):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
                outside.append(address)
                raise ConnectionRefusedError(f"test: only loopback connections ({address})")
            return original(sock, address, *args)

        return attempt

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    return outside


_READ_ANSWERS = """
const rows = {};
for (const cell of document.querySelectorAll('#answers [role=gridcell]')) {
  (rows[cell.dataset.row] ??= [])[Number(cell.dataset.col)] = cell.innerText.trim();
}
return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
"""


def test_a_browser_ranks_what_predict_ranks(clmke_run, kg, tmp_path, monkeypatch):
    """Chromium opens the page, chooses an entity and a relation from their autocomplete, sets top_k, clicks Rank
    and reads the table: the answers of `model.predict`, known ones marked; then an unknown name shows its error."""
    _require("gradio", INSTALL_DEMO, "the page")
    _require("selenium", "pip install selenium", "the browser test")
    from selenium import webdriver

    browser, driver = _browser_paths()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from hub_server import free_port

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # the page turns analytics off itself; belt and braces
    outside = _loopback_only(monkeypatch)
    run, _ = clmke_run
    model = _load(run)
    tok = model.load_kg_tokenizer()
    h, r, _ = kg.triples("train")[0].tolist()
    expected = model.predict(head=h, relation=r, top_k=5)
    marks = [_true_split(kg, h, r, int(a)) for a in tok.entity_to_index([e["entity_id"] for e in expected])]
    app = build_demo(model, kg)
    port = free_port()
    app.launch(
        server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True
    )  # a server thread
    try:
        page = _start_chromium(webdriver, browser, driver, tmp_path / "profile")
        try:
            wait = WebDriverWait(page, 60)
            page.get(f"http://127.0.0.1:{port}/")
            wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, "#run"))
            _choose(page, By, wait, "entity", tok.entity_names[h][:5], f"{tok.entity_names[h]} ({tok.entity_ids[h]})")
            _choose(
                page, By, wait, "relation", tok.relation_names[r], f"{tok.relation_names[r]} ({tok.relation_ids[r]})"
            )
            top_k = page.find_element(By.CSS_SELECTOR, "#top-k input[type=number]")
            top_k.clear()
            top_k.send_keys("5\t")
            page.find_element(By.CSS_SELECTOR, "#run").click()
            wait.until(lambda p: len(p.execute_script(_READ_ANSWERS)) == 5)
            shown = page.execute_script(_READ_ANSWERS)
            message = page.find_element(By.CSS_SELECTOR, "#message").text
            page.save_screenshot(str(tmp_path / "demo.png"))
            assert [row[:2] for row in shown] == [[str(k), e["entity_id"]] for k, e in enumerate(expected, 1)]
            assert [row[2] for row in shown] == [e["name"] for e in expected]
            assert [float(row[3]) for row in shown] == pytest.approx([e["score"] for e in expected], abs=1e-4)
            assert [row[4] for row in shown] == marks
            assert message.startswith(
                f"Top 5 of {tok.num_entities} entities for ({tok.entity_names[h]} ({tok.entity_ids[h]}), "
            )

            typo = tok.entity_names[h][:-1] + "x"
            _choose(page, By, wait, "entity", typo)
            page.find_element(By.CSS_SELECTOR, "#run").click()
            wait.until(lambda p: "Error" in p.find_element(By.CSS_SELECTOR, "#message").text)
            assert f"Unknown entity '{typo}'" in page.find_element(By.CSS_SELECTOR, "#message").text
            assert f"Did you mean '{tok.entity_names[h]}'" in page.find_element(By.CSS_SELECTOR, "#message").text
        finally:
            page.quit()
    finally:
        app.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert not outside, f"the page tried to reach {outside}"

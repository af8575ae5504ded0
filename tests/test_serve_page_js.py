"""The page's own code (``musicidx/serve/static/app.js``) run in Node with a small stand-in DOM
(issue 19, items 1 and 6): no verdict against an uncalibrated threshold, a label on the novelty
bar's threshold tick, a missing training file said as a sentence.  The real-browser test
(``test_serve_page.py``) needs Chromium; this one needs only ``node``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[1] / "musicidx" / "serve" / "static"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the page's JavaScript")

#: A stand-in for the few DOM calls app.js makes, then app.js itself, then the case.
HARNESS = r"""
const vm = require("vm");
const fs = require("fs");
class El {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.style = {}; this.textContent = "";
    this.hidden = false; const cls = new Set(); this.classList = { toggle: (c, on) => on ? cls.add(c) : cls.delete(c),
    contains: (c) => cls.has(c), add: (c) => cls.add(c) }; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return this.attrs[k]; }
  append(...cs) { this.children.push(...cs); }
  replaceChildren() { this.children = []; }
  focus() {}
  addEventListener() {}
  text() { return [this.textContent, ...this.children.map((c) => c.text())].join(" ").trim(); }
}
const byId = {};
const document = { createElement: (t) => new El(t), getElementById: (id) => (byId[id] ||= new El(id)),
                   addEventListener() {} };
const ctx = { document, console, sessionStorage: { getItem: () => null }, URL: { revokeObjectURL() {} },
              fetch: async () => ({ ok: false, status: 404, json: async () => CASE.detail_body }) };
const CASE = JSON.parse(process.argv[2]);
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), ctx);
(async () => {
  const a = CASE.answer;
  ctx.renderNovelty(a);
  await ctx.renderPlayers(a, null);
  const novelty = byId["novelty"];
  const scale = novelty.children[0];
  const label = scale.children.find((c) => (c.attrs.class || "").startsWith("mark-label"));
  console.log(JSON.stringify({
    verdict: ctx.verdictWords(a),
    novelty_words: novelty.children[1].textContent,
    fill_over: scale.children[0].attrs.class === "fill over",
    label: label ? label.textContent : null,
    label_left: label ? label.style.left : null,
    mark_left: scale.children[1].style.left,
    missing: byId["match-clip"].children.map((c) => c.textContent),
  }));
})();
"""


def _run(answer: dict[str, Any], detail: str = "the training MIDI is no longer at /x/A.mid") -> dict[str, Any]:
    case = json.dumps({"answer": answer, "detail_body": {"detail": detail}})
    r = subprocess.run(
        ["node", "-e", HARNESS, str(STATIC / "app.js"), case], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(r.stdout))


def _answer(**over: Any) -> dict[str, Any]:
    a = {
        "file": "q.mid", "composer": "Beta", "confidence": 0.6, "votes": {"Alpha": 0.4, "Beta": 0.6},
        "novelty": 0.02, "threshold": 0.05, "k": 10, "accept_rate": 0.95, "is_new": False, "calibrated": True,
        "same_composition": False, "same_track": None, "clips": 3,
        "nearest": [{"path": "Beta/A.mid", "composer": "Beta", "work": "A", "distance": 0.001, "similarity": 0.999,
                     "query_start_s": 1.0, "match_start_s": 2.0}],
    }  # fmt: skip
    return a | over


def test_the_threshold_tick_has_a_label() -> None:
    out = _run(_answer())
    assert out["label"] == "threshold 0.05" and out["label_left"] == out["mark_left"] == "80%"


def test_an_uncalibrated_answer_gives_no_verdict_on_the_page() -> None:
    out = _run(_answer(novelty=0.09, is_new=None, calibrated=False))
    assert out["verdict"].startswith("No verdict: the index's novelty threshold is uncalibrated")
    assert "Beta is the nearest known composer" in out["verdict"]
    assert "uncalibrated" in out["novelty_words"] and "is above" not in out["novelty_words"]
    assert not out["fill_over"] and out["label"] == "threshold 0.05 (uncalibrated)"


def test_a_missing_training_file_is_said_as_a_sentence() -> None:
    out = _run(_answer())
    assert out["missing"] == ["The training MIDI is no longer at /x/A.mid"]


def test_the_two_players_share_one_height_side_by_side() -> None:
    """Side by side, the captions take the slack, so both players sit at the same height (the
    browser test measures it where Chromium is installed)."""
    css = (STATIC / "style.css").read_text()
    assert ".players figure { display: flex; flex-direction: column; }" in css
    assert ".players figcaption { flex: 1 0 auto; }" in css

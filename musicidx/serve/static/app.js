// musicidx serve: the page. Plain JavaScript, no build step. Talks to /v1/info, /v1/query, /v1/clip.
"use strict";

const $ = (id) => document.getElementById(id);
const sig = (x) => String(Number(Number(x).toPrecision(4)));
const sentence = (text) => (text ? text[0].toUpperCase() + text.slice(1) : text);
let matchUrl = null;

function authHeaders() {
  const t = sessionStorage.getItem("musicidx-token");
  return t ? { Authorization: "Bearer " + t } : {};
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function askForToken(message) {
  $("token-row").hidden = false;
  setStatus(message, true);
  $("token").focus();
}

async function detailOf(resp) {
  try {
    const body = await resp.json();
    return body.detail || resp.statusText;
  } catch (e) {
    return resp.statusText || "HTTP " + resp.status;
  }
}

async function loadInfo() {
  const resp = await fetch("/v1/info", { headers: authHeaders() });
  if (resp.status === 401) {
    $("index-info").textContent = "This server needs an access token.";
    $("token-row").hidden = false;
    return;
  }
  if (!resp.ok) {
    $("index-info").textContent = "Index: " + (await detailOf(resp));
    return;
  }
  const info = await resp.json();
  const names = Object.keys(info.composers);
  $("index-info").textContent =
    `The index knows ${names.length} composers (${names.join(", ")}) from ${info.counts.tracks} tracks; ` +
    (info.calibrated === false
      ? `its novelty threshold ${sig(info.threshold)} (k=${info.k}) is uncalibrated (too few held-out works), ` +
        "so answers show the novelty without saying whether the composer is in the index."
      : `a piece whose novelty passes ${sig(info.threshold)} (k=${info.k}) is called a composer not in the index.`);
}

function verdictWords(a) {
  const nov = `its novelty ${sig(a.novelty)}`;
  const thr = `the threshold ${sig(a.threshold)}`;
  if (a.same_composition)
    return `A known composer: ${a.composer}. It plays the same notes as the training track ${a.same_track}.`;
  if (a.is_new === null)
    return `No verdict: the index's novelty threshold is uncalibrated (too few held-out works), so whether this ` +
      `is a composer not in the index is not known; ${nov} against the uncalibrated ${thr}. ` +
      `${a.composer} is the nearest known composer.`;
  if (a.is_new)
    return `Probably a composer NOT in the index: ${nov} is above ${thr}. ` +
      `${a.composer} is only the nearest known composer.`;
  return `A known composer: ${a.composer}. ${nov[0].toUpperCase() + nov.slice(1)} is within ${thr}.`;
}

function renderVotes(a) {
  const ul = $("votes");
  ul.replaceChildren();
  const entries = Object.entries(a.votes).sort((x, y) => y[1] - x[1]);
  for (const [name, v] of entries) {
    const li = el("li", name === a.composer ? { class: "top" } : {});
    li.append(el("span", { class: "name" }, name));
    const track = el("span", { class: "track", "aria-hidden": "true" });
    const fill = el("span", { class: "fill" });
    fill.style.display = "block";
    fill.style.width = `${Math.max(0, Math.min(1, v)) * 100}%`;
    track.append(fill);
    li.append(track, el("span", { class: "value" }, v.toFixed(2)));
    li.setAttribute("aria-label", `${name}: ${v.toFixed(2)} of the vote`);
    ul.append(li);
  }
}

function renderNovelty(a) {
  const box = $("novelty");
  box.replaceChildren();
  const top = Math.max(a.novelty, a.threshold) * 1.25 || 1;
  const scale = el("div", { class: "scale", "aria-hidden": "true" });
  const fill = el("div", { class: a.is_new ? "fill over" : "fill" });
  fill.style.width = `${(a.novelty / top) * 100}%`;
  const at = (a.threshold / top) * 100;
  const mark = el("div", { class: "mark", title: "threshold" });
  mark.style.left = `${at}%`;
  // the tick's label, beside it on the side with room (left of it past the middle)
  const label = el("span", { class: at > 50 ? "mark-label end" : "mark-label" },
    `threshold ${sig(a.threshold)}` + (a.calibrated === false ? " (uncalibrated)" : ""));
  label.style.left = `${at}%`;
  scale.append(fill, mark, label);
  const measured = `Novelty ${sig(a.novelty)} (the median distance of its ${a.clips} clips to their ${a.k}th nearest index clip)`;
  const words = a.same_composition
    ? `Novelty ${sig(a.novelty)}, threshold ${sig(a.threshold)}: not needed, the notes are a training track's.`
    : a.calibrated === false
    ? `${measured}; the threshold ${sig(a.threshold)} is uncalibrated (too few held-out works), so no verdict is given.`
    : `${measured} ` +
      `${a.novelty > a.threshold ? "is above" : "is within"} the threshold ${sig(a.threshold)}` +
      (a.accept_rate ? ` (${Math.round(a.accept_rate * 100)}% of held-out pieces by known composers stay within it).` : ".");
  box.append(scale, el("p", { id: "novelty-words" }, words));
}

function renderNearest(a) {
  const ol = $("nearest");
  ol.replaceChildren();
  for (const n of a.nearest) {
    ol.append(el("li", {},
      `${n.path} (${n.composer}): distance ${sig(n.distance)}; the best-matching clips start at ` +
      `${n.query_start_s.toFixed(1)} s in your file and ${n.match_start_s.toFixed(1)} s in this track.`));
  }
}

async function renderPlayers(a, audio) {
  const q = $("query-clip"), m = $("match-clip");
  q.replaceChildren();
  m.replaceChildren();
  if (matchUrl) { URL.revokeObjectURL(matchUrl); matchUrl = null; }
  const best = a.nearest[0];
  if (!best) return;
  const len = audio && audio.seconds ? audio.seconds : 0;
  const span = (s) => len ? `${s.toFixed(1)}–${(s + len).toFixed(1)} s` : `from ${s.toFixed(1)} s`;
  $("query-clip-caption").textContent = `Your file, ${span(best.query_start_s)} (its best-matching clip)`;
  if (audio && audio.wav) {
    q.append(el("audio", { controls: "", preload: "auto", src: audio.wav, "aria-labelledby": "query-clip-caption" }));
  } else {
    q.append(el("p", { class: "missing" }, "This clip could not be rendered."));
  }
  $("match-clip-caption").textContent = `The training clip it matched: ${best.path} (${best.composer}), ${span(best.match_start_s)}`;
  const url = `/v1/clip?track=${encodeURIComponent(best.path)}&start=${best.match_start_s}`;
  const resp = await fetch(url, { headers: authHeaders() });
  if (!resp.ok) {
    m.append(el("p", { class: "missing", id: "match-missing" }, sentence(await detailOf(resp))));
    return;
  }
  matchUrl = URL.createObjectURL(await resp.blob());
  m.append(el("audio", { controls: "", preload: "auto", src: matchUrl, "aria-labelledby": "match-clip-caption" }));
}

async function ask(file) {
  const button = $("submit");
  const result = $("result");
  const tokenValue = $("token").value.trim();
  if (tokenValue) sessionStorage.setItem("musicidx-token", tokenValue);
  button.disabled = true;
  result.setAttribute("aria-busy", "true");
  setStatus(`Listening to ${file.name}…`);
  const began = performance.now();
  try {
    const form = new FormData();
    form.append("files", file, file.name);
    const resp = await fetch("/v1/query?audio=1", { method: "POST", body: form, headers: authHeaders() });
    if (resp.status === 401) return askForToken("This server needs an access token: enter it and ask again.");
    if (resp.status === 503) {
      const wait = resp.headers.get("Retry-After") || "a few";
      return setStatus(`The server is busy; try again in ${wait} seconds.`, true);
    }
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      $("answer").hidden = true;
      const reason = body.answers && body.answers[0] && body.answers[0].error;
      return setStatus(reason ? `Cannot answer for ${body.answers[0].file}: ${reason}` : (body.detail || resp.statusText), true);
    }
    const a = body.answers[0];
    const seconds = ((performance.now() - began) / 1000).toFixed(1);
    setStatus(`Answered ${a.file} in ${seconds} s.`);
    $("composer").textContent = a.is_new || a.is_new === null
      ? `Nearest known composer: ${a.composer} (confidence ${a.confidence.toFixed(2)})`
      : `Composer: ${a.composer} (confidence ${a.confidence.toFixed(2)})`;
    const verdict = $("verdict");
    verdict.textContent = verdictWords(a);
    verdict.classList.toggle("new", a.is_new === true);
    verdict.classList.toggle("none", a.is_new === null);
    renderVotes(a);
    renderNovelty(a);
    renderNearest(a);
    $("answer").hidden = false;
    $("composer").focus();
    await renderPlayers(a, body.audio ? body.audio[0] : null);
  } catch (e) {
    setStatus(`The server could not be reached (${e.message}).`, true);
  } finally {
    button.disabled = false;
    result.setAttribute("aria-busy", "false");
  }
}

function setUp() {
  $("composer").setAttribute("tabindex", "-1");
  $("ask").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = $("file").files[0];
    if (f) ask(f); else { setStatus("Choose a MIDI file first.", true); $("file").focus(); }
  });
  $("file").addEventListener("change", () => { if ($("file").files[0]) ask($("file").files[0]); });
  const drop = $("drop");
  for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    const f = ev.dataTransfer.files[0];
    if (!f) return;
    $("file").files = ev.dataTransfer.files;
    ask(f);
  });
  $("token").addEventListener("change", () => { sessionStorage.setItem("musicidx-token", $("token").value.trim()); loadInfo(); });
  loadInfo().catch((e) => { $("index-info").textContent = `The server could not be reached (${e.message}).`; });
}

document.addEventListener("DOMContentLoaded", setUp);

// asyncci's pages work without this file. With it, pages refresh in place (keeping what the
// reader opened and typed), a running job's log follows live inside its box, the log's
// toggles act at once and are remembered, and the tab's title and icon show the state.
"use strict";

const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
const ESCAPES = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;
// The same rules as asyncci/web/logtext.py.
const ADDRESS = /https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/g;
const HEADER = /^(?:(---|\+\+\+|~~~) (.*\S.*)|::group::(.*))$/;
const ENDGROUP = "::endgroup::";
const MAX_LINES = 5000;  // keep the DOM small however long the log grows
const BATCH_MS = 300;  // what arrives meanwhile comes in one answer of the feed
const STATE_COLOURS = {passed: "#1a7f37", failed: "#cf222e", errored: "#cf222e",
  "timed-out": "#cf222e", running: "#0969da", queued: "#9a6700", cancelled: "#6e7781"};

const stored = (name) => { try { return localStorage.getItem("asyncci." + name); } catch { return null; } };
const store = (name, value) => { try { localStorage.setItem("asyncci." + name, value); } catch { /* private mode */ } };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Text with its web addresses as links; never parsed as HTML.
function textNodes(text) {
  const nodes = [];
  let pos = 0;
  for (const match of text.matchAll(ADDRESS)) {
    if (match.index > pos) nodes.push(document.createTextNode(text.slice(pos, match.index)));
    const link = document.createElement("a");
    link.href = link.textContent = match[0];
    link.rel = "nofollow noopener";
    nodes.push(link);
    pos = match.index + match[0].length;
  }
  if (pos < text.length) nodes.push(document.createTextNode(text.slice(pos)));
  return nodes;
}

// The same rules as asyncci/web/ansi.py, building DOM nodes.
function ansiNodes(text) {
  const nodes = [];
  let classes = [], pos = 0, match;
  const push = (chunk) => {
    if (!chunk) return;
    if (!classes.length) { nodes.push(...textNodes(chunk)); return; }
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.append(...textNodes(chunk));
    nodes.push(span);
  };
  ESCAPES.lastIndex = 0;
  while ((match = ESCAPES.exec(text)) !== null) {
    push(text.slice(pos, match.index));
    pos = ESCAPES.lastIndex;
    if (match[2] !== "m") continue;
    const codes = match[1] ? match[1].split(";").map(Number) : [0];
    for (const code of codes) {
      if (code === 0) classes = [];
      else if (code === 1) classes.push("b");
      else if (code === 22) classes = classes.filter((c) => c !== "b");
      else if (code === 39) classes = classes.filter((c) => !c.startsWith("c-"));
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        classes = classes.filter((c) => !c.startsWith("c-"));
        classes.push("c-" + COLOURS[code % 10]);
      }
    }
  }
  push(text.slice(pos));
  return nodes;
}

const lastState = (text) => text.replace(/\r+$/, "").split("\r").pop();

function clock(ms) {  // as web/durations.py clock
  if (ms === null) return "";
  const s = Math.floor(ms / 1000), two = (n) => String(n).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`
    : `${Math.floor(s / 60)}:${two(s % 60)}`;
}

function span(ms) {  // as web/durations.py span (of ms / 1000)
  if (ms < 10000) return (ms / 1000).toFixed(1) + "s";
  const s = Math.floor(ms / 1000), two = (n) => String(n).padStart(2, "0");
  if (s < 60) return s + "s";
  return s < 3600 ? `${Math.floor(s / 60)}m ${two(s % 60)}s` : `${Math.floor(s / 3600)}h ${two(Math.floor(s / 60) % 60)}m`;
}

// A log box's lines as the server renders them (templates/joblog.html).
function numbered(tag, job, number, ms) {
  const line = document.createElement(tag);
  line.className = "line";
  const n = document.createElement(number ? "a" : "span");
  n.className = "n";
  if (number) {
    line.id = `j${job}-L${number}`;
    n.href = "#" + line.id;
    n.textContent = String(number);
  }
  const t = document.createElement("span");
  t.className = "t";
  t.textContent = clock(ms);
  line.append(n, t);
  return line;
}

function lineElement(job, number, text, ms) {
  const line = numbered("span", job, number, ms);
  line.append(...ansiNodes(text), "\n");
  return line;
}

function sectionElement(job, number, title, ms) {
  const details = document.createElement("details");
  details.className = "section";
  details.id = `j${job}-S${number}`;
  details.open = true;
  details.dataset.auto = "";  // opened by the script, so closed by it when the next begins
  if (ms !== null) details.dataset.ms = String(ms);
  const summary = numbered("summary", job, number, ms);
  const name = document.createElement("span");
  name.className = "title";
  name.append(...ansiNodes(title));
  const took = document.createElement("span");
  took.className = "dur";
  summary.append(name, " ", took);
  details.append(summary);
  return details;
}

// One running job's log box, following its log: lines, sections, and the scroll inside it.
class LiveLog {
  constructor(box) {
    this.box = box;
    this.job = box.dataset.job;
    this.log = box.querySelector(":scope > .log");  // not a search's list of lines
    this.offset = Number(box.dataset.offset);
    this.next = Number(box.dataset.line);
    this.partial = "";
    this.pending = null;  // the line still being written, shown as it grows
    this.diffHead = null;  // a `--- x` section that a `+++ y` next would make a diff
    this.lines = this.log.querySelectorAll("span.line").length;
    // The server's clock: times are since the log began, by the server's reckoning.
    this.skew = Date.now() - Number(box.dataset.now);
    this.began = box.dataset.began ? Number(box.dataset.began) : null;
    this.follow = box.querySelector(".follow input");
    this.follow.checked = stored("follow") !== "off";
    this.placed = this.log.scrollTop;  // where prepareBox put it: not the reader's doing
    this.log.addEventListener("scroll", () => this.scrolled());
    const last = this.log.lastElementChild;
    if (last && last.tagName === "DETAILS" && last.open) last.dataset.auto = "";
  }

  elapsed() {
    const now = Date.now() - this.skew;
    if (this.began === null) this.began = now;
    return now - this.began;
  }

  // Where new lines go: into the last section unless `::endgroup::` ended it.
  container() {
    const last = this.log.lastElementChild;
    return last && last.tagName === "DETAILS" && !("ended" in last.dataset) ? last : this.log;
  }

  receive(news) {
    if (news.skipped_to_line) {
      this.dropPending();
      const note = lineElement(this.job, 0,
        `[asyncci: skipped ahead to line ${news.skipped_to_line}; the raw log has it all]`, null);
      note.classList.add("cut");
      this.container().append(note);
      this.next = news.skipped_to_line;
      this.partial = "";
    }
    this.offset = news.offset;
    if (!news.text) return;
    const parts = (this.partial + news.text).split("\n");
    this.partial = parts.pop();
    this.dropPending();
    for (const part of parts) this.add(lastState(part));
    if (this.partial) {
      this.pending = lineElement(this.job, this.next, lastState(this.partial), this.elapsed());
      this.container().append(this.pending);
    }
    this.trim();
    if (this.follow.checked) this.toBottom();
  }

  dropPending() {
    if (this.pending) this.pending.remove();
    this.pending = null;
  }

  add(text) {
    const number = this.next++, ms = this.elapsed();
    const current = this.container();
    const diffHead = this.diffHead;
    this.diffHead = null;
    if (text === ENDGROUP && current !== this.log) {
      current.dataset.ended = "";
      this.ended(current, ms);
      return;
    }
    const head = text.match(HEADER);
    if (diffHead && text.startsWith("+++ ")) {  // that section was a diff's first line
      const {section, into, open} = diffHead;
      section.remove();
      into.append(lineElement(this.job, number - 1, diffHead.text, diffHead.ms),
        lineElement(this.job, number, text, ms));
      if (into !== this.log) {  // the section it ended goes on
        into.open = open;
        into.querySelector(".dur").textContent = "";
      }
      this.lines += 2;
    } else if (head) {
      const open = current.open;
      if (current !== this.log) this.ended(current, ms);
      const section = sectionElement(this.job, number, head[1] ? head[2].trim() : head[3].trim(), ms);
      this.log.append(section);
      if (head[1] === "---") this.diffHead = {section, into: current, open, text, ms};
    } else {
      current.append(lineElement(this.job, number, text, ms));
      this.lines += 1;
    }
  }

  ended(section, ms) {
    const begun = section.dataset.ms;
    if (begun !== undefined) section.querySelector(".dur").textContent = span(Math.max(0, ms - Number(begun)));
    if ("auto" in section.dataset) section.open = false;
  }

  trim() {
    while (this.lines > MAX_LINES) {
      this.log.querySelector("span.line").remove();
      this.lines -= 1;
    }
  }

  toBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.placed = this.log.scrollTop;
  }

  // The reader scrolled: up lets go of the log, down to its end follows it again.
  scrolled() {
    if (this.log.scrollTop === this.placed) return;  // our own scroll
    this.placed = null;
    const bottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 8;
    this.follow.checked = bottom;
  }
}

// Every running log box on the page, followed through one request at a time: a browser
// holds few connections to a server, and a 20-job matrix must not take them all.
const live = new Map();
let polling = false;  // the loop below runs
let feeding = null;  // its request in flight, to abort when a box is added

async function feed() {
  if (polling) return;
  polling = true;
  try {
    await poll();
  } finally {
    polling = false;
  }
}

async function poll() {
  while (live.size) {
    for (const [job, log] of live) if (!log.box.isConnected) live.delete(job);
    if (!live.size) break;
    const jobs = [...live.values()].map((log) => `${log.job}:${log.offset}`).join(",");
    feeding = new AbortController();
    let answer;
    try {
      const response = await fetch(`/api/logs?jobs=${jobs}`, {signal: feeding.signal});
      if (!response.ok) throw new Error(String(response.status));
      answer = (await response.json()).jobs;
    } catch (e) {
      if (e.name !== "AbortError") await sleep(3000);
      continue;
    } finally {
      feeding = null;
    }
    let ended = false;
    for (const [job, news] of Object.entries(answer)) {
      const log = live.get(job);
      if (!log) continue;
      log.receive(news);
      if (news.done) { live.delete(job); ended = true; }
    }
    if (ended) await refresh(true);
    await sleep(BATCH_MS);
  }
}

function followBoxes(root) {
  let added = false;
  for (const box of root.querySelectorAll(".logbox[data-live]")) {
    if (live.has(box.dataset.job)) continue;
    live.set(box.dataset.job, new LiveLog(box));
    added = true;
  }
  if (!added) return;
  if (feeding) feeding.abort();  // ask again, with the new ones
  feed();
}

// A box once on the page: the reader's toggles, its follow switch, and its end in view.
function prepareBox(box) {
  if ("ready" in box.dataset) return;
  box.dataset.ready = "";
  const asked = new URLSearchParams(location.search);
  for (const name of ["times", "wrap"]) {
    if (!asked.has(name) && stored(name)) setToggle(box, name, stored(name) === "on");
  }
  const follow = box.querySelector(".follow");
  if (follow) follow.hidden = false;
  const log = box.querySelector(":scope > .log");
  if ("end" in box.dataset && !targetIn(box)) log.scrollTop = log.scrollHeight;
}

function setToggle(box, name, on) {
  box.classList.toggle(name, on);
  for (const link of box.querySelectorAll(`[data-toggle="${name}"]`)) link.setAttribute("aria-pressed", String(on));
}

function target() {
  let id;
  try { id = decodeURIComponent(location.hash.slice(1)); } catch (e) { return null; }  // "#%E0"
  return id ? document.getElementById(id) : null;
}

function targetIn(box) {
  const found = target();
  return found !== null && box.contains(found);
}

// A link to a line in a closed section (or job) opens it and shows the line.
function showTarget() {
  const found = target();
  if (!found) return;
  for (let d = found.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
  found.scrollIntoView({block: "center"});
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-toggle]");
  if (!link) return;
  event.preventDefault();
  const name = link.dataset.toggle, on = !link.closest(".logbox").classList.contains(name);
  for (const box of document.querySelectorAll(".logbox")) setToggle(box, name, on);
  store(name, on ? "on" : "off");
});

document.addEventListener("change", (event) => {
  if (!event.target.matches(".follow input")) return;
  store("follow", event.target.checked ? "on" : "off");
  const log = live.get(event.target.closest(".logbox").dataset.job);
  if (log && event.target.checked) log.toBottom();
});

window.addEventListener("hashchange", showTarget);

// The tab says the state of what the page shows: its title, and an icon in its colour.
function showState(title) {
  if (title) document.title = title;
  const shown = document.querySelector("h1 .state");
  const state = shown && [...shown.classList].find((c) => c in STATE_COLOURS);
  if (!state) return;
  let icon = document.querySelector('link[rel~="icon"]');
  if (!icon) {
    icon = document.createElement("link");
    icon.rel = "icon";
    document.head.append(icon);
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${STATE_COLOURS[state]}"/></svg>`;
  icon.type = "image/svg+xml";
  icon.href = "data:image/svg+xml," + encodeURIComponent(svg);
}

// What the reader did on the page that a fresh copy would undo: sections and jobs opened
// or closed, text typed, and the boxes of logs whose job is as it was (a running one is
// followed live; its lines are newer than the copy's).
function keyOf(details) {
  if (details.id) return details.id;
  const owner = details.parentElement.closest("[id]");
  return `${owner ? owner.id : ""}>${details.querySelector("summary")?.textContent.trim()}`;
}

function carryOver(old, fresh) {
  const kept = [];
  for (const box of fresh.querySelectorAll(".logbox[data-job]")) {
    const was = old.querySelector(`.logbox[data-job="${box.dataset.job}"]`);
    if (!was || was.dataset.state !== box.dataset.state) continue;
    const log = was.querySelector(":scope > .log");
    kept.push([log, log.scrollTop, log.scrollHeight - log.scrollTop - log.clientHeight < 8]);
    box.replaceWith(was);
  }
  const opened = new Map([...old.querySelectorAll("details")].map((d) => [keyOf(d), d.open]));
  for (const details of fresh.querySelectorAll("details")) {
    if (opened.has(keyOf(details))) details.open = opened.get(keyOf(details));
  }
  const typed = (field) => `${field.form?.getAttribute("action")}|${field.name}`;
  const values = new Map([...old.querySelectorAll("input[name], textarea[name]")]
    .filter((f) => f.type !== "hidden" && (f.value !== f.defaultValue || f.checked !== f.defaultChecked))
    .map((f) => [typed(f), f]));
  for (const field of fresh.querySelectorAll("input[name], textarea[name]")) {
    const was = values.get(typed(field));
    if (was) { field.value = was.value; field.checked = was.checked; }
  }
  return kept;
}

let refreshing = null;

async function refresh(force) {
  const main = document.querySelector("main");
  if (!force && (document.hidden || document.activeElement?.form)) return;
  let html;
  try {
    const response = await fetch(location.href, {headers: {"X-Requested-With": "refresh"}});
    if (!response.ok) return;
    html = await response.text();
  } catch {
    return;  // the server restarts, or the network is gone: the next refresh tries again
  }
  const page = new DOMParser().parseFromString(html, "text/html");
  const fresh = page.querySelector("main");
  if (!fresh) return;
  const kept = carryOver(main, fresh);
  main.replaceWith(fresh);
  for (const [log, top, bottom] of kept) log.scrollTop = bottom ? log.scrollHeight : top;
  start(page.title);
}

function start(title) {
  const main = document.querySelector("main");
  main.querySelectorAll(".logbox").forEach(prepareBox);
  followBoxes(main);
  showState(title);
  clearTimeout(refreshing);
  if (main.dataset.refresh) refreshing = setTimeout(() => refresh(false).finally(() => {
    if (document.querySelector("main") === main) start();  // skipped: try again later
  }), Number(main.dataset.refresh) * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  start();
  showTarget();
});

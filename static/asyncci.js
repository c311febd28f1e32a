// asyncci's pages work without this file; with it they refresh in place and logs follow live.
"use strict";

const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
const ESCAPES = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

// The same rules as asyncci/web/ansi.py, building DOM nodes: text is never parsed as HTML.
function ansiNodes(text) {
  const nodes = [];
  let classes = [], pos = 0, match;
  const push = (chunk) => {
    if (!chunk) return;
    if (!classes.length) { nodes.push(document.createTextNode(chunk)); return; }
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.textContent = chunk;
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
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        classes = classes.filter((c) => !c.startsWith("c-"));
        classes.push("c-" + COLOURS[code % 10]);
      }
    }
  }
  push(text.slice(pos));
  return nodes;
}

const MAX_LINES = 5000;  // keep the DOM small however long the log grows

function followLog(pre) {
  const job = pre.dataset.job;
  const follow = document.querySelector(`input[data-follow="${job}"]`);
  let offset = Number(pre.dataset.offset), lineStart = offset, partial = "", failures = 0;
  let source = null;
  const bytes = (text) => new TextEncoder().encode(text).length;
  let line = pre.dataset.line === undefined ? null : Number(pre.dataset.line);

  const append = (text, endOffset) => {
    const parts = (partial + text).split("\n");
    partial = parts.pop();
    for (const part of parts) {
      const span = document.createElement("span");
      span.className = "line";
      span.id = `j${job}-${lineStart}`;
      lineStart += bytes(part) + 1;
      const link = document.createElement("a");
      link.className = "n";
      link.href = "#" + span.id;
      if (line !== null) link.textContent = String(++line);
      span.append(link, ...ansiNodes(part), "\n");
      pre.append(span);
    }
    while (pre.childElementCount > MAX_LINES) pre.firstElementChild.remove();
    offset = endOffset;
    if (follow && follow.checked) pre.lastElementChild?.scrollIntoView({block: "end"});
  };
  const finished = () => { if (source) source.close(); setTimeout(() => refresh(true), 300); };
  const poll = async () => {  // when the stream cannot get through (a buffering proxy)
    const response = await fetch(`/api/jobs/${job}/log?offset=${offset}`);
    const text = await response.text();
    if (text) append(text, offset + bytes(text));
    if (response.headers.get("X-Log-Complete") === "1") finished();
    else setTimeout(poll, 2000);
  };
  source = new EventSource(`/api/jobs/${job}/log/stream?offset=${offset}`);
  source.addEventListener("log", (event) => { failures = 0; append(event.data, Number(event.lastEventId)); });
  source.addEventListener("state", finished);
  source.onerror = () => { if (++failures > 3) { source.close(); poll(); } };
}

// Replace <main> with a fresh copy of the page, keeping what follows live (the logs).
async function refresh(force) {
  const main = document.querySelector("main");
  if (!force && (document.hidden || document.activeElement?.form)) return;
  const response = await fetch(location.href, {headers: {"X-Requested-With": "refresh"}});
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html").querySelector("main");
  if (!fresh) return;
  const keep = main.dataset.keep && !force ? main.querySelectorAll(main.dataset.keep) : [];
  for (const old of keep) {
    const twin = fresh.querySelector(`${main.dataset.keep}[data-job="${old.dataset.job}"]`);
    if (twin) twin.replaceWith(old);
  }
  main.replaceWith(fresh);
  if (force) start();
}

function start() {
  const main = document.querySelector("main");
  document.querySelectorAll("pre.log[data-live]").forEach(followLog);
  if (main.dataset.refresh && !window.asyncciRefresh) {
    window.asyncciRefresh = setInterval(refresh, Number(main.dataset.refresh) * 1000);
  }
}

document.addEventListener("DOMContentLoaded", start);

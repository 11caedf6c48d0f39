// Project Sync's web page: live progress over the operator's Server-Sent
// Events. Every element with data-stream opens an EventSource on its URL
// (the page's own origin, so the sign-in cookie goes with it) and shows the
// stage and files done; when a run ends live, the page reloads so the
// history and status are the server's. Text only (textContent): nothing
// from an event is ever parsed as HTML.
"use strict";

// Browsers allow about six HTTP/1.1 connections per origin: keep room for
// navigation by following at most this many streams at once.
const MAX_STREAMS = 4;
const EVENTS = ["snapshot", "started", "stageStarted", "progress", "stageFinished", "completed", "failed", "unchanged"];

function show(el, data, live) {
  const bar = el.querySelector("progress");
  const text = el.querySelector(".progress-text");
  switch (data.event) {
    case "started":
      el.classList.remove("idle");
      el.classList.add("running");
      bar.removeAttribute("value");
      text.textContent = "started";
      break;
    case "stageStarted":
      el.classList.remove("idle");
      el.classList.add("running");
      bar.max = 1;
      bar.value = 0;
      text.textContent = data.stage;
      break;
    case "progress":
      el.classList.remove("idle");
      el.classList.add("running");
      bar.max = Math.max(1, Number(data.filesTotal) || 0);
      bar.value = Math.max(0, Number(data.filesDone) || 0);
      text.textContent = String(data.stage) + " " + String(data.filesDone) + " / " + String(data.filesTotal);
      break;
    case "stageFinished":
      text.textContent = String(data.stage) + " done";
      break;
    case "completed":
    case "failed":
    case "unchanged":
      el.classList.remove("running");
      el.classList.add("idle");
      text.textContent = data.event === "failed" ? "failed: " + String(data.reason) : "";
      if (live && data.event !== "unchanged") {
        // The run ended while the page watched: show the server's view.
        window.setTimeout(function () { window.location.reload(); }, 300);
      }
      break;
  }
}

function follow(el) {
  const source = new EventSource(el.dataset.stream);
  for (const name of EVENTS) {
    source.addEventListener(name, function (e) {
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      show(el, data, name !== "snapshot");
    });
  }
}

document.addEventListener("DOMContentLoaded", function () {
  const all = Array.from(document.querySelectorAll("[data-stream]"));
  // Runs in progress first, then the rest, up to the limit.
  all.sort(function (a, b) {
    return (b.classList.contains("running") ? 1 : 0) - (a.classList.contains("running") ? 1 : 0);
  });
  all.slice(0, MAX_STREAMS).forEach(follow);
});

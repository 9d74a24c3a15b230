// The charlm playground: stream generations from /v1/generate and colour text by surprisal from
// /v1/score. Plain JavaScript, no build step; talks to the same server that serves the page.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_BITS = 8; // surprisal at which the colour saturates
let controller = null; // AbortController of the running generation

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status}: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function numberOrNull(id) {
  const raw = $(id).value.trim();
  return raw === "" ? null : Number(raw);
}

async function loadModels() {
  const select = $("model");
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    select.replaceChildren();
    for (const card of body.data) {
      const option = document.createElement("option");
      option.value = card.id;
      option.textContent = card.status === "ready" ? card.id : `${card.id} (unavailable)`;
      option.disabled = card.status !== "ready";
      if (card.error) option.title = card.error;
      select.append(option);
    }
    const ready = body.data.find((c) => c.status === "ready");
    if (ready) select.value = ready.id;
    showError(ready ? "" : "No model is ready on this server.");
  } catch (err) {
    showError("Could not list models: " + err.message);
  }
}

// ---------------------------------------------------------------------------- generation
function generationRequest() {
  const body = {
    model: $("model").value || undefined,
    prompt: $("prompt").value,
    max_chars: numberOrNull("max-chars") ?? 300,
    temperature: numberOrNull("temperature") ?? 1,
    top_k: numberOrNull("top-k") ?? 0,
    top_p: numberOrNull("top-p") ?? 1,
    stream: true,
  };
  const seed = numberOrNull("seed");
  if (seed !== null) body.seed = seed;
  const stop = $("stop").value.replace(/\\n/g, "\n");
  if (stop) body.stop = [stop];
  return body;
}

// Yields the JSON payload of each "data:" event of a Server-Sent Events body; stops at [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function generate() {
  showError("");
  const body = generationRequest();
  const out = $("output-text");
  const status = $("generate-status");
  $("output-prompt").textContent = body.prompt;
  out.textContent = "";
  let chunks = 0;
  status.dataset.chunks = "0";
  status.dataset.state = "running";
  status.textContent = "generating…";
  $("generate").disabled = true;
  $("stop-button").disabled = false;
  controller = new AbortController();
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const event of sseEvents(response)) {
      if (event.error) throw new Error(event.error.message);
      if (typeof event.text === "string") {
        out.textContent += event.text;
        chunks += 1;
        status.dataset.chunks = String(chunks);
      }
      if (event.finish_reason) {
        status.textContent = `${event.num_chars} characters, finished by ${event.finish_reason}` +
          ` (seed ${event.seed})`;
      }
    }
    status.dataset.state = "done";
  } catch (err) {
    status.dataset.state = "failed";
    if (err.name === "AbortError") {
      status.textContent = "stopped";
    } else {
      status.textContent = "";
      showError(err.message);
    }
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop-button").disabled = true;
  }
}

// ---------------------------------------------------------------------------- scoring
function surprisalColour(bits) {
  // green (predictable) through yellow to red (surprising)
  const t = Math.min(Math.max(bits / MAX_BITS, 0), 1);
  const hue = 120 * (1 - t);
  return `hsl(${hue.toFixed(0)} ${70 + 10 * t}% ${85 - 15 * t}%)`;
}

function describe(entry) {
  const bits = -entry.logprob / Math.LN2;
  const shown = (c) => (c === "\n" ? "↵" : c === " " ? "␣" : c);
  const lines = [
    `'${shown(entry.char)}' at ${entry.offset}`,
    `logprob ${entry.logprob.toFixed(4)}  (${bits.toFixed(2)} bits)`,
  ];
  if (entry.top && entry.top.length) {
    lines.push("top alternatives:");
    for (const alt of entry.top) {
      lines.push(`  ${shown(alt.char).padEnd(6)} ${alt.logprob.toFixed(4)}`);
    }
  }
  return lines.join("\n");
}

function renderHeatmap(result) {
  const map = $("heatmap");
  map.replaceChildren();
  for (const entry of result.per_char) {
    const span = document.createElement("span");
    const bits = -entry.logprob / Math.LN2;
    span.style.backgroundColor = surprisalColour(bits);
    span.dataset.offset = String(entry.offset);
    span.dataset.bits = bits.toFixed(3);
    if (entry.char === "\n") {
      span.className = "newline";
      map.append(span, document.createTextNode("\n"));
    } else {
      span.textContent = entry.char;
      map.append(span);
    }
    span.addEventListener("mouseenter", (ev) => showTooltip(ev, entry));
    span.addEventListener("mousemove", moveTooltip);
    span.addEventListener("mouseleave", hideTooltip);
  }
}

function showTooltip(ev, entry) {
  const tip = $("tooltip");
  tip.textContent = describe(entry);
  tip.hidden = false;
  moveTooltip(ev);
}

function moveTooltip(ev) {
  const tip = $("tooltip");
  tip.style.left = `${ev.clientX + 12}px`;
  tip.style.top = `${ev.clientY + 14}px`;
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

async function score() {
  showError("");
  const text = $("score-text").value;
  const summary = $("summary");
  summary.textContent = "scoring…";
  try {
    const response = await fetch("/v1/score", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        model: $("model").value || undefined, texts: [text], per_char: true, top_k: 5,
      }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    const result = body.results[0];
    renderHeatmap(result);
    summary.textContent = `${result.num_chars} characters · ${result.bits_per_char.toFixed(3)}` +
      ` bits/char · perplexity ${result.perplexity.toFixed(3)}` +
      (result.num_unknown ? ` · ${result.num_unknown} unknown` : "");
  } catch (err) {
    summary.textContent = "";
    showError(err.message);
  }
}

// ---------------------------------------------------------------------------- wiring
$("generate").addEventListener("click", generate);
$("stop-button").addEventListener("click", () => controller && controller.abort());
$("score").addEventListener("click", score);
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem("charlm-api-key", $("api-key").value);
  loadModels();
});
$("api-key").value = sessionStorage.getItem("charlm-api-key") || "";
loadModels();

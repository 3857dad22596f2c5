// lmlab playground: plain JavaScript against the server's own JSON API (no build step, no external files).
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let controller = null; // AbortController of the running generation
let chatHistory = []; // the conversation so far in chat mode: [{role, content}]

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function showRequest(path, body) {
  $("curl").textContent =
    `curl -s ${location.origin}${path} -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body).replace(/'/g, "'\\''")}'`;
}

async function postJSON(path, body, output) {
  showError("");
  if (output) output.innerHTML = ""; // never leave an earlier answer under a new question
  showRequest(path, body);
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  }
  return data;
}

function currentModel() {
  return models.find((m) => m.id === $("model").value);
}

function lines(text) {
  return text.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
}

function intOr(id, fallback) {
  const v = parseInt($(id).value, 10);
  return Number.isFinite(v) ? v : fallback;
}

function floatOr(id, fallback) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

function barRow(name, value, max, isTop, text) {
  const row = document.createElement("div");
  row.className = "bar-row" + (isTop ? " top" : "");
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  label.title = name;
  const track = document.createElement("div");
  track.className = "bar-track";
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.style.width = `${Math.max(0, Math.min(100, (100 * value) / (max || 1)))}%`;
  track.appendChild(bar);
  const num = document.createElement("span");
  num.className = "num";
  num.textContent = text;
  row.append(label, track, num);
  return row;
}

// --- model picker ------------------------------------------------------------------------------------------

function selectModel() {
  const model = currentModel();
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = true;
  if (!model) return;
  $(`panel-${model.kind}`).hidden = false;
  const canChat = (model.endpoints || []).includes("/v1/chat/completions");
  $("chat-mode-label").hidden = !canChat;
  if (!canChat) $("chat-mode").checked = false;
  chatHistory = [];
  $("new-chat").hidden = !chatMode();
  const info = model.info || {};
  const facts = Object.entries(info)
    .filter(([k, v]) => k !== "model_type" && ["string", "number", "boolean"].includes(typeof v))
    .slice(0, 8)
    .map(([k, v]) => `${k}: ${v}`);
  $("model-info").textContent = [model.kind, model.model_type, ...facts].join(" · ");
  showError("");
}

async function loadModels() {
  const [health, list] = await Promise.all([
    fetch("/health").then((r) => r.json()),
    fetch("/v1/models").then((r) => r.json()),
  ]);
  models = list.data;
  const select = $("model");
  select.innerHTML = "";
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.id} (${m.kind}, ${m.model_type})`;
    select.appendChild(option);
  }
  $("server-status").textContent = `${health.models.length} model(s) served`;
  selectModel();
}

// --- generation (server-sent events over fetch) ------------------------------------------------------------

function chatMode() {
  return $("chat-mode").checked && !$("chat-mode-label").hidden;
}

function transcript(messages) {
  return messages.map((m) => `${m.role}: ${m.content}\n`).join("");
}

function newChat() {
  chatHistory = [];
  $("new-chat").hidden = !chatMode();
  $("completion-prompt").textContent = "";
  $("completion-text").textContent = "";
  $("generation-status").textContent = "";
}

async function generate() {
  const model = currentModel();
  const prompt = $("prompt").value;
  const chat = chatMode();
  const path = chat ? "/v1/chat/completions" : "/v1/completions";
  const turn = chat ? [...chatHistory, { role: "user", content: prompt }] : null;
  const body = {
    model: model.id,
    ...(chat ? { messages: turn } : { prompt }),
    max_tokens: intOr("max-tokens", 100),
    temperature: floatOr("temperature", 0.8),
    top_p: floatOr("top-p", 1.0),
    top_k: intOr("top-k", 0),
    stream: true,
  };
  const stop = $("stop").value.replace(/\\n/g, "\n");
  if (stop) body.stop = stop;
  if ($("seed").value !== "") body.seed = intOr("seed", 0);
  showError("");
  showRequest(path, body);
  $("completion-prompt").textContent = chat ? transcript(turn) + "assistant: " : prompt;
  $("completion-text").textContent = "";
  $("generation-status").textContent = "generating...";
  $("generate").disabled = true;
  $("stop-generation").disabled = false;
  controller = new AbortController();
  const started = performance.now();
  let pieces = 0;
  let finish = null;
  let usage = null;
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") { done = true; break; }
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices[0];
          if (!choice) continue; // a usage-only chunk
          const piece = chat ? choice.delta.content : choice.text;
          if (piece) {
            $("completion-text").textContent += piece;
            pieces += 1;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
      const seconds = (performance.now() - started) / 1000;
      $("generation-status").textContent = `${pieces} tokens · ${(pieces / seconds).toFixed(1)} tokens/s`;
    }
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage ? usage.completion_tokens : pieces;
    $("generation-status").textContent =
      `done: ${tokens} tokens in ${seconds.toFixed(2)} s (${(tokens / seconds).toFixed(1)} tokens/s)` +
      (finish ? `, finish_reason=${finish}` : "") + (usage ? `, prompt_tokens=${usage.prompt_tokens}` : "");
    if (chat) {
      chatHistory = [...turn, { role: "assistant", content: $("completion-text").textContent }];
      $("prompt").value = "";
    }
  } catch (err) {
    if (err.name === "AbortError") {
      $("generation-status").textContent = `stopped after ${pieces} tokens`;
    } else {
      $("generation-status").textContent = "";
      showError(err.message);
    }
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop-generation").disabled = true;
  }
}

// --- classify / translate / vectors -------------------------------------------------------------------------

async function classify() {
  const out = $("classify-result");
  try {
    const texts = lines($("classify-text").value);
    const data = await postJSON("/v1/classify", { model: currentModel().id, texts }, out);
    out.innerHTML = "";
    data.results.forEach((result, i) => {
      const item = document.createElement("div");
      item.className = "item classification";
      const head = document.createElement("div");
      const label = document.createElement("strong");
      label.className = "predicted-label";
      label.textContent = result.label;
      const source = document.createElement("span");
      source.className = "src";
      source.textContent = ` ← ${texts[i]}`;
      head.append(label, source);
      item.appendChild(head);
      const entries = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
      for (const [name, p] of entries) {
        item.appendChild(barRow(name, p, 1, name === result.label, `${(100 * p).toFixed(1)}%`));
      }
      out.appendChild(item);
    });
  } catch (err) {
    showError(err.message);
  }
}

async function translate() {
  const out = $("translate-text");
  const result = $("translate-result");
  try {
    const texts = lines(out.value);
    const beam = intOr("beam-size", 5);
    const data = await postJSON("/v1/translate", {
      model: currentModel().id, texts, beam_size: beam, n_best: Math.min(intOr("n-best", 1), beam),
    }, result);
    result.innerHTML = "";
    data.results.forEach((r, i) => {
      const item = document.createElement("div");
      item.className = "item translation";
      const src = document.createElement("div");
      src.className = "src";
      src.textContent = texts[i];
      const best = document.createElement("div");
      best.innerHTML = "<strong></strong>";
      best.querySelector("strong").textContent = r.translation;
      item.append(src, best);
      if (r.n_best.length > 1) {
        const list = document.createElement("ol");
        list.className = "nbest muted";
        for (const h of r.n_best) {
          const li = document.createElement("li");
          li.textContent = `${h.translation}  (${h.score === null ? "n/a" : h.score.toFixed(3)})`;
          list.appendChild(li);
        }
        item.appendChild(list);
      }
      result.appendChild(item);
    });
  } catch (err) {
    showError(err.message);
  }
}

async function fillMask() {
  const out = $("fill-result");
  try {
    const texts = lines($("fill-text").value);
    const body = { model: currentModel().id, texts, top_k: intOr("fill-top-k", 5) };
    const data = await postJSON("/v1/fill-mask", body, out);
    out.innerHTML = "";
    data.results.forEach((result) => {
      const item = document.createElement("div");
      item.className = "item classification";
      const head = document.createElement("strong");
      head.textContent = result.filled;
      item.appendChild(head);
      result.masks.forEach((candidates, k) => {
        const title = document.createElement("p");
        title.className = "muted";
        title.textContent = `[MASK] ${k + 1}`;
        item.appendChild(title);
        candidates.forEach((c, i) => {
          item.appendChild(barRow(JSON.stringify(c.token), c.probability, 1, i === 0, `${(100 * c.probability).toFixed(1)}%`));
        });
      });
      out.appendChild(item);
    });
  } catch (err) {
    showError(err.message);
  }
}

function showNeighbours(title, results) {
  const out = $("vectors-result");
  out.innerHTML = "";
  const head = document.createElement("p");
  head.className = "muted";
  head.textContent = title;
  out.appendChild(head);
  const max = Math.max(...results.map((r) => Math.abs(r.score || 0)), 1e-9);
  results.forEach((r, i) => {
    const score = r.score === null ? 0 : r.score;
    out.appendChild(barRow(r.word, Math.max(score, 0), max, i === 0, score.toFixed(3)));
  });
}

async function similar() {
  const words = $("similar-words").value.split(/\s+/).filter(Boolean);
  const positive = words.filter((w) => !w.startsWith("-"));
  const negative = words.filter((w) => w.startsWith("-") && w.length > 1).map((w) => w.slice(1));
  try {
    const data = await postJSON("/v1/embeddings/similar", {
      model: currentModel().id, positive, negative, topn: intOr("topn", 10),
    }, $("vectors-result"));
    showNeighbours(`nearest to ${words.join(" ")}`, data.results);
  } catch (err) {
    showError(err.message);
  }
}

async function analogy() {
  const [a, b, c] = ["analogy-a", "analogy-b", "analogy-c"].map((id) => $(id).value.trim());
  try {
    const data = await postJSON("/v1/embeddings/analogy", {
      model: currentModel().id, a, b, c, topn: intOr("topn", 10),
    }, $("vectors-result"));
    showNeighbours(`${a} : ${b} :: ${c} : ?`, data.results);
  } catch (err) {
    showError(err.message);
  }
}

// --- wiring -------------------------------------------------------------------------------------------------

$("model").addEventListener("change", selectModel);
$("generate").addEventListener("click", generate);
$("stop-generation").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", newChat);
$("chat-mode").addEventListener("change", newChat);
$("classify").addEventListener("click", classify);
$("translate").addEventListener("click", translate);
$("similar").addEventListener("click", similar);
$("analogy").addEventListener("click", analogy);
$("fill").addEventListener("click", fillMask);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.isComposing) generate();  // not while an IME (Chinese input) composes
});
loadModels().catch((err) => {
  $("server-status").textContent = "server unreachable";
  showError(err.message);
});

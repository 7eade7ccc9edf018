// The try-it page: the same POST /predict any client uses. No framework, no build step, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("textclf-key") || ""; // this tab only

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

function askForKey(message) {
  $("key-row").hidden = false;
  $("key").focus();
  showError(message);
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: fall back to the status */ }
  let text = body && body.error ? body.error : "HTTP " + response.status;
  if (body && body.error_type) text += " (" + body.error_type + ")";
  const retry = response.headers.get("Retry-After");
  if (retry) text += ". Retry in " + retry + " s.";
  return text;
}

async function loadModel() {
  const response = await fetch("/model", { headers: headers() });
  if (response.status === 401) {
    $("model").textContent = "This server needs an API key.";
    askForKey(await errorMessage(response));
    return;
  }
  if (!response.ok) {
    $("model").textContent = "Model unavailable: " + (await errorMessage(response));
    return;
  }
  const model = await response.json();
  $("model").textContent = "Model " + model.name + " · variant " + model.variant + " · sha256 " +
    String(model.sha256).slice(0, 12) + "… · labels " + model.labels.join(", ") +
    (model.engine ? " · " + model.engine + ", " + model.engine_threads + " threads" : "");
  $("model").dataset.variant = model.variant;
}

function card(text, prediction) {
  const item = document.createElement("article");
  item.className = "card";
  const quote = document.createElement("p");
  quote.className = "text";
  quote.textContent = text;
  const label = document.createElement("p");
  label.innerHTML = '<span class="label"></span>';
  // A multi-label model answers a label set (possibly empty): every label at or over its threshold.
  label.firstChild.textContent = prediction.labels === undefined ? prediction.label
    : prediction.labels.length ? prediction.labels.join(" · ") : "no label over the threshold";
  if (prediction.truncated) {
    const flag = document.createElement("span");
    flag.className = "flag";
    flag.textContent = "truncated";
    flag.title = "the text was cut at the model's max_seq_len tokens";
    label.appendChild(flag);
  }
  if (prediction.chunks > 1) { // on_overlength=chunk: the text was read in windows of max_seq_len tokens
    const flag = document.createElement("span");
    flag.className = "flag chunks";
    flag.textContent = prediction.chunks + " windows";
    flag.title = "the text was read in " + prediction.chunks +
      " overlapping windows of the model's max_seq_len tokens; the scores aggregate theirs";
    label.appendChild(flag);
  }
  if (prediction.abstained) { // under the server's (or request's) min_confidence: shown, greyed, for a person to check
    item.classList.add("abstained");
    const flag = document.createElement("span");
    flag.className = "flag abstained";
    flag.textContent = "abstained";
    flag.title = "the model is unsure: its best probability is under the server's min_confidence, so this " +
      "answer is left to you (label and scores are shown as they are)";
    label.appendChild(flag);
  }
  const bars = document.createElement("ul");
  bars.className = "bars";
  const ranked = Object.entries(prediction.scores).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of ranked) {
    const row = document.createElement("li");
    const pct = (100 * p).toFixed(1) + " %";
    row.innerHTML = '<span class="name"></span><span class="bar" role="img"><span></span></span>' +
      '<span class="pct"></span>';
    row.children[0].textContent = name;
    row.children[1].setAttribute("aria-label", name + " " + pct);
    row.children[1].firstChild.style.width = (100 * p).toFixed(1) + "%";
    row.children[2].textContent = pct;
    bars.appendChild(row);
  }
  item.append(quote, label, bars);
  return item;
}

async function classify(event) {
  if (event) event.preventDefault();
  if (!$("key-row").hidden && $("key").value.trim()) {
    apiKey = $("key").value.trim();
    sessionStorage.setItem("textclf-key", apiKey);
  }
  const texts = $("texts").value.split("\n");
  while (texts.length > 1 && texts[texts.length - 1] === "") texts.pop(); // a final newline is not a text
  showError("");
  $("classify").disabled = true;
  $("status").textContent = "Classifying…";
  const started = performance.now();
  try {
    const response = await fetch("/predict", { method: "POST", headers: headers(), body: JSON.stringify({ texts }) });
    const elapsed = performance.now() - started;
    if (response.status === 401) {
      $("status").textContent = "";
      askForKey(await errorMessage(response));
      return;
    }
    if (!response.ok) {
      $("status").textContent = "";
      showError(await errorMessage(response));
      return;
    }
    const predictions = await response.json();
    const results = $("results");
    results.replaceChildren(...predictions.map((p, i) => card(texts[i], p)));
    $("status").textContent = predictions.length + " text" + (predictions.length === 1 ? "" : "s") +
      " classified in " + elapsed.toFixed(0) + " ms";
    if ($("model").dataset.variant === undefined) loadModel();
  } catch (error) {
    $("status").textContent = "";
    showError("The server did not answer: " + error.message);
  } finally {
    $("classify").disabled = false;
  }
}

$("form").addEventListener("submit", classify);
$("texts").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify(event);
});
loadModel();

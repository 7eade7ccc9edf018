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

// An answer's character offsets count code points (Python's str); a JS string counts UTF-16 units, so past an emoji
// (or any character outside the BMP) the two differ. at[i] is the UTF-16 index of code point i; at[length] the end.
function codeUnitOffsets(text) {
  const at = [0];
  for (const character of text) at.push(at[at.length - 1] + character.length);
  return at;
}

// A weight with its sign: three decimals, or two significant digits under 0.001 (a weak word is not shown as 0).
function signed(weight) {
  const size = Math.abs(weight);
  return (weight < 0 ? "-" : "+") + (size >= 0.001 ? size.toFixed(3) : size.toPrecision(2));
}

// The text itself, built from text nodes and <mark>s cut from the original string at the answer's offsets (never
// parsed as HTML). Each explained word is tinted toward (green) or against (red) `label`, by its |weight| over the
// strongest of this text's words; its title and aria-label carry the weight, so the colour is not the only signal.
function quoteOf(text, words, label) {
  const quote = document.createElement("p");
  quote.className = "text";
  const at = codeUnitOffsets(text);
  const strongest = Math.max(0, ...words.map((w) => Math.abs(w.weight)));
  let done = 0; // UTF-16 index: everything before it is in `quote`
  for (const w of [...words].sort((a, b) => a.start - b.start)) {
    const start = at[w.start], end = at[w.end];
    // An offset that does not land on this word (it never should) leaves the word plain rather than misquote the text.
    if (start === undefined || end === undefined || start < done || text.slice(start, end) !== w.word) continue;
    if (start > done) quote.append(text.slice(done, start));
    const mark = document.createElement("mark");
    mark.className = w.weight < 0 ? "against" : "toward";
    mark.style.setProperty("--strength", strongest > 0 ? (Math.abs(w.weight) / strongest).toFixed(3) : "0");
    mark.textContent = w.word;
    mark.title = signed(w.weight) + (w.weight < 0 ? " against " : " toward ") + label;
    mark.setAttribute("aria-label", w.word + " (" + mark.title + ")");
    quote.append(mark);
    done = end;
  }
  if (done < text.length) quote.append(text.slice(done));
  return quote;
}

// What the colours mean, and which label they are for: a multi-label answer explains each of its labels (best
// first), and a select picks the one shown, its first label by default.
function legendOf(prediction, explained, show) {
  const legend = document.createElement("p");
  legend.className = "why";
  legend.append("Words ");
  const toward = document.createElement("mark");
  toward.className = "toward";
  toward.textContent = "toward";
  const against = document.createElement("mark");
  against.className = "against";
  against.textContent = "against";
  legend.append(toward, " and ", against, " ");
  if (explained.length > 1) {
    const pick = document.createElement("select");
    pick.setAttribute("aria-label", "label to explain");
    for (const name of explained) pick.append(new Option(name, name));
    pick.addEventListener("change", () => show(pick.value));
    legend.append(pick);
  } else {
    const name = document.createElement("b");
    name.textContent = explained[0];
    legend.append(name);
  }
  legend.append("; hover a word for its weight (the label's score drop without it).");
  if (prediction.explained_words < prediction.total_words) {
    legend.append(" Explained over " + prediction.explained_words + " of its " + prediction.total_words + " words.");
  }
  return legend;
}

function card(text, prediction) {
  const item = document.createElement("article");
  item.className = "card";
  let quote = quoteOf(text, [], "");
  // The explanation's labels in the prediction's order (JSON object keys would put a label named "2" first).
  const explained = !prediction.explanation ? []
    : (prediction.labels === undefined ? [prediction.label] : prediction.labels)
      .filter((name) => Object.hasOwn(prediction.explanation, name));
  const show = (name) => {
    const next = quoteOf(text, prediction.explanation[name], name);
    quote.replaceWith(next);
    quote = next;
  };
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
  if (explained.length) {
    show(explained[0]);
    label.after(legendOf(prediction, explained, show));
  }
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
  const post = (body) => fetch("/predict", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  let started = performance.now();
  let unexplained = "";
  try {
    let response = await post($("explain").checked ? { texts, explain: true } : { texts });
    if (response.status === 413 && $("explain").checked) {
      // Explaining costs one more classification per word: past the server's explain limits the texts are still
      // worth classifying, so ask again without explanations and say why.
      const refusal = await response.clone().json().catch(() => null);
      if (refusal && refusal.error_type === "explain_too_large") {
        unexplained = ", without explanations: " + refusal.error;
        started = performance.now();
        response = await post({ texts });
      }
    }
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
      " classified in " + elapsed.toFixed(0) + " ms" + unexplained;
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

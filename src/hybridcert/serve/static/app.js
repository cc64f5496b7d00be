// The moderation page: plain JavaScript, no framework (the service may have no internet).
"use strict";

const form = document.getElementById("moderate-form");
const imageInput = document.getElementById("image");
const preview = document.getElementById("preview");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const result = document.getElementById("result");

imageInput.addEventListener("change", () => {
  const file = imageInput.files[0];
  if (file) {
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }
});

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function radius(value) {
  return value === "inf" ? "\u221e" : Number(value).toFixed(3);
}

const ENDINGS = { certified: "certified", refuted: "refuted", gave_up: "gave up", cap: "cap" };

function ending(status, at) {
  return `${ENDINGS[status] || String(status)} at ${at}`;
}

function showTargets(targets) {
  const body = document.querySelector("#targets tbody");
  body.replaceChildren();
  for (const target of targets) {
    const row = document.createElement("tr");
    const budget = target.budget ? JSON.stringify(target.budget) : null;
    cell(row, budget || Number(target.l2).toString());
    cell(row, budget ? "" : String(target.tokens));
    cell(row, target.certified ? "yes" : "no", target.certified ? "yes" : "no");
    cell(row, ending(target.status, target.decided_at));
    body.appendChild(row);
  }
}

function showRegion(region) {
  const body = document.querySelector("#region tbody");
  body.replaceChildren();
  const chart = document.getElementById("region-chart");
  chart.replaceChildren();
  if (!region.length) {
    chart.textContent = "Nothing is certified: the service abstains.";
    return;
  }
  for (const row of region) {
    const tr = document.createElement("tr");
    cell(tr, typeof row.tokens === "object" ? JSON.stringify(row.tokens) : String(row.tokens));
    cell(tr, typeof row.l2_radius === "object" ? JSON.stringify(row.l2_radius)
      : radius(row.l2_radius));
    body.appendChild(tr);
  }
  const values = region.map(r => (typeof r.l2_radius === "number" ? r.l2_radius : 0));
  const finite = values.filter(Number.isFinite);
  const top = Math.max(1e-9, ...finite);
  const ns = "http://www.w3.org/2000/svg";
  const bar = 22, width = 420, left = 70;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(region.length * bar + 8));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "certified L2 radius by number of changed tokens");
  region.forEach((row, i) => {
    const value = Number.isFinite(values[i]) ? values[i] : top;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(left));
    rect.setAttribute("y", String(i * bar + 4));
    rect.setAttribute("height", String(bar - 6));
    rect.setAttribute("width", String(Math.max(1, (width - left - 60) * value / top)));
    rect.setAttribute("fill", "#3b6ea5");
    svg.appendChild(rect);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(i * bar + bar - 6));
    label.textContent = `${row.tokens} token${row.tokens === 1 ? "" : "s"}`;
    svg.appendChild(label);
    const amount = document.createElementNS(ns, "text");
    amount.setAttribute("x", String(left + 6 + (width - left - 60) * value / top));
    amount.setAttribute("y", String(i * bar + bar - 6));
    amount.textContent = radius(row.l2_radius);
    svg.appendChild(amount);
  });
  chart.appendChild(svg);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorLine.hidden = true;
  result.hidden = true;
  if (!imageInput.files.length) {
    errorLine.textContent = "Choose an image first.";
    errorLine.hidden = false;
    return;
  }
  const data = new FormData();
  data.append("image", imageInput.files[0]);
  data.append("text", document.getElementById("text").value);
  const headers = {};
  const key = document.getElementById("api-key").value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  statusLine.textContent = "Certifying\u2026";
  try {
    const response = await fetch("/v1/moderate", { method: "POST", body: data, headers });
    const answer = await response.json();
    if (!response.ok) {
      const where = answer.field ? ` (${answer.field})` : "";
      throw new Error(`${response.status}${where}: ${answer.error}`);
    }
    const decision = document.getElementById("decision");
    decision.textContent = answer.decision;
    decision.className = answer.decision;
    const bound = answer.p_lower === null ? "n/a" : answer.p_lower.toFixed(4);
    document.getElementById("summary").textContent =
      `${ending(answer.status, answer.decided_at)} · ` +
      `lower bound ${bound} · ${answer.queries} model evaluations · ` +
      `${answer.latency_ms.toFixed(0)} ms · alpha ${answer.alpha}`;
    showTargets(answer.certified);
    showRegion(answer.region);
    result.hidden = false;
    statusLine.textContent = "";
  } catch (err) {
    statusLine.textContent = "";
    errorLine.textContent = String(err.message || err);
    errorLine.hidden = false;
  }
});

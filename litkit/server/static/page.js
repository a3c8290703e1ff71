// litkit's page at / : lists the endpoints that openapi.json describes and calls them.
// Every URL is relative to this page (it may be served under a proxy's prefix or litkit's Jupyter
// route), nothing is fetched from another origin, and every value that comes from a request or a
// response is set as text (textContent, input values), never parsed as HTML.
"use strict";

const KEY_STORAGE = "litkit-api-key";
const base = new URL(".", window.location.href);
let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function relative(path) {
  return path.replace(/^\/+/, "");  // "/predict" -> "predict": resolved against the page's folder
}

function xsrfToken() {
  // Through litkit's Jupyter route the page is on the Jupyter server's origin, whose POSTs need
  // its XSRF token; directly to litkit the header is simply ignored.
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function requestHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (apiKey) headers["X-API-Key"] = apiKey;
  const xsrf = xsrfToken();
  if (xsrf) headers["X-XSRFToken"] = xsrf;
  return headers;
}

function showNotice(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.hidden = !text;
}

async function load() {
  let response;
  try {
    response = await fetch("openapi.json", { headers: requestHeaders({ Accept: "application/json" }), cache: "no-store" });
  } catch (error) {
    showNotice("Could not reach the server: " + error.message);
    return;
  }
  const keyForm = document.getElementById("key-form");
  if (response.status === 401) {
    keyForm.hidden = false;
    showNotice(apiKey ? "The server refused this API key; enter the right one." : "This server needs its API key to list and call its endpoints.");
    document.getElementById("endpoints").replaceChildren();
    return;
  }
  if (!response.ok) {
    showNotice(`openapi.json answered ${response.status}: ${await response.text()}`);
    return;
  }
  const documentJSON = await response.json();
  showNotice("");
  keyForm.hidden = !documentJSON["x-litkit-api-key"];
  document.getElementById("title").textContent = documentJSON.info.title;
  document.getElementById("version").textContent = documentJSON.info.version;
  document.title = documentJSON.info.title + " · litkit";
  const main = document.getElementById("endpoints");
  main.replaceChildren();
  for (const [path, item] of Object.entries(documentJSON.paths)) {
    if (item.post) main.append(new Endpoint(path, item.post, documentJSON.components || {}).section);
  }
}

function setupKeyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key");
  input.value = apiKey;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = input.value.trim();
    if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey); else sessionStorage.removeItem(KEY_STORAGE);
    load();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    apiKey = "";
    input.value = "";
    sessionStorage.removeItem(KEY_STORAGE);
    load();
  });
}

// -- helpers ---------------------------------------------------------------------------------------

function chatMessage(role, content) {
  const message = el("div", "message " + (role === "user" ? "user" : role === "system" ? "system" : "assistant"));
  message.append(el("span", "role", role), el("span", "content", content));
  return message;
}

function parseEvent(text) {
  let name = "message";
  const data = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { name, data: data.length ? data.join("\n") : null };
}

function isErrorLine(line, requestId) {
  try {
    const value = JSON.parse(line);
    return value !== null && typeof value === "object" && "error" in value && value.request_id === requestId;
  } catch (error) {
    return false;
  }
}

function compact(text) {
  try { return JSON.stringify(JSON.parse(text)); } catch (error) { return text; }
}

function formatMs(ms) {
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function shellQuote(text) {
  return "'" + String(text).replace(/'/g, "'\\''") + "'";
}

function pyString(text) {
  return JSON.stringify(String(text));  // a JSON string is a valid Python str literal
}

function pyRepr(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string") return pyString(value);
  if (typeof value === "number") return String(value);
  if (Array.isArray(value)) return "[" + value.map(pyRepr).join(", ") + "]";
  return "{" + Object.entries(value).map(([k, v]) => pyString(k) + ": " + pyRepr(v)).join(", ") + "}";
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Select and copy";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

setupKeyForm();
load();

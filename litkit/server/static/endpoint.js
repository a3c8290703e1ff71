// One endpoint of litkit's page (page.js draws the page and holds the helpers used here): its
// request editor (JSON, or an HTML form with files), Run and Stop, the answer as it arrives, and the
// same call as curl and Python. Inlined into the page after page.js's declarations are read, as one
// script. Everything from a request or an answer is set as text, never as HTML.
"use strict";

class Endpoint {
  constructor(path, operation, components) {
    this.path = path;
    this.operation = operation;
    this.stream = Boolean(operation["x-litkit-stream"]);
    this.spec = operation["x-litkit-spec"] || null;
    this.chat = this.spec === "openai-chat";
    const content = operation.requestBody.content;
    this.example = content["application/json"].example;
    this.formAllowed = "multipart/form-data" in content;
    this.controller = null;
    this.build();
  }

  build() {
    const section = this.section = el("section", "endpoint");
    section.dataset.path = this.path;
    const title = el("h2");
    title.append(el("span", "method", "POST"), el("span", "path", this.path));
    const kind = this.chat ? "OpenAI chat" : this.spec ? this.spec : this.stream ? "streaming" : "JSON";
    title.append(el("span", "badge", kind), el("span", "summary", this.operation.summary));
    section.append(title);
    if (this.operation.description) section.append(el("p", "note", this.operation.description));

    const columns = el("div", "columns");
    const left = el("div"), right = el("div");
    columns.append(left, right);
    section.append(columns);

    // The request: a JSON editor, or (litkit's own endpoints) an HTML form with files.
    const modes = el("div", "controls");
    this.mode = "json";
    if (this.formAllowed) {
      const select = el("select", "mode");
      select.setAttribute("aria-label", "request body");
      for (const [value, label] of [["json", "JSON body"], ["form", "Form (multipart, files)"]]) {
        const option = el("option", null, label);
        option.value = value;
        select.append(option);
      }
      select.addEventListener("change", () => { this.mode = select.value; this.showMode(); this.updateSnippets(); });
      modes.append(select);
    }
    if (this.stream && !this.spec) {
      const label = el("label");
      this.sse = el("input");
      this.sse.type = "checkbox";
      this.sse.className = "sse";
      this.sse.addEventListener("change", () => this.updateSnippets());
      label.append(this.sse, document.createTextNode(" as server-sent events"));
      modes.append(label);
    }
    left.append(modes);
    this.editor = el("textarea", "body");
    this.editor.spellcheck = false;
    this.editor.setAttribute("aria-label", `request body for ${this.path}`);
    this.editor.value = JSON.stringify(this.example, null, 2);
    this.editor.addEventListener("input", () => this.updateSnippets());
    left.append(this.editor);
    this.form = el("div", "form-rows");
    this.form.hidden = true;
    const addField = el("button", null, "+ field"), addFile = el("button", null, "+ file");
    addField.type = addFile.type = "button";
    addField.addEventListener("click", () => this.addRow("text"));
    addFile.addEventListener("click", () => this.addRow("file"));
    this.formButtons = el("div", "controls");
    this.formButtons.append(addField, addFile);
    this.form.append(this.formButtons);
    left.append(this.form);
    if (this.formAllowed) { this.addRow("text"); this.addRow("file"); }

    const actions = el("div", "controls");
    this.runButton = el("button", "run", "Run");
    this.stopButton = el("button", "stop", "Stop");
    this.stopButton.disabled = true;
    this.runButton.addEventListener("click", () => this.run());
    this.stopButton.addEventListener("click", () => this.stop());
    actions.append(this.runButton, this.stopButton);
    left.append(actions);

    this.snippets = el("details", "snippets");
    this.snippets.append(el("summary", null, "curl and Python"));
    this.snippetBlocks = {};
    for (const [name, label] of [["curl", "curl"], ["client", "Python: litkit.Client"], ["requests", "Python: requests"]]) {
      const block = el("div", "snippet");
      const code = el("pre", "code " + name);
      const copy = el("button", "copy", "Copy");
      copy.type = "button";
      copy.addEventListener("click", () => copyText(code.textContent, copy));
      block.append(el("h3", null, label), copy, code);
      this.snippets.append(block);
      this.snippetBlocks[name] = code;
    }
    left.append(this.snippets);

    // The answer.
    this.meta = el("div", "meta");
    this.outcome = el("div", "outcome");
    this.output = el("div", "output");
    right.append(this.meta, this.outcome, this.output);
    this.updateSnippets();
  }

  addRow(kind) {
    const row = el("div", "row");
    const name = el("input");
    name.type = "text";
    name.placeholder = "name";
    name.className = "field-name";
    name.value = kind === "file" ? "file" : "";
    const value = el("input");
    value.type = kind;
    value.className = kind === "file" ? "field-file" : "field-value";
    if (kind === "text") value.placeholder = "value";
    for (const input of [name, value]) input.addEventListener("input", () => this.updateSnippets());
    value.addEventListener("change", () => this.updateSnippets());
    row.append(name, value);
    this.form.insertBefore(row, this.formButtons);
  }

  showMode() {
    this.editor.hidden = this.mode !== "json";
    this.form.hidden = this.mode !== "form";
  }

  formFields() {
    const fields = [];
    for (const row of this.form.querySelectorAll(".row")) {
      const name = row.querySelector(".field-name").value.trim();
      const text = row.querySelector(".field-value");
      const file = row.querySelector(".field-file");
      if (!name) continue;
      if (text) fields.push({ name, value: text.value });
      else if (file && file.files.length) fields.push({ name, file: file.files[0] });
    }
    return fields;
  }

  wantsSSE() {
    return this.sse ? this.sse.checked : false;
  }

  // -- calling ------------------------------------------------------------------------------

  async run() {
    const headers = requestHeaders({});
    let body;
    if (this.mode === "form") {
      body = new FormData();
      for (const field of this.formFields()) {
        if (field.file) body.append(field.name, field.file, field.file.name); else body.append(field.name, field.value);
      }
    } else {
      try {
        JSON.parse(this.editor.value);
      } catch (error) {
        this.reset();
        this.setOutcome("failed", "The body is not valid JSON: " + error.message);
        return;
      }
      body = this.editor.value;
      headers["Content-Type"] = "application/json";
    }
    if (this.wantsSSE()) headers.Accept = "text/event-stream";
    this.reset();
    const controller = this.controller = new AbortController();
    this.runButton.disabled = true;
    this.stopButton.disabled = false;
    this.section.dataset.state = "running";
    this.chunks = 0;
    this.started = performance.now();
    this.firstAt = null;
    this.setOutcome("running", "running…");
    let response = null;
    try {
      response = await fetch(relative(this.path), { method: "POST", headers, body, signal: controller.signal, cache: "no-store" });
      this.showHead(response);
      const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
      if (response.ok && (type === "application/x-ndjson" || type === "text/event-stream")) {
        await this.readStream(response, type);
        this.finish("completed", `completed: ${this.chunks} chunk${this.chunks === 1 ? "" : "s"}`);
      } else {
        this.markFirst();  // a JSON answer's first byte: its headers are in
        const text = await response.text();
        this.showJSON(text, response.ok);
        this.finish(response.ok ? "completed" : "failed", response.ok ? "completed" : `failed: ${response.status}`);
      }
    } catch (error) {
      if (error.name === "AbortError") {
        this.finish("stopped", `stopped after ${this.chunks} chunk${this.chunks === 1 ? "" : "s"}`);
      } else {
        this.finish("failed", "the request failed: " + error.message);
      }
    }
  }

  stop() {
    if (this.controller) this.controller.abort();  // the browser hangs up: the server closes the generator
  }

  reset() {
    this.meta.replaceChildren();
    this.output.replaceChildren();
    this.outcome.className = "outcome";
    this.outcome.textContent = "";
  }

  setOutcome(state, text) {
    this.outcome.className = "outcome " + state;
    this.outcome.textContent = text;
  }

  finish(state, text) {
    this.controller = null;
    this.runButton.disabled = false;
    this.stopButton.disabled = true;
    this.section.dataset.state = state;
    this.setOutcome(state, text);
    this.metaItem("total", `total ${formatMs(performance.now() - this.started)}`);
  }

  showHead(response) {
    const status = el("span", "status " + (response.ok ? "ok" : "bad"), `${response.status} ${response.statusText}`.trim());
    this.meta.append(status);
    const id = response.headers.get("X-Request-ID");
    if (id) this.metaItem("request-id", "request id " + id);
  }

  metaItem(name, text) {
    let item = this.meta.querySelector("." + name);
    if (!item) { item = el("span", name); this.meta.append(item); }
    item.textContent = text;
  }

  markFirst() {
    if (this.firstAt === null) {
      this.firstAt = performance.now();
      this.metaItem("first", `first chunk ${formatMs(this.firstAt - this.started)}`);
    }
  }

  showJSON(text, ok) {
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (error) { /* not JSON: show it as it came */ }
    if (this.chat && ok) {
      try {
        const answer = JSON.parse(text);
        const transcript = this.transcript();
        const message = answer.choices[0].message;
        transcript.append(chatMessage(message.role || "assistant", message.content || ""));
        return;
      } catch (error) { /* not a chat answer: show the JSON */ }
    }
    this.output.append(el("pre", "json" + (ok ? "" : " error"), shown));
  }

  transcript() {
    const transcript = el("div", "transcript");
    try {
      for (const message of JSON.parse(this.editor.value).messages || []) {
        const content = typeof message.content === "string" ? message.content : JSON.stringify(message.content);
        transcript.append(chatMessage(message.role || "user", content));
      }
    } catch (error) { /* the body ran, so it parsed; nothing to add otherwise */ }
    this.output.append(transcript);
    return transcript;
  }

  async readStream(response, type) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const requestId = response.headers.get("X-Request-ID");
    let list = null, assistant = null;
    if (this.chat) {
      assistant = chatMessage("assistant", "");
      this.transcript().append(assistant);
    } else {
      list = el("ol", "chunks");
      this.output.append(list);
    }
    const show = (text, isError) => {
      this.chunks += 1;
      this.markFirst();
      this.metaItem("count", `${this.chunks} chunk${this.chunks === 1 ? "" : "s"}`);
      if (assistant && !isError) {
        try {
          const delta = JSON.parse(text).choices[0].delta;
          if (delta && typeof delta.content === "string") assistant.lastChild.textContent += delta.content;
          return;
        } catch (error) { /* fall through: show the raw event */ }
      }
      const item = el(list ? "li" : "div", isError ? "error" : list ? null : "message system", compact(text));
      (list || assistant.parentNode).append(item);
      if (list) list.scrollTop = list.scrollHeight;
    };
    let pending = "";
    const separator = type === "text/event-stream" ? /\r?\n\r?\n/ : /\r?\n/;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const pieces = pending.split(separator);
      pending = pieces.pop();
      for (const piece of pieces) {
        if (type === "text/event-stream") {
          const event = parseEvent(piece);
          if (event.data === null || event.data === "[DONE]") continue;
          show(event.data, event.name === "error");
        } else if (piece.trim()) {
          show(piece, isErrorLine(piece, requestId));
        }
      }
    }
    if (pending.trim() && type !== "text/event-stream") show(pending, isErrorLine(pending, requestId));
  }

  // -- snippets ---------------------------------------------------------------------------------

  updateSnippets() {
    const url = new URL(relative(this.path), base).href;
    const root = base.href.replace(/\/$/, "");
    const keyed = Boolean(apiKey) || !document.getElementById("key-form").hidden;
    const streams = this.stream && !this.chat;
    const sse = this.wantsSSE();
    let body = null;
    try { body = JSON.parse(this.editor.value); } catch (error) { body = null; }
    const blocks = this.snippetBlocks;
    if (this.mode === "form") {
      const fields = this.formFields();
      const parts = ["curl" + (streams ? " -N" : "") + " -X POST " + shellQuote(url)];
      if (keyed) parts.push('-H "X-API-Key: $LITKIT_API_KEY"');
      if (sse) parts.push("-H 'Accept: text/event-stream'");
      for (const field of fields) parts.push("-F " + shellQuote(field.file ? `${field.name}=@${field.file.name}` : `${field.name}=${field.value}`));
      blocks.curl.textContent = parts.join(" \\\n  ");
      blocks.client.textContent = "# litkit.Client sends JSON bodies; for a form, use requests (below).";
      const data = fields.filter((f) => !f.file).map((f) => `${pyString(f.name)}: ${pyString(f.value)}`).join(", ");
      const files = fields.filter((f) => f.file).map((f) => `${pyString(f.name)}: open(${pyString(f.file.name)}, "rb")`).join(", ");
      blocks.requests.textContent = [
        ...(keyed ? ["import os"] : []), "import requests", "",
        `response = requests.post(${pyString(url)}, data={${data}}, files={${files}}${keyed ? ', headers={"X-API-Key": os.environ["LITKIT_API_KEY"]}' : ""}, timeout=60)`,
        "print(response.status_code, response.text)",
      ].join("\n");
      return;
    }
    const json = body === null ? this.editor.value : JSON.stringify(body);
    const parts = ["curl" + (streams || this.chat ? " -N" : "") + " -X POST " + shellQuote(url), "-H 'Content-Type: application/json'"];
    if (keyed) parts.push('-H "X-API-Key: $LITKIT_API_KEY"');
    if (sse) parts.push("-H 'Accept: text/event-stream'");
    parts.push("-d " + shellQuote(json));
    blocks.curl.textContent = parts.join(" \\\n  ");
    const payload = body === null ? "...  # the editor's body is not valid JSON" : pyRepr(body);
    const key = keyed ? ', api_key=os.environ["LITKIT_API_KEY"]' : "";
    const call = streams
      ? [`with client.stream(${payload}, path=${pyString(this.path)}${sse ? ", sse=True" : ""}) as chunks:`, "    for chunk in chunks:  # leaving the block hangs up: the work stops", "        print(chunk)"]
      : [`print(client.predict(${payload}, path=${pyString(this.path)}))`];
    blocks.client.textContent = [...(keyed ? ["import os"] : []), "import litkit", "", `client = litkit.Client(${pyString(root)}${key})`, ...call].join("\n");
    const headers = keyed ? ', headers={"X-API-Key": os.environ["LITKIT_API_KEY"]' + (sse ? ', "Accept": "text/event-stream"}' : "}") : sse ? ', headers={"Accept": "text/event-stream"}' : "";
    const lines = [...(streams && !sse ? ["import json"] : []), ...(keyed ? ["import os"] : []), "import requests", ""];
    if (streams) {
      lines.push(`with requests.post(${pyString(url)}, json=${payload}${headers}, stream=True, timeout=60) as response:`,
        "    for line in response.iter_lines():  # one chunk per line" + (sse ? " (SSE: data: lines)" : ""),
        "        if line:",
        sse ? "            print(line.decode())" : "            print(json.loads(line))");
    } else {
      lines.push(`response = requests.post(${pyString(url)}, json=${payload}${headers}, timeout=60)`, "print(response.status_code, response.json())");
    }
    blocks.requests.textContent = lines.join("\n");
  }
}


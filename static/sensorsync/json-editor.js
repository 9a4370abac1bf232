/*
 * SensorSync JSON editor: a small enhancement of the admin's JSON text areas (no dependencies, no network).
 *
 * Every <textarea data-json-editor> gets, as you type: a check that the text is valid JSON of the expected kind
 * ("object" or "array", from data-json-type), the error's line and column (click it to jump there), a "Format"
 * button that pretty-prints with two-space indentation, auto-indentation on Enter and a height that follows the
 * content. The server still validates on save and shows its errors on the field; this only shows them sooner.
 */
(function () {
  "use strict";

  var KINDS = { object: "a JSON object", array: "a JSON list" };

  function kindOf(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "array";
    return typeof value;
  }

  // Line and column (1-based) of a character offset.
  function lineColumn(text, offset) {
    var before = text.slice(0, offset).split("\n");
    return { line: before.length, column: before[before.length - 1].length + 1 };
  }

  // Offset of a line and column (1-based).
  function offsetOf(text, line, column) {
    var lines = text.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    return Math.min(text.length, offset + column - 1);
  }

  // Where JSON.parse stopped, from its message (V8: "at position N" / "(line L column C)"; Firefox: "line L column C").
  function errorOffset(text, message) {
    var match = /line (\d+) column (\d+)/.exec(message);
    if (match) return offsetOf(text, Number(match[1]), Number(match[2]));
    match = /position (\d+)/.exec(message);
    if (match) return Math.min(text.length, Number(match[1]));
    if (/end of (JSON|data)/i.test(message)) return text.length;
    return null;
  }

  // The parser's message without the parts that repeat what we show anyway.
  function shortMessage(message) {
    return message
      .replace(/^JSON\.parse: /, "")
      .replace(/ (in JSON )?at position \d+( \(line \d+ column \d+\))?/, "")
      .replace(/ at line \d+ column \d+ of the JSON data/, "")
      .replace(/, ".*" is not valid JSON$/, "");
  }

  function check(text, expected, optional) {
    if (!text.trim()) {
      if (optional) return { ok: true, note: "Empty: the default is used." };
      return { ok: false, empty: true, message: "Required: " + (KINDS[expected] || "JSON") + "." };
    }
    var value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      var offset = errorOffset(text, error.message);
      return { ok: false, message: shortMessage(error.message), offset: offset };
    }
    if (expected && kindOf(value) !== expected) {
      return { ok: false, message: "Must be " + KINDS[expected] + ", not " + kindOf(value).replace("array", "a list") + "." };
    }
    if (expected === "array") {
      for (var i = 0; i < value.length; i++) {
        if (kindOf(value[i]) !== "object") return { ok: false, message: "Item " + (i + 1) + " must be a JSON object." };
      }
    }
    return { ok: true, value: value };
  }

  function autoGrow(textarea) {
    var lines = textarea.value.split("\n").length;
    textarea.rows = Math.max(4, Math.min(28, lines + 1));
  }

  function enhance(textarea) {
    if (textarea.dataset.jsonEditorReady) return;
    textarea.dataset.jsonEditorReady = "1";
    var expected = textarea.dataset.jsonType || "";
    var optional = textarea.dataset.jsonOptional === "true";

    var wrapper = document.createElement("div");
    wrapper.className = "ss-json";
    textarea.parentNode.insertBefore(wrapper, textarea);
    wrapper.appendChild(textarea);
    textarea.classList.add("ss-json__input");
    textarea.spellcheck = false;
    textarea.setAttribute("autocomplete", "off");
    textarea.setAttribute("autocapitalize", "off");

    var bar = document.createElement("div");
    bar.className = "ss-json__bar";
    var status = document.createElement("span");
    status.className = "ss-json__status";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    status.id = textarea.id ? textarea.id + "_json_status" : "";
    var format = document.createElement("button");
    format.type = "button";
    format.className = "ss-json__format";
    format.textContent = "Format";
    format.title = "Pretty-print with two-space indentation";
    bar.appendChild(status);
    bar.appendChild(format);
    wrapper.appendChild(bar);
    if (status.id) textarea.setAttribute("aria-describedby", status.id);

    var timer = null;
    // A required field left empty is not shown as an error before the user has typed in it.
    var touched = textarea.value.trim() !== "";

    function show() {
      var result = check(textarea.value, expected, optional);
      status.textContent = "";
      if (result.empty && !touched) {
        wrapper.classList.remove("ss-json--invalid", "ss-json--valid");
        format.disabled = true;
        status.textContent = result.message;
        return;
      }
      wrapper.classList.toggle("ss-json--invalid", !result.ok);
      wrapper.classList.toggle("ss-json--valid", result.ok);
      textarea.setAttribute("aria-invalid", result.ok ? "false" : "true");
      format.disabled = !result.ok || !textarea.value.trim();
      if (result.ok) {
        status.textContent = result.note || "\u2713 Valid " + (KINDS[expected] ? KINDS[expected].replace(/^an? /, "") : "JSON");
        return;
      }
      status.appendChild(document.createTextNode("\u2717 " + result.message));
      if (result.offset !== null && result.offset !== undefined) {
        var where = lineColumn(textarea.value, result.offset);
        var jump = document.createElement("a");
        jump.href = "#";
        jump.className = "ss-json__where";
        jump.textContent = "line " + where.line + ", column " + where.column;
        jump.addEventListener("click", function (event) {
          event.preventDefault();
          textarea.focus();
          textarea.setSelectionRange(result.offset, Math.min(textarea.value.length, result.offset + 1));
        });
        status.appendChild(document.createTextNode(" at "));
        status.appendChild(jump);
      }
    }

    textarea.addEventListener("blur", function () {
      touched = true;
      show();
    });

    textarea.addEventListener("input", function () {
      touched = true;
      autoGrow(textarea);
      clearTimeout(timer);
      timer = setTimeout(show, 120);
    });

    textarea.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey || event.ctrlKey || event.metaKey || event.altKey) return;
      // Keep the current line's indentation, one level deeper after an opening bracket.
      var start = textarea.selectionStart;
      var text = textarea.value;
      var lineStart = text.lastIndexOf("\n", start - 1) + 1;
      var indent = /^[ \t]*/.exec(text.slice(lineStart, start))[0];
      var previous = text.slice(lineStart, start).trimEnd().slice(-1);
      if (previous === "{" || previous === "[") indent += "  ";
      event.preventDefault();
      textarea.setRangeText("\n" + indent, start, textarea.selectionEnd, "end");
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    });

    format.addEventListener("click", function () {
      var result = check(textarea.value, expected, optional);
      if (!result.ok || result.value === undefined) return;
      textarea.value = JSON.stringify(result.value, null, 2);
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
      show();
    });

    autoGrow(textarea);
    show();
  }

  function enhanceAll(root) {
    var areas = (root || document).querySelectorAll("textarea[data-json-editor]");
    for (var i = 0; i < areas.length; i++) enhance(areas[i]);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { enhanceAll(document); });
  } else {
    enhanceAll(document);
  }
  window.SensorSyncJSONEditor = { enhance: enhance, enhanceAll: enhanceAll, check: check };
})();

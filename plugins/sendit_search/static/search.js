/* sendit_search: autocompletion of the query box (fields the stored images
   have, then their values), an ARIA combobox driven by the keyboard or the
   mouse. The page works without it. */
(function () {
  "use strict";
  var input = document.getElementById("q");
  var list = document.getElementById("q-suggestions");
  if (!input || !list) { return; }
  var fields = null;       // [{text, keyword, tag, vr, creator}], fetched once
  var items = [];          // the suggestions shown: {label, kind, apply}
  var active = -1;
  var valueTimer = null;
  var valueRequest = 0;
  var OPERATOR = /(!=|~=|<=|>=|=|~|<|>)/;

  var fieldsRequest = null;  // the one request for the fields while it is on its way

  /* Fetch the fields once. Keystrokes made while the answer is on its way are
     not lost: each waits for it, then suggests from what the box holds then.
     A failed request is tried again at the next keystroke. */
  function loadFields() {
    if (fields !== null) { return Promise.resolve(true); }
    if (!fieldsRequest) {
      fieldsRequest = fetch(input.getAttribute("data-fields-url"), {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) { throw new Error(r.statusText); } return r.json(); })
        .then(function (data) { fields = data.fields || []; return true; })
        .catch(function () { return false; })
        .then(function (loaded) { fieldsRequest = null; return loaded; });
    }
    return fieldsRequest;
  }

  function withFields(then) {
    if (fields !== null) { then(); return; }
    loadFields().then(function (loaded) {
      if (loaded && document.activeElement === input) { suggest(); }
    });
  }

  /* The token under the cursor: where it starts, and its text up to the cursor.
     Quoted values keep their spaces; ( ) and spaces end a token. */
  function currentToken() {
    var text = input.value, end = input.selectionStart === null ? text.length : input.selectionStart;
    var start = 0, quoted = false;
    for (var i = 0; i < end; i++) {
      var c = text[i];
      if (quoted) {
        if (c === "\\") { i++; } else if (c === '"') { quoted = false; }
      } else if (c === '"') {
        quoted = true;
      } else if (/\s|\(|\)/.test(c)) {
        start = i + 1;
      }
    }
    var token = text.slice(start, end);
    if (token.charAt(0) === "-") { start += 1; token = token.slice(1); }
    var tail = text.slice(end).match(/^[^\s()]*/)[0];
    return {start: start, end: end + tail.length, text: token};
  }

  function needsQuotes(value, op) {
    if (value === "" || /[\s)"]/.test(value) || /^[=<>~!]/.test(value)) { return true; }
    return op !== "=" && op !== "!=" && op !== "~=" ? /[*?]/.test(value) : false;
  }

  function quote(value) { return '"' + value.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"'; }

  function replaceToken(token, replacement) {
    var text = input.value;
    input.value = text.slice(0, token.start) + replacement + text.slice(token.end);
    var caret = token.start + replacement.length;
    input.setSelectionRange(caret, caret);
    input.focus();
  }

  function fieldItems(prefix, token, hasPrefix) {
    var lower = prefix.toLowerCase();
    var starts = [], inside = [];
    (fields || []).forEach(function (f) {
      var t = f.text.toLowerCase();
      if (lower && t === lower && !hasPrefix) { starts.unshift(f); }
      else if (t.indexOf(lower) === 0) { starts.push(f); }
      else if (lower && (t.indexOf(lower) > 0 || (f.keyword || "").toLowerCase().indexOf(lower) >= 0)) { inside.push(f); }
    });
    return starts.concat(inside).slice(0, 12).map(function (f) {
      return {
        label: f.text, match: prefix, kind: f.vr + (f.creator ? " · " + f.creator : ""),
        apply: function () { replaceToken(token, (hasPrefix ? "has:" : "") + f.text + (hasPrefix ? " " : "=")); suggest(); }
      };
    });
  }

  function valueItems(field, op, prefix, token, head) {
    var ticket = ++valueRequest;
    clearTimeout(valueTimer);
    valueTimer = setTimeout(function () {
      var url = input.getAttribute("data-values-url") + "?field=" + encodeURIComponent(field) +
        "&prefix=" + encodeURIComponent(prefix);
      fetch(url, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : {values: []}; })
        .then(function (data) {
          if (ticket !== valueRequest) { return; }
          show((data.values || []).map(function (value) {
            return {
              label: value, match: prefix, kind: "value",
              apply: function () {
                replaceToken(token, head + (needsQuotes(value, op) ? quote(value) : value) + " ");
                close();
              }
            };
          }));
        })
        .catch(function () { close(); });
    }, 120);
  }

  function suggest() {
    var token = currentToken();
    var text = token.text;
    if (/^has:/i.test(text)) {
      withFields(function () { show(fieldItems(text.slice(4), token, true)); });
      return;
    }
    var op = text.match(OPERATOR);
    if (op) {
      var field = text.slice(0, op.index);
      var value = text.slice(op.index + op[0].length);
      if (!field || value.charAt(0) === '"' && value.length > 1 && value.slice(-1) === '"') { close(); return; }
      var prefix = value.replace(/^"/, "").replace(/[*?].*$/, "");
      valueItems(field, op[0], prefix, token, field + op[0]);
      return;
    }
    if (!text || /^(and|or|not)$/i.test(text)) { close(); return; }
    withFields(function () { show(fieldItems(text, token, false)); });
  }

  function highlight(label, match) {
    var span = document.createElement("span");
    span.className = "text";
    var at = match ? label.toLowerCase().indexOf(match.toLowerCase()) : -1;
    if (at < 0) { span.textContent = label; return span; }
    span.appendChild(document.createTextNode(label.slice(0, at)));
    var mark = document.createElement("mark");
    mark.textContent = label.slice(at, at + match.length);
    span.appendChild(mark);
    span.appendChild(document.createTextNode(label.slice(at + match.length)));
    return span;
  }

  function show(newItems) {
    items = newItems;
    active = -1;
    list.textContent = "";
    if (!items.length) { close(); return; }
    items.forEach(function (item, index) {
      var li = document.createElement("li");
      li.id = "q-option-" + index;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.appendChild(highlight(item.label, item.match));
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = item.kind;
      li.appendChild(kind);
      li.addEventListener("mousedown", function (event) { event.preventDefault(); item.apply(); });
      list.appendChild(li);
    });
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function close() {
    valueRequest++;  // an answer still on its way is no longer wanted
    clearTimeout(valueTimer);
    items = [];
    active = -1;
    list.hidden = true;
    list.textContent = "";
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function move(step) {
    if (!items.length) { return; }
    active = (active + step + items.length) % items.length;
    Array.prototype.forEach.call(list.children, function (li, index) {
      li.setAttribute("aria-selected", index === active ? "true" : "false");
    });
    var current = list.children[active];
    input.setAttribute("aria-activedescendant", current.id);
    current.scrollIntoView({block: "nearest"});
  }

  input.addEventListener("input", suggest);
  input.addEventListener("focus", function () { loadFields(); });
  input.addEventListener("blur", function () { setTimeout(close, 100); });
  input.addEventListener("keydown", function (event) {
    if (event.key === "ArrowDown") {
      if (list.hidden) { suggest(); } else { move(1); }
      event.preventDefault();
    } else if (event.key === "ArrowUp") {
      move(-1);
      event.preventDefault();
    } else if ((event.key === "Enter" || event.key === "Tab") && !list.hidden && items.length) {
      if (active < 0 && event.key === "Enter") { close(); return; }  // submit the query
      items[Math.max(active, 0)].apply();
      event.preventDefault();
    } else if (event.key === "Escape" && !list.hidden) {
      close();
      event.preventDefault();
    }
  });

  // "Fields in the stored images": a click adds the field to the query being typed
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-insert]");
    if (!link) { return; }
    event.preventDefault();
    var text = input.value.replace(/\s+$/, "");
    input.value = (text ? text + " " : "") + link.getAttribute("data-insert") + "=";
    input.setSelectionRange(input.value.length, input.value.length);
    input.focus();
    input.scrollIntoView({block: "center"});
  });
})();

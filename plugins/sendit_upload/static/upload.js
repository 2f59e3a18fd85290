/* sendit_upload: the upload page's pickers, drop zone, progress bars and import status.
 *
 * Without this script the page is a plain multipart form. With it, the chosen
 * files are sent with XMLHttpRequest (for upload progress), in as many requests
 * as the server's limits need: the first creates the batch (or goes to the
 * batch the page is for), the next ones add to it. Then the page polls the
 * batch's progress until the worker has imported everything, and opens it.
 */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) { return; }

  function $(id) { return document.getElementById(id); }
  var limits = {
    file: Number(form.dataset.maxFile), request: Number(form.dataset.maxRequest),
    files: Number(form.dataset.maxFiles)
  };
  var isNew = form.dataset.new === "1";
  var csrf = form.querySelector("input[name=csrf_token]").value;
  var SHOWN = 200;            // rows listed in the selection table
  var PART_OVERHEAD = 512;    // multipart bytes per file besides its contents and name
  var FORM_ROOM = 64 * 1024;  // room kept in each request for the other fields
  var POLL_MS = 1000;

  var items = [];   // {file, name, size, status, row}
  var seen = Object.create(null);
  var groups = [], totalBytes = 0, doneBytes = 0, doneFiles = 0, totalFiles = 0;
  var xhr = null, sending = false, cancelled = false, batch = null, started = 0;

  var zone = $("dropzone"), pickFiles = $("pick-files"), pickFolder = $("pick-folder");
  var errorBox = $("upload-error");

  // -- scripted pickers instead of the plain inputs ------------------------------------
  $("native-pickers").hidden = true;
  zone.hidden = false;
  $("choose-files").addEventListener("click", function () { pickFiles.click(); });
  if ("webkitdirectory" in pickFolder) {
    $("choose-folder").addEventListener("click", function () { pickFolder.click(); });
  } else {
    $("choose-folder").hidden = true;
  }
  [pickFiles, pickFolder].forEach(function (input) {
    input.addEventListener("change", function () {
      Array.prototype.forEach.call(input.files, function (file) { add(file); });
      input.value = "";
      errorBox.hidden = true;
      render();
    });
  });
  $("selection-clear").addEventListener("click", function () {
    items = []; seen = Object.create(null); errorBox.hidden = true; render(); $("choose-files").focus();
  });

  // -- drag and drop: the zone, or anywhere on the page ---------------------------------
  var depth = 0;
  document.addEventListener("dragenter", function (event) {
    if (!hasFiles(event) || sending) { return; }
    depth += 1; zone.classList.add("over");
  });
  document.addEventListener("dragleave", function () {
    depth = Math.max(0, depth - 1);
    if (!depth) { zone.classList.remove("over"); }
  });
  document.addEventListener("dragover", function (event) {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    event.dataTransfer.dropEffect = sending ? "none" : "copy";
  });
  document.addEventListener("drop", function (event) {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    depth = 0; zone.classList.remove("over");
    if (!sending) { errorBox.hidden = true; dropped(event.dataTransfer); }
  });

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  function dropped(transfer) {
    var entries = [];
    Array.prototype.forEach.call(transfer.items || [], function (item) {
      var entry = item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) { entries.push(entry); }
    });
    if (!entries.length) {
      Array.prototype.forEach.call(transfer.files, function (file) { add(file); });
      render();
      return;
    }
    zone.classList.add("reading");
    Promise.all(entries.map(walk)).then(function () {
      zone.classList.remove("reading"); render();
    }, function (error) {
      zone.classList.remove("reading"); render();
      showError("Some dropped files could not be read: " + (error && error.message || error));
    });
  }

  function walk(entry) {
    if (entry.isFile) {
      return new Promise(function (resolve, reject) { entry.file(resolve, reject); })
        .then(function (file) { add(file, entry.fullPath.replace(/^\/+/, "")); });
    }
    if (!entry.isDirectory) { return Promise.resolve(); }
    var reader = entry.createReader();
    return new Promise(function (resolve, reject) {
      var children = [];
      (function more() {  // readEntries hands out a folder's entries a few at a time
        reader.readEntries(function (batch) {
          if (!batch.length) { Promise.all(children.map(walk)).then(resolve, reject); return; }
          children.push.apply(children, batch);
          more();
        }, reject);
      })();
    });
  }

  // -- the selection ---------------------------------------------------------------------
  function add(file, name) {
    name = name || file.webkitRelativePath || file.name;
    var key = name + "\u0000" + file.size + "\u0000" + file.lastModified;
    if (seen[key]) { return; }
    seen[key] = true;
    var item = { file: file, name: name, size: file.size, status: "ready", row: null };
    if (file.size > limits.file || file.size + cost(item) - file.size > limits.request - FORM_ROOM) {
      item.status = "too-large";
    }
    items.push(item);
  }

  function cost(item) { return item.size + PART_OVERHEAD + 2 * new Blob([item.name]).size; }

  var STATUS = {
    "ready": "Ready", "sending": "Sending", "sent": "Sent",
    "uploaded": "Uploaded ✓", "failed": "Not uploaded", "cancelled": "Cancelled"
  };

  function statusText(item, fraction) {
    if (item.status === "too-large") { return "Too large (over " + bytes(limits.file) + "): not sent"; }
    if (item.status === "sending" && fraction !== undefined) { return "Sending " + Math.floor(fraction * 100) + " %"; }
    return STATUS[item.status] || item.status;
  }

  function render() {
    var body = $("selection-table").tBodies[0];
    body.textContent = "";
    items.forEach(function (item, index) {
      item.row = null;
      if (index >= SHOWN) { return; }
      var row = body.insertRow();
      row.insertCell().textContent = item.name;
      row.cells[0].className = "path";
      row.insertCell().textContent = bytes(item.size);
      row.cells[1].className = "num nowrap";
      row.insertCell().textContent = statusText(item);
      row.cells[2].className = "state nowrap";
      row.className = "state-" + item.status;
      item.row = row;
    });
    var ready = items.filter(function (item) { return item.status === "ready"; });
    var large = items.length - ready.length;
    $("selection").hidden = !items.length;
    var summary = plural(items.length, "file") + ", " + bytes(sum(items));
    if (large) { summary += " · " + plural(large, "file") + " too large to send"; }
    $("selection-summary").textContent = summary;
    var more = $("selection-more");
    more.hidden = items.length <= SHOWN;
    more.textContent = "… and " + (items.length - SHOWN).toLocaleString() + " more files (not listed).";
    $("upload-start").textContent = ready.length ? "Upload " + plural(ready.length, "file") : "Upload";
  }

  function setStatus(item, status, fraction) {
    item.status = status;
    if (item.row) {
      item.row.className = "state-" + status;
      item.row.cells[2].textContent = statusText(item, fraction);
    }
  }

  // -- sending ---------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (sending) { return; }
    var ready = items.filter(function (item) { return item.status === "ready" || item.status === "failed" || item.status === "cancelled"; });
    if (!ready.length) {
      showError(items.length ? "None of the selected files can be sent: each is larger than the limit of " +
        bytes(limits.file) + " per file." : "Choose one or more files or a folder first.");
      return;
    }
    ready.forEach(function (item) { setStatus(item, "ready"); });
    start(ready);
  });

  function start(ready) {
    groups = makeGroups(ready);
    totalBytes = sum(ready); totalFiles = ready.length; doneBytes = 0; doneFiles = 0;
    sending = true; cancelled = false; started = Date.now();
    errorBox.hidden = true;
    busy(true);
    $("upload-progress").hidden = false;
    $("upload-cancel").disabled = false;
    $("progress-title").setAttribute("tabindex", "-1");
    $("progress-title").focus({ preventScroll: true });
    $("upload-progress").scrollIntoView({ block: "nearest" });
    progress(0, 0, 0);
    sendGroup(0, batch ? batch.upload_url : form.action);
  }

  function busy(on) {  // while sending, only the selection (with each file's state) stays
    Array.prototype.forEach.call(form.elements, function (el) { el.disabled = on; });
    zone.hidden = on;
    $("form-actions").hidden = on;
    $("selection-clear").hidden = on;
  }

  function makeGroups(list) {
    var result = [], current = [], size = 0, budget = limits.request - FORM_ROOM;
    list.forEach(function (item) {
      var c = cost(item);
      if (current.length && (size + c > budget || current.length >= limits.files)) {
        result.push(current); current = []; size = 0;
      }
      current.push(item); size += c;
    });
    if (current.length) { result.push(current); }
    return result;
  }

  function sendGroup(index, url) {
    var group = groups[index], groupBytes = sum(group), data = new FormData();
    if (isNew && !batch) { data.append("name", $("batch-name").value); }
    group.forEach(function (item) { data.append("files", item.file, item.name); });
    xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (event) {
      if (event.lengthComputable && event.total) { progress(index, groupBytes * event.loaded / event.total); }
    };
    xhr.onload = function () {
      var answer = parse(xhr.responseText);
      if (xhr.status === 201 && answer && answer.batch) {
        batch = answer;
        group.forEach(function (item) { setStatus(item, "uploaded"); });
        doneBytes += groupBytes; doneFiles += group.length;
        progress(index + 1, 0);
        if (index + 1 < groups.length && !cancelled) { sendGroup(index + 1, answer.upload_url); }
        else { finishSending(); }
        return;
      }
      var message = answer && answer.message ? answer.message :
        "The server refused the upload (" + xhr.status + " " + xhr.statusText + ").";
      stopped(index, "failed", message);
    };
    xhr.onerror = function () {
      stopped(index, "failed", "The connection to the server was lost while sending; the files of the " +
        "interrupted request were not kept. Check the connection and upload them again.");
    };
    xhr.onabort = function () { stopped(index, "cancelled", ""); };
    xhr.send(data);
  }

  function progress(index, sentInGroup) {
    var group = groups[index] || [], offset = 0, current = null, fraction = 0, passed = 0;
    group.forEach(function (item) {
      var end = offset + item.size;
      if (sentInGroup >= end && item.size > 0 || sentInGroup > offset && item.size === 0) {
        if (item.status === "sending" || item.status === "ready") { setStatus(item, "sent"); }
        passed += 1;
      } else if (!current && sentInGroup >= offset) {
        current = item; fraction = item.size ? (sentInGroup - offset) / item.size : 0;
        setStatus(item, "sending", fraction);
      }
      offset = end;
    });
    var sent = Math.min(totalBytes, doneBytes + sentInGroup), elapsed = (Date.now() - started) / 1000;
    var bar = $("overall-progress");
    bar.max = totalBytes || 1; bar.value = sent;
    var text = bytes(sent) + " of " + bytes(totalBytes) + " (" + percent(sent, totalBytes) + ")";
    if (elapsed > 1 && sent > 0 && sent < totalBytes) {
      var rate = sent / elapsed;
      text += " · " + bytes(rate) + "/s · about " + duration((totalBytes - sent) / rate) + " left";
    }
    $("overall-text").textContent = text;
    $("files-text").textContent = (doneFiles + passed).toLocaleString() + " of " + plural(totalFiles, "file") + " sent";
    var fileBar = $("file-progress");
    if (current) {
      fileBar.max = current.size || 1; fileBar.value = fraction * current.size;
      $("file-name").textContent = current.name;
      $("file-text").textContent = bytes(fraction * current.size) + " of " + bytes(current.size) +
        " (" + percent(fraction, 1) + ")";
    } else if (group.length && sentInGroup > 0) {
      fileBar.max = 1; fileBar.value = 1;
      $("file-name").textContent = "Waiting for the server to store the files…";
      $("file-text").textContent = "";
    }
  }

  function stopped(index, status, message) {
    sending = false; xhr = null;
    groups[index].forEach(function (item) { if (item.status !== "uploaded") { setStatus(item, status); } });
    groups.slice(index + 1).forEach(function (group) {
      group.forEach(function (item) { setStatus(item, status); });
    });
    $("upload-progress").hidden = true;
    var left = totalFiles - doneFiles;
    if (batch) {  // earlier requests made it: their files are being imported
      var note = status === "cancelled" ? "Upload cancelled: " : "";
      showError(note + (message ? message + " " : "") + plural(doneFiles, "file") + " sent before " +
        (status === "cancelled" ? "are" : "that are") + " being imported; " + plural(left, "file") + " were not uploaded.");
      importing();
      return;
    }
    busy(false);
    showError(status === "cancelled" ? "Upload cancelled: nothing was uploaded." : message);
    render();
  }

  $("upload-cancel").addEventListener("click", function () {
    cancelled = true;
    $("upload-cancel").disabled = true;
    if (xhr) { xhr.abort(); }
  });

  window.addEventListener("beforeunload", function (event) {
    if (sending) { event.preventDefault(); event.returnValue = ""; }
  });

  function finishSending() {
    sending = false; xhr = null;
    $("upload-progress").hidden = true;
    importing();
  }

  // -- importing ---------------------------------------------------------------------------
  function importing() {
    var section = $("upload-import");
    section.hidden = false;
    $("batch-link").href = batch.batch.url;
    $("batch-link").textContent = "Open batch “" + batch.batch.name + "”";
    $("import-text").textContent = "The worker is importing " + plural(doneFiles, "file") + " into “" +
      batch.batch.name + "”.";
    $("import-heading").setAttribute("tabindex", "-1");
    $("import-heading").focus({ preventScroll: true });
    poll();
  }

  function poll() {
    fetch(batch.progress_url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 404) { throw new Error("gone"); }
        return response.json();
      })
      .then(function (state) {
        $("count-images").textContent = state.images.toLocaleString();
        $("count-errors").textContent = state.errors.toLocaleString();
        $("count-pending").textContent = state.pending.toLocaleString();
        if (state.done) { finished(state); } else { setTimeout(poll, POLL_MS); }
      })
      .catch(function (error) {
        if (error && error.message === "gone") {
          $("import-text").textContent = "The batch was deleted.";
          $("import-spinner").hidden = true;
          return;
        }
        setTimeout(poll, POLL_MS * 2);
      });
  }

  function finished(state) {
    $("upload-import").classList.add("done");
    $("import-spinner").hidden = true;
    $("import-heading").textContent = "Import finished";
    $("import-text").textContent = plural(state.images, "image") + " in the batch, " +
      plural(state.errors, "error") + ". Opening the batch…";
    if (errorBox.hidden) { setTimeout(function () { window.location.assign(state.url); }, 800); }
  }

  // -- small helpers -------------------------------------------------------------------------
  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    var server = $("upload-error-server");
    if (server) { server.hidden = true; }
  }

  function parse(text) { try { return JSON.parse(text); } catch (e) { return null; } }
  function sum(list) { return list.reduce(function (total, item) { return total + item.size; }, 0); }
  function plural(n, word) { return n.toLocaleString() + " " + word + (n === 1 ? "" : "s"); }
  function percent(part, whole) { return (whole ? Math.floor(100 * part / whole) : 100) + " %"; }

  function bytes(n) {
    var units = ["bytes", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i ? n.toFixed(n < 10 ? 1 : 0) + " " + units[i] : Math.round(n) + " bytes";
  }

  function duration(seconds) {
    if (seconds < 60) { return Math.ceil(seconds) + " s"; }
    if (seconds < 3600) { return Math.round(seconds / 60) + " min"; }
    return (seconds / 3600).toFixed(1) + " h";
  }
})();

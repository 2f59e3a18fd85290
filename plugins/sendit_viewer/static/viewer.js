/* sendit_viewer: the orthogonal viewer of the image page (the product's own code).
 *
 * The server describes a volume stored as [slice k][row j][column i] and the
 * patient-space direction of each of those axes (DICOM LPS: x to the patient's
 * left, y to the back, z to the head). Each of the three views shows the plane
 * perpendicular to one voxel axis, chosen so that it is the axial, coronal or
 * sagittal plane, drawn the radiological way (axial: patient's right on the
 * screen's left, anterior up; coronal: right on the left, head up; sagittal:
 * anterior on the left, head up), with the correct aspect from the spacing.
 *
 * Loading: the image's own slice first (decoded from its file alone), then the
 * volume's description and the two other planes through the crosshair, then,
 * for volumes small enough, every voxel, after which nothing needs the server.
 * Window/level is computed here: dragging never makes a request.
 */
(function () {
  "use strict";

  var TYPES = {
    uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
    int32: Int32Array, uint32: Uint32Array, float32: Float32Array
  };
  // Letter for the + and - direction of each patient axis (x, y, z).
  var LETTERS = [["L", "R"], ["P", "A"], ["S", "I"]];
  // Which patient axis (and sign) each view wants to the right and downwards.
  var PLANES = {
    axial: {normal: 2, right: [0, 1], down: [1, 1], colour: "#f5c542"},
    coronal: {normal: 1, right: [0, 1], down: [2, -1], colour: "#4fd18b"},
    sagittal: {normal: 0, right: [1, 1], down: [2, -1], colour: "#ff7a6b"}
  };
  var UNORIENTED_TITLES = {axial: "Image plane", coronal: "Rows × slices", sagittal: "Columns × slices"};
  var PLANE_CACHE = 48;

  function $(root, selector) { return root.querySelector(selector); }

  function clamp(value, low, high) { return value < low ? low : value > high ? high : value; }

  function format(value) {
    if (!isFinite(value)) { return String(value); }
    var abs = Math.abs(value);
    if (abs !== 0 && (abs < 0.01 || abs >= 1e6)) { return value.toExponential(3); }
    return String(Math.round(value * 1000) / 1000);
  }

  /** The permutation voxel axis -> patient axis that best matches the directions. */
  function assignAxes(axes) {
    var perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    var best = null, bestScore = -1;
    perms.forEach(function (perm) {
      var score = 0;
      for (var a = 0; a < 3; a++) { score += Math.abs(axes[a][perm[a]]); }
      if (score > bestScore + 1e-9) { best = perm; bestScore = score; }
    });
    var inverse = [0, 0, 0], sign = [1, 1, 1];
    for (var a = 0; a < 3; a++) {
      inverse[best[a]] = a;
      sign[a] = axes[a][best[a]] < 0 ? -1 : 1;
    }
    return {voxelOf: inverse, sign: sign};
  }

  /** Orientation letters of a patient-space direction: "L", or "LP" when oblique. */
  function letters(vector) {
    var parts = [0, 1, 2].map(function (axis) { return {axis: axis, size: Math.abs(vector[axis])}; })
      .filter(function (p) { return p.size > 0.25; })
      .sort(function (a, b) { return b.size - a.size; });
    return parts.map(function (p) { return LETTERS[p.axis][vector[p.axis] > 0 ? 0 : 1]; }).join("");
  }

  function scaled(vector, factor) { return vector.map(function (v) { return v * factor; }); }

  function JsonError(status, body) {
    this.status = status;
    this.reason = (body && body.error) || "error";
    this.message = (body && body.message) || ("The server answered " + status + ".");
  }

  function sessionEnded() {
    return new JsonError(401, {error: "session", message: "Your session has ended: reload the page to log in again."});
  }

  /** Fetch, turning JSON error answers and login redirects into JsonError. */
  function request(url, kind) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: kind === "json" ? "application/json" : "*/*"}})
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (response.redirected && response.url.indexOf("/login") !== -1) { throw sessionEnded(); }
        if (!response.ok) {
          if (type.indexOf("json") !== -1) {
            return response.json().then(function (body) { throw new JsonError(response.status, body); });
          }
          throw new JsonError(response.status, null);
        }
        if (type.indexOf("text/html") !== -1) { throw sessionEnded(); }
        return response;
      }, function () {
        throw new JsonError(0, {error: "network", message: "The server cannot be reached; try again later."});
      });
  }

  function Viewer(root) {
    this.root = root;
    this.info = null;
    this.data = null;           // every voxel, once downloaded
    this.planes = new Map();    // "axis:index" -> typed array (LRU)
    this.pending = new Map();   // "axis:index" -> promise
    this.cursor = [0, 0, 0];
    this.window = null;
    this.drawQueued = false;
    this.status = $(root, "[data-status]");
    this.readout = $(root, "[data-readout]");
    this.views = Array.prototype.map.call(root.querySelectorAll("[data-view]"), this.makeView.bind(this));
    this.bindControls();
    root.viewer = this;
  }

  Viewer.prototype.makeView = function (figure) {
    var view = {
      name: figure.getAttribute("data-view"),
      figure: figure,
      canvas: $(figure, "[data-canvas]"),
      frame: $(figure, "[data-frame]"),
      note: $(figure, "[data-note]"),
      title: $(figure, "[data-title]"),
      sliceLabel: $(figure, "[data-slice]"),
      orient: {},
      enabled: false,
      rect: null,
      image: document.createElement("canvas"),
      drawn: false
    };
    ["top", "bottom", "left", "right"].forEach(function (edge) {
      view.orient[edge] = $(figure, '[data-orient="' + edge + '"]');
    });
    view.ctx = view.canvas.getContext("2d");
    this.bindView(view);
    return view;
  };

  // -- loading ------------------------------------------------------------------

  Viewer.prototype.start = function () {
    var self = this;
    $(this.root, "[data-grid]").hidden = false;
    this.root.setAttribute("data-start-ms", String(Math.round(performance.now())));  // for bench/viewer.py
    this.say("Loading the image…");
    var own = request(this.root.getAttribute("data-slice-url"), "raw").then(function (response) {
      var info = JSON.parse(response.headers.get("X-Sendit-Slice"));
      return response.arrayBuffer().then(function (buffer) { return {info: info, buffer: buffer}; });
    });
    var volume = this.describe();
    own.then(function (slice) {
      if (self.info && !self.info.provisional) { return; }
      self.ownSlice = slice;
      self.setVolume(slice.info);
      self.keepPlane(0, 0, new TYPES[slice.info.dtype](slice.buffer));
      self.say("Assembling the volume…");
      self.draw();
    }, function (error) {
      self.ownError = error;
    });
    volume.then(function (info) {
      self.setVolume(info);
      var mine = self.ownSlice;
      if (mine && mine.info.dtype === info.dtype && mine.info.channels === info.channels &&
          mine.info.rescale.slope === info.rescale.slope && mine.info.rescale.intercept === info.rescale.intercept) {
        self.keepPlane(0, info.current, new TYPES[info.dtype](mine.buffer));
      }
      self.views.forEach(function (view) {  // ask for the other planes now, not at the next frame
        if (view.enabled) { self.plane(view.axis, self.cursor[view.axis]); }
      });
      // the whole volume follows once the three planes are on screen (not competing with them)
      self.toDownload = info.prefetch && self.enabledCount() > 1 ? info : null;
      self.say("Volume ready: " + info.shape[2] + " × " + info.shape[1] + " × " + info.shape[0] +
        (self.toDownload ? "; downloading every voxel…" : "."));
      self.draw();
    }, function (error) {
      own.then(function () {
        if (error.reason === "too-large" || error.reason === "undecodable") {
          self.addNotes([error.message]);
          self.say("Showing this image's own slice only.");
          self.finishProvisional();
        } else {
          self.fail(error);
        }
      }, function () { self.fail(self.ownError || error); });
    });
  };

  /** The volume's description (assembled on the server on first use). */
  Viewer.prototype.describe = function () {
    return request(this.root.getAttribute("data-info-url"), "json").then(function (r) { return r.json(); });
  };

  /** The cached volume went away (its series changed, or the cache was cleaned): ask again. */
  Viewer.prototype.reload = function () {
    var self = this;
    if (this.reloading) { return; }
    this.reloads = (this.reloads || 0) + 1;
    if (this.reloads > 3) {
      this.say("The volume keeps changing on the server: reload the page.");
      return;
    }
    this.reloading = true;
    var cursor = this.cursor.slice(), shape = this.shape.slice();
    this.describe().then(function (info) {
      self.reloading = false;
      self.setVolume(info);
      if (info.shape.join() === shape.join()) { self.cursor = cursor; }
      self.toDownload = info.prefetch && self.enabledCount() > 1 ? info : null;
      self.root.removeAttribute("data-ready");
      self.draw();
    }, function (error) {
      self.reloading = false;
      self.fail(error);
    });
  };

  Viewer.prototype.download = function (info) {
    var self = this;
    request(info.urls.volume, "raw").then(function (response) {
      var total = info.bytes, received = 0, buffer = new ArrayBuffer(total), bytes = new Uint8Array(buffer);
      var reader = response.body.getReader(), lastShown = 0;
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { return; }
          if (received + chunk.value.length > total) { throw new JsonError(0, {message: "The volume is larger than announced."}); }
          bytes.set(chunk.value, received);
          received += chunk.value.length;
          var percent = Math.floor(100 * received / total);
          if (percent >= lastShown + 20) {
            lastShown = percent;
            self.say("Downloading every voxel… " + percent + " %");
          }
          return pump();
        });
      }
      return pump().then(function () {
        if (received !== total) { throw new JsonError(0, {message: "The volume arrived incomplete."}); }
        if (self.info !== info) { return; }
        self.data = new TYPES[info.dtype](buffer);
        self.planes.clear();
        self.root.setAttribute("data-state", "volume");
        self.root.setAttribute("data-volume-ms", String(Math.round(performance.now())));
        var mb = total / 1048576;
        self.say("Volume loaded (" + (mb < 10 ? mb.toFixed(1) : Math.round(mb)) + " MB): scrolling needs no server.");
        self.draw();
      });
    }).catch(function (error) {
      if (error.reason === "expired") { self.reload(); return; }
      self.say("The whole volume could not be downloaded (" + error.message + "); planes are read one by one.");
    });
  };

  Viewer.prototype.planeUrl = function (axis, index) {
    return this.info.urls.plane.replace("AXIS", axis).replace("INDEX", index);
  };

  Viewer.prototype.keepPlane = function (axis, index, array) {
    var key = axis + ":" + index;
    this.planes.delete(key);
    this.planes.set(key, array);
    while (this.planes.size > PLANE_CACHE) { this.planes.delete(this.planes.keys().next().value); }
  };

  Viewer.prototype.plane = function (axis, index) {
    var key = axis + ":" + index, found = this.planes.get(key);
    if (found) { return found; }
    if (this.info.provisional || this.pending.has(key)) { return null; }
    var self = this, info = this.info;
    var promise = request(this.planeUrl(axis, index), "raw").then(function (r) { return r.arrayBuffer(); })
      .then(function (buffer) {
        self.pending.delete(key);
        if (self.info !== info) { return; }
        self.keepPlane(axis, index, new TYPES[info.dtype](buffer));
        self.draw();
      }, function (error) {
        self.pending.delete(key);
        if (error.reason === "expired") { self.reload(); return; }
        self.say(error.message);
      });
    this.pending.set(key, promise);
    return null;
  };

  // -- the volume and the views --------------------------------------------------

  Viewer.prototype.setVolume = function (info) {
    var previous = this.info;
    this.info = info;
    this.data = null;
    if (!info.provisional) { this.planes.clear(); }
    this.shape = info.shape;
    this.channels = info.channels;
    this.strides = [info.shape[1] * info.shape[2], info.shape[2], 1];
    var moved = previous && previous.provisional && this.cursorMoved;
    this.cursor = [info.current,
      moved ? this.cursor[1] : Math.floor(info.shape[1] / 2),
      moved ? this.cursor[2] : Math.floor(info.shape[2] / 2)];
    this.initialCursor = [info.current, Math.floor(info.shape[1] / 2), Math.floor(info.shape[2] / 2)];
    var assignment = assignAxes(info.axes), self = this;
    var colour = info.channels === 3;
    this.views.forEach(function (view) {
      var plane = PLANES[view.name];
      view.axis = assignment.voxelOf[plane.normal];
      view.r = assignment.voxelOf[plane.right[0]];
      view.d = assignment.voxelOf[plane.down[0]];
      view.flipR = assignment.sign[view.r] !== plane.right[1];
      view.flipD = assignment.sign[view.d] !== plane.down[1];
      view.colour = plane.colour;
      var rightVec = scaled(info.axes[view.r], view.flipR ? -1 : 1);
      var downVec = scaled(info.axes[view.d], view.flipD ? -1 : 1);
      var oriented = info.oriented;
      view.title.textContent = oriented ? view.name.charAt(0).toUpperCase() + view.name.slice(1) : UNORIENTED_TITLES[view.name];
      view.orient.right.textContent = oriented ? letters(rightVec) : "";
      view.orient.left.textContent = oriented ? letters(scaled(rightVec, -1)) : "";
      view.orient.bottom.textContent = oriented ? letters(downVec) : "";
      view.orient.top.textContent = oriented ? letters(scaled(downVec, -1)) : "";
      var note = "";
      if (view.axis !== 0) {
        if (info.provisional) { note = "Loading…"; }
        else if (colour) { note = "Colour images are shown in their own plane only."; }
        else if (info.shape[0] < 2) { note = "A single slice: there is no " + view.title.textContent.toLowerCase() + " plane to show."; }
      }
      self.enable(view, !note, note);
    });
    $(this.root, "[data-grid]").classList.toggle("single", this.enabledCount() === 1 && !info.provisional);
    this.setWindows(info);
    this.addNotes(info.notes || []);
    this.root.setAttribute("data-state", info.provisional ? "slice" : "planes");
    $(this.root, "[data-help]").hidden = false;
  };

  Viewer.prototype.finishProvisional = function () {
    var self = this;
    this.views.forEach(function (view) {
      if (view.axis !== 0) { self.enable(view, false, "Only this image's own slice is available."); }
    });
    $(this.root, "[data-grid]").classList.add("single");
    this.root.setAttribute("data-state", "planes");
    this.final = true;
    this.draw();
  };

  Viewer.prototype.enabledCount = function () {
    return this.views.filter(function (v) { return v.enabled; }).length;
  };

  Viewer.prototype.enable = function (view, enabled, note) {
    view.enabled = enabled;
    view.canvas.hidden = !enabled;
    view.figure.classList.toggle("disabled", !enabled);
    view.note.hidden = enabled || !note;
    view.note.textContent = note || "";
    view.figure.setAttribute("aria-disabled", enabled ? "false" : "true");
    Object.keys(view.orient).forEach(function (edge) { view.orient[edge].hidden = !enabled; });
    if (!enabled) { view.sliceLabel.textContent = ""; }
  };

  Viewer.prototype.setWindows = function (info) {
    var controls = $(this.root, "[data-controls]"), select = $(this.root, "[data-window]");
    if (info.channels === 3) { controls.hidden = true; this.window = null; return; }
    var presets = (info.windows || []).slice();
    var low = info.range[0], high = info.range[1];
    presets.push({name: "Full range", center: (low + high) / 2, width: Math.max(high - low, 1e-6)});
    this.presets = presets;
    select.textContent = "";
    presets.forEach(function (preset, index) {
      var option = document.createElement("option");
      option.value = String(index);
      option.textContent = preset.name + " (W " + format(preset.width) + " / L " + format(preset.center) + ")";
      select.appendChild(option);
    });
    var custom = document.createElement("option");
    custom.value = "custom";
    custom.textContent = "Custom (dragged)";
    custom.hidden = true;
    select.appendChild(custom);
    if (!this.window || !this.windowTouched) {
      this.window = {center: presets[0].center, width: presets[0].width};
      select.value = "0";
    }
    this.initialWindow = {center: presets[0].center, width: presets[0].width};
    controls.hidden = false;
    this.showWindow();
  };

  Viewer.prototype.showWindow = function () {
    var output = $(this.root, "[data-wl]");
    if (this.window) {
      var unit = this.info.unit ? " " + this.info.unit : "";
      output.textContent = "W " + format(this.window.width) + " / L " + format(this.window.center) + unit;
    }
  };

  Viewer.prototype.bindControls = function () {
    var self = this, select = $(this.root, "[data-window]");
    select.addEventListener("change", function () {
      var preset = self.presets && self.presets[Number(select.value)];
      if (!preset) { return; }
      self.window = {center: preset.center, width: preset.width};
      self.windowTouched = true;
      self.showWindow();
      self.draw();
    });
    $(this.root, "[data-reset]").addEventListener("click", function () {
      if (!self.info) { return; }
      self.window = self.initialWindow ? {center: self.initialWindow.center, width: self.initialWindow.width} : null;
      self.windowTouched = false;
      select.value = "0";
      self.cursor = self.initialCursor.slice();
      self.cursorMoved = false;
      self.showWindow();
      self.draw();
    });
    if (window.ResizeObserver) {
      new ResizeObserver(function () { self.draw(); }).observe($(this.root, "[data-grid]"));
    } else {
      window.addEventListener("resize", function () { self.draw(); });
    }
  };

  // -- drawing --------------------------------------------------------------------

  Viewer.prototype.draw = function () {
    if (this.drawQueued || !this.info) { return; }
    this.drawQueued = true;
    var self = this;
    window.requestAnimationFrame(function () {
      self.drawQueued = false;
      self.views.forEach(function (view) { if (view.enabled) { self.drawView(view); } });
    });
  };

  /** Where the view's voxels are: the whole volume, or one plane of it. */
  Viewer.prototype.source = function (view) {
    var a = view.axis, index = this.cursor[a];
    if (this.data) {
      return {array: this.data, base: index * this.strides[a], strides: this.strides};
    }
    var plane = this.plane(a, index);
    if (!plane) { return null; }
    var rest = [0, 1, 2].filter(function (x) { return x !== a; });
    var strides = [0, 0, 0];
    strides[rest[0]] = this.shape[rest[1]];
    strides[rest[1]] = 1;
    return {array: plane, base: 0, strides: strides};
  };

  Viewer.prototype.render = function (view, source) {
    var nR = this.shape[view.r], nD = this.shape[view.d];
    if (view.image.width !== nR || view.image.height !== nD) {
      view.image.width = nR;
      view.image.height = nD;
    }
    var context = view.image.getContext("2d"), picture = context.createImageData(nR, nD), out = picture.data;
    var array = source.array, channels = this.channels;
    var sR = source.strides[view.r] * channels, sD = source.strides[view.d] * channels;
    var startR = view.flipR ? (nR - 1) * sR : 0, stepR = view.flipR ? -sR : sR;
    var base = source.base * channels, p = 0, x, y, offset, value;
    if (channels === 3) {
      var top = this.info.dtype === "uint8" ? 255 : Math.pow(2, Math.min(this.info.bits || 8, 32)) - 1;
      var k3 = 255 / (top || 255);
      for (y = 0; y < nD; y++) {
        offset = base + (view.flipD ? nD - 1 - y : y) * sD + startR;
        for (x = 0; x < nR; x++, offset += stepR) {
          out[p++] = array[offset] * k3;
          out[p++] = array[offset + 1] * k3;
          out[p++] = array[offset + 2] * k3;
          out[p++] = 255;
        }
      }
    } else {
      var slope = this.info.rescale.slope, intercept = this.info.rescale.intercept;
      var width = Math.max(this.window.width, 1e-9), low = this.window.center - width / 2;
      // grey = (raw * slope + intercept - low) * 255 / width, folded into one multiply-add
      var gain = slope * 255 / width, shift = (intercept - low) * 255 / width, invert = this.info.invert, grey;
      for (y = 0; y < nD; y++) {
        offset = base + (view.flipD ? nD - 1 - y : y) * sD + startR;
        for (x = 0; x < nR; x++, offset += stepR) {
          value = array[offset] * gain + shift;
          grey = value < 0 ? 0 : value > 255 ? 255 : value;
          if (invert) { grey = 255 - grey; }
          out[p++] = grey;
          out[p++] = grey;
          out[p++] = grey;
          out[p++] = 255;
        }
      }
    }
    context.putImageData(picture, 0, 0);
  };

  Viewer.prototype.drawView = function (view) {
    var source = this.source(view), canvas = view.canvas;
    var ratio = window.devicePixelRatio || 1;
    var cssWidth = view.frame.clientWidth, cssHeight = view.frame.clientHeight;
    if (!cssWidth || !cssHeight) { return; }
    var width = Math.round(cssWidth * ratio), height = Math.round(cssHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    var nR = this.shape[view.r], nD = this.shape[view.d];
    var spacing = this.info.spacing;
    var physicalW = nR * spacing[view.r], physicalH = nD * spacing[view.d];
    var scale = Math.min(cssWidth / physicalW, cssHeight / physicalH);
    var w = physicalW * scale, h = physicalH * scale;
    view.rect = {x: (cssWidth - w) / 2, y: (cssHeight - h) / 2, w: w, h: h};
    if (source) {
      this.render(view, source);
      view.drawn = true;
    }
    var ctx = view.ctx;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cssWidth, cssHeight);
    if (view.drawn) {
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(view.image, view.rect.x, view.rect.y, w, h);
    }
    this.drawCrosshair(view);
    var index = this.cursor[view.axis], count = this.shape[view.axis];
    view.sliceLabel.textContent = "Slice " + (index + 1) + " / " + count + (source ? "" : " (loading)");
    view.canvas.setAttribute("aria-label", view.title.textContent + " plane, slice " + (index + 1) + " of " + count);
    view.figure.setAttribute("data-slice-index", String(index));
    this.checkReady();
  };

  Viewer.prototype.drawCrosshair = function (view) {
    if (this.enabledCount() < 2) { return; }
    var rect = view.rect, ctx = view.ctx, self = this;
    var position = this.screenOf(view, this.cursor);
    var lineColour = function (axis) {
      var other = self.views.filter(function (v) { return v.axis === axis; })[0];
      return other ? other.colour : "#fff";
    };
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = lineColour(view.r);  // a vertical line: the plane across the right axis
    ctx.beginPath();
    ctx.moveTo(Math.round(position.x) + 0.5, rect.y);
    ctx.lineTo(Math.round(position.x) + 0.5, rect.y + rect.h);
    ctx.stroke();
    ctx.strokeStyle = lineColour(view.d);
    ctx.beginPath();
    ctx.moveTo(rect.x, Math.round(position.y) + 0.5);
    ctx.lineTo(rect.x + rect.w, Math.round(position.y) + 0.5);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.strokeStyle = view.colour;
    ctx.lineWidth = 2;
    ctx.strokeRect(rect.x + 1, rect.y + 1, rect.w - 2, rect.h - 2);
  };

  Viewer.prototype.checkReady = function () {
    var ready = this.views.every(function (v) { return !v.enabled || v.drawn; });
    if (!this.root.hasAttribute("data-first-ms") && this.views.some(function (v) { return v.drawn; })) {
      this.root.setAttribute("data-first-ms", String(Math.round(performance.now())));  // for bench/viewer.py
    }
    if (ready && this.root.getAttribute("data-ready") !== "true" && this.info && (!this.info.provisional || this.final)) {
      this.root.setAttribute("data-ready", "true");
      this.root.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    }
    if (ready && this.toDownload && this.toDownload === this.info) {
      var info = this.toDownload;
      this.toDownload = null;
      this.download(info);
    }
  };

  // -- coordinates -------------------------------------------------------------------

  /** The CSS-pixel point of a voxel's centre in a view. */
  Viewer.prototype.screenOf = function (view, voxel) {
    var nR = this.shape[view.r], nD = this.shape[view.d], rect = view.rect;
    var column = view.flipR ? nR - 1 - voxel[view.r] : voxel[view.r];
    var row = view.flipD ? nD - 1 - voxel[view.d] : voxel[view.d];
    return {x: rect.x + (column + 0.5) * rect.w / nR, y: rect.y + (row + 0.5) * rect.h / nD};
  };

  /** The voxel under a CSS-pixel point of a view, or null outside the image. */
  Viewer.prototype.voxelAt = function (view, x, y) {
    var rect = view.rect;
    if (!rect || x < rect.x || y < rect.y || x >= rect.x + rect.w || y >= rect.y + rect.h) { return null; }
    var nR = this.shape[view.r], nD = this.shape[view.d];
    var column = clamp(Math.floor((x - rect.x) * nR / rect.w), 0, nR - 1);
    var row = clamp(Math.floor((y - rect.y) * nD / rect.h), 0, nD - 1);
    var voxel = this.cursor.slice();
    voxel[view.r] = view.flipR ? nR - 1 - column : column;
    voxel[view.d] = view.flipD ? nD - 1 - row : row;
    return voxel;
  };

  Viewer.prototype.patientOf = function (voxel) {
    var info = this.info, point = info.origin.slice();
    for (var a = 0; a < 3; a++) {
      for (var c = 0; c < 3; c++) { point[c] += voxel[a] * info.spacing[a] * info.axes[a][c]; }
    }
    return point;
  };

  /** The stored values at a voxel (one, or three for colour), or null when not loaded. */
  Viewer.prototype.valueAt = function (view, voxel) {
    var channels = this.channels, array, offset;
    if (this.data) {
      array = this.data;
      offset = voxel[0] * this.strides[0] + voxel[1] * this.strides[1] + voxel[2];
    } else {
      var source = this.source(view);
      if (!source || voxel[view.axis] !== this.cursor[view.axis]) { return null; }
      array = source.array;
      offset = voxel[view.r] * source.strides[view.r] + voxel[view.d] * source.strides[view.d];
    }
    var values = [];
    for (var c = 0; c < channels; c++) { values.push(array[offset * channels + c]); }
    return values;
  };

  // -- interaction ----------------------------------------------------------------

  Viewer.prototype.moveSlice = function (view, step) {
    var axis = view.axis, count = this.shape[axis];
    var next = clamp(this.cursor[axis] + step, 0, count - 1);
    if (next !== this.cursor[axis]) {
      this.cursor[axis] = next;
      this.cursorMoved = true;
      this.draw();
    }
  };

  Viewer.prototype.showValue = function (view, x, y) {
    var voxel = this.voxelAt(view, x, y);
    if (!voxel) { this.readout.textContent = view.title.textContent + ": outside the image"; return; }
    var values = this.valueAt(view, voxel), text;
    if (!values) {
      text = "loading";
    } else if (this.channels === 3) {
      text = "R " + values[0] + " G " + values[1] + " B " + values[2];
    } else {
      var value = values[0] * this.info.rescale.slope + this.info.rescale.intercept;
      text = format(value) + (this.info.unit ? " " + this.info.unit : "");
    }
    var where = this.info.oriented ? " · " + this.patientOf(voxel).map(function (v) { return v.toFixed(1); }).join(", ") + " mm" : "";
    this.readout.hidden = false;
    this.readout.textContent = view.title.textContent + " · column " + (voxel[2] + 1) + ", row " + (voxel[1] + 1) +
      ", slice " + (voxel[0] + 1) + where + " · value " + text;
    this.readout.setAttribute("data-value", values ? values.join(",") : "");
  };

  Viewer.prototype.bindView = function (view) {
    var self = this, canvas = view.canvas, drag = null;
    function point(event) {
      var box = canvas.getBoundingClientRect();
      return {x: event.clientX - box.left, y: event.clientY - box.top};
    }
    canvas.addEventListener("pointerdown", function (event) {
      if (!view.enabled || event.button !== 0) { return; }
      canvas.focus();
      canvas.setPointerCapture(event.pointerId);
      drag = {x: event.clientX, y: event.clientY, moved: false,
        window: self.window ? {center: self.window.center, width: self.window.width} : null};
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!view.enabled || !self.info) { return; }
      var at = point(event);
      if (drag) {
        var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
        if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 4) { drag.moved = true; }
        if (drag.moved && drag.window) {
          var span = Math.max(self.info.range[1] - self.info.range[0], 1e-6);
          var speed = Math.max(drag.window.width, span / 20) / 150;
          self.window = {center: drag.window.center + dy * speed, width: Math.max(drag.window.width + dx * speed, span / 5000)};
          self.windowTouched = true;
          $(self.root, "[data-window]").value = "custom";
          self.showWindow();
          self.draw();
        }
      }
      self.showValue(view, at.x, at.y);
    });
    function release(event) {
      if (!drag) { return; }
      var wasClick = !drag.moved;
      drag = null;
      if (wasClick && event.type === "pointerup") {
        var at = point(event), voxel = self.voxelAt(view, at.x, at.y);
        if (voxel) {
          self.cursor = voxel;
          self.cursorMoved = true;
          self.draw();
          self.showValue(view, at.x, at.y);
        }
      }
    }
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("wheel", function (event) {
      if (!view.enabled || !self.info) { return; }
      event.preventDefault();
      if (event.deltaY) { self.moveSlice(view, event.deltaY > 0 ? 1 : -1); }
    }, {passive: false});
    canvas.addEventListener("keydown", function (event) {
      if (!view.enabled || !self.info) { return; }
      var steps = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10};
      if (event.key in steps) {
        self.moveSlice(view, steps[event.key]);
      } else if (event.key === "Home" || event.key === "End") {
        self.moveSlice(view, event.key === "Home" ? -self.shape[view.axis] : self.shape[view.axis]);
      } else {
        return;
      }
      event.preventDefault();
    });
  };

  // -- messages ---------------------------------------------------------------------

  Viewer.prototype.say = function (text) {
    this.status.textContent = text;
  };

  Viewer.prototype.addNotes = function (notes) {
    var list = $(this.root, "[data-notes]"), shown = this.shownNotes || (this.shownNotes = {});
    notes.forEach(function (note) {
      if (shown[note]) { return; }
      shown[note] = true;
      var item = document.createElement("li");
      item.textContent = note;
      list.appendChild(item);
      list.hidden = false;
    });
  };

  Viewer.prototype.fail = function (error) {
    $(this.root, "[data-grid]").hidden = true;
    $(this.root, "[data-controls]").hidden = true;
    $(this.root, "[data-help]").hidden = true;
    this.readout.hidden = true;
    this.root.setAttribute("data-state", "error");
    this.root.setAttribute("data-error", error.reason || "error");
    this.status.classList.add("viewer-error");
    this.say(error.message);
  };

  function boot() {
    var roots = document.querySelectorAll("[data-viewer]");
    window.senditViewers = Array.prototype.map.call(roots, function (root) {
      var viewer = new Viewer(root);
      viewer.start();
      return viewer;
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", boot);
  } else {
    boot();
  }
})();
